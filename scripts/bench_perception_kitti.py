#!/usr/bin/env python3
"""Perception at KITTI sensor sizes over DDS: stage latencies p50/p95 and the share outside the model.

Starts the real perception node in its own process (as on a robot), publishes a real KITTI camera
frame (1242x375, sensor_msgs/Image rgb8) and the real velodyne scan of the same frame (~120k points,
PointCloud2 x y z intensity) at --rate Hz, plus synthetic 100 ms AudioFrames at --rate Hz, for
--seconds, and collects the node's InferenceLatency messages. Then it times the same engine code in
this process without DDS (the same messages, converters, preprocessing and sub-network) for
comparison.

Usage:
    python scripts/bench_perception_kitti.py [--model models/sentryfuse_sim.pt] [--seconds 30]
        [--data ../shared/data] [--frame 000001] [--rate 10] [--qos sensor_data] [--threads 1]

Columns: p50/p95 in milliseconds. 'outside the model' = (total - inference) / total, per inference
(p50) and over the run (sum of outside time / sum of total time). sensor_age = now - stamp of the
newest sample at inference time (includes the wait for the next timer tick: up to one period).
"""
import argparse
import os
import pathlib
import platform
import subprocess
import sys
import time

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
STAGES = ('convert_ms', 'preprocess_ms', 'reconfigure_ms', 'inference_ms', 'total_ms', 'sensor_age_ms')
AUDIO_RATE = 16000   # [Hz] synthetic microphone (the node resamples to the model rate)


def load_kitti(data: pathlib.Path, frame: str):
    """(rgb (375, 1242, 3) uint8, points (N, 4) float32) of one KITTI frame."""
    bgr = cv2.imread(str(data / 'kitti' / 'image_2' / f'{frame}.png'), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f'cannot read {data / "kitti" / "image_2" / f"{frame}.png"}')
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])                                        # (H, W, 3)
    points = np.fromfile(data / 'kitti' / 'velodyne' / f'{frame}.bin', dtype='<f4').reshape(-1, 4)  # (N, 4)
    return rgb, points


def percentiles(values) -> tuple:
    arr = np.asarray(values, dtype=np.float64)
    return (float(np.percentile(arr, 50)), float(np.percentile(arr, 95))) if arr.size else (float('nan'),) * 2


def outside_share(rows) -> tuple:
    """(p50 of (total - inference) / total per inference, sum(total - inference) / sum(total))."""
    total = np.array([r['total_ms'] for r in rows])
    infer = np.array([r['inference_ms'] for r in rows])
    if not total.size:
        return float('nan'), float('nan')
    return float(np.median((total - infer) / total)), float((total - infer).sum() / total.sum())


# ---------------------------------------------------------------------------- over DDS
def run_dds(args, rgb, points) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, PointCloud2

    from sentryfuse_ros import msg_arrays as conv
    from sentryfuse_ros.msg import AudioFrame, InferenceLatency, Prediction
    from sentryfuse_ros.nodes import common

    env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain_id), OMP_NUM_THREADS=str(args.threads))
    node_cmd = [sys.executable, '-m', 'sentryfuse_ros.nodes.perception', '--ros-args',
                '-p', f'model_path:={args.model}', '-p', f'rate:={float(args.rate)}',
                '-p', f'qos:={args.qos}', '-p', 'stats_window:=1000']
    child = subprocess.Popen(node_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=args.domain_id)
    node = Node('bench_perception_kitti', context=ctx)
    qos = common.qos_profile(args.qos)
    from sentryfuse_ros.core.data.topics import SENSOR_TOPICS  # noqa: PLC0415
    pubs = {'camera': node.create_publisher(Image, SENSOR_TOPICS['camera'][0], qos),
            'lidar': node.create_publisher(PointCloud2, '/lidar/points', qos),
            'audio': node.create_publisher(AudioFrame, '/audio/frames', qos)}
    camera = conv.array_to_image(rgb, encoding='rgb8', frame_id='camera')
    cloud = conv.array_to_pointcloud2(points, frame_id='velodyne')
    n_audio = AUDIO_RATE // int(round(args.rate))
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n_audio) / AUDIO_RATE)).astype(np.float32)
    audio = conv.array_to_audio_frame(tone, sample_rate=AUDIO_RATE, frame_id='microphone')
    latencies, used = {}, {}   # by header stamp: a Prediction and its InferenceLatency share it
    measuring = {'on': False}
    publish_ms = []

    def key(msg):
        return msg.header.stamp.sec, msg.header.stamp.nanosec

    def on_latency(msg):
        if measuring['on']:
            latencies[key(msg)] = {k: getattr(msg, k) for k in STAGES}

    def on_prediction(msg):
        if measuring['on']:
            used[key(msg)] = '+'.join(msg.modalities_used)

    def tick():
        t0 = time.perf_counter()
        stamp = node.get_clock().now().to_msg()
        for name, msg in (('camera', camera), ('lidar', cloud), ('audio', audio)):
            msg.header.stamp = stamp
            pubs[name].publish(msg)
        publish_ms.append((time.perf_counter() - t0) * 1e3)

    node.create_subscription(InferenceLatency, '/sentryfuse/latency', on_latency, 100)
    node.create_subscription(Prediction, '/sentryfuse/prediction', on_prediction, 100)
    node.create_timer(1.0 / args.rate, tick)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    first = []
    node.create_subscription(InferenceLatency, '/sentryfuse/latency', lambda m: first.append(1), 10)
    try:
        deadline = time.monotonic() + 60.0
        while not first:
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f'perception node did not start:\n{child.stdout.read() if child.stdout else ""}')
            executor.spin_once(timeout_sec=0.05)
        end = time.monotonic() + args.warmup
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        measuring['on'] = True
        published_before = len(publish_ms)
        start = time.monotonic()
        while time.monotonic() < start + args.seconds:
            executor.spin_once(timeout_sec=0.05)
        measuring['on'] = False
        elapsed = time.monotonic() - start
        published = len(publish_ms) - published_before
    finally:
        child.terminate()
        try:
            out, _ = child.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            out, _ = child.communicate()
        executor.shutdown(timeout_sec=0)
        node.destroy_node()
        ctx.try_shutdown()
    rows = [dict(row, used=used.get(k, '?')) for k, row in latencies.items()]
    return {'rows': rows, 'elapsed': elapsed, 'published': published,
            'publish_ms': publish_ms, 'node_log': out,
            'sizes': (len(bytes(camera.data)), len(bytes(cloud.data)), len(bytes(audio.data)))}


# ---------------------------------------------------------------------------- in process
def run_engine(args, rgb, points) -> dict:
    import torch

    from sentryfuse_ros import msg_arrays as conv
    from sentryfuse_ros.core.runtime.engine import PerceptionEngine
    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
    from sentryfuse_ros.msg_arrays.modality_inputs import engine_converters
    from sentryfuse_ros.core.runtime.param_configs import engine_config

    torch.set_num_threads(args.threads)
    model, gate, _ = load_sentryfuse(args.model)
    engine = PerceptionEngine(model, gate.scores, engine_config({}))
    engine.prebuild()
    convert = engine_converters({'lidar': 'sensor_msgs/msg/PointCloud2'}, engine.pre.audio_rate)  # the node's
    n_audio = AUDIO_RATE // int(round(args.rate))
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n_audio) / AUDIO_RATE)).astype(np.float32)
    rows = []
    for i in range(args.engine_runs + 3):
        now = float(i) / args.rate
        # fresh messages every iteration, so each one is converted as the node would
        msgs = {'camera': conv.array_to_image(rgb, encoding='rgb8'), 'lidar': conv.array_to_pointcloud2(points),
                'audio': conv.array_to_audio_frame(tone, sample_rate=AUDIO_RATE)}
        t0 = time.perf_counter()
        for m in ('camera', 'lidar', 'audio'):
            engine.push(m, msgs[m], stamp_s=now, converter=convert[m], received_s=now)
        result = engine.infer(now, None, args.budget)
        total = (time.perf_counter() - t0) * 1e3
        if i >= 3:   # warm-up
            rows.append({'convert_ms': result.convert_ms, 'preprocess_ms': result.preprocess_ms,
                         'reconfigure_ms': result.reconfigure_ms, 'inference_ms': result.inference_ms,
                         'total_ms': total, 'sensor_age_ms': float('nan'), 'used': '+'.join(result.modalities_used),
                         'gflops': result.gflops})
    return {'rows': rows}


def main(argv=None) -> int:
    from sentryfuse_ros.core.pruning.budget import check_budget

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=pathlib.Path, default=ROOT / 'models' / 'sentryfuse_sim.pt')
    parser.add_argument('--data', type=pathlib.Path, default=ROOT.parent / 'shared' / 'data')
    parser.add_argument('--frame', default='000001')
    parser.add_argument('--seconds', type=float, default=30.0, help='measured time over DDS')
    parser.add_argument('--warmup', type=float, default=2.0, help='seconds after the first inference not measured')
    parser.add_argument('--rate', type=float, default=10.0, help='[Hz] sensor publication and inference rate')
    parser.add_argument('--qos', default='reliable', choices=['sensor_data', 'reliable'],
                        help="sensor QoS of publishers and node (default reliable: with best-effort "
                             "'sensor_data', Fast DDS lost 10-80%% of the 1.9 MB clouds on the development host)")
    parser.add_argument('--threads', type=int, default=1, help='torch threads (node: OMP_NUM_THREADS)')
    parser.add_argument('--engine-runs', type=int, default=100, help='in-process iterations (no DDS)')
    parser.add_argument('--domain-id', type=int, default=91)
    parser.add_argument('--budget', type=float, default=1.0, help='compute budget of the in-process engine runs')
    parser.add_argument('--engine-only', action='store_true', help='skip the DDS part (in-process engine only)')
    args = parser.parse_args(argv)
    args.budget = check_budget(args.budget, '--budget')  # where the budget enters
    if not args.model.is_file():
        print(f'no checkpoint at {args.model}; train one (sentryfuse train --config config/train_sim.yaml '
              f'--out {args.model}) or pass --model', file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    rgb, points = load_kitti(args.data, args.frame)

    if args.engine_only:
        engine = run_engine(args, rgb, points)
        print(f'KITTI frame {args.frame}: camera {rgb.shape[1]}x{rgb.shape[0]} rgb8, lidar {len(points)} points, '
              f'audio {AUDIO_RATE} Hz; model {args.model}; budget {args.budget}; torch threads {args.threads}; '
              f'{len(engine["rows"])} in-process inferences (no DDS), {engine["rows"][0]["gflops"]:.3f} GFLOPs')
        print(f'{"stage [ms]":18s} {"p50":>9s} {"p95":>9s}')
        for stage in STAGES[:-1]:
            a = percentiles([r[stage] for r in engine['rows']])
            print(f'{stage[:-3]:18s} {a[0]:9.2f} {a[1]:9.2f}')
        e50, esum = outside_share(engine['rows'])
        print(f'outside the model: {e50:.1%} median per inference, {esum:.1%} of all time over the run')
        return 0
    dds = run_dds(args, rgb, points)
    engine = run_engine(args, rgb, points)

    rows = dds['rows']
    if not rows:
        print('no InferenceLatency received; node log:\n' + dds['node_log'], file=sys.stderr)
        return 1
    print(f'KITTI frame {args.frame}: camera {rgb.shape[1]}x{rgb.shape[0]} rgb8 ({dds["sizes"][0] / 1e6:.2f} MB), '
          f'lidar {len(points)} points ({dds["sizes"][1] / 1e6:.2f} MB), audio {AUDIO_RATE} Hz '
          f'{dds["sizes"][2]} B frames; {args.rate:g} Hz each, qos {args.qos}, torch threads {args.threads}')
    print(f'model {args.model}; host {platform.machine()} {platform.processor() or ""} '
          f'{os.cpu_count()} cores; python {platform.python_version()}')
    print(f'over DDS: {len(rows)} inferences in {dds["elapsed"]:.1f} s ({len(rows) / dds["elapsed"]:.2f} Hz), '
          f'{dds["published"]} publications of each sensor; publish call p50 '
          f'{percentiles(dds["publish_ms"])[0]:.1f} ms for all three')
    mix = {}
    for r in rows:
        mix[r['used']] = mix.get(r['used'], 0) + 1
    print('modalities used: ' + ', '.join(f'{k} x{v}' for k, v in sorted(mix.items(), key=lambda kv: -kv[1])))
    full = 'camera+lidar+audio'
    if set(mix) != {full}:
        print(f'(not every inference got all three sensors; the DDS columns below use only the {mix.get(full, 0)} '
              f'that did, like the engine column)')
        rows = [r for r in rows if r['used'] == full]
    print()
    print(f'{"stage [ms]":18s} {"DDS p50":>9s} {"DDS p95":>9s}  {"engine p50":>9s}  {"engine p95":>9s}')
    fmt = lambda v: f'{v:9.2f}' if v == v else f'{"-":>9s}'  # noqa: E731
    for stage in STAGES:
        a = percentiles([r[stage] for r in rows])
        b = percentiles([r[stage] for r in engine['rows']]) if stage != 'sensor_age_ms' else (float('nan'),) * 2
        print(f'{stage[:-3]:18s} {fmt(a[0])} {fmt(a[1])}  {fmt(b[0])}  {fmt(b[1])}')
    d50, dsum = outside_share(rows)
    e50, esum = outside_share(engine['rows'])
    print(f'{"outside the model":18s} {d50:9.1%} {"":9s}  {e50:9.1%}     (median per inference)')
    print(f'{"":18s} {dsum:9.1%} {"":9s}  {esum:9.1%}     (share of all time over the run)')
    print()
    print(f'engine only: {len(engine["rows"])} inferences in this process, no DDS, same messages, converters, '
          f'preprocessing and sub-network ({engine["rows"][0]["gflops"]:.4f} GFLOPs); its total includes push()')
    if not rows:
        print('no InferenceLatency with all three sensors received; node log:\n' + dds['node_log'], file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
