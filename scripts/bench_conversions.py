#!/usr/bin/env python3
"""Time sentryfuse_ros.msg_arrays on real KITTI sizes; prints median and p95 per operation.

Usage: python scripts/bench_conversions.py [--data ../shared/data] [--frame 000001] [--runs 50]
Frame 000001 is a 1242x375 image and a 120,268-point cloud.
"""
import argparse
import pathlib
import platform
import time

import cv2
import numpy as np

from sentryfuse_ros import msg_arrays as conv

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _time(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 95))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', type=pathlib.Path, default=ROOT.parent / 'shared' / 'data')
    parser.add_argument('--frame', default='000001')
    parser.add_argument('--runs', type=int, default=50)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    points = np.fromfile(args.data / 'kitti' / 'velodyne' / f'{args.frame}.bin',
                         dtype='<f4').reshape(-1, 4)  # (N, 4) x y z reflectance
    bgr = cv2.imread(str(args.data / 'kitti' / 'image_2' / f'{args.frame}.png'), cv2.IMREAD_COLOR)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    cloud = conv.array_to_pointcloud2(points)
    image = conv.array_to_image(rgb, encoding='rgb8')
    image_bgr = conv.array_to_image(rgb, encoding='bgr8')
    png = conv.array_to_compressed_image(rgb, fmt='png')
    jpeg = conv.array_to_compressed_image(rgb, fmt='jpeg', quality=90)
    t = np.arange(48000) / 48000
    audio = conv.array_to_audio_frame(0.5 * np.sin(2 * np.pi * 440 * t), sample_rate=48000)

    cases = [
        (f'PointCloud2 write ({points.shape[0]} pts)', lambda: conv.array_to_pointcloud2(points)),
        (f'PointCloud2 read ({points.shape[0]} pts)', lambda: conv.pointcloud2_to_array(cloud)),
        (f'Image rgb8 write ({rgb.shape[1]}x{rgb.shape[0]})',
         lambda: conv.array_to_image(rgb, encoding='rgb8')),
        ('Image bgr8 write', lambda: conv.array_to_image(rgb, encoding='bgr8')),
        ('Image rgb8 read', lambda: conv.image_to_array(image)),
        ('Image bgr8 read', lambda: conv.image_to_array(image_bgr)),
        (f'CompressedImage png decode ({len(png.data)} B)',
         lambda: conv.compressed_image_to_array(png)),
        (f'CompressedImage jpeg decode ({len(jpeg.data)} B)',
         lambda: conv.compressed_image_to_array(jpeg)),
        ('AudioFrame 1 s 48 kHz -> 16 kHz', lambda: conv.audio_frame_to_model_rate(audio, 16000)),
    ]
    print(f'# bench_conversions: KITTI frame {args.frame}, {args.runs} runs each, '
          f'{platform.processor() or platform.machine()}, numpy {np.__version__}, '
          f'cv2 {cv2.__version__} (1 thread)')
    print(f'{"operation":48s} {"median ms":>10s} {"p95 ms":>10s}')
    for name, fn in cases:
        median, p95 = _time(fn, args.runs)
        print(f'{name:48s} {median:10.3f} {p95:10.3f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
