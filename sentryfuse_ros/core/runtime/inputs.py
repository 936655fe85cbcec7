"""The perception engine's input stage: newest sample per modality -> fresh set -> model inputs.

Model-free, so the perception engine (which adds the sub-network and the forward pass) and the
bag-dataset builder (which stores the inputs for training) prepare a sample with exactly the same
code: same lazy conversion, same freshness rule, same audio ring, same preprocessing. Times are
float seconds passed in; converters are injected (this module never sees a ROS message type).

Shapes:
    camera  (H, W, 3) uint8      -> preprocess -> (3, S, SW) float32
    lidar   (N, 3|4) float32     -> preprocess -> (3, G, GW) float32
    audio   ring buffer (A,) float32 at the model rate -> (A,) float32
"""
import dataclasses
import math
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from sentryfuse_ros.core.data import preprocess as pp
from sentryfuse_ros.core.errors import ConversionError, DataError
from sentryfuse_ros.core.runtime.stamps import JUMP_BACK_S, MAX_STAMP_OFFSET_S, ClockWatch, check_stamp

Converter = Callable[[Any], np.ndarray]


@dataclasses.dataclass
class _Pending:
    payload: Any
    stamp_s: float                # the sample's own stamp (header)
    received_s: float             # when it arrived, on the engine's clock (freshness)
    converter: Optional[Converter]
    array: Optional[np.ndarray] = None


def _finite(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` unchanged, or DataError naming ``what`` and how many of its values are NaN/inf."""
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DataError(f'{what} has {bad} non-finite values of {x.size}, expected finite values')
    return x


@dataclasses.dataclass
class PreparedInputs:
    """One sample in model form (no batch axis), as an inference at ``now_s`` would see it."""
    arrays: Dict[str, np.ndarray]  # modality -> preprocessed (3, S, SW) | (3, G, GW) | (A,) float32
    modalities: Tuple[str, ...]    # the modalities in ``arrays``, canonical order
    stamp_s: float                 # stamp of the newest sample used (-inf when none)
    convert_ms: float              # message -> array time since the previous prepare
    preprocess_ms: float           # array -> model input time


class AudioRing:
    """The newest ``size`` samples of a mono stream at the model rate.

    Args:
        size: window length in samples (PreprocessConfig.audio_samples).
    """

    def __init__(self, size: int):
        self.buffer = np.zeros(size, dtype=np.float32)  # (A,)
        self.filled = 0
        self.stamp_s = float('-inf')  # header stamp of the newest frame (its first sample)
        self.received_s = float('-inf')  # arrival time of the newest frame

    def push(self, pcm: np.ndarray, stamp_s: float, received_s: float) -> None:
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)[-len(self.buffer):]
        n = len(pcm)
        if n == 0:
            return
        self.buffer = np.roll(self.buffer, -n)
        self.buffer[-n:] = pcm
        self.filled = min(len(self.buffer), self.filled + n)
        # the frame just appended is the newest: its times, not the largest ever seen (one bad stamp
        # must not stick; a clock that steps back must not leave the ring in the future)
        self.stamp_s = float(stamp_s)
        self.received_s = float(received_s)

    def clear(self) -> None:
        self.buffer[:] = 0
        self.filled = 0
        self.stamp_s = float('-inf')
        self.received_s = float('-inf')


class SensorInputs:
    """Newest sample of each modality, freshness, conversion and preprocessing; no model.

    Args:
        pre: the model's preprocessing config.
        modalities: the model's modalities (others are ignored on push).
        max_age_s: freshness limit per modality in ``pp.MODALITIES`` order [s].
        min_audio_fill: fraction of the audio window that must be filled before audio is used.
        max_stamp_offset_s: a sample stamped further than this from its arrival time is refused [s]
            (core/runtime/stamps.py).
        jump_back_s: arrival/inference times stepping back by more than this reset every buffer [s].
    """

    def __init__(self, pre: pp.PreprocessConfig, modalities: Sequence[str], max_age_s: Sequence[float],
                 min_audio_fill: float, max_stamp_offset_s: float = MAX_STAMP_OFFSET_S,
                 jump_back_s: float = JUMP_BACK_S):
        self.pre = pre
        self.modalities = tuple(m for m in pp.MODALITIES if m in modalities)
        self.max_age_s = tuple(float(a) for a in max_age_s)
        self.min_audio_fill = float(min_audio_fill)
        self._latest: Dict[str, _Pending] = {}
        self._audio = AudioRing(pre.audio_samples)
        self._audio_convert_ms = 0.0
        self.max_stamp_offset_s = float(max_stamp_offset_s)
        self.clock = ClockWatch(jump_back_s)
        self.errors: Dict[str, int] = {}
        self.last_error: Dict[str, str] = {}

    def push(self, modality: str, payload: Any, stamp_s: float, converter: Optional[Converter] = None,
             received_s: Optional[float] = None) -> None:
        """Store the newest camera/lidar payload (converted lazily), or append audio now. Never raises.

        Any exception of this message (its conversion, a non-finite sample, a bad stamp) is
        contained to it: counted in ``errors[modality]`` with its text in ``last_error``, and the
        message is dropped. Args: as :meth:`_push_one`.
        """
        try:
            self._push_one(modality, payload, stamp_s, converter, received_s)
        except Exception as exc:  # noqa: BLE001 - one message must never stop the node
            self.record_error(modality if modality in self.modalities else 'inference', exc)

    def _push_one(self, modality: str, payload: Any, stamp_s: float, converter: Optional[Converter] = None,
                  received_s: Optional[float] = None) -> None:
        """Store the newest camera/lidar payload (converted lazily), or append audio now.

        Args:
            modality: 'camera', 'lidar' or 'audio'.
            payload: a message (with ``converter``) or an already converted array.
            stamp_s: the sample's stamp [s] (audio: stamp of its first sample).
            converter: payload -> array; for audio it must return (pcm float32 at the model rate).
            received_s: arrival time on the clock ``prepare`` is given; freshness is judged on it,
                so a sensor whose clock is off still counts as fresh. Default: ``stamp_s``.
        """
        if modality not in self.modalities:
            return
        received_s = float(stamp_s if received_s is None else received_s)
        for name, t in (('stamp_s', stamp_s), ('received_s', received_s)):
            if not math.isfinite(float(t)):
                raise ConversionError(f'{modality} {name} is {t!r}, expected a finite time [s]')
        self.observe_clock(received_s)
        check_stamp(float(stamp_s), received_s, modality, self.max_stamp_offset_s)
        if modality == 'audio':
            t0 = time.perf_counter()
            try:
                pcm = converter(payload) if converter else np.asarray(payload, dtype=np.float32)
                pcm = _finite(np.asarray(pcm, dtype=np.float32), 'audio samples')
            finally:
                self._audio_convert_ms += (time.perf_counter() - t0) * 1e3
            self._audio.push(pcm, stamp_s, received_s)
            return
        self._latest[modality] = _Pending(payload, float(stamp_s), received_s, converter)

    def observe_clock(self, now_s: float) -> bool:
        """Reset every buffer (:meth:`reset_time`) when ``now_s`` steps back past the newest time seen;
        True when it did."""
        if self.clock.jumped_back(now_s):
            self.reset_time()
            return True
        return False

    def reset_time(self) -> None:
        """The clock jumped back: every buffered sample was received "in the future"; forget them all."""
        for m in self.modalities:
            self.drop(m)
        self.clock.reset()

    def drop(self, modality: str) -> None:
        """Forget a modality's buffered data (e.g. a sensor declared dead)."""
        self._latest.pop(modality, None)
        if modality == 'audio':
            self._audio.clear()

    def stamp_of(self, modality: str) -> float:
        """Stamp of the modality's newest sample, -inf when none."""
        if modality == 'audio':
            return self._audio.stamp_s
        pending = self._latest.get(modality)
        return pending.stamp_s if pending else float('-inf')

    def received_of(self, modality: str) -> float:
        """Arrival time of the modality's newest sample, -inf when none."""
        if modality == 'audio':
            return self._audio.received_s
        pending = self._latest.get(modality)
        return pending.received_s if pending else float('-inf')

    def fresh(self, now_s: float) -> Tuple[str, ...]:
        """Modalities whose newest sample is younger than its max age (audio: window filled enough)."""
        out = []
        for m in self.modalities:
            age = now_s - self.received_of(m)
            if age > self.max_age_s[pp.MODALITIES.index(m)] or age < -self.clock.jump_back_s:
                continue  # too old, or received "after now" (the clock stepped back)
            if m == 'audio' and self._audio.filled < self.min_audio_fill * len(self._audio.buffer):
                continue
            out.append(m)
        return tuple(out)

    def prepare(self, now_s: float, live: Optional[Sequence[str]]) -> PreparedInputs:
        """The model inputs of the modalities that are live AND fresh at ``now_s``.

        An exception of a modality's conversion or preprocessing (or non-finite model inputs) drops that
        modality from this sample and is counted
        (``errors``, ``last_error``); the result may hold no modality at all.

        Args:
            now_s: current time [s] on the same clock as ``received_s``.
            live: modalities the health monitor reports live; None = no health yet (freshness only).
        """
        self.observe_clock(now_s)
        candidates = self.fresh(now_s)
        if live is not None:
            candidates = tuple(m for m in candidates if m in set(live))
        convert_ms = self._audio_convert_ms
        self._audio_convert_ms = 0.0
        raw: Dict[str, np.ndarray] = {}
        for m in candidates:
            if m == 'audio':
                continue
            pending = self._latest[m]
            if pending.array is None:
                t0 = time.perf_counter()
                try:
                    pending.array = pending.converter(pending.payload) if pending.converter else np.asarray(pending.payload)
                except Exception as exc:  # noqa: BLE001 - contained to this message, counted
                    self.record_error(m, exc)
                    self._latest.pop(m, None)
                    continue
                finally:
                    convert_ms += (time.perf_counter() - t0) * 1e3
            raw[m] = pending.array

        t0 = time.perf_counter()
        if 'audio' in candidates:
            raw['audio'] = self._audio.buffer.copy()                      # (A,), already at the model rate
        arrays: Dict[str, np.ndarray] = {}
        for m, array in raw.items():  # modalities whose conversion failed are absent here
            try:
                if m == 'camera':
                    x = pp.preprocess_camera(array, self.pre)             # (3, S, SW)
                elif m == 'lidar':
                    x = pp.preprocess_lidar(array, self.pre)              # (3, G, GW)
                else:
                    x = array
                arrays[m] = _finite(np.asarray(x, dtype=np.float32), f'{m} model input')
            except Exception as exc:  # noqa: BLE001 - contained to this modality, counted
                self.record_error(m, exc)
                if m != 'audio':
                    self._latest.pop(m, None)
        preprocess_ms = (time.perf_counter() - t0) * 1e3
        used = tuple(m for m in self.modalities if m in arrays)
        stamp = max((self.stamp_of(m) for m in used), default=float('-inf'))
        return PreparedInputs({m: arrays[m] for m in used}, used, stamp, convert_ms, preprocess_ms)

    def record_error(self, modality: str, exc: Exception) -> None:
        """Count an input error of ``modality`` (``errors``) and keep its text (``last_error``)."""
        self.errors[modality] = self.errors.get(modality, 0) + 1
        self.last_error[modality] = f'{type(exc).__name__}: {exc}'
