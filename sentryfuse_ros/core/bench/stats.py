"""Protocol P1 / P2 statistics from bench records: held-out best baseline, seed bootstrap, chance flags.

Definitions (a cell = backbone x dataset x condition x ratio; "ours" = ``sentrygate`` on the ``sentryfuse``
model):
    candidates      P2 (criterion): every zero-shot baseline on the ``sentryfuse`` model.
                    P1 (system): every zero-shot baseline on ``conventional`` and ``conventional_nocurr``.
    held-out best   for seed s, the candidate with the highest mean accuracy over the *other* seeds of the
                    cell; its accuracy on seed s is the comparison. With one seed there is nothing held
                    out: the maximum after the fact is used and the row says so (``post_hoc``).
    gain            per seed (ours - best) / best, and ``points`` = 100 (ours - best); a cell's figure is
                    the mean over its seeds.
    interval        95% percentile bootstrap over seeds (seeds resampled with replacement, jointly for
                    every cell of a group, since one seed's training run serves all its cells; 2000
                    resamples, fixed generator). Three seeds make a coarse interval; it is reported as is.
    weak cell       the held-out best baseline's mean accuracy is below 1.5x chance (1 / n_classes): a
                    relative gain there is large for small absolute differences; flagged, and headlines
                    are given with and without them.
    ablation        another gate method vs ``sentrygate`` on the same model and the *same seeds* only.
"""
import collections
import math
import random
import statistics
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from sentryfuse_ros.core.bench.spec import BASELINES, DENSE_METHODS

PROTOCOLS = {
    'P1': ('system: SentryGate on the SentryFuse model vs zero-shot baselines on a conventional model',
           ('conventional', 'conventional_nocurr')),
    'P2': ('criterion: every method prunes the same SentryFuse checkpoint', ('sentryfuse',)),
}
CLASSES_OF_DATASET = {'sim6': 6, 'sim10_hard': 10, 'avmnist': 10}  # for records written before n_classes existed
Cell = Tuple[str, str, str, float]


def _cell(r: Dict[str, Any]) -> Cell:
    return (r['backbone'], r['dataset'], r['condition'], round(float(r['ratio']), 4))


def full_condition(records: Iterable[Dict[str, Any]]) -> Dict[str, str]:
    """{dataset: condition name with every modality} (the longest condition seen per dataset)."""
    best: Dict[str, str] = {}
    for r in records:
        cur = best.get(r['dataset'])
        if cur is None or r['condition'].count('+') > cur.count('+'):
            best[r['dataset']] = r['condition']
    return best


def _index(records: Sequence[Dict[str, Any]],
           dense: bool = False) -> Dict[Cell, Dict[Tuple[str, str], Dict[int, float]]]:
    """{cell: {(model, method): {seed: accuracy}}} for pruned cells (``dense``: for the unpruned ones only)."""
    out: Dict[Cell, Dict[Tuple[str, str], Dict[int, float]]] = collections.defaultdict(
        lambda: collections.defaultdict(dict))
    for r in records:
        if (r['method'] in DENSE_METHODS) != dense:
            continue
        out[_cell(r)][(r.get('model', 'sentryfuse'), r['method'])][int(r['seed'])] = float(r['accuracy'])
    return out


def bootstrap_interval(matrix: Sequence[Dict[int, float]], *, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Tuple[float, float]:
    """Percentile interval of mean_cells(mean_seeds(x)) with seed labels resampled jointly for all cells.

    Args:
        matrix: one {seed: value} per cell. Cells may have different seeds: a resample draws from the union
            of seed labels, and each cell averages the drawn labels it has (a cell with none of them sits
            that resample out).
    """
    rows = [dict(r) for r in matrix if len(r)]
    if not rows:
        return math.nan, math.nan
    labels = sorted({s for r in rows for s in r})
    if len(labels) == 1:
        v = statistics.fmean(r[labels[0]] for r in rows)
        return v, v
    rng = random.Random(seed)
    stats = []
    while len(stats) < resamples:
        pick = [labels[rng.randrange(len(labels))] for _ in labels]
        means = [statistics.fmean(r[s] for s in pick if s in r) for r in rows if any(s in r for s in pick)]
        if means:
            stats.append(statistics.fmean(means))
    stats.sort()
    lo = stats[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = stats[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return lo, hi


def protocol_rows(records: Sequence[Dict[str, Any]], protocol: str, *, method: str = 'sentrygate',
                  baselines: Sequence[str] = BASELINES, ours_model: str = 'sentryfuse') -> List[Dict[str, Any]]:
    """Per cell: ours vs the held-out best candidate of ``protocol`` (module docstring), per seed and mean."""
    models = PROTOCOLS[protocol][1]
    full = full_condition(records)
    classes = {}
    for r in records:
        classes.setdefault(r['dataset'], int(r.get('n_classes') or CLASSES_OF_DATASET.get(r['dataset'], 0)) or None)
    rows = []
    for cell, per in sorted(_index(records).items()):
        ours = per.get((ours_model, method))
        cands = {(mdl, b): per[(mdl, b)] for mdl in models for b in baselines if (mdl, b) in per}
        if not ours or not cands:
            continue
        seeds = sorted(set(ours).intersection(*[set(v) for v in cands.values()]))
        if not seeds:
            continue
        best_of_seed, gains, points = {}, [], []
        for s in seeds:
            others = [t for t in seeds if t != s]
            pool = others if others else [s]
            best = max(sorted(cands), key=lambda c: statistics.fmean(cands[c][t] for t in pool))
            best_of_seed[s] = best
            theirs = cands[best][s]
            gains.append((ours[s] - theirs) / theirs if theirs > 0 else math.nan)
            points.append(100.0 * (ours[s] - theirs))
        best_accs = [cands[best_of_seed[s]][s] for s in seeds]
        n_cls = classes.get(cell[1])
        chance = 1.0 / n_cls if n_cls else math.nan
        picks = collections.Counter(f'{m}/{b}' if protocol == 'P1' else b for m, b in best_of_seed.values())
        rows.append({
            'backbone': cell[0], 'dataset': cell[1], 'condition': cell[2], 'ratio': cell[3],
            'dropout': cell[2] != full[cell[1]], 'missing': full[cell[1]].count('+') - cell[2].count('+'),
            'seeds': seeds, 'ours': [ours[s] for s in seeds], 'best': best_accs, 'gains': gains, 'points': points,
            'acc': statistics.fmean(ours[s] for s in seeds), 'best_acc': statistics.fmean(best_accs),
            'gain': statistics.fmean(gains), 'pts': statistics.fmean(points),
            'best_baseline': picks.most_common(1)[0][0], 'post_hoc': len(seeds) == 1,
            'weak': statistics.fmean(best_accs) < 1.5 * chance if n_cls else False,
        })
    return rows


def summarize(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean gain and points over cells, their seed-bootstrap intervals, wins, the seed counts of the cells."""
    if not rows:
        return {'cells': 0, 'gain': math.nan, 'gain_ci': (math.nan, math.nan), 'pts': math.nan,
                'pts_ci': (math.nan, math.nan), 'wins': 0, 'seeds': '0', 'post_hoc': 0}
    counts = sorted({len(r['seeds']) for r in rows})
    return {'cells': len(rows), 'gain': statistics.fmean(r['gain'] for r in rows),
            'gain_ci': bootstrap_interval([dict(zip(r['seeds'], r['gains'])) for r in rows]),
            'pts': statistics.fmean(r['pts'] for r in rows),
            'pts_ci': bootstrap_interval([dict(zip(r['seeds'], r['points'])) for r in rows]),
            'wins': sum(r['acc'] >= r['best_acc'] for r in rows),
            'seeds': str(counts[0]) if len(counts) == 1 else f'{counts[0]}-{counts[-1]}',
            'post_hoc': sum(r['post_hoc'] for r in rows)}


def groups(rows: Sequence[Dict[str, Any]]) -> List[Tuple[str, List[Dict[str, Any]]]]:
    """(label, rows) for the headline table: all, all present, dropout (and severe dropout: two modalities
    missing), without weak cells, per ratio, per backbone, per dataset (when there are several)."""
    out = [('all cells', list(rows)), ('all modalities present', [r for r in rows if not r['dropout']]),
           ('under modality dropout', [r for r in rows if r['dropout']]),
           ('severe dropout (two modalities missing)', [r for r in rows if r.get('missing', 0) >= 2]),
           ('all cells except weak ones', [r for r in rows if not r['weak']])]
    for ratio in sorted({r['ratio'] for r in rows}):
        out.append((f'ratio {ratio:.1f}', [r for r in rows if r['ratio'] == ratio]))
    for bb in sorted({r['backbone'] for r in rows}):
        out.append((f'backbone {bb}', [r for r in rows if r['backbone'] == bb]))
    datasets = sorted({r['dataset'] for r in rows})
    for ds in datasets if len(datasets) > 1 else []:
        out.append((f'dataset {ds}', [r for r in rows if r['dataset'] == ds]))
    return out


def headline_line(records: Sequence[Dict[str, Any]], protocol: str) -> str:
    """One line per protocol, as `sentryfuse bench` prints it."""
    rows = protocol_rows(records, protocol)
    if not rows:
        return f'{protocol}: no cells (needs sentrygate on sentryfuse and baselines on {PROTOCOLS[protocol][1]})'
    s, d = summarize(rows), summarize([r for r in rows if r['dropout']])
    if s['post_hoc'] == s['cells']:
        pick = 'the best baseline (1 seed: picked after the fact)'
    elif s['post_hoc']:
        pick = f'the held-out best baseline ({s["post_hoc"]} one-seed cells: picked after the fact)'
    else:
        pick = 'the held-out best baseline'
    return (f'{protocol} ({PROTOCOLS[protocol][0].split(":")[0]}): SentryGate vs {pick} '
            f'{_pct(s["gain"])} [{_pct(s["gain_ci"][0])}, {_pct(s["gain_ci"][1])}] relative, {s["pts"]:+.2f} points, '
            f'under dropout {_pct(d["gain"])}; wins {s["wins"]}/{s["cells"]} cells, {s["seeds"]} seed(s) per cell')


def _pct(x: float) -> str:
    return 'n/a' if x is None or math.isnan(x) else f'{100 * x:+.1f}%'


def ablation_rows(records: Sequence[Dict[str, Any]], other: str,
                  reference: str = 'sentrygate') -> Optional[Dict[str, Any]]:
    """``other`` vs ``reference`` on the sentryfuse model, on the cells and seeds where both exist."""
    diffs, rel = [], []
    for cell, per in _index(records, dense=reference in DENSE_METHODS).items():
        a, b = per.get(('sentryfuse', other)), per.get(('sentryfuse', reference))
        if not a or not b:
            continue
        for s in sorted(set(a) & set(b)):
            diffs.append(100.0 * (a[s] - b[s]))
            rel.append((a[s] - b[s]) / b[s] if b[s] > 0 else math.nan)
    if not diffs:
        return None
    seeds = sorted({int(r['seed']) for r in records if r['method'] == other})
    return {'method': other, 'reference': reference, 'pairs': len(diffs), 'pts': statistics.fmean(diffs),
            'gain': statistics.fmean(rel),
            'seeds': seeds, 'wins': sum(d > 0 for d in diffs)}


def dense_gap(records: Sequence[Dict[str, Any]], ours_model: str = 'sentryfuse') -> List[Dict[str, Any]]:
    """Per (dataset, backbone, condition): dense accuracy of sentryfuse vs conventional (same seeds)."""
    acc: Dict[Tuple[str, str, str], Dict[str, Dict[int, float]]] = collections.defaultdict(
        lambda: collections.defaultdict(dict))
    for r in records:
        if r['method'] == 'dense':
            acc[(r['dataset'], r['backbone'], r['condition'])][r.get('model', 'sentryfuse')][int(r['seed'])] = \
                float(r['accuracy'])
    out = []
    for key, per in sorted(acc.items()):
        ours, conv = per.get(ours_model, {}), per.get('conventional', {})
        seeds = sorted(set(ours) & set(conv))
        if not seeds:
            continue
        a, b = statistics.fmean(ours[s] for s in seeds), statistics.fmean(conv[s] for s in seeds)
        nocurr = per.get('conventional_nocurr', {})
        out.append({'dataset': key[0], 'backbone': key[1], 'condition': key[2], 'sentryfuse': a,
                    'conventional': b, 'conventional_nocurr': (statistics.fmean(nocurr[s] for s in seeds)
                                                               if set(seeds) <= set(nocurr) else math.nan),
                    'pts': 100.0 * (a - b), 'seeds': seeds})
    return out


def before_after(before: Sequence[Dict[str, Any]], after: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The skipped-block fix on the same cells and seeds: SentryGate's accuracy and its P2 gain (against the
    baselines both runs have), per backbone and all-present / dropout."""
    out = {}
    common = [b for b in BASELINES if any(r['method'] == b for r in before) and any(r['method'] == b for r in after)]
    b_rows = {(r['backbone'], r['dataset'], r['condition'], r['ratio']): r
              for r in protocol_rows(before, 'P2', baselines=common)}
    a_rows = {(r['backbone'], r['dataset'], r['condition'], r['ratio']): r
              for r in protocol_rows(after, 'P2', baselines=common)}
    for bb in sorted({k[0] for k in a_rows} & {k[0] for k in b_rows}):
        for drop in (False, True):
            pairs = []
            for key, ra in a_rows.items():
                rb = b_rows.get(key)
                if key[0] != bb or rb is None or ra['dropout'] != drop:
                    continue
                seeds = sorted(set(ra['seeds']) & set(rb['seeds']))
                if not seeds:
                    continue
                ia, ib = [ra['seeds'].index(s) for s in seeds], [rb['seeds'].index(s) for s in seeds]
                pairs.append((statistics.fmean(rb['ours'][i] for i in ib), statistics.fmean(ra['ours'][i] for i in ia),
                              statistics.fmean(rb['gains'][i] for i in ib), statistics.fmean(ra['gains'][i] for i in ia)))
            if pairs:
                out[(bb, 'dropout' if drop else 'all present')] = {
                    'cells': len(pairs), 'acc_before': statistics.fmean(p[0] for p in pairs),
                    'acc_after': statistics.fmean(p[1] for p in pairs),
                    'gain_before': statistics.fmean(p[2] for p in pairs),
                    'gain_after': statistics.fmean(p[3] for p in pairs)}
    return out
