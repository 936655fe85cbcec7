"""RuntimeChoice / Capabilities: what a machine can run is refused by name, the fallback is explicit."""
import pytest

from sentryfuse_ros.core.errors import ConfigError, RuntimeChoiceError
from sentryfuse_ros.core.runtime.choice import (CPU_EP, CUDA_EP, TENSORRT_EP, Capabilities, RuntimeChoice,
                                                check_choice, ort_providers_for, resolve_choice)

CPU_ONLY = Capabilities(cuda=False, cpu_bf16=True, torch_cuda_build='', ort_providers=(CPU_EP,))
NO_BF16 = Capabilities(cuda=False, cpu_bf16=False, ort_providers=(CPU_EP,))
JETSON = Capabilities(cuda=True, cuda_bf16=True, cpu_bf16=False, torch_cuda_build='12.6',
                      ort_providers=(TENSORRT_EP, CUDA_EP, CPU_EP))


@pytest.mark.parametrize('field,value', [('device', 'gpu'), ('precision', 'int4'), ('backend', 'tensorrt')])
def test_unknown_values_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=f"{field}={value!r}"):
        RuntimeChoice(**{field: value})


@pytest.mark.parametrize('choice,caps,match', [
    (RuntimeChoice(device='cuda'), CPU_ONLY, "device='cuda': torch here is built without CUDA"),
    (RuntimeChoice(device='cuda'), Capabilities(torch_cuda_build='12.6'),
     r"device='cuda': torch \(built with CUDA 12.6\) sees no CUDA device"),
    (RuntimeChoice(precision='bf16'), NO_BF16, "precision='bf16': this CPU has no native bf16"),
    (RuntimeChoice(precision='fp16'), CPU_ONLY, "precision='fp16' on device='cpu': fp16 runs on CUDA only"),
    (RuntimeChoice(backend='onnxruntime'), Capabilities(), "backend='onnxruntime': onnxruntime is not installed"),
    (RuntimeChoice(backend='onnxruntime', precision='bf16'), CPU_ONLY, "the exported graphs are fp32"),
    (RuntimeChoice(backend='onnxruntime', device='cuda'), Capabilities(cuda=True, ort_providers=(CPU_EP,)),
     "expected TensorrtExecutionProvider or CUDAExecutionProvider"),
    (RuntimeChoice(backend='onnxruntime', device='cuda', precision='fp16'),
     Capabilities(cuda=True, ort_providers=(CUDA_EP, CPU_EP)), "precision='fp16' with backend='onnxruntime' needs"),
    (RuntimeChoice(device='cuda', precision='bf16'), Capabilities(cuda=True), "this GPU does not support bf16"),
    (RuntimeChoice(precision='int8'), CPU_ONLY,
     r"precision='int8' with backend='torch': int8 sub-networks are the quantized graphs of `sentryfuse export"),
    (RuntimeChoice(backend='onnxruntime', device='cuda', precision='int8'),
     Capabilities(cuda=True, ort_providers=(CUDA_EP, CPU_EP)), "precision='int8' on device='cuda' needs Tensorrt"),
])
def test_refusals_name_the_value(choice, caps, match):
    with pytest.raises(RuntimeChoiceError, match=match):
        check_choice(choice, caps)
    with pytest.raises(RuntimeChoiceError, match=match):
        resolve_choice(choice, caps, fallback=False)


@pytest.mark.parametrize('choice', [RuntimeChoice(), RuntimeChoice(precision='bf16'),
                                    RuntimeChoice(backend='onnxruntime'),
                                    RuntimeChoice(backend='onnxruntime', precision='int8')])
def test_what_a_cpu_with_bf16_runs(choice):
    assert resolve_choice(choice, CPU_ONLY, fallback=False) == (choice, '')


@pytest.mark.parametrize('choice', [RuntimeChoice(device='cuda', precision=p, backend=b)
                                    for p in ('fp32', 'fp16', 'bf16', 'int8') for b in ('torch', 'onnxruntime')
                                    if not (p == 'bf16' and b == 'onnxruntime') and not (p == 'int8' and b == 'torch')])
def test_what_a_jetson_runs(choice):
    check_choice(choice, JETSON)


def test_fallback_is_cpu_fp32_with_the_same_backend_when_it_runs():
    choice, warning = resolve_choice(RuntimeChoice(device='cuda', precision='fp16', backend='onnxruntime'),
                                     CPU_ONLY, fallback=True)
    assert choice == RuntimeChoice(device='cpu', precision='fp32', backend='onnxruntime')
    assert warning.startswith("device='cuda': torch here is built without CUDA")
    assert warning.endswith('falling back to onnxruntime cpu fp32')


def test_fallback_to_torch_when_onnxruntime_is_missing():
    choice, warning = resolve_choice(RuntimeChoice(backend='onnxruntime'), Capabilities(), fallback=True)
    assert choice == RuntimeChoice() and 'falling back to torch cpu fp32' in warning


def test_bf16_without_native_support_falls_back_naming_bf16():
    choice, warning = resolve_choice(RuntimeChoice(precision='bf16'), NO_BF16, fallback=True)
    assert choice == RuntimeChoice()
    assert "precision='bf16'" in warning and 'falling back to torch cpu fp32' in warning


def test_providers_best_first():
    assert ort_providers_for(RuntimeChoice(backend='onnxruntime'), JETSON) == [CPU_EP]
    fp16 = ort_providers_for(RuntimeChoice(device='cuda', precision='fp16', backend='onnxruntime'), JETSON, '/c')
    assert fp16 == [(TENSORRT_EP, {'trt_fp16_enable': True, 'trt_engine_cache_enable': True,
                                   'trt_engine_cache_path': '/c'}), CPU_EP]
    fp32 = ort_providers_for(RuntimeChoice(device='cuda', backend='onnxruntime'), JETSON)
    assert fp32 == [(TENSORRT_EP, {'trt_fp16_enable': False}), CUDA_EP, CPU_EP]
    int8 = ort_providers_for(RuntimeChoice(device='cuda', precision='int8', backend='onnxruntime'), JETSON)
    assert int8 == [(TENSORRT_EP, {'trt_fp16_enable': False, 'trt_int8_enable': True}), CPU_EP]


def test_int8_with_backend_torch_falls_back_to_torch_fp32_naming_int8():
    choice, warning = resolve_choice(RuntimeChoice(precision='int8'), CPU_ONLY, fallback=True)
    assert choice == RuntimeChoice()
    assert warning.startswith("precision='int8' with backend='torch'") and warning.endswith('torch cpu fp32')


def test_detect_reads_this_machine():
    import torch
    caps = Capabilities.detect()
    assert caps.cuda == torch.cuda.is_available()
    assert CPU_EP in caps.ort_providers   # onnxruntime is a pinned dependency
