"""Kwon et al. 2022 mask tuning: layer-wise least-squares rescaling of the kept units on calibration data.

After the mask search and rearrangement (``core/pruning/baselines.py``) the kept units' mask values are
no longer 0/1 but real numbers m_u, chosen block by block (in execution order) so that each residual
sublayer of the pruned model reproduces the full model's output on calibration data:

    attention:  min_m || x_mid_full - (x' + b_o + sum_u m_u c_u(x')) ||^2
    FFN:        min_m || out_full  - (x'_mid + b_2 + sum_u m_u d_u(x'_mid)) ||^2

x' is the pruned model's input to the block (earlier blocks already tuned), x'_mid its state after the
tuned attention, c_u / d_u the output of unit u alone (gate one-hot at u, minus the gate-zero output,
which is the bias), and x_mid_full / out_full the full model's states on the same samples. As in
Kwon's code, a solution with any |m_u| > ``max_scale`` is rejected (that sublayer keeps m = 1): the
least-squares problem is occasionally ill-conditioned. The normal equations carry a ridge term
``damp * mean(diag(A^T A))``.

The tuned values are folded into the weights (``apply_scales``: the o-projection columns of a KV
group, the fc2 columns of an FFN channel block), so the sliced model is an ordinary dense model:
``apply_scales(model, s)(x) == model(x, gates=s)``. The tuning changes weights, so unlike every other
criterion it is not gradient- and update-free; it takes no gradient step either (closed form).

Shapes: N calibration samples, T tokens, C width, U kept units of one sublayer, G KV groups, NF FFN
channel blocks.
"""
import copy
from typing import Dict, Iterable, List, Sequence, Tuple

import torch
from torch import Tensor

from sentryfuse_ros.core.errors import PruningError
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.pruning.prune import UnitMasks

UnitScales = List[Tuple[Tensor, Tensor]]  # per block: (attn (G,), ffn (NF,)) real-valued mask, 0 = pruned
Batch = Tuple[Dict[str, Tensor], Tensor]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the block being tuned has its input."""


def least_squares_scales(gram: Tensor, rhs: Tensor, *, damp: float = 1e-6) -> Tensor:
    """Solve (A^T A + damp * mean(diag) I) m = A^T r for m.

    Args:
        gram: (U, U) A^T A accumulated over samples, tokens and channels.
        rhs: (U,) A^T r.
        damp: ridge factor relative to the mean diagonal of ``gram``.
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or rhs.shape != gram.shape[:1]:
        raise PruningError(f'gram {tuple(gram.shape)} and rhs {tuple(rhs.shape)}: expected (U, U) and (U,)')
    g = gram.double()
    ridge = damp * float(torch.diagonal(g).mean()) if g.numel() else 0.0
    return torch.linalg.solve(g + ridge * torch.eye(g.shape[0], dtype=g.dtype), rhs.double())


def _onehots(n: int, kept: Tensor, device) -> List[Tensor]:
    out = []
    for u in kept.tolist():
        e = torch.zeros(n, device=device)
        e[u] = 1.0
        out.append(e)
    return out


def execution_order(model: SentryFuseModel, inputs: Dict[str, Tensor]) -> List[int]:
    """Indices of ``model.blocks()`` in the order one forward pass on ``inputs`` runs them."""
    order: List[int] = []
    handles = [blk.register_forward_pre_hook(lambda m, a, i=i: order.append(i)) for i, blk in
               enumerate(model.blocks())]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return order


@torch.no_grad()
def _full_states(model: SentryFuseModel, batches: Sequence[Batch], live: Sequence[str]):
    """Per batch, per executed block: (x_mid_full, out_full) of the unpruned model."""
    states: List[Dict[int, List[Tensor]]] = []
    cur: Dict[int, List[Tensor]] = {}
    handles = []
    for i, blk in enumerate(model.blocks()):
        handles.append(blk.register_forward_pre_hook(lambda m, a, i=i: cur.__setitem__(i, [a[0]])))
        handles.append(blk.attn.register_forward_hook(lambda m, a, o, i=i: cur[i].append(cur[i][0] + o)))
        handles.append(blk.register_forward_hook(lambda m, a, o, i=i: cur[i].append(o)))
    try:
        for inputs, _ in batches:
            cur = {}
            model({m: inputs[m] for m in live})
            states.append({i: (v[1], v[2]) for i, v in cur.items()})
    finally:
        for h in handles:
            h.remove()
    return states


@torch.no_grad()
def _block_input(model: SentryFuseModel, block: int, inputs: Dict[str, Tensor], gates) -> Tuple[Tensor, object]:
    """The pruned model's (x', segments) at ``block`` (the forward stops there)."""
    got = []

    def grab(m, args):
        got.append((args[0], args[1]))
        raise _Stop

    handle = model.blocks()[block].register_forward_pre_hook(grab)
    try:
        model(inputs, gates)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not got:
        raise PruningError(f'block {block} did not run for live {sorted(inputs)}: expected an executed block')
    return got[0]


@torch.no_grad()
def kwon_mask_tune(model: SentryFuseModel, masks: UnitMasks, batches: Iterable[Batch], live: Sequence[str], *,
                   damp: float = 1e-6, max_scale: float = 10.0) -> UnitScales:
    """Least-squares mask values for the kept units (module docstring); pruned units stay 0.

    Args:
        model: the unpruned model (not modified; run in eval mode, restored afterwards).
        masks: per block (attn bool (G,), ffn bool (NF,)), e.g. from kwon_mask_search + kwon_rearrange.
        batches: calibration (inputs, labels); inputs must hold every modality of ``live``.
        live: modalities to feed.
        damp: ridge factor of ``least_squares_scales``.
        max_scale: reject a sublayer's solution with any |m| above this (it keeps m = 1).
    Returns:
        per block (attn (G,), ffn (NF,)) float32 scales on the CPU; blocks ``live`` skips keep their 0/1 mask.
    """
    layout = model.unit_layout()
    if len(masks) != len(layout):
        raise PruningError(f'masks for {len(masks)} blocks: expected {len(layout)}')
    device = next(model.parameters()).device
    live = model.canonical_live(live)
    data = []
    for inputs, labels in batches:
        missing = [m for m in live if m not in inputs]
        if missing:
            raise PruningError(f'calibration batch lacks live modalities {missing}: it has {sorted(inputs)}')
        data.append(({m: inputs[m].to(device) for m in live}, labels))
    if not data:
        raise PruningError('calibration batches: expected at least one batch, got none')
    scales = [(torch.as_tensor(a).float().clone().to(device), torch.as_tensor(f).float().clone().to(device))
              for a, f in masks]
    was = model.training
    model.eval()
    try:
        full = _full_states(model, data, live)
        for i in execution_order(model, data[0][0]):
            blk = model.blocks()[i]
            g, nf = layout[i]
            keep_a, keep_f = torch.as_tensor(masks[i][0]).to(device), torch.as_tensor(masks[i][1]).to(device)
            ka, kf = keep_a.nonzero().flatten(), keep_f.nonzero().flatten()
            starts = [_block_input(model, i, inputs, scales) for inputs, _ in data]  # (x', segments) per batch
            # attention: A = per-unit outputs c_u (N*T*C, U), r = x_mid_full - x' - b_o
            gram, rhs = torch.zeros(len(ka), len(ka), dtype=torch.float64), torch.zeros(len(ka), dtype=torch.float64)
            for (x, seg), st in zip(starts, full):
                h = blk.norm1(x)
                base = blk.attn(h, seg, torch.zeros(g, device=device))
                cols = torch.stack([(blk.attn(h, seg, e) - base).flatten() for e in _onehots(g, ka, device)], 1)
                r = (st[i][0] - x - base).flatten()
                gram += (cols.t() @ cols).double().cpu()
                rhs += (cols.t() @ r).double().cpu()
            m = least_squares_scales(gram, rhs, damp=damp)
            if bool((m.abs() <= max_scale).all()):
                scales[i][0][ka] = m.float().to(device)
            # FFN, on the state after the tuned attention
            gram, rhs = torch.zeros(len(kf), len(kf), dtype=torch.float64), torch.zeros(len(kf), dtype=torch.float64)
            for (x, seg), st in zip(starts, full):
                mid = x + blk.attn(blk.norm1(x), seg, scales[i][0])
                h = blk.norm2(mid)
                base = blk.ffn(h, torch.zeros(nf, device=device))
                cols = torch.stack([(blk.ffn(h, e) - base).flatten() for e in _onehots(nf, kf, device)], 1)
                r = (st[i][1] - mid - base).flatten()
                gram += (cols.t() @ cols).double().cpu()
                rhs += (cols.t() @ r).double().cpu()
            m = least_squares_scales(gram, rhs, damp=damp)
            if bool((m.abs() <= max_scale).all()):
                scales[i][1][kf] = m.float().to(device)
    finally:
        model.train(was)
    return [(a.cpu(), f.cpu()) for a, f in scales]


@torch.no_grad()
def apply_scales(model: SentryFuseModel, scales: UnitScales) -> SentryFuseModel:
    """A deep copy whose o-projection / fc2 columns carry the mask values; ``model`` is untouched.

    ``apply_scales(model, s)(x) == model(x, gates=s)`` up to float rounding (the gates scale a group's
    head outputs and a channel block's activations right before those columns).
    """
    layout = model.unit_layout()
    if len(scales) != len(layout):
        raise PruningError(f'scales for {len(scales)} blocks: expected {len(layout)}')
    new = copy.deepcopy(model)
    for i, (blk, (a, f), (g, nf)) in enumerate(zip(new.blocks(), scales, layout)):
        a, f = torch.as_tensor(a), torch.as_tensor(f)
        if a.shape != (g,) or f.shape != (nf,):
            raise PruningError(f'block {i} scales of shapes {tuple(a.shape)}/{tuple(f.shape)}: expected ({g},)/({nf},)')
        w = blk.attn.o.weight                                         # (C, G*R*D)
        w.mul_(a.to(w).repeat_interleave(w.shape[1] // g)[None, :])   # (G,) -> (G*R*D,)
        w2 = blk.ffn.fc2.weight                                       # (C, NF*b)
        w2.mul_(f.to(w2).repeat_interleave(w2.shape[1] // nf)[None, :])  # (NF,) -> (NF*b,)
    return new


def tuned_model(model: SentryFuseModel, masks: UnitMasks, batches: Iterable[Batch], live: Sequence[str],
                **kwargs) -> Tuple[SentryFuseModel, UnitScales]:
    """(copy of ``model`` with the tuned mask values folded in, the scales); slice it with ``masks``."""
    scales = kwon_mask_tune(model, masks, batches, live, **kwargs)
    return apply_scales(model, scales), scales
