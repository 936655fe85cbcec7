"""The perception engine: newest sample per modality -> live set -> sub-network -> prediction.

ROS-free and clock-agnostic (times are float seconds passed in), so the perception node and the
offline bag replay drive exactly the same code. Raw payloads are stored as they arrive and converted
only when an inference uses them; the converter is injected (the node passes functions from
``sentryfuse_ros.msg_arrays``), so this module never sees a ROS message type. The input stage
(buffering, freshness, conversion, preprocessing) is :class:`~sentryfuse_ros.core.runtime.inputs.SensorInputs`,
shared with the bag-dataset builder so training data is prepared exactly as the robot prepares it.

Shapes:
    camera  (H, W, 3) uint8      -> preprocess -> (1, 3, S, S)
    lidar   (N, 3|4) float32     -> preprocess -> (1, 3, G, G)
    audio   ring buffer (A,) float32 at the model rate -> (1, A)
"""
import dataclasses
import time
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from sentryfuse_ros.core.data import preprocess as pp
from sentryfuse_ros.core.config import check
from sentryfuse_ros.core.errors import ModelError
from sentryfuse_ros.core.pruning.budget import check_budget_levels
from sentryfuse_ros.core.runtime.backends import TorchRunners
from sentryfuse_ros.core.pruning.budget import BUDGET_LEVELS
from sentryfuse_ros.core.runtime.params import PERCEPTION, by_name
from sentryfuse_ros.core.runtime.inputs import AudioRing, Converter, SensorInputs  # noqa: F401  (re-exported)
from sentryfuse_ros.core.runtime.stamps import MAX_STAMP_OFFSET_S


_MAX_AGES = tuple(by_name(PERCEPTION)[f'{m}.max_age'].default for m in pp.MODALITIES)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    max_age_s: Tuple[float, float, float] = _MAX_AGES  # freshness limit per modality (camera, lidar, audio) [s]
    budget_levels: Tuple[float, ...] = BUDGET_LEVELS  # budgets (fractions of the live set's dense FLOPs)
    min_audio_fill: float = 0.25  # fraction of the audio window that must be filled before audio is used
    max_cache_mb: float = 32.0    # cap on gathered sub-network weights kept beyond the one dense copy [MiB] (MRU)
    max_stamp_offset_s: float = MAX_STAMP_OFFSET_S  # samples stamped further than this from their arrival are refused [s]

    def __post_init__(self):
        check(len(self.max_age_s) == len(pp.MODALITIES) and all(a > 0 for a in self.max_age_s),
              'max_age_s', self.max_age_s, f'{len(pp.MODALITIES)} positive ages in seconds')
        object.__setattr__(self, 'budget_levels', check_budget_levels(self.budget_levels, 'budget_levels'))
        check(0 <= self.min_audio_fill <= 1, 'min_audio_fill', self.min_audio_fill, 'a fraction in [0, 1]')
        check(isinstance(self.max_cache_mb, (int, float)) and self.max_cache_mb >= 0, 'max_cache_mb',
              self.max_cache_mb, 'a size >= 0 [MiB]')
        check(isinstance(self.max_stamp_offset_s, (int, float)) and self.max_stamp_offset_s > 0, 'max_stamp_offset_s',
              self.max_stamp_offset_s, 'a positive time [s] (inf: any finite stamp)')


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


class PerceptionEngine:
    """Zero-shot SentryFuse inference over whatever sensors are live.

    Args:
        model: the trained SentryFuseModel (dense); never trained here.
        score_fn: live tuple -> UnitScores (SentryGate.scores); used only to build sub-networks.
        config: EngineConfig.
        device: torch device for inference ('cpu' or 'cuda'), checked by the caller
            (core.runtime.choice.check_choice).
        precision: 'fp32', 'bf16' or 'fp16'; None = the device's default (fp16 on CUDA, fp32 on CPU).
        runners: the runner set (core.runtime.backends); None = eager torch sub-networks of ``model``
            (TorchRunners: the one weight copy, cast once). With OnnxRunners, ``model`` and
            ``score_fn`` may be None.
    """

    def __init__(self, model: Optional[torch.nn.Module], score_fn: Optional[Callable],
                 config: EngineConfig = EngineConfig(), device: str = 'cpu', precision: Optional[str] = None,
                 runners=None):
        self.config = config
        if runners is None:
            precision = precision or ('fp16' if torch.device(device).type == 'cuda' else 'fp32')
            runners = TorchRunners(model, score_fn, config.budget_levels, device=device, precision=precision,
                                   max_cache_mb=config.max_cache_mb)
        self.runners = runners
        self.cache = getattr(runners, 'cache', None)  # the SubnetworkCache of torch runners
        self.model_config = getattr(model, 'config', None)
        self.pre = runners.preprocess
        self.class_names = tuple(runners.class_names)
        self.modalities = tuple(runners.modalities)
        self.device = runners.device
        self.dtype = runners.input_dtype
        self.inputs = SensorInputs(self.pre, self.modalities, config.max_age_s, config.min_audio_fill,
                                   max_stamp_offset_s=config.max_stamp_offset_s)
        self._current_key: Optional[str] = None
        self.switches = 0
        self.forward_passes = 0  # sub-network calls by infer() (prebuild's warm-up runs not counted)
        # the input stage's methods and error counters, under the engine's long-standing names
        self.push, self.drop, self.fresh = self.inputs.push, self.inputs.drop, self.inputs.fresh
        self.stamp_of, self.received_of = self.inputs.stamp_of, self.inputs.received_of
        self.record_error = self.inputs.record_error
        self.reset_time = self.inputs.reset_time  # the clock jumped back (a node's jump callback calls it)
        self.errors, self.last_error = self.inputs.errors, self.inputs.last_error

    def prebuild(self) -> float:
        """Build and warm up the sub-network of every (modality subset, budget level); returns ms.

        Each is run once (torch's first call of a shape costs far more than the rest). The cache
        keeps the most recently used ones within ``max_cache_mb`` (a hit is a dictionary lookup);
        the others are rebuilt on demand by a gather from the one dense copy (a few ms at the robot
        preset). Zero-shot: selection and slicing only, no gradients.
        """
        return self.runners.prebuild()

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
            budget: compute budget (fraction of the live set's dense forward FLOPs, checked where it
                entered: the node's health view, the replay's battery table); the runner set snaps it
                to a level.
        Returns:
            The Inference, or None when no modality is usable (nothing is published then).
        """
        prepared = self.inputs.prepare(now_s, live)
        used = prepared.modalities
        if not used:
            return None
        tensors = {m: torch.as_tensor(x).unsqueeze(0).to(self.device, self.dtype)  # (...) -> (1, ...)
                   for m, x in prepared.arrays.items()}

        t0 = time.perf_counter()
        sub = self.runners.get(used, budget)  # a torch sub-network or an onnxruntime session
        if sub.key != self._current_key:
            if self._current_key is not None:
                self.switches += 1
            self._current_key = sub.key
        reconfigure_ms = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        self.forward_passes += 1
        with torch.inference_mode():
            logits = sub(tensors)                                            # (1, K)
            probs = torch.softmax(logits.float(), dim=-1)[0].cpu().numpy()   # (K,)
        inference_ms = (time.perf_counter() - t0) * 1e3
        class_id = int(np.argmax(probs))
        stamp = prepared.stamp_s
        return Inference(
            class_id=class_id, label=self.class_names[class_id], confidence=float(probs[class_id]),
            scores=probs, modalities_used=used, compute_budget=float(sub.budget), gflops=float(sub.gflops),
            subnetwork=sub.key, stamp_s=stamp, convert_ms=prepared.convert_ms, preprocess_ms=prepared.preprocess_ms,
            inference_ms=inference_ms, reconfigure_ms=reconfigure_ms,
            sensor_age_ms=max(0.0, (now_s - stamp) * 1e3))
