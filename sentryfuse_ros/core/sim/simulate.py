"""simulate-bag: the simulated robot's streams recorded straight into a rosbag2 bag, no live ROS.

The same coherent scenes as the sensor_sim node (:class:`~sentryfuse_ros.core.data.scenes.SceneStream`:
camera, lidar and audio of one scene, a new scene every ``scene_duration_s``), the same scenario
semantics (:mod:`sentryfuse_ros.core.sim.scenario`: drop/restore a stream, set the battery, which then
drains), written on a simulated clock as fast as the CPU renders: camera ``sensor_msgs/Image``
rgb8, lidar ``sensor_msgs/PointCloud2``, audio ``sentryfuse_ros/AudioFrame`` (20 ms S16LE),
battery ``sensor_msgs/BatteryState`` and the scene's class on a ``std_msgs/String`` label topic.

Clock: bag time 0 is ``start_time_s`` (epoch seconds). A camera/lidar message is recorded
``transport_delay_s`` after its header stamp; an audio frame's stamp is its first sample and it is
recorded when its last sample is in (stamp + frame duration).
"""
import dataclasses
import heapq
import pathlib
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from sentryfuse_ros.core.bags.types import (make_audio_frame, make_battery, make_image, make_pointcloud2,
                                          make_string, make_typestore)
from sentryfuse_ros.core.bags.writer import BagSink
from sentryfuse_ros.core.config import check
from sentryfuse_ros.core.sim.scenario import Scenario, ScenarioPlayer
from sentryfuse_ros.core.data.scenes import SCENE_PRESETS, SceneStream
from sentryfuse_ros.core.data.topics import BATTERY_TOPIC, LABEL_TOPIC, SENSOR_TOPICS

TYPES = {'camera': 'sensor_msgs/msg/Image', 'lidar': 'sensor_msgs/msg/PointCloud2',
         'audio': 'sentryfuse_ros/msg/AudioFrame', 'battery': 'sensor_msgs/msg/BatteryState',
         'labels': 'std_msgs/msg/String'}


@dataclasses.dataclass(frozen=True)
class SimBagConfig:
    """Defaults match the sensor_sim node's (core/runtime/params.py SENSOR_SIM; sim sits below runtime)."""
    preset: str = 'sim6'                  # core.scenes preset; must match the model's training data
    seed: int = 0                         # scene timeline seed
    scene_duration_s: float = 5.0         # [s] per scene
    camera_rate: float = 15.0             # [Hz]
    image_size: int = 128                 # camera images are (S, S, 3) rgb8
    lidar_rate: float = 10.0              # [Hz]
    lidar_points: int = 4096              # points per cloud
    audio_frame_samples: int = 160        # per AudioFrame (20 ms at 8 kHz)
    battery_rate: float = 1.0             # [Hz]
    battery_start: float = 1.0            # state of charge at t = 0
    battery_drain_per_s: float = 0.002    # state of charge lost per second
    label_rate: float = 10.0              # [Hz] ground-truth label messages
    transport_delay_s: float = 0.002      # receive time - header stamp for camera and lidar [s]
    start_time_s: float = 1.7e9           # bag clock origin [s since epoch]
    camera_topic: str = SENSOR_TOPICS['camera'][0]
    lidar_topic: str = SENSOR_TOPICS['lidar'][0]
    audio_topic: str = SENSOR_TOPICS['audio'][0]
    battery_topic: str = BATTERY_TOPIC
    labels_topic: str = LABEL_TOPIC

    def __post_init__(self):
        check(self.preset in SCENE_PRESETS, 'preset', self.preset, f'one of {sorted(SCENE_PRESETS)}')
        for key in ('scene_duration_s', 'camera_rate', 'lidar_rate', 'battery_rate', 'label_rate'):
            check(getattr(self, key) > 0, key, getattr(self, key), 'a positive number')
        for key in ('image_size', 'lidar_points', 'audio_frame_samples'):
            check(isinstance(getattr(self, key), int) and getattr(self, key) >= 16, key,
                  getattr(self, key), 'an int >= 16')
        check(0 <= self.battery_start <= 1, 'battery_start', self.battery_start, 'a fraction in [0, 1]')
        check(self.battery_drain_per_s >= 0, 'battery_drain_per_s', self.battery_drain_per_s, '>= 0')
        check(0 <= self.transport_delay_s < 0.05, 'transport_delay_s', self.transport_delay_s,
              'a delay in [0, 0.05) s')
        check(self.start_time_s >= 0, 'start_time_s', self.start_time_s, 'seconds >= 0')

    def topic(self, stream: str) -> str:
        return getattr(self, f'{stream}_topic')


class _World:
    """Scenario state over simulated time: dropped streams and the battery."""

    def __init__(self, scenario: Scenario, cfg: SimBagConfig):
        self.player = ScenarioPlayer(scenario)
        self.cfg = cfg
        self.dropped = set()
        self.level, self.t_level = cfg.battery_start, 0.0
        self.ignored: List[str] = []

    def advance(self, t: float) -> None:
        for ev in self.player.advance(t):
            if ev.action == 'drop':
                self.dropped.add(ev.modality)
            elif ev.action == 'restore':
                self.dropped.discard(ev.modality)
            elif ev.action == 'battery':
                self.level, self.t_level = float(ev.value), float(ev.t)
            else:  # 'label': the synthetic scenes choose their own class
                self.ignored.append(f't={ev.t:g}s {ev.action} {ev.label}: not supported by simulate-bag')

    def battery(self, t: float) -> float:
        return max(0.0, self.level - self.cfg.battery_drain_per_s * max(0.0, t - self.t_level))


def _ticks(stream: str, period: float, duration: float, offset: float = 0.0) -> Iterator[Tuple[float, str, int]]:
    k = 0
    while k * period + offset < duration - 1e-9:
        yield k * period + offset, stream, k
        k += 1


def simulate_bag(out, scenario: Scenario, *, storage: str = 'mcap', duration: Optional[float] = None,
                 config: SimBagConfig = SimBagConfig(),
                 progress: Optional[Callable[[float, str], None]] = None) -> Dict[str, Any]:
    """Write a bag of ``duration`` seconds (default: the scenario's, else 60) at ``out``.

    Returns a summary: messages per topic, duration, wall time, ignored scenario events.
    ``out`` appears only when the bag is complete (BagSink stages it in ``out.partial``).
    """
    duration = float(duration or scenario.duration or 60.0)
    check(duration > 0, '--duration', duration, 'a positive number of seconds')
    cfg = config
    scene_cfg = dataclasses.replace(SCENE_PRESETS[cfg.preset], image_size=cfg.image_size,
                                    lidar_points=cfg.lidar_points)
    stream = SceneStream(scene_cfg, seed=cfg.seed, scene_duration_s=cfg.scene_duration_s)
    audio_rate = scene_cfg.audio_rate
    frame_s = cfg.audio_frame_samples / audio_rate
    store = make_typestore()
    world = _World(scenario, cfg)
    origin_ns = int(round(cfg.start_time_s * 1e9))
    counts = {s: 0 for s in TYPES}
    delay = cfg.transport_delay_s
    # (sample time, stream, index); messages are recorded in receive-time order
    ticks = heapq.merge(_ticks('labels', 1 / cfg.label_rate, duration),
                        _ticks('battery', 1 / cfg.battery_rate, duration),
                        _ticks('camera', 1 / cfg.camera_rate, duration),
                        _ticks('lidar', 1 / cfg.lidar_rate, duration),
                        _ticks('audio', frame_s, duration))
    pending: List[Tuple[int, int, str, Any]] = []  # (receive ns, seq, topic, msg) heap
    seq = 0
    t_wall = time.perf_counter()
    ns = lambda t: origin_ns + int(round(t * 1e9))  # noqa: E731

    with BagSink(out, storage=storage, typestore=store) as sink:
        for s in TYPES:
            sink.add_topic(cfg.topic(s), TYPES[s])

        def flush(until_ns: int) -> None:
            while pending and pending[0][0] <= until_ns:
                t_ns, _, topic, msg = heapq.heappop(pending)
                sink.write(topic, t_ns, msg)

        for t, s, k in ticks:
            world.advance(t)
            flush(ns(t))
            if s in world.dropped:
                continue
            if s == 'camera':
                img = stream.camera(t)                                               # (S, S, 3)
                msg, recv = make_image(store, np.ascontiguousarray(img), ns(t), 'camera'), t + delay
            elif s == 'lidar':
                msg, recv = make_pointcloud2(store, stream.lidar(t), ns(t), 'lidar'), t + delay
            elif s == 'audio':
                pcm = stream.audio_chunk(k * frame_s, cfg.audio_frame_samples)     # (L,)
                msg = make_audio_frame(store, pcm, audio_rate, ns(k * frame_s))
                recv = (k + 1) * frame_s
            elif s == 'battery':
                msg, recv = make_battery(store, world.battery(t), ns(t)), t
            else:
                msg, recv = make_string(store, stream.scene_at(t).label), t
            heapq.heappush(pending, (ns(recv), seq, cfg.topic(s), msg))
            seq += 1
            counts[s] += 1
            if progress is not None and s == 'lidar' and k % 50 == 0:
                progress(t / duration, f'{t:.0f}/{duration:.0f} s simulated')
        flush(ns(duration + 1.0))
    if progress is not None:
        progress(1.0, f'{duration:.0f}/{duration:.0f} s simulated')
    return {'path': str(pathlib.Path(out)), 'storage': storage, 'duration_s': duration,
            'messages': {cfg.topic(s): n for s, n in counts.items()},
            'wall_s': time.perf_counter() - t_wall, 'ignored_events': world.ignored,
            'classes': list(stream.scene(i).label for i in range(int(duration // cfg.scene_duration_s) + 1))}


def scene_truth(config: SimBagConfig, t: float) -> str:
    """The class the simulated scene shows at ``t`` (for tests and label files)."""
    scene_cfg = SCENE_PRESETS[config.preset]
    return SceneStream(scene_cfg, seed=config.seed, scene_duration_s=config.scene_duration_s).scene_at(t).label
