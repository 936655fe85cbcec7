"""Preprocessed multimodal datasets in memory, and batch loaders over any modality subset.

``MultimodalTensors`` is the one container every dataset produces (synthetic scenes here,
AV-MNIST in ``avmnist.py``): a dict of per-modality tensors with a shared first axis and labels.
``SyntheticDataset`` renders and preprocesses scenes from ``core.scenes`` deterministically by
(scene config, preprocess config, seed, n) and caches the result on disk keyed by their hash.

Shapes: camera (N, 3, S, SW), lidar (N, 3, G, GW), audio (N, A) float32; labels (N,) int64.
"""
import dataclasses
import hashlib
import json
import pathlib
import pickle
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sentryfuse_ros.core.data import scenes
from sentryfuse_ros.core.config import to_dict
from sentryfuse_ros.core.errors import DataError
from sentryfuse_ros.core.data.preprocess import (MODALITIES, PreprocessConfig, preprocess_audio, preprocess_camera,
                                            preprocess_lidar)

CACHE_FORMAT = 1  # bump when the rendering or the cache layout changes, so old caches are not reused


def _check_modalities(modalities: Sequence[str], available: Sequence[str]) -> Tuple[str, ...]:
    modalities = tuple(modalities)
    bad = [m for m in modalities if m not in available]
    if bad or not modalities:
        raise DataError(f'modalities={list(modalities)}: expected a non-empty subset of {list(available)}')
    return tuple(m for m in MODALITIES if m in modalities)  # canonical order


class MultimodalTensors:
    """Per-modality input tensors with a shared sample axis, plus labels and class names.

    Args:
        inputs: {modality: (N, ...) float tensor}, modalities from MODALITIES.
        labels: (N,) integer class ids in [0, len(class_names)).
        class_names: name of each class id.
    """

    def __init__(self, inputs: Dict[str, torch.Tensor], labels: torch.Tensor, class_names: Sequence[str]):
        if not inputs:
            raise DataError('inputs={}: expected at least one modality')
        self.class_names = tuple(class_names)
        self.labels = torch.as_tensor(labels).long()
        if self.labels.ndim != 1:
            raise DataError(f'labels shape={tuple(self.labels.shape)}: expected (N,)')
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise DataError(f'labels range [{int(self.labels.min())}, {int(self.labels.max())}]: '
                            f'expected ids in [0, {len(self.class_names)})')
        order = _check_modalities(list(inputs), MODALITIES)
        self.inputs = {m: inputs[m] for m in order}
        for m, x in self.inputs.items():
            if x.shape[0] != len(self.labels):
                raise DataError(f'inputs[{m!r}] has {x.shape[0]} samples: expected {len(self.labels)} like labels')

    @property
    def modalities(self) -> Tuple[str, ...]:
        return tuple(self.inputs)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, modalities: Sequence[str]) -> 'MultimodalTensors':
        """The same samples restricted to ``modalities`` (tensors shared, not copied)."""
        keep = _check_modalities(modalities, self.modalities)
        return MultimodalTensors({m: self.inputs[m] for m in keep}, self.labels, self.class_names)

    def select(self, index: torch.Tensor) -> 'MultimodalTensors':
        """The samples at ``index`` (a 1-D index tensor or list)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return MultimodalTensors({m: x[index] for m, x in self.inputs.items()}, self.labels[index],
                                 self.class_names)

    def split(self, fractions: Sequence[float], seed: int = 0) -> List['MultimodalTensors']:
        """Disjoint random parts with the given fractions of the samples (sum <= 1), by seed."""
        if not fractions or any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
            raise DataError(f'fractions={list(fractions)}: expected positive fractions summing to <= 1')
        perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(self)))
        bounds = np.round(np.cumsum([0.0, *fractions]) * len(self)).astype(int)
        return [self.select(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def save(self, path: pathlib.Path) -> None:
        """Write to ``path`` (.pt); float tensors are stored as float16 to halve the file."""
        payload = {'inputs': {m: x.half() for m, x in self.inputs.items()}, 'labels': self.labels,
                   'class_names': list(self.class_names)}
        tmp = pathlib.Path(str(path) + '.tmp')
        torch.save(payload, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: pathlib.Path) -> 'MultimodalTensors':
        """Read a file written by :meth:`save`; tensors come back float32."""
        try:
            payload = torch.load(path, map_location='cpu', weights_only=True)
            return cls({m: x.float() for m, x in payload['inputs'].items()}, payload['labels'],
                       payload['class_names'])
        except (OSError, RuntimeError, KeyError, TypeError, AttributeError, pickle.UnpicklingError, EOFError) as exc:
            raise DataError(f'dataset file {str(path)!r} is unreadable or malformed: {exc}') from exc


def render_sample(scene_cfg: scenes.SceneConfig, pre_cfg: PreprocessConfig, seed: int, index: int,
                  modalities: Sequence[str] = MODALITIES) -> Tuple[Dict[str, np.ndarray], int]:
    """Sample ``index`` of the synthetic dataset drawn with ``seed``: preprocessed arrays and label.

    Classes are balanced (class = index mod K); everything else is drawn from (seed, index).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    scene = scenes.sample_scene(rng, scene_cfg, class_id=index % scene_cfg.num_classes)
    out = {}
    if 'camera' in modalities:
        out['camera'] = preprocess_camera(scenes.render_camera(scene, scene_cfg), pre_cfg)
    if 'lidar' in modalities:
        out['lidar'] = preprocess_lidar(scenes.render_lidar(scene, scene_cfg), pre_cfg)
    if 'audio' in modalities:
        n_audio = int(round(scene_cfg.audio_duration_s * scene_cfg.audio_rate))
        out['audio'] = preprocess_audio(scenes.render_audio(scene, scene_cfg, 0, n_audio),
                                        scene_cfg.audio_rate, pre_cfg)
    return out, scene.class_id


def cache_key(scene_cfg: scenes.SceneConfig, pre_cfg: PreprocessConfig, seed: int, n: int) -> str:
    """Hex digest naming the synthetic dataset made from these settings."""
    blob = json.dumps({'scene': to_dict(scene_cfg), 'preprocess': to_dict(pre_cfg), 'seed': int(seed),
                       'n': int(n), 'format': CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class SyntheticDataset(MultimodalTensors):
    """``n`` preprocessed synthetic scenes (all three modalities), deterministic by ``seed``.

    Args:
        scene_cfg: what to render.
        pre_cfg: how to preprocess it.
        seed: dataset seed (use different seeds for train and test sets).
        n: number of samples.
        cache_dir: if given, the tensors are loaded from / saved to
            ``cache_dir/synthetic-<name>-<hash>.pt`` keyed by all of the above.
    """

    def __init__(self, scene_cfg: scenes.SceneConfig, pre_cfg: PreprocessConfig, seed: int, n: int,
                 cache_dir: Optional[pathlib.Path] = None):
        if not isinstance(n, int) or n < 1:
            raise DataError(f'n={n!r}: expected a positive number of samples')
        self.scene_cfg, self.pre_cfg, self.seed = scene_cfg, pre_cfg, int(seed)
        path = None
        if cache_dir is not None:
            path = pathlib.Path(cache_dir) / f'synthetic-{scene_cfg.name}-{cache_key(scene_cfg, pre_cfg, seed, n)}.pt'
            if path.is_file():
                cached = MultimodalTensors.load(path)
                super().__init__(cached.inputs, cached.labels, cached.class_names)
                return
        a = pre_cfg.audio_samples
        arrays = {'camera': np.empty((n, 3) + pre_cfg.image_hw, np.float32),
                  'lidar': np.empty((n, 3) + pre_cfg.bev_hw, np.float32), 'audio': np.empty((n, a), np.float32)}
        labels = np.empty(n, np.int64)
        for i in range(n):  # one scene per iteration; rendering itself is vectorized
            sample, labels[i] = render_sample(scene_cfg, pre_cfg, seed, i)
            for m, x in sample.items():
                arrays[m][i] = x
        # always the float16 round trip the cache stores: a dataset is bit-identical whether it was rendered
        # with a cache, without one, or read back from one (so training does not depend on cache_dir)
        super().__init__({m: torch.from_numpy(x).half().float() for m, x in arrays.items()},
                         torch.from_numpy(labels), scenes.class_names(scene_cfg))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.save(path)


class BatchLoader:
    """Re-iterable batches ``(inputs restricted to modalities, labels)`` over a dataset.

    Each pass with ``shuffle`` uses a new permutation drawn from (seed, epoch), so a run is
    reproducible; ``set_epoch`` picks the pass explicitly (e.g. when resuming).

    Args:
        dataset: the samples.
        batch_size: samples per batch (the last one may be smaller unless drop_last).
        modalities: subset of dataset.modalities to yield; default all.
        shuffle: permute the samples each pass.
        seed: the shuffling seed.
        drop_last: skip a final incomplete batch.
    """

    def __init__(self, dataset: MultimodalTensors, batch_size: int, modalities: Optional[Sequence[str]] = None,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f'batch_size={batch_size!r}: expected a positive int')
        self.dataset = dataset.subset(dataset.modalities if modalities is None else modalities)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, int(seed), drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[Dict[str, torch.Tensor], torch.Tensor]]:
        n = len(self.dataset)
        if self.shuffle:
            order = torch.from_numpy(np.random.default_rng([self.seed, self.epoch]).permutation(n))
        else:
            order = torch.arange(n)
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield {m: x[idx] for m, x in self.dataset.inputs.items()}, self.dataset.labels[idx]


def iterate_batches(dataset: MultimodalTensors, batch_size: int, modalities: Optional[Sequence[str]] = None,
                    shuffle: bool = False, seed: int = 0,
                    drop_last: bool = False) -> Iterator[Tuple[Dict[str, torch.Tensor], torch.Tensor]]:
    """One pass of ``(inputs, labels)`` batches; see :class:`BatchLoader` for the arguments."""
    return iter(BatchLoader(dataset, batch_size, modalities, shuffle, seed, drop_last))


def make_loaders(dataset: MultimodalTensors, batch_size: int, modalities: Optional[Sequence[str]] = None,
                 fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Dict[str, BatchLoader]:
    """Split ``dataset`` into train/val/test by ``fractions`` and wrap each in a BatchLoader.

    Only the train loader shuffles (and drops a last incomplete batch if the split is larger than
    one batch); val and test keep a fixed order.
    """
    if len(fractions) != 3:
        raise DataError(f'fractions={list(fractions)}: expected (train, val, test)')
    parts = dataset.split(fractions, seed=seed)
    return {name: BatchLoader(part, batch_size, modalities, shuffle=(name == 'train'), seed=seed,
                              drop_last=(name == 'train' and len(part) > batch_size))
            for name, part in zip(('train', 'val', 'test'), parts)}


def dataset_info(dataset: MultimodalTensors) -> Dict[str, object]:
    """A plain-data summary (sizes, shapes, class counts) for logs and checkpoints."""
    counts = torch.bincount(dataset.labels, minlength=dataset.num_classes).tolist()
    info = {'n': len(dataset), 'class_names': list(dataset.class_names), 'class_counts': counts,
            'shapes': {m: list(x.shape[1:]) for m, x in dataset.inputs.items()}}
    if isinstance(dataset, SyntheticDataset):
        info.update(scene=dataclasses.asdict(dataset.scene_cfg), seed=dataset.seed)
    return info
