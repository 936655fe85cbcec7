"""Data-parallel training (DDP, gloo on CPU) in 2 real processes: every sample once per epoch,
identical weights, teacher and gate on both ranks, and the same run as one process with the same
global batch (up to float summation order)."""
import pathlib
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from bag_training_fixtures import ddp_worker, write_dataset  # noqa: E402

from sentryfuse_ros.core.errors import ConfigError  # noqa: E402
from sentryfuse_ros.core.training.distributed import DistContext, init_distributed  # noqa: E402

pytestmark = pytest.mark.slow  # DDP: two training processes

ALL = ('camera', 'lidar', 'audio')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """(1-process, [rank 0, rank 1]) results of the same 8-step run on a 3-bag dataset."""
    tmp = tmp_path_factory.mktemp('ddp')
    # group sizes even, so DistributedSampler pads nothing and the 2-rank batches equal the 1-rank ones
    data = write_dataset(tmp / 'ds', [[ALL] * 12 + [('camera', 'audio')] * 8, [ALL] * 12, [ALL] * 6])
    mp.spawn(ddp_worker, args=(2, free_port(), str(data), str(tmp)), nprocs=2, join=True)
    ddp_worker(0, 1, free_port(), str(data), str(tmp))
    load = lambda name: torch.load(tmp / name, weights_only=True)  # noqa: E731
    return load('world1_rank0.pt'), [load('world2_rank0.pt'), load('world2_rank1.pt')], tmp


def test_every_sample_once_per_epoch(runs):
    _, ranks, _ = runs
    steps = ranks[0]['steps_per_epoch']
    assert steps == 4  # 24 full + 8 camera+audio training samples, global batch 8
    for epoch in range(2):
        taken = [i for r in ranks for batch in r['seen'][epoch * steps:(epoch + 1) * steps] for i in batch]
        assert sorted(taken) == sorted(ranks[0]['train_index'])
    for a, b in zip(*(r['seen'] for r in ranks)):
        assert not set(a) & set(b)  # the two ranks never share a sample within a step


def test_ranks_end_with_identical_weights_teacher_and_gate(runs):
    _, (r0, r1), tmp = runs
    for part in ('model', 'teacher', 'gate'):
        assert r0[part].keys() == r1[part].keys()
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), f'{part}.{k} differs between ranks'
    assert (tmp / 'model2.pt').is_file()  # rank 0 wrote the checkpoint


def test_two_processes_train_as_one_with_the_global_batch(runs):
    one_proc, (r0, r1), _ = runs
    for a, b, c in zip(one_proc['seen'], r0['seen'], r1['seen']):
        assert sorted(a) == sorted(b + c)  # the same global batch at every step
    # A key bias gets an exactly-zero gradient (softmax ignores a shift shared by all keys of a query),
    # so what it has is float noise, which Adam turns into steps of size ~lr: not comparable.
    keys = [k for k in one_proc['model'] if not k.endswith('attn.k.bias')]
    diff = max(float((one_proc['model'][k] - r0['model'][k]).abs().max()) for k in keys)
    assert diff < 1e-5, f'1-process and 2-process weights differ by {diff}'
    tdiff = max(float((one_proc['teacher'][k].float() - r0['teacher'][k].float()).abs().max())
                for k in one_proc['teacher'])
    assert tdiff < 1e-4


def test_init_errors():
    with pytest.raises(ConfigError, match=r'rank=2, world_size=2: expected 0 <= rank < world_size'):
        init_distributed(2, 2, 0, 'cpu')
    with pytest.raises(ConfigError, match=r"--device='mps': distributed training runs on cpu"):
        init_distributed(0, 2, 0, 'mps')
    assert DistContext(rank=0, world_size=2, local_rank=0, backend='gloo').is_main
