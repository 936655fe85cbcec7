"""The replay's timers on the bag clock: health checks, inference ticks, battery feeds.

The nodes run these on ROS timers; the replay runs them between bag messages, in bag time, so a
run is deterministic. Ties: a message received at the very instant of a tick is handled first
(:meth:`TickSchedule.due` excludes ``t_end``), and at one instant the timers fire in the order
they were given (health before inference).
"""
from typing import Dict, Iterator, Optional, Sequence, Tuple


class TickSchedule:
    """Periodic timers on one clock starting at 0 s; yields each firing in time order.

    Args:
        periods: timer name -> period [s].
        first: timer name -> index of its first firing (1 = one period after the start; default 0,
            at the start).
        order: the timers that run, in tie-break order.
    """

    def __init__(self, periods: Dict[str, float], order: Sequence[str], first: Optional[Dict[str, int]] = None):
        self.periods = {k: float(periods[k]) for k in order}
        self.order = tuple(order)
        self.count = {k: int((first or {}).get(k, 0)) for k in order}  # next firing of each, in periods

    def due(self, t_end: float, inclusive: bool = False) -> Iterator[Tuple[str, float]]:
        """(timer, time [s]) of every firing before ``t_end`` (at ``t_end`` too when ``inclusive``)."""
        while self.order:
            name = min(self.order, key=lambda k: (self.count[k] * self.periods[k], self.order.index(k)))
            t = self.count[name] * self.periods[name]
            if t > t_end or (t == t_end and not inclusive):
                return
            self.count[name] += 1
            yield name, t
