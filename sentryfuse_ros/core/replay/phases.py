"""Scenario phases and per-phase summaries of a perception run (ROS-free).

A phase is a stretch of the scenario between two events, named by the state it leaves the robot
in ("all sensors", "lidar dropped", "battery 20%"). The demo and the bag replay both summarise
predictions per phase: accuracy against ground truth, latency percentiles, sub-network switches.
"""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sentryfuse_ros.core.runtime.record import InferenceRecord
from sentryfuse_ros.core.sim.scenario import Scenario


@dataclasses.dataclass(frozen=True)
class Phase:
    start: float   # [s] since the scenario started
    end: float     # [s]; inf for the last phase
    name: str


def scenario_phases(scenario: Scenario, duration: Optional[float] = None) -> List[Phase]:
    """Split ``scenario`` at its events into phases named by the resulting state."""
    end = float(duration or scenario.duration or float('inf'))
    dropped: List[str] = []
    battery: Optional[float] = None
    bounds: List[Tuple[float, str]] = [(0.0, 'all sensors')]
    for ev in scenario.events:
        if ev.t >= end:
            break
        if ev.action == 'drop' and ev.modality not in dropped:
            dropped.append(ev.modality)
        elif ev.action == 'restore' and ev.modality in dropped:
            dropped.remove(ev.modality)
        elif ev.action == 'battery':
            battery = ev.value
        else:
            continue
        parts = [f'{m} dropped' for m in dropped] or ['all sensors']
        if battery is not None:
            parts.append(f'battery {battery:.0%}')
        bounds.append((float(ev.t), ', '.join(parts)))
    phases = []
    for i, (start, name) in enumerate(bounds):
        stop = min(bounds[i + 1][0], end) if i + 1 < len(bounds) else end
        if stop > start:
            phases.append(Phase(start, stop, name))
    return phases


def summarize(records: Sequence[InferenceRecord], phases: Sequence[Phase]) -> Dict:
    """Per phase and overall: n, accuracy, latency p50/p95, modalities, sub-networks; switches."""
    def block(rs: Sequence[InferenceRecord]) -> Dict:
        scored = [r for r in rs if r.truth is not None]
        total = np.array([r.total_ms for r in rs]) if rs else np.zeros(0)
        infer = np.array([r.inference_ms for r in rs]) if rs else np.zeros(0)
        mods: Dict[str, int] = {}
        subs: Dict[str, int] = {}
        for r in rs:
            mods['+'.join(r.modalities)] = mods.get('+'.join(r.modalities), 0) + 1
            subs[r.subnetwork] = subs.get(r.subnetwork, 0) + 1
        return {
            'n': len(rs), 'n_scored': len(scored),
            'accuracy': (sum(r.label == r.truth for r in scored) / len(scored)) if scored else None,
            'total_ms_p50': float(np.percentile(total, 50)) if len(total) else None,
            'total_ms_p95': float(np.percentile(total, 95)) if len(total) else None,
            'inference_ms_p50': float(np.percentile(infer, 50)) if len(infer) else None,
            'gflops_mean': float(np.mean([r.gflops for r in rs])) if rs else None,
            'modalities': mods, 'subnetworks': subs,
        }
    out = {'phases': [], 'overall': block(records)}
    for phase in phases:
        rs = [r for r in records if phase.start <= r.t < phase.end]
        out['phases'].append({'name': phase.name, 'start': phase.start, 'end': phase.end, **block(rs)})
    switches = [r for prev, r in zip(records, records[1:]) if r.subnetwork != prev.subnetwork]
    out['switches'] = {
        'count': len(switches),
        'reconfigure_ms_p50': float(np.median([r.reconfigure_ms for r in switches])) if switches else None,
        'reconfigure_ms_max': float(max(r.reconfigure_ms for r in switches)) if switches else None,
    }
    return out


def format_summary(summary: Dict) -> str:
    """The summary as a fixed-width table."""
    def f(v, fmt):
        return format(v, fmt) if v is not None else '-'
    lines = [f'{"phase":34s} {"n":>4s} {"acc":>6s} {"p50 ms":>7s} {"p95 ms":>7s} {"GFLOPs":>7s}  modalities used']
    for p in summary['phases'] + [dict(summary['overall'], name='overall', start=None, end=None)]:
        span = f'{p["start"]:4.0f}-{p["end"]:3.0f}s ' if p.get('start') is not None else ''
        mods = ', '.join(f'{k} x{v}' for k, v in sorted(p['modalities'].items(), key=lambda kv: -kv[1])[:2])
        lines.append(f'{(span + p["name"])[:34]:34s} {p["n"]:4d} {f(p["accuracy"], ".3f"):>6s} '
                     f'{f(p["total_ms_p50"], ".1f"):>7s} {f(p["total_ms_p95"], ".1f"):>7s} '
                     f'{f(p["gflops_mean"], ".4f"):>7s}  {mods}')
    s = summary['switches']
    lines.append(f'sub-network switches: {s["count"]}; reconfigure time at a switch: '
                 f'p50 {f(s["reconfigure_ms_p50"], ".2f")} ms, max {f(s["reconfigure_ms_max"], ".2f")} ms '
                 f'(max includes first-time builds)')
    return '\n'.join(lines)
