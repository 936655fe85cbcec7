"""A runner per (live subset, budget level): eager torch sub-networks or onnxruntime sessions.

Both runner sets answer the same questions for the perception engine: which budget level a
request maps to, the runner for (live, budget), warm-up of every runner at start-up, and build/hit
counts. A runner takes the engine's preprocessed inputs and returns logits.

- :class:`TorchRunners`: SubnetworkCache (select units with SentryGate, slice) on ``device``,
  cast to the precision's dtype (fp32, bf16, fp16) when built.
- :class:`OnnxRunners`: one onnxruntime session per file of an export manifest
  (``sentryfuse export``), on the providers of the checked RuntimeChoice (CPU here; TensorRT/CUDA
  execution providers where onnxruntime-gpu is installed), fp32 or int8 graphs as the export's
  precision says. Sessions are kept most-recently-used within ``max_cache_mb`` (counted as their
  graph files' bytes); a switch to a kept one is a dictionary lookup, as for torch.

Shapes: inputs {modality: (1, ...)} as in engine.py; logits (1, K).
"""
import collections
import dataclasses
import itertools
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from sentryfuse_ros.core.data import preprocess as pp
from sentryfuse_ros.core.errors import ExportError, RuntimeChoiceError
from sentryfuse_ros.core.pruning.budget import snap_to_level
from sentryfuse_ros.core.pruning.prune import SubnetworkCache
from sentryfuse_ros.core.runtime.choice import TENSORRT_EP, Capabilities, RuntimeChoice, ort_providers_for
from sentryfuse_ros.core.runtime.export import OUTPUT, ExportedSubnetwork, Manifest, load_manifest, ort_session

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def all_subsets(modalities: Sequence[str]):
    return [live for r in range(1, len(modalities) + 1) for live in itertools.combinations(modalities, r)]


@dataclasses.dataclass
class TorchRunner:
    """An eager sliced sub-network at one dtype."""
    model: torch.nn.Module
    key: str
    live: Tuple[str, ...]
    budget: float
    gflops: float

    def __call__(self, inputs: Dict[str, Tensor]) -> Tensor:
        with torch.inference_mode():
            return self.model(inputs)  # (1, K)


class TorchRunners:
    """Eager torch sub-networks per (live subset, budget level), built on first use.

    The dense model is moved to ``device`` and cast to the precision's dtype once; every
    sub-network shares its tensors (SubnetworkCache gathers only the linears of pruned units,
    kept most-recently-used within ``max_cache_mb``).

    Args:
        model: the trained dense SentryFuseModel (moved and cast in place: the one weight copy).
        score_fn: live tuple -> UnitScores (SentryGate.scores).
        budget_levels: budgets with a sub-network (a request snaps down to a level).
        device: 'cpu' or 'cuda' (checked by the caller, see choice.check_choice).
        precision: 'fp32', 'bf16' or 'fp16'.
        max_cache_mb: cap on gathered sub-network weights [MiB]; None = no cap.
    """

    def __init__(self, model, score_fn: Callable, budget_levels: Sequence[float], device: str = 'cpu',
                 precision: str = 'fp32', max_cache_mb: Optional[float] = None):
        self.device = torch.device(device)
        self.dtype = DTYPES[precision]
        self.input_dtype = self.dtype
        self.preprocess = model.config.preprocess
        self.class_names = tuple(model.config.class_names)
        self.modalities = tuple(m for m in pp.MODALITIES if m in model.config.model.modalities)
        model = model.to(self.device, self.dtype).eval()  # the one copy of the weights; sub-networks share it
        self.cache = SubnetworkCache(model, score_fn, budget_levels=budget_levels, device=str(self.device),
                                     max_cache_mb=max_cache_mb)

    @property
    def levels(self) -> Tuple[float, ...]:
        return self.cache.levels

    def get(self, live: Sequence[str], budget: float) -> TorchRunner:
        sub = self.cache.get(live, budget)
        return TorchRunner(sub.model, sub.key, sub.live, sub.budget, sub.gflops)

    def example_inputs(self, live: Sequence[str]) -> Dict[str, Tensor]:
        return {m: x.to(self.device, self.input_dtype) for m, x in
                self.cache.model.example_inputs(live, device=self.device).items()}

    def prebuild(self) -> float:
        """Build and run once the sub-network of every (subset, level); returns ms.

        Torch's first call of a shape costs far more than the rest. The cache keeps the most
        recently used ones within ``max_cache_mb`` (a hit is a dictionary lookup); the others are
        rebuilt on demand by a gather from the one dense copy. Zero-shot: no gradients.
        """
        t0 = time.perf_counter()
        for live in all_subsets(self.modalities):
            for budget in self.levels:
                self.get(live, budget)(self.example_inputs(live))
        return (time.perf_counter() - t0) * 1e3

    @property
    def stats(self) -> dict:
        return self.cache.stats


@dataclasses.dataclass
class OnnxRunner:
    """One onnxruntime session of an exported sub-network."""
    session: object
    key: str
    live: Tuple[str, ...]
    budget: float
    gflops: float

    def __call__(self, inputs: Dict[str, Tensor]) -> Tensor:
        feed = {m: inputs[m].detach().cpu().numpy().astype(np.float32, copy=False) for m in self.live}
        return torch.from_numpy(self.session.run([OUTPUT], feed)[0])  # (1, K)


class OnnxRunners:
    """onnxruntime sessions of an export folder per (live subset, budget level).

    Args:
        manifest: a loaded Manifest (or its folder).
        choice: a checked onnxruntime RuntimeChoice (device and precision pick the providers).
        caps: the machine's Capabilities (its onnxruntime providers).
        threads: intra-op threads per session.
        max_cache_mb: cap on the graph bytes of the sessions kept [MiB] (the least recently used one
            is closed first; the one in use always stays); None = keep every session.
    """

    def __init__(self, manifest, choice: RuntimeChoice, caps: Capabilities, threads: int = 1,
                 max_cache_mb: Optional[float] = None):
        if choice.backend != 'onnxruntime':
            raise RuntimeChoiceError(f"OnnxRunners with backend={choice.backend!r}: expected 'onnxruntime'")
        if max_cache_mb is not None and not max_cache_mb >= 0:
            raise ExportError(f'max_cache_mb={max_cache_mb!r}: expected a size >= 0 [MiB] or None')
        self.manifest: Manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        _check_precision(self.manifest, choice)
        self.device = torch.device('cpu')       # inputs are handed over as host arrays
        self.input_dtype = torch.float32        # the exported graphs take fp32 (int8 ones too)
        self.dtype = torch.float32
        self.preprocess = self.manifest.preprocess
        self.class_names = self.manifest.class_names
        self.modalities = tuple(m for m in pp.MODALITIES if m in self.manifest.modalities)
        self.providers = ort_providers_for(choice, caps, cache_dir=_trt_cache_dir(self.manifest, choice, caps))
        self.threads = int(threads)
        self._by_subset: Dict[Tuple[str, ...], Dict[float, ExportedSubnetwork]] = {}
        for entry in self.manifest.subnetworks:
            self._by_subset.setdefault(entry.subset, {})[entry.budget] = entry
        self.levels = tuple(sorted({e.budget for e in self.manifest.subnetworks}, reverse=True))
        self._runners: 'collections.OrderedDict[Tuple[Tuple[str, ...], float], OnnxRunner]' = collections.OrderedDict()
        self.max_cache_bytes = None if max_cache_mb is None else int(max_cache_mb * 2 ** 20)
        self._builds = self._hits = self._evictions = 0

    def level_for(self, live: Tuple[str, ...], budget: float) -> float:
        """The exported level a request maps to (``budget.snap_to_level``, as the torch cache snaps)."""
        return snap_to_level(sorted(self._by_subset[live], reverse=True), budget)

    def get(self, live: Sequence[str], budget: float) -> OnnxRunner:
        live = tuple(m for m in pp.MODALITIES if m in set(live))
        if live not in self._by_subset:
            raise ExportError(f'no exported sub-network for {"+".join(live)!r} in {str(self.manifest.folder)!r}; '
                              f'exported subsets: {sorted("+".join(s) for s in self._by_subset)}')
        level = self.level_for(live, float(budget))
        runner = self._runners.get((live, level))
        if runner is not None:
            self._runners.move_to_end((live, level))
            self._hits += 1
            return runner
        entry = self._by_subset[live][level]
        self._evict(incoming=self._graph_bytes(entry))  # close first: the peak stays near the cap
        session = ort_session(self.manifest.folder / entry.file, self.providers, self.threads)
        runner = OnnxRunner(session, entry.key, entry.subset, entry.budget, entry.gflops)
        self._runners[(live, level)] = runner
        self._builds += 1
        return runner

    def _graph_bytes(self, entry: ExportedSubnetwork) -> int:
        return entry.bytes or (self.manifest.folder / entry.file).stat().st_size

    def storage_bytes(self) -> int:
        """Graph bytes of the sessions kept."""
        return sum(self._graph_bytes(self._by_subset[live][level]) for live, level in self._runners)

    def _evict(self, incoming: int) -> None:
        """Close least recently used sessions until the kept graph bytes plus ``incoming`` fit the cap."""
        if self.max_cache_bytes is None:
            return
        while self._runners and self.storage_bytes() + incoming > self.max_cache_bytes:
            self._runners.popitem(last=False)
            self._evictions += 1

    def example_inputs(self, live: Sequence[str]) -> Dict[str, Tensor]:
        live = tuple(m for m in pp.MODALITIES if m in set(live))
        entry = next(iter(self._by_subset[live].values()))
        return {name: torch.randn(shape) for name, shape in entry.inputs}

    def prebuild(self) -> float:
        """Create and warm up (one run each) the session of every exported sub-network; returns ms."""
        t0 = time.perf_counter()
        for live, by_level in self._by_subset.items():
            for level in by_level:
                self.get(live, level)(self.example_inputs(live))  # onnxruntime's first run allocates
        return (time.perf_counter() - t0) * 1e3

    @property
    def stats(self) -> dict:
        """{'builds', 'hits', 'cached', 'evictions', 'storage_mb' (graph bytes of the kept sessions)}."""
        return {'builds': self._builds, 'hits': self._hits, 'cached': len(self._runners), 'evictions': self._evictions,
                'storage_mb': self.storage_bytes() / 2 ** 20}


def _check_precision(manifest: Manifest, choice: RuntimeChoice) -> None:
    """ExportError when the export's graphs cannot run ``choice``'s precision (int8 needs an int8 export)."""
    wanted = 'int8' if choice.precision == 'int8' else 'fp32'   # fp16 is TensorRT's cast of the fp32 graphs
    if manifest.precision != wanted:
        raise ExportError(f'export {str(manifest.folder)!r} holds {manifest.precision} graphs: precision='
                          f'{choice.precision!r} expected an export of `sentryfuse export --precision {wanted}`')
    if wanted == 'int8' and choice.device == 'cuda' and manifest.quantization != 'static':
        raise ExportError(f'export {str(manifest.folder)!r} holds {manifest.quantization} int8 graphs: TensorRT '
                          "(device='cuda') expected static QDQ graphs (`sentryfuse export --precision int8 "
                          "--quantization static`)")


def _trt_cache_dir(manifest: Manifest, choice: RuntimeChoice, caps: Capabilities):
    """``<export>/trt_cache`` for TensorRT's engine cache (None: no TensorRT, or the folder is read-only)."""
    if choice.device != 'cuda' or TENSORRT_EP not in caps.ort_providers:
        return None
    folder = manifest.folder / 'trt_cache'
    try:
        folder.mkdir(exist_ok=True)
    except OSError:   # e.g. an export installed read-only: TensorRT then rebuilds its engines at each start
        return None
    return str(folder)
