"""compute_budget is a fraction of the live set's WHOLE forward FLOPs (fixed parts included), checked
once where it enters (core/pruning/budget.py) and snapped to a level by one function, and the
sub-network cache keeps one copy of the weights: its storage does not grow with the levels used."""
import itertools

import pytest
import torch

from sentryfuse_ros.core.errors import ConfigError, PruningError
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.model.flops import count_flops
from sentryfuse_ros.core.model.presets import preset_config
from sentryfuse_ros.core.pruning.budget import check_budget, check_budget_levels, is_budget, snap_to_level
from sentryfuse_ros.core.pruning.prune import (SubnetworkCache, own_weight_bytes, prunable_fraction, select_for_budget,
                                               slice_model, total_macs)

NAMES = ('a', 'b', 'c', 'd')
MODS = ('camera', 'lidar', 'audio')
SUBSETS = [c for r in range(1, 4) for c in itertools.combinations(MODS, r)]
BUDGETS = (0.85, 0.7, 0.5, 0.4)


def _model(preset):
    torch.manual_seed(0)
    return SentryFuseModel(preset_config(preset, NAMES)).eval()


def _scores(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lambda live: [(torch.rand(a, generator=g), torch.rand(f, generator=g)) for a, f in model.unit_layout()]


@pytest.mark.parametrize('preset', ['tiny', 'robot'])
def test_selection_lands_within_2_percent_of_the_total_flop_target(preset):
    model = _model(preset)
    score_fn = _scores(model)
    for live in SUBSETS:
        dense = total_macs(model, live)
        for b in BUDGETS:
            sub = slice_model(model, select_for_budget(model, score_fn(live), live, b), share=True)
            ratio = total_macs(sub, live) / dense
            assert b - 0.02 <= ratio <= b + 1e-9, (live, b, ratio)


@pytest.mark.parametrize('preset, live', [('tiny', MODS), ('robot', MODS), ('robot', ('camera', 'audio'))])
def test_measured_flops_match_the_budget(preset, live):
    """The same check with torch's FLOP counter on real forward passes (fixed parts included)."""
    model = _model(preset)
    x = model.example_inputs(live)
    dense = count_flops(model, x)
    sub = slice_model(model, select_for_budget(model, _scores(model)(live), live, 0.5), share=True)
    assert 0.48 <= count_flops(sub, x) / dense <= 0.5 + 1e-9


def test_prunable_fraction_accounts_for_the_fixed_part():
    model = _model('tiny')
    frac = prunable_fraction(model, MODS, 0.5)
    fixed = model.fixed_macs(MODS)
    prunable = total_macs(model, MODS) - fixed
    assert fixed + frac * prunable == pytest.approx(0.5 * (fixed + prunable))
    assert frac < 0.5 and prunable_fraction(model, MODS, 1.0) == 1.0
    assert prunable_fraction(model, MODS, 1e-6) == pytest.approx(1e-9)  # below the fixed cost: keep the minimum


@pytest.mark.parametrize('value', [0.0, -0.2, 1.5, float('nan'), True, '0.5', None])
def test_check_budget_names_the_key_and_the_meaning(value):
    assert not is_budget(value)
    with pytest.raises(ConfigError, match=r"--budget=.*: expected a compute budget in \(0, 1\] \(a fraction of the "
                                          r"live set's dense forward FLOPs\)"):
        check_budget(value, '--budget')


def test_check_budget_passes_budgets_through_as_floats():
    assert check_budget(1) == 1.0 and isinstance(check_budget(1), float) and check_budget(0.4) == 0.4
    assert check_budget_levels([0.5, 1, 0.7]) == (0.5, 1.0, 0.7)  # order kept: the caller's report order
    with pytest.raises(ConfigError, match=r'--budgets=\(\): expected one or more budgets in \(0, 1\]'):
        check_budget_levels([], '--budgets')
    with pytest.raises(ConfigError, match=r'budget_levels=\(1.0, 1.2\): expected one or more budgets'):
        check_budget_levels((1.0, 1.2))


@pytest.mark.parametrize('budget, level', [(1.0, 1.0), (0.9, 0.85), (0.85, 0.85), (0.6999999, 0.7), (0.45, 0.4),
                                           (0.1, 0.4), (float('nan'), 0.4), (2.0, 1.0)])
def test_snap_to_level_is_the_highest_level_at_or_below_else_the_lowest(budget, level):
    assert snap_to_level((1.0, 0.85, 0.7, 0.5, 0.4), budget) == level



def test_sub_networks_share_the_dense_weights():
    model = _model('robot')
    cache = SubnetworkCache(model, _scores(model), budget_levels=(1.0, 0.5))
    full = cache.get(MODS, 1.0)
    assert full.own_bytes == 0  # budget 1.0: every tensor is the dense model's
    half = cache.get(MODS, 0.5)
    assert half.model.tokenizers['camera'].proj.weight is model.tokenizers['camera'].proj.weight
    assert half.model.head.weight is model.head.weight
    dense_blocks = sum(p.numel() * 4 for b in model.blocks() for p in b.parameters())
    assert 0 < half.own_bytes < 0.6 * dense_blocks  # only the gathered linears of pruned units
    assert half.own_bytes == own_weight_bytes(half.model, model)
    # the dense model is untouched by slicing
    assert model.unit_layout() == [(2, 24)] * 6


@pytest.mark.slow
def test_cache_storage_does_not_grow_with_the_levels_used():
    model = _model('robot')
    levels = (1.0, 0.85, 0.7, 0.5, 0.4)
    cap_mb = 30.0
    cache = SubnetworkCache(model, _scores(model), budget_levels=levels, max_cache_mb=cap_mb)
    storage = []
    for live in SUBSETS:  # 35 (subset, budget) sub-networks, one after another
        for b in levels:
            cache.get(live, b)
            storage.append(cache.storage_bytes())
    assert max(storage) <= cap_mb * 2 ** 20
    assert cache.stats['builds'] == 35 and cache.stats['evictions'] > 0
    # the same use with no cap holds far more: the cap is what keeps memory flat
    free = SubnetworkCache(model, _scores(model), budget_levels=levels)
    for live in SUBSETS:
        for b in levels:
            free.get(live, b)
    assert free.storage_bytes() > 5 * cap_mb * 2 ** 20
    # most recently used first: the newest entry is always kept and a hit refreshes an entry
    keys = cache.cached_keys()
    assert keys[-1] == 'camera+lidar+audio@0.40'
    cache.get(SUBSETS[-1], 0.4)
    assert cache.stats['hits'] == 1


def test_cap_zero_keeps_only_the_newest_and_rejects_negative_caps():
    model = _model('tiny')
    cache = SubnetworkCache(model, _scores(model), budget_levels=(0.7, 0.5), max_cache_mb=0)
    cache.get(MODS, 0.7)
    cache.get(MODS, 0.5)
    assert cache.cached_keys() == ['camera+lidar+audio@0.50']
    with pytest.raises(PruningError, match=r'max_cache_mb=-1: expected a size >= 0'):
        SubnetworkCache(model, _scores(model), max_cache_mb=-1)


def test_gathered_bytes_predicts_what_a_build_holds_and_the_cache_makes_room_first():
    from sentryfuse_ros.core.pruning.prune import gathered_bytes
    model = _model('robot')
    score_fn = _scores(model)
    for live in (MODS, ('lidar',)):
        for b in BUDGETS:
            masks = select_for_budget(model, score_fn(live), live, b)
            sub = slice_model(model, masks, share=True)
            assert gathered_bytes(model, masks) == own_weight_bytes(sub, model)
    cap_mb = 20.0
    cache = SubnetworkCache(model, score_fn, budget_levels=BUDGETS, max_cache_mb=cap_mb)
    for live in SUBSETS:
        for b in BUDGETS:
            cache.get(live, b)
            # never above the cap, except a single sub-network larger than the cap on its own
            assert cache.storage_bytes() <= cap_mb * 2 ** 20 or len(cache.cached_keys()) == 1
