"""Preprocessing: shapes, BEV cell semantics, audio windowing, errors, and real KITTI sizes."""
import time

import cv2
import numpy as np
import pytest
import torch

from sentryfuse_ros.core.data import preprocess as pp
from sentryfuse_ros.core.errors import ConfigError, DataError

CFGS = [pp.PreprocessConfig(), pp.PreprocessConfig(image_size=16, bev_size=8, bev_range_m=4.0, audio_samples=256)]


@pytest.mark.parametrize('cfg', CFGS, ids=['default', 'tiny'])
@pytest.mark.parametrize('hw', [(96, 96), (375, 1242), (7, 5)])
def test_camera_shape_and_standardization(cfg, hw):
    img = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    x = pp.preprocess_camera(img, cfg)
    assert x.shape == (3, cfg.image_size, cfg.image_size) and x.dtype == np.float32 and np.isfinite(x).all()
    mean_rgb = np.round(pp.CAMERA_MEAN * 255).astype(np.uint8)
    flat = pp.preprocess_camera(np.broadcast_to(mean_rgb, (*hw, 3)).copy(), cfg)
    assert np.abs(flat).max() < 0.02  # the mean colour standardizes to ~0


def test_lidar_cells_height_intensity():
    cfg = pp.PreprocessConfig(bev_size=8, bev_range_m=4.0, bev_z_range_m=(-2.0, 2.0))
    pts = np.array([[3.5, 3.5, 0.0, 0.5],    # front-left corner cell: row 0, col 0
                    [3.6, 3.4, 1.0, 0.1],    # same cell, higher
                    [-3.9, -3.9, -2.0, 1.0],  # back-right corner: row 7, col 7, lowest height
                    [np.nan, 0, 0, 0.5],     # dropped: NaN
                    [10.0, 0, 0, 0.5],       # dropped: out of range
                    [0.0, 0.0, 3.0, 0.5]],   # dropped: above the z window
                   np.float32)
    g = pp.preprocess_lidar(pts, cfg)
    assert g.shape == (3, 8, 8) and g.dtype == np.float32
    occ = np.log1p(np.array([2.0, 1.0])) / np.log1p(pp.LIDAR_COUNT_NORM)
    np.testing.assert_allclose([g[0, 0, 0], g[0, 7, 7]], occ, rtol=1e-6)
    assert np.count_nonzero(g[0]) == 2
    np.testing.assert_allclose(g[1, 0, 0], 0.75)  # max z 1.0 in [-2, 2]
    np.testing.assert_allclose(g[2, 0, 0], 0.3, rtol=1e-6)  # mean intensity
    np.testing.assert_allclose(g[2, 7, 7], 1.0)
    xyz = pp.preprocess_lidar(pts[:, :3].astype(np.float64), cfg)  # (N, 3): intensity channel empty
    np.testing.assert_array_equal(xyz[:2], g[:2])
    assert not xyz[2].any()


def test_lidar_intensity_scale():
    cfg = pp.PreprocessConfig(bev_size=8, intensity_scale=255.0)
    g = pp.preprocess_lidar(np.array([[1.0, 1.0, 0.0, 127.5]], np.float32), cfg)
    np.testing.assert_allclose(g[2].max(), 0.5)


def test_audio_window_and_resampling():
    cfg = pp.PreprocessConfig(audio_samples=256)
    long = np.linspace(-1, 1, 1000, dtype=np.float32)
    np.testing.assert_array_equal(pp.preprocess_audio(long, 8000, cfg), long[-256:])  # the latest window
    short = np.ones(100, np.float32)
    out = pp.preprocess_audio(short, 8000, cfg)
    assert (out[:156] == 0).all() and (out[156:] == 1).all()  # zero-padded at the front
    t = np.arange(1600) / 16000
    up = pp.preprocess_audio(np.sin(2 * np.pi * 440 * t).astype(np.float32), 16000, cfg)  # 0.1 s at 16 kHz
    ref = np.sin(2 * np.pi * 440 * np.arange(800) / 8000)[-256:]
    np.testing.assert_allclose(up, ref, atol=0.02)
    assert pp.preprocess_audio(np.zeros(0, np.float32), 16000, cfg).shape == (256,)


def test_sample_and_batch_any_subset():
    cfg = CFGS[1]
    rng = np.random.default_rng(0)
    raw = {'camera': rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
           'lidar': rng.normal(0, 2, (50, 4)).astype(np.float32), 'audio': rng.uniform(-1, 1, 300).astype(np.float32)}
    for subset in (['camera'], ['lidar', 'audio'], ['camera', 'lidar', 'audio']):
        out = pp.preprocess_sample({m: raw[m] for m in subset}, cfg)
        assert list(out) == subset and all(isinstance(v, torch.Tensor) for v in out.values())
        batch = pp.preprocess_batch([{m: raw[m] for m in subset}] * 3, cfg)
        assert all(batch[m].shape == (3, *out[m].shape) for m in subset)
    assert pp.preprocess_sample({'audio': raw['audio']}, cfg, audio_rate=16000)['audio'].shape == (256,)


@pytest.mark.parametrize('fn, arg, match', [
    (pp.preprocess_camera, np.zeros((4, 4), np.uint8), r'camera image shape=\(4, 4\)'),
    (pp.preprocess_camera, np.zeros((4, 4, 3), np.float32), 'camera image dtype=float32'),
    (pp.preprocess_camera, [[1, 2, 3]], 'camera image shape=list'),
    (pp.preprocess_lidar, np.zeros((4, 5), np.float32), r'lidar points shape=\(4, 5\)'),
    (pp.preprocess_lidar, np.zeros((4, 4), np.int32), 'lidar points dtype=int32'),
    (pp.preprocess_audio, np.zeros((4, 2), np.float32), r'audio pcm shape=\(4, 2\)'),
    (pp.preprocess_audio, np.zeros(4, np.int16), 'audio pcm dtype=int16'),
    (pp.preprocess_audio, np.array([0.0, np.nan], np.float32), '1 non-finite'),
])
def test_input_errors(fn, arg, match):
    cfg = CFGS[1]
    with pytest.raises(DataError, match=match):
        fn(arg, 8000, cfg) if fn is pp.preprocess_audio else fn(arg, cfg)


def test_other_errors():
    cfg = CFGS[1]
    with pytest.raises(DataError, match='audio rate=0'):
        pp.preprocess_audio(np.zeros(4, np.float32), 0, cfg)
    with pytest.raises(DataError, match=r"modalities \['radar'\]"):
        pp.preprocess_sample({'radar': np.zeros(3)}, cfg)
    with pytest.raises(DataError, match=r"sample 1 has modalities \['audio'\]"):
        pp.preprocess_batch([{'camera': np.zeros((4, 4, 3), np.uint8)}, {'audio': np.zeros(4, np.float32)}], cfg)
    with pytest.raises(DataError, match=r'samples=\[\]'):
        pp.preprocess_batch([], cfg)
    with pytest.raises(ConfigError, match='intensity_scale=0'):
        pp.PreprocessConfig(intensity_scale=0)


def test_kitti_real_sizes(shared_data):
    """Real 1242x375 images and ~120k-point clouds: shapes, finiteness, and the time per call (printed)."""
    cfg = pp.PreprocessConfig()
    kitti = shared_data / 'kitti'
    for frame in ('000000', '000001', '000002'):
        img = cv2.cvtColor(cv2.imread(str(kitti / 'image_2' / f'{frame}.png')), cv2.COLOR_BGR2RGB)
        pts = np.fromfile(kitti / 'velodyne' / f'{frame}.bin', dtype=np.float32).reshape(-1, 4)  # (N*4,) -> (N, 4)
        t0 = time.perf_counter()
        cam = pp.preprocess_camera(img, cfg)
        t1 = time.perf_counter()
        bev = pp.preprocess_lidar(pts, cfg)
        t2 = time.perf_counter()
        assert cam.shape == (3, 32, 32) and np.isfinite(cam).all()
        assert bev.shape == (3, 32, 32) and np.isfinite(bev).all()
        assert bev[0].max() > 0.5 and 0 < bev[1].max() <= 1 and 0 < bev[2].max() <= 1
        print(f'kitti {frame}: camera {img.shape} {1e3 * (t1 - t0):.2f} ms, lidar {pts.shape} {1e3 * (t2 - t1):.2f} ms')


def _reference_bev(points, cfg):
    """The pre-vectorisation implementation (np.maximum.at), square grids only."""
    g, r = cfg.bev_size, float(cfg.bev_range_m)
    z_lo, z_hi = cfg.bev_z_range_m
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    keep = (x >= -r) & (x < r) & (y >= -r) & (y < r) & (z >= z_lo) & (z < z_hi) & np.isfinite(points[:, 3])
    pts = points[keep]
    row = np.clip(((r - pts[:, 0]) * g / (2 * r)).astype(np.int64), 0, g - 1)
    col = np.clip(((r - pts[:, 1]) * g / (2 * r)).astype(np.int64), 0, g - 1)
    flat = row * g + col
    count = np.bincount(flat, minlength=g * g).astype(np.float32)
    height = np.zeros(g * g, np.float32)
    np.maximum.at(height, flat, ((pts[:, 2] - z_lo) / (z_hi - z_lo)).astype(np.float32))
    inten = np.clip(pts[:, 3] / cfg.intensity_scale, 0.0, 1.0)
    mean_i = np.bincount(flat, weights=inten, minlength=g * g).astype(np.float32) / np.maximum(count, 1.0)
    occ = np.log1p(count) / np.float32(np.log1p(pp.LIDAR_COUNT_NORM))
    return np.stack([occ, height, mean_i]).reshape(3, g, g)


def test_vectorised_bev_equals_the_maximum_at_reference():
    rng = np.random.default_rng(3)
    pts = rng.uniform(-20, 20, (20000, 4)).astype(np.float32)
    pts[:, 2] = rng.uniform(-3, 5, len(pts))
    pts[:, 3] = rng.uniform(0, 1, len(pts))
    pts[::97, 0] = np.nan
    cfg = pp.PreprocessConfig(bev_size=64, bev_range_m=16.0)
    np.testing.assert_allclose(pp.preprocess_lidar(pts, cfg), _reference_bev(pts, cfg), rtol=1e-6, atol=1e-6)


def test_non_square_camera_goes_straight_to_the_model_input():
    cfg = pp.PreprocessConfig(image_size=128, image_width=416)
    img = np.random.default_rng(0).integers(0, 256, (375, 1242, 3), dtype=np.uint8)  # KITTI size
    x = pp.preprocess_camera(img, cfg)
    assert x.shape == (3, 128, 416) and x.dtype == np.float32
    small = cv2.resize(img, (416, 128), interpolation=cv2.INTER_AREA)
    ref = ((small.astype(np.float32) / 255 - pp.CAMERA_MEAN) / pp.CAMERA_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(x, ref, atol=1e-5)
    bgr_view = img[:, :, ::-1]  # a non-contiguous view is accepted as is
    assert pp.preprocess_camera(bgr_view, cfg).shape == (3, 128, 416)


def test_forward_only_non_square_bev_grid():
    cfg = pp.PreprocessConfig(bev_size=16, bev_width=8, bev_range_m=4.0, bev_x_range_m=(0.0, 32.0),
                              bev_z_range_m=(-2.0, 2.0))
    pts = np.array([[31.0, 3.9, 0.0, 1.0],    # far front-left: row 0, col 0
                    [0.5, -3.9, 0.0, 1.0],    # near right: row 15, col 7
                    [-1.0, 0.0, 0.0, 1.0],    # behind the sensor: dropped
                    [10.0, 5.0, 0.0, 1.0]], np.float32)  # outside the lateral range: dropped
    bev = pp.preprocess_lidar(pts, cfg)
    assert bev.shape == (3, 16, 8)
    assert bev[0, 0, 0] > 0 and bev[0, 15, 7] > 0 and (bev[0] > 0).sum() == 2


@pytest.mark.parametrize('kwargs, match', [
    ({'image_width': 4}, r'image_width=4: expected 0 \(square\) or an int >= 8'),
    ({'bev_width': 3}, r'bev_width=3'),
    ({'bev_x_range_m': (5.0, 1.0)}, r'bev_x_range_m=\(5.0, 1.0\): expected \[\] or \[x_min, x_max\]'),
])
def test_non_square_geometry_is_validated(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        pp.PreprocessConfig(**kwargs)
