"""sensor_sim: a simulated robot publishing camera, lidar, audio, battery and a label.

Content comes from a pluggable scene source (``make_frame(modality, t) -> array`` and
``label(t) -> str``). The default, :class:`SyntheticScenes`, shows coherent scenes from the core
generator (sentryfuse_ros.core.data.scenes, the data the shipped model was trained on): all streams
show the same scene, which changes every `scene.duration` seconds. :class:`SimpleScene`
(`scene.kind: simple`) is a trivial stand-in for plumbing tests. A scripted
scenario (YAML, see sentryfuse_ros.core.sim.scenario) drops and restores streams and sets the
battery level, which otherwise drains at `battery.drain_per_s`.
"""
import pathlib
from typing import Any, Mapping, Optional

from rclpy.node import Node
from sensor_msgs.msg import BatteryState, Image, PointCloud2
from std_msgs.msg import String

from sentryfuse_ros import msg_arrays
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.sim.scenario import Scenario, ScenarioEvent, ScenarioPlayer, load_scenario
from sentryfuse_ros.core.runtime import params
from sentryfuse_ros.core.sim.sources import SceneSource, SimpleScene, SyntheticScenes
from sentryfuse_ros.msg import AudioFrame
from sentryfuse_ros.nodes import common


AUDIO_MAX_BACKLOG_S = 0.25             # [s] audio frames caught up after a late timer tick; further behind: restart

def resolve_path(path: str) -> pathlib.Path:
    """An existing file: absolute, relative to the working directory, or to the package root
    (where config/ lives in a source checkout)."""
    p = pathlib.Path(path)
    roots = [pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parents[2]]
    try:  # an installed package: share/sentryfuse_ros holds config/
        from ament_index_python.packages import get_package_share_directory
        roots.append(pathlib.Path(get_package_share_directory('sentryfuse_ros')))
    except Exception:  # noqa: BLE001  (not installed, or no ament index here)
        pass
    for candidate in [p] + [r / p for r in roots] + [r / 'config' / p for r in roots]:
        if candidate.is_file():
            return candidate
    raise ConfigError(f'scenario={path!r}: no such file (looked in {[str(r) for r in roots]})')


def check_values(values: Mapping[str, Any]) -> None:
    """ConfigError for the first invalid parameter value (the schema's checks)."""
    params.check_values(params.SENSOR_SIM, values)


class SensorSim(Node):
    """Args:
        scene: the scene source (default :class:`SimpleScene` sized from the parameters).
        **kwargs: passed to rclpy Node (context, parameter_overrides, ...).
    """

    def __init__(self, scene: Optional[SceneSource] = None, **kwargs):
        super().__init__('sensor_sim', **kwargs)
        schema = params.SENSOR_SIM
        values = common.declare_parameters(self, schema)
        # start-up must not crash: each invalid value is logged and replaced by its default
        common.fall_back_to_defaults(self, values, params.defaults(schema), common.spec_checks(schema))
        common.fix_descriptors(self, schema)
        common.install_validator(self, schema, lambda v: v, lambda _built, _changed: None)
        self._v = values
        if scene is not None:
            self.scene = scene
        elif values['scene.kind'] == 'simple':
            self.scene = SimpleScene(
                width=values['camera.width'], height=values['camera.height'], points=values['lidar.points'],
                sample_rate=values['audio.sample_rate'], frame_samples=values['audio.frame_samples'],
                seed=values['seed'])
        else:
            self.scene = SyntheticScenes(
                preset=values['scene.preset'], seed=values['seed'], duration=float(values['scene.duration']),
                width=values['camera.width'], height=values['camera.height'], points=values['lidar.points'],
                sample_rate=values['audio.sample_rate'], frame_samples=values['audio.frame_samples'])
        scenario = Scenario()
        if values['scenario']:
            try:
                scenario = load_scenario(resolve_path(values['scenario']))
            except ConfigError as exc:
                self.get_logger().error(f'{exc}; running without a scenario')
        self._player = ScenarioPlayer(scenario)
        self.dropped = set()
        self._battery = float(values['battery.start'])
        self._t0 = self._now()
        self._t_battery = 0.0

        qos = common.qos_profile(values['qos'])
        types = {'camera': Image, 'lidar': PointCloud2, 'audio': AudioFrame}
        # only the streams it publishes: a lidar-only driver must not advertise a camera topic
        self._pubs = {s: self.create_publisher(types[s], values[f'{s}.topic'], qos)
                      for s in values['streams']}
        self._battery_pub = self.create_publisher(BatteryState, values['battery.topic'], 10)
        self._label_pub = self.create_publisher(String, values['label.topic'], 10)
        periods = {'camera': 1.0 / values['camera.rate'], 'lidar': 1.0 / values['lidar.rate'],
                   'audio': values['audio.frame_samples'] / values['audio.sample_rate']}
        self._audio_period = periods['audio']
        self._audio_next: Optional[float] = None  # [s] node time the next audio frame falls due
        self._timers = [self.create_timer(periods[s], lambda s=s: self._publish_stream(s))
                        for s in values['streams']]
        self._timers.append(self.create_timer(1.0 / values['battery.rate'], self._publish_battery))
        if values['label.enabled']:
            self._timers.append(self.create_timer(1.0 / values['label.rate'], self._publish_label))
        self._timers.append(self.create_timer(0.05, self._run_scenario))
        self.get_logger().info(f'publishing {list(values["streams"])}; scenario: '
                               f'{len(scenario.events)} events')

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def sim_time(self) -> float:
        """Seconds since the simulator started (node clock)."""
        return self._now() - self._t0

    def apply(self, event: ScenarioEvent) -> None:
        """Apply one scenario event now."""
        t = self.sim_time()
        if event.action == 'drop':
            self.dropped.add(event.modality)
        elif event.action == 'restore':
            self.dropped.discard(event.modality)
        elif event.action == 'battery':
            self._battery, self._t_battery = float(event.value), t
        elif event.action == 'label' and hasattr(self.scene, 'set_label'):
            self.scene.set_label(event.label)
        self.get_logger().info(f't={t:.1f}s scenario: {event.action} '
                               f'{event.modality or event.label or event.value}')

    def battery_fraction(self) -> float:
        drained = self._v['battery.drain_per_s'] * max(0.0, self.sim_time() - self._t_battery)
        return max(0.0, self._battery - drained)

    def _run_scenario(self) -> None:
        for event in self._player.advance(self.sim_time()):
            self.apply(event)

    def _publish_stream(self, stream: str) -> None:
        if stream in self.dropped:
            self._audio_next = None  # a dropout is not back-filled when the stream comes back
            return
        now = self._now()
        if stream != 'audio':
            self._publish_frame(stream, now, now)
            return
        # Audio is a continuous signal: every frame falls due on a drift-free schedule (a timer tick
        # later than one period is skipped by rcl, which used to lose that frame: 47.5 frames/s
        # instead of 50 under load). Up to AUDIO_MAX_BACKLOG_S behind is caught up, each frame
        # stamped with its own time; further behind, the stream restarts from now.
        period = self._audio_period
        if self._audio_next is None or now - self._audio_next > AUDIO_MAX_BACKLOG_S:
            self._audio_next = now
        while self._audio_next <= now + 0.5 * period:  # half a period of timer jitter either way
            self._publish_frame('audio', self._audio_next, now)
            self._audio_next += period

    def _publish_frame(self, stream: str, t: float, now: float) -> None:
        """One frame of ``stream`` for node time ``t`` [s] (stamped ``t``), published at ``now``."""
        frame = self.scene.make_frame(stream, t - self._t0)
        v = self._v
        if stream == 'camera':
            msg = msg_arrays.array_to_image(frame, encoding='rgb8', stamp=now,
                                             frame_id=v['camera.frame_id'])
        elif stream == 'lidar':
            msg = msg_arrays.array_to_pointcloud2(frame, frame_id=v['lidar.frame_id'], stamp=now)
        else:
            msg = msg_arrays.array_to_audio_frame(frame, sample_rate=v['audio.sample_rate'],
                                                   encoding=v['audio.encoding'], stamp=min(t, now),
                                                   frame_id=v['audio.frame_id'])
        self._pubs[stream].publish(msg)

    def _publish_battery(self) -> None:
        if 'battery' in self.dropped:
            return
        fraction = self.battery_fraction()
        msg = BatteryState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.percentage = float(fraction)
        msg.capacity = msg.design_capacity = float(self._v['battery.capacity'])
        msg.charge = float(fraction * self._v['battery.capacity'])
        msg.voltage = float(10.5 + 2.1 * fraction)
        msg.current = -1.0
        msg.present = True
        msg.power_supply_status = BatteryState.POWER_SUPPLY_STATUS_DISCHARGING
        self._battery_pub.publish(msg)

    def _publish_label(self) -> None:
        self._label_pub.publish(String(data=self.scene.label(self.sim_time())))


def main(args=None) -> int:
    return common.run_node(SensorSim, args)


if __name__ == '__main__':
    main()
