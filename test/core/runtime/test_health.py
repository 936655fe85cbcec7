"""core.health: status order, rate, hysteresis, battery budget, config validation (no ROS)."""
import math

import pytest

from sentryfuse_ros.core.runtime import health
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.runtime.health import (BatteryBudget, BatteryBudgetConfig, HealthTracker,
                                        ModalityMonitor, TopicMonitorConfig)

CFG = TopicMonitorConfig(timeout=0.3, warn_rate=10.0, error_rate=5.0, window_size=5, recover_count=3)


def feed(monitor, rate_hz, t0, t1):
    """Messages at rate_hz in [t0, t1); returns the last arrival time."""
    t, n = t0, 0
    while t < t1:
        monitor.on_message(t)
        n += 1
        t = t0 + n / rate_hz
    return t0 + (n - 1) / rate_hz


def test_status_codes_match_the_message_constants():
    assert (health.OK, health.WARN_RATE, health.ERROR_RATE, health.TIMEOUT, health.NOT_RECEIVED) == (0, 1, 2, 3, 4)
    assert health.STATUS_NAMES[health.TIMEOUT] == 'TIMEOUT'


@pytest.mark.parametrize('rate, expected', [(30.0, health.OK), (12.0, health.OK), (8.0, health.WARN_RATE),
                                            (4.0, health.ERROR_RATE)])
def test_status_from_rate(rate, expected):
    m = ModalityMonitor('camera', CFG)
    last = feed(m, rate, 0.0, 2.0)
    assert m.status(last + 0.01) == expected
    assert m.rate_hz() == pytest.approx(rate, rel=1e-6)


def test_status_order_not_received_then_timeout_before_rate():
    m = ModalityMonitor('camera', CFG)
    assert m.status(0.0) == health.NOT_RECEIVED
    last = feed(m, 2.0, 0.0, 2.0)  # ERROR_RATE while fresh ...
    assert m.status(last) == health.ERROR_RATE
    assert m.status(last + 0.31) == health.TIMEOUT  # ... but TIMEOUT is checked first


def test_rate_uses_the_window_only():
    m = ModalityMonitor('camera', CFG)
    feed(m, 100.0, 0.0, 1.0)
    last = feed(m, 20.0, 1.0, 1.25)  # 5 arrivals at 20 Hz fill the 5-slot window
    assert m.rate_hz() == pytest.approx(20.0)
    assert m.status(last) == health.OK


def test_single_arrival_has_no_rate_and_is_not_healthy():
    m = ModalityMonitor('camera', CFG)
    m.on_message(1.0)
    s = m.check(1.0)
    assert (s.rate_hz, s.status, s.live, s.age_s) == (0.0, health.ERROR_RATE, False, 0.0)


def test_age_is_inf_before_any_message():
    s = ModalityMonitor('lidar', CFG).check(5.0)
    assert math.isinf(s.age_s) and s.status == health.NOT_RECEIVED and not s.live


@pytest.mark.parametrize('recover_count', [1, 3, 5])
def test_recovery_needs_recover_count_healthy_checks(recover_count):
    cfg = TopicMonitorConfig(timeout=0.3, warn_rate=10.0, error_rate=5.0, window_size=5,
                             recover_count=recover_count)
    m = ModalityMonitor('camera', cfg)
    feed(m, 30.0, 0.0, 1.0)
    lives = [m.check(1.0 + 0.001 * i).live for i in range(recover_count)]
    assert lives == [False] * (recover_count - 1) + [True]
    # dead at once on timeout ...
    assert not m.check(1.5).live
    # ... and after a restart, live again only after recover_count checks
    feed(m, 30.0, 2.0, 3.0)
    lives = [m.check(3.0 + 0.001 * i).live for i in range(recover_count)]
    assert lives == [False] * (recover_count - 1) + [True]


def test_non_advancing_check_does_not_count_but_still_kills():
    m = ModalityMonitor('camera', CFG)
    feed(m, 30.0, 0.0, 1.0)
    for _ in range(5):
        assert not m.check(1.0, advance=False).live
    for _ in range(3):
        m.check(1.0)
    assert m.live
    assert not m.check(2.0, advance=False).live


def test_unhealthy_check_resets_the_recovery_count():
    m = ModalityMonitor('camera', CFG)
    feed(m, 30.0, 0.0, 1.0)
    m.check(1.0)
    m.check(1.0)
    assert m.check(1.0).healthy_count == 0 and m.live  # third: live
    assert not m.check(1.4).live  # timeout
    last = feed(m, 30.0, 2.0, 2.5)
    assert m.check(last).healthy_count == 1
    assert m.check(last + 0.5).status == health.TIMEOUT  # interrupted
    last = feed(m, 30.0, 3.0, 3.5)
    assert m.check(last).healthy_count == 1  # counts from zero again


def test_time_going_back_resets_the_window():
    m = ModalityMonitor('camera', CFG)
    feed(m, 30.0, 100.0, 101.0)
    m.on_message(5.0)
    assert m.rate_hz() == 0.0 and m.last_arrival == 5.0


def test_reconfigure_keeps_newest_arrivals():
    m = ModalityMonitor('camera', CFG)
    feed(m, 30.0, 0.0, 1.0)
    m.reconfigure(TopicMonitorConfig(timeout=1.0, warn_rate=1.0, error_rate=0.5, window_size=2))
    assert m.rate_hz() == pytest.approx(30.0) and len(m._arrivals) == 2


def test_default_camera_timeout_fits_half_a_second_at_10_hz_checks():
    from sentryfuse_ros.core.runtime.param_configs import topic_monitor_config
    cfg = topic_monitor_config({}, 'camera')  # the health monitor's schema default
    assert cfg.timeout + 0.1 <= 0.5
    assert cfg.error_rate < cfg.warn_rate < 15.0


@pytest.mark.parametrize('kwargs, match', [
    ({'timeout': -1.0}, r'timeout=-1.0: expected a positive'),
    ({'timeout': math.inf}, r'timeout=inf: expected a positive finite'),
    ({'warn_rate': 1.0, 'error_rate': 2.0}, r'warn_rate=1.0: expected >= error_rate \(2.0\)'),
    ({'error_rate': -1.0, 'warn_rate': 0.0}, r'error_rate=-1.0'),
    ({'window_size': 1}, r'window_size=1: expected an int >= 2'),
    ({'window_size': 2.5}, r'window_size=2.5'),
    ({'recover_count': 0}, r'recover_count=0: expected an int >= 1'),
    ({'timeout': True}, r'timeout=True'),
])
def test_topic_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TopicMonitorConfig(**kwargs)


# ---- battery ---------------------------------------------------------------------------
BAT = BatteryBudgetConfig(budget_levels=(0.5, 0.25, 0.0), budget_values=(1.0, 0.7, 0.5),
                          budget_hysteresis=0.03, battery_timeout=5.0, unknown_budget=0.8)


@pytest.mark.parametrize('percentage, charge, capacity, fraction, budget', [
    (0.9, math.nan, math.nan, 0.9, 1.0),
    (0.3, math.nan, math.nan, 0.3, 0.7),
    (0.2, math.nan, math.nan, 0.2, 0.5),
    (math.nan, 2.0, 10.0, 0.2, 0.5),       # NaN percentage: charge / capacity
    (math.nan, math.nan, 10.0, math.nan, 0.8),  # unknown -> unknown_budget
    (math.nan, 2.0, 0.0, math.nan, 0.8),   # zero capacity is no information
    (37.0, 6.0, 10.0, 0.6, 1.0),           # out-of-range percentage: charge / capacity
])
def test_battery_mapping(percentage, charge, capacity, fraction, budget):
    b = BatteryBudget(BAT)
    b.on_battery(0.0, percentage, charge, capacity)
    got = b.percentage(1.0)
    assert (math.isnan(got) and math.isnan(fraction)) or got == pytest.approx(fraction)
    assert b.budget(1.0) == budget


def test_silent_or_never_heard_battery_is_unknown():
    b = BatteryBudget(BAT)
    assert math.isnan(b.percentage(0.0)) and b.budget(0.0) == 0.8
    b.on_battery(10.0, 0.2)
    assert b.budget(14.9) == 0.5
    assert math.isnan(b.percentage(15.1)) and b.budget(15.1) == 0.8


def test_hysteresis_band_stops_flapping_around_a_level():
    b = BatteryBudget(BAT)
    budgets = []
    for p in (0.55, 0.49, 0.51, 0.52, 0.499, 0.529, 0.531, 0.2, 0.27, 0.281):
        b.on_battery(0.0, p)
        budgets.append(b.budget(0.0))
    assert budgets == [1.0, 0.7, 0.7, 0.7, 0.7, 0.7, 1.0, 0.5, 0.5, 0.7]


def test_override_wins_and_budget_stays_in_range():
    b = BatteryBudget(BatteryBudgetConfig(compute_budget_override=0.3))
    assert b.budget(0.0) == 0.3
    b.on_battery(0.0, 0.9)
    assert b.budget(0.0) == 0.3
    plain = BatteryBudget(BatteryBudgetConfig())
    for p in (0.0, 0.1, 0.5, 1.0, math.nan):
        plain.on_battery(0.0, p)
        assert 0.0 < plain.budget(0.0) <= 1.0


@pytest.mark.parametrize('kwargs, match', [
    ({'budget_levels': (0.5, 0.6, 0.0), 'budget_values': (1.0, 0.7, 0.5)}, r'budget_levels=.*strictly descending'),
    ({'budget_levels': (0.5, 0.25), 'budget_values': (1.0, 0.7)}, r'budget_levels=.*ending with 0.0'),
    ({'budget_levels': (0.5, 0.0), 'budget_values': (1.0,)}, r'budget_values=\(1.0,\): expected one budget per level'),
    ({'budget_values': (1.0, 0.0, 0.5)}, r'budget_values=.*budgets in \(0, 1\]'),
    ({'budget_values': (1.5, 0.7, 0.5)}, r'budget_values=.*budgets in \(0, 1\]'),
    ({'budget_levels': ()}, r'budget_levels=\(\): expected a non-empty list'),
    ({'budget_hysteresis': -0.1}, r'budget_hysteresis=-0.1'),
    ({'battery_timeout': 0.0}, r'battery_timeout=0.0: expected a positive'),
    ({'unknown_budget': 0.0}, r'unknown_budget=0.0: expected a budget in \(0, 1\]'),
    ({'compute_budget_override': 1.5}, r'compute_budget_override=1.5: expected 0 \(off\)'),
    ({'compute_budget_override': -0.5}, r'compute_budget_override=-0.5'),
])
def test_battery_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BatteryBudgetConfig(**kwargs)


def test_battery_fraction_helper():
    assert health.battery_fraction(0.4) == 0.4
    assert health.battery_fraction(math.nan, 12.0, 10.0) == 1.0  # clipped
    assert math.isnan(health.battery_fraction(math.nan))


# ---- tracker / snapshot ----------------------------------------------------------------
def test_tracker_snapshot_and_change_detection():
    tracker = HealthTracker({'camera': CFG, 'lidar': CFG}, BAT)
    s0 = tracker.check(0.0)
    assert s0.modalities == ('camera', 'lidar') and s0.live == (False, False)
    assert s0.status == (health.NOT_RECEIVED,) * 2 and s0.compute_budget == 0.8
    assert s0.changed_from(None)
    assert not tracker.check(0.05).changed_from(s0)
    last = feed(tracker.monitors['camera'], 30.0, 0.0, 1.0)
    states = [tracker.check(last + 0.001 * i) for i in range(3)]
    assert [s.live_set for s in states] == [frozenset(), frozenset(), frozenset({'camera'})]
    assert states[2].changed_from(states[1]) and not states[1].changed_from(states[0])
    tracker.on_battery(last, 0.2)
    s = tracker.check(last, advance=False)
    assert s.compute_budget == 0.5 and s.battery_percentage == pytest.approx(0.2)
    assert s.changed_from(states[2]) and s is tracker.last
    assert s.rate_hz[0] == pytest.approx(30.0) and math.isinf(s.age_s[1])


def test_dead_sensor_rate_hz_decays_instead_of_keeping_its_last_value():
    """A camera at 15 Hz that stops: 21 s into TIMEOUT its rate used to read 15 Hz."""
    m = ModalityMonitor('camera', CFG)
    last = feed(m, 15.0, 0.0, 2.0)
    on_time = m.check(last + 0.5 / 15.0)                 # next arrival not yet due: unchanged
    assert on_time.rate_hz == pytest.approx(15.0)
    rates = [m.check(last + dt).rate_hz for dt in (0.5, 2.0, 21.0)]
    assert rates[0] < 15.0 and rates[0] > rates[1] > rates[2]
    assert rates[2] == pytest.approx(4 / (4 / 15.0 + 21.0 - 1 / 15.0))   # (N - 1) / (span + overdue)
    assert m.check(last + 21.0).status == health.TIMEOUT


def test_late_check_does_not_kill_a_publishing_sensor():
    """Health under load: the monitor's process starved 0.6 s, its check then ran before the
    queued sensor callbacks. Judged at the time it was due, the camera stays live."""
    m = ModalityMonitor('camera', CFG)
    last = feed(m, 15.0, 0.0, 0.5)
    assert [m.check(last).live for _ in range(3)][-1]
    starved_until = 0.5 + 0.6                            # check due at 0.6 runs at 1.1
    assert m.check(starved_until, lateness=0.5).live
    assert m.check(starved_until).status == health.TIMEOUT   # the old judgement: dead for 0.3 s+


def test_late_check_still_reports_a_dead_sensor_on_the_next_check():
    m = ModalityMonitor('camera', CFG)
    last = feed(m, 15.0, 0.0, 0.5)
    assert m.check(last + 0.9, lateness=0.5).status == health.TIMEOUT   # silent 0.4 s beyond the lateness
    m2 = ModalityMonitor('camera', CFG)
    last = feed(m2, 15.0, 0.0, 0.5)
    assert m2.check(last + 0.35, lateness=0.0).status == health.TIMEOUT   # on time: timeout as before


def test_tracker_passes_lateness_to_every_monitor():
    tracker = HealthTracker({'camera': CFG, 'lidar': CFG}, BatteryBudgetConfig())
    for name in ('camera', 'lidar'):
        feed(tracker.monitors[name], 15.0, 0.0, 1.0)
    assert tracker.check(1.6, advance=False, lateness=0.6).status == (health.OK, health.OK)
    assert tracker.check(1.6, advance=False).status == (health.TIMEOUT, health.TIMEOUT)


def simulate(monitor, arrivals, checks):
    """Arrivals and checks in time order (an arrival at a check's time comes first); returns
    [(t, live)] per check."""
    events = sorted([(t, 0) for t in arrivals] + [(t, 1) for t in checks])
    out = []
    for t, kind in events:
        if kind == 0:
            monitor.on_message(t)
        else:
            out.append((t, monitor.check(t).live))
    return out


def stream(rate_hz, t0, t1):
    return [t0 + i / rate_hz for i in range(int(round((t1 - t0) * rate_hz)))]


def transitions(lives):
    return sum(1 for (_, a), (_, b) in zip(lives, lives[1:]) if a != b)


@pytest.mark.parametrize('name, rate', [('camera', 15.0), ('lidar', 10.0), ('audio', 50.0)])
def test_a_stream_that_stops_and_resumes_is_live_again_within_timeout_plus_recover_count_checks(name, rate):
    """A 10 Hz health check on the default thresholds: the sensor returns at 8 s. With the gap in
    the rate window, the lidar came back 1.15 s after it resumed; now within its timeout + 3 checks."""
    from sentryfuse_ros.core.runtime.param_configs import topic_monitor_config
    cfg = topic_monitor_config({}, name)  # the health monitor's schema default
    period = 0.1
    checks = [0.05 + period * k for k in range(120)]
    lives = simulate(ModalityMonitor(name, cfg), stream(rate, 0.0, 5.0) + stream(rate, 8.0, 12.0), checks)
    assert all(live for t, live in lives if 1.0 <= t < 5.0)
    assert not any(live for t, live in lives if 5.0 + cfg.timeout + period <= t < 8.0)   # dead in the gap
    back = min(t for t, live in lives if t >= 8.0 and live)
    assert back <= 8.0 + cfg.timeout + cfg.recover_count * period, back
    assert all(live for t, live in lives if t >= back)
    assert transitions(lives) == 3   # live once, dead once, live again: no flapping on the way back


def test_a_flapping_stream_is_not_declared_live_on_every_burst():
    """Bursts shorter than the rate window with gaps beyond the timeout: the first return is taken
    at its word, every later burst must fill the window first, so it never becomes live; a steady
    stream then recovers once its window is full."""
    cfg = TopicMonitorConfig(timeout=0.2, warn_rate=35.0, error_rate=20.0, window_size=25, recover_count=3)
    m = ModalityMonitor('audio', cfg)
    starts = [0.95 * i for i in range(6)]
    arrivals = [t for s in starts for t in stream(50.0, s, s + 0.46)]  # 23 arrivals < window 25
    steady = 6.0
    arrivals += stream(50.0, steady, 8.0)
    lives = simulate(m, arrivals, [0.05 + 0.1 * k for k in range(80)])
    live_per_burst = [any(live for t, live in lives if s <= t < s + 0.95) for s in starts]
    assert live_per_burst == [True] + [False] * 5
    back = min(t for t, live in lives if t >= steady and live)
    assert back <= steady + cfg.window_size / 50.0 + (cfg.recover_count + 1) * 0.1, back
    assert not m.flapping and all(live for t, live in lives if t >= back)


def test_a_steady_stream_that_filled_its_window_is_not_flapping_on_its_next_return():
    m = ModalityMonitor('camera', CFG)
    last = feed(m, 30.0, 0.0, 1.0)
    m.check(last + 0.5)                       # timeout fires after a full window
    m.on_message(last + 0.6)
    m.on_message(last + 0.6 + 1 / 30.0)
    assert not m.flapping and m.rate_hz() == pytest.approx(30.0)   # the silence is not in the rate
    assert [m.check(last + 0.7 + 0.1 * i).live for i in range(3)] == [False, False, True]
