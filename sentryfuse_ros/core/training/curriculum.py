"""Modality-dropout curriculum: which modalities are live at each training step.

An optional warm-up, then three phases, as fractions of the run's total steps:

0. ``[0, unimodal_frac)``: one modality at a time, in turn (step % M): every branch learns on its
   own before it has to compete. Without it a slow modality can stay unlearned for good: on the
   bench's sim6 scenes the lidar branch of the mid backbone sat at chance (0.167) on seed 1 with
   and without the gate, because camera and audio fit the task first and its gradient died out
   (lidar-alone steps later in the run came too few to get it off that plateau); half the run
   in turn brings lidar alone to 0.39-0.46 and all three to 0.96-0.97 on seeds 0-2 (0.90-0.95 without).
1. ``[u, u + phase1_frac)``: every modality is live (the model first learns to fuse).
2. ``[u + phase1_frac, u + phase1_frac + phase2_frac)``: each modality is dropped independently with a
   probability that rises linearly from 0 to ``drop_p_max``; a draw that drops everything keeps
   one modality chosen uniformly at random.
3. the rest: a modality subset is drawn uniformly from all ``2^M - 1`` non-empty subsets,
   single-modality ones included, mixed with the full set with probability ``full_p`` so the
   all-modality case keeps its share of the steps.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence, Tuple

import numpy as np

from sentryfuse_ros.core.config import check
from sentryfuse_ros.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    phase1_frac: float = 0.2   # fraction of steps with all modalities live
    phase2_frac: float = 0.3   # fraction of steps with independent drops of rising probability
    drop_p_max: float = 0.5    # per-modality drop probability reached at the end of phase 2
    full_p: float = 0.25       # phase 3: probability of the full set instead of a uniform subset
    unimodal_frac: float = 0.0  # warm-up fraction of steps with one modality at a time, in turn

    def __post_init__(self):
        check(0.0 <= self.unimodal_frac <= 1.0, 'unimodal_frac', self.unimodal_frac, 'a fraction in [0, 1]')
        check(0.0 <= self.phase1_frac <= 1.0, 'phase1_frac', self.phase1_frac, 'a fraction in [0, 1]')
        check(0.0 <= self.phase2_frac <= 1.0, 'phase2_frac', self.phase2_frac, 'a fraction in [0, 1]')
        check(self.unimodal_frac + self.phase1_frac + self.phase2_frac <= 1.0 + 1e-9, 'phase2_frac', self.phase2_frac,
              f'unimodal_frac + phase1_frac + phase2_frac <= 1 (unimodal_frac={self.unimodal_frac}, '
              f'phase1_frac={self.phase1_frac})')
        check(0.0 <= self.drop_p_max < 1.0, 'drop_p_max', self.drop_p_max, 'a probability in [0, 1)')
        check(0.0 <= self.full_p <= 1.0, 'full_p', self.full_p, 'a probability in [0, 1]')


class Curriculum:
    """Draws the live modality tuple for a step (canonical order of ``modalities``).

    Args:
        config: the phase fractions and probabilities.
        modalities: the model's modalities, in canonical order.
        total_steps: the run's length; phases are fractions of it.
    """

    def __init__(self, config: CurriculumConfig, *, modalities: Sequence[str], total_steps: int):
        if not modalities:
            raise ConfigError('modalities=(): expected at least one modality')
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(f'total_steps={total_steps!r}: expected a positive int')
        self.config = config
        self.modalities = tuple(modalities)
        self.total_steps = total_steps
        self.warmup_end = int(round(config.unimodal_frac * total_steps))
        self.phase1_end = int(round((config.unimodal_frac + config.phase1_frac) * total_steps))
        self.phase2_end = int(round((config.unimodal_frac + config.phase1_frac + config.phase2_frac) * total_steps))

    def phase(self, step: int) -> int:
        """0 (one modality at a time), 1, 2 or 3: the phase that ``step`` (0-based) falls in."""
        if step < self.warmup_end:
            return 0
        if step < self.phase1_end:
            return 1
        if step < self.phase2_end:
            return 2
        return 3

    def drop_probability(self, step: int) -> float:
        """Per-modality drop probability at ``step`` (0 in phase 1, ramps in phase 2; phase 0 keeps one)."""
        phase = self.phase(step)
        if phase == 0:
            return 1.0 - 1.0 / len(self.modalities)
        if phase == 1:
            return 0.0
        if phase == 3:
            return self.config.drop_p_max
        span = max(1, self.phase2_end - self.phase1_end)
        return self.config.drop_p_max * (step - self.phase1_end + 1) / span

    def sample(self, step: int, rng: np.random.Generator) -> Tuple[str, ...]:
        """The live modalities for ``step``, drawn with ``rng`` (a numpy Generator)."""
        m = len(self.modalities)
        phase = self.phase(step)
        if phase == 1 or m == 1:
            return self.modalities
        if phase == 0:
            return (self.modalities[step % m],)
        if phase == 2:
            keep = rng.random(m) >= self.drop_probability(step)
            if not keep.any():
                keep[rng.integers(m)] = True
            return tuple(name for name, k in zip(self.modalities, keep) if k)
        if rng.random() < self.config.full_p:
            return self.modalities
        mask = int(rng.integers(1, 2 ** m))  # uniform over the 2^M - 1 non-empty subsets
        return tuple(name for i, name in enumerate(self.modalities) if mask >> i & 1)
