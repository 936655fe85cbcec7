"""Runner sets behind the engine: onnxruntime sessions of an export predict what torch does and switch
like torch sub-networks; bf16 torch runners stay close to fp32."""
import statistics
import time

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
from onnx_export import BUDGETS, export_dir  # noqa: E402

from sentryfuse_ros.core.errors import ExportError, RuntimeChoiceError  # noqa: E402
from sentryfuse_ros.core.runtime.backends import OnnxRunners, TorchRunners  # noqa: E402
from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice  # noqa: E402
from sentryfuse_ros.core.runtime.engine import EngineConfig, PerceptionEngine  # noqa: E402
from sentryfuse_ros.core.runtime.export import export_checkpoint  # noqa: E402

ORT_CPU = RuntimeChoice(backend='onnxruntime')
CAPS = Capabilities(ort_providers=('CPUExecutionProvider',))


@pytest.fixture(scope='module')
def exported(tmp_path_factory, checkpoint):
    return export_dir(tmp_path_factory, checkpoint)


def scene(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)                                  # (H, W, 3)
    points = np.concatenate([rng.uniform(-12, 12, (500, 2)), rng.uniform(-1, 2, (500, 2))], 1).astype(np.float32)
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)         # (A,)
    return image, points, audio


def feed(engine, seed=0):
    image, points, audio = scene(seed)
    engine.push('camera', image, 1.0)
    engine.push('lidar', points, 1.0)
    engine.push('audio', audio, 1.0)


@pytest.mark.slow
def test_engine_on_onnxruntime_predicts_what_torch_predicts(exported, trained):
    model, gate = trained
    torch_engine = PerceptionEngine(model, gate.scores, EngineConfig(budget_levels=BUDGETS))
    ort_engine = PerceptionEngine(None, None, EngineConfig(budget_levels=BUDGETS),
                                  runners=OnnxRunners(exported, ORT_CPU, CAPS))
    assert ort_engine.class_names == torch_engine.class_names and ort_engine.modalities == torch_engine.modalities
    assert ort_engine.prebuild() > 0 and ort_engine.runners.stats['builds'] == 14
    for seed, (live, budget) in enumerate([(None, 1.0), (['camera', 'audio'], 0.5), (['lidar'], 0.6)]):
        for engine in (torch_engine, ort_engine):
            feed(engine, seed)
        a, b = torch_engine.infer(1.1, live, budget), ort_engine.infer(1.1, live, budget)
        assert (a.subnetwork, a.gflops, a.compute_budget) == (b.subnetwork, b.gflops, b.compute_budget)
        assert np.abs(a.scores - b.scores).max() < 1e-5 and a.class_id == b.class_id
    assert ort_engine.runners.stats['builds'] == 14 and ort_engine.switches == 2


@pytest.mark.slow
def test_switching_between_prebuilt_sessions_is_a_lookup(exported):
    runners = OnnxRunners(exported, ORT_CPU, CAPS)
    runners.prebuild()
    keys = [(('camera', 'lidar', 'audio'), 1.0), (('camera', 'lidar', 'audio'), 0.5)]
    times = []
    for i in range(400):
        t0 = time.perf_counter()
        runners.get(*keys[i % 2])
        times.append((time.perf_counter() - t0) * 1e3)
    assert statistics.median(times) < 0.1          # [ms]; the goal is <= 0.1 ms like a torch switch
    assert runners.stats['builds'] == 14


@pytest.mark.slow
def test_a_subset_that_was_not_exported_is_named(tmp_path, checkpoint):
    export_checkpoint(checkpoint, tmp_path, budgets=(1.0,), subsets=['audio'], samples=1)
    runners = OnnxRunners(tmp_path, ORT_CPU, CAPS)
    assert runners.get(['audio'], 0.3).key == 'audio@1.00'   # below the lowest level: the lowest
    with pytest.raises(ExportError, match=r"no exported sub-network for 'camera' .* exported subsets: \['audio'\]"):
        runners.get(['camera'], 1.0)


@pytest.mark.slow
def test_onnx_runners_need_an_onnxruntime_choice(exported):
    with pytest.raises(RuntimeChoiceError, match="backend='torch': expected 'onnxruntime'"):
        OnnxRunners(exported, RuntimeChoice(), CAPS)


def test_bf16_runners_stay_close_to_fp32(checkpoint):
    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
    model, gate, _ = load_sentryfuse(checkpoint)
    fp32 = TorchRunners(model, gate.scores, budget_levels=(1.0,))
    model, gate, _ = load_sentryfuse(checkpoint)
    bf16 = TorchRunners(model, gate.scores, budget_levels=(1.0,), precision='bf16')
    live = ('camera', 'lidar', 'audio')
    a, b = fp32.get(live, 1.0), bf16.get(live, 1.0)
    assert next(b.model.parameters()).dtype == torch.bfloat16 and bf16.input_dtype == torch.bfloat16
    x = fp32.example_inputs(live)
    ref, got = a(x), b({m: v.to(torch.bfloat16) for m, v in x.items()}).float()
    assert got.shape == ref.shape and torch.isfinite(got).all()
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.slow
def test_cuda_sessions_ask_for_tensorrt_with_an_engine_cache_in_the_export(exported):
    import shutil
    jetson = Capabilities(cuda=True, ort_providers=('TensorrtExecutionProvider', 'CUDAExecutionProvider',
                                                    'CPUExecutionProvider'))
    try:   # sessions are created lazily: building the runner set needs no GPU
        fp16 = OnnxRunners(exported, RuntimeChoice(device='cuda', precision='fp16', backend='onnxruntime'), jetson)
        assert fp16.providers == [('TensorrtExecutionProvider', {
            'trt_fp16_enable': True, 'trt_engine_cache_enable': True,
            'trt_engine_cache_path': str(exported / 'trt_cache')}), 'CPUExecutionProvider']
        assert (exported / 'trt_cache').is_dir()
    finally:
        shutil.rmtree(exported / 'trt_cache', ignore_errors=True)
    assert OnnxRunners(exported, ORT_CPU, jetson).providers == ['CPUExecutionProvider']
