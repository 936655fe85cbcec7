"""Zero-shot pruning at deployment: unit MAC costs, unit selection under a budget, physical slicing,
and a cache of sliced sub-networks per (live modality set, budget level). No gradient step happens here.

Prunable units per block: KV groups (each with its query heads) and FFN channel blocks.
Selection (``select_units``): first the best-scored KV group and FFN block of every block that costs
anything for the live set; then the remaining units greedily by score per MAC (the knapsack
heuristic; scores are shifted to be >= 0 first if any unit that costs something scores negative; units
that cost nothing never enter that shift), each kept if it still fits
``keep_fraction * total``. Units of blocks the live set skips cost nothing: at keep_fraction < 1 they
keep only their best unit each (so the sliced sub-network is small); keep_fraction 1.0 keeps everything.

``budget`` and ``keep_fraction`` are two different fractions (``core/pruning/budget.py``): deployment
budgets (``SubnetworkCache``, ``select_for_budget``) are fractions of the live set's WHOLE forward
compute, fixed parts (tokenizers, head) included; ``select_units`` takes a ``keep_fraction`` of the
prunable MACs, which ``prunable_fraction`` computes from a budget.
"""
import collections
import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.model.block import UnitGates
from sentryfuse_ros.core.errors import PruningError
from sentryfuse_ros.core.model.flops import count_params
from sentryfuse_ros.core.pruning.budget import BUDGET_LEVELS, snap_to_level

UnitScores = List[Tuple[Tensor, Tensor]]  # per block: (attn scores (G,), ffn scores (NF,)), higher = keep
UnitMasks = List[Tuple[Tensor, Tensor]]   # per block: (attn bool (G,), ffn bool (NF,))
UnitCosts = List[Tuple[Tensor, Tensor]]   # per block: (attn MACs (G,), ffn MACs (NF,)) at batch 1


def unit_costs(model: SentryFuseModel, live: Sequence[str]) -> UnitCosts:
    """MACs per unit at batch 1 for this live set (0 for blocks it skips), from token counts and widths."""
    costs = []
    for blk, seg in zip(model.blocks(), model.token_layout(live)):
        g, nf = blk.unit_layout()
        if seg is None:
            costs.append((torch.zeros(g, dtype=torch.float64), torch.zeros(nf, dtype=torch.float64)))
        else:
            costs.append(blk.unit_macs(seg))
    return costs


def prunable_macs(model: SentryFuseModel, live: Sequence[str]) -> float:
    """Total MACs of all prunable units at batch 1 for this live set."""
    return float(sum(a.sum() + f.sum() for a, f in unit_costs(model, live)))


def total_macs(model: SentryFuseModel, live: Sequence[str]) -> float:
    """Prunable + fixed (tokenizers, head) MACs at batch 1; 2x this is what count_flops reports."""
    return prunable_macs(model, live) + float(model.fixed_macs(live))


def prunable_fraction(model: SentryFuseModel, live: Sequence[str], budget: float) -> float:
    """The keep_fraction of prunable MACs that makes the whole forward (fixed + kept prunable) ``budget`` x dense.

    ``budget`` is a checked compute budget (see core/pruning/budget.py). A budget below what the fixed
    parts alone cost maps to the smallest positive fraction (the per-block minimum units are kept anyway).
    """
    if budget >= 1.0:
        return 1.0
    prunable, fixed = prunable_macs(model, live), float(model.fixed_macs(live))
    if prunable <= 0:
        return 1.0
    return min(1.0, max(1e-9, (budget * (prunable + fixed) - fixed) / prunable))


def select_for_budget(model: SentryFuseModel, scores: UnitScores, live: Sequence[str], budget: float) -> UnitMasks:
    """``select_units`` for a compute budget over the live set's total forward compute (fixed parts included)."""
    return select_units(scores, unit_costs(model, live), prunable_fraction(model, live, budget))


def select_units(scores: UnitScores, costs: UnitCosts, keep_fraction: float) -> UnitMasks:
    """Units to keep so that kept prunable MACs <= keep_fraction * total (see the module docstring).

    Args:
        scores: per block (attn (G,), ffn (NF,)) scores, higher = more important.
        costs: per block (attn (G,), ffn (NF,)) MACs, as from ``unit_costs``.
        keep_fraction: fraction in (0, 1] of the total prunable MACs to keep (not a compute budget:
            see ``prunable_fraction``). The per-block minimum (one KV group and one FFN block) is
            kept even if it alone exceeds it; 1.0 or more keeps every unit.
    """
    if len(scores) != len(costs):
        raise PruningError(f'scores for {len(scores)} blocks but costs for {len(costs)}: expected the same')
    flat_s, flat_c, owner = [], [], []  # owner: (block, 0 attn | 1 ffn, index)
    for i, (s_pair, c_pair) in enumerate(zip(scores, costs)):
        for kind in (0, 1):
            s = torch.as_tensor(s_pair[kind]).detach().flatten().double().cpu()
            c = torch.as_tensor(c_pair[kind]).detach().flatten().double().cpu()
            if s.shape != c.shape:
                raise PruningError(f'block {i} {("attn", "ffn")[kind]} scores shape {tuple(s.shape)}: '
                                   f'expected {tuple(c.shape)} like its costs')
            if not torch.isfinite(s).all():
                raise PruningError(f'block {i} {("attn", "ffn")[kind]} scores {s.tolist()}: expected finite values')
            flat_s.append(s)
            flat_c.append(c)
            owner += [(i, kind, j) for j in range(s.numel())]
    s_all, c_all = torch.cat(flat_s), torch.cat(flat_c)
    if keep_fraction >= 1.0:
        keep = torch.ones_like(s_all, dtype=torch.bool)
    else:
        keep = torch.zeros_like(s_all, dtype=torch.bool)
        offset = 0
        for s, c in zip(flat_s, flat_c):  # the best unit of every (block, kind) is always kept
            if s.numel():
                keep[offset + int(torch.argmax(s))] = True
            offset += s.numel()
        cap = keep_fraction * float(c_all.sum())
        used = float(c_all[keep].sum())
        # shift by the minimum over the units that cost something: a zero-cost unit (a block the live
        # set skips) is never ranked, so its score must not move the ranking of the live ones
        live_s = s_all[c_all > 0]
        low = float(live_s.min()) if live_s.numel() else 0.0
        shifted = s_all - min(0.0, low) + 1e-12
        ratio = torch.where(c_all > 0, shifted / c_all.clamp(min=1e-30), torch.zeros_like(s_all))
        for u in torch.argsort(-ratio, stable=True).tolist():
            if keep[u] or c_all[u] <= 0:
                continue
            if used + float(c_all[u]) <= cap * (1 + 1e-12):
                keep[u] = True
                used += float(c_all[u])
    masks, offset = [], 0
    for i in range(len(scores)):
        pair = []
        for kind in (0, 1):
            n = flat_s[2 * i + kind].numel()
            pair.append(keep[offset:offset + n].clone())
            offset += n
        masks.append((pair[0], pair[1]))
    return masks


def masks_to_gates(masks: UnitMasks) -> List[UnitGates]:
    """Float 0/1 gates for ``model(inputs, gates=...)`` from boolean masks."""
    return [UnitGates(attn=torch.as_tensor(a).float(), ffn=torch.as_tensor(f).float()) for a, f in masks]


def slice_model(model: SentryFuseModel, masks: UnitMasks, *, share: bool = False) -> SentryFuseModel:
    """A new, physically smaller dense model holding only the kept units; ``model`` is untouched.

    ``slice_model(model, masks)(x) == model(x, gates=masks_to_gates(masks))`` up to float rounding.
    ``share=True`` (inference only): the copy uses ``model``'s own tensors for everything that is not
    pruned, so only the gathered linears of pruned blocks take new memory.
    """
    layout = model.unit_layout()
    if len(masks) != len(layout):
        raise PruningError(f'masks for {len(masks)} blocks: expected {len(layout)}')
    for i, ((a, f), (g, nf)) in enumerate(zip(masks, layout)):
        a, f = torch.as_tensor(a), torch.as_tensor(f)
        if a.shape != (g,) or f.shape != (nf,) or a.dtype != torch.bool or f.dtype != torch.bool:
            raise PruningError(f'block {i} masks of shapes {tuple(a.shape)}/{tuple(f.shape)} ({a.dtype}/{f.dtype}): '
                               f'expected bool ({g},)/({nf},)')
        if not a.any() or not f.any():
            raise PruningError(f'block {i} masks keep {int(a.sum())} KV groups and {int(f.sum())} FFN blocks: '
                               'expected at least one of each')
    with torch.no_grad():
        sliced = model.sliced_copy([(torch.as_tensor(a), torch.as_tensor(f)) for a, f in masks], share=share)
    sliced.train(model.training)
    return sliced


def own_weight_bytes(sub: torch.nn.Module, base: torch.nn.Module) -> int:
    """Bytes of ``sub``'s parameters and buffers whose storage is not one of ``base``'s."""
    shared = {t.untyped_storage().data_ptr() for t in list(base.parameters()) + list(base.buffers())}
    seen, total = set(), 0
    for t in list(sub.parameters()) + list(sub.buffers()):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in shared and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


def gathered_bytes(model: SentryFuseModel, masks: UnitMasks) -> int:
    """Bytes ``slice_model(model, masks, share=True)`` will gather: in every block whose attention or
    FFN loses at least one unit, the kept rows of q/k/v (fc1) with their biases and the kept columns
    of o (fc2) with its whole bias; unit kinds that keep every unit are shared, not gathered."""
    def size(t) -> int:
        return 0 if t is None else t.numel() * t.element_size()

    total = 0
    for blk, (a, f) in zip(model.blocks(), masks):
        for mask, rows, cols in ((torch.as_tensor(a), (blk.attn.q, blk.attn.k, blk.attn.v), blk.attn.o),
                                 (torch.as_tensor(f), (blk.ffn.fc1,), blk.ffn.fc2)):
            if bool(mask.all()):
                continue
            frac = float(mask.sum()) / mask.numel()
            total += int(frac * sum(size(lin.weight) + size(lin.bias) for lin in rows))
            total += int(frac * size(cols.weight)) + size(cols.bias)
    return total


@dataclasses.dataclass
class Subnetwork:
    """A sliced model for one (live set, budget level)."""
    model: SentryFuseModel
    key: str            # e.g. "camera+lidar@0.70"
    live: tuple         # live modalities in MODALITIES order
    budget: float       # the budget level it was built for (fraction of the live set's dense FLOPs)
    gflops: float       # forward GFLOPs at batch 1 for the live set (2 x MACs, as count_flops reports)
    params: int         # parameter elements of the sliced model
    build_ms: float     # time to select units and slice [ms]
    own_bytes: int = 0  # weight bytes this sub-network holds beyond the dense model's (gathered linears)


class SubnetworkCache:
    """Sub-networks per (live set, budget level), built on first use (select_for_budget + slice_model).

    One copy of the weights: every sub-network shares the dense model's tensors except the linears
    of pruned units, which are gathered (index_select) from it at build time. Built sub-networks
    are kept most-recently-used first while their gathered weights fit ``max_cache_mb``; the least
    recently used are dropped beyond it (the newest is always kept), so memory does not grow with
    the number of (live set, budget) levels used.

    Args:
        model: the full model (left untouched).
        score_fn: live tuple -> UnitScores (e.g. the SentryGate table for that subset).
        budget_levels: compute budgets with a sub-network (fractions of the live set's dense forward
            FLOPs), checked where they entered (e.g. ``EngineConfig``, ``--budgets``); a requested
            budget snaps down to the nearest level (``budget.snap_to_level``), and budgets below
            the lowest level use the lowest.
        device: where the sliced models live.
        max_cache_mb: cap on the gathered weights held by cached sub-networks [MiB]; None = no cap.
    """

    def __init__(self, model: SentryFuseModel, score_fn: Callable[[tuple], UnitScores],
                 budget_levels: Sequence[float] = BUDGET_LEVELS, device='cpu',
                 max_cache_mb: Optional[float] = None):
        levels = sorted({float(b) for b in budget_levels}, reverse=True)
        if max_cache_mb is not None and not max_cache_mb >= 0:
            raise PruningError(f'max_cache_mb={max_cache_mb!r}: expected a size >= 0 [MiB] or None')
        self.model, self.score_fn, self.levels, self.device = model, score_fn, tuple(levels), torch.device(device)
        self.model = self.model.to(self.device)
        self.max_cache_bytes = None if max_cache_mb is None else int(max_cache_mb * 2 ** 20)
        self._cache: 'collections.OrderedDict[Tuple[tuple, float], Subnetwork]' = collections.OrderedDict()
        self._builds = self._hits = self._evictions = 0

    def level_for(self, budget: float) -> float:
        """The budget level a request maps to (``budget.snap_to_level``)."""
        return snap_to_level(self.levels, budget)

    def get(self, live: Sequence[str], budget: float) -> Subnetwork:
        """The sub-network for these live modalities at (the level of) this budget."""
        live = self.model.canonical_live(live)
        level = self.level_for(budget)
        key = (live, level)
        sub = self._cache.get(key)
        if sub is not None:
            self._cache.move_to_end(key)
            self._hits += 1
            return sub
        start = time.perf_counter()
        masks = select_for_budget(self.model, self.score_fn(live), live, level)
        self._evict(incoming=gathered_bytes(self.model, masks))  # make room first: the peak stays near the cap
        sliced = slice_model(self.model, masks, share=True).eval()
        build_ms = (time.perf_counter() - start) * 1e3
        sub = Subnetwork(model=sliced, key=f'{"+".join(live)}@{level:.2f}', live=live, budget=level,
                         gflops=2.0 * total_macs(sliced, live) / 1e9, params=count_params(sliced), build_ms=build_ms,
                         own_bytes=own_weight_bytes(sliced, self.model))
        self._cache[key] = sub
        self._builds += 1
        self._evict()
        return sub

    def _evict(self, incoming: int = 0) -> None:
        """Drop least recently used entries until the held gathered weights plus ``incoming`` fit the cap
        (the newest entry stays when nothing is incoming)."""
        if self.max_cache_bytes is None:
            return
        keep = 0 if incoming else 1
        while len(self._cache) > keep and self.storage_bytes() + incoming > self.max_cache_bytes:
            self._cache.popitem(last=False)
            self._evictions += 1

    def storage_bytes(self) -> int:
        """Weight bytes the cached sub-networks hold beyond the dense model (their gathered linears)."""
        return sum(sub.own_bytes for sub in self._cache.values())

    def cached_keys(self) -> List[str]:
        """Keys of the cached sub-networks, least recently used first."""
        return [sub.key for sub in self._cache.values()]

    @property
    def stats(self) -> dict:
        """{'builds', 'hits', 'cached', 'evictions', 'storage_mb' (gathered weights held)}."""
        return {'builds': self._builds, 'hits': self._hits, 'cached': len(self._cache), 'evictions': self._evictions,
                'storage_mb': self.storage_bytes() / 2 ** 20}
