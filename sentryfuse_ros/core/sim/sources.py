"""Scene sources for the simulated robot (ROS-free): what each sensor stream shows at time t.

A source has ``make_frame(modality, t) -> array`` and ``label(t) -> str``. :class:`SyntheticScenes`
shows coherent scenes from the core generator (core.data.scenes, the data the shipped models were
trained on): all streams show the same scene, which changes every ``duration`` seconds.
:class:`SimpleScene` is a trivial stand-in for plumbing tests. The sensor_sim node publishes what a
source renders; simulate-bag records the same scenes straight into a bag.
"""
import dataclasses
from typing import Optional, Protocol

import numpy as np

from sentryfuse_ros.core.data.scenes import SCENE_PRESETS, SceneStream
from sentryfuse_ros.core.errors import ConfigError

STREAMS = ('camera', 'lidar', 'audio')


class SceneSource(Protocol):
    """What the simulator shows: swap in a coherent scene generator with the same two methods."""

    def make_frame(self, modality: str, t: float) -> np.ndarray:
        """camera (H, W, 3) uint8 RGB; lidar (N, 4) float32 x,y,z,i; audio (L,) float32 in [-1, 1]."""

    def label(self, t: float) -> str:
        """Ground-truth class name at time ``t``."""


class SimpleScene:
    """A cycle of classes, each a colour, a ring of lidar points and a tone.

    Args:
        width, height: camera image size [px].
        points: lidar points per scan.
        sample_rate, frame_samples: audio rate [Hz] and samples per frame.
        classes: class names cycled every ``period`` seconds.
        period: seconds per class.
        seed: noise seed.
    """

    def __init__(self, *, width: int = 128, height: int = 128, points: int = 4096,
                 sample_rate: int = 8000, frame_samples: int = 160,
                 classes: tuple = ('person', 'vehicle', 'animal'), period: float = 10.0, seed: int = 0):
        self.width, self.height, self.points = width, height, points
        self.sample_rate, self.frame_samples = sample_rate, frame_samples
        self.classes, self.period = tuple(classes), period
        self._rng = np.random.default_rng(seed)
        self._override: Optional[str] = None

    def set_label(self, label: str) -> None:
        self._override = label

    def label(self, t: float) -> str:
        if self._override:
            return self._override
        return self.classes[int(t // self.period) % len(self.classes)]

    def _index(self, t: float) -> int:
        name = self.label(t)
        return self.classes.index(name) if name in self.classes else len(self.classes)

    def make_frame(self, modality: str, t: float) -> np.ndarray:
        k = self._index(t)
        if modality == 'camera':
            img = self._rng.integers(0, 40, (self.height, self.width, 3), dtype=np.uint8)
            img[..., k % 3] += 150
            return img
        if modality == 'lidar':
            angle = self._rng.uniform(0, 2 * np.pi, self.points)
            radius = 4.0 + 2.0 * k + self._rng.normal(0, 0.05, self.points)
            z = self._rng.uniform(-1.0, 1.0 + k, self.points)
            pts = np.stack([radius * np.cos(angle), radius * np.sin(angle), z,
                            self._rng.uniform(0, 1, self.points)], axis=1)  # (N, 4)
            return pts.astype(np.float32)
        if modality == 'audio':
            n = np.arange(self.frame_samples)
            time = t + n / self.sample_rate
            tone = 0.3 * np.sin(2 * np.pi * 220.0 * (k + 1) * time)
            return (tone + self._rng.normal(0, 0.01, self.frame_samples)).astype(np.float32)
        raise ConfigError(f'modality {modality!r}: expected one of {list(STREAMS)}')


class SyntheticScenes:
    """Coherent scenes from the core generator: camera, lidar and audio of the same scene.

    Args:
        preset: a name in core.scenes.SCENE_PRESETS.
        seed: timeline seed.
        duration: seconds per scene.
        width, height: camera image size [px] (rendered square, resized when not).
        points: lidar points per scan.
        sample_rate: audio rate [Hz]; must equal the preset's audio rate.
        frame_samples: audio samples per frame.
    """

    def __init__(self, *, preset: str = 'sim6', seed: int = 0, duration: float = 5.0, width: int = 128,
                 height: int = 128, points: int = 4096, sample_rate: int = 8000, frame_samples: int = 160):
        if preset not in SCENE_PRESETS:
            raise ConfigError(f'scene.preset={preset!r}: expected one of {sorted(SCENE_PRESETS)}')
        base = SCENE_PRESETS[preset]
        if base.image_width:  # a non-square preset (robot6) renders at the requested size directly
            cfg = dataclasses.replace(base, image_size=int(height), image_width=int(width), lidar_points=int(points))
        else:                 # square presets render square and are resized (as before)
            cfg = dataclasses.replace(base, image_size=int(max(width, height)), lidar_points=int(points))
        if cfg.audio_rate != sample_rate:
            raise ConfigError(f'audio.sample_rate={sample_rate!r}: scene preset {preset!r} renders audio '
                              f'at {cfg.audio_rate} Hz')
        self.stream = SceneStream(cfg, seed=seed, scene_duration_s=duration)
        self.size = (int(width), int(height))
        self.frame_samples = int(frame_samples)
        self._audio_t = None

    def label(self, t: float) -> str:
        return self.stream.scene_at(t).label

    def make_frame(self, modality: str, t: float) -> np.ndarray:
        if modality == 'camera':
            img = self.stream.camera(t)                                          # (S, SW, 3)
            if img.shape[1::-1] != self.size:
                import cv2  # noqa: PLC0415
                img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)  # (H, W, 3)
            return img
        if modality == 'lidar':
            return self.stream.lidar(t)                                          # (N, 4)
        if modality == 'audio':
            # consecutive frames, sample-exact, whatever the timer jitter
            rate = self.stream.cfg.audio_rate
            if self._audio_t is None or abs(t - self._audio_t) > 0.5:
                self._audio_t = t
            chunk = self.stream.audio_chunk(self._audio_t, self.frame_samples)  # (L,)
            self._audio_t += self.frame_samples / rate
            return chunk
        raise ConfigError(f'modality {modality!r}: expected one of {list(STREAMS)}')
