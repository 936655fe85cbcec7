"""perception's lifecycle over real DDS, in one process: with autostart false it waits unconfigured;
configure builds the engine without subscribing; activate subscribes and infers; deactivate drops the
subscriptions and no forward pass happens while the sensors keep publishing; a failed configure
leaves it unconfigured with the reason on /diagnostics and a fixed model_path then configures; the
parameters configure reads change only while unconfigured; cleanup releases the model.
(The same with the `ros2 lifecycle` command line: test/test_ros2_lifecycle.py.)"""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from sentryfuse_ros import msg_arrays  # noqa: E402
from sentryfuse_ros.msg import Prediction  # noqa: E402
from sentryfuse_ros.nodes.perception import Perception  # noqa: E402
from ros_helpers import spin_until  # noqa: E402  (test/ is on sys.path via conftest)

pytestmark = pytest.mark.slow  # ROS end to end: nodes spinning over DDS

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
CAMERA = '/camera/image_raw'


class Rig:
    """An autostart-false perception node and a test node streaming camera frames at 10 Hz."""

    def __init__(self, ctx, model_path, **extra):
        overrides = {'autostart': False, 'model_path': str(model_path), 'rate': 10.0,
                     'diagnostics_period': 0.2, 'camera.max_age': 1.5, 'prebuild': False, **extra}
        self.perception = Perception(context=ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in overrides.items()])
        self.node = Node('lifecycle_test', context=ctx)
        self.camera = self.node.create_publisher(Image, CAMERA, 10)
        self.predictions, self.diagnostics = [], []
        self.node.create_subscription(Prediction, '/sentryfuse/prediction', self.predictions.append, 50)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 50)
        self.image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # (H, W, 3)
        self.node.create_timer(0.1, self._tick)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.perception)
        self.executor.add_node(self.node)

    def _tick(self):
        stamp = self.node.get_clock().now().nanoseconds * 1e-9
        self.camera.publish(msg_arrays.array_to_image(self.image, encoding='rgb8', stamp=stamp))

    def spin_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)

    def spin_until(self, predicate, timeout_s, what):
        spin_until(self.executor, predicate, timeout_s, what)

    def status(self, name, after=0):
        """The newest status ``name`` among the diagnostics received after index ``after``."""
        for diag in reversed(self.diagnostics[after:]):
            for status in diag.status:
                if status.name == name:
                    return status
        return None

    def close(self):
        self.executor.shutdown(timeout_sec=0)
        self.perception.destroy_node()
        self.node.destroy_node()


@pytest.fixture
def rig(ros_context, checkpoint):
    made = []

    def make(model_path=checkpoint, **extra):
        made.append(Rig(ros_context, model_path, **extra))
        return made[-1]

    yield make
    for r in made:
        r.close()


def values(status) -> dict:
    return {v.key: v.value for v in status.values}


def test_configure_activate_deactivate_and_no_forward_pass_while_inactive(rig):
    r = rig()
    p = r.perception
    assert p.lifecycle_state == 'unconfigured' and p.engine is None
    n = len(r.diagnostics)
    r.spin_until(lambda: r.status('sentryfuse: perception model', n) is not None, 5.0, 'unconfigured status')
    model = r.status('sentryfuse: perception model', n)
    assert model.level == bytes([0]) and model.message.startswith('unconfigured: no model loaded'), model

    assert p.trigger_configure() == SUCCESS
    assert p.lifecycle_state == 'inactive' and p.engine is not None
    assert r.node.count_subscribers(CAMERA) == 0  # configure loads; only activate subscribes
    r.spin_for(0.5)
    assert r.predictions == [] and p.engine.forward_passes == 0

    assert p.trigger_activate() == SUCCESS
    assert r.node.count_subscribers(CAMERA) == 1
    r.spin_until(lambda: len(r.predictions) >= 5, 10.0, 'five predictions while active')

    assert p.trigger_deactivate() == SUCCESS
    assert r.node.count_subscribers(CAMERA) == 0
    passes, published = p.engine.forward_passes, len(r.predictions)
    assert passes >= 5
    n = len(r.diagnostics)
    r.spin_for(2.0)  # the camera keeps publishing; perception does nothing with it
    assert p.engine.forward_passes == passes and len(r.predictions) == published
    status = r.status('sentryfuse: perception', n)
    assert status.level == bytes([0]) and status.message.startswith('inactive: no inference'), status
    assert values(status)['forward_passes'] == str(passes) and values(status)['lifecycle_state'] == 'inactive'

    assert p.trigger_activate() == SUCCESS
    r.spin_until(lambda: len(r.predictions) >= published + 3, 10.0, 'predictions after activating again')


def test_failed_configure_stays_unconfigured_then_a_fixed_model_path_configures(rig, tmp_path, checkpoint):
    missing = tmp_path / 'missing.pt'
    r = rig(model_path=missing)
    p = r.perception
    assert p.trigger_configure() == FAILURE
    assert p.lifecycle_state == 'unconfigured' and p.engine is None
    n = len(r.diagnostics)
    r.spin_until(lambda: r.status('sentryfuse: perception model', n) is not None, 5.0, 'model status')
    model = r.status('sentryfuse: perception model', n)
    assert model.level == bytes([2])
    assert model.message == f"cannot load model '{missing}': checkpoint '{missing}' does not exist or is not a file"
    result = p.set_parameters([Parameter('model_path', value=str(checkpoint))])[0]
    assert result.successful, result.reason
    assert p.trigger_configure() == SUCCESS and p.model_error == ''
    assert p.lifecycle_state == 'inactive' and p.engine is not None


def test_configure_time_parameters_change_only_while_unconfigured(rig, checkpoint):
    p = rig().perception
    assert p.trigger_configure() == SUCCESS and p.trigger_activate() == SUCCESS
    refused = p.set_parameters([Parameter('model_path', value='/elsewhere.pt')])[0]
    assert not refused.successful
    assert refused.reason == (
        "['model_path'] cannot change while the node is active: configure reads them; "
        '`ros2 lifecycle set /perception deactivate` (if active), `cleanup`, set them, then `configure`')
    assert p.get_parameter('model_path').value == str(checkpoint)
    live = p.set_parameters([Parameter('health_timeout', value=2.0)])[0]   # live in every state
    assert live.successful, live.reason
    fixed = p.set_parameters([Parameter('autostart', value=True)])[0]     # read once, at construction
    assert not fixed.successful and fixed.reason == 'Trying to set a read-only parameter: autostart.'

    assert p.trigger_deactivate() == SUCCESS and p.trigger_cleanup() == SUCCESS
    assert p.lifecycle_state == 'unconfigured' and p.engine is None
    assert p.set_parameters([Parameter('runtime_fallback', value=False)])[0].successful
    assert p.trigger_configure() == SUCCESS and p._values['runtime_fallback'] is False  # configure read it
