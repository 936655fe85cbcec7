"""health_monitor over real DDS: liveness, timeout latency, hysteresis, rates, battery budget,
parameter validation and /diagnostics, asserted on what the node publishes."""
import math

import pytest

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import BatteryState, Image  # noqa: E402

from sentryfuse_ros.msg import ModalityHealth  # noqa: E402
from sentryfuse_ros.nodes.health_monitor import HealthMonitor  # noqa: E402
from ros_helpers import spin_until  # noqa: E402  (test/ is on sys.path via conftest)

pytestmark = pytest.mark.slow  # ROS end to end: nodes spinning over DDS

TIMEOUT, UPDATE_RATE, RECOVER = 0.3, 10.0, 3


def stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class Harness:
    """The health monitor and a test node (publishers + recorders) in one executor."""

    def __init__(self, ctx, overrides):
        self.monitor = HealthMonitor(context=ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in overrides.items()])
        self.node = Node('health_test', context=ctx)
        self.camera_pub = self.node.create_publisher(Image, '/camera/image_raw', 10)
        self.battery_pub = self.node.create_publisher(BatteryState, '/battery_state', 10)
        self.health, self.diagnostics = [], []
        self.node.create_subscription(ModalityHealth, '/sentryfuse/health', self.health.append, 50)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.monitor)
        self.executor.add_node(self.node)
        self.camera_timer = None
        self.last_camera = None  # node-clock time of the newest camera message

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def camera(self, rate_hz):
        """Publish the camera at rate_hz (None stops it)."""
        if self.camera_timer is not None:
            self.node.destroy_timer(self.camera_timer)
            self.camera_timer = None
        if rate_hz:
            self.camera_timer = self.node.create_timer(1.0 / rate_hz, self._publish_camera)

    def _publish_camera(self):
        msg = Image(height=2, width=2, encoding='mono8', step=2, data=bytes(4))
        self.camera_pub.publish(msg)
        self.last_camera = self.now()

    def battery(self, percentage, charge=math.nan, capacity=math.nan):
        self.battery_pub.publish(BatteryState(percentage=percentage, charge=charge, capacity=capacity))
        return self.now()

    def spin_until(self, predicate, timeout_s, what):
        spin_until(self.executor, predicate, timeout_s, what)

    def close(self):
        self.camera(None)
        self.executor.shutdown(timeout_sec=0)
        self.monitor.destroy_node()
        self.node.destroy_node()


@pytest.fixture
def harness(ros_context, request):
    h = Harness(ros_context, getattr(request, 'param', {}))
    yield h
    h.close()


CAMERA_ONLY = {'modalities': ['camera'], 'camera.timeout': TIMEOUT, 'camera.warn_rate': 20.0,
               'camera.error_rate': 10.0, 'camera.window_size': 5, 'camera.recover_count': RECOVER,
               'update_rate': UPDATE_RATE, 'qos': 'sensor_data'}


@pytest.mark.parametrize('harness', [CAMERA_ONLY], indirect=True)
def test_camera_live_timeout_hysteresis_and_rates(harness):
    h = harness
    cam = lambda m: (m.live[0], m.status[0])  # noqa: E731
    # 1. a 30 Hz camera goes live, after RECOVER healthy checks
    h.camera(30.0)
    h.spin_until(lambda: h.health and h.health[-1].live[0], 5.0, 'camera live')
    healthy_not_live = [m for m in h.health if cam(m) == (False, ModalityHealth.OK)]
    assert len(healthy_not_live) == RECOVER - 1
    assert h.health[-1].rate_hz[0] == pytest.approx(30.0, rel=0.3)

    # 2. stopped: reported not live within timeout + one update period
    h.spin_until(lambda: len(h.health) > 5, 2.0, 'a few more health messages')
    h.camera(None)
    stopped_at, n = h.last_camera, len(h.health)
    h.spin_until(lambda: not h.health[-1].live[0], 2.0, 'camera not live')
    dead = h.health[-1]
    latency = stamp_s(dead.header.stamp) - stopped_at
    print(f'camera stop -> not live reported after {latency * 1e3:.0f} ms '
          f'(timeout {TIMEOUT * 1e3:.0f} ms + period {1e3 / UPDATE_RATE:.0f} ms)')
    assert dead.status[0] == ModalityHealth.TIMEOUT
    assert all(m.live[0] for m in h.health[n:-1])
    assert TIMEOUT < latency <= TIMEOUT + 1.0 / UPDATE_RATE + 0.05

    # 3. restarted: live again only after the hysteresis
    n = len(h.health)
    h.camera(30.0)
    h.spin_until(lambda: h.health[-1].live[0], 5.0, 'camera live again')
    after = h.health[n:]
    first_ok = next(i for i, m in enumerate(after) if m.status[0] == ModalityHealth.OK)
    assert not after[first_ok].live[0], 'live at the first healthy check: no hysteresis'
    assert [cam(m) for m in after[-RECOVER:]] == [(False, 0)] * (RECOVER - 1) + [(True, 0)]

    # 4. slowed: 15 Hz is WARN_RATE (still live), 5 Hz is ERROR_RATE (not live)
    h.camera(15.0)
    h.spin_until(lambda: h.health[-1].status[0] == ModalityHealth.WARN_RATE, 3.0, 'WARN_RATE')
    n = len(h.health)
    h.spin_until(lambda: len(h.health) >= n + 5, 2.0, 'the window to fill at 15 Hz')
    assert all(cam(m) == (True, ModalityHealth.WARN_RATE) for m in h.health[n:])
    assert h.health[-1].rate_hz[0] == pytest.approx(15.0, rel=0.25)
    h.camera(5.0)
    h.spin_until(lambda: h.health[-1].status[0] == ModalityHealth.ERROR_RATE, 3.0, 'ERROR_RATE')
    assert not h.health[-1].live[0] and h.health[-1].rate_hz[0] < 10.0


BATTERY = {'modalities': ['camera'], 'battery_timeout': 1.0, 'unknown_budget': 0.6,
           'budget_levels': [0.5, 0.25, 0.0], 'budget_values': [1.0, 0.7, 0.5], 'update_rate': 2.0}


@pytest.mark.parametrize('harness', [BATTERY], indirect=True)
def test_battery_budgets(harness):
    h = harness
    h.spin_until(lambda: h.health, 3.0, 'first health message')
    assert h.health[-1].compute_budget == pytest.approx(0.6)  # never heard: unknown
    assert math.isnan(h.health[-1].battery_percentage)
    for args, fraction, budget in [((0.9,), 0.9, 1.0), ((0.2,), 0.2, 0.5),
                                   ((math.nan, 3.0, 10.0), 0.3, 0.7), ((math.nan,), math.nan, 0.6),
                                   ((0.9,), 0.9, 1.0)]:
        sent = h.battery(*args)
        h.spin_until(lambda: h.health[-1].compute_budget == pytest.approx(budget), 3.0,
                     f'budget {budget} for battery {args}')
        msg = h.health[-1]
        got = msg.battery_percentage
        assert (math.isnan(got) and math.isnan(fraction)) or got == pytest.approx(fraction)
        # published at once on the change, not at the next 2 Hz tick
        assert stamp_s(msg.header.stamp) - sent < 0.25
    # silent for battery_timeout -> unknown
    h.spin_until(lambda: h.health[-1].compute_budget == pytest.approx(0.6), 3.0, 'silent battery')
    silent_for = stamp_s(h.health[-1].header.stamp) - sent
    assert 1.0 < silent_for < 1.0 + 0.5 + 0.3  # battery_timeout + one 2 Hz period + slack


INVALID_AT_START = {'modalities': ['camera'], 'camera.timeout': -1.0, 'qos': 'fast',
                    'diagnostics_period': 0.2}


@pytest.mark.parametrize('harness', [INVALID_AT_START], indirect=True)
def test_invalid_parameters_rejected_and_reported(harness):
    h = harness
    # invalid at start-up: defaults used, node alive, errors on /diagnostics
    assert h.monitor.get_parameter('camera.timeout').value == 0.3
    assert h.monitor.get_parameter('qos').value == 'sensor_data'
    h.spin_until(lambda: h.diagnostics, 5.0, '/diagnostics')
    status = {s.name: s for s in h.diagnostics[-1].status}
    assert {'sentryfuse: camera', 'sentryfuse: battery'} <= set(status)
    params = status['sentryfuse: health_monitor parameters']
    assert params.level == bytes([2]) and 'camera.timeout=-1.0' in params.message
    assert "qos='fast'" in params.message
    camera = status['sentryfuse: camera']
    assert camera.level == bytes([3]) and camera.hardware_id == '/camera/image_raw'  # STALE: never received
    assert {kv.key for kv in camera.values} >= {'rate_hz', 'age_s', 'status'}

    # set at run time through the parameter service: rejected with a reason, value kept
    client = h.node.create_client(SetParameters, '/health_monitor/set_parameters')
    h.spin_until(lambda: client.service_is_ready(), 5.0, 'parameter service')
    # (the schema's ranges are the descriptors' ranges: rclpy refuses out-of-range values and read-only
    # parameters with its own reason, naming the value; the node's callback refuses the rest)
    cases = [(Parameter('camera.timeout', value=-2.0),
              'Parameter camera.timeout out of range Min: 0.0, Max: 3600.0, value: -2.0'),
             (Parameter('camera.timeout', value=0.0), 'camera.timeout=0.0: expected a finite number in (0, 3600]'),
             (Parameter('camera.warn_rate', value=1.0), 'camera.warn_rate=1.0: expected >= error_rate'),
             (Parameter('compute_budget_override', value=1.5),
              'Parameter compute_budget_override out of range Min: 0.0, Max: 1.0, value: 1.5'),
             (Parameter('camera.topic', value='/other'), 'Trying to set a read-only parameter: camera.topic'),
             (Parameter('camera.timeout', value=0.5), None)]
    for param, reason in cases:
        future = client.call_async(SetParameters.Request(parameters=[param.to_parameter_msg()]))
        h.spin_until(future.done, 5.0, f'set {param.name}')
        result = future.result().results[0]
        if reason is None:
            assert result.successful, result.reason
        else:
            assert not result.successful and reason in result.reason, result.reason
    assert h.monitor.get_parameter('camera.timeout').value == 0.5
    assert h.monitor._tracker.monitors['camera'].config.timeout == 0.5
    assert h.monitor.get_parameter('camera.topic').value == '/camera/image_raw'


@pytest.mark.parametrize('harness', [CAMERA_ONLY], indirect=True)
def test_monitor_starved_of_cpu_keeps_a_publishing_camera_live(harness, ros_context):
    """Health under load: the camera publishes at 30 Hz from its own thread while the monitor's
    executor is blocked for 0.6 s (a starved process). Its late check used to run before the
    queued camera callbacks and declare the camera dead (TIMEOUT) for RECOVER checks."""
    import threading
    import time
    h = harness
    driver = Node('camera_driver', context=ros_context)
    pub = driver.create_publisher(Image, '/camera/image_raw', 10)
    driver.create_timer(1.0 / 30.0, lambda: pub.publish(
        Image(height=2, width=2, encoding='mono8', step=2, data=bytes(4))))
    driver_executor = SingleThreadedExecutor(context=ros_context)
    driver_executor.add_node(driver)
    thread = threading.Thread(target=driver_executor.spin, daemon=True)
    thread.start()
    try:
        h.spin_until(lambda: h.health and h.health[-1].live[0], 5.0, 'camera live')
        for _ in range(3):
            n = len(h.health)
            h.spin_until(lambda: len(h.health) >= n + 3, 2.0, 'health messages')
            time.sleep(0.6)                                  # the monitor's process gets no CPU
            h.spin_until(lambda: len(h.health) >= n + 8, 3.0, 'health after the stall')
            assert all(m.live[0] for m in h.health[n:]), [(m.live[0], m.status[0]) for m in h.health[n:]]
    finally:
        driver_executor.shutdown(timeout_sec=1.0)
        thread.join(timeout=2.0)
        driver.destroy_node()
