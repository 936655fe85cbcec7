"""Live replay over real DDS gives the offline replay's predictions for the same inputs.

Both runs use ``trigger: camera`` (one inference per camera frame, a perception-node parameter),
so every prediction has a twin: its header stamp is the stamp of the newest sample it used, which
is the camera frame's (a simulated bag records lidar and audio no later than the camera frame that
follows them, and audio frames are stamped with their first sample). Predictions are paired by
that stamp.

Timing effects, why a pair can differ, and why the test allows a few:
- simultaneous arrivals: every 0.2 s a camera frame and a lidar scan have the same receive time.
  Offline handles the camera frame first (bag order), so the inference uses the previous scan;
  live, the executor may run the lidar callback first.
- callback lag: live, an audio frame or lidar scan published a few ms before a camera frame may
  still wait in the executor when the camera callback runs (the machine is shared), so the audio
  ring holds one frame less or the previous scan is used.
- health: the live health monitor checks on its own wall-clock timer, not on the bag's 0.1 s
  grid, so near start-up the live set can differ for a check period (modalities_used differs).
Otherwise the input arrays, converters, sub-network and model are the same, so the scores are
equal to float precision: most pairs are required to be, and nearly all to agree on the class.
"""
import os
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from replay_fixtures import sim_bag  # noqa: E402

pytest.importorskip('rclpy')
from sentryfuse_ros import cli  # noqa: E402
from sentryfuse_ros.core.errors import BagError  # noqa: E402
from sentryfuse_ros.core.replay.replay import Faults, ReplayConfig  # noqa: E402
from sentryfuse_ros.apps.replay_live import graph_parameters, replay_live  # noqa: E402

pytestmark = pytest.mark.slow  # live replay: nodes spinning over DDS

DOMAIN = 60 + os.getpid() % 30  # away from conftest's 100-199 and test_graph's 231


def test_live_replay_matches_offline_predictions(tmp_path, checkpoint):
    import json
    bag = sim_bag(tmp_path / 'bag', duration=3.0)
    runs = {}
    for mode in ('offline', 'live'):
        out = tmp_path / mode
        rc = cli.main(['replay', str(bag), '--mode', mode, '--trigger', 'camera', '--checkpoint', str(checkpoint),
                       '--out', str(out), '--domain-id', str(DOMAIN), '--no-progress', '--no-plots'])
        assert rc == 0
        runs[mode] = [json.loads(line) for line in (out / 'records.jsonl').read_text().splitlines()]
        metrics = json.loads((out / 'metrics.json').read_text())
        assert metrics['mode'] == mode and metrics['accuracy']['has_labels']
    offline, live = runs['offline'], {round(r['stamp_s'], 6): r for r in runs['live']}
    assert len(offline) >= 35  # 45 camera frames, minus the health warm-up
    pairs = [(r, live[round(r['stamp_s'], 6)]) for r in offline if round(r['stamp_s'], 6) in live]
    assert len(pairs) >= 0.8 * len(offline)
    same_class = np.mean([a['label'] == b['label'] for a, b in pairs])
    diff = np.array([np.abs(np.subtract(a['scores'], b['scores'])).max() for a, b in pairs])
    assert same_class >= 0.8
    assert np.mean(diff < 1e-4) >= 0.5, diff  # identical inputs -> identical scores
    # truth is looked up at the same sensor stamp in both modes
    assert all(a['truth'] == b['truth'] for a, b in pairs)
    # live latencies are what the perception node published on /sentryfuse/latency
    assert all(b['inference_ms'] > 0 and b['total_ms'] >= b['inference_ms'] for _, b in pairs)


def test_live_replay_injects_faults_and_records_health(tmp_path, checkpoint):
    bag = sim_bag(tmp_path / 'bag', duration=2.0)
    result = replay_live(bag, ReplayConfig(), checkpoint=str(checkpoint), domain_id=DOMAIN + 1,
                         faults=Faults(budget=0.55, battery_profile=((0.0, 0.2),)), rate=2.0)
    assert result.mode == 'live' and result.records
    assert result.read['injected_drops'] == {'battery_replaced': 2}
    # the override wins over the profile (float32 on the wire)
    assert {round(r.budget, 5) for r in result.records} == {0.5}  # the fixed budget 0.55 snaps down to the 0.5 level
    assert result.availability and {round(a['budget'], 5) for a in result.availability} == {0.55}
    assert any(all(a['live'].values()) for a in result.availability)
    # unmapped topics are not played; the label topic gives the ground truth
    assert result.labels_source == 'topic /sentryfuse/ground_truth'


def test_graph_parameters_follow_the_bag_mapping():
    mapping = {'camera': '/front/image', 'lidar': '/scan'}
    params = graph_parameters(ReplayConfig(), mapping, {'camera': 'sensor_msgs/msg/CompressedImage',
                                                        'lidar': 'sensor_msgs/msg/LaserScan'},
                              Faults(budget=0.7), '/m.pt', use_sim_time=True)
    h, p = params['health_monitor'], params['perception']
    assert (h['camera.topic'], h['lidar.type'], h['audio.topic']) == (
        '/front/image', 'sensor_msgs/msg/LaserScan', '/audio/frames')
    assert (p['camera.type'], p['model_path'], h['compute_budget_override']) == (
        'sensor_msgs/msg/CompressedImage', '/m.pt', 0.7)
    assert params['**'] == {'use_sim_time': True}


def test_graph_parameters_are_the_graph_files_and_follow_the_schema(tmp_path, monkeypatch):
    """The live replay starts its nodes with the graph's own parameters (--params / config/perception.yaml;
    schema defaults where unset), not a copy of them."""
    import dataclasses

    from sentryfuse_ros.core.replay.replay import load_replay_config
    from sentryfuse_ros.core.runtime import param_files, params
    monkeypatch.setattr(params, 'PERCEPTION', tuple(
        dataclasses.replace(s, default=0.9 if s.name == 'camera.max_age' else s.default) for s in params.PERCEPTION))
    graph_file = tmp_path / 'graph.yaml'
    graph_file.write_text('health_monitor:\n  ros__parameters:\n    lidar: {timeout: 0.6}\n', encoding='utf-8')
    config = load_replay_config(None, param_files.graph_parameters(graph_file))
    params_ = graph_parameters(config, {}, {}, Faults(), '/m.pt', use_sim_time=False)
    assert params_['perception']['camera.max_age'] == 0.9 and params_['health_monitor']['lidar.timeout'] == 0.6
    assert config.health.lidar.timeout == 0.6 and config.engine.max_age_s[0] == 0.9


def test_live_errors(tmp_path, checkpoint):
    bag = sim_bag(tmp_path / 'bag', duration=0.3)
    with pytest.raises(BagError, match=r'--rate=0.0: expected a positive playback speed factor'):
        replay_live(bag, ReplayConfig(), checkpoint=str(checkpoint), rate=0.0)
    with pytest.raises(BagError, match=r"bag '.*missing' does not exist"):
        replay_live(tmp_path / 'missing', ReplayConfig(), checkpoint=str(checkpoint))
    with pytest.raises(BagError, match=r"the perception node could not load the model: cannot load model '.*nope.pt'"):
        replay_live(bag, ReplayConfig(), checkpoint=str(tmp_path / 'nope.pt'), domain_id=DOMAIN + 2)
