#!/usr/bin/env python3
"""Health under load, and how fast a dead camera is reported.

1. Load: sensor_sim, health_monitor and perception as separate processes at their configured
   rates (no scripted dropouts), every sensor publishing; then ``--hogs`` CPU-hog processes for
   ``--seconds``. Counts live -> not-live transitions in /sentryfuse/health and gaps between
   predictions longer than 3 inference periods, during the load.
2. Dead camera (after the hogs stop): the camera runs at 30 Hz in a driver process of its own,
   which is killed ``--kills`` times; reports the time from the kill (and from the stamp of the
   last frame) to the stamp of the first /sentryfuse/health saying the camera is not live
   (target: within 0.5 s). Header stamps, not receive times: this observer's own stalls on a
   loaded machine do not count.

    . .venv/bin/activate && . install/local_setup.bash
    ROS_DOMAIN_ID=14 python scripts/load_test.py [--seconds 60] [--hogs 2] [--kills 5] [--json out.json]

The observer (this process) runs at nice -10 when allowed (root), so its own starvation does not
count as a prediction gap.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from node_processes import (report, NodeProcess, Observer, gaps, not_live_transitions, params_file,  # noqa: E402
                            raise_own_priority, start_hogs, stop_hogs, workdir)

INFER_PERIOD = 0.1     # [s] perception.rate 10 Hz
CAMERA_RATE = 30.0     # [Hz] the camera driver of part 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=60.0, help='duration of the CPU load [s]')
    parser.add_argument('--hogs', type=int, default=2, help='CPU-hog processes during the load')
    parser.add_argument('--kills', type=int, default=5, help='camera driver kills in part 2 (0: skip)')
    parser.add_argument('--json', default='', help='also write the results to this file')
    return parser.parse_args(argv)


def load_phase(obs: Observer, seconds: float, hogs: int) -> dict:
    time.sleep(3.0)  # settle
    hog_procs = start_hogs(hogs)
    t0 = time.monotonic()
    try:
        time.sleep(seconds)
    finally:
        t1 = time.monotonic()
        stop_hogs(hog_procs)
    with obs.lock:
        predictions = [r.t for r in obs.records]
        stamps = sorted(r.stamp_s for r in obs.records if t0 <= r.t <= t1)
        health = list(obs.health)
    g = gaps(predictions, t0, t1)
    stamp_gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {
        'seconds': round(t1 - t0, 1), 'hogs': hogs,
        'loadavg_1min_at_end': os.getloadavg()[0],
        'predictions': sum(1 for t in predictions if t0 <= t <= t1),
        'expected_predictions': int((t1 - t0) / INFER_PERIOD),
        # receive times at this (niced) observer: an upper bound, its own stalls included
        'gaps_over_3_periods': sum(1 for x in g if x > 3 * INFER_PERIOD),
        'max_gap_s': round(max(g), 3),
        # between the header stamps (newest sensor sample used) of consecutive predictions
        'stamp_gaps_over_3_periods': sum(1 for x in stamp_gaps if x > 3 * INFER_PERIOD),
        'max_stamp_gap_s': round(max(stamp_gaps, default=float('nan')), 3),
        'not_live_transitions': not_live_transitions(health, t0, t1),
        'health_messages': sum(1 for h in health if t0 <= h[0] <= t1),
    }


def dead_camera_phase(obs: Observer, params, logs, kills: int) -> dict:
    latencies, from_last = [], []
    for k in range(kills):
        camera = NodeProcess('sensor_sim', f'camera_driver_{k}', params, logs,
                             ['-p', 'streams:=[camera]', '-p', f'camera.rate:={CAMERA_RATE}',
                              '-p', 'label.enabled:=false', '-p', 'battery.topic:=/camera_driver/battery'])
        started = time.time()
        if not obs.wait_all_live(60.0):
            raise SystemExit(f'camera driver {k} never made every modality live (log: {camera.log})')
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:  # this observer hears the new driver too
            with obs.lock:
                if sum(1 for _, stamp in obs.camera if stamp > started) > 30:
                    break
            time.sleep(0.1)
        time.sleep(1.0 + 0.13 * k)  # kill at a different phase of the 10 Hz checks each time
        t_kill = time.time()  # wall clock, as the nodes' header stamps
        camera.kill()
        deadline = time.monotonic() + 5.0
        reported = None
        while time.monotonic() < deadline and reported is None:
            time.sleep(0.01)
            with obs.lock:  # the stamp of the first health message saying the camera is not live
                reported = next((stamp for _, stamp, names, live, _ in obs.health
                                 if stamp > t_kill and not live[names.index('camera')]), None)
        with obs.lock:
            last_frame = max((stamp for _, stamp in obs.camera if stamp <= t_kill), default=t_kill)
        latencies.append(round(reported - t_kill, 3) if reported else None)
        from_last.append(round(reported - last_frame, 3) if reported else None)
    return {'camera_rate_hz': CAMERA_RATE, 'kill_to_not_live_s': latencies,
            'last_frame_to_not_live_s': from_last,
            'max_s': max((x for x in latencies if x is not None), default=None)}


def main(argv=None) -> int:
    args = parse_args(argv)
    niced = raise_own_priority()
    folder = workdir()
    params = params_file({'sensor_sim': {'scenario': '', 'streams': ['lidar', 'audio']}}, folder)
    procs = [NodeProcess('health_monitor', 'health_monitor', params, folder),
             NodeProcess('perception', 'perception', params, folder),
             NodeProcess('sensor_sim', 'sensor_sim', params, folder)]
    camera = NodeProcess('sensor_sim', 'camera_driver', params, folder,
                         ['-p', 'streams:=[camera]', '-p', 'label.enabled:=false',
                          '-p', 'battery.topic:=/camera_driver/battery'])
    obs = Observer()
    results = {'observer_niced': niced, 'logs': str(folder)}
    try:
        if not obs.wait_all_live(120.0):
            raise SystemExit(f'the nodes never made every modality live; logs in {folder}')
        results['load'] = load_phase(obs, args.seconds, args.hogs)
        camera.kill()
        if args.kills:
            results['dead_camera'] = dead_camera_phase(obs, params, folder, args.kills)
    finally:
        obs.close()
        camera.kill()
        results['exit_codes'] = {p.name: p.stop() for p in procs}
    return report(results, args.json)


if __name__ == '__main__':
    sys.exit(main())
