"""The bag-dataset format: writer -> memory-mapped reader round trip, gathers across shards,
modality sets, bag selection, preprocessing checks and refusals of incomplete or foreign folders."""
import json
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from bag_training_fixtures import write_dataset  # noqa: E402

from sentryfuse_ros.core.data.bagdataset import (BagDataset, ShardWriter, manifest_hash,  # noqa: E402
                                                 preprocess_difference, preprocess_hash, sample_shapes)
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig  # noqa: E402
from sentryfuse_ros.core.errors import DataError  # noqa: E402

ALL = ('camera', 'lidar', 'audio')


def test_round_trip_across_shards(tmp_path):
    path = write_dataset(tmp_path / 'ds', [[ALL] * 3 + [('camera', 'audio')] * 2, [ALL] * 4])
    ds = BagDataset(path)
    assert len(ds) == 9 and ds.bag_names == ['bag0', 'bag1']
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 1, 2, 0, 1]
    assert ds.present[3].tolist() == [True, False, True]
    # a gather in any order, across shards, equals the rows read one by one
    idx = np.array([8, 0, 4, 4])
    got = ds.inputs(idx, ('camera', 'lidar'))
    assert got['camera'].shape == (4, 3, 32, 32) and got['camera'].dtype == np.float32
    for row, i in enumerate(idx):
        assert np.array_equal(got['camera'][row], ds.inputs(np.array([i]), ('camera',))['camera'][0])
    assert not got['lidar'][2:4].any() and got['lidar'][1].any()  # sample 4 has no lidar: stored as zeros, flagged absent
    assert ds.bags_index(['bag1']).tolist() == [5, 6, 7, 8]
    sets = ds.modality_sets()
    assert {k: v.tolist() for k, v in sets.items()} == {('camera', 'audio'): [3, 4], ALL: [0, 1, 2, 5, 6, 7, 8]}
    assert ds.hash == manifest_hash(path) and len(ds.hash) == 16


def test_stored_values_are_float16_of_the_inputs(tmp_path):
    pre = PreprocessConfig()
    writer = ShardWriter(tmp_path / 's', MODALITIES, sample_shapes(pre))
    x = np.random.default_rng(0).normal(0, 1, (3, 32, 32)).astype(np.float32)
    writer.append({'camera': x}, 0.5, 'a')
    writer.close()
    stored = np.fromfile(tmp_path / 's' / 'camera.f16', '<f2').reshape(3, 32, 32)
    assert np.array_equal(stored, x.astype(np.float16))
    assert json.loads((tmp_path / 's' / 'labels.json').read_text()) == ['a']
    assert np.fromfile(tmp_path / 's' / 'present.u8', np.uint8).tolist() == [1, 0, 0]


def test_writer_rejects_a_shape_that_is_not_the_preprocessing(tmp_path):
    writer = ShardWriter(tmp_path / 's', MODALITIES, sample_shapes(PreprocessConfig()))
    with pytest.raises(DataError, match=r'camera input shape=\(3, 64, 64\): expected \(3, 32, 32\)'):
        writer.append({'camera': np.zeros((3, 64, 64), np.float32)}, 0.0, 'a')
    writer.close()


def test_preprocess_check_names_every_difference(tmp_path):
    ds = BagDataset(write_dataset(tmp_path / 'ds', [[ALL] * 2]))
    ds.check_preprocess(PreprocessConfig())  # equal: no error
    other = PreprocessConfig(image_size=64, bev_range_m=20.0)
    assert preprocess_hash(other) != ds.manifest['preprocess_hash']
    with pytest.raises(DataError, match=r'preprocessed differently from the model: preprocess.bev_range_m: dataset '
                                        r'16.0, model 20.0; preprocess.image_size: dataset 32, model 64'):
        ds.check_preprocess(other)
    assert preprocess_difference(ds.preprocess, PreprocessConfig()) == []


def test_refuses_partial_missing_and_foreign_folders(tmp_path):
    (tmp_path / 'ds.partial').mkdir()
    with pytest.raises(DataError, match=r'incomplete build \(.partial\)'):
        BagDataset(tmp_path / 'ds')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match=r'has no manifest.json'):
        BagDataset(tmp_path / 'empty')
    path = write_dataset(tmp_path / 'x', [[ALL]])
    m = json.loads((path / 'manifest.json').read_text())
    m['bags'][0]['samples'] = 5
    (path / 'manifest.json').write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"shard 'shard-0000' camera.f16 has \d+ bytes: expected \d+ for the 5 samples"):
        BagDataset(path)
    m['format'] = 'other'
    (path / 'manifest.json').write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"format 'other' version 1: expected 'sentryfuse-bag-dataset'"):
        BagDataset(path)


def test_shapes_follow_non_square_presets():
    pre = PreprocessConfig(image_size=16, image_width=48, bev_size=16, bev_width=24, audio_samples=4000)
    assert sample_shapes(pre) == {'camera': (3, 16, 48), 'lidar': (3, 16, 24), 'audio': (4000,)}
