"""Reading rosbag2 bags: rosbag2's own reference bags, bags written here, corrupt bags."""
import shutil

import numpy as np
import pytest

from sentryfuse_ros.core.bags.reader import (BagSource, ReadStats, TopicMap, bag_dir, iter_messages,
                                      summarize)
from sentryfuse_ros.core.bags.types import (make_audio_frame, make_battery, make_image,
                                          make_pointcloud2, make_string, make_typestore)
from sentryfuse_ros.core.bags.writer import BagSink
from sentryfuse_ros.core.config import from_dict
from sentryfuse_ros.core.errors import BagError, ConfigError

REFERENCE = 'rosbag2_reference'
# every bag under ../shared/data/rosbag2_reference (test_reference_bags_all_listed keeps this true)
REFERENCE_BAGS = [f'{group}/{storage}/{name}'
                  for group, names in (('rosbag2_py_resources', ('talker', 'wbag')),
                                       ('rosbag2_tests_resources',
                                        ('cdr_test', 'bag_with_topics_and_service_events')))
                  for storage in ('mcap', 'sqlite3') for name in names]


@pytest.fixture(scope='module')
def store():
    return make_typestore()


def _arrays(seed: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),  # image (H, W, 3)
            rng.normal(size=(9, 4)).astype(np.float32),  # points (N, 4)
            rng.uniform(-1, 1, 200).astype(np.float32))  # pcm (S,)


def _write_sensor_bag(path, storage, store, *, times=(30, 10, 20, 40, 5, 50)):
    """One message per modality plus an unmapped topic, written out of time order."""
    img, pts, pcm = _arrays(0)
    t_cam, t_lidar, t_audio, t_bat, t_label, t_other = times
    with BagSink(path, storage=storage, typestore=store) as sink:
        sink.write('/camera/image_raw', t_cam, make_image(store, img, t_cam, 'cam'))
        sink.write('/lidar/points', t_lidar, make_pointcloud2(store, pts, t_lidar))
        sink.write('/audio/frames', t_audio, make_audio_frame(store, pcm, 8000, t_audio))
        sink.write('/battery_state', t_bat, make_battery(store, 0.25, t_bat))
        sink.write('/sentryfuse/ground_truth', t_label, make_string(store, 'digit_7'))
        sink.write('/chatter', t_other, make_string(store, 'not a sensor'))
    return img, pts, pcm


# ---------------------------------------------------------------------------- reference bags
def test_reference_bags_all_listed(shared_data):
    found = {str(p.parent.relative_to(shared_data / REFERENCE))
             for p in (shared_data / REFERENCE).rglob('metadata.yaml')}
    assert found == set(REFERENCE_BAGS)


@pytest.mark.parametrize('name', REFERENCE_BAGS)
def test_reference_bag_opens_and_has_no_sensor_topics(shared_data, name):
    path = shared_data / REFERENCE / name
    summary = summarize(path)
    assert summary['storage'] == name.split('/')[1]
    assert summary['sensor_topics'] == {} and summary['mapping'] == {}
    assert summary['message_count'] > 0
    assert summary['skipped_count'] == summary['message_count']
    stats = ReadStats()
    with BagSource(path) as bag:
        assert list(iter_messages(bag, TopicMap(), stats=stats)) == []
    # every stored message was read and skipped (rosbags' own reader yields none of `talker`)
    assert sum(s['count'] for s in stats.skipped.values()) == summary['message_count']
    assert stats.out_of_order == 0 and stats.errors == {}


def test_reference_bags_cover_versions_and_storages(shared_data):
    seen = {(summarize(shared_data / REFERENCE / n)['version'], n.split('/')[1])
            for n in REFERENCE_BAGS}
    assert {v for v, _ in seen} >= {4, 7, 8}
    assert {s for _, s in seen} == {'mcap', 'sqlite3'}


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_split_bag_reads_every_file_in_time_order(shared_data, storage):
    path = shared_data / REFERENCE / 'rosbag2_py_resources' / storage / 'wbag'
    stats = ReadStats()
    with BagSource(path) as bag:
        assert len(bag.metadata['relative_file_paths']) == 5
        times = [t for t, *_ in bag.raw_messages()]
        assert len(times) == bag.message_count == 6074
        assert times == sorted(times)
        # a real rosbag2-written String topic, mapped explicitly, deserializes
        labels = list(iter_messages(bag, TopicMap().with_topics(labels='HHH'), stats=stats))
        assert len(labels) == bag.topics['HHH']['count'] == 726
    assert all(m.error is None and isinstance(m.msg.data, str) for m in labels)
    assert stats.skipped and sum(s['count'] for s in stats.skipped.values()) == 6074 - 726


def test_bag_carried_definitions_are_registered(shared_data):
    path = shared_data / REFERENCE / 'rosbag2_tests_resources' / 'mcap' / 'cdr_test'
    with BagSource(path) as bag:
        assert 'test_msgs/msg/BasicTypes' in bag.typestore.fielddefs  # from the mcap schema
        t_ns, topic, msgtype, raw = next(bag.raw_messages(['/test_topic']))
        msg = bag.deserialize(raw, msgtype)
    assert msg.int32_value == 123 and msg.bool_value is False  # values rosbag2's test wrote


@pytest.mark.parametrize('storage,reason', [('sqlite3', 'not a known type and the bag carries no'),
                                            ('mcap', "the bag's definition does not register")])
def test_types_without_usable_definition_are_reported(shared_data, storage, reason):
    path = shared_data / REFERENCE / 'rosbag2_tests_resources' / storage / \
        'bag_with_topics_and_service_events'
    msgtype = 'test_msgs/srv/BasicTypes_Event'  # a service event: no .msg definition
    with BagSource(path) as bag:
        assert reason in bag.unknown_types[msgtype]
        _, _, got_type, raw = next(bag.raw_messages(['/test_service1/_service_event']))
        assert got_type == msgtype
        with pytest.raises(BagError, match=rf'cannot deserialize {msgtype}: {reason}'):
            bag.deserialize(raw, msgtype)
        t_ns, _, _, raw = next(bag.raw_messages(['/test_topic1']))  # test_msgs/msg/Strings
        msg = bag.deserialize(raw, 'test_msgs/msg/Strings')  # the other topic still decodes
        assert msg.string_value_default1 == 'Hello world!'


# ---------------------------------------------------------------------------- bags written here
@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_written_bag_reads_back_identical_in_time_order(tmp_path, store, storage):
    img, pts, pcm = _write_sensor_bag(tmp_path / 'bag', storage, store)
    stats = ReadStats()
    with BagSource(tmp_path / 'bag') as bag:
        assert bag.version == 8 and bag.storage == storage
        got = list(iter_messages(bag, stats=stats))
    assert [m.t_ns for m in got] == [5, 10, 20, 30, 40]
    assert [m.modality for m in got] == ['labels', 'lidar', 'audio', 'camera', 'battery']
    assert stats.skipped == {'/chatter': {'type': 'std_msgs/msg/String', 'count': 1}}
    by = {m.modality: m.msg for m in got}
    assert all(m.error is None for m in got)
    cam = by['camera']
    assert (cam.header.stamp.sec, cam.header.stamp.nanosec, cam.header.frame_id) == (0, 30, 'cam')
    assert np.array_equal(np.asarray(cam.data).reshape(cam.height, cam.width, 3), img)
    lidar = by['lidar']
    assert np.array_equal(np.frombuffer(lidar.data.tobytes(), '<f4').reshape(-1, 4), pts)
    assert by['audio'].sample_rate == 8000 and by['audio'].encoding == 'S16LE'
    audio = np.frombuffer(by['audio'].data.tobytes(), '<i2') / 32768.0
    assert np.abs(audio - pcm).max() <= 0.5 / 32768 + 1e-7
    assert by['battery'].percentage == pytest.approx(0.25)
    assert by['labels'].data == 'digit_7'
    msg_arrays = pytest.importorskip('sentryfuse_ros.msg_arrays')
    assert np.array_equal(msg_arrays.image_to_array(cam), img)
    assert np.array_equal(msg_arrays.pointcloud2_to_array(lidar), pts)
    assert np.abs(msg_arrays.audio_frame_to_array(by['audio']) - pcm).max() <= 1e-4


def test_time_window_and_summary(tmp_path, store):
    _write_sensor_bag(tmp_path / 'bag', 'mcap', store)
    with BagSource(tmp_path / 'bag') as bag:
        assert (bag.start_ns, bag.end_ns) == (5, 51)
        assert [m.t_ns for m in iter_messages(bag, start=10, end=40)] == [10, 20, 30]
    summary = summarize(tmp_path / 'bag')
    assert summary['sensor_topics'] == {'camera': '/camera/image_raw', 'lidar': '/lidar/points',
                                        'audio': '/audio/frames'}
    assert summary['skipped'] == {'/chatter': {'type': 'std_msgs/msg/String', 'count': 1}}
    assert summary['duration_s'] == pytest.approx(45e-9)


def test_bad_message_is_counted_not_fatal(tmp_path, store):
    img, _, _ = _arrays(1)
    with BagSink(tmp_path / 'bag', storage='sqlite3', typestore=store) as sink:
        sink.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
        sink.write('/camera/image_raw', 1, b'\x00\x01\x00\x00\xff')  # not an Image
        sink.write('/camera/image_raw', 2, make_image(store, img, 2))
    stats = ReadStats()
    with BagSource(tmp_path / 'bag') as bag:
        got = list(iter_messages(bag, stats=stats))
    assert [m.msg is None for m in got] == [True, False]
    assert got[0].error and got[1].error is None
    assert stats.errors == {'/camera/image_raw': 1} and stats.read == {'/camera/image_raw': 2}


def test_auto_detection(tmp_path, store):
    img, pts, _ = _arrays(2)
    with BagSink(tmp_path / 'bag', typestore=store) as sink:
        sink.write('/front/image', 1, make_image(store, img, 1))
        sink.write('/velodyne_points', 2, make_pointcloud2(store, pts, 2))
        sink.write('/rear/image', 3, make_image(store, img, 3))
        sink.write('/gt', 4, make_string(store, 'x'))
    with BagSource(tmp_path / 'bag') as bag:
        mapping, notes = bag.resolve(TopicMap())
        assert mapping == {'lidar': '/velodyne_points'}  # two images: ambiguous; labels: never
        assert any('auto-detected /velodyne_points' in n for n in notes)
        assert any('several candidates' in n for n in notes)
        assert bag.resolve(TopicMap(auto=False))[0] == {}
        assert bag.resolve(TopicMap(camera='/rear/image'))[0]['camera'] == '/rear/image'


def test_missing_or_mistyped_topic(tmp_path, store):
    _write_sensor_bag(tmp_path / 'bag', 'mcap', store)
    with BagSource(tmp_path / 'bag') as bag:
        with pytest.raises(BagError, match=r"topic '/nope' \(camera\) does not exist in bag .*"
                                           r"its topics: /audio/frames \(sentryfuse_ros"):
            list(iter_messages(bag, TopicMap().with_topics(camera='/nope')))
        with pytest.raises(BagError, match=r"camera: topic '/chatter' has type std_msgs/msg/String"):
            bag.resolve(TopicMap().with_topics(camera='/chatter'))
        with pytest.raises(BagError, match=r"topic '/x' does not exist .*/lidar/points"):
            list(bag.raw_messages(['/x']))
        # an unrequired default topic of the wrong type is only noted
        mapping, notes = bag.resolve(TopicMap(camera='/chatter'))
        assert 'camera' not in mapping and any('ignored' in n for n in notes)


def test_topic_map_config(tmp_path):
    tm = from_dict(TopicMap, {'camera': '/cam', 'require': ['camera']})
    assert tm.camera == '/cam' and tm.require == ('camera',)
    assert TopicMap().with_topics(lidar='/scan', audio=None).require == ('lidar',)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['camra'\]"):
        from_dict(TopicMap, {'camra': '/cam'})
    with pytest.raises(ConfigError, match=r"require=\('radar',\): expected modalities"):
        TopicMap(require=('radar',))
    with pytest.raises(ConfigError, match=r"camera='/a b': expected a topic name"):
        TopicMap(camera='/a b')
    with pytest.raises(BagError, match=r"unknown modalities \['radar'\]"):
        TopicMap().with_topics(radar='/r')


# ---------------------------------------------------------------------------- broken bags
@pytest.mark.parametrize('storage,damage,match', [
    ('sqlite3', 'truncate', r'database disk image is malformed|file is not a database'),
    ('sqlite3', 'garbage', r'file is not a database'),
    ('mcap', 'truncate', r'magic is invalid'),
    ('mcap', 'garbage', r'magic is invalid'),
])
def test_corrupt_storage_file(tmp_path, store, storage, damage, match):
    _write_sensor_bag(tmp_path / 'bag', storage, store)
    (data_file,) = [p for p in (tmp_path / 'bag').iterdir() if p.name != 'metadata.yaml']
    data = data_file.read_bytes()
    rng = np.random.default_rng(0)
    data_file.write_bytes(data[:len(data) // 2] if damage == 'truncate'
                          else rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
    with pytest.raises(BagError, match=rf"cannot open bag '.*bag': .*({match})"):
        BagSource(tmp_path / 'bag').open()
    with pytest.raises(BagError, match=r'cannot open bag'):
        summarize(tmp_path / 'bag')


@pytest.mark.parametrize('edit,match', [
    (lambda t: 'rosbag2_bagfile_information: [unclosed', r'is not readable YAML'),
    (lambda t: 'just text', r'has no rosbag2_bagfile_information mapping'),
    (lambda t: t.replace('storage_identifier: mcap', 'storage_identifier: rosbag_v1'),
     r"uses storage plugin 'rosbag_v1': expected one of \['mcap', 'sqlite3'\]"),
    (lambda t: t.replace('version: 8', 'version: 10'), r'has version 10: expected 1..9'),
    (lambda t: t.replace('relative_file_paths', 'relative_paths'),
     r"lacks key 'relative_file_paths'"),
    (lambda t: t.replace('bag.mcap', 'gone.mcap'), r'database files are missing'),
])
def test_bad_metadata(tmp_path, store, edit, match):
    _write_sensor_bag(tmp_path / 'bag', 'mcap', store)
    meta = tmp_path / 'bag' / 'metadata.yaml'
    meta.write_text(edit(meta.read_text()))
    with pytest.raises(BagError, match=match):
        with BagSource(tmp_path / 'bag'):
            pass


def test_bag_paths(tmp_path, store):
    with pytest.raises(BagError, match=r"bag '.*nowhere' does not exist"):
        BagSource(tmp_path / 'nowhere')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BagError, match=r"bag '.*empty' has no metadata.yaml"):
        summarize(tmp_path / 'empty')
    loose = tmp_path / 'loose.mcap'
    loose.write_bytes(b'x')
    with pytest.raises(BagError, match=r"is a file without a metadata.yaml beside it"):
        BagSource(loose)
    _write_sensor_bag(tmp_path / 'bag', 'sqlite3', store)
    assert bag_dir(tmp_path / 'bag' / 'bag.db3') == tmp_path / 'bag'  # a storage file: its folder
    bag = BagSource(tmp_path / 'bag')
    with pytest.raises(BagError, match=r"is not open: use `with BagSource"):
        bag.topics
    with pytest.raises(RuntimeError):
        with bag:
            raise RuntimeError('boom')
    assert bag._reader is None  # closed on the way out
    shutil.rmtree(tmp_path / 'bag')


# ---------------------------------------------------------------------------- pre-Foxy type names
def test_dashing_era_bag_with_types_sensor_msgs_image_is_read_as_sensor_msgs_msg_image(tmp_path, store):
    # old code: refused with "has type sensor_msgs/Image, expected one of ['sensor_msgs/msg/Image', ...]"
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
    from replay_fixtures import dashing_bag
    img, pts, pcm = _write_sensor_bag(tmp_path / 'new', 'sqlite3', store)
    bag = dashing_bag(tmp_path / 'new', tmp_path / 'dashing')
    assert 'type: sensor_msgs/Image' in (bag / 'metadata.yaml').read_text()
    with BagSource(bag) as src:
        assert src.topics['/camera/image_raw']['type'] == 'sensor_msgs/msg/Image'
        assert src.unknown_types == {}
        stats = ReadStats()
        msgs = {m.modality: m for m in iter_messages(src, stats=stats)}
    assert stats.mapping['camera'] == '/camera/image_raw' and stats.errors == {}
    assert set(msgs) == {'camera', 'lidar', 'audio', 'battery', 'labels'}
    assert msgs['camera'].msgtype == 'sensor_msgs/msg/Image'
    assert np.array_equal(np.asarray(msgs['camera'].msg.data).reshape(img.shape), img)


def test_pre_foxy_name_with_a_different_definition_stays_unknown(store):
    import types as pytypes

    from rosbags.interfaces import MessageDefinitionFormat

    from sentryfuse_ros.core.bags.types import register_bag_types
    same = pytypes.SimpleNamespace(msgtype='std_msgs/String', msgdef=pytypes.SimpleNamespace(
        format=MessageDefinitionFormat.MSG, data='string data\n'))
    other = pytypes.SimpleNamespace(msgtype='std_msgs/Header', msgdef=pytypes.SimpleNamespace(
        format=MessageDefinitionFormat.MSG, data='uint32 seq\nbuiltin_interfaces/Time stamp\nstring frame_id\n'))
    assert register_bag_types(store, [same, other]) == {
        'std_msgs/msg/Header': 'the bag\'s definition of std_msgs/Header differs from std_msgs/msg/Header'}
