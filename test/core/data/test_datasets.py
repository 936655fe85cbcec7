"""Synthetic dataset build/cache, the MultimodalTensors container, and subset batch loaders."""
import itertools

import pytest
import torch

from sentryfuse_ros.core.data import datasets as D
from sentryfuse_ros.core.errors import DataError
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig
from sentryfuse_ros.core.data.scenes import SceneConfig

SCENE = SceneConfig(image_size=32, lidar_points=256, audio_duration_s=0.25)
PRE = PreprocessConfig(image_size=16, bev_size=8, bev_range_m=12.0, audio_samples=512)
SUBSETS = [list(c) for r in (1, 2, 3) for c in itertools.combinations(MODALITIES, r)]


@pytest.fixture(scope='module')
def tiny():
    return D.SyntheticDataset(SCENE, PRE, seed=3, n=24)


def test_synthetic_shapes_and_labels(tiny):
    assert len(tiny) == 24 and tiny.modalities == MODALITIES
    assert tiny.inputs['camera'].shape == (24, 3, 16, 16) and tiny.inputs['lidar'].shape == (24, 3, 8, 8)
    assert tiny.inputs['audio'].shape == (24, 512)
    assert all(x.dtype == torch.float32 and torch.isfinite(x).all() for x in tiny.inputs.values())
    assert torch.bincount(tiny.labels).tolist() == [4] * 6  # balanced
    assert tiny.class_names[0] == 'person' and D.dataset_info(tiny)['class_counts'] == [4] * 6


def test_synthetic_deterministic_by_seed(tiny):
    again, other = D.SyntheticDataset(SCENE, PRE, seed=3, n=24), D.SyntheticDataset(SCENE, PRE, seed=4, n=24)
    for m in MODALITIES:
        assert torch.equal(again.inputs[m], tiny.inputs[m])
        assert not torch.equal(other.inputs[m], tiny.inputs[m])
    prefix = D.SyntheticDataset(SCENE, PRE, seed=3, n=6)  # sample i does not depend on n
    assert torch.equal(prefix.inputs['audio'], tiny.inputs['audio'][:6])


def test_cache_round_trip(tmp_path):
    built = D.SyntheticDataset(SCENE, PRE, seed=1, n=12, cache_dir=tmp_path)
    files = list(tmp_path.glob('synthetic-sim6-*.pt'))
    assert len(files) == 1
    cached = D.SyntheticDataset(SCENE, PRE, seed=1, n=12, cache_dir=tmp_path)
    assert all(torch.equal(built.inputs[m], cached.inputs[m]) for m in MODALITIES)
    assert torch.equal(built.labels, cached.labels)
    fresh = D.SyntheticDataset(SCENE, PRE, seed=1, n=12)  # no cache: the same bits (issue 10)
    assert all(torch.equal(built.inputs[m], fresh.inputs[m]) for m in MODALITIES)
    D.SyntheticDataset(SCENE, PRE, seed=2, n=12, cache_dir=tmp_path)  # another key, another file
    assert len(list(tmp_path.glob('*.pt'))) == 2
    assert D.cache_key(SCENE, PRE, 1, 12) != D.cache_key(SCENE, PreprocessConfig(), 1, 12)


def test_corrupt_cache_file(tmp_path):
    bad = tmp_path / 'broken.pt'
    bad.write_bytes(b'not a torch file')
    with pytest.raises(DataError, match='broken.pt'):
        D.MultimodalTensors.load(bad)


@pytest.mark.parametrize('subset', SUBSETS, ids=['+'.join(s) for s in SUBSETS])
def test_batches_for_any_subset(tiny, subset):
    seen = []
    for inputs, labels in D.iterate_batches(tiny, batch_size=5, modalities=subset, shuffle=True, seed=0):
        assert list(inputs) == subset and all(x.shape[0] == len(labels) for x in inputs.values())
        seen.append(labels)
    assert sorted(torch.cat(seen).tolist()) == sorted(tiny.labels.tolist())  # each sample once
    assert [len(b) for b in seen] == [5, 5, 5, 5, 4]


def test_loader_shuffle_reproducible_and_per_epoch(tiny):
    def order(loader):
        return torch.cat([x['audio'][:, -1] for x, _ in loader])
    a, b = D.BatchLoader(tiny, 8, shuffle=True, seed=1), D.BatchLoader(tiny, 8, shuffle=True, seed=1)
    first = order(a)
    assert torch.equal(first, order(b)) and not torch.equal(first, order(a))  # epoch 2 differs
    a.set_epoch(0)
    assert torch.equal(order(a), first)
    plain = order(D.BatchLoader(tiny, 8))
    assert torch.equal(plain, tiny.inputs['audio'][:, -1])
    assert len(D.BatchLoader(tiny, 7, drop_last=True)) == 3


def test_make_loaders_and_split(tiny):
    loaders = D.make_loaders(tiny, batch_size=4, modalities=['lidar'], fractions=(0.5, 0.25, 0.25), seed=0)
    sizes = {k: len(v.dataset) for k, v in loaders.items()}
    assert sizes == {'train': 12, 'val': 6, 'test': 6}
    ids = [set(v.dataset.inputs['lidar'].flatten(1).sum(1).tolist()) for v in loaders.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert loaders['train'].dataset.modalities == ('lidar',)


def test_container_subset_order_and_errors(tiny):
    sub = tiny.subset(['audio', 'camera'])
    assert sub.modalities == ('camera', 'audio') and sub.inputs['audio'] is tiny.inputs['audio']
    with pytest.raises(DataError, match=r"modalities=\['lidar'\]"):
        sub.subset(['lidar'])
    with pytest.raises(DataError, match=r'modalities=\[\]'):
        tiny.subset([])
    with pytest.raises(DataError, match="inputs\\['audio'\\] has 3 samples"):
        D.MultimodalTensors({'audio': torch.zeros(3, 4)}, torch.zeros(2), ['a'])
    with pytest.raises(DataError, match=r'labels range \[0, 5\]'):
        D.MultimodalTensors({'audio': torch.zeros(2, 4)}, torch.tensor([0, 5]), ['a', 'b'])
    with pytest.raises(DataError, match=r'fractions=\[0.8, 0.5\]'):
        tiny.split([0.8, 0.5])
    with pytest.raises(DataError, match='batch_size=0'):
        D.BatchLoader(tiny, 0)
    with pytest.raises(DataError, match='n=0'):
        D.SyntheticDataset(SCENE, PRE, seed=0, n=0)
