"""Batches from a bag dataset: split by bag, every sample once per epoch over the ranks, one
modality group and one batch size per step on every rank, the live set, and validation."""
import pathlib
import sys
from collections import Counter

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from bag_training_fixtures import write_dataset  # noqa: E402

from sentryfuse_ros.core.data.bagdataset import BagDataset  # noqa: E402
from sentryfuse_ros.core.errors import ConfigError, DataError  # noqa: E402
from sentryfuse_ros.core.training.bagsource import BagBatches, default_val_bags  # noqa: E402

ALL = ('camera', 'lidar', 'audio')


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    # bag0: 12 full + 8 camera+audio (a lidar dropout), bag1: 10 full, bag2 (validation): 6 full + 3 lidar only
    path = write_dataset(tmp_path_factory.mktemp('bs') / 'ds',
                         [[ALL] * 12 + [('camera', 'audio')] * 8, [ALL] * 10, [ALL] * 6 + [('lidar',)] * 3])
    return BagDataset(path)


def test_validation_is_split_by_bag(dataset):
    src = BagBatches(dataset, ALL, ['bag2'], batch_size=4, seed=0)
    assert set(dataset.bag_index[src.val_index]) == {2}
    assert set(dataset.bag_index[src.train_index]) == {0, 1}
    assert len(src.train_index) == 30 and len(src.val_index) == 9
    assert default_val_bags(['a']) == [] and default_val_bags(['a', 'b', 'c']) == ['c']
    assert default_val_bags([str(i) for i in range(11)]) == ['9', '10']


@pytest.mark.parametrize('world, batch', [(1, 4), (2, 4), (2, 6), (3, 6)])
def test_every_sample_once_per_epoch_over_the_ranks(dataset, world, batch):
    ranks = [BagBatches(dataset, ALL, ['bag2'], batch_size=batch, seed=3, rank=r, world_size=world)
             for r in range(world)]
    steps = ranks[0].steps_per_epoch
    assert all(r.steps_per_epoch == steps for r in ranks)
    for epoch in range(2):
        seen = Counter()
        for k in range(steps):
            parts = [r.indices(epoch * steps + k) for r in ranks]
            assert len({p[0] for p in parts}) == 1            # one modality group per step on all ranks
            assert len({len(p[1]) for p in parts}) == 1       # one batch size per step on all ranks
            seen.update(i for _, idx in parts for i in idx.tolist())
        assert set(seen) == set(ranks[0].train_index.tolist())
        # DistributedSampler pads a group to a multiple of the ranks: at most world-1 repeats per group
        assert sum(seen.values()) - len(seen) <= (world - 1) * len(ranks[0].groups)
        if world == 1 or all(len(i) % world == 0 for _, i in ranks[0].groups):
            assert set(seen.values()) == {1}
    # a new epoch is a new order
    assert [ranks[0].indices(k)[1].tolist() for k in range(steps)] != \
        [ranks[0].indices(steps + k)[1].tolist() for k in range(steps)]


def test_live_set_is_the_draw_within_the_group(dataset):
    src = BagBatches(dataset, ALL, ['bag2'], batch_size=4, seed=0)
    for step in range(src.steps_per_epoch):
        group, index = src.indices(step)
        live, inputs, labels = src.batch(step, ('lidar',), 'cpu')
        assert live == (('lidar',) if 'lidar' in group else group)
        assert tuple(inputs) == live and len(labels) == len(index)
        assert inputs[live[0]].shape[0] == len(index)
        assert labels.tolist() == dataset.labels[index].tolist()


def test_errors(dataset):
    with pytest.raises(ConfigError, match=r'train.batch_size=5: expected a multiple of the 2 processes'):
        BagBatches(dataset, ALL, [], batch_size=5, seed=0, world_size=2)
    with pytest.raises(DataError, match=r"bags \['nope'\] are not in dataset"):
        BagBatches(dataset, ALL, ['nope'], batch_size=4, seed=0)
    with pytest.raises(DataError, match=r'no training samples left'):
        BagBatches(dataset, ALL, ['bag0', 'bag1', 'bag2'], batch_size=4, seed=0)


def test_training_on_a_bag_source_resumes_bit_exactly(dataset, tmp_path):
    from bag_training_fixtures import tiny_config

    from sentryfuse_ros.core.training.train import TrainingRun, train
    torch.set_num_threads(1)
    cfg = tiny_config(steps=6, batch_size=8)
    source = lambda: BagBatches(dataset, ALL, ['bag2'], batch_size=8, seed=0)  # noqa: E731
    quiet = dict(progress=False, log=lambda s: None)
    full = train(cfg, tmp_path / 'full.pt', data=source(), **quiet)
    assert TrainingRun(cfg, tmp_path / 'part.pt', data=source(), **quiet).advance(3) == 3
    resumed = train(cfg, tmp_path / 'part.pt', data=source(), resume=True, **quiet)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.meta['dataset']['manifest_hash'] == dataset.hash
    assert set(resumed.meta['val_accuracy']) == {'1.00', '0.50', 'recorded'}
