"""Cost measurements: FLOPs (torch.utils.flop_counter), parameters, latency and peak memory.

FLOPs count 2 per multiply-accumulate of matmuls, convolutions and attention (what flop_counter
counts); norms, activations, softmax and the FFT are not counted. On CPU,
``scaled_dot_product_attention`` dispatches to ``_scaled_dot_product_flash_attention_for_cpu``, which
torch's flop table lacks, so it is added here with torch's own SDPA formula.
"""
import contextlib
import os
import sys
import statistics
import time
from typing import Dict

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

_aten = torch.ops.aten


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    mapping = {}
    op = getattr(_aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    if op is not None:
        mapping[op] = _cpu_sdpa_flop
    return mapping


def count_flops(model: nn.Module, inputs: Dict[str, Tensor], **kwargs) -> int:
    """Forward FLOPs of ``model(inputs, **kwargs)`` (no grad), all batch items together.

    Args:
        model: any module called as ``model(inputs, **kwargs)``.
        inputs: the model's input dict.
        kwargs: extra forward arguments (e.g. ``gates``).
    """
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        model(inputs, **kwargs)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def measure_latency_ms(model: nn.Module, inputs: Dict[str, Tensor], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one forward pass [ms] (no grad; CUDA synchronized around each call).

    Args:
        model: the module (in the mode the caller wants, usually eval()).
        inputs: the input dict, already on the model's device.
        repeats: timed calls.
        warmup: untimed calls first.
    """
    device = _device_of(model)
    times = []
    with torch.no_grad():
        for i in range(warmup + max(1, repeats)):
            _sync(device)
            start = time.perf_counter()
            model(inputs)
            _sync(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(times))


def peak_memory_mb(model: nn.Module, inputs: Dict[str, Tensor]) -> float:
    """Peak memory of one no-grad forward pass [MiB]: this model's weights + buffers + the forward's
    allocation peak above what was allocated when it started (inputs and other models not counted).

    CUDA: ``torch.cuda.max_memory_allocated`` during the call minus ``memory_allocated`` before it.
    CPU: the torch profiler's allocation records (``profile_memory=True``) replayed in time order
    (tracemalloc cannot see torch's allocator, and ru_maxrss cannot be reset). Same definition on
    both, so CPU and CUDA figures and dense vs sliced ratios are comparable.
    """
    device = _device_of(model)
    resident = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            model(inputs)
        torch.cuda.synchronize(device)
        return (resident + torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
    return (resident + _cpu_forward_peak_bytes(model, inputs)) / 2 ** 20


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence file descriptor 2 (the profiler's native USDT start/stop lines) for the block."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture or no real stderr
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _cpu_forward_peak_bytes(model: nn.Module, inputs: Dict[str, Tensor]) -> int:
    import warnings  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile
    with torch.no_grad(), warnings.catch_warnings(), _native_stderr_silenced():
        warnings.simplefilter('ignore', UserWarning)  # torch >= 2.11 asks for acc_events=True
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(inputs)
    deltas = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:  # allocations nested inside ops are only visible in the event tree
        node = stack.pop()
        size = getattr(node.extra_fields, 'alloc_size', None)
        if size is not None:
            deltas.append((node.start_time_ns, int(size)))
        stack.extend(node.children)
    live = peak = 0
    for _, delta in sorted(deltas, key=lambda d: d[0]):
        live += delta
        peak = max(peak, live)
    return int(peak)
