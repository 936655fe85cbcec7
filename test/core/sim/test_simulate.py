"""simulate-bag: standard bags of the simulated robot, scenario dropouts and battery, determinism."""
import dataclasses
import pathlib
import sys

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from replay_fixtures import SIM, sim_bag  # noqa: E402

from sentryfuse_ros.core.bags.reader import BagSource, iter_messages, summarize  # noqa: E402
from sentryfuse_ros.core.errors import BagError, ConfigError  # noqa: E402
from sentryfuse_ros.core.sim.scenario import Scenario  # noqa: E402
from sentryfuse_ros.core.data.scenes import SCENE_PRESETS, SceneStream  # noqa: E402
from sentryfuse_ros.core.sim.simulate import TYPES, SimBagConfig, scene_truth  # noqa: E402

SCENARIO = Scenario(events=({'t': 1.0, 'action': 'drop', 'modality': 'lidar'},
                            {'t': 2.0, 'action': 'restore', 'modality': 'lidar'},
                            {'t': 1.5, 'action': 'battery', 'value': 0.3}), duration=3.0)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_simulated_bag_is_standard_and_follows_the_scenario(tmp_path, storage):
    path = sim_bag(tmp_path / 'bag', duration=3.0, storage=storage, scenario=SCENARIO)
    meta = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['version'] == 8 and meta['storage_identifier'] == storage
    assert not (tmp_path / 'bag.partial').exists()
    info = summarize(path)
    assert {t: v['type'] for t, v in info['topics'].items()} == {SIM.topic(s): TYPES[s] for s in TYPES}
    counts = {t: v['count'] for t, v in info['topics'].items()}
    # 3 s: camera 15 Hz, lidar 10 Hz minus the 1 s dropout, 20 ms audio, battery 1 Hz, labels 10 Hz
    assert counts == {SIM.camera_topic: 45, SIM.lidar_topic: 20, SIM.audio_topic: 150,
                      SIM.battery_topic: 3, SIM.labels_topic: 30}
    with BagSource(path) as bag:
        origin = bag.start_ns
        msgs = list(iter_messages(bag))
    lidar_t = [(m.t_ns - origin) / 1e9 for m in msgs if m.modality == 'lidar']
    assert not any(1.0 <= t < 2.0 for t in lidar_t) and max(lidar_t) > 2.0
    battery = [m.msg.percentage for m in msgs if m.modality == 'battery']
    assert battery[0] == pytest.approx(1.0) and battery[2] < 0.3  # set to 0.3 at 1.5 s, draining
    for m in msgs:
        t = (m.t_ns - origin) / 1e9
        if m.modality == 'labels':
            assert m.msg.data == scene_truth(SIM, t)
        elif m.modality == 'camera':
            assert (m.msg.height, m.msg.width, m.msg.encoding) == (64, 64, 'rgb8')
            stamp = m.msg.header.stamp.sec + m.msg.header.stamp.nanosec * 1e-9
            assert m.t_ns / 1e9 - stamp == pytest.approx(SIM.transport_delay_s, abs=1e-6)
        elif m.modality == 'audio':
            assert (m.msg.sample_rate, m.msg.encoding, len(m.msg.data)) == (8000, 'S16LE', 320)
    assert [m.t_ns for m in msgs] == sorted(m.t_ns for m in msgs)


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path):
    a, b = sim_bag(tmp_path / 'a', duration=1.0), sim_bag(tmp_path / 'b', duration=1.0)
    c = sim_bag(tmp_path / 'c', duration=1.0, config=SimBagConfig(**{**SIM.__dict__, 'seed': 5}))
    with BagSource(a) as x, BagSource(b) as y, BagSource(c) as z:
        ra, rb, rc = list(x.raw_messages()), list(y.raw_messages()), list(z.raw_messages())
    assert ra == rb
    assert [r[3] for r in ra if r[1] == SIM.camera_topic] != [r[3] for r in rc if r[1] == SIM.camera_topic]


def test_audio_frames_join_into_the_scene_stream(tmp_path):
    path = sim_bag(tmp_path / 'bag', duration=0.5)
    with BagSource(path) as bag:
        frames = [m.msg for m in iter_messages(bag) if m.modality == 'audio']
    pcm = np.concatenate([np.frombuffer(f.data.tobytes(), '<i2') for f in frames]) / 32768.0
    stream = SceneStream(dataclasses.replace(SCENE_PRESETS['sim6'], image_size=64, lidar_points=1024),
                         seed=SIM.seed, scene_duration_s=SIM.scene_duration_s)
    # the sensor_sim way: one chunk per 20 ms frame (noise is drawn per chunk), in stamp order
    expected = np.concatenate([stream.audio_chunk(k * 0.02, 160) for k in range(len(frames))])
    np.testing.assert_allclose(pcm, expected, atol=1 / 32768 + 1e-6)
    stamps = [f.header.stamp.sec + f.header.stamp.nanosec * 1e-9 - SIM.start_time_s for f in frames]
    np.testing.assert_allclose(stamps, np.arange(len(frames)) * 0.02, atol=1e-6)


def test_errors(tmp_path):
    sim_bag(tmp_path / 'bag', duration=0.2)
    with pytest.raises(BagError, match=r"bag '.*bag' exists already; not overwriting"):
        sim_bag(tmp_path / 'bag', duration=0.2)
    with pytest.raises(BagError, match=r"storage='rosbag1': expected one of \['mcap', 'sqlite3'\]"):
        sim_bag(tmp_path / 'other', duration=0.2, storage='rosbag1')
    with pytest.raises(ConfigError, match=r"camera_rate=0: expected a positive number"):
        SimBagConfig(camera_rate=0)
    with pytest.raises(ConfigError, match=r"preset='sim7': expected one of"):
        SimBagConfig(preset='sim7')
    with pytest.raises(ConfigError, match=r"--duration=-1.0: expected a positive number of seconds"):
        sim_bag(tmp_path / 'neg', duration=-1.0)
    assert not (tmp_path / 'other').exists() and not (tmp_path / 'other.partial').exists()


def test_cli_writes_a_bag_fast(tmp_path, capsys):
    from sentryfuse_ros import cli
    rc = cli.main(['simulate-bag', str(tmp_path / 'demo'), '--storage', 'sqlite3', '--duration', '2',
                   '--no-progress'])
    assert rc == 0
    out = capsys.readouterr().out
    assert 'sqlite3, 2 s' in out and '/camera/image_raw x30' in out
    assert summarize(tmp_path / 'demo')['storage'] == 'sqlite3'
