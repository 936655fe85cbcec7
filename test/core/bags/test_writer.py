"""BagSink: standard rosbag2 bags, readable by Humble, never left looking complete on error."""
import numpy as np
import pytest
import yaml

from sentryfuse_ros.core.bags.reader import BagSource
from sentryfuse_ros.core.bags.types import make_image, make_string, make_typestore
from sentryfuse_ros.core.bags.writer import WRITE_VERSION, BagSink
from sentryfuse_ros.core.errors import BagError


@pytest.fixture(scope='module')
def store():
    return make_typestore()


@pytest.mark.parametrize('storage,suffix', [('mcap', '.mcap'), ('sqlite3', '.db3')])
def test_metadata_is_what_humble_reads(tmp_path, store, storage, suffix):
    with BagSink(tmp_path / 'run1', storage=storage, typestore=store) as sink:
        sink.write('/sentryfuse/ground_truth', 7, make_string(store, 'cat'))
    info = yaml.safe_load((tmp_path / 'run1' / 'metadata.yaml').read_text())
    info = info['rosbag2_bagfile_information']
    assert info['version'] == WRITE_VERSION == 8
    assert info['storage_identifier'] == storage
    assert info['relative_file_paths'] == [f'run1{suffix}']
    (topic,) = info['topics_with_message_count']
    meta = topic['topic_metadata']
    assert meta['type'] == 'std_msgs/msg/String' and meta['serialization_format'] == 'cdr'
    # Humble decodes offered_qos_profiles with .as<std::string>(): it must be a string
    qos = yaml.safe_load(meta['offered_qos_profiles'])
    assert isinstance(meta['offered_qos_profiles'], str)
    assert qos[0]['reliability'] == 1 and qos[0]['history'] == 1 and qos[0]['depth'] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run1']  # no staging folder left


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_exception_leaves_no_bag(tmp_path, store, storage):
    path = tmp_path / 'run'
    with pytest.raises(RuntimeError, match='simulated crash'):
        with BagSink(path, storage=storage, typestore=store) as sink:
            sink.write('/sentryfuse/ground_truth', 1, make_string(store, 'a'))
            assert not path.exists() and (tmp_path / 'run.partial').is_dir()
            raise RuntimeError('simulated crash')
    assert list(tmp_path.iterdir()) == []


def test_raw_cdr_bytes_round_trip(tmp_path, store):
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    raw = store.serialize_cdr(make_image(store, img, 5), 'sensor_msgs/msg/Image')
    with BagSink(tmp_path / 'bag', storage='sqlite3', typestore=store) as sink:
        sink.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
        sink.write('/camera/image_raw', 5, raw)
    with BagSource(tmp_path / 'bag') as bag:
        ((t_ns, topic, msgtype, got),) = list(bag.raw_messages())
    assert (t_ns, topic, msgtype, got) == (5, '/camera/image_raw', 'sensor_msgs/msg/Image', raw)


def test_rclpy_serialized_bytes(tmp_path, store):
    serialization = pytest.importorskip('rclpy.serialization')
    std_msgs = pytest.importorskip('std_msgs.msg')
    raw = serialization.serialize_message(std_msgs.String(data='from rclpy'))
    with BagSink(tmp_path / 'bag', typestore=store) as sink:
        sink.add_topic('/sentryfuse/ground_truth', 'std_msgs/msg/String')
        sink.write('/sentryfuse/ground_truth', 3, raw)
    with BagSource(tmp_path / 'bag') as bag:
        ((_, _, msgtype, got),) = list(bag.raw_messages())
        assert bag.deserialize(got, msgtype).data == 'from rclpy'


def test_sink_errors(tmp_path, store):
    with pytest.raises(BagError, match=r"storage='rosbag1': expected one of \['mcap', 'sqlite3'\]"):
        BagSink(tmp_path / 'a', storage='rosbag1', typestore=store)
    (tmp_path / 'exists').mkdir()
    with pytest.raises(BagError, match=r"bag '.*exists' exists already; not overwriting"):
        BagSink(tmp_path / 'exists', typestore=store)
    (tmp_path / 'stale.partial').mkdir()
    with pytest.raises(BagError, match=r"stale.partial' exists \(left by an interrupted write"):
        BagSink(tmp_path / 'stale', typestore=store)
    with pytest.raises(BagError, match=r'is not open for writing'):
        BagSink(tmp_path / 'closed', typestore=store).add_topic('/t', 'std_msgs/msg/String')
    with BagSink(tmp_path / 'ok', typestore=store) as sink:
        with pytest.raises(BagError, match=r"message type 'sensor_msgs/Image' of topic '/c' is "
                                           r"unknown"):
            sink.add_topic('/c', 'sensor_msgs/Image')
        with pytest.raises(BagError, match=r"topic '/raw' was not added; raw CDR bytes need"):
            sink.write('/raw', 1, b'\x00\x01\x00\x00')
        sink.add_topic('/s', 'std_msgs/msg/String')
        with pytest.raises(BagError, match=r"topic '/s' was added as std_msgs/msg/String, not"):
            sink.add_topic('/s', 'sensor_msgs/msg/Image')
        with pytest.raises(BagError, match=r'message of type sensor_msgs/msg/Image written to '
                                           r"topic '/s' of type std_msgs/msg/String"):
            sink.write('/s', 1, make_image(store, np.zeros((1, 1, 3), np.uint8), 1))
        with pytest.raises(BagError, match=r't_ns=-1: expected >= 0'):
            sink.write('/s', -1, make_string(store, 'x'))
        sink.write('/s', 2, make_string(store, 'kept'))
    with BagSource(tmp_path / 'ok') as bag:
        assert bag.topics == {'/s': {'type': 'std_msgs/msg/String', 'count': 1}}
