"""Property-based tests (hypothesis) of PerceptionEngine.push/infer: random messages (sizes, rates,
encodings, NaN/inf, stamps) through the node's own converters never make the engine raise, and what
it returns is a finite prediction or None, with every rejected message counted.

Runtime is bounded: few examples, no deadline (a loaded CI box), one engine per module.
"""
import types

import numpy as np
import pytest

hypothesis = pytest.importorskip('hypothesis')
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sentryfuse_ros.core.runtime.engine import EngineConfig, PerceptionEngine  # noqa: E402
from sentryfuse_ros.msg_arrays.modality_inputs import engine_converters  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
SIZES = st.one_of(st.integers(-2, 24), st.sampled_from([2**31 - 1, 2**32 - 1]))
STAMPS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 2e9))


@pytest.fixture(scope='module')
def engine(trained):
    model, gate = trained
    return PerceptionEngine(model, gate.scores, EngineConfig())


@st.composite
def camera_messages(draw):
    h, w = draw(SIZES), draw(SIZES)
    encoding = draw(st.sampled_from(['rgb8', 'bgr8', 'mono8', 'mono16', '32FC1', 'rgba8', 'yuv422', '']))
    n = max(0, min(h * w * 4, 4096)) if h > 0 and w > 0 else 0
    return types.SimpleNamespace(height=h, width=w, step=draw(st.one_of(st.just(max(w, 0) * 3), SIZES)),
                                 encoding=encoding, is_bigendian=0, data=draw(st.binary(min_size=n, max_size=n)))


@st.composite
def lidar_messages(draw):
    width = draw(st.integers(0, 64))
    values = draw(st.lists(FLOATS, min_size=4 * width, max_size=4 * width))
    fields = [types.SimpleNamespace(name=n, offset=4 * i, datatype=7, count=1)
              for i, n in enumerate(('x', 'y', 'z', 'intensity'))]
    return types.SimpleNamespace(height=draw(st.sampled_from([1, 1, 0, 2**32 - 1])), width=width,
                                 point_step=draw(st.sampled_from([16, 16, 0, 12])), row_step=16 * width,
                                 is_bigendian=False, fields=fields, data=np.array(values, '<f4').tobytes())


@st.composite
def audio_messages(draw):
    encoding = draw(st.sampled_from(['S16LE', 'F32LE', 'F32LE', 'MP3']))
    if encoding == 'F32LE':
        data = np.array(draw(st.lists(FLOATS, max_size=800)), '<f4').tobytes()
    else:
        data = draw(st.binary(max_size=1600))
    rate = draw(st.one_of(st.sampled_from([8000, 16000, 48000, 0, 1, 7, 2**32 - 1]), st.integers(0, 2**32 - 1)))
    return types.SimpleNamespace(sample_rate=rate, channels=draw(st.integers(0, 3)), encoding=encoding, data=data)


MESSAGES = st.one_of(st.tuples(st.just('camera'), camera_messages()),
                     st.tuples(st.just('lidar'), lidar_messages()),
                     st.tuples(st.just('audio'), audio_messages()),
                     st.tuples(st.sampled_from(['camera', 'lidar', 'audio']), st.one_of(st.none(), st.integers())))


@FUZZ
@given(st.lists(st.tuples(MESSAGES, STAMPS), min_size=1, max_size=6), st.floats(0.05, 1.0),
       st.one_of(st.none(), st.lists(st.sampled_from(['camera', 'lidar', 'audio', 'radar']), max_size=4)))
def test_engine_push_and_infer_never_raise_and_never_return_non_finite(engine, messages, budget, live):
    converters = engine_converters({'lidar': 'sensor_msgs/msg/PointCloud2'}, engine.pre.audio_rate)
    before = sum(engine.errors.values())
    for (modality, msg), stamp in messages:
        engine.push(modality, msg, stamp, converters[modality], received_s=1000.0)
    result = engine.infer(1000.1, live, budget)
    if result is not None:
        assert np.isfinite(result.scores).all() and np.isfinite(result.confidence)
        assert 0.0 <= result.confidence <= 1.0 and set(result.modalities_used) <= {'camera', 'lidar', 'audio'}
    assert sum(engine.errors.values()) >= before
    for m in ('camera', 'lidar', 'audio'):
        engine.drop(m)
