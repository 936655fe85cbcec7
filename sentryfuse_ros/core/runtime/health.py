"""Sensor health and compute budget, clock-agnostic (times are float seconds passed in).

The topic_state_monitor way (Autoware): each modality keeps the arrival times of its last
``window_size`` messages; rate = (N - 1) / (t_last - t_first); status is decided in the order
NOT_RECEIVED -> TIMEOUT -> ERROR_RATE -> WARN_RATE -> OK. The published ``rate_hz`` also counts
silence beyond one mean period into the span, so a dead sensor's rate decays towards 0. A check
that runs late (its process was starved of CPU) judges staleness at the time it was due, not
against arrivals still queued behind it. A modality is *live* when its status is OK or
WARN_RATE; going dead is immediate, coming back needs ``recover_count`` consecutive healthy
checks (hysteresis, so modality masks do not flap).

Recovery is as fast as degradation: once the timeout fired, a returning sensor's rate is
measured over the arrivals since it resumed as soon as there are two of them (healthy one period
after it resumes, live ``recover_count`` checks later), not over a window that still spans the
silence; its first arrival alone is judged on the whole window, as before. A stream that stops
again before it has filled its window was a burst, not a return (flapping): its next return must
fill the window first, as long as a window spanning the gap used to hold it back, before its
healthy checks count.

The battery maps to a ``compute_budget`` in (0, 1] through a table of (level, budget) rows
with a hysteresis band on the way up. Used by the health_monitor node, by the perception
node's own freshness check, and by offline bag replay.
"""
import dataclasses
import math
from collections import deque
from typing import Mapping, Optional, Sequence, Tuple

from sentryfuse_ros.core.config import check

# Status codes: the same values as the constants of msg/ModalityHealth.msg.
OK = 0
WARN_RATE = 1
ERROR_RATE = 2
TIMEOUT = 3
NOT_RECEIVED = 4
STATUS_NAMES = ('OK', 'WARN_RATE', 'ERROR_RATE', 'TIMEOUT', 'NOT_RECEIVED')
HEALTHY = (OK, WARN_RATE)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class TopicMonitorConfig:
    # defaults: a generic topic; the health monitor's per-modality defaults are its schema's
    # (core/runtime/params.py MONITOR_DEFAULTS)
    timeout: float = 1.0        # [s] no message for longer than this -> TIMEOUT
    warn_rate: float = 5.0      # [Hz] measured rate below this -> WARN_RATE (still live)
    error_rate: float = 1.0     # [Hz] measured rate below this -> ERROR_RATE (not live)
    window_size: int = 10       # arrival times kept for the rate, >= 2
    recover_count: int = 3      # consecutive healthy checks before a dead modality is live again

    def __post_init__(self):
        check(_is_number(self.timeout) and self.timeout > 0, 'timeout', self.timeout,
              'a positive finite number of seconds')
        check(_is_number(self.error_rate) and self.error_rate >= 0, 'error_rate', self.error_rate,
              'a finite rate >= 0 [Hz]')
        check(_is_number(self.warn_rate) and self.warn_rate >= 0, 'warn_rate', self.warn_rate,
              'a finite rate >= 0 [Hz]')
        check(self.warn_rate >= self.error_rate, 'warn_rate', self.warn_rate,
              f'>= error_rate ({self.error_rate})')
        check(_is_int(self.window_size) and self.window_size >= 2, 'window_size', self.window_size,
              'an int >= 2')
        check(_is_int(self.recover_count) and self.recover_count >= 1, 'recover_count',
              self.recover_count, 'an int >= 1')


@dataclasses.dataclass(frozen=True)
class ModalityStatus:
    name: str
    status: int          # one of OK .. NOT_RECEIVED
    live: bool           # after hysteresis
    rate_hz: float       # 0 when fewer than two arrivals
    age_s: float         # now - newest arrival; inf when never received
    healthy_count: int   # consecutive healthy checks while recovering (0 when live or dead)


class ModalityMonitor:
    """Arrival-time window, status and recovery hysteresis of one modality topic.

    Args:
        name: modality name, e.g. ``camera``.
        config: thresholds.
    """

    def __init__(self, name: str, config: TopicMonitorConfig):
        self.name = name
        self.config = config
        self._arrivals: deque = deque(maxlen=config.window_size)
        self._live = False
        self._healthy_count = 0
        self._since_resume = 0    # arrivals since the stream (re)started, at most window_size
        self._timed_out = False   # the timeout fired in the current silence: the next arrival resumes
        self._flapping = False    # the last burst ended before it filled the window

    def reconfigure(self, config: TopicMonitorConfig) -> None:
        """New thresholds; the newest arrivals (up to the new window size) are kept."""
        self.config = config
        self._arrivals = deque(self._arrivals, maxlen=config.window_size)
        self._since_resume = min(self._since_resume, config.window_size)

    def reset(self) -> None:
        """Forget every arrival (e.g. when the clock jumped back)."""
        self._arrivals.clear()
        self._live = False
        self._healthy_count = 0
        self._since_resume = 0
        self._timed_out = self._flapping = False

    def on_message(self, t: float) -> None:
        """Record one arrival at time ``t`` [s]. A time before the newest arrival resets; the first
        arrival after the timeout fired starts the count of arrivals since the stream resumed."""
        if self._arrivals and t < self._arrivals[-1]:
            self.reset()
        if self._timed_out:
            self._since_resume = 0
            self._timed_out = False
        self._arrivals.append(float(t))
        self._since_resume = min(self._since_resume + 1, self.config.window_size)

    @property
    def flapping(self) -> bool:
        """True while a stream whose last burst ended before it filled the window has not yet
        filled it again: its healthy checks do not count towards recovery."""
        return self._flapping and self._since_resume < self.config.window_size

    def _rate_window(self) -> list:
        """The arrivals the rate is measured over: those since the stream resumed once there are two,
        else the whole window (a single arrival has no rate of its own)."""
        arrivals = list(self._arrivals)
        return arrivals[-self._since_resume:] if self._since_resume >= 2 else arrivals

    @property
    def live(self) -> bool:
        return self._live

    @property
    def last_arrival(self) -> Optional[float]:
        return self._arrivals[-1] if self._arrivals else None

    def rate_hz(self, now: Optional[float] = None) -> float:
        """(N - 1) / span over the rate window (:meth:`_rate_window`), 0 with fewer than two
        arrivals. Given ``now``, the silence beyond one mean period joins the span, so a dead
        sensor's rate decays towards 0 instead of keeping its last value (an on-time arrival
        leaves the rate unchanged)."""
        arrivals = self._rate_window()
        if len(arrivals) < 2:
            return 0.0
        span = arrivals[-1] - arrivals[0]
        if span <= 0:
            return math.inf
        intervals = len(arrivals) - 1
        if now is not None:
            span += max(0.0, now - arrivals[-1] - span / intervals)
        return intervals / span

    def status(self, now: float, lateness: float = 0.0) -> int:
        """The status at ``now`` without touching the hysteresis state. ``lateness`` [s]: how long
        the caller could not see arrivals before ``now`` (its check ran that late): staleness is
        judged at ``now - lateness``, so a monitor that was starved of CPU does not declare a
        publishing sensor dead for messages still waiting in its queue."""
        if not self._arrivals:
            return NOT_RECEIVED
        seen = max(self._arrivals[-1], now - max(0.0, lateness))
        if seen - self._arrivals[-1] > self.config.timeout:
            return TIMEOUT
        rate = self.rate_hz()  # between arrivals: silence is the timeout's to judge, not the rate's
        if rate < self.config.error_rate:
            return ERROR_RATE
        if rate < self.config.warn_rate:
            return WARN_RATE
        return OK

    def check(self, now: float, advance: bool = True, lateness: float = 0.0) -> ModalityStatus:
        """Evaluate at ``now`` (``lateness``: see :meth:`status`). An unhealthy status makes the
        modality dead at once; a healthy one counts towards recovery only when ``advance`` (one
        call per check period) and the stream is not :attr:`flapping`."""
        status = self.status(now, lateness)
        if status == TIMEOUT and not self._timed_out:   # the silence began: was the stream a burst?
            self._flapping = self._since_resume < self.config.window_size
            self._timed_out = True
        if status not in HEALTHY:
            self._live = False
            self._healthy_count = 0
        elif not self._live and advance and not self.flapping:
            self._healthy_count += 1
            if self._healthy_count >= self.config.recover_count:
                self._live = True
                self._healthy_count = 0
        last = self.last_arrival
        age = math.inf if last is None else max(0.0, now - last)
        seen = now if last is None else max(last, now - max(0.0, lateness))
        return ModalityStatus(self.name, status, self._live, self.rate_hz(seen) if last is not None else 0.0,
                              age, self._healthy_count)


@dataclasses.dataclass(frozen=True)
class BatteryBudgetConfig:
    budget_levels: tuple = (0.5, 0.25, 0.0)    # battery fractions, strictly descending, last 0.0
    budget_values: tuple = (1.0, 0.7, 0.5)     # compute_budget while battery >= the level beside it
    budget_hysteresis: float = 0.03            # battery must exceed a level by this to climb back up
    battery_timeout: float = 5.0               # [s] battery silent this long -> unknown
    unknown_budget: float = 1.0                # compute_budget while the battery is unknown
    compute_budget_override: float = 0.0       # 0 = off; else this budget wins, in (0, 1]

    def __post_init__(self):
        levels, values = tuple(self.budget_levels), tuple(self.budget_values)
        check(len(levels) >= 1 and all(_is_number(v) for v in levels), 'budget_levels', levels,
              'a non-empty list of numbers')
        check(len(values) == len(levels), 'budget_values', values,
              f'one budget per level ({len(levels)} levels)')
        check(all(a > b for a, b in zip(levels, levels[1:])), 'budget_levels', levels,
              'strictly descending battery fractions')
        check(levels[0] <= 1.0 and levels[-1] == 0.0, 'budget_levels', levels,
              'fractions in [0, 1] ending with 0.0 so every battery level maps to a budget')
        check(all(_is_number(v) and 0 < v <= 1 for v in values), 'budget_values', values,
              'budgets in (0, 1]')
        check(_is_number(self.budget_hysteresis) and 0 <= self.budget_hysteresis < 0.5,
              'budget_hysteresis', self.budget_hysteresis, 'a battery fraction in [0, 0.5)')
        check(_is_number(self.battery_timeout) and self.battery_timeout > 0, 'battery_timeout',
              self.battery_timeout, 'a positive finite number of seconds')
        check(_is_number(self.unknown_budget) and 0 < self.unknown_budget <= 1, 'unknown_budget',
              self.unknown_budget, 'a budget in (0, 1]')
        check(_is_number(self.compute_budget_override) and 0 <= self.compute_budget_override <= 1,
              'compute_budget_override', self.compute_budget_override, '0 (off) or a budget in (0, 1]')
        object.__setattr__(self, 'budget_levels', tuple(float(v) for v in levels))
        object.__setattr__(self, 'budget_values', tuple(float(v) for v in values))


def battery_fraction(percentage: float, charge: float = math.nan, capacity: float = math.nan) -> float:
    """State of charge in [0, 1] from a BatteryState's fields; NaN when unknown.

    Args:
        percentage: BatteryState.percentage, 0..1 (NaN when the driver does not know).
        charge: BatteryState.charge [Ah], used when percentage is not a valid fraction.
        capacity: BatteryState.capacity [Ah].
    """
    if math.isfinite(percentage) and 0.0 <= percentage <= 1.0:
        return float(percentage)
    if math.isfinite(charge) and math.isfinite(capacity) and capacity > 0 and charge >= 0:
        return min(1.0, float(charge) / float(capacity))
    return math.nan


class BatteryBudget:
    """Battery state of charge -> compute_budget, with a silence timeout and hysteresis.

    Args:
        config: table, hysteresis, timeout, unknown budget and override.
    """

    def __init__(self, config: BatteryBudgetConfig):
        self.config = config
        self._fraction = math.nan
        self._stamp: Optional[float] = None
        self._index: Optional[int] = None  # current row of the table; None while unknown

    def reconfigure(self, config: BatteryBudgetConfig) -> None:
        self.config = config
        self._index = None

    def on_battery(self, t: float, percentage: float, charge: float = math.nan,
                   capacity: float = math.nan) -> None:
        """Record one BatteryState received at ``t`` [s]."""
        self._fraction = battery_fraction(percentage, charge, capacity)
        self._stamp = float(t)

    def percentage(self, now: float) -> float:
        """The battery fraction at ``now``; NaN when unknown, never received or silent too long."""
        if self._stamp is None or now - self._stamp > self.config.battery_timeout:
            return math.nan
        return self._fraction

    def budget(self, now: float) -> float:
        """compute_budget in (0, 1] at ``now``."""
        cfg = self.config
        fraction = self.percentage(now)
        if math.isnan(fraction):
            self._index = None
            table_budget = cfg.unknown_budget
        else:
            self._index = self._row(fraction)
            table_budget = cfg.budget_values[self._index]
        return cfg.compute_budget_override if cfg.compute_budget_override > 0 else table_budget

    def _row(self, fraction: float) -> int:
        levels = self.config.budget_levels
        raw = next(i for i, level in enumerate(levels) if fraction >= level or i == len(levels) - 1)
        if self._index is None or raw >= self._index:
            return raw  # first reading, or the battery fell: follow at once
        row = self._index  # the battery rose: climb only past level + hysteresis
        while row > 0 and fraction >= levels[row - 1] + self.config.budget_hysteresis:
            row -= 1
        return row


@dataclasses.dataclass(frozen=True)
class HealthState:
    """One snapshot, with the fields of ModalityHealth (arrays aligned with ``modalities``)."""
    stamp: float
    modalities: Tuple[str, ...]
    live: Tuple[bool, ...]
    status: Tuple[int, ...]
    rate_hz: Tuple[float, ...]
    age_s: Tuple[float, ...]
    healthy_count: Tuple[int, ...]
    battery_percentage: float
    compute_budget: float

    @property
    def live_set(self) -> frozenset:
        return frozenset(m for m, live in zip(self.modalities, self.live) if live)

    def changed_from(self, previous: Optional['HealthState']) -> bool:
        """True when the live set or the budget differs from ``previous`` (or there is none)."""
        return (previous is None or self.live_set != previous.live_set
                or self.compute_budget != previous.compute_budget)


class HealthTracker:
    """Every modality monitor plus the battery budget, producing :class:`HealthState`.

    Args:
        modalities: modality name -> thresholds, in the order the arrays are published.
        battery: battery table and settings.
    """

    def __init__(self, modalities: Mapping[str, TopicMonitorConfig], battery: BatteryBudgetConfig):
        self.monitors = {name: ModalityMonitor(name, cfg) for name, cfg in modalities.items()}
        self.battery = BatteryBudget(battery)
        self.last: Optional[HealthState] = None

    @property
    def modalities(self) -> Sequence[str]:
        return tuple(self.monitors)

    def on_message(self, modality: str, t: float) -> None:
        self.monitors[modality].on_message(t)

    def on_battery(self, t: float, percentage: float, charge: float = math.nan,
                   capacity: float = math.nan) -> None:
        self.battery.on_battery(t, percentage, charge, capacity)

    def check(self, now: float, advance: bool = True, lateness: float = 0.0) -> HealthState:
        """Snapshot at ``now``; ``advance`` counts this as one hysteresis check period;
        ``lateness`` [s]: how late this check runs (see :meth:`ModalityMonitor.status`).
        The result is also kept as ``last``."""
        statuses = [m.check(now, advance, lateness) for m in self.monitors.values()]
        state = HealthState(
            stamp=float(now),
            modalities=tuple(s.name for s in statuses),
            live=tuple(s.live for s in statuses),
            status=tuple(s.status for s in statuses),
            rate_hz=tuple(s.rate_hz for s in statuses),
            age_s=tuple(s.age_s for s in statuses),
            healthy_count=tuple(s.healthy_count for s in statuses),
            battery_percentage=self.battery.percentage(now),
            compute_budget=self.battery.budget(now),
        )
        self.last = state
        return state
