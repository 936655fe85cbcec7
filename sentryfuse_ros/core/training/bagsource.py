"""Training batches from a bag dataset: split by bag, epochs over the data, one shard per rank.

:class:`BagBatches` is the ``source`` that ``core/training/train.py`` takes instead of in-memory
tensors. It decides, per step, the live modalities and the samples of this rank:

- **Split by bag**: the validation bags are whole bags (neighbouring frames of one bag are nearly
  the same sample, so a split by frame would leak); the rest are training bags.
- **Epochs**: every training sample is seen once per epoch. Samples are grouped by the modalities
  they hold (a dropout sample has fewer), each group is sharded over the ranks by
  ``torch.utils.data.DistributedSampler`` (shuffled by seed and epoch, padded to equal shards), and
  cut into batches; the batch order over groups is shuffled by (seed, epoch), the same on every
  rank. So at each step all ranks take a batch of the same group, of the same size.
- **Live set**: the curriculum's draw restricted to the group's modalities (the group's whole set
  when the draw and the group share none), the same on every rank.

Everything is a function of (seed, step), so a resumed run continues with the same batches.

Shapes: per rank and step, inputs {modality: (b, ...)} float32, labels (b,) int64, b = batch_size / world.
"""
import math
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from sentryfuse_ros.core.data.bagdataset import BagDataset
from sentryfuse_ros.core.errors import ConfigError, DataError
from sentryfuse_ros.core.pruning.gate import modality_subsets
from sentryfuse_ros.core.pruning.prune import masks_to_gates, select_for_budget


def default_val_bags(bag_names: Sequence[str], fraction: float = 0.1) -> List[str]:
    """The last ceil(fraction * n) bags (none when there is only one bag)."""
    n = len(bag_names)
    return [] if n < 2 else list(bag_names[n - max(1, math.ceil(fraction * n)):])


class BagBatches:
    """Per-step batches of a :class:`BagDataset` for one rank.

    Args:
        dataset: the built dataset.
        modalities: the model's modalities (samples holding none of them are not used).
        val_bags: names of the bags held out for validation.
        batch_size: the global batch (all ranks together); must divide by ``world_size``.
        seed: shuffling seed.
        rank, world_size: this process in a data-parallel run (0, 1 alone).
    """

    def __init__(self, dataset: BagDataset, modalities: Sequence[str], val_bags: Sequence[str], *,
                 batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ConfigError(f'train.batch_size={batch_size}: expected a multiple of the {world_size} '
                              'processes (each takes batch_size / processes samples per step)')
        self.dataset, self.seed, self.rank, self.world_size = dataset, int(seed), rank, world_size
        self.modalities = tuple(m for m in dataset.modalities if m in modalities)
        missing = sorted(set(modalities) - set(dataset.modalities))
        if missing:
            raise DataError(f'the model uses {list(modalities)} but dataset {str(dataset.path)!r} stores '
                            f'{list(dataset.modalities)}: no {missing}')
        self.val_bags = list(val_bags)
        val = dataset.bags_index(self.val_bags) if self.val_bags else np.zeros(0, np.int64)
        train = np.setdiff1d(np.arange(len(dataset)), val)
        self.train_index, self.val_index = self._usable(train), self._usable(val)
        if not len(self.train_index):
            raise DataError(f'no training samples left in {str(dataset.path)!r} after holding out bags '
                            f'{self.val_bags}; its bags: {dataset.bag_names}')
        self.local_batch = batch_size // world_size
        self.groups = list(dataset.modality_sets(self.train_index).items())   # [(modalities, indices)]
        self._plan_epoch, self._plan = -1, []
        self.steps_per_epoch = len(self._epoch_plan(0))

    def _usable(self, index: np.ndarray) -> np.ndarray:
        cols = [i for i, m in enumerate(('camera', 'lidar', 'audio')) if m in self.modalities]
        return index[self.dataset.present[index][:, cols].any(axis=1)]

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.dataset.class_names

    def _epoch_plan(self, epoch: int) -> List[Tuple[Tuple[str, ...], np.ndarray]]:
        """This rank's batches of ``epoch``: [(group modalities, global sample indices)]."""
        if epoch == self._plan_epoch:
            return self._plan
        batches = []
        for g, (mods, index) in enumerate(self.groups):
            sampler = DistributedSampler(range(len(index)), num_replicas=self.world_size, rank=self.rank,
                                         shuffle=True, seed=self.seed * 1000 + g, drop_last=False)
            sampler.set_epoch(epoch)
            mine = index[np.fromiter(iter(sampler), np.int64)]
            batches += [(mods, mine[i:i + self.local_batch]) for i in range(0, len(mine), self.local_batch)]
        order = np.random.default_rng([self.seed, epoch]).permutation(len(batches))
        self._plan_epoch, self._plan = epoch, [batches[i] for i in order]
        return self._plan

    def indices(self, step: int) -> Tuple[Tuple[str, ...], np.ndarray]:
        """(group modalities, this rank's sample indices) of ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return self._epoch_plan(epoch)[k]

    def batch(self, step: int, draw: Sequence[str], device) -> Tuple[Tuple[str, ...], Dict[str, torch.Tensor],
                                                                     torch.Tensor]:
        """(live, inputs {modality: (b, ...)}, labels (b,)) of ``step``; ``draw`` = the curriculum's live set."""
        mods, index = self.indices(step)
        held = tuple(m for m in mods if m in self.modalities)
        live = tuple(m for m in held if m in draw) or held
        arrays = self.dataset.inputs(index, live)
        inputs = {m: torch.from_numpy(x).to(device) for m, x in arrays.items()}
        return live, inputs, torch.from_numpy(self.dataset.labels[index]).to(device)

    def describe(self) -> str:
        sets = ', '.join(f'{"+".join(m)} x{len(i)}' for m, i in self.groups)
        return (f'{len(self.train_index)} train samples ({sets}) / {len(self.val_index)} val samples from bags '
                f'{self.val_bags or "(none held out)"}; {self.steps_per_epoch} steps per epoch'
                + (f' on each of {self.world_size} processes' if self.world_size > 1 else ''))

    def stats_batches(self, modalities: Sequence[str], device) -> Iterator[Dict[str, torch.Tensor]]:
        """The first 8 steps' batches, all ``modalities`` drawn (what the input statistics are fitted on)."""
        return (self.batch(i, modalities, device)[1] for i in range(8))

    def meta(self) -> Dict[str, Any]:
        return {'val_size': int(len(self.val_index)), 'dataset': {'path': str(self.dataset.path), 'manifest_hash': self.dataset.hash,
                            'preprocess_hash': self.dataset.manifest.get('preprocess_hash'),
                            'val_bags': self.val_bags, 'train_samples': int(len(self.train_index)),
                            'val_samples': int(len(self.val_index)), 'steps_per_epoch': self.steps_per_epoch,
                            'world_size': self.world_size}}

    @torch.no_grad()
    def validate(self, model, gate, *, batch: int,
                 budgets: Sequence[float] = (1.0, 0.5)) -> Dict[str, Dict[str, float]]:
        """{budget: {subset: accuracy}} on the validation bags (each subset scored on the samples that
        hold it) plus 'recorded': every sample with the modalities it was recorded with."""
        out: Dict[str, Dict[str, float]] = {}
        if not len(self.val_index):
            return out
        device = next(model.parameters()).device
        was = model.training
        model.eval()
        present = self.dataset.present[self.val_index]
        for b in budgets:
            row = {}
            for live in modality_subsets(model.modalities):
                cols = [('camera', 'lidar', 'audio').index(m) for m in live]
                index = self.val_index[present[:, cols].all(axis=1)]
                if not len(index):
                    continue
                gates = None
                if b < 1.0:
                    masks = select_for_budget(model, gate.scores(live), live, b)
                    gates = [(a.to(device), f.to(device)) for a, f in masks_to_gates(masks)]
                row['+'.join(live)] = round(self._accuracy(model, index, live, batch, gates, device), 4)
            out[f'{b:.2f}'] = row
        correct = 0
        for mods, index in self.dataset.modality_sets(self.val_index).items():
            live = tuple(m for m in mods if m in model.modalities)
            correct += self._accuracy(model, index, live, batch, None, device) * len(index)
        out['recorded'] = {'all': round(correct / len(self.val_index), 4)}
        model.train(was)
        return out

    def _accuracy(self, model, index: np.ndarray, live, batch: int, gates, device) -> float:
        correct = 0
        for i in range(0, len(index), batch):
            part = index[i:i + batch]
            inputs = {m: torch.from_numpy(x).to(device) for m, x in self.dataset.inputs(part, live).items()}
            labels = torch.from_numpy(self.dataset.labels[part]).to(device)
            correct += int((model(inputs, gates).argmax(-1) == labels).sum())
        return correct / len(index)
