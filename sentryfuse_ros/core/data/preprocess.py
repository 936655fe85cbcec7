"""Raw sensor arrays -> model input tensors.

Shapes:
    camera  (H, W, 3) uint8 RGB          -> (3, S, SW) float32, S = image_size, SW = image_width (default S)
    lidar   (N, 4) float32 x,y,z,i [m]    -> (3, G, GW) float32 BEV grid, G = bev_size rows (x), GW = bev_width cols (y)
    audio   (L,) float32 mono in [-1, 1]  -> (A,) float32 at audio_rate, A = audio_samples

The per-modality functions take and return numpy arrays (cheap enough for a node callback:
a 1242x375 image or a 120k-point cloud in a few ms, no per-point Python loops);
``preprocess_sample`` / ``preprocess_batch`` wrap them into torch tensors.

BEV grid: row index grows with -x (forward is up), column index grows with -y (left is left); it covers
x in bev_x_range_m (default [-bev_range_m, bev_range_m]) and y in [-bev_range_m, bev_range_m];
channel 0 = log1p(points per cell) / log1p(LIDAR_COUNT_NORM), 1 = max height in the cell
mapped from bev_z_range_m to [0, 1] (0 where empty), 2 = mean intensity / intensity_scale.
"""
import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from sentryfuse_ros.core.config import check
from sentryfuse_ros.core.data.topics import MODALITIES  # noqa: F401  (canonical order everywhere; public here)
from sentryfuse_ros.core.errors import DataError


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 32           # camera images are resized to image_size rows (height S)
    bev_size: int = 32             # lidar BEV grid rows G (along x)
    bev_range_m: float = 16.0      # BEV covers y in [-range, range] metres (and x too unless bev_x_range_m is set)
    bev_z_range_m: tuple = (-2.0, 4.0)  # z window [m] kept for the BEV grid
    audio_rate: int = 8000         # model audio sample rate [Hz]
    audio_samples: int = 8000      # samples per inference window (1 s at 8 kHz)
    intensity_scale: float = 1.0   # lidar intensities are divided by this (255.0 for 8-bit sensors), then clipped to [0, 1]
    image_width: int = 0           # camera columns SW (0 = image_size, square); e.g. KITTI aspect 3.3:1
    bev_width: int = 0             # BEV grid columns GW along y (0 = bev_size, square)
    bev_x_range_m: tuple = ()      # [x_min, x_max] [m] of the BEV rows, e.g. [0, 70] forward only; () = [-range, range]

    def __post_init__(self):
        check(isinstance(self.image_size, int) and self.image_size >= 8, 'image_size', self.image_size, 'an int >= 8')
        check(isinstance(self.bev_size, int) and self.bev_size >= 8, 'bev_size', self.bev_size, 'an int >= 8')
        check(self.bev_range_m > 0, 'bev_range_m', self.bev_range_m, 'a positive distance in metres')
        check(len(self.bev_z_range_m) == 2 and self.bev_z_range_m[0] < self.bev_z_range_m[1],
              'bev_z_range_m', self.bev_z_range_m, '[z_min, z_max] with z_min < z_max')
        check(isinstance(self.audio_rate, int) and self.audio_rate > 0, 'audio_rate', self.audio_rate, 'a positive int [Hz]')
        check(isinstance(self.audio_samples, int) and self.audio_samples >= 256, 'audio_samples',
              self.audio_samples, 'an int >= 256')
        check(self.intensity_scale > 0, 'intensity_scale', self.intensity_scale, 'a positive divisor')
        check(isinstance(self.image_width, int) and (self.image_width == 0 or self.image_width >= 8), 'image_width',
              self.image_width, '0 (square) or an int >= 8')
        check(isinstance(self.bev_width, int) and (self.bev_width == 0 or self.bev_width >= 8), 'bev_width',
              self.bev_width, '0 (square) or an int >= 8')
        check(len(self.bev_x_range_m) in (0, 2) and (not self.bev_x_range_m or self.bev_x_range_m[0] < self.bev_x_range_m[1]),
              'bev_x_range_m', self.bev_x_range_m, '[] or [x_min, x_max] with x_min < x_max')
        object.__setattr__(self, 'bev_x_range_m', tuple(float(v) for v in self.bev_x_range_m))

    @property
    def image_hw(self) -> Tuple[int, int]:
        """(S, SW) camera input rows and columns."""
        return self.image_size, self.image_width or self.image_size

    @property
    def bev_hw(self) -> Tuple[int, int]:
        """(G, GW) BEV grid rows (x) and columns (y)."""
        return self.bev_size, self.bev_width or self.bev_size

    @property
    def bev_x_range(self) -> Tuple[float, float]:
        """[x_min, x_max) [m] covered by the BEV rows."""
        r = float(self.bev_range_m)
        return tuple(self.bev_x_range_m) if self.bev_x_range_m else (-r, r)


CAMERA_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # per-channel RGB mean (ImageNet), fixed
CAMERA_STD = np.array([0.229, 0.224, 0.225], np.float32)   # per-channel RGB std (ImageNet), fixed
_CAMERA_SCALE = (1.0 / (255.0 * CAMERA_STD)).astype(np.float32)  # (3,) u8 -> standardized, multiply ...
_CAMERA_SHIFT = (CAMERA_MEAN / CAMERA_STD).astype(np.float32)    # (3,) ... then subtract
LIDAR_COUNT_NORM = 32.0  # a cell with this many points has occupancy channel 1.0


def preprocess_camera(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """RGB image (H, W, 3) uint8 -> (3, S, SW) float32, area-resized and standardized.

    One resize straight to the model input (INTER_AREA), then one fused scale-and-shift per channel.

    Args:
        image: RGB image, any H, W >= 1 (a non-contiguous view, e.g. of a BGR buffer, is fine).
        cfg: gives (S, SW) = cfg.image_hw.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise DataError(f'camera image shape={getattr(image, "shape", type(image).__name__)}: expected (H, W, 3)')
    if image.dtype != np.uint8:
        raise DataError(f'camera image dtype={image.dtype}: expected uint8 RGB')
    s, sw = cfg.image_hw
    if image.shape[:2] == (s, sw):
        small = image
    else:
        small = cv2.resize(image, (sw, s), interpolation=cv2.INTER_AREA)  # (S, SW, 3) uint8
    x = np.empty((3, s, sw), np.float32)
    for c in range(3):  # (S, SW, 3) -> (3, S, SW), x = u8 * scale - shift per channel
        np.multiply(small[:, :, c], _CAMERA_SCALE[c], out=x[c], casting='unsafe')
        x[c] -= _CAMERA_SHIFT[c]
    return x


def preprocess_lidar(points: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Point cloud (N, 3|4) x, y, z[, intensity] in metres -> (3, G, GW) float32 BEV grid.

    Points that are non-finite or outside bev_x_range x [-R, R) x bev_z_range_m are dropped.
    Vectorised: counts and intensity sums by ``np.bincount``, the per-cell max height by one
    ``scatter_reduce(amax)`` (no ``np.maximum.at``, no per-point Python loop).

    Args:
        points: float32/float64 array (a strided view, e.g. of a PointCloud2 buffer, is fine); a
            missing intensity column counts as 0.
        cfg: gives (G, GW) = cfg.bev_hw, the x range, R = cfg.bev_range_m, the z window and intensity_scale.
    """
    if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[1] not in (3, 4):
        raise DataError(f'lidar points shape={getattr(points, "shape", type(points).__name__)}: expected (N, 3) or (N, 4)')
    if points.dtype.kind != 'f':
        raise DataError(f'lidar points dtype={points.dtype}: expected float32 or float64')
    g, gw = cfg.bev_hw
    r = float(cfg.bev_range_m)
    x_lo, x_hi = cfg.bev_x_range
    z_lo, z_hi = (float(v) for v in cfg.bev_z_range_m)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    keep = (x >= x_lo) & (x < x_hi) & (y >= -r) & (y < r) & (z >= z_lo) & (z < z_hi)  # NaN compares False
    if points.shape[1] == 4:
        keep &= np.isfinite(points[:, 3])
    pts = points[keep]
    row = np.clip(((x_hi - pts[:, 0]) * (g / (x_hi - x_lo))).astype(np.int64), 0, g - 1)
    col = np.clip(((r - pts[:, 1]) * (gw / (2 * r))).astype(np.int64), 0, gw - 1)
    flat = row * gw + col  # (M,)
    cells = g * gw
    count = np.bincount(flat, minlength=cells).astype(np.float32)
    z01 = torch.from_numpy(((pts[:, 2] - z_lo) * (1.0 / (z_hi - z_lo))).astype(np.float32))  # (M,) in [0, 1)
    height = torch.zeros(cells).scatter_reduce_(0, torch.from_numpy(flat), z01, 'amax').numpy()  # (G*GW,)
    if points.shape[1] == 4:
        inten = np.clip(pts[:, 3] / cfg.intensity_scale, 0.0, 1.0)
        mean_i = np.bincount(flat, weights=inten, minlength=cells).astype(np.float32) / np.maximum(count, 1.0)
    else:
        mean_i = np.zeros(cells, np.float32)
    occ = np.log1p(count) / np.float32(np.log1p(LIDAR_COUNT_NORM))
    return np.stack([occ, height, mean_i]).reshape(3, g, gw)  # (3, G*GW) -> (3, G, GW)


def preprocess_audio(pcm: np.ndarray, rate: int, cfg: PreprocessConfig) -> np.ndarray:
    """Mono PCM (L,) float in [-1, 1] at ``rate`` -> (A,) float32 at cfg.audio_rate.

    Resamples by linear interpolation when ``rate`` differs, then keeps the LAST A samples
    (the most recent window), zero-padding at the front when the clip is shorter.

    Args:
        pcm: float32/float64 samples; non-finite values are an error.
        rate: sample rate of ``pcm`` [Hz].
        cfg: gives the model rate and A = cfg.audio_samples.
    """
    if not isinstance(pcm, np.ndarray) or pcm.ndim != 1:
        raise DataError(f'audio pcm shape={getattr(pcm, "shape", type(pcm).__name__)}: expected (L,) mono')
    if pcm.dtype.kind != 'f':
        raise DataError(f'audio pcm dtype={pcm.dtype}: expected float32 in [-1, 1] (convert int16 / 32768 first)')
    if not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise DataError(f'audio rate={rate!r}: expected a positive int [Hz]')
    if not np.isfinite(pcm).all():
        raise DataError(f'audio pcm has {int((~np.isfinite(pcm)).sum())} non-finite samples: expected finite values')
    if rate != cfg.audio_rate and len(pcm) > 0:
        duration = len(pcm) / rate
        n_out = max(int(round(duration * cfg.audio_rate)), 1)
        t_out = np.arange(n_out) / cfg.audio_rate
        pcm = np.interp(t_out, np.arange(len(pcm)) / rate, pcm)
    a = cfg.audio_samples
    out = np.zeros(a, np.float32)
    tail = pcm[-a:] if len(pcm) else pcm
    out[a - len(tail):] = tail
    return out


def preprocess_sample(arrays: Mapping[str, np.ndarray], cfg: PreprocessConfig,
                      audio_rate: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Any subset of raw modality arrays -> dict of float32 tensors (no batch dim).

    Args:
        arrays: {'camera': (H,W,3) uint8, 'lidar': (N,3|4), 'audio': (L,)}, any subset.
        cfg: the preprocessing config.
        audio_rate: rate of arrays['audio'] [Hz]; default cfg.audio_rate.
    """
    unknown = sorted(set(arrays) - set(MODALITIES))
    if unknown:
        raise DataError(f'modalities {unknown}: expected some of {list(MODALITIES)}')
    out = {}
    for m in MODALITIES:
        if m not in arrays:
            continue
        if m == 'camera':
            x = preprocess_camera(arrays[m], cfg)
        elif m == 'lidar':
            x = preprocess_lidar(arrays[m], cfg)
        else:
            x = preprocess_audio(arrays[m], cfg.audio_rate if audio_rate is None else audio_rate, cfg)
        out[m] = torch.from_numpy(x)
    return out


def preprocess_batch(samples: Sequence[Mapping[str, np.ndarray]], cfg: PreprocessConfig,
                     audio_rate: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """A list of raw samples with the same modalities -> dict of (B, ...) float32 tensors."""
    if not samples:
        raise DataError('preprocess_batch: samples=[]: expected at least one sample')
    keys = set(samples[0])
    for i, sample in enumerate(samples):
        if set(sample) != keys:
            raise DataError(f'sample {i} has modalities {sorted(sample)}: expected {sorted(keys)} like sample 0')
    items = [preprocess_sample(s, cfg, audio_rate) for s in samples]
    return {m: torch.stack([it[m] for it in items]) for m in items[0]}  # B x (...) -> (B, ...)
