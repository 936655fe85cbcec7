"""Evaluate: records for every subset x budget, comparisons, JSON via the CLI, errors."""
import dataclasses
import json
import re

import pytest
import torch

from sentryfuse_ros import cli
from sentryfuse_ros.core.errors import CheckpointError, ConfigError
from sentryfuse_ros.core.eval.evaluate import RECORD_KEYS, evaluate, format_table, interleaved_latency_ms
from sentryfuse_ros.core.pruning.gate import modality_subsets
from sentryfuse_ros.core.model.config import ModelConfig
from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.data.scenes import SceneConfig
from sentryfuse_ros.core.training.train import DataConfig, TrainConfig, TrainFileConfig, train

TINY = TrainFileConfig(
    model=ModelConfig(modalities=('camera', 'audio'), dim=16, depth=2, num_heads=4, num_kv_heads=2, ffn_dim=32,
                      ffn_block=8, num_fusion_tokens=2, n_fft=128, hop=128, n_mels=8),
    preprocess=PreprocessConfig(image_size=16, bev_size=16, audio_samples=2048),
    data=DataConfig(scene=SceneConfig(image_size=32, lidar_points=256, audio_duration_s=0.3), train_size=48,
                    val_size=16, seed=0),
    train=TrainConfig(steps=12, batch_size=8, warmup_steps=2, checkpoint_every=100, eval_batch=16))


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('eval')
    quiet = dict(progress=False, log=lambda s: None)
    train(TINY, root / 'sentry.pt', **quiet)
    dense = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, attention='dense'))
    train(dense, root / 'dense.pt', **quiet)
    return root / 'sentry.pt', root / 'dense.pt'


def test_cli_evaluate_writes_every_subset_and_budget(checkpoints, tmp_path, capsys):
    sentry, dense = checkpoints
    out = tmp_path / 'eval.json'
    assert cli.main(['evaluate', '--checkpoint', str(sentry), '--seed', '5', '--out', str(out), '--n', '18',
                     '--repeats', '1', '--dense-checkpoint', str(dense)]) == 0
    result = json.loads(out.read_text())
    records = result['records']
    subsets = modality_subsets(('camera', 'audio'))
    assert [(tuple(r['subset']), r['budget']) for r in records] == [(s, b) for s in subsets for b in (1.0, 0.7, 0.5)]
    for r in records:
        assert set(r) == set(RECORD_KEYS) and r['n'] == 18
        assert 0.0 <= r['accuracy'] <= 1.0 and r['gflops'] > 0 and r['latency_ms'] > 0 and r['peak_mem_mb'] > 0
    full = [r for r in records if r['subset'] == ['camera', 'audio']]
    assert full[0]['gflops'] > full[1]['gflops'] > full[2]['gflops']  # budgets really cut compute
    assert full[0]['params'] > full[2]['params']
    d = result['dense_vs_sliced']
    assert [r['budget'] for r in d['sliced']] == [1.0, 0.7, 0.5]
    assert d['sliced'][0]['params_ratio'] == 1.0 and d['sliced'][2]['params_ratio'] < 1.0
    assert all(r['latency_ratio'] > 0 and r['peak_mem_ratio'] > 0 for r in d['sliced'])
    s = result['subnetwork_times']
    assert s['builds'] == 9 and s['build_ms_median'] > 0 and s['switch_ms_median'] < s['build_ms_median']
    assert s['cache']['hits'] >= 200
    a = result['dense_attention']
    assert a['dense_source'] == str(dense) and len(a['rows']) == 3
    for row in a['rows']:  # GQA with 2 KV heads instead of 4 costs fewer FLOPs than dense MHA
        assert row['gflops_ratio'] < 1.0 and 0.0 <= row['dense_accuracy'] <= 1.0
        assert row['sentry_params'] < row['dense_params']
    table = capsys.readouterr().out
    assert 'camera+audio' in table and 'SentryAttend vs dense attention' in table and f'wrote {out}' in table


def test_same_seed_same_records_without_dense_twin(checkpoints):
    sentry, _ = checkpoints
    a = evaluate(sentry, seed=9, n=12, latency_repeats=1, budgets=(1.0, 0.5))
    b = evaluate(sentry, seed=9, n=12, latency_repeats=1, budgets=(1.0, 0.5))
    keep = ('subset', 'budget', 'accuracy', 'gflops', 'params')
    assert [{k: r[k] for k in keep} for r in a['records']] == [{k: r[k] for k in keep} for r in b['records']]
    assert a['dense_attention']['dense_source'].startswith('untrained twin')
    assert 'dense_accuracy' not in a['dense_attention']['rows'][0]
    assert 'untrained twin' in format_table(a)


def test_interleaved_latency_names_every_model():
    lin = torch.nn.Linear(4, 4)

    class M(torch.nn.Module):
        def forward(self, inputs):
            return lin(inputs['x'])
    lat = interleaved_latency_ms({'a': M(), 'b': M()}, {'x': torch.zeros(1, 4)}, repeats=3, warmup=1)
    assert set(lat) == {'a', 'b'} and all(v > 0 for v in lat.values())


def test_errors(checkpoints, tmp_path, capsys):
    sentry, dense = checkpoints
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nope\.pt' does not exist"):
        evaluate(tmp_path / 'nope.pt', seed=5, n=4)
    with pytest.raises(ConfigError, match=r'--seed=1: .* dataset seeds \[0, 1\]; expected another seed'):
        evaluate(sentry, seed=1, n=4)
    with pytest.raises(ConfigError, match=r'--n=0: expected a positive number'):
        evaluate(sentry, seed=5, n=0)
    with pytest.raises(CheckpointError, match=r'expected the dense-attention twin .* got attention=.sentry.'):
        evaluate(sentry, seed=5, n=4, latency_repeats=1, dense_checkpoint=sentry)
    assert cli.main(['evaluate', '--checkpoint', str(tmp_path / 'nope.pt'), '--seed', '5',
                     '--out', str(tmp_path / 'x.json')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    # the budgets are checked where they enter, the flag, before any model is built
    assert cli.main(['evaluate', '--checkpoint', str(sentry), '--seed', '5', '--budgets', '1.0', '1.5',
                     '--out', str(tmp_path / 'x.json')]) == 2
    assert re.search(r'--budgets=\(1.0, 1.5\): expected one or more budgets in \(0, 1\]', capsys.readouterr().err)
    assert not (tmp_path / 'x.json').exists()


def test_checkpoint_with_all_nan_weights_makes_evaluate_fail_with_a_message(checkpoints, tmp_path, capsys):
    # old code: rc 0 and a table of chance accuracies from NaN logits
    from sentryfuse_checkpoint import nan_checkpoint
    bad = nan_checkpoint(checkpoints[0], tmp_path / 'nan.pt', 'weights')
    out = tmp_path / 'x.json'
    assert cli.main(['evaluate', '--checkpoint', str(bad), '--seed', '5', '--out', str(out), '--n', '4',
                     '--repeats', '1']) == 2
    assert re.search(r"sentryfuse evaluate: error: checkpoint '.*nan.pt': weights must be finite, but \d+ tensors "
                     r'hold NaN/inf values', capsys.readouterr().err)
    assert not out.exists()
