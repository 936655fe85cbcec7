"""What a bench report and `sentryfuse bench` print per protocol: the headline against the baseline fixed in
advance, the held-out and after-the-fact readings beside it, paired per-run statistics, and the
decomposition of SentryFuse's gain over plain training into curriculum, pruning-aware training and criterion.

Paired per-run: a training run is one (backbone, dataset, seed); its difference is the mean over its cells of
ours - comparison (P1: SentryGate on that seed's SentryFuse model minus the baseline on that seed's
conventional model; P2: both on the same checkpoint). The runs are the independent units: their mean, an
INTERVAL_LEVEL percentile bootstrap over runs, and how many runs are ahead, tied and behind.

Decomposition (masks per live set, on the cells and seeds where all four records exist), with ``c`` the
protocol-P2 headline criterion:
    curriculum              c on conventional        - c on conventional_nocurr
    pruning-aware training  c on sentryfuse          - c on conventional
    criterion               sentrygate on sentryfuse - c on sentryfuse
    total                   sentrygate on sentryfuse - c on conventional_nocurr   (points: the sum of the three)
"""
import collections
import math
import random
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sentryfuse_ros.core.bench import stats
from sentryfuse_ros.core.bench.spec import DEFAULT_HEADLINE

SMOKE_LABEL = 'SMOKE RUN (quick slice: a check that the pipeline runs, not a result)'


def _run_interval(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> Tuple[float, float]:
    """INTERVAL_LEVEL percentile bootstrap of the mean, resampling the values (runs) with replacement."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    if len(vals) == 1:
        return vals[0], vals[0]
    rng = random.Random(seed)
    means = [statistics.fmean(vals[rng.randrange(len(vals))] for _ in vals) for _ in range(resamples)]
    return stats._percentiles(means, stats.INTERVAL_LEVEL)


def paired_runs(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Per training run, the mean over its cells of ours - comparison; summarized over runs (module docstring)."""
    per: Dict[Tuple[str, str, int], Tuple[List[float], List[float]]] = collections.defaultdict(lambda: ([], []))
    for r in rows:
        for s, p, g in zip(r['seeds'], r['points'], r['gains']):
            per[(r['backbone'], r['dataset'], int(s))][0].append(p)
            per[(r['backbone'], r['dataset'], int(s))][1].append(g)
    pts = [statistics.fmean(v[0]) for v in per.values()]
    gains = [statistics.fmean(v[1]) for v in per.values()]
    tol = 100.0 * stats.TIE_TOLERANCE
    return {'runs': len(pts), 'pts': statistics.fmean(pts) if pts else math.nan, 'pts_ci': _run_interval(pts),
            'gain': statistics.fmean(gains) if gains else math.nan, 'gain_ci': _run_interval(gains),
            'ahead': sum(p > tol for p in pts), 'tied': sum(abs(p) <= tol for p in pts),
            'behind': sum(p < -tol for p in pts)}


def readings(records: Sequence[Dict[str, Any]], protocol: str, fixed: str,
             models: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """{'fixed' | 'held_out' | 'post_hoc': {'rows', 'all', 'dropout', 'paired'}} of one protocol."""
    out = {}
    for selection in stats.SELECTIONS:
        rows = stats.protocol_rows(records, protocol, models=models, selection=selection, fixed=fixed)
        out[selection] = {'rows': rows, 'all': stats.summarize(rows),
                          'dropout': stats.summarize([r for r in rows if r['dropout']]), 'paired': paired_runs(rows)}
    return out


def headline_line(records: Sequence[Dict[str, Any]], protocol: str, fixed: Optional[str] = None,
                  smoke: bool = False) -> str:
    """One line per protocol, as `sentryfuse bench` prints it (``smoke``: labelled as a smoke run)."""
    fixed = fixed or DEFAULT_HEADLINE[protocol]
    what = stats.PROTOCOLS[protocol][0].split(':')[0]
    tag = f' [{SMOKE_LABEL}]' if smoke else ''
    r = readings(records, protocol, fixed)
    s, d, p = r['fixed']['all'], r['fixed']['dropout'], r['fixed']['paired']
    if not s['cells']:
        return (f'{protocol} ({what}){tag}: no cells (needs sentrygate on sentryfuse and {fixed} on '
                f'{stats.PROTOCOLS[protocol][1]})')
    ho, ph = r['held_out']['all'], r['post_hoc']['all']
    held = 'held-out best' if not ho['post_hoc'] else (
        'held-out best (1 seed: picked after the fact)' if ho['post_hoc'] == ho['cells'] else
        f'held-out best ({ho["post_hoc"]} one-seed cells picked after the fact)')
    return (f'{protocol} ({what}){tag}: SentryGate vs {fixed} (fixed in advance) {_pct(s["gain"])} '
            f'[{_pct(s["gain_ci"][0])}, {_pct(s["gain_ci"][1])}] relative, {s["pts"]:+.2f} points, under dropout '
            f'{_pct(d["gain"])}; {s["wins"]} wins, {s["ties"]} ties, {s["losses"]} losses of {s["cells"]} cells; '
            f'{held} {_pct(ho["gain"])}, after the fact {_pct(ph["gain"])}; paired per run {p["pts"]:+.2f} '
            f'points [{p["pts_ci"][0]:+.2f}, {p["pts_ci"][1]:+.2f}] ({p["ahead"]}/{p["runs"]} runs ahead); '
            f'{s["seeds"]} seed(s) per cell')


def _pct(x: float) -> str:
    return 'n/a' if x is None or math.isnan(x) else f'{100 * x:+.1f}%'


DECOMPOSITION = (('curriculum', ('conventional', None), ('conventional_nocurr', None)),
                 ('pruning-aware training', ('sentryfuse', None), ('conventional', None)),
                 ('criterion', ('sentryfuse', 'sentrygate'), ('sentryfuse', None)),
                 ('total', ('sentryfuse', 'sentrygate'), ('conventional_nocurr', None)))


def decomposition(records: Sequence[Dict[str, Any]], criterion: str) -> List[Dict[str, Any]]:
    """The module docstring's four steps, each {'step', 'a', 'b', 'cells', pooled summary, 'paired'}."""
    keys = {(m, x or criterion, None) for _, a, b in DECOMPOSITION for m, x in (a, b)}
    full = stats.full_condition(records)
    step_rows: Dict[str, List[Dict[str, Any]]] = collections.defaultdict(list)
    for cell, per in sorted(stats._index(records, protocol='P1').items()):
        if not keys <= set(per):
            continue
        seeds = sorted(set.intersection(*[set(per[k]) for k in keys]))
        for step, a, b in DECOMPOSITION:
            va, vb = per[(a[0], a[1] or criterion, None)], per[(b[0], b[1] or criterion, None)]
            ours, theirs = [va[s] for s in seeds], [vb[s] for s in seeds]
            if not seeds:
                continue
            step_rows[step].append({
                'backbone': cell[0], 'dataset': cell[1], 'seeds': seeds, 'dropout': cell[2] != full[cell[1]],
                'points': [100.0 * (o - t) for o, t in zip(ours, theirs)],
                'gains': [(o - t) / t if t > 0 else math.nan for o, t in zip(ours, theirs)],
                'acc': statistics.fmean(ours), 'best_acc': statistics.fmean(theirs), 'post_hoc': False})
    out = []
    for step, a, b in DECOMPOSITION:
        rows = step_rows.get(step, [])
        for r in rows:
            r['gain'], r['pts'] = statistics.fmean(r['gains']), statistics.fmean(r['points'])
        out.append({'step': step, 'a': f'{a[1] or criterion} on {a[0]}', 'b': f'{b[1] or criterion} on {b[0]}',
                    **stats.summarize(rows), 'dropout_gain': stats.summarize([r for r in rows if r['dropout']])['gain'],
                    'paired': paired_runs(rows)})
    return out
