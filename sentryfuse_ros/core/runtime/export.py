"""ONNX export of the zero-shot sub-networks, one file per (live subset, budget level), plus a manifest.

The segment layout of SentryAttend (which tokens attend to which) and the sliced widths are baked
into each traced graph, so every (subset, budget) sub-network is its own ONNX file. Export uses
``torch.onnx.export(..., dynamo=True)`` (the legacy TorchScript exporter fails on the complex STFT of
the log-mel front end). Every graph is run in onnxruntime on sample inputs and compared with torch
before it is written; a difference above ``atol`` is an ExportError and nothing is written for it.

With ``precision='int8'`` each fp32 graph is then quantized and checked against itself on
held-out samples (``quantize.py``); only the int8 graphs are written. Graphs are staged in a hidden
folder inside ``out`` and moved in, then the manifest is written: a failure leaves no new graph and
no manifest (an older export in ``out`` stays whole).

Folder layout (``out``):
    manifest.json                      what the runtime needs, see MANIFEST_FORMAT below
    camera+lidar+audio@1.00.onnx       one fp32 graph per sub-network, batch 1, inputs named after
    ...                                the modalities (canonical order), output 'logits' (1, K)
    camera+lidar+audio@1.00.int8.onnx  (precision int8) the int8 graph instead, same inputs/outputs

Shapes (inputs of a graph, batch 1):
    camera (1, 3, S, S) float32, lidar (1, 3, G, G) float32, audio (1, A) float32 -> logits (1, K)
"""
import contextlib
import dataclasses
import hashlib
import json
import logging
import pathlib
import shutil
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from sentryfuse_ros.core.config import to_dict
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig
from sentryfuse_ros.core.errors import ExportError
from sentryfuse_ros.core.limits import DEFAULT_LIMITS, ReadLimits
from sentryfuse_ros.core.runtime import manifest_check
from sentryfuse_ros.core.pruning.gate import modality_subsets
from sentryfuse_ros.core.pruning.prune import SubnetworkCache, Subnetwork
from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
from sentryfuse_ros.core.pruning.budget import BUDGET_LEVELS
from sentryfuse_ros.core.runtime.quantize import Int8Check, QuantizeConfig, SampleSource, check_int8, quantize_graph

MANIFEST = 'manifest.json'
MANIFEST_FORMAT = 'sentryfuse-onnx'
MANIFEST_VERSION = 1
DEFAULT_BUDGETS = BUDGET_LEVELS  # the perception node's default budget_levels
OUTPUT = 'logits'
EXPORT_PRECISIONS = ('fp32', 'int8')


@dataclasses.dataclass(frozen=True)
class ExportedSubnetwork:
    """One ONNX graph of the manifest."""
    key: str                                   # e.g. 'camera+lidar@0.50' (as Subnetwork.key)
    subset: Tuple[str, ...]                    # live modalities, canonical order = graph input order
    budget: float                              # budget level it was sliced for
    file: str                                  # file name inside the export folder
    gflops: float                              # forward GFLOPs at batch 1 (as Subnetwork.gflops)
    params: int                                # parameter elements of the sliced model
    inputs: Tuple[Tuple[str, Tuple[int, ...]], ...]  # (name, shape) per graph input, float32
    max_abs_diff: float                        # worst |onnxruntime fp32 - torch| over the check samples
    precision: str = 'fp32'                    # 'fp32' or 'int8' (the graph's weights)
    bytes: int = 0                             # size of the graph file
    fp32_bytes: int = 0                        # size of its fp32 graph (int8: the one it was quantized from)
    check: Optional[Int8Check] = None          # int8: the check against the fp32 graph on held-out samples


@dataclasses.dataclass(frozen=True)
class Manifest:
    """An export folder, read back and checked (see :func:`load_manifest`)."""
    folder: pathlib.Path
    checkpoint: str                            # path it was exported from
    checkpoint_sha256: str
    class_names: Tuple[str, ...]
    modalities: Tuple[str, ...]
    preprocess: PreprocessConfig               # what the inputs must be preprocessed with
    subnetworks: Tuple[ExportedSubnetwork, ...]
    precision: str = 'fp32'                    # of every graph: 'fp32' or 'int8'
    quantization: Optional[str] = None         # int8: 'dynamic' or 'static' (QDQ)

    def budgets(self, subset: Sequence[str]) -> Tuple[float, ...]:
        """Budget levels exported for ``subset``, highest first."""
        subset = tuple(subset)
        return tuple(sorted({s.budget for s in self.subnetworks if s.subset == subset}, reverse=True))


class PositionalSubnetwork(nn.Module):
    """``model({m: x_m})`` as ``forward(*x)`` in the order of ``live`` (ONNX graphs take positional inputs).

    Args:
        model: a (sliced) SentryFuseModel.
        live: the modalities, canonical order.
    """

    def __init__(self, model: nn.Module, live: Sequence[str]):
        super().__init__()
        self.model = model
        self.live = tuple(live)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(dict(zip(self.live, inputs)))  # (1, K)


def file_sha256(path: Union[str, pathlib.Path]) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def sample_inputs(sub: Subnetwork, samples: int) -> list:
    """``samples`` seeded random input dicts (batch 1) for the equivalence check."""
    out = []
    for i in range(samples):
        gen = torch.Generator().manual_seed(1000 + i)
        out.append(sub.model.example_inputs(sub.live, generator=gen))
    return out


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter warns about absent torchvision ops and prints its progress: not ours to show."""
    logger = logging.getLogger('torch.onnx')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter('ignore')
            yield
    finally:
        logger.setLevel(level)


def ort_session(path: Union[str, pathlib.Path], providers: Sequence = ('CPUExecutionProvider',), threads: int = 1):
    """An onnxruntime session with ``threads`` intra-op threads and only errors logged."""
    import onnxruntime as ort  # noqa: PLC0415
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime's pybind errors (InvalidProtobuf, NoSuchFile, Fail, ...)
        raise ExportError(f'onnxruntime cannot load {str(path)!r}: {type(exc).__name__}: '
                          f'{str(exc).splitlines()[0] if str(exc) else ""}') from exc


def _opset_of(path: pathlib.Path) -> int:
    import onnx  # noqa: PLC0415
    model = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')))


def export_subnetwork(sub: Subnetwork, path: pathlib.Path, *, samples: int = 3, atol: float = 1e-4,
                      optimize: bool = True, opset: Optional[int] = None) -> ExportedSubnetwork:
    """Export one sub-network to ``path`` (written only after it matches torch within ``atol``).

    Args:
        sub: a sub-network from SubnetworkCache (fp32, CPU).
        path: the .onnx file to write.
        samples: random sample inputs compared between torch and onnxruntime.
        atol: largest allowed max |logits difference|.
        optimize: run the exporter's graph optimizer (constant folding, fusions).
        opset: ONNX opset (None: the exporter's default, 20 with torch 2.13; 18 for older TensorRT parsers).
    """
    model = PositionalSubnetwork(sub.model.float().cpu().eval(), sub.live).eval()
    examples = sample_inputs(sub, samples)
    tmp = path.with_name(path.name + '.partial')
    try:
        with _quiet_exporter():
            program = torch.onnx.export(model, tuple(examples[0][m] for m in sub.live), dynamo=True,
                                        input_names=list(sub.live), output_names=[OUTPUT], optimize=optimize,
                                        opset_version=opset, verbose=False)
            program.save(str(tmp), external_data=False)
    except Exception as exc:  # the exporter raises many types (torch._dynamo, onnxscript, ...)
        tmp.unlink(missing_ok=True)
        raise ExportError(f'{sub.key}: torch.onnx.export failed: {type(exc).__name__}: '
                          f'{str(exc).splitlines()[0] if str(exc) else ""}') from exc
    if opset is not None and _opset_of(tmp) != opset:
        found = _opset_of(tmp)
        tmp.unlink(missing_ok=True)
        raise ExportError(f'{sub.key}: torch.onnx.export wrote opset {found}, not the requested {opset} '
                          '(the dynamo exporter cannot convert every op down; expected an opset >= 18)')
    session = ort_session(tmp)
    worst = 0.0
    with torch.inference_mode():
        for x in examples:
            ref = model(*(x[m] for m in sub.live)).numpy()                             # (1, K)
            got = session.run([OUTPUT], {m: x[m].numpy() for m in sub.live})[0]     # (1, K)
            if got.shape != ref.shape:
                tmp.unlink(missing_ok=True)
                raise ExportError(f'{sub.key}: onnxruntime logits shape {got.shape}: expected {ref.shape} like torch')
            worst = max(worst, float(np.abs(got - ref).max()))
    if not worst <= atol:
        tmp.unlink(missing_ok=True)
        raise ExportError(f'{sub.key}: onnxruntime differs from torch by max |diff| = {worst:.3g}: '
                          f'expected <= {atol:g}; not written')
    tmp.replace(path)
    inputs = tuple((m, tuple(int(d) for d in examples[0][m].shape)) for m in sub.live)
    return ExportedSubnetwork(key=sub.key, subset=tuple(sub.live), budget=float(sub.budget), file=path.name,
                              gflops=float(sub.gflops), params=int(sub.params), inputs=inputs,
                              max_abs_diff=worst)


def parse_subsets(names: Optional[Sequence[str]], modalities: Sequence[str]) -> Tuple[Tuple[str, ...], ...]:
    """'camera+lidar' style names -> canonical subsets; None -> every non-empty subset of ``modalities``."""
    if not names:
        return modality_subsets(modalities)
    out = []
    for name in names:
        parts = tuple(p for p in str(name).split('+') if p)
        unknown = [p for p in parts if p not in modalities]
        if not parts or unknown or len(set(parts)) != len(parts):
            raise ExportError(f'subset {name!r}: expected distinct modalities of {list(modalities)} joined by '
                              "'+', e.g. 'camera+lidar'")
        out.append(tuple(m for m in MODALITIES if m in parts))
    return tuple(dict.fromkeys(out))


def export_checkpoint(checkpoint: Union[str, pathlib.Path], out: Union[str, pathlib.Path], *,
                      budgets: Sequence[float] = DEFAULT_BUDGETS, subsets: Optional[Sequence[str]] = None,
                      samples: int = 3, atol: float = 1e-4, opset: Optional[int] = None, precision: str = 'fp32',
                      quantize: Optional[QuantizeConfig] = None,
                      log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Export every (subset, budget) sub-network of a trained checkpoint; returns the manifest dict.

    Everything is written to ``out/.export.partial`` first and moved into ``out`` when all graphs and the
    manifest are written: a failure (a full disk, a graph that differs from torch) leaves ``out`` as it was.

    Args:
        checkpoint: written by ``sentryfuse train``.
        out: output folder (created; existing .onnx files of the same names are replaced).
        budgets: budget levels (fractions of the live set's dense forward FLOPs, checked by the caller).
        subsets: 'camera+lidar' style names; None = every non-empty subset of the model's modalities.
        samples: sample inputs per graph for the torch check.
        atol: allowed max |logits difference| between onnxruntime and torch.
        opset: ONNX opset (None: the exporter's default).
        precision: 'fp32' or 'int8' (each fp32 graph quantized and checked, see quantize.py).
        quantize: how int8 graphs are made and checked (None: QuantizeConfig() defaults).
        log: progress lines.
    """
    log = log or (lambda s: None)
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f'precision={precision!r}: expected one of {list(EXPORT_PRECISIONS)}')
    quantize = (quantize or QuantizeConfig()) if precision == 'int8' else None
    checkpoint = pathlib.Path(checkpoint)
    model, gate, meta = load_sentryfuse(checkpoint, device='cpu')
    chosen = parse_subsets(subsets, model.modalities)
    source = SampleSource(checkpoint, meta, model, quantize) if quantize else None
    cache = SubnetworkCache(model, gate.scores, budget_levels=budgets, device='cpu')
    out = pathlib.Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix='.staging-', dir=out))
    except OSError as exc:
        raise _write_error(out, exc) from None
    try:
        entries = []
        for live in chosen:
            for level in cache.levels:
                t0 = time.perf_counter()
                sub = cache.get(live, level)
                entry = export_subnetwork(sub, staging / f'{sub.key}.onnx', samples=samples, atol=atol, opset=opset)
                entry = dataclasses.replace(entry, bytes=(staging / entry.file).stat().st_size,
                                            fp32_bytes=(staging / entry.file).stat().st_size)
                if quantize is not None:
                    entry = _int8_subnetwork(entry, staging, quantize, source)
                entries.append(entry)
                log(_entry_line(entry, time.perf_counter() - t0))
        manifest = _manifest_dict(checkpoint, model, entries, atol=atol, samples=samples, quantize=quantize,
                                  opset=_opset_of(staging / entries[0].file))
        # the manifest is written while everything is staged: a full disk fails here, leaving ``out`` as it
        # was; the moves below are renames in one folder, which need no space
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + '\n', encoding='utf-8')
        (out / MANIFEST).unlink(missing_ok=True)  # an interrupted move below leaves no stale manifest
        for entry in entries:
            (staging / entry.file).replace(out / entry.file)
        (staging / MANIFEST).replace(out / MANIFEST)
    except OSError as exc:  # a read-only folder, a full disk: one error naming the folder
        raise _write_error(out, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _write_error(out: pathlib.Path, exc: OSError) -> ExportError:
    return ExportError(f'cannot write the export to {str(out)!r}: {exc.strerror or exc} ({exc.filename or out}); '
                       'expected a writable folder with room for the graphs')


def _int8_subnetwork(entry: ExportedSubnetwork, staging: pathlib.Path, config: QuantizeConfig,
                     source: SampleSource) -> ExportedSubnetwork:
    """Quantize the staged fp32 graph of ``entry``, check it, and return the int8 entry (fp32 graph removed)."""
    fp32 = staging / entry.file
    int8 = staging / f'{entry.key}.int8.onnx'
    calibration = source.draw(entry.subset, 'calibration')[0] if config.quantization == 'static' else None
    quantize_graph(fp32, int8, config, calibration)
    samples, labels, where = source.draw(entry.subset, 'check')
    result = check_int8(entry.key, ort_session(fp32), ort_session(int8), samples, labels, where, config)
    fp32.unlink()
    return dataclasses.replace(entry, file=int8.name, precision='int8', bytes=int8.stat().st_size, check=result)


def _entry_line(entry: ExportedSubnetwork, seconds: float) -> str:
    line = f'{entry.key}: {entry.gflops:.4f} GFLOPs, max |ort - torch| {entry.max_abs_diff:.2e}'
    if entry.check is not None:
        c = entry.check
        line += (f'; int8 {entry.bytes / entry.fp32_bytes:.2f}x the fp32 size, accuracy {c.fp32_accuracy:.3f} -> '
                 f'{c.accuracy:.3f} ({c.delta_points:+.2f} points, agreement {c.agreement:.3f}, max |dlogit| '
                 f'{c.max_abs_logit_diff:.2e}, {c.n} held-out)')
    return f'{line}, {seconds:.1f} s'


def _manifest_dict(checkpoint: pathlib.Path, model, entries: Sequence[ExportedSubnetwork], *, atol: float,
                   samples: int, quantize: Optional[QuantizeConfig], opset: int) -> Dict[str, Any]:
    import onnxruntime  # noqa: PLC0415
    return {
        'format': MANIFEST_FORMAT, 'version': MANIFEST_VERSION,
        'checkpoint': str(checkpoint), 'checkpoint_sha256': file_sha256(checkpoint),
        'class_names': list(model.config.class_names), 'modalities': list(model.modalities),
        'preprocess': to_dict(model.config.preprocess), 'model': to_dict(model.config.model),
        'output': OUTPUT, 'dtype': 'float32', 'batch': 1, 'atol': atol, 'check_samples': samples,
        'precision': 'int8' if quantize else 'fp32', 'quantization': quantize.record() if quantize else None,
        'opset': opset,
        'exported_with': {'torch': str(torch.__version__), 'onnxruntime': onnxruntime.__version__},
        'subnetworks': [dict(dataclasses.asdict(e), subset=list(e.subset),
                             inputs=[{'name': n, 'shape': list(s), 'dtype': 'float32'} for n, s in e.inputs])
                        for e in entries],
    }


def _precision_fields(entry: Dict[str, Any], i: int) -> Dict[str, Any]:
    """The optional precision fields of ``subnetworks[i]`` (int8 exports), validated."""
    where = f'subnetworks[{i}]'
    precision = entry.get('precision', 'fp32')
    if precision not in EXPORT_PRECISIONS:
        raise manifest_check.ManifestFieldError(f'{where}.precision={precision!r}: expected one of '
                                                f'{list(EXPORT_PRECISIONS)}')
    check = entry.get('check')
    try:
        check = None if check is None else Int8Check(**check)
    except TypeError as exc:
        raise manifest_check.ManifestFieldError(f'{where}.check: {exc}') from None
    sizes = {k: manifest_check.number(entry.get(k, 0), f'{where}.{k}', 0, 10 ** 12, integer=True)
             for k in ('bytes', 'fp32_bytes')}
    return {'precision': precision, 'check': check, **sizes}


def load_manifest(folder: Union[str, pathlib.Path], limits: ReadLimits = DEFAULT_LIMITS) -> Manifest:
    """Read and check ``folder/manifest.json`` field by field (core/runtime/manifest_check.py); ExportError
    naming the manifest, the field and the value. Fields it does not know are allowed (optional additions)."""
    folder = pathlib.Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ExportError(f'export folder {str(folder)!r} has no {MANIFEST}; expected the output of `sentryfuse export`')
    if path.stat().st_size > limits.max_manifest_bytes:
        raise ExportError(f'{str(path)!r} is {path.stat().st_size} bytes: expected at most {limits.max_manifest_bytes}')
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise ExportError(f'{str(path)!r} is not readable JSON: {exc}') from exc
    if not isinstance(data, dict) or data.get('format') != MANIFEST_FORMAT:
        found = data.get('format') if isinstance(data, dict) else type(data).__name__
        raise ExportError(f'{str(path)!r} has format {found!r}: expected {MANIFEST_FORMAT!r}')
    if data.get('version') != MANIFEST_VERSION:
        raise ExportError(f'{str(path)!r} has version {data.get("version")!r}: expected {MANIFEST_VERSION}')
    try:
        top = manifest_check.check_top(data, limits)
        subs = manifest_check.check_subnetworks(data, top, folder, limits)
        entries = tuple(ExportedSubnetwork(**sub, **_precision_fields(raw, i))
                        for i, (sub, raw) in enumerate(zip(subs, data['subnetworks'])))
        precision = data.get('precision', 'fp32')
        quantization = data.get('quantization')
        manifest = Manifest(folder=folder, subnetworks=entries, precision=precision,
                            quantization=quantization.get('quantization') if isinstance(quantization, dict) else None,
                            **top)
    except manifest_check.ManifestFieldError as exc:
        raise ExportError(f'{str(path)!r}: {exc}') from None
    mixed = sorted({s.precision for s in manifest.subnetworks} - {manifest.precision})
    if manifest.precision not in EXPORT_PRECISIONS or mixed:
        raise ExportError(f'{str(path)!r} has precision {manifest.precision!r} with graphs of precision '
                          f'{mixed or [manifest.precision]}: expected one of {list(EXPORT_PRECISIONS)} for all')
    missing = [s.file for s in manifest.subnetworks if not (folder / s.file).is_file()]
    if missing:
        raise ExportError(f'export folder {str(folder)!r} lacks {missing} named in its manifest')
    return manifest
