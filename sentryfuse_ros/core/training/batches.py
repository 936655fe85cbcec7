"""Where the training loop's batches come from: one interface for three data modes.

``core/training/train.py`` asks a batch source, per step, for ``(live, inputs, labels)`` and, at the end,
for the validation accuracies. Two kinds implement it:

- :class:`TensorBatches`: in-memory tensors (the synthetic scenes of ``cfg.data``, rendered here by
  :func:`scene_datasets`, or a caller's (train, val) datasets such as AV-MNIST): each step draws a batch
  without replacement with the run's numpy Generator, after the curriculum's draw of the live set;
- ``core/training/bagsource.py`` BagBatches: a bag dataset split by bag, epochs over it, one shard per rank.

:func:`batch_source` picks one from what the caller passed.

Shapes: inputs {modality: (B, ...)} float32, labels (B,) int64.
"""
import pathlib
import time
from typing import Any, Callable, Dict, Iterator, Sequence, Tuple, Union

import numpy as np
import torch

from sentryfuse_ros.core.data.datasets import MultimodalTensors, SyntheticDataset
from sentryfuse_ros.core.data.scenes import class_names
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.pruning.gate import SentryGate, modality_subsets
from sentryfuse_ros.core.pruning.prune import masks_to_gates, select_for_budget
from sentryfuse_ros.core.training.bagsource import BagBatches
from sentryfuse_ros.core.training.config import TrainFileConfig

# what ``train(data=...)`` takes: None (render cfg.data), (train, val) tensors, or a bag source
DataArg = Union[None, Tuple[MultimodalTensors, MultimodalTensors], BagBatches]


def subset_key(live: Sequence[str]) -> str:
    """'camera+lidar' style name of a modality subset."""
    return '+'.join(live)


@torch.no_grad()
def accuracy(model, data: MultimodalTensors, live: Sequence[str], *, batch: int = 256, gates=None) -> float:
    """Top-1 accuracy of ``model`` on ``data`` restricted to ``live`` (optionally with fixed gates)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(data), batch):
        inputs = {m: data.inputs[m][i:i + batch].float() for m in live}
        correct += int((model(inputs, gates).argmax(-1) == data.labels[i:i + batch]).sum())
    model.train(was)
    return correct / len(data)


def validate(model, gate: SentryGate, data: MultimodalTensors, *, batch: int,
             budgets: Sequence[float] = (1.0, 0.5)) -> Dict[str, Dict[str, float]]:
    """{budget: {subset: accuracy}} on ``data`` with gate-chosen masks (budget 1 = the dense model)."""
    out = {}
    for b in budgets:
        row = {}
        for live in modality_subsets(model.modalities):
            gates = None
            if b < 1.0:
                masks = select_for_budget(model, gate.scores(live), live, b)
                gates = [(a.to(data.labels.device), f.to(data.labels.device)) for a, f in masks_to_gates(masks)]
            row[subset_key(live)] = round(accuracy(model, data, live, batch=batch, gates=gates), 4)
        out[f'{b:.2f}'] = row
    return out


def scene_datasets(cfg: TrainFileConfig) -> Tuple[MultimodalTensors, MultimodalTensors]:
    """(train, val) synthetic scenes of ``cfg.data`` restricted to the model's modalities."""
    d = cfg.data
    cache = pathlib.Path(d.cache_dir) if d.cache_dir else None
    train = SyntheticDataset(d.scene, cfg.preprocess, seed=d.seed, n=d.train_size, cache_dir=cache)
    val = SyntheticDataset(d.scene, cfg.preprocess, seed=d.seed + 1, n=d.val_size, cache_dir=cache)
    mods = cfg.model.modalities
    if d.half_storage:
        train, val = (MultimodalTensors({m: x.half() for m, x in ds.inputs.items()}, ds.labels, ds.class_names)
                      for ds in (train, val))
    return train.subset(mods), val.subset(mods)


def _on_device(data: MultimodalTensors, device: torch.device) -> MultimodalTensors:
    return MultimodalTensors({m: x.to(device) for m, x in data.inputs.items()}, data.labels.to(device),
                             data.class_names)


class TensorBatches:
    """Per-step batches drawn without replacement from in-memory (train, val) tensors.

    Args:
        train_set, val_set: the datasets, already on ``device`` and restricted to the model's modalities.
        batch_size: scenes per step (at most the training set's size).
        rng: the run's numpy Generator (the batch draw follows the curriculum's, so resumes stay bit-exact).
    """

    def __init__(self, train_set: MultimodalTensors, val_set: MultimodalTensors, *, batch_size: int,
                 rng: np.random.Generator):
        self.train_set, self.val_set, self.rng = train_set, val_set, rng
        self.batch_size = min(batch_size, len(train_set))

    @property
    def class_names(self) -> Tuple[str, ...]:
        return tuple(self.train_set.class_names)

    def batch(self, step: int, draw: Sequence[str], device) -> Tuple[Tuple[str, ...], Dict[str, torch.Tensor],
                                                                     torch.Tensor]:
        """(live = ``draw``, inputs {modality: (B, ...)}, labels (B,)) of a fresh random batch."""
        idx = torch.from_numpy(self.rng.choice(len(self.train_set), size=self.batch_size, replace=False)).to(device)
        return tuple(draw), {m: self.train_set.inputs[m][idx].float() for m in draw}, self.train_set.labels[idx]

    def stats_batches(self, modalities: Sequence[str], device) -> Iterator[Dict[str, torch.Tensor]]:
        """The first 2,048 training samples in batches of 256 (what the input statistics are fitted on)."""
        for i in range(0, min(len(self.train_set), 2048), 256):
            yield {m: x[i:i + 256] for m, x in self.train_set.inputs.items()}

    def validate(self, model, gate: SentryGate, *, batch: int,
                 budgets: Sequence[float] = (1.0, 0.5)) -> Dict[str, Dict[str, float]]:
        return validate(model, gate, self.val_set, batch=batch, budgets=budgets)

    def meta(self) -> Dict[str, Any]:
        return {'val_size': len(self.val_set)}


def batch_source(cfg: TrainFileConfig, data: DataArg, *, rng: np.random.Generator, device: torch.device,
                 modalities: Sequence[str], log: Callable[[str], None]):
    """The batch source for ``data`` (see :data:`DataArg`), its datasets moved to ``device``."""
    if isinstance(data, BagBatches):
        log(f'data: {data.describe()}')
        return data
    t0 = time.perf_counter()
    if data is None:
        train_set, val_set = scene_datasets(cfg)
    elif isinstance(data, tuple) and len(data) == 2:
        train_set, val_set = (d.subset(modalities) for d in data)
    else:
        raise ConfigError(f'data={type(data).__name__}: expected None (the scenes of cfg.data), a (train, val) '
                          'pair of MultimodalTensors or a BagBatches source')
    train_set, val_set = _on_device(train_set, device), _on_device(val_set, device)
    log(f'data: {len(train_set)} train / {len(val_set)} val scenes in {time.perf_counter() - t0:.1f}s')
    return TensorBatches(train_set, val_set, batch_size=cfg.train.batch_size, rng=rng)


def class_names_of(cfg: TrainFileConfig, data: DataArg) -> Tuple[str, ...]:
    """The model's class names: the data's own, or those of ``cfg.data``'s scenes."""
    if data is None:
        return tuple(class_names(cfg.data.scene))
    return tuple(data.class_names) if isinstance(data, BagBatches) else tuple(data[0].class_names)
