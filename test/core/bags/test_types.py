"""The bag typestore (Humble + our msg/*.msg) and the array -> rosbags message constructors."""
import pathlib
import shutil

import numpy as np
import pytest
from rosbags.interfaces import MessageDefinition, MessageDefinitionFormat

from sentryfuse_ros.core.bags import types as bagtypes
from sentryfuse_ros.core.bags.types import (CUSTOM_MSGS, find_msg_dir, make_audio_frame,
                                          make_battery, make_image, make_pointcloud2,
                                          make_typestore, register_bag_types)
from sentryfuse_ros.core.errors import BagError

REPO_MSG = pathlib.Path(__file__).resolve().parents[3] / 'msg'


@pytest.fixture(scope='module')
def store():
    return make_typestore()


def test_custom_types_come_from_the_msg_files(store):
    for name in CUSTOM_MSGS:
        text = (REPO_MSG / f'{name}.msg').read_text()
        fields = [line.split('#')[0].split()[1] for line in text.splitlines()
                  if line.split('#')[0].strip() and '=' not in line.split('#')[0]]
        _, defs = store.fielddefs[f'sentryfuse_ros/msg/{name}']
        assert [f[0] for f in defs] == fields
    consts = dict((c[0], c[2]) for c in store.fielddefs['sentryfuse_ros/msg/ModalityHealth'][0])
    assert consts['NOT_RECEIVED'] == 4


def test_find_msg_dir_in_an_install_prefix(tmp_path):
    module = tmp_path / 'prefix/lib/python3.10/site-packages/sentryfuse_ros/core/bagtypes.py'
    module.parent.mkdir(parents=True)
    module.write_text('')
    share = tmp_path / 'prefix/share/sentryfuse_ros/msg'
    shutil.copytree(REPO_MSG, share)
    assert find_msg_dir(module) == share
    assert find_msg_dir() is not None  # this checkout


def test_typestore_errors(tmp_path):
    with pytest.raises(BagError, match=r"cannot read message definition '.*AudioFrame.msg'"):
        make_typestore(tmp_path)
    for name in CUSTOM_MSGS:
        shutil.copy(REPO_MSG / f'{name}.msg', tmp_path)
    (tmp_path / 'Prediction.msg').write_text('string label\nfloat32[ scores\n')
    with pytest.raises(BagError, match=r"message definition '.*Prediction.msg' does not parse"):
        make_typestore(tmp_path)


def test_register_bag_types(store):
    class Conn:
        def __init__(self, msgtype, fmt, text):
            self.msgtype, self.msgdef = msgtype, MessageDefinition(fmt, text)

    fresh = make_typestore()
    unknown = register_bag_types(fresh, [
        Conn('my_pkg/msg/Ping', MessageDefinitionFormat.MSG, 'uint32 seq\nstring note\n'),
        Conn('my_pkg/msg/Bare', MessageDefinitionFormat.NONE, ''),
        Conn('my_pkg/msg/Bad', MessageDefinitionFormat.MSG, 'uint32[ broken\n'),
        Conn('std_msgs/msg/String', MessageDefinitionFormat.NONE, ''),  # known: untouched
    ])
    assert 'my_pkg/msg/Ping' in fresh.fielddefs and 'my_pkg/msg/Ping' not in store.fielddefs
    assert set(unknown) == {'my_pkg/msg/Bare', 'my_pkg/msg/Bad'}
    assert 'carries no definition' in unknown['my_pkg/msg/Bare']
    assert 'does not register' in unknown['my_pkg/msg/Bad']


@pytest.mark.parametrize('call,match', [
    (lambda s: make_image(s, np.zeros((2, 2, 3), np.float32), 0), r'float32 \(2, 2, 3\): expected uint8'),
    (lambda s: make_image(s, np.zeros((2, 2), np.uint8), 0), r'expected uint8 \(H, W, 3\) for rgb8'),
    (lambda s: make_image(s, np.zeros((2, 2, 3), np.uint8), 0, encoding='yuv'), r"encoding='yuv'"),
    (lambda s: make_image(s, np.zeros((2, 2, 3), np.uint8), -1), r'stamp_ns=-1: expected >= 0'),
    (lambda s: make_pointcloud2(s, np.zeros((3, 5), np.float32), 0), r'expected float \(N, 4\)'),
    (lambda s: make_audio_frame(s, np.zeros(4, np.int16), 8000, 0), r'expected float \(samples,\)'),
    (lambda s: make_audio_frame(s, np.zeros(4, np.float32), 0, 0), r'rate=0: expected > 0'),
    (lambda s: make_audio_frame(s, np.zeros(4, np.float32), 8000, 0, encoding='U8'),
     r"encoding='U8': expected S16LE or F32LE"),
    (lambda s: make_battery(s, 1.5, 0), r'percentage=1.5: expected a value in \[0, 1\] or NaN'),
])
def test_constructor_errors(store, call, match):
    with pytest.raises(BagError, match=match):
        call(store)


def test_constructors_serialize(store):
    pts = np.arange(12, dtype=np.float32).reshape(4, 3)  # (N, 3): intensity filled with 0
    cloud = make_pointcloud2(store, pts, 1_500_000_000)
    assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec) == (1, 500_000_000)
    back = store.deserialize_cdr(store.serialize_cdr(cloud, cloud.__msgtype__), cloud.__msgtype__)
    xyzi = np.frombuffer(back.data.tobytes(), '<f4').reshape(4, 4)
    assert np.array_equal(xyzi[:, :3], pts) and not xyzi[:, 3].any()
    audio = make_audio_frame(store, np.array([0.5, -1.0, 2.0], np.float32), 16000, 0, 'F32LE')
    assert np.array_equal(np.frombuffer(audio.data.tobytes(), '<f4'), [0.5, -1.0, 1.0])
    no_custom = bagtypes.get_typestore(bagtypes.Stores.ROS2_HUMBLE)
    with pytest.raises(BagError, match=r'the typestore lacks sentryfuse_ros/msg/AudioFrame'):
        make_audio_frame(no_custom, np.zeros(2, np.float32), 8000, 0)
