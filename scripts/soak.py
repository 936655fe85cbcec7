#!/usr/bin/env python3
"""Soak: sensor_sim, health_monitor and perception as separate processes at their configured rates
(the simulated robot without scripted dropouts) for ``--minutes``; reports RSS per process
(start, end, max, growth after warm-up), predictions received vs expected, gaps between
predictions, InferenceLatency.total_ms p50/p95/p99 and the nodes' exit codes after Ctrl-C.

    . .venv/bin/activate && . install/local_setup.bash
    ROS_DOMAIN_ID=14 python scripts/soak.py --minutes 10 [--json soak.json]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from node_processes import report, NodeProcess, Observer, gaps, params_file, raise_own_priority, workdir  # noqa: E402

INFER_PERIOD = 0.1       # [s] perception.rate 10 Hz
SAMPLE_PERIOD = 10.0     # [s] between RSS samples
WARM_UP = 60.0           # [s] RSS growth is measured after this


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--minutes', type=float, default=10.0)
    parser.add_argument('--json', default='', help='also write the results to this file')
    args = parser.parse_args(argv)
    niced = raise_own_priority()
    folder = workdir()
    params = params_file({'sensor_sim': {'scenario': ''}}, folder)
    procs = [NodeProcess(exe, exe, params, folder) for exe in ('health_monitor', 'perception', 'sensor_sim')]
    obs = Observer()
    rss = {p.name: [] for p in procs}   # (seconds since start, MB)
    try:
        if not obs.wait_all_live(120.0):
            raise SystemExit(f'the nodes never made every modality live; logs in {folder}')
        t0 = time.monotonic()
        with obs.lock:
            del obs.records[:]  # latency is measured from here on
        end = t0 + args.minutes * 60.0
        while time.monotonic() < end:
            for p in procs:
                rss[p.name].append((time.monotonic() - t0, p.rss_mb()))
            time.sleep(min(SAMPLE_PERIOD, max(0.0, end - time.monotonic())))
        t1 = time.monotonic()
        for p in procs:
            rss[p.name].append((t1 - t0, p.rss_mb()))
    finally:
        obs.close()
        exit_codes = {p.name: p.stop() for p in procs}
    with obs.lock:
        received = [r.t for r in obs.records if t0 <= r.t <= t1]
        stamps = sorted(r.stamp_s for r in obs.records if t0 <= r.t <= t1)
        latency = np.array([r.total_ms for r in obs.records])
    g = gaps(received, t0, t1)
    stamp_gaps = np.diff(stamps) if len(stamps) > 1 else np.array([np.nan])
    results = {
        'minutes': round((t1 - t0) / 60.0, 2), 'observer_niced': niced, 'logs': str(folder),
        'predictions': len(received), 'expected_predictions': int((t1 - t0) / INFER_PERIOD),
        'gaps_over_3_periods': sum(1 for x in g if x > 3 * INFER_PERIOD),
        'max_gap_s': round(max(g), 3),
        'max_stamp_gap_s': round(float(np.max(stamp_gaps)), 3),
        'latency_total_ms': {f'p{q}': round(float(np.percentile(latency, q)), 2) for q in (50, 95, 99)}
        if latency.size else {},
        'rss_mb': {name: {'start': round(s[0][1], 1), 'end': round(s[-1][1], 1),
                          'max': round(max(v for _, v in s), 1),
                          'growth_after_warm_up': round(s[-1][1] - next(v for t, v in s if t >= min(WARM_UP, s[-1][0])), 1)}
                   for name, s in rss.items()},
        'exit_codes': exit_codes,
        'loadavg_1min_at_end': os.getloadavg()[0],
    }
    return report(results, args.json)


if __name__ == '__main__':
    sys.exit(main())
