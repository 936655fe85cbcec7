"""Modality balancing: keep a fast-learning modality from starving the others of gradient.

Joint training of a multimodal model lets the modality that fits the task first take the loss down
alone; the others' encoders then get little gradient and stay unlearned (Peng et al., CVPR 2022;
Wang et al., CVPR 2020; Huang et al., 2022). Two remedies from the literature, both training-only:

- **Auxiliary heads** (uni-modal heads / deep supervision per modality, as in Wang et al.'s
  gradient blending and Du et al.'s uni-modal teachers): a LayerNorm + linear head on each live
  modality's pooled encoder tokens, with its own cross-entropy, weight ``aux_weight``. Every encoder
  gets a gradient of its own, whatever the fusion does. The heads live beside the model (not in
  ``SentryFuseModel``): the checkpoint, the sliced and the exported models never hold them.
- **OGM-GE** (on-the-fly gradient modulation with generalization enhancement, Peng et al. 2022): per
  step, each live modality's confidence s_m = sum_n softmax(head_m)_n[y_n]; ratio_m = s_m over the
  mean of the other live modalities' s; the encoder gradient of a modality with ratio_m > 1 is scaled
  by k_m = 1 - tanh(alpha * (ratio_m - 1)) (the others keep k = 1), and Gaussian noise of std
  ``ogm_noise`` x the gradient's own std is added to every modulated encoder gradient (GE). The paper
  reads s from the fused classifier's per-modality part (its fusion is a sum of linear terms); this
  transformer's fusion has no such split, so s comes from the per-modality heads (trained on detached
  tokens when ``aux_weight`` is 0, so that they only measure).

A modality's *encoder* is its tokenizer plus, for the mid and bottleneck backbones, its own unimodal
blocks; its *encoder tokens* are what the last of those outputs (the tokenizer's for early).
Shapes: B batch, N tokens of one modality, C width, K classes.
"""
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sentryfuse_ros.core.training.config import BalanceConfig


def encoder_output_module(model, modality: str) -> nn.Module:
    """The module whose output is ``modality``'s encoder tokens (last unimodal block, else the tokenizer)."""
    blocks = model.unimodal[modality]
    return blocks[-1] if len(blocks) else model.tokenizers[modality]


def encoder_parameters(model, modality: str) -> List[nn.Parameter]:
    """``modality``'s encoder parameters: its tokenizer's and its unimodal blocks'."""
    return list(model.tokenizers[modality].parameters()) + list(model.unimodal[modality].parameters())


class ModalityTaps:
    """Forward hooks keeping each modality's encoder tokens of the latest forward pass: {modality: (B, N, C)}."""

    def __init__(self, model):
        self.features: Dict[str, torch.Tensor] = {}
        self._hooks = [encoder_output_module(model, m).register_forward_hook(self._keeper(m))
                       for m in model.modalities]

    def _keeper(self, modality: str):
        def keep(module, args, output):
            self.features[modality] = output
        return keep

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


class ModalityHeads(nn.Module):
    """One LayerNorm + linear classifier per modality on its mean-pooled encoder tokens (training only)."""

    def __init__(self, modalities: Sequence[str], dim: int, num_classes: int):
        super().__init__()
        self.heads = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
                                    for m in modalities})

    def forward(self, features: Dict[str, torch.Tensor], *, detach: bool = False) -> Dict[str, torch.Tensor]:
        """{modality: logits (B, K)} for each modality in ``features`` ({modality: (B, N, C)})."""
        out = {}
        for m, x in features.items():
            pooled = x.float().mean(dim=1)  # (B, N, C) -> (B, C)
            out[m] = self.heads[m](pooled.detach() if detach else pooled)
        return out


def ogm_coefficients(scores: Dict[str, float], alpha: float) -> Dict[str, float]:
    """OGM's k_m = 1 - tanh(alpha * relu(s_m / mean of the others' s - 1)) per modality (1 alone)."""
    if len(scores) < 2:
        return {m: 1.0 for m in scores}
    out = {}
    for m, s in scores.items():
        others = [v for k, v in scores.items() if k != m]
        ratio = s / max(sum(others) / len(others), 1e-12)
        out[m] = 1.0 - float(torch.tanh(torch.tensor(alpha * max(ratio - 1.0, 0.0))))
    return out


class Balancer(nn.Module):
    """The balancing of one run: the heads' loss after the forward pass, OGM-GE after the backward pass.

    Args:
        cfg: which methods, how strong.
        model: the SentryFuseModel being trained (hooks are placed on it).
        total_steps: the run's length (OGM-GE stops at ``ogm_end_frac`` of it).
    """

    def __init__(self, cfg: BalanceConfig, model, *, total_steps: int):
        super().__init__()
        self.cfg = cfg
        self._model = [model]  # not a submodule: the heads alone are this module's parameters
        self.ogm_end = int(round(cfg.ogm_end_frac * total_steps))
        self.taps = ModalityTaps(model)
        self.heads = ModalityHeads(model.modalities, model.config.model.dim, model.config.num_classes)
        self.coefficients: Dict[str, float] = {}  # the latest step's OGM k_m of each live modality
        self._logits: Dict[str, torch.Tensor] = {}

    def loss(self, live: Sequence[str], labels: torch.Tensor) -> torch.Tensor:
        """The heads' loss on this step's encoder tokens: aux_weight x mean CE, or the detached probes' CE."""
        feats = {m: self.taps.features[m] for m in live if m in self.taps.features}
        self._logits = self.heads(feats, detach=self.cfg.aux_weight == 0)
        ce = torch.stack([F.cross_entropy(z, labels) for z in self._logits.values()]).mean()
        return ce * (self.cfg.aux_weight if self.cfg.aux_weight > 0 else 1.0)

    def confidences(self, labels: torch.Tensor) -> Dict[str, float]:
        """s_m = sum_n softmax(head_m logits)_n[y_n] of the latest forward pass."""
        return {m: float(F.softmax(z.detach(), dim=-1).gather(1, labels.view(-1, 1)).sum())
                for m, z in self._logits.items()}

    def modulate(self, step: int, labels: torch.Tensor) -> None:
        """OGM-GE on the encoder gradients of this backward pass (no-op when off or past ogm_end_frac)."""
        self.coefficients = {}
        if self.cfg.ogm_alpha <= 0 or step >= self.ogm_end:
            return
        self.coefficients = ogm_coefficients(self.confidences(labels), self.cfg.ogm_alpha)
        if len(self.coefficients) < 2:
            return
        for m, k in self.coefficients.items():
            for p in encoder_parameters(self._model[0], m):
                if p.grad is None:
                    continue
                std = float(p.grad.std()) if p.grad.numel() > 1 else 0.0
                p.grad.mul_(k)
                if self.cfg.ogm_noise > 0 and std > 0:
                    p.grad.add_(torch.randn_like(p.grad) * (self.cfg.ogm_noise * std))


def tokenizer_grad_norms(model, live: Sequence[str]) -> Dict[str, float]:
    """The L2 norm of the gradient on each live modality's tokenizer parameters (after backward)."""
    out = {}
    for m in live:
        grads = [p.grad.detach().float().reshape(-1) for p in model.tokenizers[m].parameters() if p.grad is not None]
        out[m] = float(torch.linalg.vector_norm(torch.cat(grads))) if grads else 0.0
    return out
