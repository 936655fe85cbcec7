"""Stamps against the receiving clock and clock jumps back (core/runtime/stamps.py, SensorInputs, HealthTracker)."""
import math

import numpy as np
import pytest

from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.errors import StampError
from sentryfuse_ros.core.runtime.health import BatteryBudgetConfig, HealthTracker, TopicMonitorConfig
from sentryfuse_ros.core.runtime.inputs import SensorInputs
from sentryfuse_ros.core.runtime.stamps import ClockWatch, check_stamp


@pytest.mark.parametrize('stamp, now, match', [
    (2**31 - 1, 1.7e9, r'audio stamp 2147483647.000 s is \d+\.\d+ s ahead of the receiving clock \(1700000000.000 s\): '
                       r'expected within 60 s'),
    (631_152_000, 1.7e9, r'audio stamp 631152000.000 s is \d+\.\d+ s behind'),
    (math.nan, 1.7e9, r'audio stamp nan: expected a finite time'),
])
def test_stamps_far_from_the_clock_are_errors_with_their_cause(stamp, now, match):
    with pytest.raises(StampError, match=match):
        check_stamp(stamp, now, 'audio')
    assert check_stamp(now + 59.0, now, 'audio') == now + 59.0
    if math.isfinite(stamp):  # inf accepts any finite stamp
        assert check_stamp(stamp, now, 'audio', math.inf) == stamp


def test_clock_watch_notices_a_step_back_only():
    watch = ClockWatch(1.0)
    assert not any(watch.jumped_back(t) for t in (10.0, 10.5, 10.2, 11.0))  # 0.3 s back: jitter
    assert watch.jumped_back(5.0) and watch.jumps == 1
    assert not watch.jumped_back(5.1)


def _inputs():
    pre = PreprocessConfig(audio_samples=256)
    return SensorInputs(pre, ('camera', 'audio'), (0.5, 0.5, 0.5), 0.0)


def test_a_bad_audio_stamp_is_refused_and_never_sticks():
    inputs = _inputs()
    inputs.push('audio', np.zeros(64, np.float32), 1000.0, received_s=1000.0)
    inputs.push('audio', np.zeros(64, np.float32), 2**31 - 1, received_s=1000.1)
    assert inputs.errors == {'audio': 1} and 'StampError' in inputs.last_error['audio']
    inputs.push('audio', np.zeros(64, np.float32), 1000.2, received_s=1000.2)
    assert inputs.stamp_of('audio') == 1000.2
    inputs.push('audio', np.zeros(64, np.float32), 999.0, received_s=1000.3)  # an older stamp: the newest frame's
    assert inputs.stamp_of('audio') == 999.0


def test_a_clock_jump_back_forgets_every_buffered_sample():
    inputs = _inputs()
    inputs.push('camera', np.zeros((8, 8, 3), np.uint8), 1000.0, received_s=1000.0)
    inputs.push('audio', np.zeros(256, np.float32), 1000.0, received_s=1000.0)
    assert inputs.fresh(1000.1) == ('camera', 'audio')
    prepared = inputs.prepare(970.0, None)  # 30 s back
    assert prepared.modalities == () and inputs.stamp_of('audio') == -math.inf and inputs.stamp_of('camera') == -math.inf
    inputs.push('audio', np.zeros(256, np.float32), 970.1, received_s=970.1)
    assert inputs.prepare(970.2, None).stamp_s == 970.1


def test_health_tracker_starts_over_after_a_clock_jump_back():
    tracker = HealthTracker({'camera': TopicMonitorConfig(recover_count=1)}, BatteryBudgetConfig())
    for i in range(40):
        tracker.on_message('camera', 1000.0 + i * 0.05)
        tracker.check(1000.0 + i * 0.05)
    assert dict(zip(tracker.last.modalities, tracker.last.live))['camera']
    state = tracker.check(970.0)  # 30 s back: the arrivals kept lie in the future
    assert not dict(zip(state.modalities, state.live))['camera']
