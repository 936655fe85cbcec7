"""Property-based tests (hypothesis) of every message -> array converter of msg_arrays/ and
modality_inputs.py: messages with random fields (sizes, steps, offsets, rates, encodings, NaN/inf,
stamps) either convert to a well-formed finite array or raise ConversionError; no other exception
gets out, and no size or rate field makes a converter allocate or loop beyond the data it holds.

Messages are duck-typed stand-ins (the readers take any object with the fields, as they take rclpy
and rosbags messages). Runtime is bounded: few examples per property, no deadline (a loaded CI box).
"""
import time
import types

import numpy as np
import pytest

hypothesis = pytest.importorskip('hypothesis')
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sentryfuse_ros import msg_arrays  # noqa: E402
from sentryfuse_ros.core.errors import ConversionError  # noqa: E402
from sentryfuse_ros.msg_arrays.modality_inputs import audio_converter, engine_converters, lidar_converter  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW_S = 0.5   # one conversion of a message of a few kB never takes this long, whatever its fields say

# sizes: small, boundary and absurd values (a uint32 field holds up to 2^32 - 1)
SIZES = st.one_of(st.integers(-3, 40), st.sampled_from([2**16, 2**31 - 1, 2**32 - 1, 2**63 - 1]))
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
SMALL_BYTES = st.binary(min_size=0, max_size=4096)


def _convert(fn, msg):
    """fn(msg), which may raise only ConversionError, and must return in SLOW_S."""
    t0 = time.perf_counter()
    try:
        out = fn(msg)
    except ConversionError:
        out = None
    assert time.perf_counter() - t0 < SLOW_S, f'{fn.__name__} took {time.perf_counter() - t0:.2f} s'
    return out


# ---------------------------------------------------------------------------- images
IMAGE_ENCODINGS = st.one_of(st.sampled_from(sorted(msg_arrays.IMAGE_ENCODINGS)), st.text(max_size=8))


@st.composite
def images(draw):
    height, width = draw(SIZES), draw(SIZES)
    step = draw(st.one_of(SIZES, st.just(max(width, 0) * 3)))
    data = draw(st.one_of(SMALL_BYTES, st.just(bytes(max(0, min(height * step, 8192)))
                                               if height > 0 and step > 0 else b'')))
    return types.SimpleNamespace(height=height, width=width, step=step, encoding=draw(IMAGE_ENCODINGS),
                                 is_bigendian=draw(st.sampled_from([0, 1, 2])), data=data)


@pytest.mark.slow
@FUZZ
@given(images())
def test_image_converters_return_rgb_or_raise_conversion_error(msg):
    for fn in (msg_arrays.image_to_array, msg_arrays.image_to_rgb, engine_converters({}, 8000)['camera']):
        out = _convert(fn, msg)
        if out is not None:
            assert out.shape[:2] == (msg.height, msg.width)
    rgb = _convert(msg_arrays.image_to_rgb, msg)
    if rgb is not None:
        assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3)


@FUZZ
@given(st.one_of(SMALL_BYTES, st.sampled_from([b'\x89PNG\r\n\x1a\n' + bytes(40), b'\xff\xd8\xff' + bytes(40)])),
       st.one_of(st.sampled_from(['jpeg', 'png', 'rgb8; jpeg compressed bgr8', 'compressedDepth png']),
                 st.text(max_size=12)))
def test_compressed_image_converter_returns_rgb_or_raises_conversion_error(data, fmt):
    msg = types.SimpleNamespace(format=fmt, data=data)
    for fn in (msg_arrays.compressed_image_to_array, msg_arrays.image_to_rgb):
        out = _convert(fn, msg)
        if out is not None:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


# ---------------------------------------------------------------------------- clouds
FIELD_NAMES = st.sampled_from(['x', 'y', 'z', 'intensity', 'i', 'rgb', 'x'])


@st.composite
def clouds(draw):
    n_fields = draw(st.integers(0, 6))
    fields = [types.SimpleNamespace(name=draw(FIELD_NAMES), offset=draw(st.integers(-4, 40)),
                                    datatype=draw(st.integers(0, 9)), count=draw(st.integers(0, 3)))
              for _ in range(n_fields)]
    if draw(st.booleans()):   # often a well-formed x, y, z float32 layout, so the deeper checks run
        fields = [types.SimpleNamespace(name=n, offset=4 * i, datatype=7, count=1)
                  for i, n in enumerate(('x', 'y', 'z', 'intensity'))]
    width, height = draw(SIZES), draw(st.one_of(st.just(1), SIZES))
    point_step = draw(st.one_of(st.just(16), SIZES))
    row_step = draw(st.one_of(st.just(max(width, 0) * point_step), SIZES))
    if draw(st.booleans()) and 0 < width <= 256 and 0 < height <= 4 and 0 < point_step <= 64:
        values = draw(st.lists(FLOATS, min_size=width * height * point_step // 4,
                               max_size=width * height * point_step // 4))
        data = np.array(values, '<f4').tobytes()[:max(row_step, 0) * height]
    else:
        data = draw(SMALL_BYTES)
    return types.SimpleNamespace(height=height, width=width, point_step=point_step, row_step=row_step,
                                 is_bigendian=draw(st.booleans()), fields=fields, data=data, is_dense=False)


@FUZZ
@given(clouds())
def test_pointcloud2_converters_return_finite_points_or_raise_conversion_error(msg):
    for fn in (msg_arrays.pointcloud2_to_array, lidar_converter('sensor_msgs/msg/PointCloud2')):
        out = _convert(fn, msg)
        if out is not None:
            assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 4
            assert np.isfinite(out).all() and len(out) <= max(msg.width, 0) * max(msg.height, 0)


@FUZZ
@given(st.lists(FLOATS, max_size=512), FLOATS, FLOATS, FLOATS, FLOATS)
def test_laserscan_converters_return_finite_points_or_raise_conversion_error(ranges, angle_min, increment,
                                                                           range_min, range_max):
    msg = types.SimpleNamespace(ranges=ranges, angle_min=angle_min, angle_increment=increment,
                                range_min=range_min, range_max=range_max)
    for fn in (msg_arrays.laserscan_to_points, lidar_converter('sensor_msgs/msg/LaserScan')):
        out = _convert(fn, msg)
        if out is not None:
            assert np.isfinite(out).all() and len(out) <= len(ranges)


# ---------------------------------------------------------------------------- audio
RATES = st.one_of(st.sampled_from([0, 1, 7, 999, 1000, 8000, 16000, 44100, 48000, 768000, 768001,
                                   2**31 - 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
AUDIO_ENCODINGS = st.one_of(st.sampled_from(['S16LE', 'F32LE']), st.text(max_size=6))


@st.composite
def audio_frames(draw):
    encoding = draw(AUDIO_ENCODINGS)
    if encoding == 'F32LE' and draw(st.booleans()):
        data = np.array(draw(st.lists(FLOATS, max_size=1024)), '<f4').tobytes()
    else:
        data = draw(st.binary(max_size=4096))
    return types.SimpleNamespace(sample_rate=draw(RATES), channels=draw(st.integers(0, 255)),
                                 encoding=encoding, data=data)


@FUZZ
@given(audio_frames())
def test_audio_converters_return_finite_pcm_bounded_by_the_frame_or_raise_conversion_error(msg):
    pcm = _convert(msg_arrays.audio_frame_to_array, msg)
    if pcm is not None:
        assert pcm.dtype == np.float32 and np.isfinite(pcm).all() and np.abs(pcm).max(initial=0) <= 1
    for rate in (8000, 16000):
        out = _convert(audio_converter(rate), msg)
        if out is not None:
            samples = len(msg.data) // (4 if msg.encoding == 'F32LE' else 2) // max(msg.channels, 1)
            assert np.isfinite(out).all() and len(out) <= samples * rate / 1000 + 1
        _convert(lambda m, rate=rate: msg_arrays.audio_frame_to_model_rate(m, rate), msg)


@FUZZ
@given(st.binary(max_size=2048), st.integers(-1, 8), AUDIO_ENCODINGS, RATES)
def test_audio_data_stamped_converters_return_finite_pcm_or_raise_conversion_error(data, channels, encoding,
                                                                                    rate):
    msg = types.SimpleNamespace(audio=types.SimpleNamespace(data=data))
    _convert(lambda m: msg_arrays.audio_data_stamped_to_array(m, channels=channels, encoding=encoding), msg)
    out = _convert(lambda m: msg_arrays.audio_msg_to_array(m, default_rate=rate, default_channels=channels,
                                                           default_encoding=encoding)[0], msg)
    if out is not None:
        assert np.isfinite(out).all()


# ---------------------------------------------------------------------------- stamps and odd payloads
@FUZZ
@given(st.one_of(st.integers(-2**63, 2**63), st.none(), st.text(max_size=4)),
       st.one_of(st.integers(-2**63, 2**63), st.none(), st.floats()))
def test_stamp_to_sec_returns_a_float_or_raises_conversion_error(sec, nanosec):
    out = _convert(msg_arrays.stamp_to_sec, types.SimpleNamespace(sec=sec, nanosec=nanosec))
    if out is not None:
        assert isinstance(out, float)


@FUZZ
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_sec_to_stamp_fits_builtin_interfaces_time_or_raises_conversion_error(t):
    out = _convert(msg_arrays.sec_to_stamp, t)
    if out is not None:
        sec, nanosec = out
        assert -2**31 <= sec <= 2**31 - 1 and 0 <= nanosec < 10**9


@FUZZ
@given(st.sampled_from(['camera', 'lidar', 'audio']),
       st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(-300, 300), max_size=8),
                 st.builds(types.SimpleNamespace)))
def test_any_object_given_to_an_engine_converter_raises_only_conversion_error(modality, payload):
    convert = engine_converters({'lidar': 'sensor_msgs/msg/PointCloud2'}, 8000)[modality]
    _convert(convert, payload)


# ---------------------------------------------------------------------------- writers (arrays -> messages)
from hypothesis.extra import numpy as hnp  # noqa: E402

ARRAYS = hnp.arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64, np.bool_]),
                    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
WRITER_STAMPS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                          st.tuples(st.integers(-2**40, 2**40), st.integers(-2**40, 2**40)),
                          st.integers(-2**70, 2**70), st.text(max_size=3))


@FUZZ
@given(ARRAYS, st.one_of(st.sampled_from(sorted(msg_arrays.IMAGE_ENCODINGS)), st.text(max_size=6)), WRITER_STAMPS)
def test_array_to_image_round_trips_or_raises_conversion_error(arr, encoding, stamp):
    msg = _convert(lambda a: msg_arrays.array_to_image(a, encoding=encoding, stamp=stamp), arr)
    if msg is not None:
        assert msg_arrays.image_to_array(msg).shape[:2] == arr.shape[:2]
        assert -2**31 <= msg.header.stamp.sec <= 2**31 - 1


@FUZZ
@given(ARRAYS, st.one_of(st.sampled_from(['jpeg', 'png']), st.text(max_size=4)), st.integers(-5, 120),
       WRITER_STAMPS)
def test_array_to_compressed_image_decodes_or_raises_conversion_error(arr, fmt, quality, stamp):
    msg = _convert(lambda a: msg_arrays.array_to_compressed_image(a, fmt=fmt, quality=quality, stamp=stamp), arr)
    if msg is not None:
        assert msg_arrays.compressed_image_to_array(msg).shape == arr.shape


@FUZZ
@given(ARRAYS, WRITER_STAMPS)
def test_array_to_pointcloud2_reads_back_or_raises_conversion_error(arr, stamp):
    msg = _convert(lambda a: msg_arrays.array_to_pointcloud2(a, stamp=stamp), arr)
    if msg is not None:
        back = msg_arrays.pointcloud2_to_array(msg, with_intensity=False)
        assert back.shape[0] == int(np.isfinite(arr.astype(np.float32)[:, :3]).all(axis=1).sum())


@FUZZ
@example(np.array([0.5, np.nan], np.float32), 8000, 'F32LE', None)
@example(np.array([np.inf], np.float64), 16000, 'S16LE', 1.5)
@given(ARRAYS, RATES, st.one_of(st.sampled_from(['S16LE', 'F32LE']), st.text(max_size=5)), WRITER_STAMPS)
def test_array_to_audio_frame_reads_back_or_raises_conversion_error(arr, rate, encoding, stamp):
    msg = _convert(lambda a: msg_arrays.array_to_audio_frame(a, sample_rate=rate, encoding=encoding,
                                                             stamp=stamp), arr)
    if msg is not None:
        assert len(msg_arrays.audio_frame_to_array(msg)) == arr.size
