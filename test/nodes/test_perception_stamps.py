"""perception over real DDS against bad stamps and clock jumps: one audio frame stamped 2**31 - 1 s
never sticks to later predictions, a health message stamped decades away is refused and counted,
and with use_sim_time a /clock jump 30 s back gives predictions of the new time at once."""
import math
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.parameter import Parameter  # noqa: E402

from sentryfuse_ros import msg_arrays  # noqa: E402
from sentryfuse_ros.msg import ModalityHealth  # noqa: E402
from test_perception import (ALL, AUDIO_RATE, AUDIO_FRAME, Harness, kv, perception_overrides,  # noqa: E402,F401
                             one_torch_thread, stamp_s, uses)

pytestmark = pytest.mark.slow


@pytest.fixture
def harnesses():
    made = []
    yield made
    for h in made:
        h.close()


def test_one_audio_frame_stamped_2_31_minus_1_never_sticks(ros_context, harnesses, checkpoint):
    # main: every later Prediction carried stamp 2147483648.0 to the end of the run, inputs OK
    h = Harness(ros_context, perception_overrides(checkpoint))
    harnesses.append(h)
    h.stream(*ALL)
    h.spin_until(lambda: h.predictions and uses(h.predictions[-1][1], ALL), 10.0, 'a prediction with all three')
    bad = msg_arrays.array_to_audio_frame(h.tone, sample_rate=AUDIO_RATE)
    bad.header.stamp.sec, bad.header.stamp.nanosec = 2**31 - 1, 0
    h.bad['audio'] = bad
    h.spin_for(0.25)  # a couple of bad frames, then normal frames again
    h.bad['audio'] = None
    t = h.now()
    h.spin_until(lambda: len(h.predictions_since(t + 1.0)) >= 5, 10.0, 'predictions after the bad frame')
    after = h.predictions_since(t + 1.0)
    assert all(abs(stamp_s(p.header.stamp) - h.now()) < 5.0 for p in after), \
        [stamp_s(p.header.stamp) for p in after]
    assert any(uses(p, ALL) for p in after)
    assert h.perception.engine.errors.get('audio', 0) >= 1
    assert 'StampError: audio stamp 2147483647.000 s is' in h.perception.engine.last_error['audio']


def test_health_message_stamped_decades_away_is_refused_and_counted(ros_context, harnesses, checkpoint):
    # main: a ModalityHealth stamped 1990 declaring nothing live was obeyed: no prediction at all
    h = Harness(ros_context, perception_overrides(checkpoint, diagnostics_period=0.2))
    harnesses.append(h)
    pub = h.node.create_publisher(ModalityHealth, '/sentryfuse/health', 10)
    msg = ModalityHealth(modalities=list(ALL), live=[False, False, False], compute_budget=0.4)
    msg.header.stamp.sec = 631_152_000  # 1990-01-01
    h.node.create_timer(0.05, lambda: pub.publish(msg))
    h.stream(*ALL)
    h.spin_until(lambda: h.perception.engine.errors.get('health', 0) >= 5, 10.0, 'refused health messages')
    h.spin_until(lambda: h.predictions and uses(h.predictions[-1][1], ALL), 10.0, 'predictions on own freshness')
    assert h.predictions[-1][1].compute_budget == pytest.approx(1.0)
    assert 'StampError: health stamp 631152000.000 s is' in h.perception.engine.last_error['health']
    status = h.latest_status('sentryfuse: perception')
    assert int(kv(status)['health_errors']) >= 1 and kv(status)['health_source'].startswith('no health message')


class SimClockHarness(Harness):
    """The harness on a simulated clock: the test node publishes /clock = wall time + ``offset`` at
    100 Hz and stamps every sensor message with that time; perception runs with use_sim_time."""

    def __init__(self, ctx, perception):
        self.offset = 0.0
        super().__init__(ctx, perception)
        from rosgraph_msgs.msg import Clock
        self._clock_pub = self.node.create_publisher(Clock, '/clock', 10)
        self.node.create_timer(0.01, self._publish_clock)

    def now(self) -> float:
        return time.time() + self.offset

    def _publish_clock(self):
        from rosgraph_msgs.msg import Clock
        sec, nanosec = msg_arrays.sec_to_stamp(self.now())
        self._clock_pub.publish(Clock(clock=_time(sec, nanosec)))


def _time(sec, nanosec):
    from builtin_interfaces.msg import Time
    return Time(sec=int(sec), nanosec=int(nanosec))


def test_clock_jump_30_s_back_gives_predictions_of_the_new_time_at_once(ros_context, harnesses, checkpoint):
    # main: every prediction of the next 10 s kept the pre-jump stamp (the audio ring kept the largest)
    overrides = perception_overrides(checkpoint)
    h = SimClockHarness(ros_context, overrides)
    h.perception.set_parameters([Parameter('use_sim_time', value=True)])
    harnesses.append(h)
    h.stream(*ALL)
    h.spin_until(lambda: len(h.predictions) >= 5 and uses(h.predictions[-1][1], ALL), 15.0, 'predictions')
    before = stamp_s(h.predictions[-1][1].header.stamp)
    assert abs(before - h.now()) < 5.0
    h.offset -= 30.0
    h.spin_for(1.0)  # predictions already in flight at the jump arrive in this second
    first = len(h.predictions)
    h.spin_for(1.0)
    late = [p for _, p in h.predictions[first:]]
    assert late, 'no prediction in the second after the jump'
    stamps = [stamp_s(p.header.stamp) for p in late]
    assert all(s < before - 25.0 for s in stamps), (before, stamps)
    assert all(math.isfinite(s) for s in stamps)
