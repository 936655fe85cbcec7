"""Replay report: metrics.json, report.md and PNG plots (matplotlib Agg) from a ReplayResult.

:func:`build_metrics` turns the records of a replay (offline or live) into plain data: accuracy
overall, per phase (:mod:`sentryfuse_ros.core.replay.phases`) and per condition (modalities used @
budget), a confusion matrix, latency p50/p95/p99 per stage, the modality availability timeline,
budgets, sub-network switches and what was skipped. :func:`write_report` writes everything into
``DIR.partial`` and renames it to ``DIR`` at the end, so a folder named ``DIR`` is always complete.
"""
import json
import math
import pathlib
import shutil
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.replay.phases import Phase, format_summary, summarize
from sentryfuse_ros.core.replay.replay import STAGES, ReplayResult
from sentryfuse_ros.core.runtime.record import InferenceRecord

PLOTS = ('accuracy_budget.png', 'availability.png', 'latency.png', 'overview.png')
MODALITY_COLOURS = {'camera': 'tab:blue', 'lidar': 'tab:orange', 'audio': 'tab:green'}


def _pcts(values: Sequence[float]) -> Dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if not len(arr):
        return {'n': 0, 'p50': None, 'p95': None, 'p99': None, 'mean': None, 'max': None}
    return {'n': int(len(arr)), **{f'p{q}': float(np.percentile(arr, q)) for q in (50, 95, 99)},
            'mean': float(arr.mean()), 'max': float(arr.max())}


def _accuracy(records: Sequence[InferenceRecord]) -> Dict[str, Any]:
    scored = [r for r in records if r.truth is not None]
    correct = sum(r.label == r.truth for r in scored)
    return {'n': len(records), 'n_scored': len(scored),
            'accuracy': correct / len(scored) if scored else None}


def condition_of(record: InferenceRecord) -> str:
    return f"{'+'.join(record.modalities)} @ {record.budget:.2f}"


def build_metrics(result: ReplayResult, phases: Sequence[Phase] = ()) -> Dict[str, Any]:
    """All figures of one replay as JSON-ready data.

    Longer than most: most of it is the one literal that is the layout of metrics.json, kept whole
    so the file's structure reads in one place.

    Args:
        result: what the replay produced.
        phases: named stretches of bag time (scenario and injected drops); one phase covering the
            whole bag when empty.
    """
    recs = result.records
    duration = result.bag.get('duration_s', 0.0)
    phases = list(phases) or [Phase(0.0, max(duration, 1e-9) + 1e-6, 'whole bag')]
    has_labels = any(r.truth is not None for r in recs)
    summary = summarize(recs, phases)
    conditions: Dict[str, List[InferenceRecord]] = {}
    for r in recs:
        conditions.setdefault(condition_of(r), []).append(r)
    classes = list(result.class_names)
    truths = sorted({r.truth for r in recs if r.truth is not None} - set(classes))
    rows = classes + truths  # truth labels the model does not know get their own rows
    confusion = [[0] * len(classes) for _ in rows]
    for r in recs:
        if r.truth is not None:
            confusion[rows.index(r.truth)][classes.index(r.label)] += 1
    modalities = sorted({m for a in result.availability for m in a['live']},
                        key=lambda m: list(MODALITY_COLOURS).index(m) if m in MODALITY_COLOURS else 9)
    avail = result.availability
    budgets: Dict[str, int] = {}
    for r in recs:
        budgets[f"{r.budget:.2f}"] = budgets.get(f"{r.budget:.2f}", 0) + 1
    wall = result.wall_s
    return {
        'mode': result.mode,
        'bag': {k: v for k, v in result.bag.items()},
        'mapping': result.mapping, 'notes': result.notes, 'settings': result.settings,
        'sensor_topics': {m: t for m, t in result.mapping.items() if m in ('camera', 'lidar', 'audio')},
        'faults': result.faults, 'labels_source': result.labels_source or None,
        'run': {'wall_s': wall, 'speed_x_realtime': duration / wall if wall > 0 else None,
                'inferences': len(recs), 'prebuild_ms': result.prebuild_ms},
        'accuracy': {
            'has_labels': has_labels,
            'overall': _accuracy(recs),
            'phases': [{'name': p['name'], 'start': p['start'],
                        'end': None if math.isinf(p['end']) else p['end'], 'n': p['n'],
                        'n_scored': p['n_scored'], 'accuracy': p['accuracy'],
                        'modalities': p['modalities']} for p in summary['phases']],
            'conditions': {k: _accuracy(v) for k, v in sorted(conditions.items())},
            'confusion': {'rows_truth': rows, 'cols_predicted': classes, 'counts': confusion},
            'unknown_truth_labels': truths,
        },
        'latency_ms': {stage: _pcts([getattr(r, stage) for r in recs]) for stage in STAGES},
        'availability': {
            'fraction_live': {m: (sum(a['live'][m] for a in avail) / len(avail)) if avail else None
                              for m in modalities},
            'timeline': {'t': [round(a['t'], 4) for a in avail],
                         'live': {m: [int(a['live'][m]) for a in avail] for m in modalities},
                         'budget': [a['budget'] for a in avail],
                         'battery': [None if a['battery'] is None or math.isnan(a['battery']) else a['battery']
                                     for a in avail]},
            'modalities_used': {k: v for k, v in summary['overall']['modalities'].items()},
        },
        'budgets': {'inferences_per_budget': budgets,
                    'gflops_mean': summary['overall']['gflops_mean']},
        'switches': {'engine': result.switches, **summary['switches']},
        'subnetworks': summary['overall']['subnetworks'],
        'skipped': {'topics': result.read.get('skipped', {}),
                    'count': sum(v['count'] for v in result.read.get('skipped', {}).values()),
                    'deserialize_errors': result.read.get('errors', {}),
                    'injected_drops': result.read.get('injected_drops', {}),
                    'unknown_types': result.read.get('unknown_types', {}),
                    'engine_errors': result.engine_errors,
                    'engine_last_error': result.engine_last_error},
        'warnings': list(result.warnings),
        'read': {'messages': result.read.get('read', {}), 'out_of_order': result.read.get('out_of_order', 0)},
        'phase_table': format_summary(summary),
    }


# ---------------------------------------------------------------------------- plots
def _shade(ax, phases: Sequence[Phase], t_end: float) -> None:
    for i, p in enumerate(phases):
        if p.name not in ('all sensors', 'whole bag'):
            ax.axvspan(p.start, min(p.end, t_end), color='0.85' if i % 2 else '0.92', zorder=0)


def plot_accuracy_budget(ax, result: ReplayResult, phases: Sequence[Phase], window_s: float = 5.0) -> None:
    recs = result.records
    t_end = result.bag.get('duration_s', 0.0)
    _shade(ax, phases, t_end)
    scored = [r for r in recs if r.truth is not None]
    if scored:
        ts = np.array([r.t for r in scored])
        ok = np.array([r.label == r.truth for r in scored], dtype=float)
        acc = [ok[(ts > t - window_s) & (ts <= t)].mean() for t in ts]  # trailing window
        ax.plot(ts, acc, color='tab:purple', label=f'accuracy (trailing {window_s:g} s)')
    else:
        ax.text(0.5, 0.5, 'no labels: accuracy not available', transform=ax.transAxes, ha='center')
    if recs:
        ax.step([r.t for r in recs], [r.budget for r in recs], where='post', color='k',
                lw=1.2, label='compute budget used')
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(0, max(t_end, 1e-3))
    ax.set_ylabel('accuracy / budget')
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc='lower left', fontsize=7)
    ax.set_title('accuracy and compute budget over bag time', fontsize=9)


def plot_availability(ax, result: ReplayResult, phases: Sequence[Phase]) -> None:
    avail, recs = result.availability, result.records
    t_end = result.bag.get('duration_s', 0.0)
    _shade(ax, phases, t_end)
    mods = [m for m in MODALITY_COLOURS if any(m in a['live'] for a in avail)]
    step = (avail[1]['t'] - avail[0]['t']) if len(avail) > 1 else 0.1
    for row, m in enumerate(mods):
        spans = [(a['t'], step) for a in avail if a['live'].get(m)]
        ax.broken_barh(spans, (row + 0.55, 0.4), color=MODALITY_COLOURS[m], alpha=0.5)
        used = [r.t for r in recs if m in r.modalities]
        ax.plot(used, [row + 0.35] * len(used), '|', color=MODALITY_COLOURS[m], ms=4)
    ax.set_yticks([i + 0.5 for i in range(len(mods))], mods)
    ax.set_ylim(0, max(len(mods), 1))
    ax.set_xlim(0, max(t_end, 1e-3))
    ax.set_xlabel('bag time [s]')
    ax.set_title('modality availability (bar: live per health; ticks: used by an inference)', fontsize=9)


def plot_latency(ax, result: ReplayResult) -> None:
    recs = result.records
    for stage, colour in (('total_ms', 'k'), ('inference_ms', 'tab:red'),
                          ('preprocess_ms', 'tab:blue'), ('convert_ms', 'tab:green')):
        values = np.array([getattr(r, stage) for r in recs if getattr(r, stage) > 0])
        if len(values):
            bins = np.logspace(np.log10(max(values.min(), 1e-3)), np.log10(values.max() * 1.01 + 1e-3), 40)
            ax.hist(values, bins=bins, histtype='step', color=colour,
                    label=f'{stage[:-3]} p50 {np.percentile(values, 50):.2f} ms')
    ax.set_xscale('log')
    ax.set_xlabel('latency per inference [ms]')
    ax.set_ylabel('inferences')
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, 'no inferences', transform=ax.transAxes, ha='center')
    ax.set_title('latency per stage', fontsize=9)


def write_plots(folder: pathlib.Path, result: ReplayResult, phases: Sequence[Phase]) -> List[str]:
    import matplotlib  # noqa: PLC0415
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []
    for name, draw, size in (('accuracy_budget.png', lambda ax: plot_accuracy_budget(ax, result, phases), (8, 3)),
                             ('availability.png', lambda ax: plot_availability(ax, result, phases), (8, 2.4)),
                             ('latency.png', lambda ax: plot_latency(ax, result), (6, 3.2))):
        fig, ax = plt.subplots(figsize=size, dpi=90)
        draw(ax)
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        written.append(name)
    fig = plt.figure(figsize=(9, 6.4), dpi=80)
    grid = fig.add_gridspec(3, 1, height_ratios=(1.2, 0.9, 1.1))
    ax0 = fig.add_subplot(grid[0])
    plot_accuracy_budget(ax0, result, phases)
    plot_availability(fig.add_subplot(grid[1], sharex=ax0), result, phases)
    plot_latency(fig.add_subplot(grid[2]), result)
    fig.suptitle(f"sentryfuse replay ({result.mode}): {pathlib.Path(result.bag['path']).name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / 'overview.png')
    plt.close(fig)
    return written + ['overview.png']


# ---------------------------------------------------------------------------- markdown
def _f(value: Optional[float], fmt: str = '.3f') -> str:
    return '-' if value is None else format(value, fmt)


def report_markdown(metrics: Dict[str, Any]) -> str:
    bag, acc, run = metrics['bag'], metrics['accuracy'], metrics['run']
    lines = [f"# sentryfuse replay report ({metrics['mode']})", '',
             f"Bag `{bag['path']}`: {bag['storage']}, metadata v{bag['version']}, {bag['files']} file(s), "
             f"{bag['message_count']} messages, {bag['duration_s']:.1f} s. Replayed in {run['wall_s']:.1f} s "
             f"({_f(run['speed_x_realtime'], '.1f')}x real time), {run['inferences']} inferences "
             f"(settings: {metrics['settings']}).", '', '## Topics', '']
    lines += [f'- {n}' for n in metrics['notes']]
    skipped = metrics['skipped']
    if skipped['count']:
        lines += ['', f"Skipped {skipped['count']} messages on unmapped topics: "
                  + ', '.join(f"{t} ({v['type']}) x{v['count']}" for t, v in skipped['topics'].items())]
    if skipped['injected_drops']:
        lines += ['', f"Removed by fault injection: {skipped['injected_drops']} (faults: {metrics['faults']})"]
    if skipped['engine_errors']:   # malformed frames, counted as the node counts them on /diagnostics
        lines += ['', '## Input errors', '']
        lines += [f"- {m}: {n} messages failed ({skipped['engine_last_error'].get(m, '')})"
                  for m, n in sorted(skipped['engine_errors'].items())]
    if metrics['warnings']:
        lines += ['', '## Warnings', '']
        lines += [f'- {w}' for w in metrics['warnings']]
    lines += ['', '## Accuracy', '']
    if not acc['has_labels']:
        lines += ['No labels (no label topic mapped and no label file): latency and availability only.']
    else:
        o = acc['overall']
        lines += [f"Overall: **{_f(o['accuracy'])}** on {o['n_scored']} scored of {o['n']} inferences "
                  f"(labels: {metrics['labels_source']}; predictions near a label change not scored).", '',
                  '| phase | start [s] | end [s] | n scored | accuracy |', '|---|---|---|---|---|']
        lines += [f"| {p['name']} | {p['start']:.1f} | {_f(p['end'], '.1f')} | {p['n_scored']} | "
                  f"{_f(p['accuracy'])} |" for p in acc['phases']]
        lines += ['', '| condition (modalities @ budget) | n scored | accuracy |', '|---|---|---|']
        lines += [f"| {k} | {v['n_scored']} | {_f(v['accuracy'])} |" for k, v in acc['conditions'].items()]
        conf = acc['confusion']
        lines += ['', 'Confusion matrix (rows: truth, columns: predicted):', '',
                  '| truth \\ pred | ' + ' | '.join(conf['cols_predicted']) + ' |',
                  '|---' * (len(conf['cols_predicted']) + 1) + '|']
        lines += [f'| {row} | ' + ' | '.join(str(c) for c in counts) + ' |'
                  for row, counts in zip(conf['rows_truth'], conf['counts'])]
    lines += ['', '## Latency per stage [ms]', '', '| stage | n | p50 | p95 | p99 | max |', '|---|---|---|---|---|---|']
    lines += [f"| {s} | {v['n']} | {_f(v['p50'], '.2f')} | {_f(v['p95'], '.2f')} | {_f(v['p99'], '.2f')} | "
              f"{_f(v['max'], '.2f')} |" for s, v in metrics['latency_ms'].items()]
    av = metrics['availability']
    lines += ['', '## Availability, budgets, sub-networks', '',
              'Fraction of health checks with the modality live: '
              + ', '.join(f'{m} {_f(v, ".2f")}' for m, v in av['fraction_live'].items()), '',
              'Modalities used per inference: ' + ', '.join(f'{k} x{v}' for k, v in av['modalities_used'].items()),
              '', 'Inferences per compute budget: '
              + ', '.join(f'{k}: {v}' for k, v in metrics['budgets']['inferences_per_budget'].items()),
              '', f"Sub-network switches: {metrics['switches']['count']}", '',
              '```', metrics['phase_table'], '```', '']
    lines += [f'![{name}]({name})' for name in PLOTS if name != 'overview.png']
    return '\n'.join(lines) + '\n'


def write_report(out, result: ReplayResult, phases: Sequence[Phase] = (), *, overwrite: bool = False,
                 plots: bool = True) -> Dict[str, Any]:
    """metrics.json, records.jsonl, report.md and PNGs into ``out`` (staged in ``out.partial``)."""
    out = pathlib.Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f'--out {str(out)!r} exists; choose a new folder or pass --overwrite')
    staging = out.with_name(out.name + '.partial')
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        metrics = build_metrics(result, phases)
        metrics['plots'] = write_plots(staging, result, phases) if plots else []
        (staging / 'metrics.json').write_text(json.dumps(metrics, indent=1, default=float), encoding='utf-8')
        with open(staging / 'records.jsonl', 'w', encoding='utf-8') as fh:
            for r in result.records:
                fh.write(json.dumps(r.to_dict()) + '\n')
        (staging / 'report.md').write_text(report_markdown(metrics), encoding='utf-8')
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return metrics
