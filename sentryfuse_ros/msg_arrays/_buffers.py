"""Message buffers as numpy arrays, stamps, headers: what every converter shares."""
from __future__ import annotations

import array
import functools
import math
from typing import Any, Callable, Tuple, TypeVar, Union

import numpy as np

from sentryfuse_ros.core.errors import ConversionError

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



_Reader = TypeVar('_Reader', bound=Callable[..., Any])


def message_reader(what: str) -> Callable[[_Reader], _Reader]:
    """Decorator of a message -> array reader: a message that lacks a field or holds one of the wrong
    kind (AttributeError, TypeError, ValueError, OverflowError, IndexError) is a ConversionError
    naming ``what`` and the cause, so a reader raises nothing but the project's own error."""
    def decorate(fn: _Reader) -> _Reader:
        @functools.wraps(fn)
        def read(msg: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(msg, *args, **kwargs)
            except ConversionError:
                raise
            except (AttributeError, TypeError, ValueError, OverflowError, IndexError) as exc:
                raise ConversionError(f'{type(msg).__name__} is not a readable {what}: '
                                      f'{type(exc).__name__}: {exc}') from exc
        return read  # type: ignore[return-value]
    return decorate


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
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f'stamp {stamp!r} has no integer sec/nanosec fields') from exc
    if not 0 <= nanosec < 1_000_000_000:
        raise ConversionError(f'stamp.nanosec is {nanosec}, expected 0 <= nanosec < 1e9')
    return sec + nanosec * 1e-9


TIME_SEC_RANGE = (-2**31, 2**31 - 1)  # builtin_interfaces/Time.sec is int32


def sec_to_stamp(t: float) -> Tuple[int, int]:
    """``(sec, nanosec)`` of a time in seconds, nanosec in [0, 1e9) (floor, also for t < 0).

    Clamped to what a ``builtin_interfaces/Time`` holds (sec in TIME_SEC_RANGE): a float time
    past 2^31 - 1 s (e.g. a stamp of sec 2^31 - 1 rounded up as a float) would otherwise wrap to
    sec -2^31 when serialized.
    """
    if not math.isfinite(t):
        raise ConversionError(f'time {t!r} s is not finite')
    t = min(max(t, TIME_SEC_RANGE[0] - 1.0), TIME_SEC_RANGE[1] + 1.0)  # 1e300 s * 1e9 would overflow
    total_ns = int(round(t * 1e9))
    sec, nanosec = total_ns // 1_000_000_000, total_ns % 1_000_000_000
    if sec > TIME_SEC_RANGE[1]:
        return TIME_SEC_RANGE[1], 999_999_999
    if sec < TIME_SEC_RANGE[0]:
        return TIME_SEC_RANGE[0], 0
    return sec, nanosec


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
    if not TIME_SEC_RANGE[0] <= sec <= TIME_SEC_RANGE[1]:
        raise ConversionError(f'stamp sec is {sec}, expected an int32 in [{TIME_SEC_RANGE[0]}, {TIME_SEC_RANGE[1]}]')
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nanosec
    msg.header.frame_id = frame_id
