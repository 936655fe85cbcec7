"""The replay's timers on the bag clock: firing order, ties, the end of the bag."""
import pytest

from sentryfuse_ros.core.replay.schedule import TickSchedule


def test_timers_fire_in_time_order_health_first_at_a_tie():
    s = TickSchedule({'health': 0.1, 'infer': 0.25, 'battery': 1.0}, ['health', 'infer', 'battery'],
                     first={'infer': 1})
    fired = list(s.due(0.5, inclusive=True))
    assert [name for name, _ in fired] == ['health', 'battery', 'health', 'health', 'infer', 'health',
                                           'health', 'health', 'infer']
    assert [t for _, t in fired] == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.5])


def test_a_tick_at_the_message_instant_waits_for_the_message():
    s = TickSchedule({'health': 0.5}, ['health'])
    assert list(s.due(0.5)) == [('health', 0.0)]             # 0.5 itself excluded: the message comes first
    assert list(s.due(0.5, inclusive=True)) == [('health', 0.5)]
    assert list(s.due(0.9)) == []                            # nothing fires twice


def test_no_timers_fire_nothing():
    assert list(TickSchedule({'infer': 0.1}, []).due(10.0, inclusive=True)) == []
