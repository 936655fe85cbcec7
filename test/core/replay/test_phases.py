"""phases: scenario -> named phases, per-phase summaries (accuracy, latency, switches), the table."""
import math

import numpy as np
import pytest

from sentryfuse_ros.core.replay.phases import Phase, format_summary, scenario_phases, summarize
from sentryfuse_ros.core.runtime.record import InferenceRecord
from sentryfuse_ros.core.sim.scenario import Scenario


def ev(t, action, **kw):
    return dict(t=t, action=action, **kw)


@pytest.mark.parametrize('events, duration, expected', [
    ((), 30.0, [(0, 30, 'all sensors')]),
    ((), 0.0, [(0, math.inf, 'all sensors')]),
    ((ev(12, 'drop', modality='lidar'), ev(22, 'restore', modality='lidar'), ev(28, 'drop', modality='audio'),
      ev(36, 'restore', modality='audio'), ev(42, 'battery', value=0.2)), 60.0,
     [(0, 12, 'all sensors'), (12, 22, 'lidar dropped'), (22, 28, 'all sensors'), (28, 36, 'audio dropped'),
      (36, 42, 'all sensors'), (42, 60, 'all sensors, battery 20%')]),
    # overlapping drops name both; labels and no-op events make no phase; an event at t=0 opens the run
    ((ev(0, 'drop', modality='camera'), ev(5, 'drop', modality='audio'), ev(6, 'label', label='dog'),
      ev(7, 'drop', modality='audio'), ev(8, 'restore', modality='lidar'), ev(9, 'restore', modality='camera')),
     20.0, [(0, 5, 'camera dropped'), (5, 9, 'camera dropped, audio dropped'), (9, 20, 'audio dropped')]),
    ((ev(3, 'battery', value=0.5), ev(4, 'drop', modality='lidar'), ev(5, 'battery', value=0.05)), 10.0,
     [(0, 3, 'all sensors'), (3, 4, 'all sensors, battery 50%'), (4, 5, 'lidar dropped, battery 50%'),
      (5, 10, 'lidar dropped, battery 5%')]),
])
def test_scenario_phases(events, duration, expected):
    phases = scenario_phases(Scenario(events=events, duration=duration))
    assert [(p.start, p.end, p.name) for p in phases] == expected
    # the phases tile the run: each starts where the previous ended
    assert all(a.end == b.start for a, b in zip(phases, phases[1:]))


def test_duration_argument_overrides_the_scenario():
    s = Scenario(events=(ev(2, 'drop', modality='lidar'),), duration=60.0)
    assert scenario_phases(s, duration=5.0)[-1] == Phase(2.0, 5.0, 'lidar dropped')


def test_phases_end_at_duration_when_events_come_later():
    s = Scenario(events=(ev(12, 'drop', modality='lidar'),))
    assert scenario_phases(s, duration=10.0) == [Phase(0.0, 10.0, 'all sensors')]


def rec(t, label, truth, sub='c+l+a@1.00', total=10.0, infer=4.0, reconf=0.0, mods=('camera', 'lidar', 'audio'),
        gflops=0.02):
    return InferenceRecord(t=t, t_sample=t, label=label, class_id=0, truth=truth, confidence=1.0, scores=(1.0,),
                           modalities=mods, budget=1.0, gflops=gflops, subnetwork=sub, stamp_s=t, convert_ms=0.0,
                           preprocess_ms=0.0, reconfigure_ms=reconf, inference_ms=infer, total_ms=total,
                           sensor_age_ms=0.0)


def test_summarize_per_phase_and_switches():
    phases = [Phase(0.0, 10.0, 'all sensors'), Phase(10.0, 20.0, 'lidar dropped'), Phase(20.0, 30.0, 'empty')]
    records = [
        rec(1, 'cat', 'cat', total=10), rec(2, 'dog', 'cat', total=20), rec(3, 'dog', None, total=30),
        rec(11, 'cat', 'cat', sub='c+a@1.00', mods=('camera', 'audio'), total=5, reconf=0.5, gflops=0.01),
        rec(12, 'cat', 'cat', sub='c+a@1.00', mods=('camera', 'audio'), total=7, gflops=0.01),
        rec(13, 'dog', 'dog', sub='c+l+a@1.00', total=9, reconf=1.5),
    ]
    s = summarize(records, phases)
    first, second, empty = s['phases']
    assert (first['name'], first['n'], first['n_scored']) == ('all sensors', 3, 2)
    assert first['accuracy'] == pytest.approx(0.5)
    assert first['total_ms_p50'] == pytest.approx(20.0)
    assert first['total_ms_p95'] == pytest.approx(np.percentile([10, 20, 30], 95))
    assert first['modalities'] == {'camera+lidar+audio': 3}
    assert second['accuracy'] == 1.0 and second['n'] == 3
    assert second['subnetworks'] == {'c+a@1.00': 2, 'c+l+a@1.00': 1}
    assert second['gflops_mean'] == pytest.approx((0.01 + 0.01 + 0.02) / 3)
    assert empty['n'] == 0 and empty['accuracy'] is None and empty['total_ms_p50'] is None
    assert s['overall']['n'] == 6 and s['overall']['accuracy'] == pytest.approx(4 / 5)
    assert s['switches'] == {'count': 2, 'reconfigure_ms_p50': pytest.approx(1.0), 'reconfigure_ms_max': 1.5}


def test_summarize_no_records_and_no_switches():
    s = summarize([], [Phase(0.0, 1.0, 'all sensors')])
    assert s['overall']['n'] == 0 and s['overall']['gflops_mean'] is None
    assert s['switches'] == {'count': 0, 'reconfigure_ms_p50': None, 'reconfigure_ms_max': None}
    same = summarize([rec(0.1, 'a', 'a'), rec(0.2, 'a', 'b')], [Phase(0.0, 1.0, 'x')])
    assert same['switches']['count'] == 0 and same['overall']['accuracy'] == 0.5


def test_format_summary_table():
    phases = [Phase(0.0, 10.0, 'all sensors'), Phase(10.0, 20.0, 'lidar dropped')]
    s = summarize([rec(1, 'cat', 'cat', total=12.34), rec(11, 'cat', 'dog', sub='x', reconf=2.5,
                                                           mods=('camera', 'audio'))], phases)
    lines = format_summary(s).splitlines()
    assert lines[0].split()[:6] == ['phase', 'n', 'acc', 'p50', 'ms', 'p95']
    assert len(lines) == 1 + 2 + 1 + 1       # header, 2 phases, overall, switches
    assert lines[1].startswith('   0- 10s all sensors') and ' 1.000 ' in lines[1] and '12.3' in lines[1]
    assert 'camera+lidar+audio x1' in lines[1]
    assert lines[2].startswith('  10- 20s lidar dropped') and ' 0.000 ' in lines[2] and 'camera+audio x1' in lines[2]
    assert lines[3].startswith('overall') and ' 0.500 ' in lines[3]
    assert lines[4] == ('sub-network switches: 1; reconfigure time at a switch: p50 2.50 ms, max 2.50 ms '
                        '(max includes first-time builds)')
    empty = format_summary(summarize([], phases)).splitlines()
    assert '     -' in empty[1] and 'p50 - ms, max - ms' in empty[-1]
