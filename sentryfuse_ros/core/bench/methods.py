"""Every grid method's unit choice for one trained model, its calibration sets, and its honest labels.

Calibration sets (all from the training split, one fixed permutation per ``data_seed``, so every method and
every protocol sees the same samples):
    calib   the first calib_batches x calib_batch_size samples: taylor, fisher, taylor_recal
    kwon    the first kwon_samples: kwon's Fisher, mask search and rearrangement; kwon_tuned's tuning too
    flap    the first flap_samples: flap's fluctuation statistics and bias compensation

Labels every record carries (``method_labels``):
    calibration   'static': the criterion's scores come from one measurement with every sensor (or need no
                  data: random, magnitude); 'per_live_set': they are re-derived for the live set (the
                  recalibrated oracle, SentryGate's table row)
    tuning_data   what data changed weights after the mask: 'none'; 'all_sensors' (FLAP's bias compensation;
                  kwon_tuned in P0, tuned once); 'live_sensors' (kwon_tuned tuned on the live set's data)
    mask          'per_live_set': the mask is re-solved for each live set with the absent blocks' costs at 0
                  (protocols P1/P2); 'static': solved once with every sensor and deployed unchanged (P0);
                  'none': no pruning (dense)
"""
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from sentryfuse_ros.core.bench.spec import DENSE_METHODS, METHODS, VARIANT_OF, BenchConfig, condition_name
from sentryfuse_ros.core.data.datasets import MultimodalTensors
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.pruning import baselines as bl
from sentryfuse_ros.core.pruning.masktune import tuned_model
from sentryfuse_ros.core.model.flops import count_params, measure_latency_ms, peak_memory_mb
from sentryfuse_ros.core.pruning.prune import select_units, slice_model, total_macs, unit_costs
from sentryfuse_ros.core.training import train as tr

Batches = List[Tuple[Dict[str, torch.Tensor], torch.Tensor]]
PER_LIVE_SET_SCORES = ('taylor_recal', 'sentrygate', 'gate_noalign')


def first_samples(data: MultimodalTensors, n: int, batch: int, seed: int) -> Batches:
    """The first ``n`` samples of a fixed permutation of ``data`` (seeded by ``seed``), in batches of ``batch``."""
    n = min(len(data), n)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    sub = data.select(perm)
    return [({m: x[i:i + batch] for m, x in sub.inputs.items()}, sub.labels[i:i + batch]) for i in range(0, n, batch)]


def calibration_sets(train: MultimodalTensors, cfg: BenchConfig) -> Dict[str, Batches]:
    """{'calib', 'kwon', 'flap'}: the calibration sets of the module docstring, from the training split."""
    return {'calib': first_samples(train, cfg.calib_batches * cfg.calib_batch_size, cfg.calib_batch_size,
                                   cfg.data_seed),
            'kwon': first_samples(train, cfg.kwon_samples, 128, cfg.data_seed),
            'flap': first_samples(train, cfg.flap_samples, 128, cfg.data_seed)}


def method_labels(method: str, protocol: str) -> Dict[str, str]:
    """{'calibration', 'tuning_data', 'mask'} of a record (module docstring); protocol 'P0' or 'P1P2'."""
    if protocol not in ('P0', 'P1P2'):
        raise ConfigError(f"protocol={protocol!r}: expected 'P0' or 'P1P2'")
    static_mask = protocol == 'P0' and method not in PER_LIVE_SET_SCORES
    tuning = {'flap': 'all_sensors', 'kwon_tuned': 'all_sensors' if static_mask else 'live_sensors'}.get(method, 'none')
    return {'calibration': 'per_live_set' if method in PER_LIVE_SET_SCORES else 'static', 'tuning_data': tuning,
            'mask': 'none' if method in DENSE_METHODS else ('static' if static_mask else 'per_live_set')}


class MethodScorer:
    """Unit choices of every method for one trained model (static scores computed once, lazily).

    Args:
        model, gate: the main checkpoint.
        sets: calibration sets {'calib', 'kwon', 'flap'} (every modality; ``calibration_sets``); a missing
            'kwon' or 'flap' falls back to 'calib'.
        seed: the random baseline's seed.
        variants: {'noalign': (model, gate), 'nocurr': (model, gate)} where trained.
    """

    def __init__(self, model, gate, sets: Dict[str, Batches], seed: int, variants: Dict[str, Tuple[Any, Any]]):
        self.model, self.gate, self.seed, self.variants = model, gate, seed, variants
        self.calib = sets['calib']
        self.kwon, self.flap = sets.get('kwon', self.calib), sets.get('flap', self.calib)
        self._static: Dict[str, Any] = {}
        self.static_ms: Dict[str, float] = {}
        self._weighted: Dict[Tuple[str, Tuple[str, ...], float], Any] = {}  # kwon_tuned / flap copies

    def _cached(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._static:
            start = time.perf_counter()
            self._static[key] = fn()
            self.static_ms[key] = (time.perf_counter() - start) * 1e3
        return self._static[key]

    def model_for(self, method: str, live: Sequence[str] = (), keep_fraction: float = 1.0):
        """The model a method's masks slice: kwon_tuned's tuned / flap's compensated copy made by the last
        ``masks`` call for (live, keep_fraction), handed over once (the scorer keeps no copy)."""
        if method in ('kwon_tuned', 'flap'):
            return self._weighted.pop((method, tuple(live), round(float(keep_fraction), 6)))
        return self._base(method)

    def samples_for(self, method: str) -> int:
        """Calibration samples the method's scores (and tuning) used; 0 for data-free methods."""
        sets = {'kwon': self.kwon, 'kwon_tuned': self.kwon, 'flap': self.flap, 'taylor': self.calib,
                'fisher': self.calib, 'taylor_recal': self.calib}
        return sum(int(y.shape[0]) for _, y in sets.get(method, []))

    def _base(self, method: str):
        variant = VARIANT_OF.get(method)
        return self.model if variant is None else self.variants[variant][0]

    def _grads(self, key: str, batches: Batches):
        return self._cached(key, lambda: bl.calibration_grads(self.model, batches))

    def masks(self, method: str, live: Tuple[str, ...], keep_fraction: float):
        """(masks, score_ms) keeping ``keep_fraction`` of the prunable MACs (1 - ratio); score_ms is the
        per-condition scoring time (static scores: 0, see static_ms)."""
        m = self._base(method)
        costs = unit_costs(m, live)
        start = time.perf_counter()
        key = (method, tuple(live), round(float(keep_fraction), 6))
        if method in ('kwon', 'kwon_tuned'):
            grads = self._grads('kwon_grads', self.kwon)
            fisher = self._cached('kwon_fisher', lambda: bl.fisher_scores(grads))
            masks = bl.kwon_rearrange(bl.kwon_mask_search(fisher, costs, keep_fraction), grads)
            if method == 'kwon':
                return masks, 0.0
            self._weighted[key] = tuned_model(m, masks, self.kwon, live)[0]  # tuned on the live set's data
            return masks, (time.perf_counter() - start) * 1e3
        if method == 'flap':
            stats = self._cached('flap_stats', lambda: bl.flap_statistics(m, self.flap))
            scores = self._cached('flap', lambda: bl.flap_scores(m, stats))
            masks = bl.flap_select(scores, costs, keep_fraction)
            self._weighted[key] = bl.flap_compensate(m, masks, stats)
            return masks, 0.0
        scores = self._scores(method, m, live)
        score_ms = (time.perf_counter() - start) * 1e3 if method in ('sentrygate', 'gate_uncond', 'gate_noalign') \
            else 0.0
        if method == 'taylor_recal':
            score_ms = self.static_ms[f'recal:{condition_name(live)}']
        return select_units(scores, costs, keep_fraction), score_ms

    def _scores(self, method: str, m, live: Tuple[str, ...]):
        if method == 'random':
            return self._cached('random', lambda: bl.random_scores(m, self.seed))
        if method in ('magnitude_l1', 'magnitude_l2'):
            return self._cached(method, lambda: bl.magnitude_scores(m, p=1 if method.endswith('l1') else 2))
        if method in ('taylor', 'fisher'):
            grads = self._grads('grads', self.calib)
            return self._cached(method, lambda: (bl.taylor_scores if method == 'taylor' else bl.fisher_scores)(grads))
        if method == 'taylor_recal':
            return self._cached(f'recal:{condition_name(live)}',
                                lambda: bl.taylor_scores(bl.calibration_grads(m, self.calib, live=live)))
        if method == 'sentrygate':
            return self.gate.scores(live)
        if method == 'gate_uncond':
            return self.gate.scores(self.model.modalities)
        if method == 'gate_noalign':
            return self.variants['noalign'][1].scores(live)
        raise ConfigError(f'method={method!r}: expected one of {METHODS}')


def evaluate_cell(model, masks, test: MultimodalTensors, live: Tuple[str, ...], *, batch: int,
                  latency_repeats: Optional[int]) -> Dict[str, Any]:
    """Slice, then accuracy on ``test`` (already on the model's device), GFLOPs, params, latency, memory."""
    sliced = model if masks is None else slice_model(model, masks)
    sliced.eval()
    acc = tr.accuracy(sliced, test, live, batch=batch)
    out = {'accuracy': round(acc, 6), 'gflops': round(2.0 * total_macs(sliced, live) / 1e9, 6),
           'params': int(count_params(sliced)), 'latency_ms': None, 'peak_mem_mb': None}
    if latency_repeats:
        device = next(sliced.parameters()).device
        x = sliced.example_inputs(live, batch=1, device=device, generator=torch.Generator().manual_seed(0))
        out['latency_ms'] = round(measure_latency_ms(sliced, x, repeats=latency_repeats, warmup=2), 4)
        out['peak_mem_mb'] = round(peak_memory_mb(sliced, x), 4)
    return out
