"""Zero-shot pruning criteria: each one on a tiny model where the right answer is known."""
import pytest
import torch
from torch import nn

from sentryfuse_ros.core.pruning import baselines as bl
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.errors import PruningError
from sentryfuse_ros.core.pruning.gate import ones_gates, read_saliency
from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig
from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.pruning.prune import slice_model, unit_costs

MODS = ('camera', 'lidar', 'audio')
PRE = PreprocessConfig(image_size=16, bev_size=16, audio_samples=1024)


def _model(backbone='early', ffn_block=8, seed=0) -> SentryFuseModel:
    torch.manual_seed(seed)
    m = ModelConfig(backbone=backbone, dim=16, depth=2, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=ffn_block,
                    mid_layers=1, num_fusion_tokens=2, image_patch=8, bev_patch=8, n_fft=128, hop=64, n_mels=16,
                    audio_patch_frames=4)
    return SentryFuseModel(SentryFuseConfig(model=m, preprocess=PRE, class_names=('a', 'b', 'c'))).eval()


def _batches(model, n_batches=2, b=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(model.example_inputs(MODS, batch=b, generator=gen), torch.randint(0, 3, (b,), generator=gen))
            for _ in range(n_batches)]


def _joint_index(model) -> int:
    """A block every live set runs (joint for early/mid, first fusion block of camera otherwise)."""
    return [i for i, mod in enumerate(model.block_modalities()) if mod is None][0]


@torch.no_grad()
def _zero_units(model, block: int, group: int, ffn_unit: int) -> None:
    att, ffn = model.blocks()[block].attn, model.blocks()[block].ffn
    r, d, b = att.group_size, att.head_dim, ffn.block
    q = slice(group * r * d, (group + 1) * r * d)
    kv = slice(group * d, (group + 1) * d)
    att.q.weight[q] = 0
    att.q.bias[q] = 0
    att.k.weight[kv] = 0
    att.v.weight[kv] = 0
    att.o.weight[:, q] = 0
    ch = slice(ffn_unit * b, (ffn_unit + 1) * b)
    ffn.fc1.weight[ch] = 0
    ffn.fc1.bias[ch] = 0
    ffn.fc2.weight[:, ch] = 0


def _criteria(model, batches):
    grads = bl.calibration_grads(model, batches)
    recal = bl.calibration_grads(model, batches, live=('camera', 'audio'))
    return {'magnitude_l1': bl.magnitude_scores(model, p=1), 'magnitude_l2': bl.magnitude_scores(model, p=2),
            'taylor': bl.taylor_scores(grads), 'fisher': bl.fisher_scores(grads),
            'taylor_recal': bl.taylor_scores(recal)}


@pytest.mark.parametrize('backbone', ['early', 'mid'])
@pytest.mark.parametrize('group, ffn_unit', [(0, 3), (1, 0)])
def test_zeroed_unit_scores_lowest(backbone, group, ffn_unit):
    model = _model(backbone)
    blk = _joint_index(model)
    _zero_units(model, blk, group, ffn_unit)
    for name, scores in _criteria(model, _batches(model)).items():
        a, f = scores[blk]
        others_a = torch.cat([a[:group], a[group + 1:]])
        others_f = torch.cat([f[:ffn_unit], f[ffn_unit + 1:]])
        assert float(a[group]) < float(others_a.min()), (name, a)
        assert float(f[ffn_unit]) < float(others_f.min()), (name, f)
        if name != 'magnitude_l1' and name != 'magnitude_l2':
            assert float(a[group]) == 0.0 and float(f[ffn_unit]) == 0.0, name  # no gradient reaches it


def test_scores_have_the_gate_layout_and_are_finite():
    model = _model('bottleneck')
    for name, scores in _criteria(model, _batches(model)).items():
        assert [(len(a), len(f)) for a, f in scores] == model.unit_layout(), name
        assert all(torch.isfinite(a).all() and torch.isfinite(f).all() and (a >= 0).all() and (f >= 0).all()
                   for a, f in scores), name


def test_random_scores_are_seeded():
    model = _model()
    a, b, c = bl.random_scores(model, 3), bl.random_scores(model, 3), bl.random_scores(model, 4)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, c))


def test_magnitude_matches_torch_pruning_on_a_linear_pair():
    tp = pytest.importorskip('torch_pruning')
    model = _model(ffn_block=1)  # one FFN channel per unit: a plain Linear -> GELU -> Linear pair
    ffn = model.blocks()[0].ffn
    pair = nn.Sequential(ffn.fc1, nn.GELU(), ffn.fc2)
    dg = tp.DependencyGraph().build_dependency(pair, example_inputs=torch.randn(1, 16))
    group = dg.get_pruning_group(pair[0], tp.prune_linear_out_channels, idxs=list(range(32)))
    for p in (1, 2):
        ref = tp.importance.GroupMagnitudeImportance(p=p, group_reduction='sum', normalizer=None)(group)
        ours = bl.magnitude_scores(model, p=p)[0][1]
        ours = ours if p == 1 else ours.pow(2)  # tp's p=2 is the squared norm
        torch.testing.assert_close(ours.float(), ref.float(), rtol=1e-5, atol=1e-6)


def test_taylor_matches_the_gate_teacher_on_one_batch():
    model = _model()
    (x, y), = _batches(model, n_batches=1)
    gates = ones_gates(model.unit_layout(), device=torch.device('cpu'), batch_size=len(y))
    nn.functional.cross_entropy(model(x, gates=gates), y, reduction='sum').backward()
    ref = read_saliency(gates, kind='taylor')
    ours = bl.taylor_scores(bl.calibration_grads(model, [(x, y)]))
    for (ra, rf), (oa, of) in zip(ref, ours):
        torch.testing.assert_close(oa.float(), ra, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(of.float(), rf, rtol=1e-5, atol=1e-7)


def test_recalibration_zeroes_skipped_blocks():
    model = _model('mid')
    grads = bl.calibration_grads(model, _batches(model), live=('camera', 'audio'))
    for (a, f), mod in zip(grads, model.block_modalities()):
        assert bool((a == 0).all() and (f == 0).all()) == (mod == 'lidar')


@pytest.mark.parametrize('budget', [0.8, 0.5, 0.3])
def test_kwon_search_fits_the_budget_and_prefers_high_fisher(budget):
    model = _model('mid')
    costs = unit_costs(model, MODS)
    fisher = [(torch.rand(len(a)), torch.rand(len(f))) for a, f in costs]
    fisher[-1][1][2] = 100.0  # one FFN block far above every other unit
    masks = bl.kwon_mask_search(fisher, costs, budget)
    total = sum(float(a.sum() + f.sum()) for a, f in costs)
    minimum = sum(float(a.max() + f.max()) for a, f in costs)  # one unit of each kind per block
    kept = sum(float(ca[ma].sum() + cf[mf].sum()) for (ca, cf), (ma, mf) in zip(costs, masks))
    assert kept <= max(budget * total, minimum) * (1 + 1e-9)
    assert all(ma.any() and mf.any() for ma, mf in masks)
    assert bool(masks[-1][1][2])
    slice_model(model, masks)  # a valid slicing


def test_kwon_search_budget_one_keeps_everything():
    model = _model()
    costs = unit_costs(model, MODS)
    masks = bl.kwon_mask_search(bl.random_scores(model, 0), costs, 1.0)
    assert all(bool(a.all() and f.all()) for a, f in masks)


def test_kwon_rearrange_prunes_cancelling_units_together():
    # units 0 and 1 have large but opposite per-sample gradients: pruning both changes the loss by 0,
    # while diagonal Fisher would prune the small-gradient unit 2 and one of them
    grads = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.5]])  # (N, U)
    mask = torch.tensor([False, True, False])
    out = bl.kwon_rearrange([(mask, mask.clone())], [(grads, grads)])
    assert out[0][0].tolist() == [False, False, True]
    assert int(out[0][1].sum()) == int(mask.sum())


def test_errors_name_the_value():
    model = _model()
    with pytest.raises(PruningError, match='p=3'):
        bl.magnitude_scores(model, p=3)
    with pytest.raises(PruningError, match='lacks live modalities'):
        bl.calibration_grads(model, _batches(model), live=('camera', 'radar'))
    with pytest.raises(PruningError, match='got none'):
        bl.calibration_grads(model, [])
    costs = unit_costs(model, MODS)
    with pytest.raises(PruningError, match='blocks but costs'):
        bl.kwon_mask_search(bl.random_scores(model, 0)[:1], costs, 0.5)
    with pytest.raises(PruningError, match='masks for 1 blocks but gradients for 2'):
        bl.kwon_rearrange([(torch.ones(2, dtype=torch.bool), torch.ones(4, dtype=torch.bool))],
                          bl.calibration_grads(model, _batches(model)))
