"""Protocol statistics: held-out best baseline, seed bootstrap, weak cells, ablations on the same seeds."""
import math

import pytest

from sentryfuse_ros.core.bench import readings, stats


def rec(model, method, seed, acc, cond='camera+audio', ratio=0.3, dataset='avmnist', n_classes=10):
    return {'model': model, 'backbone': 'mid', 'dataset': dataset, 'condition': cond, 'ratio': ratio,
            'method': method, 'seed': seed, 'accuracy': acc, 'n_classes': n_classes}


def test_best_baseline_is_chosen_on_the_other_seeds():
    """taylor is best on seeds 0 and 1, magnitude_l1 only on seed 2 (after the fact it would be the pick there):
    held out, seed 2 is compared with taylor (best on seeds 0, 1)."""
    accs = {'taylor': [0.80, 0.80, 0.60], 'magnitude_l1': [0.70, 0.70, 0.90]}
    recs = [rec('sentryfuse', m, s, a) for m, v in accs.items() for s, a in enumerate(v)]
    recs += [rec('sentryfuse', 'sentrygate', s, 0.75) for s in range(3)]
    row, = stats.protocol_rows(recs, 'P2')
    # seed 0: others {1, 2}: taylor 0.70, l1 0.80 -> l1 (0.70); seed 1: the same -> l1 (0.70); seed 2: taylor (0.60)
    assert row['best'] == [0.70, 0.70, 0.60]
    assert row['gain'] == pytest.approx((0.05 / 0.7 * 2 + 0.15 / 0.6) / 3)
    assert row['pts'] == pytest.approx((5 + 5 + 15) / 3) and not row['post_hoc'] and not row['weak']


def test_p1_compares_with_the_conventional_model_only():
    recs = [rec('sentryfuse', 'taylor', s, 0.9) for s in range(2)]        # P2 candidate only
    recs += [rec('conventional', 'taylor', s, 0.5) for s in range(2)]     # P1 candidate
    recs += [rec('sentryfuse', 'sentrygate', s, 0.6) for s in range(2)]
    p1, = stats.protocol_rows(recs, 'P1')
    p2, = stats.protocol_rows(recs, 'P2')
    assert p1['best_acc'] == pytest.approx(0.5) and p1['best_baseline'] == 'conventional/taylor'
    assert p2['best_acc'] == pytest.approx(0.9)
    line = readings.headline_line(recs, 'P1', 'conventional/taylor')
    assert line.startswith('P1 (system): SentryGate vs conventional/taylor (fixed in advance) +20.0%')


def test_weak_cells_and_one_seed_post_hoc():
    recs = [rec('sentryfuse', 'taylor', 0, 0.14), rec('sentryfuse', 'sentrygate', 0, 0.2)]  # chance 0.1
    row, = stats.protocol_rows(recs, 'P2')
    assert row['weak'] and row['post_hoc']
    assert 'held-out best (1 seed: picked after the fact)' in readings.headline_line(recs, 'P2', 'taylor')


def test_bootstrap_interval_covers_the_mean_and_is_degenerate_for_equal_seeds():
    lo, hi = stats.bootstrap_interval([{0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0}])
    assert 1.0 <= lo < 2.0 < hi <= 3.0
    assert stats.bootstrap_interval([{0: 0.5, 1: 0.5, 2: 0.5}]) == (0.5, 0.5)
    assert all(math.isnan(x) for x in stats.bootstrap_interval([]))
    # a one-seed cell joins the resamples that draw its seed only
    lo, hi = stats.bootstrap_interval([{0: 1.0, 1: 1.0, 2: 1.0}, {0: 3.0}])
    assert lo == 1.0 and hi == 2.0


def test_ablation_uses_only_the_shared_seeds():
    recs = [rec('sentryfuse', 'sentrygate', s, 0.6) for s in range(3)]
    recs += [rec('sentryfuse', 'gate_noalign', 0, 0.7)]  # trained on seed 0 only
    a = stats.ablation_rows(recs, 'gate_noalign')
    assert a['pairs'] == 1 and a['pts'] == pytest.approx(10.0) and a['seeds'] == [0]


def test_dense_gap_and_before_after():
    recs = [rec('sentryfuse', 'dense', s, 0.80, ratio=0.0) for s in range(2)]
    recs += [rec('conventional', 'dense', s, 0.85, ratio=0.0) for s in range(2)]
    gap, = stats.dense_gap(recs)
    assert gap['pts'] == pytest.approx(-5.0)
    before = [rec('sentryfuse', 'sentrygate', s, 0.5, cond='camera') for s in range(2)]
    before += [rec('sentryfuse', 'taylor', s, 0.6, cond='camera') for s in range(2)]
    before += [rec('sentryfuse', 'sentrygate', s, 0.7) for s in range(2)] + [rec('sentryfuse', 'taylor', s, 0.7)
                                                                               for s in range(2)]
    after = [dict(r, accuracy=0.65) if r['method'] == 'sentrygate' and r['condition'] == 'camera' else r
             for r in before]
    ba = stats.before_after(before, after)
    v = ba[('mid', 'dropout')]
    assert v['acc_before'] == pytest.approx(0.5) and v['acc_after'] == pytest.approx(0.65)
    assert v['gain_before'] == pytest.approx(-1 / 6) and v['gain_after'] == pytest.approx(0.05 / 0.6)


def test_groups_split_severe_dropout_and_datasets():
    recs = []
    for ds, cond, acc in (('sim6', 'camera+lidar+audio', 0.9), ('sim6', 'camera', 0.5), ('sim6', 'camera+lidar', 0.7),
                          ('avmnist', 'camera+audio', 0.9), ('avmnist', 'audio', 0.6)):
        for s in range(2):
            recs += [rec('sentryfuse', 'taylor', s, acc, cond=cond, dataset=ds),
                     rec('sentryfuse', 'sentrygate', s, acc + 0.01 * (ds == 'sim6'), cond=cond, dataset=ds)]
    rows = stats.protocol_rows(recs, 'P2')
    g = dict(stats.groups(rows))
    assert [r['condition'] for r in g['severe dropout (two modalities missing)']] == ['camera']  # avmnist audio: 1 missing
    assert len(g['under modality dropout']) == 3 and len(g['all modalities present']) == 2
    assert {r['dataset'] for r in g['dataset sim6']} == {'sim6'} and len(g['dataset avmnist']) == 2
    assert stats.summarize(g['dataset avmnist'])['gain'] == pytest.approx(0.0)
    assert stats.summarize(g['dataset sim6'])['gain'] > 0
    one = dict(stats.groups([r for r in rows if r['dataset'] == 'sim6']))
    assert not any(k.startswith('dataset ') for k in one)  # one dataset: no per-dataset rows


def test_dense_nocurr_is_compared_with_the_dense_model_on_shared_seeds():
    recs = [rec('sentryfuse', 'dense', s, 0.9) for s in range(3)] + [rec('sentryfuse', 'dense_nocurr', 0, 0.8)]
    a = stats.ablation_rows(recs, 'dense_nocurr', reference='dense')
    assert a['pairs'] == 1 and a['pts'] == pytest.approx(-10.0) and a['reference'] == 'dense' and a['wins'] == 0
    from sentryfuse_ros.core.bench.plots import protocol_sections
    text = '\n'.join(protocol_sections(recs))
    assert '| dense_nocurr | dense | [0] | 1 |' in text


def test_legacy_bullet_compares_a_one_seed_ablation_with_baselines_of_that_seed():
    """Issue 10: gate_noalign (seed 0 only) against a three-seed baseline mean was misleading."""
    from sentryfuse_ros.core.bench.plots import render_markdown
    recs = [rec('sentryfuse', 'taylor', s, a) for s, a in enumerate((0.5, 0.9, 0.9))]
    recs += [rec('sentryfuse', 'sentrygate', s, 0.7) for s in range(3)] + [rec('sentryfuse', 'gate_noalign', 0, 0.6)]
    text = render_markdown({'meta': {}, 'records': recs}, [], 'x')
    assert '`gate_noalign` vs the best baseline (seeds [0]): +20.0% overall' in text  # 0.6 vs seed 0's 0.5
