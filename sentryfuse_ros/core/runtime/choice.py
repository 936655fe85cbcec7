"""Which runtime runs the sub-networks: device x precision x backend, checked against this machine.

A :class:`RuntimeChoice` is what the user asked for (node parameters ``device``, ``precision``,
``backend``; CLI flags of the same names). :func:`check_choice` refuses a choice this machine
cannot run with a :class:`RuntimeChoiceError` naming the value and the reason, from a
:class:`Capabilities` record; :meth:`Capabilities.detect` reads the real machine, and tests pass
their own record instead (a CPU without bf16, a machine without CUDA). :func:`resolve_choice`
applies the documented fallback: a refused choice becomes CPU fp32 (same backend when that runs
here, else torch) and the refusal becomes a warning the caller reports.

What runs where:
    backend      device  precision  how
    torch        cpu     fp32       eager fp32
    torch        cpu     bf16       eager bf16 weights/activations (needs native bf16: AVX512-BF16/AMX)
    torch        cuda    fp32|fp16|bf16  eager on the GPU (bf16 where the GPU supports it)
    onnxruntime  cpu     fp32       CPUExecutionProvider on the exported fp32 graphs
    onnxruntime  cuda    fp32       TensorrtExecutionProvider (fp32) or else CUDAExecutionProvider
    onnxruntime  cuda    fp16       TensorrtExecutionProvider with trt_fp16_enable (needs TensorRT)
    onnxruntime  cpu     int8       CPUExecutionProvider on the int8 graphs of `sentryfuse export --precision int8`
    onnxruntime  cuda    int8       TensorrtExecutionProvider with trt_int8_enable on static (QDQ) int8 graphs
The log-mel STFT always runs in fp32 (LogMel casts; the int8 export leaves it unquantized), whatever
the precision. int8 exists only as exported graphs: backend 'torch' refuses it.
"""
import dataclasses
from typing import Optional, Tuple

from sentryfuse_ros.core.config import check
from sentryfuse_ros.core.errors import RuntimeChoiceError

DEVICES = ('cpu', 'cuda')
PRECISIONS = ('fp32', 'bf16', 'fp16', 'int8')
BACKENDS = ('torch', 'onnxruntime')
TENSORRT_EP = 'TensorrtExecutionProvider'
CUDA_EP = 'CUDAExecutionProvider'
CPU_EP = 'CPUExecutionProvider'


@dataclasses.dataclass(frozen=True)
class RuntimeChoice:
    device: str = 'cpu'        # 'cpu' or 'cuda'
    precision: str = 'fp32'    # 'fp32', 'bf16' (CPU with native bf16, or CUDA), 'fp16' (CUDA only) or
                               # 'int8' (backend 'onnxruntime' on an int8 export only)
    backend: str = 'torch'     # 'torch' (eager sub-networks) or 'onnxruntime' (sessions of an export)

    def __post_init__(self):
        check(self.device in DEVICES, 'device', self.device, f'one of {list(DEVICES)}')
        check(self.precision in PRECISIONS, 'precision', self.precision, f'one of {list(PRECISIONS)}')
        check(self.backend in BACKENDS, 'backend', self.backend, f'one of {list(BACKENDS)}')

    def __str__(self) -> str:
        return f'{self.backend} {self.device} {self.precision}'


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What this machine can run (detected, or given by a test)."""
    cuda: bool = False                 # torch sees a CUDA device
    cuda_bf16: bool = False            # that device computes bf16
    cpu_bf16: bool = False             # the CPU has native bf16 (AVX512-BF16 / AMX / Arm BF16)
    torch_cuda_build: str = ''         # torch.version.cuda ('' = torch built without CUDA)
    ort_providers: Tuple[str, ...] = ()  # onnxruntime.get_available_providers(); () = not installed

    @classmethod
    def detect(cls) -> 'Capabilities':
        """Read the real machine: torch's CUDA, the CPU's bf16 support, onnxruntime's providers."""
        import torch  # noqa: PLC0415
        cuda = bool(torch.cuda.is_available())
        return cls(cuda=cuda, cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()),
                   cpu_bf16=detect_cpu_bf16(), torch_cuda_build=torch.version.cuda or '',
                   ort_providers=detect_ort_providers())


def detect_cpu_bf16() -> bool:
    """True when oneDNN reports native bf16 on this CPU (AVX512-BF16, AMX; BF16 on Arm)."""
    import torch  # noqa: PLC0415
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # torch without oneDNN or without the probe
        return False


def detect_ort_providers() -> Tuple[str, ...]:
    """onnxruntime's execution providers, () when onnxruntime is not installed."""
    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError:
        return ()
    return tuple(onnxruntime.get_available_providers())


def check_choice(choice: RuntimeChoice, caps: Capabilities) -> None:
    """Raise RuntimeChoiceError naming the value when ``caps`` cannot run ``choice``."""
    if choice.device == 'cuda' and not caps.cuda:
        why = (f'torch (built with CUDA {caps.torch_cuda_build}) sees no CUDA device' if caps.torch_cuda_build
               else 'torch here is built without CUDA')
        raise RuntimeChoiceError(f"device='cuda': {why}; expected device='cpu' on this machine")
    if choice.precision == 'int8' and choice.backend != 'onnxruntime':
        raise RuntimeChoiceError(f"precision='int8' with backend={choice.backend!r}: int8 sub-networks are the "
                                 "quantized graphs of `sentryfuse export --precision int8`; expected "
                                 "backend='onnxruntime' (with onnx_dir of such an export)")
    if choice.precision == 'fp16' and choice.device == 'cpu':
        raise RuntimeChoiceError("precision='fp16' on device='cpu': fp16 runs on CUDA only; "
                                 "expected 'fp32' (or 'bf16' where the CPU has native bf16)")
    if choice.precision == 'bf16' and choice.device == 'cpu' and not caps.cpu_bf16:
        raise RuntimeChoiceError("precision='bf16': this CPU has no native bf16 (no AVX512-BF16/AMX/Arm BF16 "
                                 "reported by oneDNN); expected 'fp32'")
    if choice.precision == 'bf16' and choice.device == 'cuda' and not caps.cuda_bf16:
        raise RuntimeChoiceError("precision='bf16': this GPU does not support bf16; expected 'fp16' or 'fp32'")
    if choice.backend == 'onnxruntime':
        if not caps.ort_providers:
            raise RuntimeChoiceError("backend='onnxruntime': onnxruntime is not installed "
                                     "(pip install -r requirements-py.txt); expected backend='torch'")
        if choice.precision == 'bf16':
            raise RuntimeChoiceError("precision='bf16' with backend='onnxruntime': the exported graphs are fp32 "
                                     "or int8; expected 'fp32', 'int8' (or 'fp16' through TensorRT on CUDA)")
        if choice.device == 'cuda' and not ({CUDA_EP, TENSORRT_EP} & set(caps.ort_providers)):
            raise RuntimeChoiceError(f"device='cuda' with backend='onnxruntime': onnxruntime has providers "
                                     f"{list(caps.ort_providers)}; expected {TENSORRT_EP} or {CUDA_EP} "
                                     '(install onnxruntime-gpu)')
        if choice.precision == 'fp16' and TENSORRT_EP not in caps.ort_providers:
            raise RuntimeChoiceError(f"precision='fp16' with backend='onnxruntime' needs {TENSORRT_EP} "
                                     f"(trt_fp16_enable); onnxruntime has {list(caps.ort_providers)}")
        if choice.precision == 'int8' and choice.device == 'cuda' and TENSORRT_EP not in caps.ort_providers:
            raise RuntimeChoiceError(f"precision='int8' on device='cuda' needs {TENSORRT_EP} (trt_int8_enable on "
                                     f"a static QDQ export); onnxruntime has {list(caps.ort_providers)}")


def resolve_choice(choice: RuntimeChoice, caps: Capabilities, *, fallback: bool) -> Tuple[RuntimeChoice, str]:
    """The choice to run and a warning ('' when the choice runs as asked).

    Args:
        choice: what was asked for.
        caps: what the machine can do.
        fallback: False: a refused choice raises RuntimeChoiceError. True: it falls back to
            CPU fp32 with the same backend (torch when that backend cannot run either), and the
            warning says what was refused and what runs instead.
    """
    try:
        check_choice(choice, caps)
        return choice, ''
    except RuntimeChoiceError as exc:
        if not fallback:
            raise
        refused = str(exc)
    for backend in dict.fromkeys((choice.backend, 'torch')):
        candidate = RuntimeChoice(device='cpu', precision='fp32', backend=backend)
        try:
            check_choice(candidate, caps)
        except RuntimeChoiceError:
            continue
        return candidate, f'{refused}; falling back to {candidate}'
    raise RuntimeChoiceError(f'{refused}; and the fallback cpu fp32 cannot run either')  # torch cpu fp32 always runs


def ort_providers_for(choice: RuntimeChoice, caps: Capabilities, cache_dir: Optional[str] = None) -> list:
    """onnxruntime providers (with options) for a checked onnxruntime choice, best first."""
    if choice.device == 'cpu':
        return [CPU_EP]
    out = []
    if TENSORRT_EP in caps.ort_providers:
        options = {'trt_fp16_enable': choice.precision == 'fp16'}
        if choice.precision == 'int8':   # explicit quantization: TensorRT honours the QDQ nodes of the graph
            options['trt_int8_enable'] = True
        if cache_dir:
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=cache_dir)
        out.append((TENSORRT_EP, options))
    if choice.precision == 'fp32' and CUDA_EP in caps.ort_providers:
        out.append(CUDA_EP)
    return out + [CPU_EP]
