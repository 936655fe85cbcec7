"""Attention: DenseAttention (reference multi-head) and SentryAttend (grouped-query, modality-block-sparse).

SentryAttend: ``num_heads`` query heads share ``num_kv_heads`` key/value heads (GQA). The R = H / G query
heads of one KV group are folded into the query-length axis, so one ``scaled_dot_product_attention``
call per group needs no K/V copies. Sparsity for short multimodal sequences: tokens of modality m
attend only to tokens of m plus the global tokens (CLS and fusion tokens); global tokens attend to
everything. It is computed segment by segment with the smaller K/V, so the saving is real FLOPs,
not a mask. A prunable unit is one KV group with its R query heads (for dense attention, one head).

Shapes:
    B batch, T tokens, C width, H query heads, G kv heads (groups), R = H / G heads per group,
    D head dim, Tq / Tk query / key tokens of one segment.
"""
import copy
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sentryfuse_ros.core.errors import ModelError, PruningError


class Segments(NamedTuple):
    """How a token sequence splits into global tokens and modality blocks.

    ``global_range`` and every range in ``parts`` are (start, end) token indices; together they cover
    [0, num_tokens) exactly. ``global_range`` may be empty, e.g. (0, 0).
    """
    num_tokens: int
    global_range: Tuple[int, int]
    parts: Tuple[Tuple[int, int], ...]


def attended_pairs(segments: Segments, *, sparse: bool) -> int:
    """Number of (query, key) pairs attention computes for this layout."""
    t = segments.num_tokens
    if not sparse or len(segments.parts) <= 1:
        return t * t
    g = segments.global_range[1] - segments.global_range[0]
    return g * t + sum((e - s) * (g + e - s) for s, e in segments.parts)


def sliced_linear(old: nn.Linear, *, rows: Optional[Tensor] = None, cols: Optional[Tensor] = None,
                  unit: int = 1) -> nn.Linear:
    """A new Linear holding the given output rows / input columns of ``old`` (bias follows the rows).

    ``rows`` / ``cols`` index units of ``unit`` consecutive channels (unit 1: single channels); a unit
    gather copies whole runs of ``unit`` floats. The new module is assembled around the gathered
    tensors without initialising anything, so the cost is one gather of the kept weights.
    """
    weight = old.weight.detach()
    out_f, in_f = weight.shape
    if rows is not None:
        weight = weight.reshape(out_f // unit, unit, in_f).index_select(0, rows).reshape(-1, in_f)    # (U, u, in) -> (U'*u, in)
    if cols is not None:
        o = weight.shape[0]
        weight = weight.reshape(o, in_f // unit, unit).index_select(1, cols).reshape(o, -1)      # (out, U, u) -> (out, U'*u)
    gathered = rows is not None or cols is not None
    bias = None
    if old.bias is not None:
        bias = old.bias.detach()
        bias = bias.clone() if rows is None else bias.view(-1, unit).index_select(0, rows).reshape(-1)  # (U, u) -> (U'*u,)
    new = copy.copy(old)  # same class and hooks, own parameter dict (no re-initialisation)
    new._parameters = type(old._parameters)(
        weight=nn.Parameter(weight if gathered else weight.clone(), requires_grad=old.weight.requires_grad),
        bias=None if bias is None else nn.Parameter(bias, requires_grad=old.bias.requires_grad))
    new.in_features, new.out_features = int(weight.shape[1]), int(weight.shape[0])
    return new


def check_keep(keep: Tensor, count: int, what: str) -> Tensor:
    """Validated sorted unique long indices of units to keep, out of ``count``."""
    keep = torch.as_tensor(keep).flatten()
    if keep.dtype == torch.bool:
        if keep.numel() != count:
            raise PruningError(f'{what} mask has {keep.numel()} entries: expected {count}')
        keep = keep.cpu().nonzero().flatten()  # sorted and distinct by construction
        if keep.numel() == 0:
            raise PruningError(f'{what}: at least one of {count} units must be kept, got none')
        return keep
    keep = keep.long().cpu()
    if keep.numel() == 0:
        raise PruningError(f'{what}: at least one of {count} units must be kept, got none')
    ordered = keep.sort().values
    if bool((ordered[1:] == ordered[:-1]).any()) or int(ordered[0]) < 0 or int(ordered[-1]) >= count:
        raise PruningError(f'{what} indices {keep.tolist()}: expected distinct indices in [0, {count})')
    return ordered


class GroupedAttention(nn.Module):
    """Multi-head attention with G key/value groups, optional modality-block sparsity, per-group gates.

    Args:
        dim: token width C.
        num_heads: query heads H.
        num_kv_heads: key/value heads G (H % G == 0).
        sparse: modality-block-sparse pattern (True) or full attention (False).
        head_dim: per-head width D; 0 = dim // num_heads (then dim % num_heads == 0).
    """

    def __init__(self, *, dim: int, num_heads: int, num_kv_heads: int, sparse: bool, head_dim: int = 0):
        super().__init__()
        if num_heads % num_kv_heads or (head_dim <= 0 and dim % num_heads):
            raise ModelError(f'num_heads={num_heads}, num_kv_heads={num_kv_heads}, dim={dim}: expected '
                             'num_heads % num_kv_heads == 0 and dim % num_heads == 0 (or an explicit head_dim)')
        self.dim, self.num_heads, self.num_kv_heads = dim, num_heads, num_kv_heads
        self.head_dim = head_dim if head_dim > 0 else dim // num_heads
        self.group_size = num_heads // num_kv_heads
        self.sparse = sparse
        self.kept_groups = list(range(num_kv_heads))  # original indices of the groups still here
        d = self.head_dim
        self.q = nn.Linear(dim, num_heads * d)
        self.k = nn.Linear(dim, num_kv_heads * d)
        self.v = nn.Linear(dim, num_kv_heads * d)
        self.o = nn.Linear(num_heads * d, dim)

    @property
    def num_groups(self) -> int:
        return self.num_kv_heads

    def forward(self, x: Tensor, segments: Segments, gate: Optional[Tensor] = None) -> Tensor:
        """(B, T, C) -> (B, T, C); ``gate`` (G,) or (B, G) scales each group's output before ``o``."""
        b, t, _ = x.shape
        if t != segments.num_tokens:
            raise ModelError(f'attention got {t} tokens but segments describe {segments.num_tokens}')
        g, r, d = self.num_kv_heads, self.group_size, self.head_dim
        q = self.q(x).view(b, t, g, r, d).permute(0, 2, 3, 1, 4)  # (B, T, G*R*D) -> (B, G, R, T, D)
        k = self.k(x).view(b, t, g, d).transpose(1, 2)            # (B, T, G*D) -> (B, G, T, D)
        v = self.v(x).view(b, t, g, d).transpose(1, 2)            # (B, T, G*D) -> (B, G, T, D)
        if not self.sparse or len(segments.parts) <= 1:
            out = self._attend(q, k, v)                           # (B, G, R, T, D)
        else:
            gs, ge = segments.global_range
            pieces = []
            for s, e in sorted(((gs, ge),) + tuple(segments.parts)):
                if e <= s:
                    continue
                if (s, e) == (gs, ge):  # global queries see every key
                    pieces.append((s, self._attend(q[:, :, :, s:e], k, v)))
                else:                   # modality queries see global keys + their own block
                    ks = torch.cat([k[:, :, gs:ge], k[:, :, s:e]], dim=2)  # (B, G, Tk, D)
                    vs = torch.cat([v[:, :, gs:ge], v[:, :, s:e]], dim=2)  # (B, G, Tk, D)
                    pieces.append((s, self._attend(q[:, :, :, s:e], ks, vs)))
            out = torch.cat([p for _, p in pieces], dim=3)        # (B, G, R, T, D)
        if gate is not None:
            out = out * self._gate_view(gate, b, out.dtype)
        out = out.permute(0, 3, 1, 2, 4).reshape(b, t, g * r * d)  # (B, G, R, T, D) -> (B, T, H*D)
        return self.o(out)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q (B, G, R, Tq, D), k/v (B, G, Tk, D) -> (B, G, R, Tq, D)."""
        b, g, r, tq, d = q.shape
        out = F.scaled_dot_product_attention(q.reshape(b, g, r * tq, d), k, v)  # (B, G, R*Tq, D)
        return out.view(b, g, r, tq, d)                                          # (B, G, R, Tq, D)

    def _gate_view(self, gate: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
        g = self.num_kv_heads
        if gate.shape not in ((g,), (batch, g)):
            raise ModelError(f'attention gate shape {tuple(gate.shape)}: expected ({g},) or ({batch}, {g})')
        return gate.to(dtype).reshape(-1, g, 1, 1, 1)  # (G,) | (B, G) -> (1|B, G, 1, 1, 1)

    def unit_macs(self, segments: Segments) -> Tensor:
        """(G,) multiply-accumulates per group at batch 1: its q/k/v/o projection slices + its attention."""
        t, c, r, d = segments.num_tokens, self.dim, self.group_size, self.head_dim
        proj = t * c * (r * d) * 2 + t * c * d * 2  # q and o: R*D channels; k and v: D channels
        attn = 2 * r * d * attended_pairs(segments, sparse=self.sparse)  # QK^T and AV
        return torch.full((self.num_kv_heads,), float(proj + attn), dtype=torch.float64)

    @torch.no_grad()
    def slice_(self, keep_groups: Tensor) -> 'GroupedAttention':
        """Keep only these KV groups (with their query heads), in place. Returns self."""
        keep = check_keep(keep_groups, self.num_kv_heads, 'attention groups')
        if keep.numel() == self.num_kv_heads:  # nothing pruned: keep the tensors (shared by a sharing copy)
            return self
        r, d = self.group_size, self.head_dim
        keep = keep.to(self.q.weight.device)
        self.q = sliced_linear(self.q, rows=keep, unit=r * d)  # a group: R*D query channels ...
        self.k = sliced_linear(self.k, rows=keep, unit=d)      # ... D key and D value channels
        self.v = sliced_linear(self.v, rows=keep, unit=d)
        self.o = sliced_linear(self.o, cols=keep, unit=r * d)
        self.num_kv_heads = int(keep.numel())
        self.num_heads = self.num_kv_heads * r
        self.kept_groups = [self.kept_groups[i] for i in keep.tolist()]
        return self

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, '
                f'head_dim={self.head_dim}, sparse={self.sparse}')


class DenseAttention(GroupedAttention):
    """Reference multi-head attention: every head has its own K/V (a group is one head), full pattern.

    Args:
        dim: token width C.
        num_heads: heads H.
    """

    def __init__(self, *, dim: int, num_heads: int, head_dim: int = 0):
        super().__init__(dim=dim, num_heads=num_heads, num_kv_heads=num_heads, sparse=False, head_dim=head_dim)


class SentryAttend(GroupedAttention):
    """Grouped-query attention with modality-block sparsity (see the module docstring).

    Args:
        dim: token width C.
        num_heads: query heads H.
        num_kv_heads: key/value heads G shared by H / G query heads each.
        head_dim: per-head width D (0 = dim // num_heads).
    """

    def __init__(self, *, dim: int, num_heads: int, num_kv_heads: int, head_dim: int = 0):
        super().__init__(dim=dim, num_heads=num_heads, num_kv_heads=num_kv_heads, sparse=True, head_dim=head_dim)
