"""The training recipe: the learning-rate schedule and what network each step trains.

- ``pruned_steps``: after ``prune_start_frac`` of the run, with probability ``prune_prob`` a step draws
  a budget b ~ U[prune_min_budget, 1] and trains the sub-network SentryGate's *current* scores keep
  for (live, b) (0/1 gates); every other step trains the full network through per-sample probing gates
  (B, G)/(B, NF) whose gradients feed the saliency teacher.
- ``sandwich``: after ``prune_start_frac``, every step trains the full network (probing gates), plus
  the sub-networks SentryGate picks at the smallest budget and at a random one, each distilled from
  the full network's detached logits (the sandwich rule and in-place distillation of Universally
  Slimmable Networks, DynaBERT, Once-for-All).

Every random draw is made with the run's numpy Generator in a fixed order, so a run is bit-reproducible.
Shapes: B batch, K classes; gate shapes as in ``core/pruning/gate.py``.
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sentryfuse_ros.core.pruning.gate import SentryGate, ones_gates
from sentryfuse_ros.core.pruning.prune import masks_to_gates, select_for_budget
from sentryfuse_ros.core.training.config import GateTrainConfig, TrainConfig


def autocast_context(kind: str, device: torch.device):
    """torch.autocast for ``kind`` ('bf16') on ``device``'s type, or a no-op context ('none')."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=(kind == 'bf16'))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Warm-up then cosine multiplier of the learning rates at ``step``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * cos


def gate_masks(model, gate: SentryGate, live: Sequence[str], budget: float, device) -> List[Tuple[torch.Tensor,
                                                                                                   torch.Tensor]]:
    """The 0/1 gates of the units SentryGate's current scores keep for (live, budget), on ``device``."""
    masks = select_for_budget(model, gate.scores(live), live, budget)
    return [(a.to(device), f.to(device)) for a, f in masks_to_gates(masks)]


class Recipe:
    """Decides, step by step, which gates the forward pass runs with and the sandwich's extra loss.

    Args:
        cfg: the gate / pruning settings of the run.
        total_steps: the run's length (prune_start_frac is a fraction of it).
        autocast: 'bf16' or 'none', for the sandwich's sub-network passes.
    """

    def __init__(self, cfg: GateTrainConfig, *, total_steps: int, autocast: str = 'none'):
        self.cfg, self.autocast = cfg, autocast
        self.prune_start = int(round(cfg.prune_start_frac * total_steps))

    def sandwich(self, step: int) -> bool:
        return self.cfg.recipe == 'sandwich' and step >= self.prune_start

    def gates(self, step: int, model, gate: SentryGate, live: Sequence[str], batch: int, device,
              rng: np.random.Generator) -> Tuple[list, bool]:
        """(gates of this step's forward pass, pruned): a gate-chosen sub-network or per-sample probes."""
        pruned = not self.sandwich(step) and step >= self.prune_start and rng.random() < self.cfg.prune_prob
        if pruned:
            return gate_masks(model, gate, live, float(rng.uniform(self.cfg.prune_min_budget, 1.0)), device), True
        # per-sample gates (B, G)/(B, NF): the teacher reads per-sample |dL_n/dg| like the Taylor
        # baseline (shared gates would give |batch-mean dL/dg|, a different quantity)
        return ones_gates(model.unit_layout(), device=device, batch_size=batch), False

    def extra_loss(self, step: int, model, gate: SentryGate, inputs, live: Sequence[str],
                   full_logits: torch.Tensor, device, rng: np.random.Generator) -> Optional[torch.Tensor]:
        """The sandwich's weighted distillation loss on its steps, else None."""
        if not self.sandwich(step):
            return None
        return self.cfg.distill_weight * self._distill(model, gate, inputs, live, full_logits, device, rng)

    def _distill(self, model, gate: SentryGate, inputs, live, full_logits: torch.Tensor, device,
                 rng: np.random.Generator) -> torch.Tensor:
        """Mean KL(softmax(full) || softmax(sub)) of the smallest-budget and a random-budget sub-network that
        SentryGate's current scores pick for ``live``; the full logits are the (detached) teacher."""
        target = F.softmax(full_logits.detach().float(), dim=-1)  # (B, K)
        terms = []
        for budget in (self.cfg.prune_min_budget, float(rng.uniform(self.cfg.prune_min_budget, 1.0))):
            gates = gate_masks(model, gate, live, budget, device)
            with autocast_context(self.autocast, device):
                sub = model(inputs, gates)  # (B, K)
            terms.append(F.kl_div(F.log_softmax(sub.float(), dim=-1), target, reduction='batchmean'))
        return torch.stack(terms).mean()
