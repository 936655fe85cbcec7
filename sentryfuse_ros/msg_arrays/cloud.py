"""sensor_msgs/PointCloud2 and LaserScan <-> (N, 3|4) float32 points, as sensor_msgs_py does."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from sentryfuse_ros.core.errors import ConversionError
from sentryfuse_ros.msg_arrays._buffers import POINTFIELD_DTYPES, INTENSITY_NAMES, Stamp, _bytes_of, _fill_header, _uint8_array, message_reader

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


@message_reader('PointCloud2')
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
    view = _float32_view(buf, layout, names, columns, big, height * width, point_step, row_step, width)
    if view is not None:  # zero copy: the message buffer itself, seen as (N, C) float32
        finite = np.isfinite(view).all(axis=1)
        return view if finite.all() else view[finite]
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


def _float32_view(buf: np.ndarray, layout: dict, names: list, columns: int, big: bool, n: int, point_step: int,
                   row_step: int, width: int) -> Optional[np.ndarray]:
    """(N, C) read-only float32 view of ``buf`` when the layout allows it (native-endian FLOAT32
    x, y, z[, intensity] at offsets 0, 4, 8[, 12], point_step a multiple of 4, no row padding),
    else None. The common driver layout (e.g. Velodyne / Ouster x y z intensity ...) qualifies."""
    if len(names) != columns or big != (not np.little_endian) or point_step % 4 or row_step != width * point_step:
        return None
    f32 = np.dtype(np.float32)
    if any(layout[name][0] != f32 or layout[name][1] != 4 * i for i, name in enumerate(names)):
        return None
    view = buf.view(np.float32).reshape(n, point_step // 4)[:, :columns]  # (N, point_step/4) -> (N, C)
    view.flags.writeable = False
    return view


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
@message_reader('LaserScan')
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
