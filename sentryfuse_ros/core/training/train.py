"""Training SentryFuse on synthetic scenes, tensors or bags: task loss + SentryGate saliency alignment, resumable.

The pieces, one module each:

- ``core/training/batches.py``: the batch source (synthetic scenes, given tensors or a bag dataset);
- ``core/training/curriculum.py``: the live modalities of each step;
- ``core/training/recipe.py``: the learning-rate schedule and the network each step trains
  (``pruned_steps`` or ``sandwich``);
- ``core/training/step.py``: one optimisation step (forward, losses, backward, teacher, AdamW);
- ``core/training/distributed.py``: DDP under torchrun, or the single-process LocalContext;
- ``core/training/state.py``: the resumable state file.

:class:`TrainingRun` ties them: set-up (model, optimizer, resume, data, input statistics), then
:meth:`TrainingRun.advance` runs steps and :meth:`TrainingRun.finish` validates and writes the checkpoint.
A state file ``<out stem>.train_state.pt`` next to ``out`` is written every ``checkpoint_every`` steps
(model, gate, teacher, optimizer, step, RNG states) and whenever a run stops early; ``resume=True``
continues from it.

Shapes: B batch, K classes; gate shapes as in ``core/pruning/gate.py``.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch

from sentryfuse_ros.core.config import to_dict
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.model.config import SentryFuseConfig
from sentryfuse_ros.core.pruning.checkpoint import save_checkpoint
from sentryfuse_ros.core.pruning.gate import SaliencyTeacher, SentryGate
from sentryfuse_ros.core.training.bagsource import BagBatches
from sentryfuse_ros.core.training.balance import Balancer
from sentryfuse_ros.core.training.batches import (  # noqa: F401  (accuracy, validate, subset_key: public here too)
    DataArg, accuracy, batch_source, class_names_of, scene_datasets, subset_key, validate)
from sentryfuse_ros.core.training.config import (  # noqa: F401  (AUTOCASTS, RECIPES, load_train_config: public here too)
    AUTOCASTS, RECIPES, DataConfig, GateTrainConfig, TrainConfig, TrainFileConfig, load_train_config)
from sentryfuse_ros.core.training.curriculum import Curriculum
from sentryfuse_ros.core.training.distributed import LocalContext
from sentryfuse_ros.core.training.inputnorm import fit_input_norm
from sentryfuse_ros.core.training.monitor import TrainingMonitor, plot_progress, progress_plot_path
from sentryfuse_ros.core.training.recipe import Recipe, autocast_context, lr_factor  # noqa: F401
from sentryfuse_ros.core.training.state import _load_state, _save_state, state_path
from sentryfuse_ros.core.training.step import TrainParts, train_step


class Progress:
    """A one-line progress bar on a stream: carriage returns on a terminal, else a line per 10%."""

    def __init__(self, total: int, stream=None, width: int = 24):
        self.total, self.width = total, width
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, 'isatty', lambda: False)())
        self.start = time.perf_counter()
        self._last_decile = -1

    def update(self, done: int, first: int, text: str) -> None:
        frac = done / self.total
        elapsed = time.perf_counter() - self.start
        rate = (done - first) / elapsed if elapsed > 0 and done > first else 0.0
        eta = (self.total - done) / rate if rate > 0 else float('nan')
        bar = '#' * int(frac * self.width) + '.' * (self.width - int(frac * self.width))
        line = f'[{bar}] {done}/{self.total} {text} {elapsed:.0f}s eta {eta:.0f}s'
        decile = int(frac * 10)
        if self.tty:
            self.stream.write('\r' + line + ('\n' if done == self.total else ''))
        elif decile != self._last_decile or done == self.total:
            self.stream.write(line + '\n')
        self._last_decile = decile
        self.stream.flush()


def _device_name(device: torch.device) -> str:
    """What trained the model, in words (CPU model name or CUDA device name)."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    try:
        for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform  # noqa: PLC0415
    return platform.processor() or platform.machine()


def _build(cfg: TrainFileConfig, names: Sequence[str], device: torch.device):
    model = SentryFuseModel(SentryFuseConfig(model=cfg.model, preprocess=cfg.preprocess, class_names=names))
    layout = model.unit_layout()
    gate = SentryGate(modalities=model.modalities, layout=layout)
    teacher = SaliencyTeacher(modalities=model.modalities, layout=layout, decay=cfg.train.gate.ema_decay)
    model, gate, teacher = model.to(device), gate.to(device), teacher.to(device)
    t = cfg.train
    groups = [
        {'params': list(model.parameters()), 'lr': t.lr, 'weight_decay': t.weight_decay, 'base_lr': t.lr},
        {'params': list(gate.parameters()), 'lr': t.gate.gate_lr, 'weight_decay': 0.0, 'base_lr': t.gate.gate_lr},
    ]
    balance = None
    if t.balance.heads:  # the heads train with the backbone's settings; without them the optimizer is as before
        balance = Balancer(t.balance, model, total_steps=t.steps).to(device)
        groups.append({'params': list(balance.parameters()), 'lr': t.lr, 'weight_decay': t.weight_decay,
                       'base_lr': t.lr})
    return TrainParts(model=model, net=model, gate=gate, teacher=teacher, opt=torch.optim.AdamW(groups),
                      balance=balance)


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` leaves in memory (the checkpoint holds the same model, gate and metadata)."""
    model: SentryFuseModel
    gate: SentryGate
    teacher: SaliencyTeacher
    meta: Dict[str, Any]  # training metadata (on ranks other than 0: steps and rank only)


class TrainingRun:
    """One training run: set up (or resumed) at construction, advanced step by step, finished once.

    Args:
        cfg: the whole training config (seed/steps overrides already applied).
        out: output checkpoint path; the resumable state file lives next to it.
        resume: continue from the state file (CheckpointError if absent or from another config).
        progress: draw the progress bar on stderr.
        log: where summary lines go (default: stderr).
        data: None (render the synthetic scenes of ``cfg.data``), a (train, val) pair of MultimodalTensors
            (e.g. AV-MNIST; their class names become the model's, ``cfg.data`` is still recorded), or a
            ``core/training/bagsource.py`` BagBatches (a bag dataset split by bag).
        device: where to train (CPU is the reference; bit-exact resume is only promised there).
        dist: a ``core/training/distributed.py`` DistContext under torchrun: the forward runs under DDP,
            the gate's gradients and the teacher's saliency are reduced across ranks, rank 0 writes files
            and logs. Needs a BagBatches ``data`` (which shards each batch over the ranks).
    """

    def __init__(self, cfg: TrainFileConfig, out, *, resume: bool = False, progress: bool = True,
                 log: Optional[Callable[[str], None]] = None, data: DataArg = None, device='cpu', dist=None):
        if dist is not None and not isinstance(data, BagBatches):
            raise ConfigError('distributed training needs a batch source that shards the data over the ranks '
                              '(sentryfuse train --data DS)')
        self.ctx = LocalContext() if dist is None else dist
        self.log = (log or (lambda s: print(s, file=sys.stderr, flush=True))) if self.ctx.is_main else (lambda s: None)
        self.cfg, self.out, self.device = cfg, pathlib.Path(out), torch.device(device)
        t = cfg.train
        torch.manual_seed(t.seed)
        self.parts = p = _build(cfg, class_names_of(cfg, data), self.device)
        model = p.model
        self.rng = np.random.default_rng(t.seed)
        self.step, self.elapsed_before, extra = 0, 0.0, {}
        self.spath = state_path(self.out)
        if resume:
            self.step, self.elapsed_before, extra = _load_state(self.spath, cfg, model, p.gate, p.teacher, p.opt,
                                                                self.rng)
            if p.balance is not None:
                p.balance.load_state_dict(extra['balance'])
            self.log(f'resuming from {self.spath} at step {self.step}/{t.steps}')
        p.net = self.ctx.wrap(model)  # after a resume: DDP broadcasts rank 0's weights
        self.monitor = TrainingMonitor(model.modalities, extra.get('monitor'))
        self.source = batch_source(cfg, data, rng=self.rng, device=self.device, modalities=model.modalities,
                                   log=self.log)
        if cfg.model.input_norm and self.step == 0:  # a resumed run has them in its state
            stats = fit_input_norm(model, self.source.stats_batches(model.modalities, self.device))
            self.log(f'input statistics: {stats}')
        self.curriculum = Curriculum(t.curriculum, modalities=model.modalities, total_steps=t.steps)
        self.recipe = Recipe(t.gate, total_steps=t.steps, autocast=t.autocast)
        self.bar = Progress(t.steps) if progress and self.ctx.is_main else None
        self.first_step = self.step
        self.ema_loss: Optional[float] = None
        self.ema_acc: Optional[float] = None
        model.train()
        self.t_run = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of training so far, earlier sittings of a resumed run included."""
        return self.elapsed_before + time.perf_counter() - self.t_run

    def advance(self, until: int) -> int:
        """Run the steps up to ``until`` (at most the config's steps); a stop short of the end saves the state."""
        t = self.cfg.train
        for step in range(self.step, min(until, t.steps)):
            live, inputs, labels = self.source.batch(step, self.curriculum.sample(step, self.rng), self.device)
            stats = train_step(self.parts, self.recipe, t, self.ctx, step, live, inputs, labels, self.rng, self.device)
            self.step = done = step + 1
            self._report(stats, step)
            if self.ctx.is_main and done % t.checkpoint_every == 0:
                self._checkpoint()
        if self.step < t.steps:
            if self.ctx.is_main and self.step % t.checkpoint_every:
                self.save_state()
            self.log(f'stopped after step {self.step}; state in {self.spath}')
        return self.step

    def _checkpoint(self) -> None:
        """Every checkpoint_every steps: the monitor's probes (log line, progress plot), then the state file."""
        p, t = self.parts, self.cfg.train
        self.monitor.checkpoint(self.step, p.model, p.gate, self.source, batch=t.eval_batch, autocast=t.autocast,
                                device=self.device, log=self.log)
        plot_progress(self.monitor.history, progress_plot_path(self.out), title=self.out.stem)
        self.save_state()

    def save_state(self) -> None:
        p = self.parts
        extra = {'monitor': self.monitor.state()}
        if p.balance is not None:
            extra['balance'] = p.balance.state_dict()
        _save_state(self.spath, self.cfg, self.step, self.elapsed(), p.model, p.gate, p.teacher, p.opt, self.rng,
                    extra=extra)

    def _report(self, stats, step: int) -> None:
        self.monitor.record_step(stats.grad_norms, stats.coefficients)
        self.ema_loss = stats.task if self.ema_loss is None else 0.95 * self.ema_loss + 0.05 * stats.task
        self.ema_acc = stats.acc if self.ema_acc is None else 0.95 * self.ema_acc + 0.05 * stats.acc
        if self.bar is not None:
            self.bar.update(step + 1, self.first_step, f'loss {self.ema_loss:.3f} acc {self.ema_acc:.2f} '
                                                       f'align {stats.align:.3f} phase {self.curriculum.phase(step)}')

    def finish(self, command: str = '') -> TrainResult:
        """Validate, write the checkpoint (rank 0), remove the state file; the trained model, gate, teacher, meta."""
        t, p = self.cfg.train, self.parts
        wall = self.elapsed()
        if not self.ctx.is_main:
            return TrainResult(p.model.eval(), p.gate, p.teacher, {'steps': t.steps, 'rank': self.ctx.rank})
        with autocast_context(t.autocast, self.device):
            val = self.source.validate(p.model, p.gate, batch=t.eval_batch)
        meta = {'steps': t.steps, 'seed': t.seed, 'val_accuracy': val, **self.source.meta(),
                'train_wall_time_s': round(wall, 1), 'device': str(self.device),
                'device_name': _device_name(self.device),
                # what bit-reproducibility depends on: the same seed, thread count and device give the same bits
                'torch_threads': torch.get_num_threads(), 'autocast': t.autocast, 'command': command,
                'deterministic_algorithms': torch.are_deterministic_algorithms_enabled(),
                'torch_version': str(torch.__version__),
                'python_version': sys.version.split()[0], 'train_config': to_dict(self.cfg),
                'progress': self.monitor.history}
        save_checkpoint(self.out, p.model, extra={
            'class_names': list(p.model.config.class_names), 'gate': p.gate.state_dict(),
            'saliency_ema': p.teacher.state_dict(), 'training': meta}, dtype=getattr(torch, t.checkpoint_dtype))
        self.spath.unlink(missing_ok=True)
        for b, row in val.items():
            self.log(f'val accuracy @ budget {b}: ' + ', '.join(f'{k} {v:.3f}' for k, v in row.items()))
        self.log(f'wrote {self.out} ({self.out.stat().st_size / 1e6:.2f} MB) after {wall:.0f}s of training')
        p.model.eval()
        return TrainResult(p.model, p.gate, p.teacher, meta)


def train(cfg: TrainFileConfig, out, *, resume: bool = False, command: str = '', progress: bool = True,
          log: Optional[Callable[[str], None]] = None, data: DataArg = None, device='cpu', dist=None) -> TrainResult:
    """Train to the end and write the checkpoint to ``out`` (``command``: the command line, recorded in the
    metadata); the other arguments as :class:`TrainingRun` takes them."""
    run = TrainingRun(cfg, out, resume=resume, progress=progress, log=log, data=data, device=device, dist=dist)
    run.advance(cfg.train.steps)
    return run.finish(command)
