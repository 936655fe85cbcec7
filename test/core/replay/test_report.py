"""Replay report: metrics from known records, files written atomically, a KITTI bag's latency report."""
import json
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from replay_fixtures import write_kitti_bag  # noqa: E402

from sentryfuse_ros import cli  # noqa: E402
from sentryfuse_ros.core.replay import report  # noqa: E402
from sentryfuse_ros.core.errors import ConfigError  # noqa: E402
from sentryfuse_ros.core.replay.phases import Phase  # noqa: E402
from sentryfuse_ros.core.replay.replay import STAGES, ReplayResult  # noqa: E402
from sentryfuse_ros.core.runtime.record import InferenceRecord  # noqa: E402


def _record(t, label, truth, modalities=('camera', 'lidar'), budget=1.0, total=5.0):
    return InferenceRecord(t=t, t_sample=t, label=label, class_id=0, truth=truth, confidence=0.9,
                           scores=(0.9, 0.1), modalities=tuple(modalities), budget=budget, gflops=0.01,
                           subnetwork=f"{'+'.join(modalities)}@{budget:.2f}", stamp_s=t, convert_ms=1.0,
                           preprocess_ms=2.0, reconfigure_ms=0.01, inference_ms=total - 3.0, total_ms=total,
                           sensor_age_ms=10.0)


def make_result(records, availability=None) -> ReplayResult:
    avail = availability if availability is not None else [
        {'t': 0.1 * k, 'live': {'camera': True, 'lidar': k % 4 != 0}, 'status': {}, 'budget': 1.0,
         'battery': float('nan')} for k in range(20)]
    return ReplayResult(mode='offline', bag={'path': '/x/bag', 'storage': 'mcap', 'version': 8, 'files': 1,
                                             'start_ns': 0, 'end_ns': 2 * 10**9, 'duration_s': 2.0,
                                             'message_count': 42, 'topics': {}},
                        mapping={'camera': '/c', 'lidar': '/l'}, notes=['camera: /c'], class_names=('cat', 'dog'),
                        records=records, availability=avail,
                        read={'skipped': {'/chatter': {'type': 'std_msgs/msg/String', 'count': 3}},
                              'errors': {}, 'injected_drops': {'lidar': 2}},
                        faults={'drops': []}, switches=1, wall_s=0.5, labels_source='topic /gt')


def test_metrics_from_known_records():
    recs = [_record(0.1, 'cat', 'cat'), _record(0.2, 'dog', 'cat', total=7.0),
            _record(0.3, 'dog', None), _record(1.1, 'dog', 'dog', ('camera',), 0.7, total=9.0),
            _record(1.2, 'cat', 'fox', ('camera',), 0.7)]
    m = report.build_metrics(make_result(recs), [Phase(0.0, 1.0, 'all sensors'), Phase(1.0, 2.0, 'lidar dropped')])
    acc = m['accuracy']
    assert acc['overall'] == {'n': 5, 'n_scored': 4, 'accuracy': 0.5}
    assert [(p['name'], p['n_scored'], p['accuracy']) for p in acc['phases']] == [
        ('all sensors', 2, 0.5), ('lidar dropped', 2, 0.5)]
    assert acc['conditions'] == {'camera @ 0.70': {'n': 2, 'n_scored': 2, 'accuracy': 0.5},
                                 'camera+lidar @ 1.00': {'n': 3, 'n_scored': 2, 'accuracy': 0.5}}
    assert acc['confusion'] == {'rows_truth': ['cat', 'dog', 'fox'], 'cols_predicted': ['cat', 'dog'],
                                'counts': [[1, 1], [0, 1], [1, 0]]}
    assert acc['unknown_truth_labels'] == ['fox']
    totals = [r.total_ms for r in recs]
    for q in (50, 95, 99):
        assert m['latency_ms']['total_ms'][f'p{q}'] == pytest.approx(np.percentile(totals, q))
    assert set(m['latency_ms']) == set(STAGES) and m['latency_ms']['convert_ms']['n'] == 5
    assert m['availability']['fraction_live'] == {'camera': 1.0, 'lidar': 0.75}
    assert m['budgets']['inferences_per_budget'] == {'1.00': 3, '0.70': 2}
    assert m['switches']['count'] == 1 and m['run']['speed_x_realtime'] == pytest.approx(4.0)
    assert m['skipped']['count'] == 3 and m['skipped']['injected_drops'] == {'lidar': 2}


def test_metrics_without_labels_or_records():
    m = report.build_metrics(make_result([_record(0.1, 'cat', None)]))
    assert m['accuracy']['has_labels'] is False and m['accuracy']['overall']['accuracy'] is None
    assert m['accuracy']['phases'][0]['name'] == 'whole bag'
    empty = report.build_metrics(make_result([], availability=[]))
    assert empty['latency_ms']['total_ms']['p50'] is None and empty['availability']['fraction_live'] == {}
    assert 'No labels' in report.report_markdown(empty)


@pytest.mark.slow
def test_write_report_is_atomic(tmp_path, monkeypatch):
    result = make_result([_record(0.1 * k, 'cat', 'cat' if k % 3 else 'dog') for k in range(1, 19)])
    out = tmp_path / 'r'
    metrics = report.write_report(out, result)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ['metrics.json', 'records.jsonl', 'report.md', *report.PLOTS])
    assert json.loads((out / 'metrics.json').read_text())['accuracy']['overall'] == metrics['accuracy']['overall']
    assert all((out / p).stat().st_size > 5000 for p in report.PLOTS)
    text = (out / 'report.md').read_text()
    assert '| truth \\ pred | cat | dog |' in text and '| total_ms | 18 |' in text
    with pytest.raises(ConfigError, match=r"--out '.*r' exists; choose a new folder or pass --overwrite"):
        report.write_report(out, result)

    def boom(*args, **kwargs):
        raise RuntimeError('disk full')
    monkeypatch.setattr(report, 'write_plots', boom)
    with pytest.raises(RuntimeError, match='disk full'):
        report.write_report(tmp_path / 'r2', result)
    assert not (tmp_path / 'r2').exists() and not (tmp_path / 'r2.partial').exists()
    with pytest.raises(RuntimeError, match='disk full'):
        report.write_report(out, result, overwrite=True)
    assert (out / 'metrics.json').is_file()  # the old complete report stays when a rewrite fails


def test_kitti_bag_replays_with_the_per_stage_latency_report(shared_data, checkpoint, tmp_path, capsys):
    bag = tmp_path / 'kitti'
    frames = write_kitti_bag(bag, shared_data / 'kitti', seconds=2.0, rate=10.0)
    out = tmp_path / 'report'
    rc = cli.main(['replay', str(bag), '--out', str(out), '--checkpoint', str(checkpoint), '--no-progress',
                   '--topic', 'camera=/kitti/camera/image_raw', '--topic', 'lidar=/kitti/velodyne_points'])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / 'metrics.json').read_text())
    assert m['bag']['message_count'] == 2 * frames and m['accuracy']['has_labels'] is False
    assert m['sensor_topics'] == {'camera': '/kitti/camera/image_raw', 'lidar': '/kitti/velodyne_points'}
    n = m['run']['inferences']
    assert n >= 15 and m['availability']['modalities_used'].get('camera+lidar', 0) >= n - 2
    for stage in STAGES:
        row = m['latency_ms'][stage]
        assert row['n'] == n and row['p50'] <= row['p95'] <= row['p99'] <= row['max']
    # real sizes cost real time: 1242x375 images and ~120k-point clouds
    assert m['latency_ms']['convert_ms']['p50'] > 0 and m['latency_ms']['preprocess_ms']['p50'] > 0
    text = (out / 'report.md').read_text()
    assert '## Latency per stage [ms]' in text and f'| preprocess_ms | {n} |' in text
