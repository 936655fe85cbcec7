"""The benchmark's rules, each pinned by a test that fails if the rule changes.

Every test names, in its docstring, the deliberate break it was shown to catch (the break was applied to
the code, the test failed, the break was reverted).
"""
import dataclasses

import pytest
import torch

from bench_fixtures import tiny_model_and_gate
from sentryfuse_ros.core.bench import deployed, methods, plots, readings, stats
from sentryfuse_ros.core.bench.spec import BenchConfig, P0_METHODS
from sentryfuse_ros.core.data.datasets import MultimodalTensors
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.pruning import baselines as bl
from sentryfuse_ros.core.pruning.masktune import tuned_model
from sentryfuse_ros.core.pruning.prune import select_units, unit_costs

MODS = ('camera', 'audio')
FRACTIONS = (0.9, 0.7, 0.5, 0.35)


def _model(seed: int = 0, backbone: str = 'mid'):
    return tiny_model_and_gate(seed, backbone=backbone, mid_layers=1, depth=3, ffn_block=4)


def _data(model, n: int, seed: int) -> MultimodalTensors:
    x = model.example_inputs(MODS, batch=n, generator=torch.Generator().manual_seed(seed))
    return MultimodalTensors(x, torch.arange(n) % 2, ('a', 'b'))


def _sets(model):
    """Three different calibration sets, so a method reading the wrong one gives other masks."""
    return {name: [(d.inputs, d.labels)] for name, d in
            (('calib', _data(model, 6, 1)), ('kwon', _data(model, 10, 2)), ('flap', _data(model, 8, 3)))}


def _same(a, b) -> bool:
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.parametrize('method', ['taylor', 'fisher'])
def test_static_gradient_baselines_calibrate_once_on_every_sensor(method):
    """Catches: calibration_grads fed the live set (``live=live``) or the kwon set instead of the all-sensor
    calib set; the masks must be the all-sensor scores re-solved on the live set's costs."""
    model, gate = _model()
    sets = _sets(model)
    scorer = methods.MethodScorer(model, gate, sets, 0, {})
    fn = bl.taylor_scores if method == 'taylor' else bl.fisher_scores
    right = fn(bl.calibration_grads(model, sets['calib']))
    wrong = fn(bl.calibration_grads(model, sets['calib'], live=('camera',)))
    live = ('camera',)
    differs = False
    for k in FRACTIONS:
        got, _ = scorer.masks(method, live, k)
        assert _same(got, select_units(right, unit_costs(model, live), k))
        differs |= not _same(got, select_units(wrong, unit_costs(model, live), k))
    assert differs  # the test has power: the live-only calibration would choose other units
    assert scorer.samples_for(method) == 6


def test_taylor_recal_calibrates_on_the_live_set():
    """Catches: the oracle re-measured with every sensor (``live=None``) instead of the live set's data."""
    model, gate = _model()
    sets = _sets(model)
    scorer = methods.MethodScorer(model, gate, sets, 0, {})
    live = ('audio',)
    right = bl.taylor_scores(bl.calibration_grads(model, sets['calib'], live=live))
    for k in FRACTIONS:
        assert _same(scorer.masks('taylor_recal', live, k)[0], select_units(right, unit_costs(model, live), k))


def test_kwon_uses_its_own_calibration_set_and_tunes_on_the_live_sensors():
    """Catches: kwon's Fisher taken from the small calib set instead of the kwon_samples set, and kwon_tuned
    tuned on every sensor's data instead of the live set's (P1/P2: tuning_data live_sensors)."""
    model, gate = _model()
    sets = _sets(model)
    scorer = methods.MethodScorer(model, gate, sets, 0, {})
    grads = bl.calibration_grads(model, sets['kwon'])
    live, k = ('camera',), 0.5
    want = bl.kwon_rearrange(bl.kwon_mask_search(bl.fisher_scores(grads), unit_costs(model, live), k), grads)
    masks, _ = scorer.masks('kwon_tuned', live, k)
    assert _same(masks, want) and _same(scorer.masks('kwon', live, k)[0], want)
    x = {'camera': sets['calib'][0][0]['camera']}
    expected = tuned_model(model, masks, sets['kwon'], live)[0]
    assert torch.allclose(scorer.model_for('kwon_tuned', live, k)(x), expected(x), atol=1e-5)
    assert scorer.samples_for('kwon_tuned') == 10


def test_flap_calibrates_on_every_sensor_and_compensates_biases():
    """Catches: FLAP's statistics measured on the live set (or on the calib set), and a missing bias
    compensation (the sliced model must be the compensated copy)."""
    model, gate = _model()
    sets = _sets(model)
    scorer = methods.MethodScorer(model, gate, sets, 0, {})
    st = bl.flap_statistics(model, sets['flap'])
    live, k = ('audio',), 0.5
    masks, _ = scorer.masks('flap', live, k)
    assert _same(masks, bl.flap_select(bl.flap_scores(model, st), unit_costs(model, live), k))
    x = {'audio': sets['calib'][0][0]['audio']}
    comp = bl.flap_compensate(model, masks, st)
    assert torch.allclose(scorer.model_for('flap', live, k)(x), comp(x), atol=1e-6)
    assert not torch.allclose(comp(x), model(x), atol=1e-6)  # the compensation moved the biases


def test_flap_compensation_restores_the_mean_output():
    """Catches: a compensation with the wrong sign or the kept (not the pruned) channels: on the calibration
    samples, the compensated pruned FFN's mean output equals the full FFN's."""
    model, _ = _model(backbone='early')
    data = [(_data(model, 16, 4).inputs, None)]
    st = bl.flap_statistics(model, data)
    masks = [(torch.ones(g, dtype=torch.bool), torch.arange(nf) % 2 == 0) for g, nf in model.unit_layout()]
    comp = bl.flap_compensate(model, masks, st)
    blk, cblk = model.blocks()[0], comp.blocks()[0]
    h = torch.randn(64, 1, 16)
    acts = blk.ffn.act(blk.ffn.fc1(h))                                       # (64, 1, F)
    mean_full = blk.ffn.fc2(acts).mean((0, 1))
    gate = masks[0][1].float()
    pruned_out = cblk.ffn(h, gate).mean((0, 1))
    # the bias correction uses the calibration means; here the means are those of h itself
    expect = mean_full - blk.ffn.fc2.weight[:, ~gate.bool().repeat_interleave(4)] @ (
        acts.mean((0, 1))[~gate.bool().repeat_interleave(4)] - st[0][1][0][~gate.bool().repeat_interleave(4)].float())
    assert torch.allclose(pruned_out, expect, atol=1e-4)


def test_sentrygate_uses_the_table_row_of_the_live_set():
    """Catches: the gate scored with the all-modality row (or another subset's) for a live set."""
    model, gate = _model()
    scorer = methods.MethodScorer(model, gate, _sets(model), 0, {})
    for live in (('camera',), ('audio',), MODS):
        differs = False
        for k in FRACTIONS:
            got, _ = scorer.masks('sentrygate', live, k)
            assert _same(got, select_units(gate.scores(live), unit_costs(model, live), k))
            other = MODS if live != MODS else ('camera',)
            differs |= not _same(got, select_units(gate.scores(other), unit_costs(model, live), k))
        assert differs


LABELS = {  # method: (P1P2 labels, P0 labels), each (calibration, tuning_data, mask)
    'random': (('static', 'none', 'per_live_set'), ('static', 'none', 'static')),
    'magnitude_l1': (('static', 'none', 'per_live_set'), ('static', 'none', 'static')),
    'taylor': (('static', 'none', 'per_live_set'), ('static', 'none', 'static')),
    'kwon': (('static', 'none', 'per_live_set'), ('static', 'none', 'static')),
    'kwon_tuned': (('static', 'live_sensors', 'per_live_set'), ('static', 'all_sensors', 'static')),
    'flap': (('static', 'all_sensors', 'per_live_set'), ('static', 'all_sensors', 'static')),
    'taylor_recal': (('per_live_set', 'none', 'per_live_set'), ('per_live_set', 'none', 'per_live_set')),
    'sentrygate': (('per_live_set', 'none', 'per_live_set'), ('per_live_set', 'none', 'per_live_set')),
    'dense': (('static', 'none', 'none'), ('static', 'none', 'none')),
}


@pytest.mark.parametrize('method', sorted(LABELS))
def test_every_record_is_labelled_with_its_calibration_and_tuning_data(method):
    """Catches: kwon_tuned labelled zero-shot (tuning_data 'none') or all_sensors in P1/P2, a static mask
    labelled per_live_set in P0, a per-live-set criterion labelled static."""
    for protocol, want in zip(('P1P2', 'P0'), LABELS[method]):
        got = methods.method_labels(method, protocol)
        assert (got['calibration'], got['tuning_data'], got['mask']) == want
    with pytest.raises(ConfigError, match="protocol='P3': expected 'P0' or 'P1P2'"):
        methods.method_labels(method, 'P3')


def test_calibration_sets_come_from_one_permutation_of_the_split_with_the_configured_sizes():
    """Catches: the kwon set ignoring kwon_samples (e.g. reusing calib_batches x calib_batch_size), or sets
    drawn from different permutations (every method must see the same first samples)."""
    model, _ = _model()
    train = _data(model, 40, 5)
    cfg = BenchConfig(calib_batches=2, calib_batch_size=4, kwon_samples=24, flap_samples=12)
    sets = methods.calibration_sets(train, cfg)
    sizes = {k: sum(int(y.shape[0]) for _, y in v) for k, v in sets.items()}
    assert sizes == {'calib': 8, 'kwon': 24, 'flap': 12}
    cam = {k: torch.cat([x['camera'] for x, _ in v]) for k, v in sets.items()}
    assert torch.equal(cam['kwon'][:8], cam['calib']) and torch.equal(cam['kwon'][:12], cam['flap'])


def _summary_row(ours, theirs, seeds=(0,)):
    return {'backbone': 'mid', 'dataset': 'sim6', 'seeds': list(seeds), 'gains': [(ours - theirs) / theirs],
            'points': [100 * (ours - theirs)], 'acc': ours, 'best_acc': theirs, 'gain': (ours - theirs) / theirs,
            'pts': 100 * (ours - theirs), 'post_hoc': False}


def test_a_tie_is_counted_as_a_tie_not_a_win():
    """Catches: wins counted with ``>=`` (a tie as a win) in summarize or in the legacy compare table."""
    s = stats.summarize([_summary_row(0.5, 0.5), _summary_row(0.6, 0.5), _summary_row(0.4, 0.5)])
    assert (s['wins'], s['ties'], s['losses']) == (1, 1, 1)
    recs = [{'backbone': 'mid', 'dataset': 'sim6', 'condition': 'camera', 'ratio': 0.5, 'method': m, 'seed': 0,
             'accuracy': 0.5} for m in ('taylor', 'sentrygate')]
    row, = plots.compare(recs)
    assert row['tie'] and not row['win']


def test_intervals_are_95_percent():
    """Catches: another level (0.9 or 0.99), or percentile indices off by the level: 20 equally spaced seed
    values make the bootstrap mean nearly normal with sd 5.77 / sqrt(20) = 1.29, so a 95% interval is about
    +-2.53 wide either side of 9.5 (90%: +-2.12, 99%: +-3.33)."""
    assert stats.INTERVAL_LEVEL == 0.95
    lo, hi = stats.bootstrap_interval([{s: float(s) for s in range(20)}])
    assert 2.3 < (hi - lo) / 2 < 2.75 and abs((lo + hi) / 2 - 9.5) < 0.3
    lo, hi = readings._run_interval([float(v) for v in range(20)])
    assert 2.3 < (hi - lo) / 2 < 2.75
    from sentryfuse_ros.core.bench import report
    assert report.LEVEL == '95%' and '95% seed bootstrap' in report.HEADER[0]


def rec(model, method, seed, acc, **kw):
    base = {'model': model, 'backbone': 'mid', 'dataset': 'sim6', 'condition': 'camera+audio', 'ratio': 0.5,
            'method': method, 'seed': seed, 'accuracy': acc, 'n_classes': 6}
    return {**base, **kw}


def test_the_headline_compares_with_the_fixed_baseline_even_when_another_is_better():
    """Catches: the 'fixed' reading picking the best candidate (held-out or after the fact) instead of the
    baseline the config named before the run."""
    recs = [rec('sentryfuse', 'sentrygate', s, 0.6) for s in range(3)]
    recs += [rec('conventional', 'taylor', s, 0.5) for s in range(3)]
    recs += [rec('conventional', 'kwon_tuned', s, 0.58) for s in range(3)]
    r = readings.readings(recs, 'P1', 'conventional/taylor')
    assert r['fixed']['all']['pts'] == pytest.approx(10.0)
    assert r['held_out']['all']['pts'] == pytest.approx(2.0) and r['post_hoc']['all']['pts'] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="headline.P1='conventional/magic'"):
        BenchConfig(headline={'P0': 'conventional/taylor', 'P1': 'conventional/magic', 'P2': 'taylor'})


def test_paired_statistics_are_per_training_run():
    """Catches: paired differences pooled over cells instead of averaged per run (backbone, dataset, seed)
    first: run 0 has two cells (+10, +30 points), run 1 one cell (-10): per run +20 and -10, mean +5."""
    rows = [{'backbone': 'mid', 'dataset': 'sim6', 'seeds': [0], 'points': [10.0], 'gains': [0.1]},
            {'backbone': 'mid', 'dataset': 'sim6', 'seeds': [0], 'points': [30.0], 'gains': [0.3]},
            {'backbone': 'mid', 'dataset': 'sim6', 'seeds': [1], 'points': [-10.0], 'gains': [-0.1]}]
    p = readings.paired_runs(rows)
    assert p['runs'] == 2 and p['pts'] == pytest.approx(5.0) and (p['ahead'], p['tied'], p['behind']) == (1, 0, 1)


def test_decomposition_steps_add_up_to_the_total_on_the_same_seeds():
    """Catches: a step computed on other seeds than the rest (seed 2 exists only for two of the four
    records and must be left out), which breaks curriculum + pruning-aware + criterion = total."""
    accs = {('conventional_nocurr', 'taylor'): [0.40, 0.44, 0.10], ('conventional', 'taylor'): [0.50, 0.52, 0.9],
            ('sentryfuse', 'taylor'): [0.55, 0.55], ('sentryfuse', 'sentrygate'): [0.60, 0.61]}
    recs = [rec(m, meth, s, a) for (m, meth), v in accs.items() for s, a in enumerate(v)]
    steps = {s['step']: s for s in readings.decomposition(recs, 'taylor')}
    assert steps['curriculum']['pts'] == pytest.approx(9.0)
    assert steps['total']['pts'] == pytest.approx(
        steps['curriculum']['pts'] + steps['pruning-aware training']['pts'] + steps['criterion']['pts'])
    assert steps['total']['pts'] == pytest.approx(18.5)


def _p0_run(matcher=None):
    ours, gate = _model(0)
    conv, cgate = _model(1)
    cfg = BenchConfig(methods=('taylor', 'kwon_tuned', 'sentrygate'), ratios=(0.3, 0.7), models=(
        'sentryfuse', 'conventional'), conditions='all_subsets', eval_batch=8)
    train, test = _data(ours, 12, 6), _data(ours, 10, 7)
    records, done = [], set()
    load = {'main': (ours, gate), 'conventional': (conv, cgate)}.__getitem__
    n = deployed.run_p0(cfg, ('sim6', 'mid', 0), {'train': train}, test, _sets(ours), records, done, load)
    return records, n


def test_p0_deploys_one_static_model_and_matches_sentrygate_flops_within_3_percent():
    """Catches: SentryGate pruned at the nominal keep fraction (1 - ratio) instead of the matched one, and a
    static baseline re-solved per live set (its params would change with the live set)."""
    records, n = _p0_run()
    assert n == len(records) == 2 * 2 * 3 * 2  # 2 methods x 2 ratios x 3 live sets, static + matched
    static = {(r['method'], r['ratio'], r['condition']): r for r in records if r['model'] == 'conventional'}
    for r in records:
        assert r['protocol'] == 'P0' and {'calibration', 'tuning_data', 'gflops'} <= set(r)
        if r['model'] == 'sentryfuse':
            ref = static[(r['matched_to'].split('/')[1], r['ratio'], r['condition'])]
            assert abs(r['gflops'] / ref['gflops'] - 1) <= deployed.MATCH_TOLERANCE and r['flops_matched']
            assert r['target_gflops'] == pytest.approx(ref['gflops'], rel=1e-4)
    for method in ('taylor', 'kwon_tuned'):
        for ratio in (0.3, 0.7):
            params = {static[(method, ratio, c)]['params'] for c in ('camera+audio', 'camera', 'audio')}
            assert len(params) == 1 and static[(method, ratio, 'camera')]['mask'] == 'static'
    assert {r['tuning_data'] for r in records if r['method'] == 'kwon_tuned'} == {'all_sensors'}


def test_p0_readings_pair_each_static_model_with_its_matched_sentrygate():
    """Catches: P0 comparing a static model with a SentryGate record matched to another static model."""
    recs = [rec('conventional', 'taylor', s, 0.5, protocol='P0') for s in range(2)]
    recs += [rec('conventional', 'kwon', s, 0.4, protocol='P0') for s in range(2)]
    recs += [rec('sentryfuse', 'sentrygate', s, 0.6, protocol='P0', matched_to='conventional/taylor') for s in range(2)]
    recs += [rec('sentryfuse', 'sentrygate', s, 0.9, protocol='P0', matched_to='conventional/kwon') for s in range(2)]
    recs += [rec('sentryfuse', 'sentrygate', s, 0.1) for s in range(2)]  # P1/P2 record: not read by P0
    r = readings.readings(recs, 'P0', 'conventional/taylor')
    assert r['fixed']['all']['pts'] == pytest.approx(10.0)
    assert r['post_hoc']['all']['pts'] == pytest.approx(10.0)  # taylor is the better static model
    assert readings.readings(recs, 'P0', 'conventional/kwon')['fixed']['all']['pts'] == pytest.approx(50.0)


def test_matched_masks_hits_the_target_and_rejects_a_bad_one():
    model, gate = _model()
    live = ('camera',)
    full = float(model.fixed_macs(live)) + sum(float(a.sum() + f.sum()) for a, f in unit_costs(model, live))
    masks, real, frac = deployed.matched_masks(model, gate.scores(live), live, 0.6 * full)
    assert abs(real / (0.6 * full) - 1) <= deployed.MATCH_TOLERANCE and 0 < frac < 1
    with pytest.raises(Exception, match='target_macs=0'):
        deployed.matched_masks(model, gate.scores(live), live, 0)


def test_p0_methods_are_the_static_baselines():
    assert 'taylor_recal' not in P0_METHODS and 'flap' in P0_METHODS and 'kwon_tuned' in P0_METHODS
    assert dataclasses.fields(BenchConfig)  # the config carries kwon_samples / flap_samples / headline
    assert {'kwon_samples', 'flap_samples', 'headline'} <= {f.name for f in dataclasses.fields(BenchConfig)}
