import itertools

import pytest
import torch

from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.errors import ModelError, PruningError
from sentryfuse_ros.core.model.flops import count_flops, count_params
from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig
from sentryfuse_ros.core.pruning.prune import (SubnetworkCache, masks_to_gates, prunable_macs, select_units, slice_model,
                                       total_macs, unit_costs)

torch.set_num_threads(1)
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(MODALITIES, r)]
PRE = PreprocessConfig(image_size=16, bev_size=16, audio_samples=1024)
BACKBONES = ('early', 'mid', 'bottleneck')


def tiny(backbone='early', attention='sentry'):
    torch.manual_seed(0)
    return SentryFuseModel(SentryFuseConfig(
        model=ModelConfig(backbone=backbone, attention=attention, dim=16, depth=3, num_heads=4, num_kv_heads=2,
                          ffn_dim=32, ffn_block=8, mid_layers=1, num_fusion_tokens=2, image_patch=8, bev_patch=8,
                          n_fft=128, hop=64, n_mels=8, audio_patch_frames=4),
        preprocess=PRE, class_names=('a', 'b', 'c'))).eval()


MODELS = {(b, a): tiny(b, a) for b in BACKBONES for a in ('dense', 'sentry')}


def random_scores(model, seed):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(g, generator=gen), torch.rand(nf, generator=gen)) for g, nf in model.unit_layout()]


@pytest.mark.parametrize('key', list(MODELS), ids='-'.join)
@pytest.mark.parametrize('live', [('camera',), ('lidar', 'audio'), MODALITIES], ids='+'.join)
def test_unit_costs_agree_with_flop_counter(key, live):
    model = MODELS[key]
    costs = unit_costs(model, live)
    flops = count_flops(model, model.example_inputs(live))
    # prunable units + separately counted fixed parts (tokenizers, head) = flop_counter's total, exactly
    assert flops == 2 * (prunable_macs(model, live) + model.fixed_macs(live))
    assert 0 < 2 * prunable_macs(model, live) < flops
    for (a, f), mod in zip(costs, model.block_modalities()):
        zero = mod is not None and mod not in live
        assert bool((a == 0).all()) == zero and bool((f == 0).all()) == zero


@pytest.mark.parametrize('budget', [0.9, 0.7, 0.5, 0.3])
@pytest.mark.parametrize('backbone', BACKBONES)
def test_select_units_respects_budget_and_keeps_one_per_block(backbone, budget):
    model = MODELS[(backbone, 'sentry')]
    for live, seed in zip(SUBSETS, range(7)):
        costs = unit_costs(model, live)
        masks = select_units(random_scores(model, seed), costs, budget)
        kept = sum(float(c[0][m[0]].sum() + c[1][m[1]].sum()) for c, m in zip(costs, masks))
        minimum = sum(float(a[0] + f[0]) for a, f in costs)  # one group + one FFN block per block
        cap = budget * prunable_macs(model, live)
        if minimum <= cap:
            assert cap - max(float(a[0]) for a, _ in costs) < kept <= cap + 1e-6  # greedy fills the budget
        else:  # the per-block minimum alone exceeds the budget: exactly the minimum is kept
            assert kept == minimum
        for (a, f), (ca, cf) in zip(masks, costs):
            assert a.dtype == torch.bool and int(a.sum()) >= 1 and int(f.sum()) >= 1
            if float(ca.sum()) == 0:  # skipped block: only its best unit kept
                assert int(a.sum()) == 1 and int(f.sum()) == 1


def test_select_units_prefers_high_scores_and_budget_one_keeps_all():
    model = MODELS[('early', 'dense')]
    costs = unit_costs(model, MODALITIES)
    scores = [(torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([-1.0, 5.0, -2.0, 0.0])) for _ in costs]
    masks = select_units(scores, costs, 0.6)
    for a, f in masks:
        assert a[0] and f[1]                      # best units always kept
        assert not (a[3] and not a[2])            # equal costs: kept set follows the ranking
    assert all(bool(a.all() and f.all()) for a, f in select_units(scores, costs, 1.0))


def test_keep_fraction_is_plain_arithmetic_not_re_checked():
    """keep_fraction is checked where it enters (BenchConfig.ratios): at or above 1 keeps every unit,
    at or below 0 keeps only the per-block minimum, never an error deep inside the selection."""
    model = MODELS[('early', 'sentry')]
    scores, costs = random_scores(model, 0), unit_costs(model, MODALITIES)
    assert all(bool(a.all() and f.all()) for a, f in select_units(scores, costs, 1.5))
    for low in (0.0, -0.2):
        assert all(int(a.sum()) == 1 and int(f.sum()) == 1 for a, f in select_units(scores, costs, low))


def test_select_units_shape_errors():
    model = MODELS[('early', 'sentry')]
    costs = unit_costs(model, MODALITIES)
    with pytest.raises(PruningError, match=r'scores for 1 blocks but costs for 3'):
        select_units(random_scores(model, 0)[:1], costs, 0.5)
    bad = random_scores(model, 0)
    bad[1] = (torch.rand(3), bad[1][1])
    with pytest.raises(PruningError, match=r'block 1 attn scores shape \(3,\): expected \(2,\)'):
        select_units(bad, costs, 0.5)
    bad[1] = (torch.tensor([1.0, float('nan')]), bad[1][1])
    with pytest.raises(PruningError, match=r'block 1 attn scores .*expected finite'):
        select_units(bad, costs, 0.5)


@pytest.mark.parametrize('key', list(MODELS), ids='-'.join)
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_sliced_equals_masked_random_masks(key, seed):
    model = MODELS[key]
    gen = torch.Generator().manual_seed(seed)
    masks = []
    for g, nf in model.unit_layout():
        a, f = torch.rand(g, generator=gen) < 0.5, torch.rand(nf, generator=gen) < 0.5
        a[torch.randint(g, (1,), generator=gen)] = True
        f[torch.randint(nf, (1,), generator=gen)] = True
        masks.append((a, f))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sliced = slice_model(model, masks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    assert sliced.unit_layout() == [(int(a.sum()), int(f.sum())) for a, f in masks]
    for live in SUBSETS:
        x = model.example_inputs(live, batch=2, generator=torch.Generator().manual_seed(seed))
        masked = model(x, gates=masks_to_gates(masks))
        assert torch.allclose(sliced(x), masked, atol=1e-5)
    assert not torch.allclose(masked, model(x), atol=1e-4)  # the masks really change the function


@pytest.mark.parametrize('backbone', BACKBONES)
@pytest.mark.parametrize('budget', [0.9, 0.7, 0.5])
def test_sliced_equals_masked_selected_units(backbone, budget):
    model = MODELS[(backbone, 'sentry')]
    for seed, live in enumerate([MODALITIES, ('camera', 'audio'), ('lidar',)]):
        masks = select_units(random_scores(model, seed), unit_costs(model, live), budget)
        sliced = slice_model(model, masks)
        x = model.example_inputs(live, batch=2, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(sliced(x), model(x, gates=masks_to_gates(masks)), atol=1e-5)
        flops = count_flops(sliced, x)
        assert flops == 2 * 2 * total_macs(sliced, live) < count_flops(model, x)
        assert count_params(sliced) < count_params(model)


def test_slice_model_errors():
    model = MODELS[('early', 'sentry')]
    masks = [(torch.ones(2, dtype=torch.bool), torch.ones(4, dtype=torch.bool)) for _ in range(3)]
    with pytest.raises(PruningError, match=r'masks for 2 blocks: expected 3'):
        slice_model(model, masks[:2])
    masks[2] = (torch.zeros(2, dtype=torch.bool), masks[2][1])
    with pytest.raises(PruningError, match=r'block 2 masks keep 0 KV groups and 4 FFN blocks'):
        slice_model(model, masks)
    masks[2] = (torch.ones(3, dtype=torch.bool), masks[2][1])
    with pytest.raises(PruningError, match=r'block 2 masks of shapes \(3,\)/\(4,\)'):
        slice_model(model, masks)


def test_subnetwork_cache_snaps_builds_once_and_sorts_live():
    model = MODELS[('mid', 'sentry')]
    calls = []

    def score_fn(live):
        calls.append(live)
        return random_scores(model, len(live))

    cache = SubnetworkCache(model, score_fn, budget_levels=(1.0, 0.7, 0.4))
    sub = cache.get(['audio', 'camera'], 0.8)
    assert (sub.key, sub.live, sub.budget) == ('camera+audio@0.70', ('camera', 'audio'), 0.7)
    assert calls == [('camera', 'audio')] and sub.build_ms > 0 and not sub.model.training
    assert sub.params == count_params(sub.model) < count_params(model)
    x = model.example_inputs(sub.live)
    assert abs(sub.gflops - count_flops(sub.model, x) / 1e9) < 1e-12
    assert cache.get(('camera', 'audio'), 0.75) is sub
    assert cache.get(('camera',), 0.1).budget == 0.4  # below the lowest level -> lowest level
    assert cache.get(('camera',), 1.0).params == count_params(model)
    assert {k: cache.stats[k] for k in ('builds', 'hits', 'cached', 'evictions')} == {'builds': 3, 'hits': 1, 'cached': 3, 'evictions': 0}
    assert cache.get(('camera',), 1.2).budget == 1.0  # snapping is total: checked budgets enter upstream
    with pytest.raises(ModelError, match=r"live modalities \[\]"):
        cache.get((), 0.5)


@pytest.mark.parametrize('level', [1.0, 0.85, 0.7, 0.5, 0.4])
def test_compute_budget_0_7_as_float32_from_the_health_monitor_maps_to_the_0_7_level(level):
    # ModalityHealth.compute_budget is float32: 0.7 arrives as 0.699999988079071, and the old
    # tolerance (1e-9) sent it to the 0.5 sub-network
    import numpy as np
    model = MODELS[('mid', 'sentry')]
    cache = SubnetworkCache(model, lambda live: random_scores(model, len(live)),
                            budget_levels=(1.0, 0.85, 0.7, 0.5, 0.4))
    as_float32 = float(np.float32(level))
    assert cache.level_for(as_float32) == level
    assert cache.level_for(as_float32 - 1e-4) < level or level == 0.4   # a real shortfall still snaps down


@pytest.mark.parametrize('budget', [0.8, 0.5, 0.3])
@pytest.mark.parametrize('backbone', ['mid', 'bottleneck'])
def test_skipped_blocks_never_move_the_live_units_choice(backbone, budget):
    """Issue 10: zero-cost units of blocks the live set skips (here with large negative scores, like raw
    gate logits) must not shift the live units' scores: the live blocks' masks equal those of a search
    over the live blocks alone."""
    model = MODELS[(backbone, 'sentry')]
    for live in [('camera',), ('lidar', 'audio'), ('camera', 'audio')]:
        costs = unit_costs(model, live)
        skipped = [i for i, (a, f) in enumerate(costs) if float(a.sum() + f.sum()) == 0]
        assert skipped, f'{backbone} should skip blocks of the modalities absent from {live}'
        scores = random_scores(model, 3)
        for i in skipped:
            scores[i] = (scores[i][0] - 500.0, scores[i][1] * 0 - 300.0 + torch.arange(len(scores[i][1])))
        masks = select_units(scores, costs, budget)
        keep = [i for i in range(len(costs)) if i not in skipped]
        alone = select_units([scores[i] for i in keep], [costs[i] for i in keep], budget)
        for i, (a, f) in zip(keep, alone):
            assert torch.equal(masks[i][0], a) and torch.equal(masks[i][1], f)
