"""FusionBlock: pre-norm attention + pre-norm FFN, with per-unit gates and physical slicing.

Shapes:
    B batch, T tokens, C width, G kv groups, F FFN channels, NF FFN channel blocks, b channels per block.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from sentryfuse_ros.core.model.attend import DenseAttention, Segments, SentryAttend, sliced_linear, check_keep
from sentryfuse_ros.core.errors import ModelError


class UnitGates(NamedTuple):
    """Multipliers for one block's prunable units (1 = keep, 0 = pruned); (B, .) per sample allowed."""
    attn: Tensor  # (G,) or (B, G): one per KV group
    ffn: Tensor   # (NF,) or (B, NF): one per FFN channel block


class FeedForward(nn.Module):
    """Linear C->F, GELU, gate per channel block, Linear F->C.

    Args:
        dim: width C.
        hidden: channels F.
        block: channels per prunable unit b (F % b == 0).
    """

    def __init__(self, *, dim: int, hidden: int, block: int):
        super().__init__()
        if hidden % block:
            raise ModelError(f'ffn_dim={hidden}, ffn_block={block}: expected ffn_dim % ffn_block == 0')
        self.dim, self.block = dim, block
        self.kept_blocks = list(range(hidden // block))  # original indices of the channel blocks still here
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    @property
    def num_blocks(self) -> int:
        return self.fc1.out_features // self.block

    def forward(self, x: Tensor, gate: Optional[Tensor] = None) -> Tensor:
        h = self.act(self.fc1(x))  # (B, T, F)
        if gate is not None:
            b, t, f = h.shape
            nf = self.num_blocks
            if gate.shape not in ((nf,), (b, nf)):
                raise ModelError(f'ffn gate shape {tuple(gate.shape)}: expected ({nf},) or ({b}, {nf})')
            g = gate.to(h.dtype).reshape(-1, 1, nf, 1)                 # (1|B, 1, NF, 1)
            h = (h.view(b, t, nf, self.block) * g).view(b, t, f)       # (B, T, NF, b) -> (B, T, F)
        return self.fc2(h)

    def unit_macs(self, num_tokens: int) -> Tensor:
        """(NF,) multiply-accumulates per channel block at batch 1 (fc1 rows + fc2 columns)."""
        return torch.full((self.num_blocks,), float(2 * num_tokens * self.dim * self.block), dtype=torch.float64)

    @torch.no_grad()
    def slice_(self, keep_blocks: Tensor) -> 'FeedForward':
        """Keep only these channel blocks, in place. Returns self."""
        keep = check_keep(keep_blocks, self.num_blocks, 'ffn blocks')
        if keep.numel() == self.num_blocks:  # nothing pruned: keep the tensors (shared by a sharing copy)
            return self
        keep = keep.to(self.fc1.weight.device)
        self.fc1 = sliced_linear(self.fc1, rows=keep, unit=self.block)  # (F, C) -> (F', C) in runs of b rows
        self.fc2 = sliced_linear(self.fc2, cols=keep, unit=self.block)  # (C, F) -> (C, F') in runs of b columns
        self.kept_blocks = [self.kept_blocks[i] for i in keep.tolist()]
        return self


class FusionBlock(nn.Module):
    """x + attn(norm1(x)); x + ffn(norm2(x)) with gates on KV groups and FFN channel blocks.

    Args:
        dim: width C.
        num_heads: query heads H.
        num_kv_heads: KV heads G (ignored for dense attention, which has G = H).
        ffn_dim: FFN channels F.
        ffn_block: FFN channels per prunable unit.
        attention: 'dense' or 'sentry'.
        dropout: dropout on both residual branches while training.
        head_dim: per-head width D (0 = dim // num_heads).
    """

    def __init__(self, *, dim: int, num_heads: int, num_kv_heads: int, ffn_dim: int, ffn_block: int,
                 attention: str = 'sentry', dropout: float = 0.0, head_dim: int = 0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        if attention == 'dense':
            self.attn = DenseAttention(dim=dim, num_heads=num_heads, head_dim=head_dim)
        elif attention == 'sentry':
            self.attn = SentryAttend(dim=dim, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim)
        else:
            raise ModelError(f'attention={attention!r}: expected dense or sentry')
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim=dim, hidden=ffn_dim, block=ffn_block)
        self.drop = nn.Dropout(dropout)
        self.index = -1  # position in SentryFuseModel.blocks(), set by the model

    def forward(self, x: Tensor, segments: Segments, gates: Optional[UnitGates] = None) -> Tensor:
        """(B, T, C) -> (B, T, C)."""
        attn_gate, ffn_gate = (None, None) if gates is None else (gates[0], gates[1])
        x = x + self.drop(self.attn(self.norm1(x), segments, attn_gate))
        return x + self.drop(self.ffn(self.norm2(x), ffn_gate))

    def unit_layout(self) -> tuple:
        """(G, NF) prunable units now in this block."""
        return self.attn.num_groups, self.ffn.num_blocks

    def unit_macs(self, segments: Segments) -> tuple:
        """((G,), (NF,)) multiply-accumulates per unit at batch 1 for this token layout."""
        return self.attn.unit_macs(segments), self.ffn.unit_macs(segments.num_tokens)

    def slice_(self, keep_groups: Tensor, keep_blocks: Tensor) -> 'FusionBlock':
        """Physically keep only these KV groups and FFN blocks (indices or bool masks), in place."""
        self.attn.slice_(keep_groups)
        self.ffn.slice_(keep_blocks)
        return self
