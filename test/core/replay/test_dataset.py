"""Labelled bags -> dataset: the samples are the replay's inferences (same ticks, same live sets, same
inputs), a sensor dropout gives real dropout samples, both storages, KITTI frames with a label CSV,
resume after an interruption, unreadable / sensor-less bags, label-file and --out errors."""
import pathlib
import shutil
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from replay_fixtures import sim_bag, write_kitti_bag  # noqa: E402

from sentryfuse_ros import cli  # noqa: E402
from sentryfuse_ros.core.replay.dataset import build_dataset, read_label_table  # noqa: E402
from sentryfuse_ros.core.replay.replay import OfflineReplay, ReplayConfig, ReplaySettings  # noqa: E402
from sentryfuse_ros.core.sim.scenario import Scenario, ScenarioEvent  # noqa: E402
from sentryfuse_ros.core.bags.types import make_string, make_typestore  # noqa: E402
from sentryfuse_ros.core.bags.writer import BagSink  # noqa: E402
from sentryfuse_ros.core.data.bagdataset import BagDataset  # noqa: E402
from sentryfuse_ros.core.data.preprocess import PreprocessConfig  # noqa: E402
from sentryfuse_ros.core.errors import ConfigError, DataError  # noqa: E402
from sentryfuse_ros.core.runtime.engine import PerceptionEngine  # noqa: E402
from sentryfuse_ros.msg_arrays.modality_inputs import engine_converters  # noqa: E402

ALL = ('camera', 'lidar', 'audio')
LIDAR_DROP = Scenario(events=(ScenarioEvent(t=2.0, action='drop', modality='lidar'),
                              ScenarioEvent(t=4.0, action='restore', modality='lidar')))


def build(bags, out, config=ReplayConfig(), **kwargs):
    kwargs.setdefault('log', lambda s: None)
    return build_dataset(bags, out, pre=PreprocessConfig(), modalities=ALL, config=config,
                         make_converters=engine_converters, **kwargs)


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dsbags')
    return (sim_bag(tmp / 'drop_mcap', duration=6.0, storage='mcap', scenario=LIDAR_DROP),
            sim_bag(tmp / 'plain_sqlite', duration=4.0, storage='sqlite3'))


@pytest.mark.slow
def test_samples_are_the_replays_inferences(trained, bags, tmp_path):
    result = build(bags, tmp_path / 'ds')
    ds = BagDataset(result.path)
    m = result.manifest
    assert not (tmp_path / 'ds.partial').exists() and [b['name'] for b in m['bags']] == ['drop_mcap', 'plain_sqlite']
    assert [b['storage'] for b in m['bags']] == ['mcap', 'sqlite3']
    # the replay of the same bag through the perception engine: same ticks, same live sets, same inputs
    model, gate = trained
    engine = PerceptionEngine(model, gate.scores)
    with torch.inference_mode():
        records = OfflineReplay(engine, ReplayConfig(), engine_converters).run(bags[0]).records
    labelled = [r for r in records if r.truth is not None]
    drop = m['bags'][0]
    assert drop['samples'] == len(labelled) and drop['unlabelled'] == len(records) - len(labelled)
    mask = ds.bag_index == 0
    t = np.fromfile(result.path / 'shard-0000' / 't.f64')
    assert np.allclose(t, [r.t for r in labelled])
    assert [tuple(m for m, p in zip(ALL, row) if p) for row in ds.present[mask]] == \
        [tuple(r.modalities) for r in labelled]
    assert [ds.class_names[i] for i in ds.labels[mask]] == [r.truth for r in labelled]
    # the 2 s lidar dropout gives real camera+audio samples, kept (half its ticks are label transitions)
    assert drop['modality_sets'].get('camera+audio', 0) >= 8
    assert sum(drop['modality_sets'].values()) == drop['samples']
    assert m['samples'] == len(ds) == drop['samples'] + m['bags'][1]['samples']
    assert m['preprocess_hash'] == ds.manifest['preprocess_hash'] and m['sampling']['rate_hz'] == 10.0


def test_inputs_equal_the_engine_inputs(bags, tmp_path):
    """Sample k of the dataset is, up to float16, what the engine's input stage prepared at that tick."""
    result = build(bags[:1], tmp_path / 'ds')
    ds = BagDataset(result.path)
    from sentryfuse_ros.core.replay.replay import BagDriver
    from sentryfuse_ros.core.runtime.inputs import SensorInputs

    class Collect(BagDriver):
        def on_infer(self, t, origin, live, budget):
            p = self.inputs.prepare(origin + t, live)
            if p.modalities and self.track.truth(p.stamp_s - origin) is not None:
                got.append(p.arrays)
    got = []
    pre = PreprocessConfig()
    Collect(SensorInputs(pre, ALL, (0.5, 0.5, 0.5), 0.25), ReplayConfig(), engine_converters).drive(bags[0])
    assert len(got) == len(ds)
    for k in (0, len(ds) // 2, len(ds) - 1):
        for mod, x in got[k].items():
            assert np.allclose(ds.inputs(np.array([k]), (mod,))[mod][0], x, atol=2e-3, rtol=1e-3)


def test_kitti_frames_with_a_label_csv(shared_data, tmp_path):
    n = write_kitti_bag(tmp_path / 'kitti', shared_data / 'kitti', seconds=2.0)
    assert n == 20
    (tmp_path / 'labels.csv').write_text('t,label\n0,car\n1.0,cyclist\n')
    config = ReplayConfig(replay=ReplaySettings(label_transition_s=0.0))
    config = ReplayConfig(topics=config.topics.with_topics(camera='/kitti/camera/image_raw',
                                                          lidar='/kitti/velodyne_points', labels=''),
                          replay=config.replay)
    result = build([tmp_path / 'kitti'], tmp_path / 'ds', config=config, label_csv=tmp_path / 'labels.csv')
    bag = result.manifest['bags'][0]
    # 1.9 s of bag at 10 Hz = 19 ticks; the health monitor declares a sensor live after 3 messages, so
    # ticks 0.1 and 0.2 have no live sensor and tick 0.3 has the camera only (its lidar frame is 1 ms later);
    # a tick is labelled by its newest sample's stamp: up to 0.999 s car (8 ticks), then cyclist (9)
    assert (bag['ticks'], bag['no_input'], bag['unlabelled'], bag['samples']) == (19, 2, 0, 17)
    assert bag['modality_sets'] == {'camera+lidar': 16, 'camera': 1}
    assert bag['classes'] == {'car': 8, 'cyclist': 9} and result.manifest['class_names'] == ['car', 'cyclist']
    assert bag['labels_source'] == 'file'
    ds = BagDataset(result.path)
    assert len(ds) == 17 and ds.inputs(np.arange(17), ('camera',))['camera'].std() > 0.1


@pytest.mark.slow
def test_resume_after_an_interruption(bags, tmp_path):
    def interrupt(frac, text):
        if 'bag 2/2' in text:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        build(bags, tmp_path / 'ds', progress=interrupt)
    assert (tmp_path / 'ds.partial').is_dir() and not (tmp_path / 'ds').exists()
    with pytest.raises(DataError, match=r'incomplete build'):
        BagDataset(tmp_path / 'ds')
    first = (tmp_path / 'ds.partial' / 'shard-0000' / 'camera.f16').stat().st_mtime_ns
    lines = []
    result = build(bags, tmp_path / 'ds', log=lines.append)
    assert lines[0].startswith('resuming') and '1 of 2 bags already done' in lines[0]
    assert (result.path / 'shard-0000' / 'camera.f16').stat().st_mtime_ns == first  # not redone
    fresh = build(bags, tmp_path / 'fresh').manifest
    assert [b['samples'] for b in result.manifest['bags']] == [b['samples'] for b in fresh['bags']]
    # other settings on an unfinished build: refused, naming what differs
    with pytest.raises(KeyboardInterrupt):
        build(bags, tmp_path / 'ds2', progress=interrupt)
    with pytest.raises(ConfigError, match=r"unfinished build with other settings \(class_names differ\)"):
        build(bags, tmp_path / 'ds2', class_names=['x'])


def test_unreadable_bag_is_skipped_and_reported(bags, tmp_path):
    bad = tmp_path / 'bad'
    shutil.copytree(bags[1], bad)
    db = next(bad.glob('*.db3'))
    db.write_bytes(b'not a database' * 100)
    lines = []
    result = build([bags[1], bad], tmp_path / 'ds', log=lines.append)
    assert [b['name'] for b in result.manifest['bags']] == ['plain_sqlite']
    assert result.manifest['skipped'][0]['name'] == 'bad' and 'bad' in result.manifest['skipped'][0]['error']
    assert any(line.startswith("skipped bag") for line in lines)


def write_no_sensor_bag(path):
    store = make_typestore()
    with BagSink(path, storage='mcap', typestore=store) as sink:
        for k in range(5):
            sink.write('/chatter', int(1e9) + k * 100_000_000, make_string(store, 'hello'))
    return path


def test_no_sensor_topics_is_a_clear_one_line_error(tmp_path, capsys):
    bag = write_no_sensor_bag(tmp_path / 'chatter')
    with pytest.raises(DataError, match=r"^bag '.*chatter' has no sensor topics for camera/lidar/audio \(its topics: "
                                        r"/chatter \(std_msgs/msg/String\)\); map yours with --topic camera=/your/image_topic$"):
        build([bag], tmp_path / 'ds')
    assert not (tmp_path / 'ds.partial').exists() and not (tmp_path / 'ds').exists()
    assert cli.main(['dataset', str(bag), '--out', str(tmp_path / 'ds2'), '--no-progress']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('sentryfuse dataset: error: bag ') and 'has no sensor topics' in err[0]


def test_label_file_and_out_errors(bags, tmp_path):
    (tmp_path / 'one.csv').write_text('t,label\n0,car\n')
    with pytest.raises(ConfigError, match=r'header "t,label": that labels one bag, but 2 bags were given'):
        build(bags, tmp_path / 'ds', label_csv=tmp_path / 'one.csv')
    (tmp_path / 'bad.csv').write_text('time,class\n0,car\n')
    with pytest.raises(ConfigError, match=r'expected a CSV header "t,label" or "bag,t,label", got \'time,class\''):
        read_label_table(tmp_path / 'bad.csv')
    (tmp_path / 'many.csv').write_text('bag,t,label\ndrop_mcap,0,car\nother,0,dog\n')
    with pytest.raises(ConfigError, match=r"names bags \['other'\] that were not given"):
        build(bags, tmp_path / 'ds', label_csv=tmp_path / 'many.csv')
    (tmp_path / 'ds').mkdir()
    with pytest.raises(ConfigError, match=r"--out '.*ds' exists; choose a new folder or pass --overwrite"):
        build(bags, tmp_path / 'ds')
    with pytest.raises(ConfigError, match=r"bag 'drop_mcap' has labels \[.*\] that are not among --classes \['x'\]"):
        build(bags, tmp_path / 'ds3', class_names=['x'])
