import pytest
import torch

from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.pruning.checkpoint import load_checkpoint, save_checkpoint
from sentryfuse_ros.core.errors import CheckpointError
from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig, config_to_dict
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig
from sentryfuse_ros.core.pruning.prune import masks_to_gates, select_units, slice_model, unit_costs

torch.set_num_threads(1)
PRE = PreprocessConfig(image_size=16, bev_size=16, audio_samples=1024)


def tiny(backbone='bottleneck', dim=16):
    torch.manual_seed(0)
    return SentryFuseModel(SentryFuseConfig(
        model=ModelConfig(backbone=backbone, dim=dim, depth=3, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=8,
                          mid_layers=1, num_fusion_tokens=2, n_fft=128, hop=64, n_mels=8),
        preprocess=PRE, class_names=('car', 'dog', 'rain'))).eval()


@pytest.mark.parametrize('backbone', ['early', 'mid', 'bottleneck'])
def test_round_trip_same_outputs_and_extra(tmp_path, backbone):
    model = tiny(backbone)
    table = torch.rand(7, 5)
    path = tmp_path / 'sub' / 'model.pt'
    save_checkpoint(path, model, {'gate_table': table, 'meta': {'steps': 12, 'seed': 3}})
    loaded, extra = load_checkpoint(path, device='cpu')
    assert loaded.config == model.config and not loaded.training
    assert torch.equal(extra['gate_table'], table) and extra['meta'] == {'steps': 12, 'seed': 3}
    x = model.example_inputs(MODALITIES, batch=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), model(x))


def test_default_checkpoint_is_small(tmp_path):
    model = SentryFuseModel(SentryFuseConfig(class_names=('a', 'b', 'c', 'd', 'e', 'f')))
    save_checkpoint(tmp_path / 'm.pt', model, {})
    assert (tmp_path / 'm.pt').stat().st_size < 1.5 * 2 ** 20


def test_sliced_model_round_trips(tmp_path):
    model = tiny('mid')
    scores = [(torch.rand(g), torch.rand(nf)) for g, nf in model.unit_layout()]
    masks = select_units(scores, unit_costs(model, ('camera', 'lidar')), 0.5)
    sliced = slice_model(model, masks)
    save_checkpoint(tmp_path / 's.pt', sliced)
    loaded, _ = load_checkpoint(tmp_path / 's.pt')
    assert loaded.unit_layout() == sliced.unit_layout() and loaded.kept_units() == sliced.kept_units()
    x = model.example_inputs(('camera', 'lidar'), batch=2)
    assert torch.allclose(loaded(x), model(x, gates=masks_to_gates(masks)), atol=1e-5)


def test_missing_truncated_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"'.*nope.pt' does not exist"):
        load_checkpoint(tmp_path / 'nope.pt')
    path = tmp_path / 'm.pt'
    save_checkpoint(path, tiny(), {})
    data = path.read_bytes()
    (tmp_path / 'trunc.pt').write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"'.*trunc.pt' is corrupt or not a torch file"):
        load_checkpoint(tmp_path / 'trunc.pt')
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint at all' * 10)
    with pytest.raises(CheckpointError, match=r"'.*junk.pt' is corrupt or not a torch file"):
        load_checkpoint(tmp_path / 'junk.pt')


def _write(path, data):
    torch.save(data, path)
    return path


def test_wrong_marker_version_and_pickled_objects(tmp_path):
    model = tiny()
    good = {'format': 'sentryfuse-checkpoint', 'version': 1, 'config': config_to_dict(model.config),
            'state_dict': model.state_dict()}
    with pytest.raises(CheckpointError, match=r"has format marker 'other': expected 'sentryfuse-checkpoint'"):
        load_checkpoint(_write(tmp_path / 'a.pt', {**good, 'format': 'other'}))
    with pytest.raises(CheckpointError, match=r"has format marker 'Tensor'"):
        load_checkpoint(_write(tmp_path / 'b.pt', torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r'has version 7: expected 1'):
        load_checkpoint(_write(tmp_path / 'c.pt', {**good, 'version': 7}))
    with pytest.raises(CheckpointError, match=r'is corrupt or not a torch file'):  # weights_only refuses objects
        load_checkpoint(_write(tmp_path / 'd.pt', {**good, 'config': model.config}))


def test_invalid_config_and_mismatched_weights(tmp_path):
    model = tiny()
    cfg = config_to_dict(model.config)
    bad = {**cfg, 'model': {**cfg['model'], 'num_kv_heads': 3}}
    data = {'format': 'sentryfuse-checkpoint', 'version': 1, 'config': bad, 'state_dict': model.state_dict()}
    with pytest.raises(CheckpointError, match=r"'.*e.pt' has an invalid config: num_heads=4, num_kv_heads=3"):
        load_checkpoint(_write(tmp_path / 'e.pt', data))
    other = config_to_dict(tiny(dim=32).config)
    data = {**data, 'config': other}
    with pytest.raises(CheckpointError, match=r"'.*f.pt': state_dict does not match its config: .*size mismatch"):
        load_checkpoint(_write(tmp_path / 'f.pt', data))
    sd = dict(model.state_dict())
    sd.pop('head.bias')
    data = {**data, 'config': cfg, 'state_dict': sd}
    with pytest.raises(CheckpointError, match=r'state_dict does not match its config: .*Missing key.*head.bias'):
        load_checkpoint(_write(tmp_path / 'g.pt', data))


def test_reserved_extra_keys(tmp_path):
    with pytest.raises(CheckpointError, match=r"extra keys \['config'\] are reserved"):
        save_checkpoint(tmp_path / 'x.pt', tiny(), {'config': {}})


def test_checkpoint_with_all_nan_weights_is_refused_naming_the_tensors(tmp_path):
    model = tiny()
    data = {'format': 'sentryfuse-checkpoint', 'version': 1, 'config': config_to_dict(model.config),
            'state_dict': {k: torch.full_like(v, float('nan')) if v.is_floating_point() else v
                           for k, v in model.state_dict().items()}}
    n = sum(1 for v in model.state_dict().values() if v.is_floating_point())
    with pytest.raises(CheckpointError, match=rf"'.*nan.pt': weights must be finite, but {n} tensors hold "
                                              r'NaN/inf values: [\w.]+ \(\d+ of \d+\), .*, \.\.\.'):
        load_checkpoint(_write(tmp_path / 'nan.pt', data))
    sd = dict(model.state_dict())
    sd['head.bias'] = sd['head.bias'].clone()
    sd['head.bias'][1] = float('inf')
    with pytest.raises(CheckpointError, match=r'but 1 tensors hold NaN/inf values: head.bias \(1 of 3\)$'):
        load_checkpoint(_write(tmp_path / 'inf.pt', {**data, 'state_dict': sd}))


def test_checkpoint_whose_gate_table_is_nan_is_refused(tmp_path, checkpoint):
    from sentryfuse_checkpoint import nan_checkpoint
    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
    path = nan_checkpoint(checkpoint, tmp_path / 'nan_gate.pt', 'gate')
    with pytest.raises(CheckpointError, match=r"'.*nan_gate.pt': the SentryGate table must be finite, but \d+ "
                                              r'tensors hold NaN/inf values: inclusion \(\d+ of \d+\)'):
        load_sentryfuse(path)


def test_fp16_stored_checkpoint_scores_as_its_fp32_source(tmp_path, checkpoint):
    """The trained checkpoint stored as float16 is about half the size, loads into fp32 (or bf16 on request)
    and scores within 0.5 points of the fp32 file on every modality subset of fresh scenes."""
    from sentryfuse_ros.core.config import from_dict
    from sentryfuse_ros.core.data.datasets import SyntheticDataset
    from sentryfuse_ros.core.data.scenes import SceneConfig
    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
    from sentryfuse_ros.core.training.batches import validate
    model, gate, meta = load_sentryfuse(checkpoint)
    half = tmp_path / 'half.pt'
    save_checkpoint(half, model, {'gate': gate.state_dict(), **meta}, dtype=torch.float16)
    stored = torch.load(half, weights_only=True)['state_dict']
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert half.stat().st_size < 0.6 * checkpoint.stat().st_size
    model16, gate16, _ = load_sentryfuse(half)
    assert all(p.dtype == torch.float32 for p in model16.parameters())
    scene = from_dict(SceneConfig, meta['training']['train_config']['data']['scene'])
    data = SyntheticDataset(scene, model.config.preprocess, seed=7, n=200).subset(model.modalities)
    a = validate(model, gate, data, batch=100, budgets=(1.0,))['1.00']
    b = validate(model16, gate16, data, batch=100, budgets=(1.0,))['1.00']
    assert all(abs(a[k] - b[k]) <= 0.005 for k in a), (a, b)
    bf16, _ = load_checkpoint(half, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    x = {m: v[:4] for m, v in data.inputs.items()}
    assert torch.isfinite(bf16(x).float()).all()


def test_fp16_storage_refuses_weights_out_of_its_range(tmp_path):
    model = tiny()
    with torch.no_grad():
        model.head.bias[0] = 1e6  # float16 tops out at 65504
    with pytest.raises(CheckpointError, match=r"weights stored as torch.float16 must be finite, but 1 tensors hold "
                                              r'NaN/inf values: head.bias \(1 of 3\) \(out of its range\?\)'):
        save_checkpoint(tmp_path / 'x.pt', model, {}, dtype=torch.float16)
    with pytest.raises(CheckpointError, match=r'dtype=torch.int8: expected one of'):
        save_checkpoint(tmp_path / 'x.pt', model, {}, dtype=torch.int8)
    save_checkpoint(tmp_path / 'ok.pt', tiny(), {})
    with pytest.raises(CheckpointError, match=r'dtype=torch.float16: expected torch.float32 or torch.bfloat16'):
        load_checkpoint(tmp_path / 'ok.pt', dtype=torch.float16)
