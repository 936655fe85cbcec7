"""Zero-shot pruning criteria the benchmark compares SentryGate against, all on the same units.

Every score criterion returns ``UnitScores`` (per block: attn (G,), ffn (NF,); higher = keep), the
format ``SentryGate.scores(live)`` returns, so every method prunes the same checkpoint through the
same ``prune.select_units(scores, unit_costs(model, live), keep_fraction)`` + ``prune.slice_model``. No
criterion takes a weight-update step. What each one computes:

* ``random_scores``: i.i.d. uniform scores from a seeded generator (the same for every live set).
* ``magnitude_scores(p=1|2)``: the L1 norm (sum |w|) or L2 norm (sqrt sum w^2) of the weights a
  unit owns. A KV group owns its k and v rows, the q rows of its R query heads and the o-projection
  columns of those heads; an FFN channel block owns its fc1 rows and fc2 columns. Biases are left
  out (Torch-Pruning's GroupMagnitudeImportance default). Scores are global (no per-layer
  normalization), as in global magnitude pruning.
* ``calibration_grads`` + ``taylor_scores``: first-order Taylor saliency of gate variables fixed
  at 1 (Michel et al. 2019, Molchanov et al. 2019): per-sample gates (B, G)/(B, NF), summed
  cross-entropy, ``torch.autograd.grad``; score = mean over calibration samples of |dL_n/dg|.
  "Static" = measured once on full-modality calibration data; "recalibrated" = the same function
  on calibration data restricted to the current live modalities (the on-device oracle that
  SentryGate replaces; its wall time is what it costs there).
* ``fisher_scores``: Kwon et al. 2022's diagonal empirical Fisher of the mask variables,
  sum_n (dL_n/dg)^2, from the same per-sample gradients. Used greedily through select_units
  (the "fisher" row), and by the next two functions (the "kwon" row).
* ``kwon_mask_search``: Kwon et al. 2022's MAC-constrained search (their ``search_mac``),
  generalized to per-unit costs: rank KV groups and FFN blocks each globally by Fisher; for every
  number n of top-ranked KV groups, fill the remaining MACs with the longest Fisher-ordered
  prefix of FFN blocks that fits; keep the (n, prefix) with the largest summed Fisher. As in
  their latency search and in select_units, the best unit of every (block, kind) is kept first
  (our sliced blocks need one of each), and units that cost nothing for the live set (blocks it
  skips) are not ranked.
* ``kwon_rearrange``: their mask rearrangement (``greedy_rearrange``): per block and kind, with the
  number of pruned units fixed by the search, choose which ones to prune to minimize the
  block-diagonal Fisher quadratic form sum_n (sum_{u pruned} dL_n/dg_u)^2, greedily: start from the
  lowest-Fisher units, then for each further unit in ascending Fisher order add it to the pruned
  set and drop the member whose removal leaves the smallest form. Their third step, mask tuning by
  layer-wise least squares (which changes weights), is ``core/pruning/masktune.py`` (the bench's
  ``kwon_tuned`` row).
* ``flap_statistics`` + ``flap_scores`` + ``flap_select`` + ``flap_compensate``: FLAP (An et al., AAAI
  2024), fluctuation-based structured pruning, retraining-free. Per input channel j of each output
  projection (the o-projection's input = the heads' outputs; fc2's input = the GELU activations), the
  fluctuation metric var_n,t(x_j) * ||W[:, j]||^2 over calibration samples and tokens (their WIFV); each
  layer's channel metrics are standardized (z-score within the layer and module, their AL-AM
  structure), a unit scores the mean of its channels, and units are kept in descending score order
  while their MACs fit the budget (a global threshold; the best unit of every block and kind first,
  as everywhere here). The pruned channels' mean contribution W[:, pruned] @ mean(x[pruned]) is added
  to the projection's bias (their bias compensation), so the sliced model is corrected without a
  gradient step.
"""
import copy
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.errors import PruningError
from sentryfuse_ros.core.pruning.gate import ones_gates
from sentryfuse_ros.core.pruning.prune import UnitCosts, UnitMasks, UnitScores

UnitGrads = List[Tuple[Tensor, Tensor]]  # per block: (attn (N, G), ffn (N, NF)) per-sample dL_n/dg
# per block: ((o-input mean (G*R*D,), variance (G*R*D,)), (fc2-input mean (F,), variance (F,))), float64 CPU
FlapStats = List[Tuple[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor]]]


def random_scores(model: SentryFuseModel, seed: int) -> UnitScores:
    """Uniform random scores in [0, 1), deterministic by ``seed``.

    Args:
        model: the model whose unit layout is scored.
        seed: generator seed.
    """
    gen = torch.Generator().manual_seed(int(seed))
    return [(torch.rand(g, generator=gen, dtype=torch.float64), torch.rand(nf, generator=gen, dtype=torch.float64))
            for g, nf in model.unit_layout()]


def magnitude_scores(model: SentryFuseModel, p: int = 1) -> UnitScores:
    """Weight-magnitude norm per unit: p=1 -> sum |w|, p=2 -> sqrt(sum w^2) (see the module docstring).

    Args:
        model: the (unsliced or sliced) model; its current units are scored.
        p: 1 or 2.
    """
    if p not in (1, 2):
        raise PruningError(f'magnitude norm p={p!r}: expected 1 or 2')
    out = []
    with torch.no_grad():
        for blk in model.blocks():
            att, ffn = blk.attn, blk.ffn
            g, r, d = att.num_kv_heads, att.group_size, att.head_dim
            q = att.q.weight.detach().abs().pow(p).view(g, r * d, -1).sum((1, 2))  # (G*R*D, C) -> (G,)
            k = att.k.weight.detach().abs().pow(p).view(g, d, -1).sum((1, 2))      # (G*D, C) -> (G,)
            v = att.v.weight.detach().abs().pow(p).view(g, d, -1).sum((1, 2))      # (G*D, C) -> (G,)
            o = att.o.weight.detach().abs().pow(p).view(-1, g, r * d).sum((0, 2))  # (C, G*R*D) -> (G,)
            nf, b = ffn.num_blocks, ffn.block
            f1 = ffn.fc1.weight.detach().abs().pow(p).view(nf, b, -1).sum((1, 2))  # (NF*b, C) -> (NF,)
            f2 = ffn.fc2.weight.detach().abs().pow(p).view(-1, nf, b).sum((0, 2))  # (C, NF*b) -> (NF,)
            a_s, f_s = (q + k + v + o).double(), (f1 + f2).double()
            if p == 2:
                a_s, f_s = a_s.sqrt(), f_s.sqrt()
            out.append((a_s.cpu(), f_s.cpu()))
    return out


def _live_inputs(inputs: Dict[str, Tensor], live: Optional[Sequence[str]], device) -> Dict[str, Tensor]:
    """The batch's tensors of ``live`` (default: all of them) on ``device``; PruningError if one is missing."""
    mods = list(inputs) if live is None else list(live)
    missing = [m for m in mods if m not in inputs]
    if missing:
        raise PruningError(f'calibration batch lacks live modalities {missing}: it has {sorted(inputs)}')
    return {m: inputs[m].to(device) for m in mods}


def calibration_grads(model: SentryFuseModel, batches: Iterable[Tuple[Dict[str, Tensor], Tensor]],
                      live: Optional[Sequence[str]] = None) -> UnitGrads:
    """Per-sample gradients dL_n/dg of every unit's gate (fixed at 1) on calibration batches.

    Blocks the live set skips get zero gradients. The model's weights are not changed and get no
    ``.grad``; the model is run in eval mode (restored afterwards).

    Args:
        model: the model to score.
        batches: (inputs, labels) pairs; inputs may hold more modalities than ``live``.
        live: modalities to feed (default: every modality in each batch).
    Returns:
        per block (attn (N, G), ffn (N, NF)) on the CPU, float64, N = calibration samples.
    """
    layout = model.unit_layout()
    device = next(model.parameters()).device
    acc: List[Tuple[List[Tensor], List[Tensor]]] = [([], []) for _ in layout]
    was_training = model.training
    model.eval()
    n = 0
    try:
        for inputs, labels in batches:
            x = _live_inputs(inputs, live, device)
            y = labels.to(device)
            b = int(y.shape[0])
            gates = ones_gates(layout, device=device, batch_size=b)
            loss = F.cross_entropy(model(x, gates=gates), y, reduction='sum')  # sum: grad[n] = dL_n/dg
            flat = [t for pair in gates for t in pair]
            grads = torch.autograd.grad(loss, flat, allow_unused=True)
            for i, (g, nf) in enumerate(layout):
                for kind, width in ((0, g), (1, nf)):
                    gr = grads[2 * i + kind]
                    acc[i][kind].append(torch.zeros(b, width, dtype=torch.float64) if gr is None
                                        else gr.detach().double().cpu())
            n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise PruningError('calibration batches: expected at least one batch, got none')
    return [(torch.cat(a), torch.cat(f)) for a, f in acc]


def taylor_scores(grads: UnitGrads) -> UnitScores:
    """Michel/Molchanov first-order saliency: mean over samples of |dL_n/dg| per unit."""
    return [(a.abs().mean(0), f.abs().mean(0)) for a, f in grads]


def fisher_scores(grads: UnitGrads) -> UnitScores:
    """Kwon et al. 2022 diagonal empirical Fisher: sum over samples of (dL_n/dg)^2 per unit."""
    return [(a.pow(2).sum(0), f.pow(2).sum(0)) for a, f in grads]


def _flatten(pairs: Sequence[Tuple[Tensor, Tensor]], kind: int) -> Tuple[Tensor, List[Tuple[int, int]]]:
    vals, owner = [], []
    for i, pair in enumerate(pairs):
        t = torch.as_tensor(pair[kind]).detach().double().cpu().flatten()
        vals.append(t)
        owner += [(i, j) for j in range(t.numel())]
    return torch.cat(vals), owner


def kwon_mask_search(fisher: UnitScores, costs: UnitCosts, keep_fraction: float) -> UnitMasks:
    """Kwon et al. 2022 MAC-constrained mask search with per-unit costs (module docstring).

    Args:
        fisher: per block (attn (G,), ffn (NF,)) Fisher importance.
        costs: per block (attn (G,), ffn (NF,)) MACs for the live set, from ``prune.unit_costs``.
        keep_fraction: fraction in (0, 1] of the total prunable MACs to keep (as ``prune.select_units``;
            the bench's ``1 - ratio``, checked in BenchConfig); 1.0 or more keeps every unit.
    """
    if len(fisher) != len(costs):
        raise PruningError(f'fisher scores for {len(fisher)} blocks but costs for {len(costs)}: expected the same')
    imp = [_flatten(fisher, k) for k in (0, 1)]
    cst = [_flatten(costs, k) for k in (0, 1)]
    for k, name in ((0, 'attn'), (1, 'ffn')):
        if imp[k][0].shape != cst[k][0].shape:
            raise PruningError(f'{name} fisher scores have {imp[k][0].numel()} units but costs {cst[k][0].numel()}: '
                               'expected one score per unit')
    if keep_fraction >= 1.0:
        return [(torch.ones(len(a), dtype=torch.bool), torch.ones(len(f), dtype=torch.bool)) for a, f in costs]
    keep = [torch.zeros_like(imp[k][0], dtype=torch.bool) for k in (0, 1)]
    for k in (0, 1):  # the best unit of every (block, kind) first
        owner = imp[k][1]
        for i in range(len(fisher)):
            idx = [u for u, (blk, _) in enumerate(owner) if blk == i]
            if idx:
                keep[k][idx[int(torch.argmax(imp[k][0][idx]))]] = True
    total = float(cst[0][0].sum() + cst[1][0].sum())
    remaining = keep_fraction * total - float(cst[0][0][keep[0]].sum() + cst[1][0][keep[1]].sum())
    order = []
    for k in (0, 1):  # ranked candidates of this kind: not yet kept and costing something
        cand = [u for u in torch.argsort(-imp[k][0], stable=True).tolist() if not keep[k][u] and cst[k][0][u] > 0]
        order.append(cand)
    best, best_sel = -1.0, ([], [])
    attn_cost = 0.0
    for n in range(len(order[0]) + 1):
        if n > 0:
            attn_cost += float(cst[0][0][order[0][n - 1]])
        if attn_cost > remaining * (1 + 1e-12):
            break
        room, ffn_sel = remaining - attn_cost, []
        for u in order[1]:  # longest Fisher-ordered prefix that fits
            c = float(cst[1][0][u])
            if c > room * (1 + 1e-12):
                break
            room -= c
            ffn_sel.append(u)
        value = float(imp[0][0][order[0][:n]].sum() + imp[1][0][ffn_sel].sum())
        if value > best:
            best, best_sel = value, (order[0][:n], ffn_sel)
    keep[0][best_sel[0]] = True
    keep[1][best_sel[1]] = True
    masks, off = [], [0, 0]
    for a, f in costs:
        ga, nf = len(a), len(f)
        masks.append((keep[0][off[0]:off[0] + ga].clone(), keep[1][off[1]:off[1] + nf].clone()))
        off[0] += ga
        off[1] += nf
    return masks


def _greedy_rearrange(mask: Tensor, grads: Tensor) -> Tensor:
    """One block and kind: same count pruned, chosen to minimize sum_n (sum_{u pruned} g_nu)^2."""
    num_pruned = int((~mask).sum())
    if num_pruned == 0 or num_pruned == mask.numel():
        return mask.clone()
    vecs = grads.t().contiguous()  # (N, U) -> (U, N)
    order = torch.argsort(vecs.pow(2).sum(1), stable=True).tolist()  # ascending Fisher
    pruned = order[:num_pruned]
    for u in order[num_pruned:]:
        pruned.append(u)
        sel = vecs[pruned]                              # (P+1, N)
        leftover = sel.sum(0, keepdim=True) - sel       # (P+1, N): the form without each member
        pruned.pop(int(torch.argmin(leftover.pow(2).sum(1))))
    out = torch.ones_like(mask)
    out[pruned] = False
    return out


def kwon_rearrange(masks: UnitMasks, grads: UnitGrads) -> UnitMasks:
    """Kwon et al. 2022 mask rearrangement per block and kind (module docstring).

    Args:
        masks: per block (attn bool (G,), ffn bool (NF,)), e.g. from ``kwon_mask_search``.
        grads: per block (attn (N, G), ffn (N, NF)) per-sample gradients from ``calibration_grads``.
    """
    if len(masks) != len(grads):
        raise PruningError(f'masks for {len(masks)} blocks but gradients for {len(grads)}: expected the same')
    out = []
    for i, ((ma, mf), (ga, gf)) in enumerate(zip(masks, grads)):
        if ga.shape[1] != ma.numel() or gf.shape[1] != mf.numel():
            raise PruningError(f'block {i}: gradients for {ga.shape[1]}/{gf.shape[1]} units but masks of '
                               f'{ma.numel()}/{mf.numel()}: expected the same')
        out.append((_greedy_rearrange(ma, ga), _greedy_rearrange(mf, gf)))
    return out


class _Moments:
    """Running per-channel sum and sum of squares of a projection's input, over samples and tokens."""

    def __init__(self):
        self.n, self.s, self.s2 = 0, None, None

    def __call__(self, module, args) -> None:
        x = args[0].detach().double().flatten(0, -2).cpu()  # (B, T, K) -> (B*T, K)
        self.s = x.sum(0) if self.s is None else self.s + x.sum(0)
        self.s2 = x.pow(2).sum(0) if self.s2 is None else self.s2 + x.pow(2).sum(0)
        self.n += x.shape[0]

    def mean_var(self, width: int) -> Tuple[Tensor, Tensor]:
        if self.n == 0:  # a block the calibration inputs never ran
            return torch.zeros(width, dtype=torch.float64), torch.zeros(width, dtype=torch.float64)
        mean = self.s / self.n
        return mean, (self.s2 / self.n - mean.pow(2)).clamp(min=0.0)


@torch.no_grad()
def flap_statistics(model: SentryFuseModel, batches: Iterable[Tuple[Dict[str, Tensor], Tensor]],
                    live: Optional[Sequence[str]] = None) -> FlapStats:
    """Per-channel mean and variance of every o-projection and fc2 input on calibration batches.

    Args:
        model: the model to measure (eval mode during the pass, restored afterwards).
        batches: (inputs, labels) pairs; labels are not used (FLAP needs no labels).
        live: modalities to feed (default: every modality in each batch).
    """
    moments = [(_Moments(), _Moments()) for _ in model.blocks()]
    handles = []
    for blk, (ma, mf) in zip(model.blocks(), moments):
        handles += [blk.attn.o.register_forward_pre_hook(ma), blk.ffn.fc2.register_forward_pre_hook(mf)]
    device = next(model.parameters()).device
    was_training, n = model.training, 0
    model.eval()
    try:
        for inputs, _ in batches:
            model(_live_inputs(inputs, live, device))
            n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n == 0:
        raise PruningError('calibration batches: expected at least one batch, got none')
    return [(ma.mean_var(blk.attn.o.in_features), mf.mean_var(blk.ffn.fc2.in_features))
            for blk, (ma, mf) in zip(model.blocks(), moments)]


def _standardized(x: Tensor) -> Tensor:
    std = x.std()
    return (x - x.mean()) / std if x.numel() > 1 and float(std) > 0 else torch.zeros_like(x)


def flap_scores(model: SentryFuseModel, stats: FlapStats) -> UnitScores:
    """Standardized fluctuation metric per unit: mean over its channels of z(var(x_j) * ||W[:, j]||^2)."""
    if len(stats) != len(model.blocks()):
        raise PruningError(f'FLAP statistics for {len(stats)} blocks: expected {len(model.blocks())}')
    out = []
    for blk, ((_, var_a), (_, var_f)) in zip(model.blocks(), stats):
        g, nf = blk.unit_layout()
        wa = blk.attn.o.weight.detach().double().cpu().pow(2).sum(0)    # (C, G*R*D) -> (G*R*D,)
        wf = blk.ffn.fc2.weight.detach().double().cpu().pow(2).sum(0)   # (C, F) -> (F,)
        za, zf = _standardized(var_a * wa), _standardized(var_f * wf)
        out.append((za.view(g, -1).mean(1), zf.view(nf, -1).mean(1)))  # (G*R*D,) -> (G,); (F,) -> (NF,)
    return out


def flap_select(scores: UnitScores, costs: UnitCosts, keep_fraction: float) -> UnitMasks:
    """FLAP's global threshold on prunable MACs: the best unit of every (block, kind) that runs, then units in
    descending score order, each kept while the kept prunable MACs fit ``keep_fraction`` x total (as
    ``prune.select_units``: checked where it enters, 1.0 or more keeps every unit)."""
    if len(scores) != len(costs):
        raise PruningError(f'scores for {len(scores)} blocks but costs for {len(costs)}: expected the same')
    if keep_fraction >= 1.0:
        return [(torch.ones(len(a), dtype=torch.bool), torch.ones(len(f), dtype=torch.bool)) for a, f in costs]
    keep = [[torch.zeros(len(c[k]), dtype=torch.bool) for k in (0, 1)] for c in costs]
    units = []  # (score, block, kind, index, cost)
    for i, (s_pair, c_pair) in enumerate(zip(scores, costs)):
        for k in (0, 1):
            s, c = torch.as_tensor(s_pair[k]).double(), torch.as_tensor(c_pair[k]).double()
            keep[i][k][int(torch.argmax(s))] = True
            units += [(float(s[j]), i, k, j, float(c[j])) for j in range(len(s)) if float(c[j]) > 0]
    total = float(sum(float(torch.as_tensor(c).sum()) for pair in costs for c in pair))
    used = sum(float(torch.as_tensor(costs[i][k])[keep[i][k]].sum()) for i in range(len(costs)) for k in (0, 1))
    for score, i, k, j, c in sorted(units, key=lambda u: (-u[0], u[1], u[2], u[3])):
        if not keep[i][k][j] and used + c <= keep_fraction * total * (1 + 1e-12):
            keep[i][k][j] = True
            used += c
    return [(a, f) for a, f in keep]


@torch.no_grad()
def flap_compensate(model: SentryFuseModel, masks: UnitMasks, stats: FlapStats) -> SentryFuseModel:
    """A deep copy whose o-projection / fc2 biases absorb the pruned channels' mean contribution."""
    if len(masks) != len(stats) or len(masks) != len(model.blocks()):
        raise PruningError(f'{len(masks)} masks and {len(stats)} statistics: expected {len(model.blocks())} each')
    new = copy.deepcopy(model)
    for blk, (ma, mf), ((mean_a, _), (mean_f, _)) in zip(new.blocks(), masks, stats):
        for lin, mask, mean in ((blk.attn.o, ma, mean_a), (blk.ffn.fc2, mf, mean_f)):
            mask = torch.as_tensor(mask)
            pruned = (~mask).repeat_interleave(lin.in_features // mask.numel())  # (U,) -> (K,) channels
            if bool(pruned.any()):
                w = lin.weight.detach().double().cpu()[:, pruned]                 # (C, K_pruned)
                lin.bias.add_((w @ mean[pruned]).to(lin.bias))                     # (C,)
    return new
