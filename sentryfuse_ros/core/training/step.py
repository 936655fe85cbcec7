"""One optimisation step of SentryFuse training.

1. the recipe picks the forward pass's gates (a gate-chosen sub-network, or per-sample probes);
2. total = cross-entropy + align_weight * listwise-KL(gate scores, teacher EMA) (+ the sandwich's
   distillation); one backward pass;
3. on unmasked steps the gate gradients of that same backward pass update the teacher EMA of the live
   subset (so the teacher costs no extra pass); clip, AdamW step.

With balancing on (``core/training/balance.py``), the per-modality heads' loss joins the total and
OGM-GE modulates the encoder gradients right after the backward pass.

The task loss trains the backbone, the alignment loss trains only the SentryGate table.
Shapes: B batch, K classes.
"""
import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sentryfuse_ros.core.pruning.gate import SaliencyTeacher, SentryGate, alignment_loss
from sentryfuse_ros.core.training.balance import Balancer, tokenizer_grad_norms
from sentryfuse_ros.core.training.config import TrainConfig
from sentryfuse_ros.core.training.recipe import Recipe, autocast_context, lr_factor


@dataclasses.dataclass
class TrainParts:
    """What a step updates: the model (and ``net``, the same model under DDP or itself), gate, teacher, optimizer."""
    model: torch.nn.Module
    net: torch.nn.Module
    gate: SentryGate
    teacher: SaliencyTeacher
    opt: torch.optim.Optimizer
    balance: Optional[Balancer] = None  # modality balancing (aux heads / OGM-GE), None when off


@dataclasses.dataclass(frozen=True)
class StepStats:
    """What one step measured on its own batch."""
    task: float   # cross-entropy
    acc: float    # top-1 accuracy
    align: float  # alignment loss
    grad_norms: Dict[str, float]    # L2 norm of each live modality's tokenizer gradient (before any modulation)
    coefficients: Dict[str, float]  # OGM-GE's k per live modality ({} when off)


def train_step(parts: TrainParts, recipe: Recipe, cfg: TrainConfig, ctx, step: int, live: Sequence[str],
               inputs: Dict[str, torch.Tensor], labels: torch.Tensor, rng: np.random.Generator,
               device: torch.device) -> StepStats:
    """One step on the batch ``(inputs, labels)`` with modalities ``live``; ``ctx`` the (Local|Dist)Context."""
    model, gate, teacher, opt = parts.model, parts.gate, parts.teacher, parts.opt
    gates, pruned = recipe.gates(step, model, gate, live, len(labels), device, rng)
    for group in opt.param_groups:
        group['lr'] = group['base_lr'] * lr_factor(step, cfg)
    with autocast_context(cfg.autocast, device):
        logits = parts.net(inputs, gates)  # (B, K)
    task = F.cross_entropy(logits.float(), labels)
    align = alignment_loss(gate, teacher, temperature=cfg.gate.align_temperature)
    loss = task + cfg.gate.align_weight * align
    if parts.balance is not None:  # before the sandwich's passes overwrite the encoder taps
        loss = loss + parts.balance.loss(live, labels)
    extra = recipe.extra_loss(step, model, gate, inputs, live, logits, device, rng)
    if extra is not None:
        loss = loss + extra
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norms = tokenizer_grad_norms(model, live)
    if parts.balance is not None:
        parts.balance.modulate(step, labels)
        ctx.average_grads(parts.balance)
    if not pruned:  # the gate gradients of this very backward pass feed the teacher
        teacher.update(live, ctx.global_saliency(gates, kind=cfg.gate.saliency))
        gate.calibrate(teacher, cfg.gate.align_temperature)
    ctx.average_grads(gate)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    acc = float((logits.argmax(-1) == labels).float().mean())
    return StepStats(task=task.item(), acc=acc, align=align.item(), grad_norms=grad_norms,
                     coefficients=dict(parts.balance.coefficients) if parts.balance is not None else {})
