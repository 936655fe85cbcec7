"""Protocol P0, deployed static: what a user of Torch-Pruning or Kwon et al. ships, against SentryFuse.

A baseline prunes a conventional model (``conventional`` or ``conventional_nocurr``) once, offline, with every
sensor present, keeping keep_fraction = 1 - ratio of the prunable MACs; that one sliced model is deployed unchanged and
run on every live set (blocks of absent sensors are skipped, as in every protocol). SentryFuse re-prunes
its own checkpoint per live set with SentryGate's table row, at the keep_fraction whose realised FLOPs on that
live set match what the static model costs there (``matched_masks``: within ``MATCH_TOLERANCE``, relative,
of the static model's whole forward, fixed parts included). Each SentryGate record names the static model it
is matched to (``matched_to`` = 'model/method') and carries both FLOP counts.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from sentryfuse_ros.core.bench.methods import MethodScorer, evaluate_cell, method_labels
from sentryfuse_ros.core.bench.results import cell_key
from sentryfuse_ros.core.bench.spec import BenchConfig, condition_name, conditions_for, p0_cells
from sentryfuse_ros.core.errors import PruningError
from sentryfuse_ros.core.pruning.prune import UnitMasks, UnitScores, select_units, slice_model, total_macs, unit_costs

MATCH_TOLERANCE = 0.03  # SentryGate's realised FLOPs within 3% (relative) of the static model's on that live set


def kept_macs(masks: UnitMasks, costs) -> float:
    """Prunable MACs the kept units cost (batch 1)."""
    return float(sum(torch.as_tensor(c)[torch.as_tensor(m)].sum() for pair_m, pair_c in zip(masks, costs)
                     for m, c in zip(pair_m, pair_c)))


def matched_masks(model, scores: UnitScores, live: Sequence[str], target_macs: float, *,
                  iters: int = 40) -> Tuple[UnitMasks, float, float]:
    """SentryGate's masks on ``live`` whose whole forward costs closest to ``target_macs`` (bisection on the
    prunable fraction given to ``select_units``); (masks, realised MACs, prunable fraction)."""
    if not target_macs > 0:
        raise PruningError(f'target_macs={target_macs!r}: expected a positive MAC count')
    costs = unit_costs(model, live)
    fixed = float(model.fixed_macs(live))
    lo, hi, best = 0.0, 1.0, None
    for frac in [1.0] + [None] * iters:
        frac = (lo + hi) / 2 if frac is None else frac
        masks = select_units(scores, costs, max(frac, 1e-9))
        real = fixed + kept_macs(masks, costs)
        if best is None or abs(real - target_macs) < abs(best[1] - target_macs):
            best = (masks, real, frac)
        if real < target_macs:
            lo = frac
        else:
            hi = frac
        if abs(real - target_macs) <= 1e-9 * target_macs:
            break
    return best


def run_p0(cfg: BenchConfig, job: Tuple[str, str, int], data, test, sets: Dict[str, Any],
           records: List[Dict[str, Any]], done: set, load: Callable[[str], Tuple[Any, Any]],
           scorers: Optional[Dict[str, MethodScorer]] = None) -> int:
    """Protocol P0's records of one grid job (module docstring); returns the number of new records.

    Args:
        job: (dataset, backbone, seed).
        data: the job's splits ({'train', ...}); test: its test split on the model's device.
        sets: calibration sets (``methods.calibration_sets``), every sensor.
        load: variant name ('main', 'conventional', 'conventional_nocurr') -> (model, gate), trained if absent.
        scorers: {model name: MethodScorer} already built for these models (their cached scores are reused).
    """
    dataset, backbone, seed = job
    mods = data['train'].modalities
    lives, full = conditions_for(mods, cfg.conditions), tuple(mods)
    base = {'backbone': backbone, 'dataset': dataset, 'seed': seed, 'protocol': 'P0', 'n_test': len(test),
            'n_classes': len(data['train'].class_names), 'score_ms': 0.0}

    def key(model, method, live, ratio, matched_to=None):
        return cell_key({**base, 'model': model, 'method': method, 'condition': condition_name(live), 'ratio': ratio,
                         'matched_to': matched_to})
    todo = [c for c in p0_cells(cfg, mods) if any(
        key(c[0], c[2], lv, c[1]) not in done or key('sentryfuse', 'sentrygate', lv, c[1], f'{c[0]}/{c[2]}') not in done
        for lv in lives)]
    if not todo:
        return 0
    ours, gate = load('main')
    new, scorers = 0, dict(scorers or {})
    for model_name, ratio, method in todo:
        if model_name not in scorers:
            scorers[model_name] = MethodScorer(*load(model_name), sets, seed, {})
        scorer, keep = scorers[model_name], 1.0 - ratio
        masks, _ = scorer.masks(method, full, keep)  # solved once, every sensor present
        static = slice_model(scorer.model_for(method, full, keep), masks).eval()
        name = f'{model_name}/{method}'
        for live in lives:
            common = {**base, 'condition': condition_name(live), 'ratio': ratio}
            if key(model_name, method, live, ratio) not in done:
                rec = {**common, 'model': model_name, 'method': method,
                       **evaluate_cell(static, None, test, live, batch=cfg.eval_batch, latency_repeats=None),
                       **method_labels(method, 'P0'), 'calib_samples': scorer.samples_for(method)}
                records.append(rec)
                done.add(cell_key(rec))
                new += 1
            if key('sentryfuse', 'sentrygate', live, ratio, name) not in done:
                target = total_macs(static, live)
                sg, _, frac = matched_masks(ours, gate.scores(live), live, target)
                cell = evaluate_cell(ours, sg, test, live, batch=cfg.eval_batch, latency_repeats=None)
                gap = cell['gflops'] / (2.0 * target / 1e9) - 1.0
                rec = {**common, 'model': 'sentryfuse', 'method': 'sentrygate', **cell,
                       **method_labels('sentrygate', 'P0'), 'calib_samples': 0, 'matched_to': name, 'target_gflops': round(2.0 * target / 1e9, 6),
                       'flops_gap': round(gap, 6), 'flops_matched': abs(gap) <= MATCH_TOLERANCE,
                       'matched_fraction': round(frac, 6)}
                records.append(rec)
                done.add(cell_key(rec))
                new += 1
    return new
