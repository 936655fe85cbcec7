"""SentryGate: modality-conditioned unit scores, learned from first-order saliency.

Shapes (per transformer block i of the backbone):
    S   number of modality subsets, 2^M - 1 for M modalities
    G   key/value groups of the block's attention (a group = one KV head and its query heads)
    NF  FFN channel blocks of the block's MLP

Three pieces, all used by ``core/training/train.py``:

* :class:`SentryGate` holds the learnable scores s_u(a) for every prunable unit u and every
  availability set a. It is a *multilinear* table: each subset T has its own weight row w_u(T)
  and s_u(a) = sum_{T subset of a} w_u(T) (the Moebius form of a table over the 2^M - 1 subsets: as
  expressive as one free row per subset, but a single-modality term is shared by every set that
  contains that modality). The scores are **not** budget-conditioned: the budget enters only in
  the MAC-constrained selection (``core/pruning/prune.select_units``), which keeps the highest-scoring
  units that fit; a ranking that is right at budget 1 is what every budget uses.
* :class:`SaliencyTeacher` turns the gradient on each unit's gate variable (fixed at 1 in the
  training forward pass) into first-order saliency: Taylor |dL/dg| (Michel et al. 2019, Molchanov
  et al. 2019) or Fisher sum_n (dL_n/dg)^2 (Kwon et al. 2022, needs per-sample gates (B, G)). It
  normalizes per block and unit kind (mean 1) and keeps an EMA per modality subset. The gates are
  part of the ordinary training forward, so this reuses the task loss's own backward pass.
* :func:`alignment_loss`: listwise softmax-KL between the teacher and the scores, per block and
  unit kind, KL(p_teacher || softmax(s)) with p_teacher = t^(1/tau) / sum t^(1/tau). It is
  invariant to the teacher's scale (no normalisation constant survives), zero iff softmax(s)
  equals p_teacher, and its gradient in s is softmax(s) - p_teacher.

Which parameters each loss trains: the task loss trains the backbone only (the gates in the task
forward are constants 1, or 0/1 masks chosen by the *detached* gate scores); the alignment loss
trains the SentryGate table only (the teacher is a detached EMA). total = task + lambda * align
therefore optimises both with one optimizer step and no interference.

Design choice (ours): to make zero-shot pruning work, training also runs, with some probability per
step, the sub-network that SentryGate would pick at deployment for a sampled budget (see
``core/training/train.py``). The backbone thus learns to run with the units SentryGate keeps; deployment
never takes a gradient step.
"""
from __future__ import annotations

import itertools
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from sentryfuse_ros.core.errors import ConfigError, PruningError

Subset = Tuple[str, ...]
UnitScores = List[Tuple[torch.Tensor, torch.Tensor]]  # per block: (attn (G,), ffn (NF,))
SALIENCY_KINDS = ('taylor', 'fisher')


def modality_subsets(modalities: Sequence[str]) -> Tuple[Subset, ...]:
    """All non-empty subsets of ``modalities``, singles first, each in canonical order.

    For ('camera', 'lidar', 'audio'): (camera,), (lidar,), (audio,), (camera, lidar),
    (camera, audio), (lidar, audio), (camera, lidar, audio).
    """
    mods = tuple(modalities)
    if not mods or len(set(mods)) != len(mods):
        raise ConfigError(f'modalities={mods!r}: expected a non-empty tuple of distinct names')
    return tuple(c for k in range(1, len(mods) + 1) for c in itertools.combinations(mods, k))


def canonical_live(live: Sequence[str], modalities: Sequence[str]) -> Subset:
    """``live`` as a subset in the canonical order of ``modalities``; errors name the bad value."""
    live_set = set(live)
    unknown = sorted(live_set - set(modalities))
    if unknown:
        raise PruningError(f'live={tuple(live)!r}: unknown modality {unknown}; expected some of {tuple(modalities)}')
    if not live_set:
        raise PruningError(f'live={tuple(live)!r}: expected at least one live modality')
    return tuple(m for m in modalities if m in live_set)


def subset_index(live: Sequence[str], modalities: Sequence[str]) -> int:
    """Row of ``live`` in :func:`modality_subsets` (order of ``live`` does not matter)."""
    return modality_subsets(modalities).index(canonical_live(live, modalities))


def _check_layout(layout: Sequence[Tuple[int, int]]) -> Tuple[Tuple[int, int], ...]:
    out = tuple((int(g), int(f)) for g, f in layout)
    if not out or any(g < 1 or f < 1 for g, f in out):
        raise ConfigError(f'layout={layout!r}: expected one (groups >= 1, ffn_blocks >= 1) pair per block')
    return out


class SentryGate(nn.Module):
    """Learnable modality-conditioned unit scores (higher = keep).

    Args:
        modalities: the model's modalities in canonical order (M of them).
        layout: per block (G, NF), as ``SentryFuseModel.unit_layout()`` returns.
    """

    def __init__(self, *, modalities: Sequence[str], layout: Sequence[Tuple[int, int]]):
        super().__init__()
        self.modalities = tuple(modalities)
        self.subsets = modality_subsets(self.modalities)
        self.layout = _check_layout(layout)
        s = len(self.subsets)
        # inclusion[a, T] = 1 if subset T is contained in subset a: scores = inclusion @ weights
        inclusion = torch.tensor([[float(set(t) <= set(a)) for t in self.subsets] for a in self.subsets])
        self.register_buffer('inclusion', inclusion)  # (S, S)
        self.attn = nn.ParameterList([nn.Parameter(torch.zeros(s, g)) for g, _ in self.layout])  # (S, G)
        self.ffn = nn.ParameterList([nn.Parameter(torch.zeros(s, f)) for _, f in self.layout])  # (S, NF)
        # deployment calibration, copied from the teacher (calibrate): the raw saliency scale per
        # subset, block and unit kind, and the alignment temperature. Zero scale = uncalibrated.
        self.register_buffer('attn_scale', torch.zeros(s, len(self.layout)))  # (S, L)
        self.register_buffer('ffn_scale', torch.zeros(s, len(self.layout)))  # (S, L)
        self.register_buffer('temperature', torch.tensor(1.0))

    def table(self) -> UnitScores:
        """Scores for every subset at once, with grad: per block (attn (S, G), ffn (S, NF))."""
        return [(self.inclusion @ wa, self.inclusion @ wf) for wa, wf in zip(self.attn, self.ffn)]

    def score_tensors(self, live: Sequence[str]) -> UnitScores:
        """Scores for ``live`` with grad: per block (attn (G,), ffn (NF,))."""
        row = self.inclusion[subset_index(live, self.modalities)]  # (S,)
        return [(row @ wa, row @ wf) for wa, wf in zip(self.attn, self.ffn)]

    @torch.no_grad()
    def calibrate(self, teacher: 'SaliencyTeacher', temperature: float) -> None:
        """Copy the teacher's raw saliency scales and the alignment temperature (no gradients)."""
        self.attn_scale.copy_(teacher.attn_scale)
        self.ffn_scale.copy_(teacher.ffn_scale)
        self.temperature.fill_(float(temperature))

    @torch.no_grad()
    def scores(self, live: Sequence[str]) -> UnitScores:
        """Detached scores for ``live``: the ``score_fn`` a deployment SubnetworkCache calls.

        The alignment loss fixes each block's logits s only up to a constant: softmax(s) matches
        p = t^(1/tau) / sum t^(1/tau) of the layer-normalised teacher t. Raw logits are therefore
        not comparable across blocks, and a budget search over all blocks needs them to be. So a
        calibrated gate returns  scale_(subset, block, kind) * U * softmax(tau * s)  per unit: the
        within-block ranking the gate learned (softmax(tau s) estimates t / sum t), times the raw
        saliency magnitude of that block and kind for that subset (teacher EMA), i.e. an estimate
        of the unit's raw first-order saliency, like the Taylor baseline's scores but conditioned
        on the live subset and read from a table (no data, no gradient on the robot).

        A block whose scale is 0 while the subset is calibrated elsewhere is one the live subset
        skips (a per-modality block of an absent modality: its saliency is 0 by definition); its
        units score 0, like the teacher's. An uncalibrated gate (every scale of the subset 0, e.g.
        an old checkpoint or a gate never trained) returns the raw logits.
        """
        k = subset_index(live, self.modalities)
        tau = float(self.temperature)
        calibrated = bool((self.attn_scale[k] > 0).any() or (self.ffn_scale[k] > 0).any())
        out = []
        for i, (a, f) in enumerate(self.score_tensors(live)):
            pair = []
            for logits, scale in ((a, self.attn_scale[k, i]), (f, self.ffn_scale[k, i])):
                logits = logits.detach()
                if float(scale) > 0:
                    pair.append(float(scale) * logits.numel() * torch.softmax(tau * logits, dim=-1))
                elif calibrated:
                    pair.append(torch.zeros_like(logits))
                else:
                    pair.append(logits.clone())
            out.append((pair[0], pair[1]))
        return out

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Accepts gate state dicts saved before calibration existed (they load uncalibrated)."""
        state = dict(state_dict)
        for name in ('attn_scale', 'ffn_scale', 'temperature'):
            state.setdefault(name, getattr(self, name).detach().clone() * 0 + (1.0 if name == 'temperature' else 0.0))
        return super().load_state_dict(state, strict=strict, **kwargs)

    def extra_repr(self) -> str:
        return f'modalities={self.modalities}, subsets={len(self.subsets)}, blocks={len(self.layout)}'


def ones_gates(layout: Sequence[Tuple[int, int]], *, device: torch.device,
               batch_size: Optional[int] = None) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Gate variables fixed at 1 with ``requires_grad``: per block (attn, ffn).

    Args:
        layout: per block (G, NF).
        device: where the gates live.
        batch_size: None for shared gates (G,)/(NF,); B for per-sample gates (B, G)/(B, NF),
            which the Fisher saliency needs.
    """
    lead = () if batch_size is None else (batch_size,)
    return [(torch.ones(*lead, g, device=device, requires_grad=True),
             torch.ones(*lead, f, device=device, requires_grad=True)) for g, f in _check_layout(layout)]


def read_saliency(gates: Sequence[Tuple[torch.Tensor, torch.Tensor]], *, kind: str = 'taylor',
                  skipped_blocks_zero: bool = False) -> UnitScores:
    """First-order saliency from the gates' ``.grad`` after the task loss's backward pass.

    Args:
        gates: per block (attn, ffn) gate tensors that took part in the forward pass.
        kind: 'taylor' -> |dL/dg| (per-sample gates: mean_n |dL_n/dg|, Michel 2019);
            'fisher' -> sum_n (dL_n/dg)^2 (Kwon 2022; needs per-sample gates (B, G)).
        skipped_blocks_zero: a gate without gradient belongs to a block the forward pass skipped
            (mid/bottleneck blocks of an absent modality); give it saliency 0 instead of raising.
    Returns:
        per block (attn (G,), ffn (NF,)), detached, non-negative.
    """
    if kind not in SALIENCY_KINDS:
        raise ConfigError(f'saliency={kind!r}: expected one of {SALIENCY_KINDS}')
    out = []
    for i, pair in enumerate(gates):
        sal = []
        for name, g in zip(('attn', 'ffn'), pair):
            if g.grad is None and skipped_blocks_zero:
                sal.append(torch.zeros(g.shape[-1], device=g.device))
                continue
            if g.grad is None:
                raise PruningError(f'block {i} {name} gate has no gradient: was it used in the forward pass '
                                   'and was backward() called?')
            grad = g.grad.detach()
            if kind == 'fisher':
                if grad.dim() != 2:
                    raise PruningError(f'saliency=fisher needs per-sample gates (B, units); block {i} {name} '
                                       f'gate has shape {tuple(grad.shape)}')
                sal.append(grad.pow(2).sum(0))
            else:
                sal.append(grad.abs().mean(0) if grad.dim() == 2 else grad.abs())
        out.append((sal[0], sal[1]))
    return out


def normalize_per_layer(saliency: UnitScores, eps: float = 1e-12) -> UnitScores:
    """Each block's attn and ffn vectors divided by their own mean (mean 1; all-zero stays 0)."""
    return [(a / (a.mean() + eps), f / (f.mean() + eps)) for a, f in saliency]


class SaliencyTeacher(nn.Module):
    """EMA of layer-normalised saliency, one row per modality subset (buffers, saved with the gate).

    Args:
        modalities: the model's modalities in canonical order.
        layout: per block (G, NF).
        decay: EMA decay per update of a subset's row (the first update of a row copies).
    """

    def __init__(self, *, modalities: Sequence[str], layout: Sequence[Tuple[int, int]], decay: float = 0.9):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f'ema_decay={decay!r}: expected a number in [0, 1)')
        self.modalities = tuple(modalities)
        self.subsets = modality_subsets(self.modalities)
        self.layout = _check_layout(layout)
        self.decay = float(decay)
        s = len(self.subsets)
        self.register_buffer('updates', torch.zeros(s, dtype=torch.long))  # (S,) updates per subset
        for i, (g, f) in enumerate(self.layout):
            self.register_buffer(f'attn_{i}', torch.zeros(s, g))  # (S, G)
            self.register_buffer(f'ffn_{i}', torch.zeros(s, f))  # (S, NF)
        # EMA of the raw (unnormalised) mean saliency per subset, block and unit kind: what makes
        # units of different blocks comparable at deployment (see SentryGate.scores)
        self.register_buffer('attn_scale', torch.zeros(s, len(self.layout)))  # (S, L)
        self.register_buffer('ffn_scale', torch.zeros(s, len(self.layout)))  # (S, L)

    def _rows(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f'attn_{i}'), getattr(self, f'ffn_{i}')

    @torch.no_grad()
    def update(self, live: Sequence[str], saliency: UnitScores) -> None:
        """Fold one step's raw saliency for ``live`` into that subset's EMA row."""
        if len(saliency) != len(self.layout):
            raise PruningError(f'saliency has {len(saliency)} blocks; the teacher expects {len(self.layout)}')
        k = subset_index(live, self.modalities)
        d = self.decay if int(self.updates[k]) > 0 else 0.0
        for i, (a, f) in enumerate(normalize_per_layer(saliency)):
            ea, ef = self._rows(i)
            ea[k].mul_(d).add_((1.0 - d) * a.to(ea))
            ef[k].mul_(d).add_((1.0 - d) * f.to(ef))
        raw_a = torch.stack([a.float().mean() for a, _ in saliency]).to(self.attn_scale)  # (L,)
        raw_f = torch.stack([f.float().mean() for _, f in saliency]).to(self.ffn_scale)  # (L,)
        self.attn_scale[k].mul_(d).add_((1.0 - d) * raw_a)
        self.ffn_scale[k].mul_(d).add_((1.0 - d) * raw_f)
        self.updates[k] += 1

    def seen(self) -> torch.Tensor:
        """Boolean (S,) mask of subsets with at least one update."""
        return self.updates > 0

    def teacher(self, live: Sequence[str]) -> Optional[UnitScores]:
        """The EMA saliency of ``live`` per block (attn (G,), ffn (NF,)), or None if never seen."""
        k = subset_index(live, self.modalities)
        if int(self.updates[k]) == 0:
            return None
        return [(a[k].clone(), f[k].clone()) for a, f in (self._rows(i) for i in range(len(self.layout)))]

    def table(self) -> UnitScores:
        """Every subset's EMA rows: per block (attn (S, G), ffn (S, NF))."""
        return [self._rows(i) for i in range(len(self.layout))]


def listwise_kl(scores: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0,
                eps: float = 1e-12) -> torch.Tensor:
    """KL(p_teacher || softmax(scores)) over the last dim, averaged over leading dims.

    p_teacher = teacher^(1/tau) / sum(teacher^(1/tau)) for a non-negative teacher, so a positive
    rescaling of the teacher changes nothing (scale-free). Rows whose teacher is all zero carry no
    ranking information and contribute 0.

    Args:
        scores: (..., U) gate scores (logits).
        teacher: (..., U) non-negative saliency, same shape.
        temperature: tau > 0; smaller sharpens the target towards the teacher's top units.
    """
    if scores.shape != teacher.shape:
        raise PruningError(f'scores shape {tuple(scores.shape)} != teacher shape {tuple(teacher.shape)}')
    if temperature <= 0:
        raise ConfigError(f'align_temperature={temperature!r}: expected > 0')
    t = teacher.detach().clamp_min(0.0)
    valid = (t.sum(-1) > 0).to(scores.dtype)  # (...,)
    # log p = log(t)/tau - logsumexp(log(t)/tau); t == 0 gives p == 0, which KL treats as 0 log 0 = 0
    logits_t = torch.where(t > 0, torch.log(t.clamp_min(eps)) / temperature, torch.full_like(t, -float('inf')))
    logits_t = torch.where(valid.unsqueeze(-1) > 0, logits_t, torch.zeros_like(t))
    log_p = torch.log_softmax(logits_t, dim=-1)
    p = log_p.exp()
    log_q = F.log_softmax(scores, dim=-1)
    kl = (p * (torch.where(p > 0, log_p, torch.zeros_like(log_p)) - log_q)).sum(-1)  # (...,)
    return (kl * valid).sum() / valid.numel()


def alignment_loss(gate: SentryGate, teacher: SaliencyTeacher, *, temperature: float = 1.0) -> torch.Tensor:
    """Mean listwise KL between gate scores and teacher over every seen subset, block and unit kind.

    Trains only ``gate``'s table (the teacher is detached). Zero before any teacher update.
    """
    seen = teacher.seen()
    if not bool(seen.any()):
        return gate.attn[0].sum() * 0.0
    terms = []
    for (sa, sf), (ta, tf) in zip(gate.table(), teacher.table()):
        terms.append(listwise_kl(sa[seen], ta[seen], temperature=temperature))
        terms.append(listwise_kl(sf[seen], tf[seen], temperature=temperature))
    return torch.stack(terms).mean()
