"""Markdown for the readings of core/bench/readings.py: the headline per protocol (fixed baseline, held-out and
after-the-fact beside it, pooled and paired per run), one table per baseline model, P0's FLOP matching, and
the decomposition table."""
import math
from typing import Any, Dict, List, Sequence

from sentryfuse_ros.core.bench import readings as rd
from sentryfuse_ros.core.bench import stats
from sentryfuse_ros.core.bench.spec import DEFAULT_HEADLINE, PROTOCOL_NAMES

LEVEL = f'{100 * stats.INTERVAL_LEVEL:.0f}%'
READING_LABELS = {'fixed': 'fixed in advance (headline)', 'held_out': 'best on held-out seeds',
                  'post_hoc': 'best after the fact'}


def _pct(x: float) -> str:
    return 'n/a' if x is None or math.isnan(x) else f'{100 * x:+.1f}%'


def _ci(pair, pct: bool = True) -> str:
    lo, hi = pair
    return f'[{_pct(lo)}, {_pct(hi)}]' if pct else f'[{lo:+.2f}, {hi:+.2f}]'


def _reading_line(label: str, r: Dict[str, Any]) -> str:
    s, d, p = r['all'], r['dropout'], r['paired']
    return (f'| {label} | {s["cells"]} | {_pct(s["gain"])} {_ci(s["gain_ci"])} | {s["pts"]:+.2f} '
            f'{_ci(s["pts_ci"], pct=False)} | {_pct(d["gain"])} | {s["wins"]}/{s["ties"]}/{s["losses"]} | '
            f'{p["runs"]} | {p["pts"]:+.2f} {_ci(p["pts_ci"], pct=False)} | {p["ahead"]}/{p["tied"]}/{p["behind"]} |')


HEADER = [f'| comparison baseline | cells | mean relative gain [{LEVEL} seed bootstrap] | points [interval] | '
          f'under dropout | wins/ties/losses | runs | paired per run: points [{LEVEL} run bootstrap] | '
          'runs ahead/tied/behind |', '|---|---|---|---|---|---|---|---|---|']


def _label(selection: str, reading: Dict[str, Any], fixed: str) -> str:
    if selection == 'fixed':
        return f'{READING_LABELS[selection]} (`{fixed}`)'
    one_seed = selection == 'held_out' and reading['all']['cells'] and \
        reading['all']['post_hoc'] == reading['all']['cells']
    return READING_LABELS[selection] + (' (1 seed: nothing held out, picked after the fact)' if one_seed else '')


def headline_sections(records: Sequence[Dict[str, Any]], headline: Dict[str, str] = None) -> List[str]:
    """Per protocol: the three readings pooled over its models, then one table per conventional model."""
    headline = dict(DEFAULT_HEADLINE, **(headline or {}))
    lines = ['### Headline per protocol: SentryGate vs the baseline fixed in advance', '',
             'The baseline of each protocol is named in the bench config before the run (`headline`); the held-out '
             'and after-the-fact readings stand beside it. Pooled intervals resample seeds jointly over cells; the '
             'paired ones resample training runs (backbone x dataset x seed: SentryGate minus the baseline, same '
             'seed). A tie (equal accuracy) is not a win.', '']
    lines += test_set_sizes(records)
    for proto in PROTOCOL_NAMES:
        what = stats.PROTOCOLS[proto][0]
        fixed = headline[proto]
        lines += [f'#### {proto} ({what}); fixed baseline: `{fixed}`', '']
        model_sets = [(None, 'all baseline models')]
        if proto != 'P2':
            model_sets += [((m,), stats.MODEL_LABELS[m]) for m in stats.PROTOCOLS[proto][1]]
        for models, label in model_sets:
            if models is not None and proto != 'P2' and not fixed.startswith(models[0] + '/'):
                fixed_here = f'{models[0]}/{fixed.partition("/")[2]}'
            else:
                fixed_here = fixed
            r = rd.readings(records, proto, fixed_here, models=models)
            if not any(r[k]['all']['cells'] for k in r):
                continue
            lines += [f'Baseline models: {label}.', ''] + HEADER
            lines += [_reading_line(_label(k, r[k], fixed_here), r[k]) for k in stats.SELECTIONS]
            lines.append('')
        if proto == 'P0':
            lines += p0_matching(records)
    return lines


def test_set_sizes(records: Sequence[Dict[str, Any]]) -> List[str]:
    """Test samples per cell per dataset, and for sets under 2,000 the binomial sampling error of one cell."""
    by: Dict[str, Dict[str, Any]] = {}
    for r in records:
        if r.get('n_test'):
            d = by.setdefault(r['dataset'], {'n': int(r['n_test']), 'accs': []})
            d['accs'].append(float(r['accuracy']))
    if not by:
        return []
    parts = []
    for ds, d in sorted(by.items()):
        p = sum(d['accs']) / len(d['accs'])
        sd = 100.0 * math.sqrt(max(p * (1 - p), 0.0) / d['n'])
        note = '' if d['n'] >= 2000 else f' (under 2,000: one cell\'s accuracy carries about +-{sd:.1f} points of ' \
                                          f'sampling error at its mean accuracy {p:.2f}; the seed intervals include it)'
        parts.append(f'{ds} {d["n"]}{note}')
    return ['Test samples per cell: ' + '; '.join(parts) + '.', '']


def p0_matching(records: Sequence[Dict[str, Any]]) -> List[str]:
    """How closely SentryGate's realised FLOPs matched the static models' in P0."""
    gaps = [r['flops_gap'] for r in records if r.get('protocol') == 'P0' and r['method'] == 'sentrygate'
            and r.get('flops_gap') is not None]
    if not gaps:
        return []
    unmatched = sum(abs(g) > 0.03 for g in gaps)
    return [f'FLOPs matching: {len(gaps)} SentryGate records, realised / static FLOPs - 1 from {min(gaps):+.2%} to '
            f'{max(gaps):+.2%} (mean {sum(gaps) / len(gaps):+.2%}); {unmatched} outside 3%.', '']


def decomposition_section(records: Sequence[Dict[str, Any]], headline: Dict[str, str] = None) -> List[str]:
    """The decomposition table (core/bench/readings.py) with the P2 headline criterion."""
    criterion = dict(DEFAULT_HEADLINE, **(headline or {}))['P2']
    steps = rd.decomposition(records, criterion)
    if not any(s['cells'] for s in steps):
        return []
    lines = [f'### Decomposition: what each part of SentryFuse buys over plain training (criterion `{criterion}`, '
             'masks per live set, the same cells and seeds for every step)', '',
             f'| step | this | minus | cells | points [{LEVEL} seed bootstrap] | relative [interval] | under dropout | '
             f'paired per run: points [{LEVEL}] | runs ahead/tied/behind |', '|---|---|---|---|---|---|---|---|---|']
    for s in steps:
        p = s['paired']
        lines.append(f'| {s["step"]} | {s["a"]} | {s["b"]} | {s["cells"]} | {s["pts"]:+.2f} '
                     f'{_ci(s["pts_ci"], False)} | '
                     f'{_pct(s["gain"])} {_ci(s["gain_ci"])} | {_pct(s["dropout_gain"])} | {p["pts"]:+.2f} '
                     f'{_ci(p["pts_ci"], False)} | {p["ahead"]}/{p["tied"]}/{p["behind"]} |')
    return lines + ['']
