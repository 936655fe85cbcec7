"""Training: a tiny run writes a checkpoint load_sentryfuse reloads exactly; resume; config errors."""
import dataclasses
import io
import pathlib

import pytest
import torch
import yaml

from sentryfuse_ros import cli
from sentryfuse_ros.core.pruning.checkpoint import save_checkpoint
from sentryfuse_ros.core.config import to_dict
from sentryfuse_ros.core.errors import CheckpointError, ConfigError
from sentryfuse_ros.core.pruning.gate import modality_subsets

ROOT_CONFIG = pathlib.Path(__file__).resolve().parents[3] / "config" / "train_sim.yaml"
from sentryfuse_ros.core.model.config import ModelConfig
from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.data.scenes import SceneConfig
from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
from sentryfuse_ros.core.training.state import state_path
from sentryfuse_ros.core.training.train import (DataConfig, Progress, TrainConfig, TrainFileConfig, TrainingRun,
                                                load_train_config, train, validate)

TINY = TrainFileConfig(
    model=ModelConfig(dim=16, depth=2, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=8, num_fusion_tokens=2,
                      image_patch=8, bev_patch=8, n_fft=128, hop=128, n_mels=8, audio_patch_frames=4),
    preprocess=PreprocessConfig(image_size=16, bev_size=16, audio_samples=2048),
    data=DataConfig(scene=SceneConfig(image_size=32, lidar_points=256, audio_duration_s=0.3), train_size=48,
                    val_size=24, seed=0),
    train=TrainConfig(steps=30, batch_size=8, warmup_steps=5, checkpoint_every=10, eval_batch=16))


def _write_yaml(path, cfg=TINY, **edits):
    data = to_dict(cfg)
    for dotted, value in edits.items():
        node = data
        *parents, leaf = dotted.split('.')
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.slow
def test_cli_train_writes_a_checkpoint_that_reloads_identically(tmp_path):
    config = _write_yaml(tmp_path / 'tiny.yaml')
    out = tmp_path / 'tiny.pt'
    assert cli.main(['train', '--config', str(config), '--out', str(out), '--no-progress']) == 0
    model, gate, meta = load_sentryfuse(out)
    t = meta['training']
    assert t['steps'] == 30 and t['seed'] == 0 and t['command'].startswith('sentryfuse train --config')
    assert t['torch_version'] == str(torch.__version__) and t['train_wall_time_s'] > 0
    assert meta['class_names'] == list(model.config.class_names) and len(meta['class_names']) == 6
    assert set(t['val_accuracy']) == {'1.00', '0.50'}
    assert set(t['val_accuracy']['1.00']) == {'+'.join(s) for s in modality_subsets(model.modalities)}
    assert not state_path(out).exists()  # removed once the checkpoint is written
    # the same run in memory gives the same weights, gate table and outputs as the reloaded checkpoint
    result = train(load_train_config(config), tmp_path / 'again.pt', progress=False, log=lambda s: None)
    x = model.example_inputs(('camera', 'lidar', 'audio'), batch=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), result.model(x))
    for live in modality_subsets(model.modalities):
        for (a1, f1), (a2, f2) in zip(gate.scores(live), result.gate.scores(live)):
            assert torch.equal(a1, a2) and torch.equal(f1, f2)
    # the recorded validation accuracies are reproduced by the reloaded model + gate
    from sentryfuse_ros.core.training.batches import scene_datasets
    _, val = scene_datasets(TINY)
    assert validate(model, gate, val, batch=16) == t['val_accuracy']
    # the gate learned something from the teacher: scores are no longer all zero
    assert any(float(a.abs().sum() + f.abs().sum()) > 0 for a, f in gate.scores(model.modalities))


@pytest.mark.slow
@pytest.mark.parametrize('saliency', ['taylor', 'fisher'])
def test_resume_continues_from_the_saved_step(tmp_path, saliency):
    cfg = dataclasses.replace(TINY, train=dataclasses.replace(
        TINY.train, steps=20, gate=dataclasses.replace(TINY.train.gate, saliency=saliency, prune_start_frac=0.2)))
    quiet = dict(progress=False, log=lambda s: None)
    whole = train(cfg, tmp_path / 'whole.pt', **quiet)
    logs = []
    part = TrainingRun(cfg, tmp_path / 'part.pt', progress=False, log=logs.append)
    assert part.advance(10) == 10 and not (tmp_path / 'part.pt').exists()
    assert any('stopped after step 10' in line for line in logs)
    assert state_path(tmp_path / 'part.pt').is_file()
    resumed = train(cfg, tmp_path / 'part.pt', resume=True, progress=False, log=logs.append)
    assert any('resuming from' in line and 'at step 10/20' in line for line in logs)
    assert resumed.meta['steps'] == 20
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    for a, b in zip(whole.gate.parameters(), resumed.gate.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(whole.teacher.updates, resumed.teacher.updates)


def test_resume_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"--resume: no training state .*none\.train_state\.pt"):
        train(TINY, tmp_path / 'none.pt', resume=True, progress=False, log=lambda s: None)
    TrainingRun(TINY, tmp_path / 'x.pt', progress=False, log=lambda s: None).advance(10)
    other = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, lr=0.01))
    with pytest.raises(ConfigError, match=r'made with another config \(train\.lr: saved 0\.002, now 0\.01\)'):
        train(other, tmp_path / 'x.pt', resume=True, progress=False, log=lambda s: None)


@pytest.mark.parametrize('edits, match', [
    ({'train.learning_rate': 0.1}, r"train: unknown key\(s\) \['learning_rate'\]"),
    ({'train.gate.saliency': 'hessian'}, r"saliency='hessian': expected one of \('taylor', 'fisher'\)"),
    ({'data.train_size': 0}, r'train_size=0: expected a positive int'),
    ({'train.curriculum.full_p': 2.0}, r'full_p=2\.0'),
])
def test_bad_yaml_is_rejected(tmp_path, edits, match):
    path = _write_yaml(tmp_path / 'bad.yaml', **edits)
    with pytest.raises(ConfigError, match=match):
        load_train_config(path)


def test_cli_reports_errors(tmp_path, capsys):
    path = _write_yaml(tmp_path / 'bad.yaml', **{'model.widht': 3})
    assert cli.main(['train', '--config', str(path), '--out', str(tmp_path / 'o.pt')]) == 2
    assert "model: unknown key(s) ['widht']" in capsys.readouterr().err
    good = _write_yaml(tmp_path / 'good.yaml')
    assert cli.main(['train', '--config', str(good), '--out', str(tmp_path / 'o.pt'), '--steps', '0']) == 2
    assert '--steps=0: expected a positive int' in capsys.readouterr().err


def test_load_sentryfuse_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint '.*missing\.pt' does not exist"):
        load_sentryfuse(tmp_path / 'missing.pt')
    from sentryfuse_ros.core.model.backbone import SentryFuseModel
    from sentryfuse_ros.core.model.config import SentryFuseConfig
    model = SentryFuseModel(SentryFuseConfig(model=TINY.model, preprocess=TINY.preprocess, class_names=('a', 'b')))
    save_checkpoint(tmp_path / 'nogate.pt', model, extra={})
    with pytest.raises(CheckpointError, match='has no SentryGate table'):
        load_sentryfuse(tmp_path / 'nogate.pt')
    save_checkpoint(tmp_path / 'badgate.pt', model, extra={'gate': {'attn.0': torch.zeros(7, 2)}})
    with pytest.raises(CheckpointError, match='gate table does not match the model'):
        load_sentryfuse(tmp_path / 'badgate.pt')


def test_progress_bar_lines():
    stream = io.StringIO()
    bar = Progress(20, stream=stream)
    for i in range(1, 21):
        bar.update(i, 0, 'loss 1.0')
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].startswith('[' + '#' * 24 + '] 20/20 loss 1.0')


def test_shipped_config_loads():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[3]
    for name in ('train_sim.yaml', 'train_sim_dense.yaml'):
        cfg = load_train_config(root / 'config' / name)
        assert cfg.data.scene.num_classes == 6 and cfg.train.steps >= 100
    dense = load_train_config(root / 'config' / 'train_sim_dense.yaml')
    sentry = load_train_config(root / 'config' / 'train_sim.yaml')
    assert dense.model.attention == 'dense' and sentry.model.attention == 'sentry'
    assert dataclasses.replace(dense, model=dataclasses.replace(dense.model, attention='sentry')) == sentry


def test_train_on_given_datasets_takes_their_class_names(tmp_path):
    from sentryfuse_ros.core.data.datasets import MultimodalTensors
    gen = torch.Generator().manual_seed(0)
    pre = TINY.preprocess

    def make(n):
        labels = torch.arange(n) % 3
        inputs = {'camera': torch.rand(n, 3, pre.image_size, pre.image_size, generator=gen) + labels.view(-1, 1, 1, 1),
                  'audio': torch.rand(n, pre.audio_samples, generator=gen) * 0.1}
        return MultimodalTensors(inputs, labels, ('low', 'mid', 'high'))
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, modalities=('camera', 'audio')),
                              train=dataclasses.replace(TINY.train, steps=6))
    result = train(cfg, tmp_path / 'given.pt', progress=False, log=lambda s: None, data=(make(24), make(12)))
    model, gate, meta = load_sentryfuse(tmp_path / 'given.pt')
    assert meta['class_names'] == ['low', 'mid', 'high'] and model.modalities == ('camera', 'audio')
    assert set(meta['training']['val_accuracy']['1.00']) == {'camera', 'audio', 'camera+audio'}
    assert result.meta['val_size'] == 12


@pytest.mark.parametrize('backbone', ['mid', 'bottleneck'])
def test_per_modality_backbones_train_through_modality_dropout(tmp_path, backbone):
    """Blocks of a dropped modality are skipped: the saliency teacher must accept their missing gradients."""
    import dataclasses
    from sentryfuse_ros.core.training import train as tr
    cfg = tr.load_train_config(ROOT_CONFIG)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, backbone=backbone, dim=32, ffn_dim=64, depth=3, mid_layers=1),
        data=dataclasses.replace(cfg.data, train_size=48, val_size=12),
        train=dataclasses.replace(
            cfg.train, steps=8, batch_size=8, checkpoint_every=1000, eval_batch=12,
            curriculum=dataclasses.replace(cfg.train.curriculum, phase1_frac=0.0, phase2_frac=0.0),
            gate=dataclasses.replace(cfg.train.gate, prune_start_frac=0.0)))
    result = tr.train(cfg, tmp_path / 'm.pt', progress=False)
    assert (tmp_path / 'm.pt').is_file()
    # every single-modality subset was trained and its teacher row is finite
    for live in (('camera',), ('lidar',), ('audio',)):
        rows = result.teacher.teacher(live)
        if rows is not None:
            assert all(torch.isfinite(a).all() and torch.isfinite(f).all() for a, f in rows)


@pytest.mark.slow
def test_training_is_bit_reproducible_across_processes(tmp_path):
    """Issue 10: the same command, seed and thread count give bit-identical weights, gate and teacher in two
    separate processes, whether the data came from a cache or not; the metadata records seed, threads, device."""
    import subprocess
    import sys
    config = _write_yaml(tmp_path / 'tiny.yaml', **{'train.steps': 12, 'train.checkpoint_every': 100})
    cached = _write_yaml(tmp_path / 'cached.yaml', **{'train.steps': 12, 'train.checkpoint_every': 100,
                                                       'data.cache_dir': str(tmp_path / 'cache')})
    outs = []
    for i, cfg in enumerate((config, config, cached, cached)):  # cached: renders, then reads the cache
        out = tmp_path / f'run{i}.pt'
        subprocess.run([sys.executable, '-m', 'sentryfuse_ros.cli', 'train', '--config', str(cfg), '--out', str(out),
                        '--threads', '1', '--no-progress'], check=True, capture_output=True)
        outs.append(torch.load(out, weights_only=True))

    def blob(ck):
        parts = [ck['state_dict'], ck['gate'], ck['saliency_ema']]
        return b''.join(k.encode() + d[k].numpy().tobytes() for d in parts for k in sorted(d))
    assert all(blob(o) == blob(outs[0]) for o in outs[1:])
    t = outs[0]['training']
    assert (t['seed'], t['torch_threads'], t['device']) == (0, 1, 'cpu')


def test_sandwich_recipe_trains_and_differs_from_pruned_steps(tmp_path):
    """Issue 10: the sandwich rule + in-place distillation recipe runs end to end and is a different training."""
    import dataclasses as dc
    base = dc.replace(TINY, train=dc.replace(TINY.train, steps=12, checkpoint_every=100))
    sand = dc.replace(base, train=dc.replace(base.train, gate=dc.replace(base.train.gate, recipe='sandwich',
                                                                          prune_start_frac=0.5)))
    a = train(base, tmp_path / 'a.pt', progress=False, log=lambda s: None)
    b = train(sand, tmp_path / 'b.pt', progress=False, log=lambda s: None)
    assert b.meta['train_config']['train']['gate']['recipe'] == 'sandwich'
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.isfinite(v).all() for v in wb.values())
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ConfigError, match="recipe="):
        dc.replace(base.train.gate, recipe='slimmable')


def test_input_norm_is_measured_on_the_training_set_and_stored_in_the_checkpoint(tmp_path):
    from sentryfuse_ros.core.errors import DataError
    from sentryfuse_ros.core.training.inputnorm import fit_input_norm
    from sentryfuse_ros.core.training.batches import scene_datasets
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, input_norm=True),
                              train=dataclasses.replace(TINY.train, steps=4))
    train(cfg, tmp_path / 'n.pt', progress=False, log=lambda s: None)
    model, _, _ = load_sentryfuse(tmp_path / 'n.pt')
    train_set, _ = scene_datasets(cfg)
    for m in ('camera', 'lidar'):
        x = train_set.inputs[m].double()                       # (N, 3, H, W)
        tok = model.tokenizers[m]
        assert torch.allclose(tok.in_mean.double(), x.mean((0, 2, 3)), atol=1e-5)
        assert torch.allclose(tok.in_std.double(), x.std((0, 2, 3), correction=0), atol=1e-5)
    assert not hasattr(model.tokenizers['audio'], 'in_mean')  # the log-mel has its own scale
    with pytest.raises(DataError, match='no lidar samples'):
        fit_input_norm(model, [{'camera': train_set.inputs['camera'][:4]}])
