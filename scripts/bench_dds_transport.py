#!/usr/bin/env python3
"""How many KITTI-size messages does DDS deliver between two processes at 10 Hz? (no SentryFuse node)

Starts a subscriber process, publishes the real KITTI camera frame (1242x375 rgb8, 1.4 MB) and
velodyne scan (120k points, 1.9 MB) at --rate for --seconds, and prints sent vs received per topic.

    python scripts/bench_dds_transport.py [--qos reliable|sensor_data] [--seconds 10] [--rate 10]
"""
import argparse
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
KITTI = ROOT.parent / 'shared' / 'data' / 'kitti'


def _node(ctx, name):
    from rclpy.node import Node
    return Node(name, context=ctx)


def _spin_for(ctx, node, seconds):
    from rclpy.executors import SingleThreadedExecutor
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--qos', default='reliable', choices=('reliable', 'sensor_data'))
    parser.add_argument('--seconds', type=float, default=10.0)
    parser.add_argument('--rate', type=float, default=10.0)
    parser.add_argument('--domain-id', type=int, default=44)
    parser.add_argument('--role', default='pub', choices=('pub', 'sub'), help=argparse.SUPPRESS)
    args = parser.parse_args()

    import rclpy
    from sensor_msgs.msg import Image, PointCloud2
    from sentryfuse_ros.nodes import common
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=args.domain_id)
    qos = common.qos_profile(args.qos)
    node = _node(ctx, f'dds_transport_{args.role}')
    from sentryfuse_ros.core.data.topics import SENSOR_TOPICS  # noqa: PLC0415
    if args.role == 'sub':
        got = {'camera': 0, 'lidar': 0}
        node.create_subscription(Image, SENSOR_TOPICS['camera'][0], lambda m: got.__setitem__('camera', got['camera'] + 1), qos)
        node.create_subscription(PointCloud2, '/lidar/points', lambda m: got.__setitem__('lidar', got['lidar'] + 1), qos)
        _spin_for(ctx, node, args.seconds + 6.0)
        print(f"received camera {got['camera']} lidar {got['lidar']}", flush=True)
        return 0

    import cv2
    import numpy as np
    from sentryfuse_ros import msg_arrays as conv
    rgb = cv2.cvtColor(cv2.imread(str(KITTI / 'image_2' / '000001.png')), cv2.COLOR_BGR2RGB)
    points = np.fromfile(KITTI / 'velodyne' / '000001.bin', np.float32).reshape(-1, 4)
    sub = subprocess.Popen([sys.executable, __file__, '--role', 'sub', '--qos', args.qos,
                            '--seconds', str(args.seconds), '--domain-id', str(args.domain_id)],
                           stdout=subprocess.PIPE, text=True)
    camera, cloud = conv.array_to_image(rgb, encoding='rgb8'), conv.array_to_pointcloud2(points)
    pubs = (node.create_publisher(Image, SENSOR_TOPICS['camera'][0], qos),
            node.create_publisher(PointCloud2, '/lidar/points', qos))
    sent = [0]

    def tick():
        pubs[0].publish(camera)
        pubs[1].publish(cloud)
        sent[0] += 1
    _spin_for(ctx, node, 2.0)  # discovery
    node.create_timer(1.0 / args.rate, tick)
    _spin_for(ctx, node, args.seconds)
    out, _ = sub.communicate(timeout=60)
    print(f'qos {args.qos}: sent {sent[0]} of each ({camera.height}x{camera.width} rgb8 '
          f'{len(camera.data) / 1e6:.2f} MB, {len(points)} points {len(cloud.data) / 1e6:.2f} MB); {out.strip()}')
    ctx.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
