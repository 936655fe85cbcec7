"""AudioFrame / AudioDataStamped <-> mono float32 PCM, resampled to the model rate."""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from sentryfuse_ros.core.errors import ConversionError
from sentryfuse_ros.core.data.resample import check_rate, resample
from sentryfuse_ros.msg_arrays._buffers import AUDIO_ENCODINGS, Stamp, _bytes_of, _fill_header, _uint8_array, message_reader

# ---------------------------------------------------------------------------- audio
def _decode_pcm(data: Any, channels: int, encoding: str, field: str) -> np.ndarray:
    """(samples,) float32 mono in [-1, 1] of interleaved PCM bytes (channels averaged)."""
    if encoding not in AUDIO_ENCODINGS:
        raise ConversionError(f'{field} encoding {encoding!r} is unsupported, expected one of '
                              f'{sorted(AUDIO_ENCODINGS)}')
    if channels < 1:
        raise ConversionError(f'{field} channels is {channels}, expected >= 1')
    dtype = np.dtype(AUDIO_ENCODINGS[encoding])
    buf = _bytes_of(data, f'{field}.data')
    frame_bytes = channels * dtype.itemsize
    if buf.size % frame_bytes:
        raise ConversionError(f'{field}.data has {buf.size} bytes, expected a multiple of '
                              f'channels*bytes_per_sample = {channels}*{dtype.itemsize} = '
                              f'{frame_bytes}')
    samples = np.ndarray((buf.size // frame_bytes, channels), dtype=dtype, buffer=buf)
    pcm = samples.astype(np.float32)  # (samples, channels), owned
    if encoding == 'F32LE':
        bad = int(pcm.size - np.count_nonzero(np.isfinite(pcm)))
        if bad:
            raise ConversionError(f'{field}.data holds {bad} non-finite F32LE samples of {pcm.size}, '
                                  f'expected finite values')
    if encoding == 'S16LE':
        pcm *= 1.0 / 32768.0
    mono = pcm[:, 0] if channels == 1 else pcm.mean(axis=1)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


@message_reader('AudioFrame')
def audio_frame_to_array(msg: Any) -> np.ndarray:
    """(samples,) float32 mono in [-1, 1] of a ``sentryfuse_ros/AudioFrame`` at msg.sample_rate.

    S16LE is scaled by 1/32768, F32LE clipped to [-1, 1]; interleaved channels are averaged.
    A sample_rate outside AUDIO_RATE_RANGE_HZ or a non-finite F32LE sample is a ConversionError.
    """
    check_rate(msg.sample_rate, 'AudioFrame.sample_rate')
    return _decode_pcm(msg.data, int(msg.channels), msg.encoding, 'AudioFrame')


@message_reader('AudioDataStamped')
def audio_data_stamped_to_array(msg: Any, *, channels: int = 1,
                                encoding: str = 'S16LE') -> np.ndarray:
    """(samples,) float32 mono of an ``audio_common_msgs/AudioDataStamped`` (``msg.audio.data``).

    That message carries no rate, channel count or encoding, so they are arguments (the rate
    is the caller's: see audio_msg_to_array). audio_common_msgs is not installable on the
    development machines (no wheel), so this is tested only on duck-typed stand-ins there.

    Args:
        msg: object with ``audio.data`` (uint8 sequence).
        channels: interleaved channels in the data.
        encoding: 'S16LE' or 'F32LE'.
    """
    return _decode_pcm(msg.audio.data, channels, encoding, 'AudioDataStamped')


@message_reader('AudioFrame or AudioDataStamped')
def audio_msg_to_array(msg: Any, *, default_rate: int = 16000, default_channels: int = 1,
                       default_encoding: str = 'S16LE') -> Tuple[np.ndarray, int]:
    """``(pcm, sample_rate)`` of an AudioFrame, or of an AudioDataStamped with the defaults.

    Args:
        msg: AudioFrame-like (has ``sample_rate``) or AudioDataStamped-like (has ``audio``).
        default_rate: sample rate of AudioDataStamped data [Hz].
        default_channels: interleaved channels of AudioDataStamped data.
        default_encoding: encoding of AudioDataStamped data.
    """
    if hasattr(msg, 'sample_rate'):
        return audio_frame_to_array(msg), int(msg.sample_rate)
    if hasattr(msg, 'audio'):
        check_rate(default_rate, 'default_rate')
        return audio_data_stamped_to_array(msg, channels=default_channels,
                                           encoding=default_encoding), int(default_rate)
    raise ConversionError(f'{type(msg).__name__} is neither AudioFrame-like (sample_rate) nor '
                          f'AudioDataStamped-like (audio)')


@message_reader('AudioFrame')
def audio_frame_to_model_rate(msg: Any, rate: int) -> np.ndarray:
    """(samples,) float32 mono of an AudioFrame resampled to ``rate`` Hz."""
    return resample(audio_frame_to_array(msg), int(msg.sample_rate), rate)


def array_to_audio_frame(pcm: np.ndarray, *, sample_rate: int, encoding: str = 'S16LE',
                         stamp: Stamp = None, frame_id: str = '') -> Any:
    """A mono ``sentryfuse_ros/AudioFrame`` of float PCM in [-1, 1] (clipped).

    Args:
        pcm: (samples,) finite float PCM; S16LE stores round(x * 32768) clipped to int16.
        sample_rate: samples per second [Hz] > 0.
        encoding: 'S16LE' or 'F32LE'.
        stamp: None, seconds, (sec, nanosec) or a Time message (of the first sample).
        frame_id: header.frame_id.
    """
    from sentryfuse_ros.msg import AudioFrame

    if encoding not in AUDIO_ENCODINGS:
        raise ConversionError(f'encoding {encoding!r} is unsupported, expected one of '
                              f'{sorted(AUDIO_ENCODINGS)}')
    check_rate(sample_rate, 'sample_rate')
    pcm = np.asarray(pcm)
    if pcm.ndim != 1 or pcm.dtype.kind != 'f':
        raise ConversionError(f'pcm is {pcm.dtype} {pcm.shape}, expected float (samples,)')
    bad = int(pcm.size - np.count_nonzero(np.isfinite(pcm)))
    if bad:
        raise ConversionError(f'pcm has {bad} non-finite samples of {pcm.size}, expected finite values')
    pcm = np.clip(pcm, -1.0, 1.0)
    if encoding == 'S16LE':
        raw = np.clip(np.rint(pcm * 32768.0), -32768, 32767).astype('<i2').tobytes()
    else:
        raw = pcm.astype('<f4').tobytes()
    msg = AudioFrame()
    _fill_header(msg, stamp, frame_id)
    msg.sample_rate, msg.channels, msg.encoding = int(sample_rate), 1, encoding
    msg.data = _uint8_array(raw)
    return msg
