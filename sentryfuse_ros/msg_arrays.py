"""The one module that converts between ROS messages and numpy arrays.

Readers are duck-typed: they take any object carrying the message's field names, so the same
function reads an rclpy message (``data`` is ``array.array``/``bytes``/list) and a message that
the ``rosbags`` library deserialized (``data`` is a numpy uint8 array). Buffers are viewed with
numpy (``np.frombuffer`` / ``np.ndarray(buffer=..., strides=...)``), never walked element by
element in Python. Every returned array owns its memory (the message buffer is not pinned).

Writers build rclpy messages (``sensor_msgs.msg``, ``sentryfuse_ros.msg``, imported lazily) and
fill ``uint8[]`` fields through ``array.array('B').frombytes``: a memcpy, and the setter's
fast path on every ROS 2 distribution (Humble validates anything else element by element).

Every malformed input raises :class:`ConversionError` naming the field, its value and what was
expected.
"""
from __future__ import annotations

import array
import math
from typing import Any, Optional, Tuple, Union

import cv2
import numpy as np

from sentryfuse_ros.core.errors import ConversionError
from sentryfuse_ros.core.data.resample import resample  # noqa: F401  (part of this module's API)

Stamp = Union[None, float, int, Tuple[int, int], Any]

# encoding -> (numpy dtype without byte order, channels, channel order or None for 1 channel)
# 8UC3 is read as BGR, like OpenCV and cv_bridge's passthrough (the generic OpenCV type is BGR).
IMAGE_ENCODINGS = {
    'rgb8': ('u1', 3, 'rgb'), 'bgr8': ('u1', 3, 'bgr'), '8UC3': ('u1', 3, 'bgr'),
    'rgba8': ('u1', 4, 'rgb'), 'bgra8': ('u1', 4, 'bgr'),
    'mono8': ('u1', 1, None), '8UC1': ('u1', 1, None),
    'mono16': ('u2', 1, None), '16UC1': ('u2', 1, None), '32FC1': ('f4', 1, None),
}
DEPTH_ENCODINGS = ('16UC1', '32FC1')  # scaled min-max (finite values) by image_to_rgb
# PointField datatype constant -> numpy type without byte order (INT8 .. FLOAT64)
POINTFIELD_DTYPES = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 8: 'f8'}
INTENSITY_NAMES = ('intensity', 'i')  # first present is read as the 4th column
AUDIO_ENCODINGS = {'S16LE': '<i2', 'F32LE': '<f4'}


# ---------------------------------------------------------------------------- buffers, stamps
def _bytes_of(data: Any, field: str) -> np.ndarray:
    """A flat uint8 view (or, for a Python list, a copy) of a message's ``uint8[]`` field."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ConversionError(f'{field} must be a 1-D uint8 array, got {data.dtype} '
                                  f'with shape {data.shape}')
        return data
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        pass
    try:
        arr = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f'{field} is a {type(data).__name__}, expected bytes, '
                              f'array.array or a sequence of ints in [0, 255]') from exc
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if arr.ndim != 1 or arr.dtype.kind not in 'iu' or arr.min() < 0 or arr.max() > 255:
        raise ConversionError(f'{field} must hold ints in [0, 255], got a {type(data).__name__} '
                              f'of dtype {arr.dtype} and shape {arr.shape}')
    return arr.astype(np.uint8)


def _uint8_array(buf: bytes) -> array.array:
    """``array.array('B')`` holding ``buf``: a memcpy, and every distribution's fast setter path."""
    out = array.array('B')
    out.frombytes(buf)
    return out


def stamp_to_sec(stamp: Any) -> float:
    """Seconds (float) of a ``builtin_interfaces/Time``-like object with ``sec`` and ``nanosec``."""
    try:
        sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConversionError(f'stamp {stamp!r} has no integer sec/nanosec fields') from exc
    if not 0 <= nanosec < 1_000_000_000:
        raise ConversionError(f'stamp.nanosec is {nanosec}, expected 0 <= nanosec < 1e9')
    return sec + nanosec * 1e-9


def sec_to_stamp(t: float) -> Tuple[int, int]:
    """``(sec, nanosec)`` of a time in seconds, nanosec in [0, 1e9) (floor, also for t < 0)."""
    if not math.isfinite(t):
        raise ConversionError(f'time {t!r} s is not finite')
    total_ns = int(round(t * 1e9))
    return total_ns // 1_000_000_000, total_ns % 1_000_000_000


def _fill_header(msg: Any, stamp: Stamp, frame_id: str) -> None:
    """Set ``msg.header`` from a stamp given as None, seconds, ``(sec, nanosec)`` or a Time."""
    if stamp is None:
        sec, nanosec = 0, 0
    elif isinstance(stamp, (tuple, list)):
        if len(stamp) != 2:
            raise ConversionError(f'stamp {stamp!r} must be (sec, nanosec)')
        sec, nanosec = int(stamp[0]), int(stamp[1])
    elif isinstance(stamp, (int, float, np.floating, np.integer)):
        sec, nanosec = sec_to_stamp(float(stamp))
    else:
        sec, nanosec = sec_to_stamp(stamp_to_sec(stamp))
    if not 0 <= nanosec < 1_000_000_000:
        raise ConversionError(f'stamp nanosec is {nanosec}, expected 0 <= nanosec < 1e9')
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nanosec
    msg.header.frame_id = frame_id


# ---------------------------------------------------------------------------- Image
def image_to_array(msg: Any) -> np.ndarray:
    """Pixels of a ``sensor_msgs/Image``.

    Returns (H, W, 3) uint8 RGB for rgb8/bgr8/8UC3 (read as BGR)/rgba8/bgra8 (alpha dropped), and
    (H, W) for mono8/8UC1 (uint8), mono16/16UC1 (uint16), 32FC1 (float32). Honours ``step`` row
    padding and ``is_bigendian``.
    """
    encoding = msg.encoding
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f'Image.encoding {encoding!r} is unsupported, expected one of '
                              f'{sorted(IMAGE_ENCODINGS)}')
    kind, channels, order = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f'Image is {width}x{height} (width x height), expected both > 0')
    dtype = np.dtype(('>' if msg.is_bigendian else '<') + kind)
    pixel_bytes = channels * dtype.itemsize
    if step < width * pixel_bytes:
        raise ConversionError(f'Image.step is {step}, expected >= width*bytes_per_pixel = '
                              f'{width}*{pixel_bytes} = {width * pixel_bytes} for {encoding}')
    buf = _bytes_of(msg.data, 'Image.data')
    if buf.size != height * step:
        raise ConversionError(f'Image.data has {buf.size} bytes, expected height*step = '
                              f'{height}*{step} = {height * step}')
    view = np.ndarray((height, width, channels), dtype=dtype, buffer=buf,
                      strides=(step, pixel_bytes, dtype.itemsize))  # (H, W, channels), no copy
    if channels == 1:
        return view[:, :, 0].astype(dtype.newbyteorder('='))  # (H, W) native, owned
    if channels == 3 and order == 'rgb':
        return view.copy()  # (H, W, 3), contiguous, owned
    code = {('bgr', 3): cv2.COLOR_BGR2RGB, ('bgr', 4): cv2.COLOR_BGRA2RGB,
            ('rgb', 4): cv2.COLOR_RGBA2RGB}[order, channels]
    return cv2.cvtColor(view, code)  # (H, W, C) -> (H, W, 3), SIMD, ~40x a numpy reversed copy


def image_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any supported Image (or CompressedImage): the camera input.

    Mono is replicated to 3 channels; mono16 keeps its top 8 bits (full-scale, like a camera);
    depth (16UC1, 32FC1) is scaled min-max over its finite pixels, non-finite pixels black.
    """
    if not hasattr(msg, 'encoding') and hasattr(msg, 'format'):
        return compressed_image_to_array(msg)
    pixels = image_to_array(msg)
    if pixels.ndim == 3:
        return pixels
    if msg.encoding in DEPTH_ENCODINGS:
        values = pixels.astype(np.float32)
        finite = np.isfinite(values)
        lo = float(values[finite].min()) if finite.any() else 0.0
        hi = float(values[finite].max()) if finite.any() else 0.0
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        pixels = np.where(finite, np.rint(scaled), 0).astype(np.uint8)
    elif pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return np.repeat(pixels[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)


def array_to_image(arr: np.ndarray, *, encoding: str = 'rgb8', stamp: Stamp = None,
                   frame_id: str = '') -> Any:
    """A little-endian, unpadded ``sensor_msgs/Image`` holding ``arr``.

    Args:
        arr: (H, W, 3) uint8 RGB for rgb8/bgr8/8UC3 (stored in the encoding's order); (H, W, 3)
            or (H, W, 4) RGB(A) uint8 for rgba8/bgra8 (alpha 255 when absent); (H, W) uint8 for
            mono8/8UC1, uint16 for mono16/16UC1, float32 for 32FC1.
        encoding: one of IMAGE_ENCODINGS.
        stamp: None, seconds, (sec, nanosec) or a Time message.
        frame_id: header.frame_id.
    """
    from sensor_msgs.msg import Image

    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f'encoding {encoding!r} is unsupported, expected one of '
                              f'{sorted(IMAGE_ENCODINGS)}')
    kind, channels, order = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.dtype != np.dtype(kind):
        raise ConversionError(f'array dtype is {arr.dtype}, expected {np.dtype(kind)} for '
                              f'{encoding}')
    allowed = ((3,) if channels == 3 else (3, 4)) if channels > 1 else ()
    ok = arr.ndim == 2 and channels == 1 or arr.ndim == 3 and arr.shape[2] in allowed
    if not ok or arr.shape[0] == 0 or arr.shape[1] == 0:
        want = '(H, W)' if channels == 1 else f'(H, W, {"|".join(map(str, allowed))})'
        raise ConversionError(f'array shape is {arr.shape}, expected non-empty {want} for '
                              f'{encoding}')
    if channels > 1:
        code = {('bgr', 3, 3): cv2.COLOR_RGB2BGR, ('bgr', 4, 3): cv2.COLOR_RGB2BGRA,
                ('bgr', 4, 4): cv2.COLOR_RGBA2BGRA, ('rgb', 4, 3): cv2.COLOR_RGB2RGBA}
        key = (order, channels, arr.shape[2])
        if key in code:  # (H, W, 3|4) -> (H, W, channels), alpha 255 when added
            arr = cv2.cvtColor(np.ascontiguousarray(arr), code[key])
    height, width = arr.shape[:2]
    msg = Image()
    _fill_header(msg, stamp, frame_id)
    msg.height, msg.width, msg.encoding, msg.is_bigendian = height, width, encoding, 0
    msg.step = width * channels * arr.dtype.itemsize
    msg.data = _uint8_array(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder('<')).tobytes())
    return msg


# ---------------------------------------------------------------------------- CompressedImage
def _compressed_format(fmt: str) -> str:
    """'jpeg' or 'png' from a CompressedImage.format such as 'jpeg' or 'rgb8; png compressed'."""
    low = fmt.lower()
    if 'compresseddepth' not in low:
        if 'jpeg' in low or 'jpg' in low:
            return 'jpeg'
        if 'png' in low:
            return 'png'
    raise ConversionError(f"CompressedImage.format {fmt!r} is unsupported, expected one "
                          f"naming 'jpeg' or 'png'")


def compressed_image_to_array(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a jpeg or png ``sensor_msgs/CompressedImage`` (via cv2.imdecode)."""
    fmt = _compressed_format(msg.format)
    buf = _bytes_of(msg.data, 'CompressedImage.data')
    if buf.size == 0:
        raise ConversionError(f'CompressedImage.data is empty, expected {fmt} bytes')
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ConversionError(f'CompressedImage.data ({buf.size} bytes) is not decodable '
                              f'as {fmt}: {exc}') from exc
    if bgr is None:
        raise ConversionError(f'CompressedImage.data ({buf.size} bytes, starting '
                              f'{bytes(buf[:8])!r}) is not decodable as {fmt}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def array_to_compressed_image(arr: np.ndarray, *, fmt: str = 'jpeg', quality: int = 90,
                              stamp: Stamp = None, frame_id: str = '') -> Any:
    """A ``sensor_msgs/CompressedImage`` (format 'jpeg' or 'png') of an (H, W, 3) uint8 RGB array.

    Args:
        arr: (H, W, 3) uint8 RGB.
        fmt: 'jpeg' (lossy, ``quality`` 0-100) or 'png' (lossless).
        quality: jpeg quality.
        stamp: None, seconds, (sec, nanosec) or a Time message.
        frame_id: header.frame_id.
    """
    from sensor_msgs.msg import CompressedImage

    if fmt not in ('jpeg', 'png'):
        raise ConversionError(f"fmt {fmt!r} is unsupported, expected 'jpeg' or 'png'")
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise ConversionError(f'array is {arr.dtype} {arr.shape}, expected uint8 (H, W, 3) RGB')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == 'jpeg' else []
    bgr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', bgr, params)
    if not ok:
        raise ConversionError(f'cv2.imencode failed to encode a {arr.shape} array as {fmt}')
    msg = CompressedImage()
    _fill_header(msg, stamp, frame_id)
    msg.format = fmt
    msg.data = _uint8_array(encoded.tobytes())
    return msg


# ---------------------------------------------------------------------------- PointCloud2
def _field_layout(fields: Any, name: str, big: bool) -> Optional[Tuple[np.dtype, int]]:
    """(numpy dtype, offset) of the PointField ``name``, or None when the cloud lacks it."""
    found = [f for f in fields if f.name == name]
    if not found:
        return None
    if len(found) > 1:
        raise ConversionError(f'PointCloud2.fields has {len(found)} fields named {name!r}, '
                              f'expected one')
    field = found[0]
    if field.datatype not in POINTFIELD_DTYPES:
        raise ConversionError(f'PointCloud2 field {name!r} has datatype {field.datatype}, '
                              f'expected a PointField constant 1..8 (INT8..FLOAT64)')
    if field.count != 1:
        raise ConversionError(f'PointCloud2 field {name!r} has count {field.count}, only '
                              f'count 1 is supported')
    return np.dtype(('>' if big else '<') + POINTFIELD_DTYPES[field.datatype]), int(field.offset)


def pointcloud2_to_array(msg: Any, *, with_intensity: bool = True) -> np.ndarray:
    """(N, 4) float32 [x, y, z, intensity] (or (N, 3) [x, y, z]) of a ``sensor_msgs/PointCloud2``.

    Any field order, offsets, datatypes INT8..FLOAT64, endianness, ``point_step`` and
    ``row_step`` padding; organized clouds are read row-major (height, width) and flattened.
    Intensity is the first field named in INTENSITY_NAMES; when absent and ``with_intensity``,
    the 4th column is zeros (the shape stays (N, 4)). Points with any non-finite value are
    dropped. An empty cloud (width or height 0) gives a (0, C) array. Fields other than x, y, z
    and intensity are ignored, whatever their datatype or count.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    big = bool(msg.is_bigendian)
    names = ['x', 'y', 'z']
    layout = {}
    for name in names:
        found = _field_layout(msg.fields, name, big)
        if found is None:
            raise ConversionError(f'PointCloud2.fields lacks {name!r}, has '
                                  f'{[f.name for f in msg.fields]}')
        layout[name] = found
    columns = 4 if with_intensity else 3
    intensity = None
    if with_intensity:
        for candidate in INTENSITY_NAMES:
            intensity = _field_layout(msg.fields, candidate, big)
            if intensity is not None:
                layout[candidate] = intensity
                names.append(candidate)
                break
    if height == 0 or width == 0:
        return np.zeros((0, columns), dtype=np.float32)
    if point_step <= 0:
        raise ConversionError(f'PointCloud2.point_step is {point_step} with {width}x{height} '
                              f'points, expected > 0')
    for name in names:
        dtype, offset = layout[name]
        if offset < 0 or offset + dtype.itemsize > point_step:
            raise ConversionError(f'PointCloud2 field {name!r} spans bytes [{offset}, '
                                  f'{offset + dtype.itemsize}), beyond point_step = {point_step}')
    if row_step < width * point_step:
        raise ConversionError(f'PointCloud2.row_step is {row_step}, expected >= width*point_step'
                              f' = {width}*{point_step} = {width * point_step}')
    buf = _bytes_of(msg.data, 'PointCloud2.data')
    if buf.size != height * row_step:
        raise ConversionError(f'PointCloud2.data has {buf.size} bytes, expected '
                              f'height*row_step = {height}*{row_step} = {height * row_step}')
    point_dtype = np.dtype({'names': names, 'formats': [layout[n][0] for n in names],
                           'offsets': [layout[n][1] for n in names], 'itemsize': point_step})
    points = np.ndarray((height, width), dtype=point_dtype, buffer=buf,
                        strides=(row_step, point_step))  # (height, width) structured view
    out = np.empty((height * width, columns), dtype=np.float32)  # (N, C), N = height*width
    for col, name in enumerate(names):
        np.copyto(out[:, col].reshape(height, width), points[name], casting='unsafe')
    if with_intensity and intensity is None:
        out[:, 3] = 0.0
    finite = np.isfinite(out).all(axis=1)
    return out if finite.all() else out[finite]


def array_to_pointcloud2(points: np.ndarray, *, frame_id: str = '', stamp: Stamp = None) -> Any:
    """An unorganized little-endian FLOAT32 ``sensor_msgs/PointCloud2``.

    Args:
        points: (N, 3) [x, y, z] or (N, 4) [x, y, z, intensity], any real dtype (cast to float32).
        frame_id: header.frame_id.
        stamp: None, seconds, (sec, nanosec) or a Time message.
    """
    from sensor_msgs.msg import PointCloud2, PointField

    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] not in (3, 4) or points.dtype.kind not in 'fiu':
        raise ConversionError(f'points are {points.dtype} {points.shape}, expected real (N, 3) '
                              f'or (N, 4)')
    points = np.ascontiguousarray(points, dtype='<f4')
    names = ['x', 'y', 'z', 'intensity'][:points.shape[1]]
    msg = PointCloud2()
    _fill_header(msg, stamp, frame_id)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate(names)]
    msg.height, msg.width = 1, points.shape[0]
    msg.is_bigendian = False
    msg.point_step = 4 * points.shape[1]
    msg.row_step = msg.point_step * points.shape[0]
    msg.is_dense = bool(np.isfinite(points).all())
    msg.data = _uint8_array(points.tobytes())
    return msg


# ---------------------------------------------------------------------------- LaserScan
def laserscan_to_points(msg: Any) -> np.ndarray:
    """(N, 3) float32 points of a ``sensor_msgs/LaserScan`` in its scan plane (z = 0).

    Ranges outside [range_min, range_max] or non-finite are dropped.
    """
    ranges = np.asarray(msg.ranges, dtype=np.float32).reshape(-1)
    angle_min, increment = float(msg.angle_min), float(msg.angle_increment)
    range_min, range_max = float(msg.range_min), float(msg.range_max)
    if not (math.isfinite(angle_min) and math.isfinite(increment)):
        raise ConversionError(f'LaserScan.angle_min {angle_min} / angle_increment {increment} '
                              f'must be finite')
    if ranges.size > 1 and increment == 0.0:
        raise ConversionError(f'LaserScan.angle_increment is 0 with {ranges.size} ranges, '
                              f'expected non-zero')
    if not (math.isfinite(range_min) and math.isfinite(range_max)) or range_min < 0 \
            or range_max < range_min:
        raise ConversionError(f'LaserScan range_min {range_min} / range_max {range_max} must be '
                              f'finite with 0 <= range_min <= range_max')
    angles = angle_min + increment * np.arange(ranges.size, dtype=np.float64)
    keep = np.isfinite(ranges) & (ranges >= range_min) & (ranges <= range_max)
    r, a = ranges[keep].astype(np.float64), angles[keep]
    out = np.zeros((r.size, 3), dtype=np.float32)  # (N, 3)
    out[:, 0] = r * np.cos(a)
    out[:, 1] = r * np.sin(a)
    return out


# ---------------------------------------------------------------------------- audio
def _decode_pcm(data: Any, channels: int, encoding: str, field: str) -> np.ndarray:
    """(samples,) float32 mono in [-1, 1] of interleaved PCM bytes (channels averaged)."""
    if encoding not in AUDIO_ENCODINGS:
        raise ConversionError(f'{field} encoding {encoding!r} is unsupported, expected one of '
                              f'{sorted(AUDIO_ENCODINGS)}')
    if channels < 1:
        raise ConversionError(f'{field} channels is {channels}, expected >= 1')
    dtype = np.dtype(AUDIO_ENCODINGS[encoding])
    buf = _bytes_of(data, f'{field}.data')
    frame_bytes = channels * dtype.itemsize
    if buf.size % frame_bytes:
        raise ConversionError(f'{field}.data has {buf.size} bytes, expected a multiple of '
                              f'channels*bytes_per_sample = {channels}*{dtype.itemsize} = '
                              f'{frame_bytes}')
    samples = np.ndarray((buf.size // frame_bytes, channels), dtype=dtype, buffer=buf)
    pcm = samples.astype(np.float32)  # (samples, channels), owned
    if encoding == 'S16LE':
        pcm *= 1.0 / 32768.0
    mono = pcm[:, 0] if channels == 1 else pcm.mean(axis=1)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def audio_frame_to_array(msg: Any) -> np.ndarray:
    """(samples,) float32 mono in [-1, 1] of a ``sentryfuse_ros/AudioFrame`` at msg.sample_rate.

    S16LE is scaled by 1/32768, F32LE clipped to [-1, 1]; interleaved channels are averaged.
    """
    if int(msg.sample_rate) <= 0:
        raise ConversionError(f'AudioFrame.sample_rate is {msg.sample_rate}, expected > 0')
    return _decode_pcm(msg.data, int(msg.channels), msg.encoding, 'AudioFrame')


def audio_data_stamped_to_array(msg: Any, *, channels: int = 1,
                                encoding: str = 'S16LE') -> np.ndarray:
    """(samples,) float32 mono of an ``audio_common_msgs/AudioDataStamped`` (``msg.audio.data``).

    That message carries no rate, channel count or encoding, so they are arguments (the rate
    is the caller's: see audio_msg_to_array). audio_common_msgs is not installable on the
    development machines (no wheel), so this is tested only on duck-typed stand-ins there.

    Args:
        msg: object with ``audio.data`` (uint8 sequence).
        channels: interleaved channels in the data.
        encoding: 'S16LE' or 'F32LE'.
    """
    return _decode_pcm(msg.audio.data, channels, encoding, 'AudioDataStamped')


def audio_msg_to_array(msg: Any, *, default_rate: int = 16000, default_channels: int = 1,
                       default_encoding: str = 'S16LE') -> Tuple[np.ndarray, int]:
    """``(pcm, sample_rate)`` of an AudioFrame, or of an AudioDataStamped with the defaults.

    Args:
        msg: AudioFrame-like (has ``sample_rate``) or AudioDataStamped-like (has ``audio``).
        default_rate: sample rate of AudioDataStamped data [Hz].
        default_channels: interleaved channels of AudioDataStamped data.
        default_encoding: encoding of AudioDataStamped data.
    """
    if hasattr(msg, 'sample_rate'):
        return audio_frame_to_array(msg), int(msg.sample_rate)
    if hasattr(msg, 'audio'):
        if default_rate <= 0:
            raise ConversionError(f'default_rate is {default_rate}, expected > 0')
        return audio_data_stamped_to_array(msg, channels=default_channels,
                                           encoding=default_encoding), int(default_rate)
    raise ConversionError(f'{type(msg).__name__} is neither AudioFrame-like (sample_rate) nor '
                          f'AudioDataStamped-like (audio)')


def audio_frame_to_model_rate(msg: Any, rate: int) -> np.ndarray:
    """(samples,) float32 mono of an AudioFrame resampled to ``rate`` Hz."""
    return resample(audio_frame_to_array(msg), int(msg.sample_rate), rate)


def array_to_audio_frame(pcm: np.ndarray, *, sample_rate: int, encoding: str = 'S16LE',
                         stamp: Stamp = None, frame_id: str = '') -> Any:
    """A mono ``sentryfuse_ros/AudioFrame`` of float PCM in [-1, 1] (clipped).

    Args:
        pcm: (samples,) float PCM; S16LE stores round(x * 32768) clipped to int16.
        sample_rate: samples per second [Hz] > 0.
        encoding: 'S16LE' or 'F32LE'.
        stamp: None, seconds, (sec, nanosec) or a Time message (of the first sample).
        frame_id: header.frame_id.
    """
    from sentryfuse_ros.msg import AudioFrame

    if encoding not in AUDIO_ENCODINGS:
        raise ConversionError(f'encoding {encoding!r} is unsupported, expected one of '
                              f'{sorted(AUDIO_ENCODINGS)}')
    if int(sample_rate) <= 0:
        raise ConversionError(f'sample_rate is {sample_rate}, expected > 0')
    pcm = np.asarray(pcm)
    if pcm.ndim != 1 or pcm.dtype.kind != 'f':
        raise ConversionError(f'pcm is {pcm.dtype} {pcm.shape}, expected float (samples,)')
    pcm = np.clip(pcm, -1.0, 1.0)
    if encoding == 'S16LE':
        raw = np.clip(np.rint(pcm * 32768.0), -32768, 32767).astype('<i2').tobytes()
    else:
        raw = pcm.astype('<f4').tobytes()
    msg = AudioFrame()
    _fill_header(msg, stamp, frame_id)
    msg.sample_rate, msg.channels, msg.encoding = int(sample_rate), 1, encoding
    msg.data = _uint8_array(raw)
    return msg
