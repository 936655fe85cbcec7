"""Training SentryFuse on synthetic scenes: task loss + SentryGate saliency alignment, resumable.

One step (see ``core/pruning/gate.py`` for the pieces):

1. the curriculum draws the live modalities; a batch is drawn without replacement;
2. with probability ``prune_prob`` (after ``prune_start_frac`` of the run) a budget b ~ U[b_min, 1]
   is drawn and the units SentryGate's *current* scores keep for (live, b) are masked (0/1 gates):
   the backbone learns to run with the sub-networks that deployment will slice out zero-shot;
   otherwise the gates are per-sample ones (B, G)/(B, NF) with ``requires_grad`` (the saliency
   teacher's probe: per-sample dL_n/dg, as the Taylor and Fisher baselines read them);
3. total = cross-entropy + align_weight * listwise-KL(gate scores, teacher EMA); one backward pass;
4. on unmasked steps the gate gradients of that same backward pass update the teacher EMA of the
   live subset (so the teacher costs no extra pass); clip, AdamW step.

The task loss trains the backbone, the alignment loss trains only the SentryGate table.

``recipe: sandwich`` replaces step 2 after ``prune_start_frac``: every step trains the full network (whose
per-sample gates feed the teacher), plus the sub-networks SentryGate picks at the smallest budget and at
a random one, each distilled from the full network's detached logits (the sandwich rule and in-place
distillation of Universally Slimmable Networks, DynaBERT, Once-for-All).
A state file ``<out stem>.train_state.pt`` next to ``--out`` is written every ``checkpoint_every``
steps (model, gate, teacher, optimizer, step, RNG states); ``resume=True`` continues from it.

Shapes: B batch, K classes; gate shapes as in ``core/pruning/gate.py``.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.pruning.checkpoint import save_checkpoint
from sentryfuse_ros.core.training.state import _load_state, _save_state, state_path
from sentryfuse_ros.core.config import to_dict
from sentryfuse_ros.core.errors import ConfigError, TrainingError
from sentryfuse_ros.core.training.config import (  # noqa: F401  (AUTOCASTS, RECIPES, load_train_config: public here too)
    AUTOCASTS, RECIPES, DataConfig, GateTrainConfig, TrainConfig, TrainFileConfig, load_train_config)
from sentryfuse_ros.core.training.curriculum import Curriculum
from sentryfuse_ros.core.training.inputnorm import fit_input_norm
from sentryfuse_ros.core.data.datasets import MultimodalTensors, SyntheticDataset
from sentryfuse_ros.core.pruning.gate import (SaliencyTeacher, SentryGate, alignment_loss, modality_subsets,
                                      ones_gates, read_saliency)
from sentryfuse_ros.core.model.config import SentryFuseConfig
from sentryfuse_ros.core.pruning.prune import masks_to_gates, select_for_budget
from sentryfuse_ros.core.data.scenes import class_names


def autocast_context(kind: str, device: torch.device):
    """torch.autocast for ``kind`` ('bf16') on ``device``'s type, or a no-op context ('none')."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=(kind == 'bf16'))


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


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Warm-up then cosine multiplier of the learning rates at ``step``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * cos


@torch.no_grad()
def accuracy(model: SentryFuseModel, data: MultimodalTensors, live: Sequence[str], *, batch: int = 256,
             gates=None) -> float:
    """Top-1 accuracy of ``model`` on ``data`` restricted to ``live`` (optionally with fixed gates)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(data), batch):
        inputs = {m: data.inputs[m][i:i + batch].float() for m in live}
        correct += int((model(inputs, gates).argmax(-1) == data.labels[i:i + batch]).sum())
    model.train(was)
    return correct / len(data)


def subset_key(live: Sequence[str]) -> str:
    """'camera+lidar' style name of a modality subset."""
    return '+'.join(live)


def validate(model: SentryFuseModel, gate: SentryGate, data: MultimodalTensors, *, batch: int,
             budgets: Sequence[float] = (1.0, 0.5)) -> Dict[str, Dict[str, float]]:
    """{budget: {subset: accuracy}} on ``data`` with gate-chosen masks (budget 1 = the dense model)."""
    out = {}
    for b in budgets:
        row = {}
        for live in modality_subsets(model.modalities):
            gates = None
            if b < 1.0:
                masks = select_for_budget(model, gate.scores(live), live, b)
                gates = _to(masks_to_gates(masks), data.labels.device)
            row[subset_key(live)] = round(accuracy(model, data, live, batch=batch, gates=gates), 4)
        out[f'{b:.2f}'] = row
    return out


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


def _sandwich_distill(model: SentryFuseModel, gate: SentryGate, inputs, live, full_logits: torch.Tensor,
                      g: 'GateTrainConfig', rng: np.random.Generator, device: torch.device,
                      autocast: str = 'none') -> torch.Tensor:
    """Mean KL(softmax(full) || softmax(sub)) of the smallest-budget and a random-budget sub-network that
    SentryGate's current scores pick for ``live``; the full logits are the (detached) teacher."""
    target = F.softmax(full_logits.detach().float(), dim=-1)  # (B, K)
    terms = []
    for budget in (g.prune_min_budget, float(rng.uniform(g.prune_min_budget, 1.0))):
        masks = select_for_budget(model, gate.scores(live), live, budget)
        with autocast_context(autocast, device):
            sub = model(inputs, _to(masks_to_gates(masks), device))  # (B, K)
        terms.append(F.kl_div(F.log_softmax(sub.float(), dim=-1), target, reduction='batchmean'))
    return torch.stack(terms).mean()


def _to(gates, device: torch.device):
    return [(a.to(device), f.to(device)) for a, f in gates]


def _on_device(data: MultimodalTensors, device: torch.device) -> MultimodalTensors:
    return MultimodalTensors({m: x.to(device) for m, x in data.inputs.items()}, data.labels.to(device),
                             data.class_names)


def _build(cfg: TrainFileConfig, names: Sequence[str], device: torch.device):
    model = SentryFuseModel(SentryFuseConfig(model=cfg.model, preprocess=cfg.preprocess, class_names=names))
    layout = model.unit_layout()
    gate = SentryGate(modalities=model.modalities, layout=layout)
    teacher = SaliencyTeacher(modalities=model.modalities, layout=layout, decay=cfg.train.gate.ema_decay)
    model, gate, teacher = model.to(device), gate.to(device), teacher.to(device)
    t = cfg.train
    opt = torch.optim.AdamW([
        {'params': list(model.parameters()), 'lr': t.lr, 'weight_decay': t.weight_decay, 'base_lr': t.lr},
        {'params': list(gate.parameters()), 'lr': t.gate.gate_lr, 'weight_decay': 0.0, 'base_lr': t.gate.gate_lr},
    ])
    return model, gate, teacher, opt


def _datasets(cfg: TrainFileConfig) -> Tuple[MultimodalTensors, MultimodalTensors]:
    d = cfg.data
    cache = pathlib.Path(d.cache_dir) if d.cache_dir else None
    train = SyntheticDataset(d.scene, cfg.preprocess, seed=d.seed, n=d.train_size, cache_dir=cache)
    val = SyntheticDataset(d.scene, cfg.preprocess, seed=d.seed + 1, n=d.val_size, cache_dir=cache)
    mods = cfg.model.modalities
    if d.half_storage:
        train, val = (MultimodalTensors({m: x.half() for m, x in ds.inputs.items()}, ds.labels, ds.class_names)
                      for ds in (train, val))
    return train.subset(mods), val.subset(mods)


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` leaves in memory (the checkpoint holds the same model, gate and metadata)."""
    model: SentryFuseModel
    gate: SentryGate
    teacher: SaliencyTeacher
    meta: Dict[str, Any]  # training metadata; {'steps': k, 'stopped': True} after stop_after


def train(cfg: TrainFileConfig, out, *, resume: bool = False, command: str = '', progress: bool = True,
          stop_after: Optional[int] = None, log: Callable[[str], None] = None,
          datasets: Optional[Tuple[MultimodalTensors, MultimodalTensors]] = None, device='cpu',
          source=None, dist=None) -> TrainResult:
    """Train, write the checkpoint to ``out``; returns the trained model, gate, teacher and metadata.

    Args:
        cfg: the whole training config (seed/steps overrides already applied).
        out: output checkpoint path; the resumable state file lives next to it.
        resume: continue from the state file (CheckpointError if absent or from another config).
        command: the command line, recorded in the metadata.
        progress: draw the progress bar on stderr.
        stop_after: stop (state saved, no checkpoint written) once this step count is reached;
            simulates an interruption in tests.
        log: where summary lines go (default: stderr).
        datasets: optional (train, val) datasets (e.g. AV-MNIST) used instead of rendering the synthetic
            scenes of ``cfg.data``; their class names become the model's. ``cfg.data`` is still recorded.
        device: where to train (CPU is the reference; bit-exact resume is only promised there).
        source: a batch source instead of ``datasets`` / ``cfg.data`` (``core/training/bagsource.py``
            BagBatches: a bag dataset split by bag): it gives the class names, each step's live set,
            inputs and labels (``batch(step, draw, device)``), the validation and dataset metadata.
        dist: a ``core/training/distributed.py`` DistContext under torchrun: the forward runs under DDP,
            the gate's gradients and the teacher's saliency are reduced across ranks, rank 0 writes files
            and logs. Needs ``source`` (which shards each batch over the ranks).
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if dist is not None and source is None:
        raise ConfigError('distributed training needs a batch source that shards the data over the ranks '
                          '(sentryfuse train --data DS)')
    main = dist is None or dist.is_main
    if not main:
        log, progress = (lambda s: None), False
    out = pathlib.Path(out)
    t = cfg.train
    torch.manual_seed(t.seed)
    names = tuple(datasets[0].class_names) if datasets is not None else class_names(cfg.data.scene)
    names = tuple(source.class_names) if source is not None else names
    device = torch.device(device)
    model, gate, teacher, opt = _build(cfg, names, device)
    rng = np.random.default_rng(t.seed)
    start_step, elapsed_before = 0, 0.0
    spath = state_path(out)
    if resume:
        start_step, elapsed_before = _load_state(spath, cfg, model, gate, teacher, opt, rng)
        log(f'resuming from {spath} at step {start_step}/{t.steps}')
    net = model if dist is None else dist.wrap(model)  # after a resume: DDP broadcasts rank 0's weights
    t0 = time.perf_counter()
    if source is not None:
        train_set = val_set = None
        log(f'data: {source.describe()}')
    elif datasets is not None:
        train_set, val_set = (d.subset(model.modalities) for d in datasets)
    else:
        train_set, val_set = _datasets(cfg)
    if source is None:
        train_set, val_set = _on_device(train_set, device), _on_device(val_set, device)
        log(f'data: {len(train_set)} train / {len(val_set)} val scenes in {time.perf_counter() - t0:.1f}s')
    if cfg.model.input_norm and start_step == 0:  # a resumed run has them in its state
        if source is None:
            stats_batches = ({m: x[i:i + 256] for m, x in train_set.inputs.items()}
                             for i in range(0, min(len(train_set), 2048), 256))
        else:
            stats_batches = (source.batch(i, model.modalities, device)[1] for i in range(8))
        log(f'input statistics: {fit_input_norm(model, stats_batches)}')
    curriculum = Curriculum(t.curriculum, modalities=model.modalities, total_steps=t.steps)
    prune_start = int(round(t.gate.prune_start_frac * t.steps))
    layout = model.unit_layout()
    bar = Progress(t.steps) if progress else None
    n = len(train_set) if source is None else 0
    batch = min(t.batch_size, n)
    ema_loss, ema_acc = None, None
    model.train()
    t_run = time.perf_counter()
    for step in range(start_step, t.steps):
        if source is None:
            live = curriculum.sample(step, rng)
            idx = torch.from_numpy(rng.choice(n, size=batch, replace=False)).to(device)
            inputs = {m: train_set.inputs[m][idx].float() for m in live}
            labels = train_set.labels[idx]
        else:
            live, inputs, labels = source.batch(step, curriculum.sample(step, rng), device)
            batch = len(labels)
        sandwich = t.gate.recipe == 'sandwich' and step >= prune_start
        pruned = not sandwich and step >= prune_start and rng.random() < t.gate.prune_prob
        if pruned:
            budget = float(rng.uniform(t.gate.prune_min_budget, 1.0))
            gates = _to(masks_to_gates(select_for_budget(model, gate.scores(live), live, budget)), device)
        else:
            # per-sample gates (B, G)/(B, NF): the teacher reads per-sample |dL_n/dg| like the Taylor
            # baseline (shared gates would give |batch-mean dL/dg|, a different quantity)
            gates = ones_gates(layout, device=device, batch_size=batch)
        for group in opt.param_groups:
            group['lr'] = group['base_lr'] * lr_factor(step, t)
        with autocast_context(t.autocast, device):
            logits = net(inputs, gates)  # (B, K)
        task = F.cross_entropy(logits.float(), labels)
        align = alignment_loss(gate, teacher, temperature=t.gate.align_temperature)
        loss = task + t.gate.align_weight * align
        if sandwich:  # the sandwich rule with in-place distillation (Yu & Huang 2019; DynaBERT; OFA)
            loss = loss + t.gate.distill_weight * _sandwich_distill(model, gate, inputs, live, logits, t.gate, rng,
                                                                    device, t.autocast)
        if not torch.isfinite(loss):
            raise TrainingError(f'step {step}: the loss is {loss.item()!r} (task {task.item()!r}): expected a finite '
                                'loss; non-finite inputs or a diverged model; stopped before writing a checkpoint')
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not pruned:  # the gate gradients of this very backward pass feed the teacher
            teacher.update(live, read_saliency(gates, kind=t.gate.saliency, skipped_blocks_zero=True) if dist is None
                           else dist.global_saliency(gates, kind=t.gate.saliency))
            gate.calibrate(teacher, t.gate.align_temperature)
        if dist is not None:
            dist.average_grads(gate)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        acc = float((logits.argmax(-1) == labels).float().mean())
        ema_loss = task.item() if ema_loss is None else 0.95 * ema_loss + 0.05 * task.item()
        ema_acc = acc if ema_acc is None else 0.95 * ema_acc + 0.05 * acc
        done = step + 1
        if bar is not None:
            bar.update(done, start_step, f'loss {ema_loss:.3f} acc {ema_acc:.2f} align {align.item():.3f} '
                                         f'phase {curriculum.phase(step)}')
        if main and (done % t.checkpoint_every == 0 or done == stop_after):
            _save_state(spath, cfg, done, elapsed_before + time.perf_counter() - t_run, model, gate, teacher,
                        opt, rng)
        if stop_after is not None and done >= stop_after and done < t.steps:
            log(f'stopped after step {done}; state in {spath}')
            return TrainResult(model, gate, teacher, {'steps': done, 'stopped': True})
    wall = elapsed_before + time.perf_counter() - t_run
    if not main:
        return TrainResult(model.eval(), gate, teacher, {'steps': t.steps, 'rank': dist.rank})
    with autocast_context(t.autocast, device):
        if source is not None:
            val = source.validate(model, gate, batch=t.eval_batch)
        else:
            val = validate(model, gate, val_set, batch=t.eval_batch)
    meta = {'steps': t.steps, 'seed': t.seed, 'val_accuracy': val,
            'val_size': len(val_set) if source is None else len(source.val_index),
            'train_wall_time_s': round(wall, 1), 'device': str(device), 'device_name': _device_name(device),
            # what bit-reproducibility depends on: the same seed, thread count and device give the same bits
            'torch_threads': torch.get_num_threads(), 'autocast': t.autocast, 'command': command,
            'deterministic_algorithms': torch.are_deterministic_algorithms_enabled(),
            'torch_version': str(torch.__version__),
            'python_version': sys.version.split()[0], 'train_config': to_dict(cfg)}
    if source is not None:
        meta.update(source.meta())
    save_checkpoint(out, model, extra={
        'class_names': list(model.config.class_names), 'gate': gate.state_dict(),
        'saliency_ema': teacher.state_dict(), 'training': meta})
    spath.unlink(missing_ok=True)
    for b, row in val.items():
        log(f'val accuracy @ budget {b}: ' + ', '.join(f'{k} {v:.3f}' for k, v in row.items()))
    log(f'wrote {out} ({out.stat().st_size / 1e6:.2f} MB) after {wall:.0f}s of training')
    model.eval()
    return TrainResult(model, gate, teacher, meta)


