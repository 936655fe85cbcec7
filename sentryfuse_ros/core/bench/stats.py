"""Protocol P0 / P1 / P2 statistics from bench records: comparison baselines, seed bootstrap, chance flags.

Definitions (a cell = backbone x dataset x condition x ratio; "ours" = ``sentrygate`` on the ``sentryfuse``
model):
    candidates      P2 (criterion): every zero-shot baseline on the ``sentryfuse`` model.
                    P1 (system): every zero-shot baseline on ``conventional`` and ``conventional_nocurr``
                    (masks re-solved per live set).
                    P0 (deployed static): the same on the P0 records (one mask, solved with every sensor),
                    each compared with the SentryGate record matched to its FLOPs (core/bench/deployed.py).
    fixed           the baseline named in the bench config before the run (BenchConfig.headline): the
                    headline; the two readings below stand beside it.
    held-out best   for seed s, the candidate with the highest mean accuracy over the *other* seeds of the
                    cell; its accuracy on seed s is the comparison. With one seed there is nothing held
                    out: the maximum after the fact is used and the row says so (``post_hoc``).
    after the fact  the candidate with the highest mean accuracy over all the cell's seeds (``post_hoc``).
    win / tie       per cell, ours' mean accuracy above / within TIE_TOLERANCE of the comparison's; a tie is
                    not a win.
    gain            per seed (ours - best) / best, and ``points`` = 100 (ours - best); a cell's figure is
                    the mean over its seeds.
    interval        INTERVAL_LEVEL (95%) percentile bootstrap over seeds (seeds resampled with replacement, jointly for
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
from sentryfuse_ros.core.errors import ConfigError

PROTOCOLS = {
    'P0': ('deployed static: baselines prune a conventional model once with every sensor, SentryGate re-prunes per '
           'live set at matched FLOPs', ('conventional', 'conventional_nocurr')),
    'P1': ('system: SentryGate on the SentryFuse model vs zero-shot baselines on a conventional model',
           ('conventional', 'conventional_nocurr')),
    'P2': ('criterion: every method prunes the same SentryFuse checkpoint', ('sentryfuse',)),
}
MODEL_LABELS = {'conventional': 'conventional (trained with the modality-dropout curriculum)',
                'conventional_nocurr': 'conventional_nocurr (plain training, every modality on every step)',
                'sentryfuse': 'sentryfuse'}
SELECTIONS = ('fixed', 'held_out', 'post_hoc')  # how a cell's comparison baseline is chosen (module docstring)
INTERVAL_LEVEL = 0.95  # every interval in the bench reports
TIE_TOLERANCE = 1e-9   # |ours - theirs| at most this (accuracy) is a tie, neither a win nor a loss
CLASSES_OF_DATASET = {'sim6': 6, 'sim10_hard': 10, 'avmnist': 10, 'sim6_solo': 6}  # records without n_classes
Cell = Tuple[str, str, str, float]
Key = Tuple[str, str, Optional[str]]  # (model, method, matched_to)


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


def record_protocol(protocol: str) -> str:
    """The records a protocol reads: P0's own, or the per-live-set ones P1 and P2 share."""
    return 'P0' if protocol == 'P0' else 'P1P2'


def _index(records: Sequence[Dict[str, Any]], dense: bool = False,
           protocol: str = 'P1') -> Dict[Cell, Dict[Key, Dict[int, float]]]:
    """{cell: {(model, method, matched_to): {seed: accuracy}}} of the protocol's pruned cells (``dense``: the
    unpruned ones only)."""
    want = record_protocol(protocol)
    out: Dict[Cell, Dict[Key, Dict[int, float]]] = collections.defaultdict(lambda: collections.defaultdict(dict))
    for r in records:
        if (r['method'] in DENSE_METHODS) != dense or r.get('protocol', 'P1P2') != want:
            continue
        out[_cell(r)][(r.get('model', 'sentryfuse'), r['method'], r.get('matched_to'))][int(r['seed'])] = \
            float(r['accuracy'])
    return out


def bootstrap_interval(matrix: Sequence[Dict[int, float]], *, resamples: int = 2000, seed: int = 0,
                       level: float = INTERVAL_LEVEL) -> Tuple[float, float]:
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
    return _percentiles(stats, level)


def _percentiles(values: List[float], level: float) -> Tuple[float, float]:
    values = sorted(values)
    n = len(values)
    return (values[int(math.floor((1 - level) / 2 * (n - 1)))], values[int(math.ceil((1 + level) / 2 * (n - 1)))])


def _candidates(per: Dict[Key, Dict[int, float]], protocol: str, models: Sequence[str],
                baselines: Sequence[str], method: str, ours_model: str):
    """{candidate name: (theirs {seed: acc}, ours {seed: acc})}: P0 pairs each static model with the SentryGate
    record matched to it; P1/P2 compare every candidate with the one SentryGate record."""
    out = {}
    for mdl in models:
        for b in baselines:
            theirs = per.get((mdl, b, None))
            name = f'{mdl}/{b}' if protocol != 'P2' else b
            ours = per.get((ours_model, method, f'{mdl}/{b}' if protocol == 'P0' else None))
            if theirs and ours:
                out[name] = (theirs, ours)
    return out


def _pick(cands, seeds: Sequence[int], s: int, selection: str, fixed: Optional[str]) -> Optional[str]:
    if selection == 'fixed':
        return fixed if fixed in cands else None
    pool = [t for t in seeds if t != s] if selection == 'held_out' else list(seeds)
    pool = pool or [s]
    return max(sorted(cands), key=lambda c: statistics.fmean(cands[c][0][t] for t in pool))


def protocol_rows(records: Sequence[Dict[str, Any]], protocol: str, *, method: str = 'sentrygate',
                  baselines: Sequence[str] = BASELINES, ours_model: str = 'sentryfuse',
                  models: Optional[Sequence[str]] = None, selection: str = 'held_out',
                  fixed: Optional[str] = None) -> List[Dict[str, Any]]:
    """Per cell: ours vs the comparison baseline of ``protocol``, per seed and mean (module docstring).

    Args:
        models: the candidate models (default: the protocol's, PROTOCOLS).
        selection: 'held_out' (best on the other seeds), 'post_hoc' (best on all seeds, after the fact) or
            'fixed' (``fixed``, 'model/method' for P0/P1 and 'method' for P2, named before the run).
    """
    if selection not in SELECTIONS:
        raise ConfigError(f'selection={selection!r}: expected one of {SELECTIONS}')
    models = PROTOCOLS[protocol][1] if models is None else tuple(models)
    full = full_condition(records)
    classes = {}
    for r in records:
        classes.setdefault(r['dataset'], int(r.get('n_classes') or CLASSES_OF_DATASET.get(r['dataset'], 0)) or None)
    rows = []
    for cell, per in sorted(_index(records, protocol=protocol).items()):
        cands = _candidates(per, protocol, models, baselines, method, ours_model)
        if selection == 'fixed':
            cands = {c: v for c, v in cands.items() if c == fixed}
        if not cands:
            continue
        seeds = sorted(set.intersection(*[set(t) & set(o) for t, o in cands.values()]))
        if not seeds:
            continue
        picks = {s: _pick(cands, seeds, s, selection, fixed) for s in seeds}
        ours = [cands[picks[s]][1][s] for s in seeds]
        best = [cands[picks[s]][0][s] for s in seeds]
        n_cls = classes.get(cell[1])
        chance = 1.0 / n_cls if n_cls else math.nan
        rows.append({
            'backbone': cell[0], 'dataset': cell[1], 'condition': cell[2], 'ratio': cell[3],
            'dropout': cell[2] != full[cell[1]], 'missing': full[cell[1]].count('+') - cell[2].count('+'),
            'seeds': seeds, 'ours': ours, 'best': best, 'picks': [picks[s] for s in seeds],
            'gains': [(o - t) / t if t > 0 else math.nan for o, t in zip(ours, best)],
            'points': [100.0 * (o - t) for o, t in zip(ours, best)],
            'acc': statistics.fmean(ours), 'best_acc': statistics.fmean(best),
            'best_baseline': collections.Counter(picks.values()).most_common(1)[0][0],
            'post_hoc': selection == 'post_hoc' or (selection == 'held_out' and len(seeds) == 1),
            'weak': statistics.fmean(best) < 1.5 * chance if n_cls else False,
        })
        rows[-1]['gain'], rows[-1]['pts'] = statistics.fmean(rows[-1]['gains']), statistics.fmean(rows[-1]['points'])
    return rows


def outcome(ours: float, theirs: float) -> str:
    """'win', 'tie' or 'loss' of one comparison (ties: within TIE_TOLERANCE, counted apart from wins)."""
    if abs(ours - theirs) <= TIE_TOLERANCE:
        return 'tie'
    return 'win' if ours > theirs else 'loss'


def summarize(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean gain and points over cells, their seed-bootstrap intervals, wins, the seed counts of the cells."""
    if not rows:
        return {'cells': 0, 'gain': math.nan, 'gain_ci': (math.nan, math.nan), 'pts': math.nan,
                'pts_ci': (math.nan, math.nan), 'wins': 0, 'ties': 0, 'losses': 0, 'seeds': '0', 'post_hoc': 0}
    counts = sorted({len(r['seeds']) for r in rows})
    results = collections.Counter(outcome(r['acc'], r['best_acc']) for r in rows)
    return {'cells': len(rows), 'gain': statistics.fmean(r['gain'] for r in rows),
            'gain_ci': bootstrap_interval([dict(zip(r['seeds'], r['gains'])) for r in rows]),
            'pts': statistics.fmean(r['pts'] for r in rows),
            'pts_ci': bootstrap_interval([dict(zip(r['seeds'], r['points'])) for r in rows]),
            'wins': results['win'], 'ties': results['tie'], 'losses': results['loss'],
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


def ablation_rows(records: Sequence[Dict[str, Any]], other: str,
                  reference: str = 'sentrygate') -> Optional[Dict[str, Any]]:
    """``other`` vs ``reference`` on the sentryfuse model, on the cells and seeds where both exist."""
    diffs, rel = [], []
    for cell, per in _index(records, dense=reference in DENSE_METHODS, protocol='P2').items():
        a, b = per.get(('sentryfuse', other, None)), per.get(('sentryfuse', reference, None))
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
        if r['method'] == 'dense' and r.get('protocol', 'P1P2') == 'P1P2':
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
