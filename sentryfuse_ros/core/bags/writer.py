"""Writing standard rosbag2 bags (mcap or sqlite3) with ``rosbags``; no ROS install needed.

:class:`BagSink` writes bags that ``ros2 bag play`` reads on Humble and later: standard type names
(``sensor_msgs/msg/Image``), CDR serialization, the type definitions stored in the bag, and
metadata version :data:`WRITE_VERSION`. Until a clean close the bag lives in ``<path>.partial/``;
when the ``with`` block raises, that folder is deleted, so nothing incomplete ever sits at
``<path>`` looking like a bag.
"""
from __future__ import annotations

import contextlib
import pathlib
import shutil
from typing import Any, Dict, Optional, Union

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, \
    QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from sentryfuse_ros.core.bags.reader import STORAGES
from sentryfuse_ros.core.bags.types import make_typestore
from sentryfuse_ros.core.errors import BagError

# rosbags writes metadata version 8 or 9. rosbag2 readers never reject a version number; they
# decode each field by version and ignore fields they do not know. Version 9 stores
# offered_qos_profiles as a YAML list, where every older reader (Humble's yaml.hpp:
# `node["offered_qos_profiles"].as<std::string>()`) expects a string, so Humble cannot open v9
# bags. Version 8 keeps the string form and adds only fields Humble ignores (type_description_hash,
# ros_distro); rosbag2 on Jazzy writes v8 itself.
WRITE_VERSION = 8
PathLike = Union[str, pathlib.Path]


class BagSink:
    """Writes a standard rosbag2 bag; ``<path>`` appears only when the ``with`` block ends cleanly.

    Args:
        path: bag directory to create (must not exist).
        storage: 'mcap' or 'sqlite3'.
        typestore: ``rosbags`` typestore; :func:`make_typestore` when None.
        qos_depth: history depth of the reliable, volatile QoS recorded as each topic's offer.
    """

    def __init__(self, path: PathLike, *, storage: str = 'mcap', typestore: Any = None,
                 qos_depth: int = 10):
        if storage not in STORAGES:
            raise BagError(f'storage={storage!r}: expected one of {list(STORAGES)}')
        self.path = pathlib.Path(path)
        if self.path.exists():
            raise BagError(f'bag {str(self.path)!r} exists already; not overwriting')
        self.staging = self.path.with_name(self.path.name + '.partial')
        if self.staging.exists():
            raise BagError(f'{str(self.staging)!r} exists (left by an interrupted write?); '
                           f'remove it first')
        self.storage = storage
        self.typestore = typestore if typestore is not None else make_typestore()
        self._qos = Qos(QosHistory.KEEP_LAST, int(qos_depth), QosReliability.RELIABLE,
                        QosDurability.VOLATILE, QosTime(0, 0), QosTime(0, 0),
                        QosLiveliness.AUTOMATIC, QosTime(0, 0), False)
        self._writer: Optional[Writer] = None
        self._conns: Dict[str, Any] = {}

    def __enter__(self) -> 'BagSink':
        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        self.staging.mkdir(parents=True)
        # <path>.partial/<name>/ so that the storage files get their final names (<name>.mcap)
        self._writer = Writer(self.staging / self.path.name, version=WRITE_VERSION,
                              storage_plugin=plugin)
        try:
            self._writer.open()
        except BaseException:
            self._writer = None
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        return self

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` with a standard type name, e.g. 'sensor_msgs/msg/Image'."""
        if topic in self._conns:
            if self._conns[topic].msgtype != msgtype:
                raise BagError(f'topic {topic!r} was added as {self._conns[topic].msgtype}, '
                               f'not {msgtype}')
            return
        if msgtype not in self.typestore.fielddefs:
            raise BagError(f'message type {msgtype!r} of topic {topic!r} is unknown to the '
                           f'typestore: expected a standard name like sensor_msgs/msg/Image')
        self._conns[topic] = self._open_writer().add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=[self._qos])

    def write(self, topic: str, t_ns: int, msg: Any) -> None:
        """Write one message at receive time ``t_ns``.

        Args:
            topic: a topic from :meth:`add_topic`, or any topic when ``msg`` is a rosbags object
                (added with its own type).
            t_ns: receive time [ns since epoch], >= 0.
            msg: a ``rosbags`` message object, or CDR bytes (e.g. rclpy's serialize_message).
        """
        writer = self._open_writer()
        raw = isinstance(msg, (bytes, bytearray, memoryview))
        if topic not in self._conns:
            if raw:
                raise BagError(f'topic {topic!r} was not added; raw CDR bytes need add_topic() '
                               f'first (added: {sorted(self._conns)})')
            self.add_topic(topic, getattr(msg, '__msgtype__', type(msg).__name__))
        if int(t_ns) < 0:
            raise BagError(f't_ns={t_ns}: expected >= 0')
        conn = self._conns[topic]
        if raw:
            data = bytes(msg)
        else:
            if getattr(msg, '__msgtype__', None) != conn.msgtype:
                raise BagError(f'message of type {getattr(msg, "__msgtype__", type(msg).__name__)} '
                               f'written to topic {topic!r} of type {conn.msgtype}')
            data = self.typestore.serialize_cdr(msg, conn.msgtype)
        writer.write(conn, int(t_ns), data)

    def _open_writer(self) -> Writer:
        if self._writer is None:
            raise BagError(f'bag {str(self.path)!r} is not open for writing: use `with BagSink(...)`')
        return self._writer

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        done = False
        try:
            if exc_type is None:
                writer.close()  # writes metadata.yaml last
                (self.staging / self.path.name).rename(self.path)
                done = True
        finally:
            if not done:
                with contextlib.suppress(Exception):
                    writer.abort()
            shutil.rmtree(self.staging, ignore_errors=True)
