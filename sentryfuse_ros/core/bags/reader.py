"""Reading rosbag2 bags (sqlite3 and mcap) with ``rosbags``; no ROS install needed.

Reading: :class:`BagSource` opens a bag directory (metadata versions 1-9, split bags, both
storage plugins), :class:`TopicMap` says which topic feeds which modality, and
:func:`iter_messages` yields :class:`BagMessage` in receive-time order. Messages on topics that map
to no modality are skipped and counted in :class:`ReadStats`. A message that fails to deserialize
does not stop the read: it is yielded with ``msg=None`` and ``error`` set, and counted.

Time order: each storage file yields its messages by receive time and the files of a split bag are
merged by receive time (ties keep file order). ``ReadStats.out_of_order`` counts any step back in
time that still got through (a check; it stays 0).

A corrupt storage file (unreadable database, garbage mcap) raises :class:`BagError`, at open or at
the first message it spoils. Writing bags: :mod:`sentryfuse_ros.core.bags.writer` (``BagSink``).
"""
from __future__ import annotations

import dataclasses
import heapq
import pathlib
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import yaml
from rosbags.rosbag2 import Reader

from sentryfuse_ros.core.bags.types import MODALITY_TYPES, canonical_msgtype, make_typestore, register_bag_types
from sentryfuse_ros.core.config import check
from sentryfuse_ros.core.errors import BagError
from sentryfuse_ros.core.data.topics import BATTERY_TOPIC, LABEL_TOPIC, SENSOR_TOPICS

MODALITIES = ('camera', 'lidar', 'audio', 'battery', 'labels')
SENSOR_MODALITIES = ('camera', 'lidar', 'audio')
STORAGES = ('mcap', 'sqlite3')
PathLike = Union[str, pathlib.Path]


@dataclasses.dataclass(frozen=True)
class TopicMap:
    """Which bag topic feeds which modality. An empty string leaves the modality unmapped."""
    camera: str = SENSOR_TOPICS['camera'][0]  # sensor_msgs/Image or CompressedImage
    lidar: str = SENSOR_TOPICS['lidar'][0]  # sensor_msgs/PointCloud2 or LaserScan
    audio: str = SENSOR_TOPICS['audio'][0]  # sentryfuse_ros/AudioFrame
    battery: str = BATTERY_TOPIC  # sensor_msgs/BatteryState
    labels: str = LABEL_TOPIC  # std_msgs/String, the class name per sample
    auto: bool = True  # a missing topic falls back to the one topic of a compatible type, if unique
    require: Tuple[str, ...] = ()  # modalities whose topic must exist (BagError otherwise)

    def __post_init__(self):
        for name in MODALITIES:
            value = getattr(self, name)
            check(isinstance(value, str) and not any(c.isspace() for c in value), name, value,
                  'a topic name (empty to leave the modality unmapped)')
        check(isinstance(self.auto, bool), 'auto', self.auto, 'true or false')
        check(all(m in MODALITIES for m in self.require), 'require', self.require,
              f'modalities among {list(MODALITIES)}')
        check(all(getattr(self, m) for m in self.require), 'require', self.require,
              'only modalities that have a topic')

    def with_topics(self, **topics: Optional[str]) -> 'TopicMap':
        """A copy with the given modalities set (e.g. from CLI flags) and required to exist.

        Args:
            **topics: modality=topic; None leaves the modality as it is.
        """
        given = {k: v for k, v in topics.items() if v is not None}
        unknown = sorted(set(given) - set(MODALITIES))
        if unknown:
            raise BagError(f'unknown modalities {unknown}: expected some of {list(MODALITIES)}')
        require = tuple(dict.fromkeys(self.require + tuple(k for k, v in given.items() if v)))
        return dataclasses.replace(self, **given, require=require)


@dataclasses.dataclass(frozen=True)
class BagMessage:
    """One message of a bag. ``msg`` is a ``rosbags`` object (fields like a ROS message)."""
    t_ns: int  # receive (record) time [ns since epoch]
    topic: str
    modality: str  # one of MODALITIES
    msgtype: str  # e.g. sensor_msgs/msg/Image
    msg: Any  # None when deserialization failed
    raw: bytes  # the CDR bytes as stored (for replay onto ROS topics)
    error: Optional[str] = None  # why msg is None


@dataclasses.dataclass
class ReadStats:
    """What one read saw. Filled by :func:`iter_messages` as it goes."""
    mapping: Dict[str, str] = dataclasses.field(default_factory=dict)  # modality -> topic
    notes: List[str] = dataclasses.field(default_factory=list)  # how each modality was resolved
    read: Dict[str, int] = dataclasses.field(default_factory=dict)  # topic -> messages yielded
    skipped: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)  # topic -> {type, count}
    errors: Dict[str, int] = dataclasses.field(default_factory=dict)  # topic -> failed to deserialize
    out_of_order: int = 0  # messages whose time is before the previous one's

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _zstd_decompress() -> Any:
    """zstd.decompress, from where rosbags itself takes it (stdlib on 3.14, backports before)."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    return zstd.decompress


def bag_dir(path: PathLike) -> pathlib.Path:
    """The bag directory for ``path`` (a directory, or a storage file beside its metadata.yaml)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise BagError(f'bag {str(path)!r} does not exist')
    if path.is_file():
        if (path.parent / 'metadata.yaml').is_file():
            return path.parent
        raise BagError(f'bag {str(path)!r} is a file without a metadata.yaml beside it: expected a '
                       f'rosbag2 directory (run `ros2 bag reindex` on its folder to make one)')
    if not (path / 'metadata.yaml').is_file():
        raise BagError(f'bag {str(path)!r} has no metadata.yaml: expected a rosbag2 directory')
    return path


def read_metadata(path: PathLike) -> dict:
    """The validated ``rosbag2_bagfile_information`` mapping of a bag directory's metadata.yaml."""
    meta_path = bag_dir(path) / 'metadata.yaml'
    try:
        data = yaml.safe_load(meta_path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BagError(f'bag metadata {str(meta_path)!r} is not readable YAML: {exc}') from exc
    info = data.get('rosbag2_bagfile_information') if isinstance(data, dict) else None
    if not isinstance(info, dict):
        raise BagError(f'bag metadata {str(meta_path)!r} has no rosbag2_bagfile_information mapping')
    for key in ('version', 'storage_identifier', 'relative_file_paths', 'topics_with_message_count'):
        if key not in info:
            raise BagError(f'bag metadata {str(meta_path)!r} lacks key {key!r}')
    if info['storage_identifier'] not in STORAGES:
        raise BagError(f'bag {str(meta_path.parent)!r} uses storage plugin '
                       f'{info["storage_identifier"]!r}: expected one of {list(STORAGES)}')
    if not isinstance(info['version'], int) or not 1 <= info['version'] <= 9:
        raise BagError(f'bag metadata {str(meta_path)!r} has version {info["version"]!r}: '
                       f'expected 1..9')
    return info


class BagSource:
    """An open rosbag2 bag. Use as a context manager; nothing stays open after an error.

    Args:
        path: bag directory (or one of its storage files).
        typestore: ``rosbags`` typestore; :func:`make_typestore` (Humble + ours) when None. Types
            the bag defines itself are added to it.
    """

    def __init__(self, path: PathLike, *, typestore: Any = None):
        self.path = bag_dir(path)
        self.metadata = read_metadata(self.path)
        self.typestore = typestore if typestore is not None else make_typestore(required=False)
        self.unknown_types: Dict[str, str] = {}
        self._reader: Optional[Reader] = None

    @property
    def storage(self) -> str:
        return self.metadata['storage_identifier']

    @property
    def version(self) -> int:
        return self.metadata['version']

    def open(self) -> 'BagSource':
        if self._reader is not None:
            return self
        try:
            reader = Reader(self.path)
            reader.open()  # closes what it opened when it fails
        except Exception as exc:  # ReaderError, sqlite3/mcap errors: no common base
            raise BagError(f'cannot open bag {str(self.path)!r}: {type(exc).__name__}: {exc}') \
                from exc
        self._reader = reader
        self.unknown_types = register_bag_types(self.typestore, reader.connections)
        return self

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> 'BagSource':
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _open_reader(self) -> Reader:
        if self._reader is None:
            raise BagError(f'bag {str(self.path)!r} is not open: use `with BagSource(...)`')
        return self._reader

    @property
    def topics(self) -> Dict[str, Dict[str, Any]]:
        """{topic: {'type': msgtype, 'count': messages (from metadata)}}, sorted by topic."""
        return {name: {'type': canonical_msgtype(info.msgtype), 'count': info.msgcount}
                for name, info in sorted(self._open_reader().topics.items())}

    @property
    def start_ns(self) -> int:
        """Receive time of the first message [ns]; 0 for an empty bag."""
        return self._open_reader().start_time if self.message_count else 0

    @property
    def end_ns(self) -> int:
        """Just after the last message's receive time [ns] (so [start_ns, end_ns) holds all)."""
        return self._open_reader().end_time

    @property
    def message_count(self) -> int:
        return self._open_reader().message_count

    def resolve(self, topic_map: TopicMap) -> Tuple[Dict[str, str], List[str]]:
        """({modality: topic}, notes) for this bag; raises BagError for a required topic.

        A mapped topic of the wrong type is ignored (BagError when required). A missing topic
        falls back, when ``topic_map.auto``, to the only topic of a compatible type; labels are
        never guessed (std_msgs/String is too common to mean ground truth).
        """
        topics = {name: info['type'] for name, info in self.topics.items()}
        mapping: Dict[str, str] = {}
        notes: List[str] = []
        for modality in MODALITIES:
            topic, wanted = getattr(topic_map, modality), MODALITY_TYPES[modality]
            required = modality in topic_map.require
            if not topic:
                notes.append(f'{modality}: not mapped')
            elif topic in topics and topics[topic] in wanted:
                mapping[modality] = topic
                notes.append(f'{modality}: {topic} ({topics[topic]})')
            elif topic in topics:
                msg = f'{modality}: topic {topic!r} has type {topics[topic]}, expected one of {list(wanted)}'
                if required:
                    raise BagError(f'bag {str(self.path)!r}: {msg}')
                notes.append(msg + '; ignored')
            elif required:
                raise BagError(f'topic {topic!r} ({modality}) does not exist in bag '
                               f'{str(self.path)!r}; its topics: {self._listing(topics)}')
            else:
                found = [t for t, ty in topics.items()
                         if ty in wanted and t not in mapping.values()]
                if topic_map.auto and modality != 'labels' and len(found) == 1:
                    mapping[modality] = found[0]
                    notes.append(f'{modality}: {topic} absent, auto-detected {found[0]} '
                                 f'({topics[found[0]]})')
                else:
                    why = (f'several candidates {found}' if len(found) > 1 and topic_map.auto
                           else 'no auto-detection' if found else 'no topic of a compatible type')
                    notes.append(f'{modality}: {topic} absent ({why}); not mapped')
        return mapping, notes

    @staticmethod
    def _listing(topics: Dict[str, str]) -> str:
        return ', '.join(f'{t} ({ty})' for t, ty in topics.items()) or 'none'

    def raw_messages(self, topics: Optional[List[str]] = None, start: Optional[int] = None,
                     end: Optional[int] = None) -> Iterator[Tuple[int, str, str, bytes]]:
        """(t_ns, topic, msgtype, cdr bytes) of ``topics`` (all when None) in [start, end).

        Args:
            topics: topic names; each must exist (BagError listing the bag's topics otherwise).
            start: first receive time [ns], inclusive; None = bag start.
            end: last receive time [ns], exclusive; None = bag end.
        """
        reader = self._open_reader()
        listing = {c.topic: canonical_msgtype(c.msgtype) for c in reader.connections}
        for topic in topics or ():
            if topic not in listing:
                raise BagError(f'topic {topic!r} does not exist in bag {str(self.path)!r}; its '
                               f'topics: {self._listing(listing)}')
        wanted = set(listing if topics is None else topics)
        decompress = _zstd_decompress() if reader.compression_mode == 'message' else None
        try:
            # Each file is matched by (topic, type) alone: rosbags' own DirectoryReader.messages
            # also compares QoS, which a rosbag2 bag may store differently in metadata.yaml and in
            # the storage file (the reference `talker` bags), and then yields nothing.
            streams = [storage.messages([c for c in storage.connections if c.topic in wanted],
                                        start, end)
                       for storage in reader.storage.storages
                       if any(c.topic in wanted for c in storage.connections)]
            merged = heapq.merge(*streams, key=lambda item: item[1])  # by receive time
        except Exception as exc:
            raise BagError(f'bag {str(self.path)!r} is corrupt: {type(exc).__name__}: {exc}') \
                from exc
        while True:
            try:
                conn, t_ns, raw = next(merged)
                if decompress is not None:
                    raw = decompress(raw)
            except StopIteration:
                return
            except Exception as exc:  # corrupt storage: the rest of the bag is unreadable
                raise BagError(f'bag {str(self.path)!r} is corrupt: reading messages failed with '
                               f'{type(exc).__name__}: {exc}') from exc
            yield t_ns, conn.topic, canonical_msgtype(conn.msgtype), bytes(raw)

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        """The ``rosbags`` message object of CDR bytes (raises on failure)."""
        if msgtype in self.unknown_types:
            raise BagError(f'cannot deserialize {msgtype}: {self.unknown_types[msgtype]}')
        return self.typestore.deserialize_cdr(raw, msgtype)


def iter_messages(bag: BagSource, topic_map: Optional[TopicMap] = None,
                  start: Optional[int] = None, end: Optional[int] = None,
                  stats: Optional[ReadStats] = None) -> Iterator[BagMessage]:
    """The bag's messages on mapped topics, in receive-time order, deserialized.

    Args:
        bag: an open :class:`BagSource`.
        topic_map: modality -> topic; the defaults when None.
        start: first receive time [ns], inclusive (None: bag start).
        end: last receive time [ns], exclusive (None: bag end).
        stats: filled as messages are read (mapping, notes, read/skipped/error counts).
    """
    stats = stats if stats is not None else ReadStats()
    mapping, notes = bag.resolve(topic_map or TopicMap())
    stats.mapping.update(mapping)
    stats.notes.extend(notes)
    modality_of = {topic: modality for modality, topic in mapping.items()}
    last = None
    for t_ns, topic, msgtype, raw in bag.raw_messages(None, start, end):
        if last is not None and t_ns < last:
            stats.out_of_order += 1
        last = t_ns if last is None else max(last, t_ns)
        modality = modality_of.get(topic)
        if modality is None:
            entry = stats.skipped.setdefault(topic, {'type': msgtype, 'count': 0})
            entry['count'] += 1
            continue
        stats.read[topic] = stats.read.get(topic, 0) + 1
        try:
            msg, error = bag.deserialize(raw, msgtype), None
        except Exception as exc:  # one bad message never ends the read
            msg, error = None, f'{type(exc).__name__}: {exc}'
            stats.errors[topic] = stats.errors.get(topic, 0) + 1
        yield BagMessage(t_ns=t_ns, topic=topic, modality=modality, msgtype=msgtype, msg=msg,
                         raw=raw, error=error)


def summarize(path: PathLike, topic_map: Optional[TopicMap] = None) -> dict:
    """What a bag holds and how it maps to modalities, from its metadata (no message is read).

    Args:
        path: bag directory.
        topic_map: modality -> topic; the defaults when None.
    """
    with BagSource(path) as bag:
        topics = bag.topics
        mapping, notes = bag.resolve(topic_map or TopicMap())
        mapped = set(mapping.values())
        skipped = {t: dict(info) for t, info in topics.items() if t not in mapped}
        return {
            'path': str(bag.path), 'storage': bag.storage, 'version': bag.version,
            'files': len(bag.metadata['relative_file_paths']),
            'start_ns': bag.start_ns, 'end_ns': bag.end_ns,
            'duration_s': bag.metadata.get('duration', {}).get('nanoseconds', 0) / 1e9,
            'message_count': bag.message_count, 'topics': topics,
            'mapping': mapping, 'notes': notes,
            'sensor_topics': {m: t for m, t in mapping.items() if m in SENSOR_MODALITIES},
            'skipped': skipped, 'skipped_count': sum(i['count'] for i in skipped.values()),
            'unknown_types': dict(bag.unknown_types),
        }
