"""The perception engine: newest sample per modality -> live set -> sub-network -> prediction.

ROS-free and clock-agnostic (times are float seconds passed in), so the perception node and the
offline bag replay drive exactly the same code. Raw payloads are stored as they arrive and converted
only when an inference uses them; the converter is injected (the node passes functions from
``sentryfuse_ros.msg_arrays``), so this module never sees a ROS message type.

Shapes:
    camera  (H, W, 3) uint8      -> preprocess -> (1, 3, S, S)
    lidar   (N, 3|4) float32     -> preprocess -> (1, 3, G, G)
    audio   ring buffer (A,) float32 at the model rate -> (1, A)
"""
import dataclasses
import itertools
import math
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from sentryfuse_ros.core.data import preprocess as pp
from sentryfuse_ros.core.config import check
from sentryfuse_ros.core.errors import ConversionError, DataError, ModelError
from sentryfuse_ros.core.pruning.prune import SubnetworkCache

Converter = Callable[[Any], np.ndarray]


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    max_age_s: Tuple[float, float, float] = (0.5, 0.5, 0.5)  # freshness limit per modality (camera, lidar, audio) [s]
    budget_levels: Tuple[float, ...] = (1.0, 0.85, 0.7, 0.5, 0.4)  # budgets (fractions of the live set's dense FLOPs)
    min_audio_fill: float = 0.25  # fraction of the audio window that must be filled before audio is used
    max_cache_mb: float = 32.0    # cap on gathered sub-network weights kept beyond the one dense copy [MiB] (MRU)

    def __post_init__(self):
        check(len(self.max_age_s) == len(pp.MODALITIES) and all(a > 0 for a in self.max_age_s),
              'max_age_s', self.max_age_s, f'{len(pp.MODALITIES)} positive ages in seconds')
        check(len(self.budget_levels) >= 1 and all(0 < b <= 1 for b in self.budget_levels),
              'budget_levels', self.budget_levels, 'budgets in (0, 1]')
        check(0 <= self.min_audio_fill <= 1, 'min_audio_fill', self.min_audio_fill, 'a fraction in [0, 1]')
        check(isinstance(self.max_cache_mb, (int, float)) and self.max_cache_mb >= 0, 'max_cache_mb',
              self.max_cache_mb, 'a size >= 0 [MiB]')


@dataclasses.dataclass
class Inference:
    """One prediction with what fed it and what it cost."""
    class_id: int
    label: str
    confidence: float
    scores: np.ndarray            # (num_classes,) softmax probabilities
    modalities_used: Tuple[str, ...]
    compute_budget: float
    gflops: float
    subnetwork: str
    stamp_s: float                # stamp of the newest sample used
    convert_ms: float
    preprocess_ms: float
    inference_ms: float
    reconfigure_ms: float
    sensor_age_ms: float


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
        self.stamp_s = max(self.stamp_s, stamp_s)
        self.received_s = max(self.received_s, received_s)

    def clear(self) -> None:
        self.buffer[:] = 0
        self.filled = 0
        self.stamp_s = float('-inf')
        self.received_s = float('-inf')


class PerceptionEngine:
    """Zero-shot SentryFuse inference over whatever sensors are live.

    Args:
        model: the trained SentryFuseModel (dense); never trained here.
        score_fn: live tuple -> UnitScores (SentryGate.scores); used only to build sub-networks.
        config: EngineConfig.
        device: torch device for inference ('cpu' or 'cuda'); fp16 is used on CUDA.
    """

    def __init__(self, model: torch.nn.Module, score_fn: Callable, config: EngineConfig = EngineConfig(),
                 device: str = 'cpu'):
        self.config = config
        self.model_config = model.config
        self.pre = model.config.preprocess
        self.class_names = tuple(model.config.class_names)
        self.modalities = tuple(m for m in pp.MODALITIES if m in model.config.model.modalities)
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == 'cuda' else torch.float32
        model = model.to(self.device, self.dtype).eval()  # the one copy of the weights; sub-networks share it
        self.cache = SubnetworkCache(model, score_fn, budget_levels=config.budget_levels, device=str(self.device),
                                     max_cache_mb=config.max_cache_mb)
        self._latest: Dict[str, _Pending] = {}
        self._audio = AudioRing(self.pre.audio_samples)
        self._audio_convert_ms = 0.0
        self._current_key: Optional[str] = None
        self.switches = 0
        self.errors: Dict[str, int] = {}
        self.last_error: Dict[str, str] = {}

    def prebuild(self) -> float:
        """Build and warm up the sub-network of every (modality subset, budget level); returns ms.

        Each is run once (torch's first call of a shape costs far more than the rest). The cache
        keeps the most recently used ones within ``max_cache_mb`` (a hit is a dictionary lookup);
        the others are rebuilt on demand by a gather from the one dense copy (a few ms at the robot
        preset). Zero-shot: selection and slicing only, no gradients.
        """
        t0 = time.perf_counter()
        for r in range(1, len(self.modalities) + 1):
            for live in itertools.combinations(self.modalities, r):
                for budget in self.config.budget_levels:
                    sub = self.cache.get(live, budget)
                    # one warm-up forward: torch's first call of each shape costs far more than the rest
                    example = {m: x.to(self.dtype) for m, x in
                               sub.model.example_inputs(live, device=self.device).items()}
                    with torch.inference_mode():
                        sub.model(example)
        return (time.perf_counter() - t0) * 1e3

    # --- inputs -----------------------------------------------------------------------------
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
            received_s: arrival time on the clock ``infer`` is given; freshness is judged on it,
                so a sensor whose clock is off still counts as fresh. Default: ``stamp_s``.
        """
        if modality not in self.modalities:
            return
        received_s = float(stamp_s if received_s is None else received_s)
        for name, t in (('stamp_s', stamp_s), ('received_s', received_s)):
            if not math.isfinite(float(t)):
                raise ConversionError(f'{modality} {name} is {t!r}, expected a finite time [s]')
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
            if age > self.config.max_age_s[pp.MODALITIES.index(m)]:
                continue
            if m == 'audio' and self._audio.filled < self.config.min_audio_fill * len(self._audio.buffer):
                continue
            out.append(m)
        return tuple(out)

    # --- inference --------------------------------------------------------------------------
    def infer(self, now_s: float, live: Optional[Sequence[str]], budget: float) -> Optional[Inference]:
        """One inference (see :meth:`_infer_once`); never raises and never returns non-finite scores.

        An exception of a modality's conversion or preprocessing skips that modality (counted under
        its name); any other exception, or non-finite logits from finite inputs (NaN/inf weights,
        an overflow), is counted under ``errors['inference']`` with its cause, and gives None.
        """
        try:
            result = self._infer_once(now_s, live, budget)
        except Exception as exc:  # noqa: BLE001 - one inference must never stop the node
            self.record_error('inference', exc)
            return None
        if result is not None and not np.isfinite(result.scores).all():
            self.record_error('inference', ModelError(
                f'sub-network {result.subnetwork} gave non-finite scores {result.scores.tolist()} from '
                f'finite {"+".join(result.modalities_used)} inputs: expected finite logits (are the '
                f'checkpoint\'s weights finite?); nothing published'))
            return None
        return result

    def _infer_once(self, now_s: float, live: Optional[Sequence[str]], budget: float) -> Optional[Inference]:
        """Run one inference on the modalities that are live AND fresh.

        Args:
            now_s: current time [s] on the same clock as the stamps.
            live: modalities the health monitor reports live; None = no health yet (use freshness only).
            budget: compute budget in (0, 1].
        Returns:
            The Inference, or None when no modality is usable (nothing is published then).
        """
        candidates = self.fresh(now_s)
        if live is not None:
            candidates = tuple(m for m in candidates if m in set(live))
        convert_ms = self._audio_convert_ms
        self._audio_convert_ms = 0.0
        arrays: Dict[str, np.ndarray] = {}
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
            arrays[m] = pending.array

        t0 = time.perf_counter()
        tensors: Dict[str, torch.Tensor] = {}
        if 'audio' in candidates:
            arrays['audio'] = self._audio.buffer.copy()                     # (A,), already at the model rate
        for m, array in arrays.items():  # modalities whose conversion failed are absent here
            try:
                if m == 'camera':
                    x = pp.preprocess_camera(array, self.pre)               # (3, S, S)
                elif m == 'lidar':
                    x = pp.preprocess_lidar(array, self.pre)                # (3, G, G)
                else:
                    x = array
                x = _finite(np.asarray(x, dtype=np.float32), f'{m} model input')
            except Exception as exc:  # noqa: BLE001 - contained to this modality, counted
                self.record_error(m, exc)
                if m != 'audio':
                    self._latest.pop(m, None)
                continue
            tensors[m] = torch.as_tensor(np.asarray(x)).unsqueeze(0).to(self.device, self.dtype)  # (1, ...)
        preprocess_ms = (time.perf_counter() - t0) * 1e3
        used = tuple(m for m in self.modalities if m in tensors)
        if not used:
            return None

        t0 = time.perf_counter()
        sub = self.cache.get(used, budget)
        if sub.key != self._current_key:
            if self._current_key is not None:
                self.switches += 1
            self._current_key = sub.key
        reconfigure_ms = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = sub.model(tensors)                                      # (1, K)
            probs = torch.softmax(logits.float(), dim=-1)[0].cpu().numpy()   # (K,)
        inference_ms = (time.perf_counter() - t0) * 1e3
        class_id = int(np.argmax(probs))
        stamp = max(self.stamp_of(m) for m in used)
        return Inference(
            class_id=class_id, label=self.class_names[class_id], confidence=float(probs[class_id]),
            scores=probs, modalities_used=used, compute_budget=float(sub.budget), gflops=float(sub.gflops),
            subnetwork=sub.key, stamp_s=stamp, convert_ms=convert_ms, preprocess_ms=preprocess_ms,
            inference_ms=inference_ms, reconfigure_ms=reconfigure_ms,
            sensor_age_ms=max(0.0, (now_s - stamp) * 1e3))

    def record_error(self, modality: str, exc: Exception) -> None:
        """Count an input error of ``modality`` (``errors``) and keep its text (``last_error``)."""
        self.errors[modality] = self.errors.get(modality, 0) + 1
        self.last_error[modality] = f'{type(exc).__name__}: {exc}'
