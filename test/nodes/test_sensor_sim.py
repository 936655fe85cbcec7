"""sensor_sim over real DDS: every stream at about its rate, and a scenario drop stops one."""
import time

import numpy as np

import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import BatteryState, Image, PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from sentryfuse_ros import msg_arrays  # noqa: E402
from sentryfuse_ros.core.errors import ConfigError  # noqa: E402
from sentryfuse_ros.msg import AudioFrame  # noqa: E402
from sentryfuse_ros.core.sim.sources import SimpleScene  # noqa: E402
from sentryfuse_ros.nodes.sensor_sim import SensorSim  # noqa: E402

pytestmark = pytest.mark.slow  # ROS end to end: nodes spinning over DDS

SCENARIO = """
events:
  - {t: 1.2, action: drop, modality: lidar}
  - {t: 1.2, action: battery, value: 0.2}
  - {t: 1.2, action: label, label: vehicle}
"""


def test_streams_rates_and_scenario_drop(ros_context, tmp_path):
    (tmp_path / 'sc.yaml').write_text(SCENARIO)
    params = {'scenario': str(tmp_path / 'sc.yaml'), 'camera.width': 32, 'camera.height': 24,
              'lidar.points': 256, 'battery.rate': 5.0, 'battery.drain_per_s': 0.01,
              'label.rate': 5.0, 'scene.kind': 'simple'}
    sim = SensorSim(context=ros_context,
                    parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    node = Node('sim_test', context=ros_context)
    got = {k: [] for k in ('camera', 'lidar', 'audio', 'battery', 'label')}

    def record(key):
        return lambda msg: got[key].append((sim.sim_time(), msg))

    node.create_subscription(Image, '/camera/image_raw', record('camera'), qos_profile_sensor_data)
    node.create_subscription(PointCloud2, '/lidar/points', record('lidar'), qos_profile_sensor_data)
    node.create_subscription(AudioFrame, '/audio/frames', record('audio'), qos_profile_sensor_data)
    node.create_subscription(BatteryState, '/battery_state', record('battery'), 10)
    node.create_subscription(String, '/sentryfuse/ground_truth', record('label'), 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sim)
    executor.add_node(node)
    try:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
    finally:
        executor.shutdown(timeout_sec=0)
        sim.destroy_node()
        node.destroy_node()

    def rate(key, t0=0.4, t1=1.15):  # after discovery, before the drop
        n = sum(1 for t, _ in got[key] if t0 <= t < t1)
        return n / (t1 - t0)

    print({k: round(rate(k), 1) for k in ('camera', 'lidar', 'audio')})
    assert rate('camera') == pytest.approx(15.0, rel=0.35)
    assert rate('lidar') == pytest.approx(10.0, rel=0.35)
    assert rate('audio') == pytest.approx(50.0, rel=0.35)
    # contents decode to the configured sizes
    assert msg_arrays.image_to_array(got['camera'][-1][1]).shape == (24, 32, 3)
    assert msg_arrays.pointcloud2_to_array(got['lidar'][-1][1]).shape == (256, 4)
    assert msg_arrays.audio_frame_to_array(got['audio'][-1][1]).shape == (160,)
    # the scenario dropped the lidar at 1.2 s (0.05 s scenario tick) but nothing else
    assert got['lidar'] and max(t for t, _ in got['lidar']) < 1.3
    assert max(t for t, _ in got['camera']) > 2.2 and max(t for t, _ in got['audio']) > 2.3
    # battery drains, then the scripted drop to 0.2; the label follows the scenario
    before = [m.percentage for t, m in got['battery'] if t < 1.15]
    after = [m.percentage for t, m in got['battery'] if t > 1.35]
    assert before == sorted(before, reverse=True) and 0.98 < before[-1] < 1.0
    assert after and all(0.18 < p <= 0.2 for p in after)
    assert got['battery'][-1][1].charge == pytest.approx(after[-1] * 10.0)
    assert [m.data for t, m in got['label'] if t > 1.35][-1] == 'vehicle'


@pytest.mark.parametrize('modality, shape', [('camera', (16, 20, 3)), ('lidar', (64, 4)),
                                             ('audio', (160,))])
def test_simple_scene_frames(modality, shape):
    scene = SimpleScene(width=20, height=16, points=64, frame_samples=160)
    frame = scene.make_frame(modality, 3.0)
    assert frame.shape == shape
    assert scene.label(3.0) == 'person' and scene.label(12.0) == 'vehicle'


def test_synthetic_scenes_are_coherent_across_streams():
    """The default scene source: all streams show the scene of the label, audio is sample-exact."""
    from sentryfuse_ros.core.data.scenes import SCENE_PRESETS, SceneStream
    from sentryfuse_ros.core.sim.sources import SyntheticScenes
    scenes = SyntheticScenes(preset='sim6', seed=3, duration=2.0, width=64, height=48, points=512)
    stream = SceneStream(SCENE_PRESETS['sim6'], seed=3, scene_duration_s=2.0)
    assert [scenes.label(t) for t in (0.5, 2.5, 4.5)] == [stream.scene_at(t).label for t in (0.5, 2.5, 4.5)]
    assert scenes.make_frame('camera', 0.1).shape == (48, 64, 3)
    assert scenes.make_frame('lidar', 0.1).shape == (512, 4)
    a = np.concatenate([scenes.make_frame('audio', 1.0 + 0.02 * i) for i in range(3)])
    assert a.shape == (480,)
    with pytest.raises(ConfigError, match=r"scene.preset='nope'"):
        SyntheticScenes(preset='nope')
    with pytest.raises(ConfigError, match=r'audio.sample_rate=16000'):
        SyntheticScenes(sample_rate=16000)


def test_robot_demo_settings_render_what_the_robot_model_was_trained_on():
    from sentryfuse_ros.commands.demo import DEMO_MODELS, demo_sets
    from sentryfuse_ros.core.runtime import params
    from sentryfuse_ros.core.sim.sources import SyntheticScenes
    sets = dict(s.split('=', 1) for s in demo_sets('robot'))
    defaults = {node: params.defaults(params.node_schema(node)) for node in params.NODES}
    for key in sets:
        node, param = key.split('.', 1)
        assert param in defaults[node], key
    source = SyntheticScenes(preset=sets['sensor_sim.scene.preset'], width=int(sets['sensor_sim.camera.width']),
                             height=int(sets['sensor_sim.camera.height']), points=int(sets['sensor_sim.lidar.points']),
                             sample_rate=int(sets['sensor_sim.audio.sample_rate']))
    assert source.make_frame('camera', 0.0).shape == (128, 416, 3)  # rendered at that size, not squashed
    assert source.make_frame('lidar', 0.0).shape == (16384, 4)
    assert DEMO_MODELS['tiny'] == []


def test_audio_frames_late_tick_caught_up_on_a_drift_free_schedule(ros_context):
    """Audio is a continuous signal: a timer tick 0.1 s late (rcl skips the 4 ticks it missed,
    which lost those frames: 47.5 frames/s instead of 50 under load) publishes every frame due,
    each stamped with its own time; a dropout longer than the backlog restarts from now."""
    clock = [100.0]
    sim = SensorSim(context=ros_context, parameter_overrides=[
        Parameter('streams', value=['audio']), Parameter('scenario', value=''),
        Parameter('scene.kind', value='simple')])
    sim._now = lambda: clock[0]  # the node's time, stepped by hand (its timers are never spun)
    node = Node('audio_test', context=ros_context)
    stamps = []
    node.create_subscription(AudioFrame, '/audio/frames',
                             lambda m: stamps.append(round(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, 3)),
                             qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)

    def tick(t, expect):
        clock[0] = t
        before = len(stamps)
        sim._publish_stream('audio')
        end = time.monotonic() + 10.0
        while len(stamps) < before + expect and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        return stamps[before:]

    try:
        time.sleep(1.0)  # discovery
        assert tick(100.0, 1) == [100.0]
        assert tick(100.021, 1) == [100.02]                  # on time (1 ms of jitter)
        assert tick(100.12, 5) == [100.04, 100.06, 100.08, 100.1, 100.12]   # 0.1 s late: caught up
        assert tick(101.0, 1) == [101.0]                     # 0.88 s behind > the backlog: restart
    finally:
        executor.shutdown(timeout_sec=0)
        sim.destroy_node()
        node.destroy_node()
