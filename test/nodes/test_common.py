"""nodes/common.py: start-up validation resets only the offending values (the rest of the
node's configuration survives one bad value), and run_node's shutdown paths."""
import pytest

from sentryfuse_ros.core.errors import ConfigError

rclpy = pytest.importorskip('rclpy')
from rclpy.parameter import Parameter  # noqa: E402

from sentryfuse_ros.nodes import common  # noqa: E402

DEFAULTS = {'rate': 10.0, 'topic': '/camera/image_raw', 'warn': 10.0, 'error': 5.0}


def checker(values):
    if not values['rate'] > 0:
        raise ConfigError(f"rate={values['rate']!r}: expected a positive number")
    if not values['topic']:
        raise ConfigError(f"topic={values['topic']!r}: expected a topic name")
    if values['warn'] < values['error']:
        raise ConfigError(f"warn={values['warn']!r}: expected >= error ({values['error']})")


@pytest.mark.parametrize('given, reset', [
    ({'rate': -1.0, 'topic': '/front/image_raw'}, [('rate',)]),
    ({'rate': -1.0, 'topic': '', 'warn': 20.0}, [('rate',), ('topic',)]),
    ({'error': 30.0, 'topic': '/front/image_raw'}, [('error',)]),
    ({'warn': 1.0, 'error': 30.0}, [('warn',), ('error',)]),   # inconsistent with each other: both
    ({'rate': 2.0, 'topic': '/x'}, []),
])
def test_offending_names_only_the_bad_values(given, reset):
    values = {**DEFAULTS, **given}
    found = common._offending(values, DEFAULTS, tuple(DEFAULTS), checker)
    assert [names for names, _ in found] == reset


def test_offending_falls_back_to_the_group_when_no_single_value_explains_it():
    def together(values):
        if values['rate'] + values['warn'] != 20.0:
            raise ConfigError('rate + warn: expected 20')
    values = {**DEFAULTS, 'rate': 3.0, 'warn': 3.0}
    assert [n for n, _ in common._offending(values, DEFAULTS, tuple(DEFAULTS), together)] == [
        ('rate', 'warn')]


def test_invalid_rate_at_startup_rejects_only_rate(ros_context, checkpoint):
    """`-p rate:=-1.0` used to reset every perception parameter (topics, device...) to its default."""
    from sentryfuse_ros.nodes.perception import Perception
    node = Perception(context=ros_context, parameter_overrides=[
        Parameter('rate', value=-1.0), Parameter('camera.topic', value='/front/image_raw'),
        Parameter('health_timeout', value=2.5), Parameter('model_path', value=str(checkpoint)),
        Parameter('prebuild', value=False), Parameter('lidar.max_age', value=0.8)])
    try:
        assert node.get_parameter('rate').value == 10.0
        assert node.get_parameter('camera.topic').value == '/front/image_raw'
        assert node.get_parameter('health_timeout').value == 2.5
        assert node.get_parameter('prebuild').value is False
        assert node.get_parameter('lidar.max_age').value == 0.8
        assert node._param_errors == ["rate=-1.0: expected a positive number; using the default for ['rate']"]
    finally:
        node.destroy_node()


def test_invalid_override_at_startup_keeps_the_battery_table(ros_context):
    """health_monitor: one bad battery value used to reset the whole table."""
    from sentryfuse_ros.nodes.health_monitor import HealthMonitor
    node = HealthMonitor(context=ros_context, parameter_overrides=[
        Parameter('compute_budget_override', value=-1.0),
        Parameter('budget_values', value=[1.0, 0.6, 0.4]),
        Parameter('camera.timeout', value=0.5)])
    try:
        assert node.get_parameter('compute_budget_override').value == 0.0
        assert node.get_parameter('budget_values').value == [1.0, 0.6, 0.4]
        assert node.get_parameter('camera.timeout').value == 0.5
        assert len(node._param_errors) == 1 and 'compute_budget_override=-1.0' in node._param_errors[0]
    finally:
        node.destroy_node()
