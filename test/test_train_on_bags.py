"""End to end, through the CLI as a user runs it: `sentryfuse simulate-bag` (two storages, one with a
sensor dropout, ground truth on the label topic) -> `sentryfuse dataset` -> `sentryfuse train --data`
for a few steps (1 process, and 2 processes under torchrun/gloo) -> `sentryfuse replay --checkpoint` on
a held-out bag -> its report. And `train` refusing a dataset preprocessed for another model."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bag_training_fixtures import tiny_config, write_config  # noqa: E402

from sentryfuse_ros import cli  # noqa: E402
from sentryfuse_ros.core.data.bagdataset import BagDataset  # noqa: E402
from sentryfuse_ros.core.data.preprocess import PreprocessConfig  # noqa: E402
from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse  # noqa: E402

pytestmark = pytest.mark.slow  # bags -> dataset -> training runs, and torchrun with two processes

SIM6 = 'person,cyclist,car,dog,delivery_robot,drone'


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """Three simulated bags (dropout mcap, plain sqlite3, held-out mcap), a dataset of the first two, a config."""
    tmp = tmp_path_factory.mktemp('e2e')
    (tmp / 'drop.yaml').write_text('events:\n  - {t: 3.0, action: drop, modality: lidar}\n'
                                   '  - {t: 6.0, action: restore, modality: lidar}\n')
    for name, storage, seed, scenario in (('drop_mcap', 'mcap', 0, str(tmp / 'drop.yaml')),
                                          ('plain_sqlite', 'sqlite3', 1, ''), ('heldout', 'mcap', 2, '')):
        assert cli.main(['simulate-bag', str(tmp / name), '--storage', storage, '--duration', '8', '--seed',
                         str(seed), '--scenario', scenario, '--scene-duration', '2', '--no-progress']) == 0
    assert cli.main(['dataset', str(tmp / 'drop_mcap'), str(tmp / 'plain_sqlite'), '--out', str(tmp / 'ds'),
                     '--classes', SIM6, '--no-progress']) == 0
    config = write_config(tmp / 'tiny.yaml', tiny_config(steps=6, batch_size=8))
    return tmp, config


def test_dataset_train_replay(work, capsys):
    tmp, config = work
    ds = BagDataset(tmp / 'ds')
    assert ds.bag_names == ['drop_mcap', 'plain_sqlite']
    assert ds.manifest['bags'][0]['modality_sets'].get('camera+audio', 0) > 0  # the dropout is in the data
    assert cli.main(['train', '--config', str(config), '--data', str(tmp / 'ds'), '--val-bags', 'plain_sqlite',
                     '--out', str(tmp / 'model.pt'), '--threads', '1', '--no-progress']) == 0
    err = capsys.readouterr().err
    assert "val samples from bags ['plain_sqlite']" in err and 'val accuracy @ budget 1.00' in err
    model, _gate, meta = load_sentryfuse(tmp / 'model.pt')
    info = meta['training']['dataset']
    assert info['manifest_hash'] == ds.hash and info['val_bags'] == ['plain_sqlite']
    assert info['train_samples'] == int((ds.bag_index == 0).sum())
    assert model.config.class_names == tuple(SIM6.split(','))
    assert '--data' in meta['training']['command']
    assert 'all' in meta['training']['val_accuracy']['recorded']
    # the trained model, replayed on a bag it never saw, with the same tools as the shipped one
    assert cli.main(['replay', str(tmp / 'heldout'), '--checkpoint', str(tmp / 'model.pt'), '--out',
                     str(tmp / 'report'), '--no-plots', '--no-progress']) == 0
    metrics = json.loads((tmp / 'report' / 'metrics.json').read_text())
    assert metrics['run']['inferences'] >= 70
    assert metrics['accuracy']['overall']['accuracy'] is not None
    assert (tmp / 'report' / 'report.md').is_file()


def test_train_refuses_a_dataset_of_other_preprocessing(work, capsys):
    tmp, _ = work
    import dataclasses
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, preprocess=PreprocessConfig(image_size=64))
    other = write_config(tmp / 'other.yaml', cfg)
    assert cli.main(['train', '--config', str(other), '--data', str(tmp / 'ds'), '--out',
                     str(tmp / 'x.pt'), '--no-progress']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('sentryfuse train: error: dataset') and '\n' not in err
    assert 'preprocess.image_size: dataset 32, model 64' in err
    assert not (tmp / 'x.pt').exists()


def test_torchrun_two_processes(work):
    tmp, config = work
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
         '-m', 'sentryfuse_ros.cli', 'train', '--config', str(config), '--data', str(tmp / 'ds'),
         '--out', str(tmp / 'ddp.pt'), '--threads', '1', '--no-progress'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # torchrun and its workers: one process group
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert err.count('val accuracy @ budget 1.00') == 1  # logs from rank 0 only
    _model, _gate, meta = load_sentryfuse(tmp / 'ddp.pt')
    assert meta['training']['dataset']['world_size'] == 2
    assert meta['training']['command'].startswith('torchrun --nproc_per_node 2 -m sentryfuse_ros.cli train')
    assert torch.load(tmp / 'ddp.pt', weights_only=True)['format'] == 'sentryfuse-checkpoint'
