"""AV-MNIST from the real MNIST/FSDD files: speaker split, disjoint images, label-consistent pairs."""
import gzip
import wave

import numpy as np
import pytest
import torch

from sentryfuse_ros.core.data import avmnist as av
from sentryfuse_ros.core.errors import DataError
from sentryfuse_ros.core.data.preprocess import PreprocessConfig, preprocess_audio, preprocess_camera

PRE = PreprocessConfig(image_size=16, audio_samples=4096)


@pytest.fixture
def avmnist_test(shared_data):
    return av.load_avmnist(shared_data, 'test', seed=0, pre_cfg=PRE)


def test_idx_and_wav_readers(shared_data):
    images = av.read_idx(shared_data / 'mnist' / 't10k-images-idx3-ubyte.gz', 'images')
    labels = av.read_idx(shared_data / 'mnist' / 't10k-labels-idx1-ubyte.gz', 'labels')
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and labels.shape == (10000,)
    assert sorted(np.unique(labels).tolist()) == list(range(10)) and images.max() == 255
    pcm, rate = av.read_wav(shared_data / 'fsdd' / 'recordings' / '0_jackson_0.wav')
    assert rate == 8000 and pcm.dtype == np.float32 and pcm.ndim == 1 and 0 < np.abs(pcm).max() <= 1


def test_speaker_split_disjoint(shared_data):
    for seed in range(4):
        split = av.split_speakers(shared_data, seed)
        assert [len(split[s]) for s in av.SPLITS] == [4, 1, 1]
        assert len(set(split['train']) | set(split['val']) | set(split['test'])) == 6
    assert av.split_speakers(shared_data, 0) == av.split_speakers(shared_data, 0)


def test_mnist_split_disjoint_and_complete():
    parts = av.mnist_split(10000, seed=3)
    ids = np.concatenate([parts[s] for s in av.SPLITS])
    assert len(ids) == 10000 and len(np.unique(ids)) == 10000
    assert len(parts['train']) == 7000


def test_test_split_pairs_match_labels(shared_data, avmnist_test):
    ds = avmnist_test
    assert ds.modalities == ('camera', 'audio') and len(ds) == 500 and ds.class_names == av.DIGIT_NAMES
    assert ds.inputs['camera'].shape == (500, 3, 16, 16) and ds.inputs['audio'].shape == (500, 4096)
    assert torch.bincount(ds.labels).tolist() == [50] * 10
    # every audio row is a clip of the unseen test speaker with that row's digit
    speaker = av.split_speakers(shared_data, 0)['test'][0]
    clips = [c for c in av.fsdd_index(shared_data / 'fsdd' / 'recordings') if c[1] == speaker]
    ref = {preprocess_audio(*av.read_wav(p), PRE).tobytes(): d for d, _, _, p in clips}
    assert [ref[row.numpy().tobytes()] for row in ds.inputs['audio']] == ds.labels.tolist()
    # every camera row is an image of that digit from the test part of MNIST, none reused
    images = av.read_idx(shared_data / 'mnist' / 't10k-images-idx3-ubyte.gz', 'images')
    digits = av.read_idx(shared_data / 'mnist' / 't10k-labels-idx1-ubyte.gz', 'labels')
    test_ids = av.mnist_split(len(images), 0)['test']
    lookup = {preprocess_camera(np.repeat(images[i][:, :, None], 3, 2), PRE).tobytes(): i for i in test_ids}
    found = [lookup[row.numpy().tobytes()] for row in ds.inputs['camera']]
    assert len(set(found)) == 500 and digits[found].tolist() == ds.labels.tolist()


def test_deterministic_and_n(shared_data, avmnist_test):
    a = av.load_avmnist(shared_data, 'test', seed=0, pre_cfg=PRE, n=40)
    assert torch.equal(a.inputs['camera'], avmnist_test.inputs['camera'][:40])
    assert torch.equal(a.labels, avmnist_test.labels[:40])
    more = av.load_avmnist(shared_data, 'val', seed=1, pre_cfg=PRE, n=600)  # past the 500 clips: fresh images
    assert len(more) == 600 and torch.equal(more.inputs['audio'][500:], more.inputs['audio'][:100])
    assert not torch.equal(more.inputs['camera'][500:], more.inputs['camera'][:100])


def _write_idx(path, magic, dims, data):
    header = magic.to_bytes(4, 'big') + b''.join(d.to_bytes(4, 'big') for d in dims)
    with gzip.open(path, 'wb') as f:
        f.write(header + bytes(data))


def test_errors(tmp_path):
    with pytest.raises(DataError, match='nowhere'):
        av.load_avmnist(tmp_path / 'nowhere', 'test', 0, PRE)
    with pytest.raises(DataError, match="split='dev'"):
        av.load_avmnist(tmp_path, 'dev', 0, PRE)
    with pytest.raises(DataError, match='mnist'):
        av.load_avmnist(tmp_path, 'test', 0, PRE)
    _write_idx(tmp_path / 'bad.gz', 2049, (2, 2, 2), [0] * 8)  # a labels magic where images are expected
    with pytest.raises(DataError, match=r'bad.gz.*magic number 2049: expected 2051'):
        av.read_idx(tmp_path / 'bad.gz', 'images')
    _write_idx(tmp_path / 'short.gz', 0x0803, (2, 2, 2), [0] * 5)
    with pytest.raises(DataError, match='short.gz.*holds 5 data bytes: expected 8'):
        av.read_idx(tmp_path / 'short.gz', 'images')
    (tmp_path / 'plain.gz').write_bytes(b'not gzip')
    with pytest.raises(DataError, match='plain.gz.*gzip'):
        av.read_idx(tmp_path / 'plain.gz', 'labels')
    with wave.open(str(tmp_path / 'u8.wav'), 'wb') as w:
        w.setnchannels(1), w.setsampwidth(1), w.setframerate(8000), w.writeframes(bytes(10))
    with pytest.raises(DataError, match='u8.wav.*sample width 1'):
        av.read_wav(tmp_path / 'u8.wav')
    rec = tmp_path / 'rec'
    rec.mkdir()
    (rec / 'hello.wav').write_bytes(b'')
    with pytest.raises(DataError, match="'hello.wav'"):
        av.fsdd_index(rec)
    with pytest.raises(DataError, match=r"speakers \['a', 'b'\]"):
        av.speaker_split(['a', 'b'], 0)
