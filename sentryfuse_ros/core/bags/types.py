"""Message types for rosbag2 files: the typestore, and message objects built for the bag writer.

ROS-free: types come from ``rosbags`` (ROS 2 Humble's standard set) plus this package's own
``msg/*.msg`` files, read from disk (the source tree's ``msg/`` or an installed
``share/sentryfuse_ros/msg/``), never duplicated here. Types a bag brings along (mcap schemas,
sqlite3 ``message_definitions`` of rosbag2 >= Iron) are registered per bag by
:func:`register_bag_types`.

The ``make_*`` constructors at the end build ``rosbags`` message objects from arrays, for
:class:`sentryfuse_ros.core.bags.writer.BagSink` only (simulate-bag). Reading messages back into arrays
is the job of ``sentryfuse_ros.msg_arrays``, whose readers are duck-typed and accept these
objects as they accept rclpy messages.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from sentryfuse_ros.core.errors import BagError

PACKAGE = 'sentryfuse_ros'
# Our interfaces, in dependency order (none depends on another today).
CUSTOM_MSGS = ('AudioFrame', 'ModalityHealth', 'Prediction', 'InferenceLatency')

# modality -> message types accepted for it (standard ROS 2 names)
MODALITY_TYPES: Dict[str, tuple] = {
    'camera': ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage'),
    'lidar': ('sensor_msgs/msg/PointCloud2', 'sensor_msgs/msg/LaserScan'),
    'audio': (f'{PACKAGE}/msg/AudioFrame',),
    'battery': ('sensor_msgs/msg/BatteryState',),
    'labels': ('std_msgs/msg/String',),
}


def find_msg_dir(start: Optional[pathlib.Path] = None) -> Optional[pathlib.Path]:
    """The folder holding this package's ``*.msg`` files, or None when none is found.

    Looks, in order, at ``msg/`` of the source tree this module lives in (also when reached
    through colcon's symlink install), at ``share/sentryfuse_ros/msg`` above this module's
    install location, and at ``share/sentryfuse_ros/msg`` of each ``AMENT_PREFIX_PATH`` entry
    (the ament resource index's own lookup; read-only, not a behaviour switch).

    Args:
        start: the module path to search from (tests); defaults to this file.
    """
    here = pathlib.Path(start) if start is not None else pathlib.Path(__file__)
    candidates: List[pathlib.Path] = [here.resolve().parents[2] / 'msg']
    candidates += [p / 'share' / PACKAGE / 'msg' for p in here.absolute().parents]
    candidates += [pathlib.Path(p) / 'share' / PACKAGE / 'msg'
                   for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    for cand in candidates:
        if all((cand / f'{name}.msg').is_file() for name in CUSTOM_MSGS):
            return cand
    return None


def make_typestore(msg_dir: Optional[pathlib.Path] = None, *, required: bool = True) -> Any:
    """A fresh ``rosbags`` typestore: ROS 2 Humble's types plus ``sentryfuse_ros/msg/*``.

    Args:
        msg_dir: folder of our ``*.msg`` files; found with :func:`find_msg_dir` when None.
        required: raise BagError when our definitions cannot be found (else return the store
            without them; bags that carry their own definitions still read).
    """
    store = get_typestore(Stores.ROS2_HUMBLE)
    msg_dir = pathlib.Path(msg_dir) if msg_dir is not None else find_msg_dir()
    if msg_dir is None:
        if required:
            raise BagError(f'cannot find the {PACKAGE} msg/*.msg files (looked beside the source '
                           f'tree and in share/{PACKAGE}/msg of the install prefixes)')
        return store
    types: Dict[str, Any] = {}
    for name in CUSTOM_MSGS:
        path = msg_dir / f'{name}.msg'
        try:
            types.update(get_types_from_msg(path.read_text(encoding='utf-8'),
                                            f'{PACKAGE}/msg/{name}'))
        except OSError as exc:
            raise BagError(f'cannot read message definition {str(path)!r}: {exc}') from exc
        except Exception as exc:  # rosbags' parser errors have no common public base
            raise BagError(f'message definition {str(path)!r} does not parse: {exc}') from exc
    store.register(types)
    return store


def canonical_msgtype(name: str) -> str:
    """``pkg/msg/Type`` for a pre-Foxy ``pkg/Type`` (Dashing/Eloquent bags); other names unchanged."""
    parts = name.split('/')
    if len(parts) == 2 and all(parts):
        return f'{parts[0]}/msg/{parts[1]}'
    return name


def _same_definition(store: Any, msgtype: str, text: str) -> bool:
    """Whether ``text`` (a .msg definition of ``msgtype``) defines it as ``store`` already does."""
    theirs = get_types_from_msg(text, msgtype)
    return all(name not in store.fielddefs or store.fielddefs[name] == fields
               for name, fields in theirs.items())


def register_bag_types(store: Any, connections: Iterable[Any]) -> Dict[str, str]:
    """Register the types a bag defines itself and the typestore lacks.

    Args:
        store: the typestore to extend (mutated).
        connections: ``rosbags`` connections (``.msgtype``, ``.msgdef.format``, ``.msgdef.data``).

    Pre-Foxy type names (``sensor_msgs/Image``, Dashing and Eloquent bags) are read as their
    ``pkg/msg/Type`` name when the bag carries no definition or the same one.

    Returns:
        {msgtype: reason} for each type that stays unknown (no definition, or one that fails to
        parse or conflicts with a known type); messages of those types cannot be deserialized.
    """
    unknown: Dict[str, str] = {}
    for conn in connections:
        msgtype = canonical_msgtype(conn.msgtype)  # keyed by the name the reader yields
        if msgtype in unknown:
            continue
        fmt, text = conn.msgdef.format, conn.msgdef.data
        if msgtype in store.fielddefs:
            # a pre-Foxy name (pkg/Type) of a known type is that type only when its definition matches
            if msgtype != conn.msgtype and fmt == MessageDefinitionFormat.MSG and text:
                try:
                    same = _same_definition(store, msgtype, text)
                except Exception:  # noqa: BLE001 - an unparsable definition is not the same one
                    same = False
                if not same:
                    unknown[msgtype] = (f'the bag\'s definition of {conn.msgtype} differs from {msgtype}')
            continue
        try:
            if fmt == MessageDefinitionFormat.MSG and text:
                store.register(get_types_from_msg(text, msgtype))
            elif fmt == MessageDefinitionFormat.IDL and text:
                store.register(get_types_from_idl(text))
            else:
                unknown[msgtype] = 'not a known type and the bag carries no definition of it'
                continue
        except Exception as exc:  # parse errors and TypesysError conflicts alike
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            unknown[msgtype] = f'the bag\'s definition does not register: {first[:120]}'
            continue
        if msgtype not in store.fielddefs:
            unknown[msgtype] = 'the bag\'s definition does not define it'
    return unknown


# ---------------------------------------------------------------------------- constructors
# Minimal builders of rosbags message objects, for BagSink (simulate-bag). They mirror the
# writers of sentryfuse_ros/msg_arrays/ (same layouts and scaling) without importing rclpy.

def _stamp(store: Any, stamp_ns: int) -> Any:
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise BagError(f'stamp_ns={stamp_ns}: expected >= 0')
    return store.types['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                      nanosec=stamp_ns % 10**9)


def _header(store: Any, stamp_ns: int, frame_id: str) -> Any:
    return store.types['std_msgs/msg/Header'](stamp=_stamp(store, stamp_ns), frame_id=frame_id)


def make_image(store: Any, arr: np.ndarray, stamp_ns: int, frame_id: str = 'camera',
               encoding: str = 'rgb8') -> Any:
    """A ``sensor_msgs/msg/Image`` of an (H, W, 3) uint8 array (or (H, W) for mono8).

    Args:
        store: typestore from :func:`make_typestore`.
        arr: (H, W, 3) uint8 for rgb8/bgr8, (H, W) uint8 for mono8.
        stamp_ns: header stamp [ns].
        frame_id: header.frame_id.
        encoding: 'rgb8', 'bgr8' or 'mono8'.
    """
    channels = {'rgb8': 3, 'bgr8': 3, 'mono8': 1}.get(encoding)
    if channels is None:
        raise BagError(f'encoding={encoding!r}: expected rgb8, bgr8 or mono8')
    arr = np.asarray(arr)
    shape_ok = arr.ndim == 3 and arr.shape[2] == 3 if channels == 3 else arr.ndim == 2
    if arr.dtype != np.uint8 or not shape_ok:
        raise BagError(f'image array is {arr.dtype} {arr.shape}: expected uint8 '
                       f'{"(H, W, 3)" if channels == 3 else "(H, W)"} for {encoding}')
    height, width = arr.shape[:2]
    return store.types['sensor_msgs/msg/Image'](
        header=_header(store, stamp_ns, frame_id), height=height, width=width,
        encoding=encoding, is_bigendian=0, step=width * channels,
        data=np.ascontiguousarray(arr).reshape(-1))  # (H, W, 3) -> (H*W*3,)


def make_pointcloud2(store: Any, points: np.ndarray, stamp_ns: int,
                     frame_id: str = 'lidar') -> Any:
    """An unorganized ``sensor_msgs/msg/PointCloud2`` with float32 fields x, y, z, intensity.

    Args:
        store: typestore from :func:`make_typestore`.
        points: (N, 4) float32 x, y, z, intensity (or (N, 3): intensity 0).
        stamp_ns: header stamp [ns].
        frame_id: header.frame_id.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] not in (3, 4) or points.dtype.kind != 'f':
        raise BagError(f'points array is {points.dtype} {points.shape}: expected float (N, 4)')
    if points.shape[1] == 3:
        points = np.concatenate([points, np.zeros((len(points), 1), points.dtype)], axis=1)
    data = np.ascontiguousarray(points, dtype='<f4').view(np.uint8).reshape(-1)  # (N, 4) -> (N*16,)
    field = store.types['sensor_msgs/msg/PointField']
    fields = [field(name=name, offset=4 * i, datatype=7, count=1)  # 7 = FLOAT32
              for i, name in enumerate(('x', 'y', 'z', 'intensity'))]
    n = len(points)
    return store.types['sensor_msgs/msg/PointCloud2'](
        header=_header(store, stamp_ns, frame_id), height=1, width=n, fields=fields,
        is_bigendian=False, point_step=16, row_step=16 * n, data=data, is_dense=True)


def make_audio_frame(store: Any, pcm: np.ndarray, rate: int, stamp_ns: int,
                     encoding: str = 'S16LE', frame_id: str = 'microphone') -> Any:
    """A mono ``sentryfuse_ros/msg/AudioFrame`` of float PCM in [-1, 1] (clipped).

    Args:
        store: typestore from :func:`make_typestore` (with our types registered).
        pcm: (samples,) float PCM; S16LE stores round(x * 32768) clipped to int16.
        rate: sample rate [Hz] > 0.
        stamp_ns: stamp of the first sample [ns].
        encoding: 'S16LE' or 'F32LE'.
        frame_id: header.frame_id.
    """
    pcm = np.asarray(pcm)
    if pcm.ndim != 1 or pcm.dtype.kind != 'f':
        raise BagError(f'pcm array is {pcm.dtype} {pcm.shape}: expected float (samples,)')
    if int(rate) <= 0:
        raise BagError(f'rate={rate}: expected > 0')
    pcm = np.clip(pcm, -1.0, 1.0)
    if encoding == 'S16LE':
        raw = np.clip(np.rint(pcm * 32768.0), -32768, 32767).astype('<i2')
    elif encoding == 'F32LE':
        raw = pcm.astype('<f4')
    else:
        raise BagError(f'encoding={encoding!r}: expected S16LE or F32LE')
    msgtype = f'{PACKAGE}/msg/AudioFrame'
    if msgtype not in store.types:
        raise BagError(f'the typestore lacks {msgtype}: build it with make_typestore()')
    return store.types[msgtype](header=_header(store, stamp_ns, frame_id),
                                sample_rate=int(rate), channels=1, encoding=encoding,
                                data=raw.view(np.uint8).reshape(-1))  # (S,) -> (S*bytes,)


def make_battery(store: Any, percentage: float, stamp_ns: int) -> Any:
    """A ``sensor_msgs/msg/BatteryState`` with ``percentage`` in [0, 1] (other values unknown).

    Args:
        store: typestore from :func:`make_typestore`.
        percentage: state of charge in [0, 1] (NaN when unknown, as in the message's spec).
        stamp_ns: header stamp [ns].
    """
    if not (np.isnan(percentage) or 0.0 <= percentage <= 1.0):
        raise BagError(f'percentage={percentage}: expected a value in [0, 1] or NaN')
    nan = float('nan')
    return store.types['sensor_msgs/msg/BatteryState'](
        header=_header(store, stamp_ns, 'battery'), voltage=nan, temperature=nan, current=nan,
        charge=nan, capacity=nan, design_capacity=nan, percentage=float(percentage),
        power_supply_status=0, power_supply_health=0, power_supply_technology=0, present=True,
        cell_voltage=np.zeros(0, np.float32), cell_temperature=np.zeros(0, np.float32),
        location='', serial_number='')


def make_string(store: Any, text: str) -> Any:
    """A ``std_msgs/msg/String``.

    Args:
        store: typestore from :func:`make_typestore`.
        text: the string.
    """
    return store.types['std_msgs/msg/String'](data=str(text))
