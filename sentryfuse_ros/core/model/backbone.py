"""SentryFuseModel: tokenizers + one of three fusion backbones built from the same FusionBlock.

- early: [CLS, globals] + all modality tokens -> depth joint blocks -> classify CLS.
- mid: per-modality stacks of mid_layers blocks (own weights per modality) -> [CLS, globals] + all
  tokens -> depth - mid_layers joint blocks -> classify CLS.
- bottleneck (MBT): per-modality stacks over [CLS_m + tokens_m], then depth - mid_layers fusion layers
  where each modality has its own block over [CLS_m, fusion tokens, tokens_m]; after each fusion layer
  the fusion tokens are averaged over the present modalities. Classify the mean of the per-modality
  CLS tokens.
"globals" are ``num_fusion_tokens`` learned global tokens (SentryAttend's cross-modal path); early and
mid have them for both attention kinds so dense and sentry see the same tokens. An absent modality
produces no tokens and its per-modality blocks are skipped.

Shapes:
    B batch, T tokens, C width, N tokens of one modality, NG global tokens, K classes.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from sentryfuse_ros.core.model.attend import Segments
from sentryfuse_ros.core.model.block import FusionBlock, UnitGates
from sentryfuse_ros.core.errors import ModelError
from sentryfuse_ros.core.model.config import SentryFuseConfig
from sentryfuse_ros.core.data.preprocess import MODALITIES
from sentryfuse_ros.core.model.tokenizers import build_tokenizer

__all__ = ['SentryFuseModel', 'UnitGates', 'Segments']


class SentryFuseModel(nn.Module):
    """The multimodal classifier.

    Args:
        cfg: model, preprocessing and class names; kept as ``self.config``.
    """

    def __init__(self, cfg: SentryFuseConfig):
        super().__init__()
        if not isinstance(cfg, SentryFuseConfig):
            raise ModelError(f'SentryFuseModel needs a SentryFuseConfig, got {type(cfg).__name__}')
        self.config = cfg
        m = cfg.model
        self.modalities = m.modalities
        self.backbone = m.backbone
        self.tokenizers = nn.ModuleDict({mod: build_tokenizer(mod, model_cfg=m, pre_cfg=cfg.preprocess)
                                         for mod in m.modalities})
        self.num_tokens = {mod: tok.num_tokens for mod, tok in self.tokenizers.items()}
        self.num_fusion = m.num_fusion_tokens
        n_uni = m.mid_layers if m.backbone in ('mid', 'bottleneck') else 0
        n_joint = m.depth - n_uni
        self.unimodal = nn.ModuleDict({mod: nn.ModuleList([self._new_block() for _ in range(n_uni)])
                                       for mod in m.modalities})
        if m.backbone == 'bottleneck':
            self.cls = nn.Parameter(torch.zeros(len(m.modalities), m.dim))  # one CLS per modality
            self.joint = nn.ModuleList()
            self.fusion = nn.ModuleList([nn.ModuleDict({mod: self._new_block() for mod in m.modalities})
                                         for _ in range(n_joint)])
        else:
            self.cls = nn.Parameter(torch.zeros(1, m.dim))
            self.joint = nn.ModuleList([self._new_block() for _ in range(n_joint)])
            self.fusion = nn.ModuleList()
        self.global_tokens = nn.Parameter(torch.zeros(m.num_fusion_tokens, m.dim))
        self.norm = nn.LayerNorm(m.dim)
        self.head = nn.Linear(m.dim, cfg.num_classes)
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.global_tokens, std=0.02)
        self._order: List[Tuple[str, Optional[str], int]] = []  # (stage, modality, layer) per block
        for mod in m.modalities:
            self._order += [('unimodal', mod, i) for i in range(n_uni)]
        if m.backbone == 'bottleneck':
            self._order += [('fusion', mod, i) for i in range(n_joint) for mod in m.modalities]
        else:
            self._order += [('joint', None, i) for i in range(n_joint)]
        for i, blk in enumerate(self.blocks()):
            blk.index = i

    def _new_block(self) -> FusionBlock:
        m = self.config.model
        return FusionBlock(dim=m.dim, num_heads=m.num_heads, num_kv_heads=m.kv_heads, ffn_dim=m.ffn_dim,
                           ffn_block=m.ffn_block, attention=m.attention, dropout=m.dropout, head_dim=m.head_dim)

    # ---- structure -------------------------------------------------------------------------------
    def _block(self, stage: str, mod: Optional[str], layer: int) -> FusionBlock:
        if stage == 'unimodal':
            return self.unimodal[mod][layer]
        if stage == 'fusion':
            return self.fusion[layer][mod]
        return self.joint[layer]

    def blocks(self) -> List[FusionBlock]:
        """All prunable blocks in a fixed order: per-modality stacks (modality order), then joint
        layers (early/mid) or fusion layers layer-major with modalities inside (bottleneck)."""
        return [self._block(*key) for key in self._order]

    def block_modalities(self) -> List[Optional[str]]:
        """The modality each block belongs to (None: a joint block every live set runs)."""
        return [mod for _, mod, _ in self._order]

    def unit_layout(self) -> List[Tuple[int, int]]:
        """[(G_i, NF_i)] prunable units per block, as they are now (after slicing too)."""
        return [blk.unit_layout() for blk in self.blocks()]

    def kept_units(self) -> List[Tuple[List[int], List[int]]]:
        """Original indices of the KV groups and FFN blocks each block still holds."""
        return [(list(b.attn.kept_groups), list(b.ffn.kept_blocks)) for b in self.blocks()]

    def canonical_live(self, live: Sequence[str]) -> Tuple[str, ...]:
        """``live`` validated and sorted into MODALITIES order; ModelError if empty or unknown."""
        live = tuple(live)
        unknown = [m for m in live if m not in self.modalities]
        if unknown or not live:
            raise ModelError(f'live modalities {list(live)}: expected a non-empty subset of {list(self.modalities)}')
        return tuple(m for m in MODALITIES if m in live)

    def _segments(self, stage: str, mod: Optional[str], live: Tuple[str, ...]) -> Segments:
        ng = self.num_fusion
        if stage == 'joint':
            parts, start = [], 1 + ng
            for m in live:
                parts.append((start, start + self.num_tokens[m]))
                start += self.num_tokens[m]
            return Segments(start, (0, 1 + ng), tuple(parts))
        n = self.num_tokens[mod]
        if stage == 'fusion':
            return Segments(1 + ng + n, (0, 1 + ng), ((1 + ng, 1 + ng + n),))
        if self.backbone == 'bottleneck':  # unimodal with its own CLS
            return Segments(1 + n, (0, 1), ((1, 1 + n),))
        return Segments(n, (0, 0), ((0, n),))

    def token_layout(self, live: Sequence[str]) -> List[Optional[Segments]]:
        """Per block, the token segments it sees for this live set (None: the block is skipped)."""
        live = self.canonical_live(live)
        return [None if (mod is not None and mod not in live) else self._segments(stage, mod, live)
                for stage, mod, _ in self._order]

    def fixed_macs(self, live: Sequence[str]) -> int:
        """Multiply-accumulates at batch 1 outside the prunable units: tokenizers of live modalities + head."""
        live = self.canonical_live(live)
        return sum(self.tokenizers[m].macs() for m in live) + self.head.in_features * self.head.out_features

    def example_inputs(self, live: Sequence[str], *, batch: int = 1, device=None,
                       generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Random inputs with the right shapes for a live set (for FLOP counts, latency, tests)."""
        pre = self.config.preprocess
        shapes = {'camera': (batch, 3) + pre.image_hw, 'lidar': (batch, 3) + pre.bev_hw,
                  'audio': (batch, pre.audio_samples)}
        out = {}
        for m in self.canonical_live(live):
            x = torch.randn(shapes[m], generator=generator)
            out[m] = (x.clamp(-3, 3) / 3 if m == 'audio' else x).to(device)
        return out

    # ---- forward ---------------------------------------------------------------------------------
    def _check_inputs(self, inputs: Dict[str, Tensor]) -> Tuple[Tuple[str, ...], int]:
        if not isinstance(inputs, dict) or not inputs:
            raise ModelError(f'model inputs: expected a non-empty dict with keys from {list(self.modalities)}, '
                             f'got {inputs if not isinstance(inputs, dict) else "{}"}')
        live = self.canonical_live(list(inputs))
        batches = {m: int(inputs[m].shape[0]) for m in live}
        if len(set(batches.values())) != 1:
            raise ModelError(f'model inputs have different batch sizes {batches}: expected one batch size')
        return live, next(iter(batches.values()))

    def forward(self, inputs: Dict[str, Tensor], gates: Optional[Sequence[UnitGates]] = None) -> Tensor:
        """Logits (B, K) from a dict with any non-empty subset of the model's modalities.

        Args:
            inputs: modality -> tensor (camera (B, 3, S, SW), lidar (B, 3, G, GW), audio (B, A)).
            gates: optional per-block UnitGates (index i matches ``blocks()[i]``), each (G,)/(NF,) or
                per-sample (B, G)/(B, NF); they scale KV-group outputs and FFN channel-block activations.
        """
        live, b = self._check_inputs(inputs)
        if gates is not None and len(gates) != len(self._order):
            raise ModelError(f'gates for {len(gates)} blocks: expected {len(self._order)} (one per blocks() entry)')
        dtype = self.cls.dtype
        tokens = {m: self.tokenizers[m](inputs[m].to(dtype)) for m in live}  # (B, N, C) each

        def run(stage: str, mod: Optional[str], layer: int, x: Tensor) -> Tensor:
            blk = self._block(stage, mod, layer)
            return blk(x, self._segments(stage, mod, live), None if gates is None else gates[blk.index])

        n_uni = len(self.unimodal[self.modalities[0]])
        glob = self.global_tokens.expand(b, -1, -1)  # (B, NG, C)
        if self.backbone == 'bottleneck':
            streams = {}
            for m in live:
                j = self.modalities.index(m)
                x = torch.cat([self.cls[j].expand(b, 1, -1), tokens[m]], dim=1)  # (B, 1 + N, C)
                for i in range(n_uni):
                    x = run('unimodal', m, i, x)
                streams[m] = x
            ng = self.num_fusion
            for i in range(len(self.fusion)):
                fused = []
                for m in live:
                    x = torch.cat([streams[m][:, :1], glob, streams[m][:, 1:]], dim=1)  # (B, 1 + NG + N, C)
                    x = run('fusion', m, i, x)
                    fused.append(x[:, 1:1 + ng])                                      # (B, NG, C)
                    streams[m] = torch.cat([x[:, :1], x[:, 1 + ng:]], dim=1)          # (B, 1 + N, C)
                glob = torch.stack(fused, dim=0).mean(dim=0)                          # (B, NG, C)
            pooled = torch.stack([streams[m][:, 0] for m in live], dim=0).mean(dim=0)  # (B, C)
        else:
            for m in live:
                for i in range(n_uni):
                    tokens[m] = run('unimodal', m, i, tokens[m])
            x = torch.cat([self.cls.expand(b, 1, -1), glob] + [tokens[m] for m in live], dim=1)  # (B, T, C)
            for i in range(len(self.joint)):
                x = run('joint', None, i, x)
            pooled = x[:, 0]  # (B, C)
        return self.head(self.norm(pooled))  # (B, K)

    def sliced_copy(self, keep: Sequence[Tuple[Tensor, Tensor]], *, share: bool = False) -> 'SentryFuseModel':
        """A copy with only the given units per block (indices or bool masks); self is untouched.

        Args:
            keep: per block (KV groups, FFN blocks) to keep.
            share: False: a deep copy (independent tensors, safe to train). True: a view-like copy
                whose tokenizers, norms, head, global tokens and unpruned linears are self's own
                tensors; only the pruned linears hold new (gathered) weights. Inference only: the
                process keeps one copy of every weight that is not pruned away.
        """
        if len(keep) != len(self._order):
            raise ModelError(f'slice masks for {len(keep)} blocks: expected {len(self._order)}')
        if not share:
            new = copy.deepcopy(self)
            for blk, (groups, blocks) in zip(new.blocks(), keep):
                blk.slice_(groups, blocks)
            return new
        new = _shallow(self)
        for name in ('unimodal', 'joint', 'fusion'):  # fresh containers, so self's blocks stay in self
            old = getattr(self, name)
            setattr(new, name, _shallow_tree(old))
        for blk_key, (groups, blocks) in zip(new._order, keep):
            stage, mod, layer = blk_key
            blk = new._block(stage, mod, layer)
            fresh = _shallow(blk)
            fresh.attn, fresh.ffn = _shallow(blk.attn), _shallow(blk.ffn)
            fresh.slice_(groups, blocks)
            if stage == 'unimodal':
                new.unimodal[mod][layer] = fresh
            elif stage == 'fusion':
                new.fusion[layer][mod] = fresh
            else:
                new.joint[layer] = fresh
        return new


def _shallow(module: nn.Module) -> nn.Module:
    """A new module object sharing ``module``'s tensors and children; its own child/param/buffer dicts,
    so assigning a child or parameter on the copy leaves the original alone."""
    new = copy.copy(module)
    new._modules = type(module._modules)(module._modules)
    new._parameters = type(module._parameters)(module._parameters)
    new._buffers = type(module._buffers)(module._buffers)
    return new


def _shallow_tree(container: nn.Module) -> nn.Module:
    """Shallow copies of a ModuleList / ModuleDict and of its nested containers (blocks are shared)."""
    new = _shallow(container)
    for key, child in container._modules.items():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            new._modules[key] = _shallow_tree(child)
    return new
