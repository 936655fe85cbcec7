"""nodes/common.py: start-up validation resets only the offending values (the rest of the
node's configuration survives one bad value); `ros2 param set` (the on-set callback) refuses an
invalid value with its reason and changes nothing, and a valid one takes effect; the declared
defaults follow the schema; run_node's shutdown paths."""
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


@pytest.mark.slow
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
        assert node._param_errors == [
            "rate=-1.0: expected a finite number in (0, 1000]; using the default for ['rate']"]
    finally:
        node.destroy_node()


@pytest.mark.slow
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


def refused(node, name, value, reason):
    """Set ``name`` to ``value``: it must be refused with a reason matching ``reason``, nothing changed."""
    import re
    before = node.get_parameter(name).value
    (result,) = node.set_parameters([Parameter(name, value=value)])
    assert not result.successful and re.search(reason, result.reason), (name, value, result.reason)
    assert node.get_parameter(name).value == before


@pytest.mark.slow
def test_perception_param_set_takes_effect_or_is_refused(ros_context, checkpoint):
    import math

    from sentryfuse_ros.nodes.perception import Perception
    node = Perception(context=ros_context, parameter_overrides=[
        Parameter('model_path', value=str(checkpoint)), Parameter('prebuild', value=False)])
    try:
        refused(node, 'health_timeout', math.inf, r'health_timeout.*inf')   # a killed monitor never noticed
        refused(node, 'health_timeout', math.nan, r'health_timeout.*nan')
        refused(node, 'health_timeout', 0.0, r'health_timeout=0.0: expected a finite number in \(0, 3600\]')
        refused(node, 'rate', 'fast', r"rate='fast': expected a finite number in \(0, 1000\]")
        refused(node, 'camera.max_age', -0.5, r'camera.max_age')
        refused(node, 'qos', 'reliable', r'read-only parameter: qos')
        refused(node, 'budget_levels', [1.0, 0.5], r'read-only parameter: budget_levels')
        assert node._health_timeout == 1.0 and node._timer.timer_period_ns == 100_000_000
        results = node.set_parameters([
            Parameter('rate', value=4.0), Parameter('diagnostics_period', value=0.5),
            Parameter('camera.max_age', value=0.25), Parameter('health_timeout', value=2)])
        assert all(r.successful for r in results), [r.reason for r in results]
        assert node._timer.timer_period_ns == 250_000_000           # the timer is re-created at 4 Hz
        assert node._diag_timer.timer_period_ns == 500_000_000
        assert node.engine.inputs.max_age_s == (0.25, 0.5, 0.5)
        assert node._health_timeout == 2.0
        descriptor = node.describe_parameter('qos')
        assert descriptor.read_only and 'sensor_data' in descriptor.description
        assert node.describe_parameter('rate').floating_point_range[0].to_value == 1000.0
    finally:
        node.destroy_node()


@pytest.mark.slow
def test_health_monitor_param_set_takes_effect_or_is_refused(ros_context):
    from sentryfuse_ros.nodes.health_monitor import HealthMonitor
    node = HealthMonitor(context=ros_context)
    try:
        refused(node, 'camera.warn_rate', 1.0, r'camera.warn_rate=1.0: expected >= error_rate \(5.0\)')
        refused(node, 'camera.timeout', float('inf'), r'camera.timeout.*inf')
        refused(node, 'budget_values', [1.0, 0.7], r'budget_values=\(1.0, 0.7\): expected one budget per level')
        refused(node, 'update_rate', 5.0, r'read-only parameter: update_rate')
        results = node.set_parameters([
            Parameter('camera.timeout', value=0.5), Parameter('compute_budget_override', value=0.5),
            Parameter('diagnostics_period', value=2.0), Parameter('audio.window_size', value=5)])
        assert all(r.successful for r in results), [r.reason for r in results]
        tracker = node._tracker
        assert tracker.monitors['camera'].config.timeout == 0.5
        assert tracker.monitors['audio'].config.window_size == 5
        assert tracker.battery.config.compute_budget_override == 0.5
        assert node._diag_timer.timer_period_ns == 2_000_000_000
    finally:
        node.destroy_node()


@pytest.mark.slow
def test_nodes_declare_the_schemas_defaults_through_sentryfuse_run(ros_context, checkpoint, monkeypatch):
    """A default changed in the schema is what `sentryfuse run`'s nodes declare."""
    import dataclasses

    from sentryfuse_ros.apps import graph
    from sentryfuse_ros.core.runtime import params
    monkeypatch.setattr(params, 'PERCEPTION', tuple(
        dataclasses.replace(s, default={'rate': 7.0, 'camera.max_age': 0.9}.get(s.name, s.default))
        for s in params.PERCEPTION))
    monkeypatch.setitem(params.MONITOR_DEFAULTS, 'camera', {**params.MONITOR_DEFAULTS['camera'], 'timeout': 0.45})
    values = graph.graph_parameters(sets=[f'perception.model_path={checkpoint}', 'perception.prebuild=false',
                                          "sensor_sim.scenario=''"])
    nodes = graph.build_graph(graph.GRAPH, values, use_sim=True, context=ros_context)
    try:
        by_name = {n.get_name(): n for n in nodes}
        assert by_name['perception'].get_parameter('rate').value == 7.0
        assert by_name['perception'].engine.inputs.max_age_s[0] == 0.9
        assert by_name['health_monitor'].get_parameter('camera.timeout').value == 0.45
        assert by_name['health_monitor']._tracker.monitors['camera'].config.timeout == 0.45
        assert by_name['sensor_sim'].get_parameter('camera.rate').value == 15.0
    finally:
        for n in nodes:
            n.destroy_node()


# ---- Ctrl-C: exit 0 and no traceback at any moment ----------------------------------------
import os  # noqa: E402
import pathlib  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from conftest import domain_for  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXECUTABLES = ROOT / 'install' / 'sentryfuse_ros' / 'lib' / 'sentryfuse_ros'


def start(argv, offset):
    return subprocess.Popen(argv, env=dict(os.environ, ROS_DOMAIN_ID=str(domain_for(offset)),
                                           PYTHONUNBUFFERED='1'),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def executable(name):
    path = EXECUTABLES / name
    assert path.is_file(), f'{path} missing: run `make setup`'
    return [sys.executable, str(path)]


def finish(proc):
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and 'Traceback' not in out, f'rc {proc.returncode}:\n{out[-3000:]}'
    return out


# [s] after torch began to load (the node's own start-up, past the interpreter's): `import torch`
# (~1-3 s), rclpy.init, the model's loading, the prebuild, then spinning (~1 s quiet, ~4 s loaded)
CTRL_C_DELAYS = (0.0, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def wait_until_loaded(proc, library: str, timeout: float = 60.0) -> None:
    """Until ``library`` is mapped into ``proc``: a point inside the node's own start-up. (A SIGINT
    while the interpreter itself starts, before any of the node's code runs, is Python's to handle.)"""
    maps = pathlib.Path(f'/proc/{proc.pid}/maps')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if library in maps.read_text():
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f'{library} never loaded in {timeout} s (rc {proc.poll()})')


@pytest.mark.slow
def test_ctrl_c_at_every_start_up_phase_of_perception_exits_0_without_traceback():
    """A SIGINT during start-up used to raise KeyboardInterrupt inside C++ calling back into Python
    (torch's import, rclpy.init, the node's construction, the prebuild): a traceback, or
    "terminate called after throwing an instance of 'pybind11::error_already_set'" and rc -6.
    The sweep's delays land in every phase; one of them at least before the node was ready."""
    results = []
    for delay_s in CTRL_C_DELAYS:  # one after the other: each runs alone on its domain
        proc = start(executable('perception'), 15)
        wait_until_loaded(proc, 'libtorch')
        time.sleep(delay_s)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
        results.append((delay_s, proc.returncode, out))
    for delay_s, rc, out in results:
        assert rc == 0 and 'Traceback' not in out and 'terminate called' not in out, \
            f'Ctrl-C {delay_s} s into the import of torch: rc {rc}:\n{out[-3000:]}'
    during_start_up = [d for d, _, out in results if 'prebuilt' not in out]
    assert during_start_up, 'every Ctrl-C came after the node was ready: the sweep missed start-up'


@pytest.mark.slow
@pytest.mark.parametrize('gap_s', [0.005, 0.02])
def test_double_ctrl_c_while_publishing_exits_0_without_traceback(gap_s):
    """A terminal's Ctrl-C reaches the node and `ros2 launch`, which sends its own SIGINT."""
    proc = start(executable('sensor_sim') + ['--ros-args', '-p', "scenario:=''"], 16)
    for line in proc.stdout:
        if 'publishing' in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    proc.send_signal(signal.SIGINT)
    finish(proc)


BUSY_NODE = '''
import sys
from rclpy.node import Node
from std_msgs.msg import String
from sentryfuse_ros.nodes import common


class Busy(Node):
    def __init__(self):
        super().__init__('busy_publisher')
        self.pub = self.create_publisher(String, '/busy', 10)
        self.create_timer(0.01, self.tick)

    def tick(self):
        self.context.shutdown()   # what rclpy's SIGINT handler thread does, here mid-callback
        self.pub.publish(String(data='x'))


sys.exit(common.run_node(Busy))
'''


@pytest.mark.slow
def test_context_shut_down_while_publishing_exits_0_without_traceback(tmp_path):
    """rclpy's SIGINT handler shuts the context down from its own thread; a callback caught between
    building a message and publishing it used to end the node with exit 1 and a traceback
    (`RCLError: publisher's context is invalid`, or InvalidHandle)."""
    script = tmp_path / 'busy.py'
    script.write_text(BUSY_NODE, encoding='utf-8')
    finish(start([sys.executable, str(script)], 17))
