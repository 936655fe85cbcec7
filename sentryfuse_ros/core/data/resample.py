"""Band-limited resampling of mono PCM with libsoxr (``soxr``, the SoX resampler as a wheel). Used
by the message conversions (any microphone rate -> the model's rate).

The work is bounded by the data: both rates must lie in AUDIO_RATE_RANGE_HZ, so the output holds
at most ``len(pcm) * to_rate / from_rate`` samples and a rate field cannot make it allocate or loop
beyond a fixed multiple of what the message holds (a sample_rate of 4294967295 or of 1 is refused
by name instead of sizing a 205 GiB table or taking seconds per 20 ms frame).

Shapes: pcm (L,) float32 -> (round(L * to_rate / from_rate),) float32.
"""
import math

import numpy as np
import soxr

from sentryfuse_ros.core.errors import ConversionError

AUDIO_RATE_RANGE_HZ = (1000.0, 768000.0)  # rates a microphone or a model can have [Hz], inclusive
QUALITY = 'HQ'  # soxr preset: 20-bit precision, passband to 91% of Nyquist (libsoxr's 'high')


def check_rate(rate: float, name: str) -> float:
    """``rate`` as a float, or ConversionError naming ``name`` and the value when outside the range."""
    lo, hi = AUDIO_RATE_RANGE_HZ
    try:
        value = float(rate)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f'{name} is {rate!r}, expected a rate in [{lo:.0f}, {hi:.0f}] Hz') from exc
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ConversionError(f'{name} is {rate!r}, expected a rate in [{lo:.0f}, {hi:.0f}] Hz')
    return value


def resample(pcm: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
    """Band-limited resampling of mono float PCM (libsoxr, 'HQ' preset).

    Downsampling low-passes below the new Nyquist (no aliasing); the output length is
    ``round(len(pcm) * to_rate / from_rate)``. Each call is independent (a 20 ms frame is
    resampled on its own, as the converters call it).

    Args:
        pcm: (samples,) float PCM; non-finite samples are an error.
        from_rate: input rate [Hz] in AUDIO_RATE_RANGE_HZ.
        to_rate: output rate [Hz] in AUDIO_RATE_RANGE_HZ.
    """
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.ndim != 1:
        raise ConversionError(f'pcm shape is {pcm.shape}, expected (samples,)')
    from_rate = check_rate(from_rate, 'from_rate')
    to_rate = check_rate(to_rate, 'to_rate')
    if from_rate == to_rate or pcm.size == 0:
        return pcm.copy()
    bad = int(pcm.size - np.count_nonzero(np.isfinite(pcm)))
    if bad:
        raise ConversionError(f'pcm has {bad} non-finite samples of {pcm.size}, expected finite values')
    out = soxr.resample(pcm, from_rate, to_rate, quality=QUALITY)  # (L,) -> (L * to / from,)
    return np.ascontiguousarray(out, dtype=np.float32)
