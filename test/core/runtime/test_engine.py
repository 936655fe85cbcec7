"""PerceptionEngine (no ROS): freshness, live sets, the audio ring, conversion errors, budget
switches, the sub-network cache, and equality with a direct forward of the sliced model."""
import numpy as np
import pytest
import torch

from sentryfuse_ros.core.data import preprocess as pp
from sentryfuse_ros.core.runtime.engine import AudioRing, EngineConfig, PerceptionEngine
from sentryfuse_ros.core.errors import ConfigError, ConversionError

ALL = ('camera', 'lidar', 'audio')


def make_engine(trained, **overrides) -> PerceptionEngine:
    model, gate = trained
    return PerceptionEngine(model, gate.scores, EngineConfig(**overrides))


def camera_array(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8)  # (H, W, 3)


def lidar_array(seed=0, n=500):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-10, 10, (n, 4)).astype(np.float32)  # (N, 4) x, y, z, intensity
    pts[:, 2] = rng.uniform(-1.5, 3.0, n)
    pts[:, 3] = rng.uniform(0, 1, n)
    return pts


def push_all(engine, t, audio_samples=None):
    """One fresh sample of each modality received at ``t`` (audio: a full window)."""
    n = audio_samples or engine.pre.audio_samples
    engine.push('camera', camera_array(), stamp_s=t, received_s=t)
    engine.push('lidar', lidar_array(), stamp_s=t, received_s=t)
    engine.push('audio', np.sin(np.arange(n) * 0.05).astype(np.float32), stamp_s=t, received_s=t)


@pytest.mark.parametrize('kwargs, match', [
    ({'max_age_s': (0.5, 0.5)}, r'max_age_s=.*3 positive ages'),
    ({'max_age_s': (0.5, 0.0, 0.5)}, r'max_age_s=.*3 positive ages'),
    ({'budget_levels': ()}, r'budget_levels=\(\).*budgets in \(0, 1\]'),
    ({'budget_levels': (1.0, 1.2)}, r'budget_levels=.*budgets in \(0, 1\]'),
    ({'min_audio_fill': 1.5}, r'min_audio_fill=1.5.*fraction in \[0, 1\]'),
])
def test_engine_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EngineConfig(**kwargs)


def test_freshness_is_judged_on_received_time_not_stamp(trained):
    engine = make_engine(trained, max_age_s=(0.5, 0.3, 0.5))
    # a camera whose clock is 30 s behind (within max_stamp_offset_s) still counts as fresh when it just arrived
    engine.push('camera', camera_array(), stamp_s=970.0, received_s=1000.0)
    # a lidar stamped "now" that arrived long ago is stale
    engine.push('lidar', lidar_array(), stamp_s=1000.0, received_s=999.0)
    assert engine.fresh(1000.4) == ('camera',)
    assert engine.fresh(1000.6) == ()
    engine.push('lidar', lidar_array(), stamp_s=990.0, received_s=1000.5)
    assert engine.fresh(1000.7) == ('lidar',)   # lidar max age 0.3, camera 0.5 exceeded
    assert engine.fresh(1000.9) == ()
    assert engine.stamp_of('lidar') == 990.0 and engine.received_of('lidar') == 1000.5
    # without received_s, the stamp is the arrival time
    engine.push('camera', camera_array(), stamp_s=2000.0)
    assert engine.received_of('camera') == 2000.0 and engine.fresh(2000.1) == ('camera',)


@pytest.mark.parametrize('live, stale, expected', [
    (None, (), ALL),                                   # no health: own freshness only
    (ALL, (), ALL),
    (('camera', 'lidar'), (), ('camera', 'lidar')),    # audio absent from health: not used
    (('lidar',), (), ('lidar',)),
    (ALL, ('lidar',), ('camera', 'audio')),            # live but stale: not used
    (('camera', 'lidar'), ('camera',), ('lidar',)),
    (('audio', 'camera'), (), ('camera', 'audio')),    # order of the health list does not matter
])
def test_uses_live_and_fresh_modalities(trained, live, stale, expected):
    engine = make_engine(trained)
    push_all(engine, 10.0)
    for m in stale:
        if m == 'audio':
            engine.push('audio', np.zeros(10, np.float32), stamp_s=5.0, received_s=5.0)
        else:
            engine.push(m, camera_array() if m == 'camera' else lidar_array(), stamp_s=5.0, received_s=9.0)
    result = engine.infer(10.2, live, 1.0)
    assert result.modalities_used == expected
    assert result.subnetwork.startswith('+'.join(expected) + '@')
    assert result.scores.shape == (len(engine.class_names),)
    assert np.isfinite(result.scores).all() and result.scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert result.label == engine.class_names[result.class_id]


def test_audio_ring_keeps_newest_samples_and_fill_rule(trained):
    ring = AudioRing(8)
    ring.push(np.arange(3, dtype=np.float32), stamp_s=1.0, received_s=2.0)
    assert ring.filled == 3 and ring.buffer.tolist() == [0, 0, 0, 0, 0, 0, 1, 2]
    ring.push(np.arange(3, 10, dtype=np.float32), stamp_s=1.5, received_s=2.5)
    assert ring.filled == 8 and ring.buffer.tolist() == list(range(2, 10))
    ring.push(np.arange(100, 120, dtype=np.float32), stamp_s=0.5, received_s=3.0)  # longer than the ring
    assert ring.buffer.tolist() == list(range(112, 120))
    assert (ring.stamp_s, ring.received_s) == (0.5, 3.0)  # the newest frame's times, not the largest seen
    ring.push(np.zeros(0, np.float32), stamp_s=9.0, received_s=9.0)  # empty: ignored
    assert ring.stamp_s == 0.5
    ring.clear()
    assert ring.filled == 0 and not ring.buffer.any() and ring.stamp_s == float('-inf')

    engine = make_engine(trained, min_audio_fill=0.25)
    need = int(0.25 * engine.pre.audio_samples)
    for i in range(need - 1):  # one-sample frames: the fill counts samples, not frames
        engine.push('audio', np.full(1, 0.1, np.float32), stamp_s=i * 1e-4, received_s=1.0)
    assert engine.fresh(1.1) == ()                  # one sample short of the fill fraction
    assert engine.infer(1.1, None, 1.0) is None
    engine.push('audio', np.full(1, 0.1, np.float32), stamp_s=0.5, received_s=1.05)
    assert engine.fresh(1.1) == ('audio',)
    assert engine.infer(1.1, None, 1.0).modalities_used == ('audio',)
    assert engine.fresh(1.6) == ()                  # the newest frame is older than max age
    engine.drop('audio')
    assert engine.fresh(1.1) == () and engine.stamp_of('audio') == float('-inf')


def _failing(message):
    def convert(_payload):
        raise ConversionError(message)
    return convert


@pytest.mark.parametrize('bad', ALL)
def test_conversion_error_skips_that_modality_and_is_counted(trained, bad):
    engine = make_engine(trained)
    t = 5.0
    good = {'camera': camera_array(), 'lidar': lidar_array(),
            'audio': np.zeros(engine.pre.audio_samples, np.float32)}
    for m in ALL:
        converter = _failing(f'{m} payload is broken') if m == bad else (lambda p: p)
        engine.push(m, good[m], stamp_s=t, converter=converter, received_s=t)
    result = engine.infer(t + 0.1, ALL, 1.0)
    others = tuple(m for m in ALL if m != bad)
    assert result.modalities_used == others
    assert engine.errors == {bad: 1}
    assert engine.last_error[bad] == f'ConversionError: {bad} payload is broken'
    # the broken sample is not retried on the next inference; the others still predict
    result = engine.infer(t + 0.2, ALL, 1.0)
    assert result.modalities_used == others and engine.errors == {bad: 1}
    # a good sample of that modality brings it back
    engine.push(bad, good[bad], stamp_s=t + 0.25, received_s=t + 0.25)
    assert engine.infer(t + 0.3, ALL, 1.0).modalities_used == ALL


def test_converter_runs_once_per_sample_and_its_time_is_reported(trained):
    engine = make_engine(trained)
    calls = []

    def convert(payload):
        calls.append(1)
        return payload

    engine.push('camera', camera_array(), stamp_s=1.0, converter=convert, received_s=1.0)
    first = engine.infer(1.1, None, 1.0)
    engine.infer(1.2, None, 1.0)
    assert len(calls) == 1 and first.convert_ms >= 0
    assert first.sensor_age_ms == pytest.approx(100.0, abs=1e-6)   # now - stamp of the sample used
    assert first.stamp_s == 1.0


@pytest.mark.parametrize('case', ['empty', 'all stale', 'live empty', 'live disjoint', 'all broken'])
def test_no_usable_modality_gives_none(trained, case):
    engine = make_engine(trained)
    live = ALL
    if case == 'all stale':
        push_all(engine, 1.0)
    elif case in ('live empty', 'live disjoint'):
        push_all(engine, 1.0)
        engine.drop('audio')
        live = () if case == 'live empty' else ('audio',)
    elif case == 'all broken':
        engine.push('camera', None, stamp_s=1.0, converter=_failing('bad camera'), received_s=1.0)
        engine.push('lidar', None, stamp_s=1.0, converter=_failing('bad lidar'), received_s=1.0)
    now = 5.0 if case == 'all stale' else 1.1
    assert engine.infer(now, live, 1.0) is None
    assert engine.errors == ({'camera': 1, 'lidar': 1} if case == 'all broken' else {})


def test_lower_budget_switches_to_a_smaller_subnetwork(trained):
    engine = make_engine(trained, budget_levels=(1.0, 0.7, 0.4))
    push_all(engine, 1.0)
    seen = []
    for i, budget in enumerate([1.0, 1.0, 0.75, 0.7, 0.45, 0.2]):
        r = engine.infer(1.01 + 0.01 * i, None, budget)
        seen.append((r.compute_budget, r.gflops, r.subnetwork))
    levels = [s[0] for s in seen]
    assert levels == [1.0, 1.0, 0.7, 0.7, 0.4, 0.4]   # snapped down; below the lowest -> lowest
    g_full, g_70, g_40 = seen[0][1], seen[2][1], seen[4][1]
    assert g_full > g_70 > g_40 > 0
    assert [s[2] for s in seen] == ['camera+lidar+audio@1.00'] * 2 + ['camera+lidar+audio@0.70'] * 2 + \
        ['camera+lidar+audio@0.40'] * 2
    assert engine.switches == 2
    # a change of live set is a switch too, and fewer modalities cost fewer GFLOPs
    r = engine.infer(1.1, ('camera',), 1.0)
    assert r.subnetwork == 'camera@1.00' and r.gflops < g_full and engine.switches == 3


def test_prebuild_makes_every_later_get_a_cache_hit(trained):
    engine = make_engine(trained, budget_levels=(1.0, 0.55))
    ms = engine.prebuild()
    assert ms > 0
    assert engine.cache.stats['builds'] == 7 * 2   # every non-empty subset of 3 modalities x 2 levels
    push_all(engine, 1.0)
    hits = engine.cache.stats['hits']
    lives = [ALL, ('camera',), ('lidar', 'audio'), ('camera', 'audio'), ('lidar',)]
    for i, live in enumerate(lives):
        for budget in (1.0, 0.6, 0.3):
            assert engine.infer(1.01 + 0.001 * i, live, budget) is not None
    assert engine.cache.stats['builds'] == 14
    assert engine.cache.stats['hits'] == hits + 3 * len(lives)
    # without prebuild the first request builds
    cold = make_engine(trained, budget_levels=(1.0, 0.55))
    push_all(cold, 1.0)
    cold.infer(1.01, ALL, 1.0)
    assert {k: cold.cache.stats[k] for k in ('builds', 'hits', 'cached')} == {'builds': 1, 'hits': 0, 'cached': 1}


@pytest.mark.parametrize('live, budget', [(ALL, 1.0), (ALL, 0.55), (('camera', 'audio'), 0.7), (('lidar',), 0.4)])
def test_result_equals_direct_forward_of_sliced_subnetwork(trained, live, budget):
    engine = make_engine(trained)
    cam, pts = camera_array(3), lidar_array(4)
    pcm = (0.3 * np.sin(np.arange(engine.pre.audio_samples) * 0.01)).astype(np.float32)
    engine.push('camera', cam, stamp_s=1.0, received_s=1.0)
    engine.push('lidar', pts, stamp_s=1.0, received_s=1.0)
    engine.push('audio', pcm, stamp_s=1.0, received_s=1.0)
    result = engine.infer(1.05, live, budget)

    model, gate = trained
    inputs = {'camera': pp.preprocess_camera(cam, engine.pre), 'lidar': pp.preprocess_lidar(pts, engine.pre),
              'audio': pcm}
    tensors = {m: torch.as_tensor(inputs[m]).unsqueeze(0) for m in live}   # (...) -> (1, ...)
    sub = engine.cache.get(live, budget)
    with torch.inference_mode():
        want = torch.softmax(sub.model(tensors), dim=-1)[0].numpy()         # (K,)
    np.testing.assert_allclose(result.scores, want, rtol=1e-5, atol=1e-6)
    assert result.class_id == int(np.argmax(want))
    assert result.gflops == pytest.approx(sub.gflops) and result.compute_budget == sub.budget
    # the sliced model is not the dense one at budget < 1: its output differs from the full model's
    if budget < 1.0:
        with torch.inference_mode():
            dense = torch.softmax(model(tensors), dim=-1)[0].numpy()
        assert not np.allclose(dense, want, atol=1e-6)


# --- no input can stop the engine (issue 13) --------------------------------------------------
def _raising(exc):
    def convert(_payload):
        raise exc
    return convert


@pytest.mark.parametrize('bad', ALL)
@pytest.mark.parametrize('exc', [MemoryError('Unable to allocate 205. GiB'), ZeroDivisionError('division by zero'),
                                 KeyError('x')])
def test_any_exception_of_a_conversion_is_contained_to_that_message_and_counted(trained, bad, exc):
    # old code: push and infer caught only SentryFuseError, so a MemoryError from the resampler
    # (AudioFrame sample_rate 4294967295) went up the callback and killed the perception process
    engine = make_engine(trained)
    t = 5.0
    good = {'camera': camera_array(), 'lidar': lidar_array(),
            'audio': np.zeros(engine.pre.audio_samples, np.float32)}
    for m in ALL:
        engine.push(m, good[m], stamp_s=t, converter=_raising(exc) if m == bad else None, received_s=t)
    result = engine.infer(t + 0.1, ALL, 1.0)
    assert result.modalities_used == tuple(m for m in ALL if m != bad)
    assert engine.errors == {bad: 1}
    assert engine.last_error[bad].startswith(type(exc).__name__)


def test_f32le_audio_containing_nan_is_counted_not_predicted(trained):
    import types

    from sentryfuse_ros.msg_arrays.modality_inputs import audio_converter
    engine = make_engine(trained)
    pcm = np.full(800, 0.1, '<f4')
    pcm[10] = np.nan
    frame = types.SimpleNamespace(sample_rate=engine.pre.audio_rate, channels=1, encoding='F32LE',
                                  data=pcm.tobytes())
    convert = audio_converter(engine.pre.audio_rate)
    for i in range(12):   # more than the window: every one of them NaN
        engine.push('audio', frame, stamp_s=i * 0.1, converter=convert, received_s=i * 0.1)
    engine.push('camera', camera_array(), stamp_s=1.1, received_s=1.1)
    result = engine.infer(1.2, ALL, 1.0)
    assert result.modalities_used == ('camera',) and np.isfinite(result.scores).all()
    assert engine.errors == {'audio': 12}
    assert 'AudioFrame.data holds 1 non-finite F32LE samples of 800' in engine.last_error['audio']


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_non_finite_array_inputs_are_counted_not_predicted(trained, value):
    engine = make_engine(trained)
    audio = np.zeros(engine.pre.audio_samples, np.float32)
    audio[5] = value
    engine.push('audio', audio, stamp_s=1.0, received_s=1.0)
    engine.push('camera', camera_array(), stamp_s=1.0, received_s=1.0)
    engine.push('lidar', lidar_array(), stamp_s=float('nan'), received_s=1.0)
    result = engine.infer(1.1, ALL, 1.0)
    assert result.modalities_used == ('camera',)
    assert engine.errors == {'audio': 1, 'lidar': 1}
    assert engine.last_error['audio'] == (f'DataError: audio samples has 1 non-finite values of '
                                          f'{engine.pre.audio_samples}, expected finite values')
    assert engine.last_error['lidar'] == 'ConversionError: lidar stamp_s is nan, expected a finite time [s]'


def test_checkpoint_with_nan_weights_gives_an_inference_error_not_a_nan_prediction(trained):
    import copy
    model, gate = trained
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(float('nan'))
    engine = PerceptionEngine(broken, gate.scores, EngineConfig())
    push_all(engine, 1.0)
    assert engine.infer(1.1, ALL, 1.0) is None
    assert engine.errors == {'inference': 1}
    assert engine.last_error['inference'].startswith(
        'ModelError: sub-network camera+lidar+audio@1.00 gave non-finite scores [nan')
    assert "are the checkpoint's weights finite?" in engine.last_error['inference']


def test_an_exception_in_the_forward_pass_is_counted_and_infer_returns_none(trained):
    engine = make_engine(trained)
    push_all(engine, 1.0)
    sub = engine.cache.get(ALL, 1.0)

    def broken_forward(_inputs):
        raise RuntimeError('CUDA error: an illegal memory access was encountered')
    sub.model.forward = broken_forward
    assert engine.infer(1.1, ALL, 1.0) is None
    assert engine.errors == {'inference': 1}
    assert engine.last_error['inference'] == 'RuntimeError: CUDA error: an illegal memory access was encountered'
    del sub.model.forward
    assert engine.infer(1.2, ALL, 1.0).modalities_used == ALL


def test_engine_weight_storage_does_not_grow_with_the_levels_used(trained):
    """One copy of the weights: sub-networks share the dense model's tensors, and the gathered
    linears of pruned units are kept only within max_cache_mb, however many levels are used."""
    cap_mb = 0.25
    engine = make_engine(trained, budget_levels=(1.0, 0.85, 0.7, 0.5, 0.4), max_cache_mb=cap_mb)
    storage, t = [], 1.0
    lives = [('camera',), ('lidar',), ('audio',), ('camera', 'lidar'), ('camera', 'audio'), ('lidar', 'audio'), ALL]
    for live in lives:
        for budget in (1.0, 0.85, 0.7, 0.5, 0.4):
            t += 0.01
            push_all(engine, t)
            assert engine.infer(t + 0.001, live, budget).modalities_used == live
            storage.append(engine.cache.storage_bytes())
    assert engine.cache.stats['builds'] == 35 and engine.cache.stats['evictions'] > 0
    assert max(storage) <= cap_mb * 2 ** 20
    dense = engine.cache.model
    sub = engine.cache.get(ALL, 0.5).model
    assert sub.tokenizers['camera'].proj.weight is dense.tokenizers['camera'].proj.weight


def test_max_cache_mb_is_validated():
    with pytest.raises(ConfigError, match=r'max_cache_mb=-1.0: expected a size >= 0'):
        EngineConfig(max_cache_mb=-1.0)
