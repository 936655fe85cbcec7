#!/usr/bin/env python3
"""How many KITTI-size messages does DDS deliver between two processes at 10 Hz, with Fast DDS's
defaults and with the shipped profile? (no SentryFuse node)

For each transport (Fast DDS defaults, then --profile, the shipped config/fastdds_large_messages.xml)
and each --qos, starts a publisher process, which starts its subscriber process (both with that
transport, on their own DDS domain), publishes the real KITTI camera frame (1242x375 rgb8, 1.4 MB)
and velodyne scan (120k points, 1.9 MB) at --rate for --seconds, and counts what arrived. One run
measures every configuration in turn and ends with a table of delivered / sent per topic.

    python scripts/bench_dds_transport.py [--seconds 60] [--rate 10] [--qos sensor_data reliable]
        [--profile config/fastdds_large_messages.xml] [--kitti ../shared/data/kitti]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
KITTI = ROOT.parent / 'shared' / 'data' / 'kitti'
PROFILE = ROOT / 'config' / 'fastdds_large_messages.xml'
PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
sys.path.insert(0, str(ROOT))
from sentryfuse_ros.core.data.topics import SENSOR_TOPICS  # noqa: E402  (the graph's default topics)

TOPICS = {m: SENSOR_TOPICS[m][0] for m in ('camera', 'lidar')}
IDLE_END_S = 3.0  # the subscriber stops this long after its last message (or at its deadline)


def _node(ctx, name):
    from rclpy.node import Node
    return Node(name, context=ctx)


def _spin_until(ctx, node, done, timeout):
    """Spin ``node`` until ``done()`` or ``timeout`` seconds; True when done."""
    from rclpy.executors import SingleThreadedExecutor
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if done():
            return True
        ex.spin_once(timeout_sec=0.05)
    return done()


def _start_ros(domain_id):
    import rclpy
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    return ctx


def run_subscriber(args) -> int:
    from sensor_msgs.msg import Image, PointCloud2

    from sentryfuse_ros.nodes import common
    ctx = _start_ros(args.domain_id)
    node, qos = _node(ctx, 'dds_transport_sub'), common.qos_profile(args.qos[0])
    got, last = {'camera': 0, 'lidar': 0}, [time.monotonic() + args.seconds + 30.0]

    def counter(topic):
        def count(_msg):
            got[topic] += 1
            last[0] = time.monotonic()
        return count
    node.create_subscription(Image, TOPICS['camera'], counter('camera'), qos)
    node.create_subscription(PointCloud2, TOPICS['lidar'], counter('lidar'), qos)
    _spin_until(ctx, node, lambda: time.monotonic() - last[0] > IDLE_END_S, args.seconds + 60.0)
    print('RESULT ' + json.dumps(got), flush=True)
    ctx.try_shutdown()
    return 0


def _kitti_messages(kitti: pathlib.Path):
    import cv2
    import numpy as np

    from sentryfuse_ros import msg_arrays as conv
    rgb = cv2.cvtColor(cv2.imread(str(kitti / 'image_2' / '000001.png')), cv2.COLOR_BGR2RGB)
    points = np.fromfile(kitti / 'velodyne' / '000001.bin', np.float32).reshape(-1, 4)
    return conv.array_to_image(rgb, encoding='rgb8'), conv.array_to_pointcloud2(points)


def run_publisher(args) -> int:
    from sensor_msgs.msg import Image, PointCloud2

    from sentryfuse_ros.nodes import common
    camera, cloud = _kitti_messages(args.kitti)
    sub = subprocess.Popen([sys.executable, __file__, '--role', 'sub', '--qos', args.qos[0],
                            '--seconds', str(args.seconds), '--domain-id', str(args.domain_id)],
                           stdout=subprocess.PIPE, text=True)
    ctx = _start_ros(args.domain_id)
    node, qos = _node(ctx, 'dds_transport_pub'), common.qos_profile(args.qos[0])
    pubs = (node.create_publisher(Image, TOPICS['camera'], qos),
            node.create_publisher(PointCloud2, TOPICS['lidar'], qos))
    matched = _spin_until(ctx, node, lambda: sub.poll() is not None
                          or all(p.get_subscription_count() for p in pubs), 60.0)
    sent = [0]

    def tick():
        pubs[0].publish(camera)
        pubs[1].publish(cloud)
        sent[0] += 1
    timer = node.create_timer(1.0 / args.rate, tick)
    t0 = time.monotonic()
    _spin_until(ctx, node, lambda: False, args.seconds)
    timer.cancel()
    elapsed = time.monotonic() - t0
    out, _ = sub.communicate(timeout=args.seconds + 90)
    got = _result(out, 'subscriber')
    print('RESULT ' + json.dumps(dict(got, sent=sent[0], matched=matched, elapsed_s=elapsed,
                                      camera_mb=len(camera.data) / 1e6, lidar_mb=len(cloud.data) / 1e6,
                                      image=f'{camera.width}x{camera.height} {camera.encoding}',
                                      points=cloud.width)), flush=True)
    ctx.try_shutdown()
    return 0


def _result(out: str, who: str) -> dict:
    line = next((line for line in out.splitlines() if line.startswith('RESULT ')), None)
    if line is None:
        raise SystemExit(f'the {who} process printed no RESULT line (its error is above); output: {out!r}')
    return json.loads(line[len('RESULT '):])


def _environment(profile):
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    if profile is not None:
        env.update({k: str(profile) for k in PROFILE_VARIABLES})
    return env


def _shown(path: pathlib.Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _machine() -> str:
    model = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo', encoding='utf-8')
                  if line.startswith('model name')), '?')
    return f'{model}, {os.cpu_count()} CPUs, load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}'


def run_all(args) -> int:
    """Every (transport, qos) in turn, each in its own publisher + subscriber processes."""
    print(f'machine: {_machine()}', flush=True)
    rows = []
    for t, (name, profile) in enumerate((('Fast DDS defaults', None), (_shown(args.profile), args.profile))):
        for q, qos in enumerate(args.qos):
            cmd = [sys.executable, __file__, '--role', 'pub', '--qos', qos, '--seconds', str(args.seconds),
                   '--rate', str(args.rate), '--kitti', str(args.kitti),
                   '--domain-id', str(args.domain_id + 2 * t + q)]
            out = subprocess.run(cmd, env=_environment(profile), stdout=subprocess.PIPE, text=True,
                                 timeout=args.seconds * 2 + 180).stdout
            res = _result(out, f'publisher ({name}, {qos})')
            rows.append((name, qos, res))
            print(f'{name} / {qos}: {json.dumps(res)}', flush=True)
    res = rows[0][2]
    print(f"\n{args.seconds:g} s at {args.rate:g} Hz, camera {res['image']} {res['camera_mb']:.2f} MB, "
          f"cloud {res['points']} points {res['lidar_mb']:.2f} MB; machine after: {_machine()}")
    width = max(len(name) for name, _, _ in rows)
    print(f"{'transport':<{width}}  {'qos':<12} {'sent':>5} {'camera':>15} {'lidar':>15}")
    for name, qos, res in rows:
        cells = [f"{res[k]:>5} {100.0 * res[k] / max(res['sent'], 1):6.1f}%" for k in ('camera', 'lidar')]
        print(f"{name:<{width}}  {qos:<12} {res['sent']:>5} {cells[0]:>15} {cells[1]:>15}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--qos', nargs='+', default=['sensor_data', 'reliable'],
                        choices=('reliable', 'sensor_data'))
    parser.add_argument('--seconds', type=float, default=60.0)
    parser.add_argument('--rate', type=float, default=10.0)
    parser.add_argument('--profile', type=pathlib.Path, default=PROFILE,
                        help='Fast DDS XML profile measured against the defaults')
    parser.add_argument('--kitti', type=pathlib.Path, default=KITTI,
                        help='KITTI folder with image_2/000001.png and velodyne/000001.bin')
    parser.add_argument('--domain-id', type=int, default=44, help='first of 2 x len(qos) DDS domains')
    parser.add_argument('--role', default='all', choices=('all', 'pub', 'sub'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    return {'all': run_all, 'pub': run_publisher, 'sub': run_subscriber}[args.role](args)


if __name__ == '__main__':
    sys.exit(main())
