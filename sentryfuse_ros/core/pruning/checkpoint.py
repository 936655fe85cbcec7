"""Checkpoints: one file that alone rebuilds the model (config + weights + caller's extras).

Format (a dict saved with torch.save, read back with ``weights_only=True``, so only tensors and plain
dicts/lists/str/numbers are allowed inside):
    {'format': 'sentryfuse-checkpoint', 'version': 1, 'config': to_dict(SentryFuseConfig),
     'state_dict': {...}, 'kept_units': [[groups], [ffn blocks]] per block (only for a sliced model),
     **extra}   # e.g. gate tables, training metadata
"""
import math
import pathlib
import re
import zipfile
from typing import Any, Dict, Tuple, Union

import torch

from sentryfuse_ros.core.config import from_dict
from sentryfuse_ros.core.data.scenes import SceneConfig
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.errors import CheckpointError, ConfigError, ModelError, PruningError
from sentryfuse_ros.core.limits import DEFAULT_LIMITS, ReadLimits
from sentryfuse_ros.core.model.config import SentryFuseConfig, check_config_limits, config_from_dict, config_to_dict
from sentryfuse_ros.core.pruning.gate import SentryGate

FORMAT = 'sentryfuse-checkpoint'
VERSION = 1
RESERVED = ('format', 'version', 'config', 'state_dict', 'kept_units')


STORE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def save_checkpoint(path: Union[str, pathlib.Path], model: SentryFuseModel, extra: Dict[str, Any] = None, *,
                    dtype: torch.dtype = torch.float32) -> None:
    """Write ``model`` (config, weights, slicing if any) and ``extra`` to ``path`` (parents created).

    Args:
        path: output file.
        model: the model; a sliced model also records which units it kept.
        extra: more top-level entries (plain data and tensors only); may not use reserved keys.
        dtype: how the floating weights are stored (float16 halves the file; :func:`load_checkpoint`
            casts them back to the dtype it is asked for). A non-finite weight (a diverged training, or
            one the cast turns into inf) is an error: no checkpoint is written.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED))
    if clash:
        raise CheckpointError(f'{path}: extra keys {clash} are reserved; expected other names')
    if dtype not in STORE_DTYPES:
        raise CheckpointError(f'{path}: dtype={dtype}: expected one of {[str(d) for d in STORE_DTYPES]}')
    state = {k: (v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    bad = _non_finite(state)
    if bad:
        raise CheckpointError(f'{path}: weights stored as {dtype} must be finite, but {bad} (out of its range?); '
                              'not written (a diverged training leaves no checkpoint)')
    data = {'format': FORMAT, 'version': VERSION, 'config': config_to_dict(model.config), 'state_dict': state}
    kept = model.kept_units()
    m = model.config.model
    nf_full = m.ffn_dim // m.ffn_block
    if any(g != list(range(m.kv_heads)) or f != list(range(nf_full)) for g, f in kept):
        data['kept_units'] = [[list(g), list(f)] for g, f in kept]
    data.update(extra)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    torch.save(data, tmp)
    tmp.replace(path)


def _non_finite(tensors: Dict[str, Any]) -> str:
    """'' when every floating tensor is finite, else which ones hold how many NaN/inf values."""
    bad = []
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            count = int(value.numel() - torch.isfinite(value).sum())
            if count:
                bad.append(f'{name} ({count} of {value.numel()})')
    if not bad:
        return ''
    return f'{len(bad)} tensors hold NaN/inf values: {", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}'


def _check_archive(path: pathlib.Path, limits: ReadLimits) -> None:
    """CheckpointError unless ``path`` is a zip archive (torch.save's format) whose records are stored
    uncompressed and add up to at most ``limits.max_checkpoint_bytes``: read before torch allocates them."""
    where = f'checkpoint {str(path)!r}'
    size = path.stat().st_size
    if size > limits.max_checkpoint_bytes:
        raise CheckpointError(f'{where} is {size} bytes: expected at most {limits.max_checkpoint_bytes} (ReadLimits)')
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f'{where} is corrupt or not a torch file: not the zip archive torch.save writes')
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f'{where} is corrupt or not a torch file: {exc}') from exc
    total = sum(r.file_size for r in records)
    packed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise CheckpointError(f'{where} holds compressed records {packed[:3]}: expected the uncompressed records '
                              'torch.save writes (a compressed record can expand to any size)')
    if total > limits.max_checkpoint_bytes or total > size:
        raise CheckpointError(f'{where} declares {total} bytes of records in a {size}-byte file: expected at most '
                              f'min(file size, {limits.max_checkpoint_bytes}) (ReadLimits)')


def _refusal(exc: Exception) -> str:
    """torch.load's error in one line, without its advice to retry with weights_only=False (a refused
    file must stay refused): the unpickler's own reason when there is one."""
    text = str(exc)
    found = re.search(r'WeightsUnpickler error: (.*?)(?: was not an allowed global| Please use|\n|$)', text)
    if found:
        return (f'it holds a Python object other than tensors and plain data ({found.group(1).strip()}); '
                'refused: expected only tensors, dicts, lists, strings and numbers')
    first = text.splitlines()[0] if text else ''
    if 'weights_only' in first or 'Weights only' in first:
        first = 'the restricted unpickler refused its contents'
    return f'{type(exc).__name__}: {first}'


def _read(path: pathlib.Path, limits: ReadLimits) -> Dict[str, Any]:
    """The checkpoint's top-level dict, its format, version and mappings checked."""
    _check_archive(path, limits)
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage/pickled-object files
        raise CheckpointError(f'checkpoint {str(path)!r} is corrupt or not a torch file: {_refusal(exc)}') from None
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        found = data.get('format') if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f'checkpoint {str(path)!r} has format marker {found!r}: expected {FORMAT!r}')
    if data.get('version') != VERSION:
        raise CheckpointError(f'checkpoint {str(path)!r} has version {data.get("version")!r}: expected {VERSION}')
    for key in ('config', 'state_dict'):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(f'checkpoint {str(path)!r} lacks a {key!r} mapping')
    return data


def _kept_units(path: pathlib.Path, data: Dict[str, Any]):
    try:
        return [(torch.tensor(g, dtype=torch.long), torch.tensor(f, dtype=torch.long)) for g, f in data['kept_units']]
    except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f'checkpoint {str(path)!r} has invalid kept_units: {exc}') from exc


def _check_shapes(path: pathlib.Path, data: Dict[str, Any], cfg: SentryFuseConfig, limits: ReadLimits) -> None:
    """The dense state_dict the config builds (on the meta device: no memory) against the tensors stored
    and ``limits.max_params``, before the real model is allocated. A sliced checkpoint (kept_units)
    stores smaller tensors: each may hold at most its dense count; load_state_dict checks them exactly."""
    with torch.device('meta'):
        expected = {k: tuple(v.shape) for k, v in SentryFuseModel(cfg).state_dict().items()}
    n = sum(math.prod(s) for s in expected.values())
    if n > limits.max_params:
        raise CheckpointError(f'checkpoint {str(path)!r}: its config builds {n} parameter elements: expected at most '
                              f'{limits.max_params} (ReadLimits)')
    stored = data['state_dict']
    found = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in stored.items()}
    sliced = 'kept_units' in data
    wrong = [_mismatch(k, found.get(k), s) for k, s in expected.items() if not _fits(k, found.get(k), s, sliced)]
    wrong += [f'Unexpected key {k}' for k in found if k not in expected]
    if wrong:
        raise CheckpointError(f'checkpoint {str(path)!r}: state_dict does not match its config: '
                              f'{len(wrong)} tensors: {"; ".join(wrong[:3])}')


def _fits(key: str, found: Any, expected: Tuple[int, ...], sliced: bool) -> bool:
    """Whether a stored shape can load into ``expected``: equal; or, in a sliced checkpoint, no larger in
    any dimension; position embeddings (``*.pos``, resized on load) may differ in their token count, and
    ``*.pos_grid`` may be absent (state dicts of square grids)."""
    if key.endswith('.pos_grid') and found is None:
        return True
    if not isinstance(found, tuple) or len(found) != len(expected):
        return False
    if key.endswith('.pos'):
        return found[1:] == expected[1:] if not sliced else all(a <= b for a, b in zip(found[1:], expected[1:]))
    return found == expected if not sliced else all(a <= b for a, b in zip(found, expected))


def _mismatch(key: str, found: Any, expected: Tuple[int, ...]) -> str:
    if found is None:
        return f'Missing key {key} (config shape {expected})'
    return f'size mismatch for {key}: stored {found}, config {expected}'


def load_checkpoint(path: Union[str, pathlib.Path], device='cpu', dtype: torch.dtype = torch.float32,
                    limits: ReadLimits = DEFAULT_LIMITS) -> Tuple[SentryFuseModel, Dict[str, Any]]:
    """Rebuild the model from a checkpoint alone; returns (model in eval mode on ``device``, extra).

    The weights are cast to ``dtype`` (float32, or bfloat16 for a bf16 runtime) whatever they were stored
    as, and checked for finiteness after the cast.

    Raises CheckpointError naming the path and the problem for a missing, corrupt or foreign file, a
    config that does not validate or exceeds ``limits``, or weights that do not match the config or
    are not finite. Sizes are checked before anything they declare is allocated.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {str(path)!r} does not exist or is not a file')
    if dtype not in (torch.float32, torch.bfloat16):
        raise CheckpointError(f'checkpoint {str(path)!r}: dtype={dtype}: expected torch.float32 or torch.bfloat16')
    data = _read(path, limits)
    try:
        cfg = config_from_dict(data['config'])
        check_config_limits(cfg, limits)
    except ConfigError as exc:
        raise CheckpointError(f'checkpoint {str(path)!r} has an invalid config: {exc}') from exc
    _check_shapes(path, data, cfg, limits)
    bad = _non_finite(data['state_dict'])
    if bad:
        raise CheckpointError(f'checkpoint {str(path)!r}: weights must be finite, but {bad}')
    model = SentryFuseModel(cfg)
    try:
        if 'kept_units' in data:
            model = model.sliced_copy(_kept_units(path, data))
        model.load_state_dict(data['state_dict'], strict=True)
    except (PruningError, ModelError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f'checkpoint {str(path)!r} has invalid kept_units: {exc}') from exc
    except RuntimeError as exc:
        first = str(exc).split('\n\t')
        raise CheckpointError(f'checkpoint {str(path)!r}: state_dict does not match its config: '
                              f'{" ".join(s.strip() for s in first[:3])}') from exc
    model = model.to(dtype)
    bad = _non_finite(model.state_dict())
    if bad:
        raise CheckpointError(f'checkpoint {str(path)!r}: weights must be finite, but {bad}')
    extra = {k: v for k, v in data.items() if k not in RESERVED}
    return model.to(device).eval(), extra


def load_sentryfuse(path, device='cpu', dtype: torch.dtype = torch.float32,
                    limits: ReadLimits = DEFAULT_LIMITS) -> Tuple[SentryFuseModel, SentryGate, Dict[str, Any]]:
    """Model, SentryGate and metadata from one trained checkpoint (what nodes and benchmarks call).

    Returns:
        (model in eval mode on ``device``, gate on ``device``, meta) where meta holds 'class_names',
        'training' (steps, seed, val accuracy, wall time, command, versions, config) and
        'saliency_ema' (the teacher's state dict).
    """
    model, extra = load_checkpoint(path, device=device, dtype=dtype, limits=limits)
    if 'gate' not in extra:
        raise CheckpointError(f'checkpoint {str(path)!r} has no SentryGate table (key "gate"); expected a '
                              'checkpoint written by `sentryfuse train`')
    gate = SentryGate(modalities=model.modalities, layout=model.unit_layout())
    try:
        gate.load_state_dict(extra['gate'])
    except RuntimeError as exc:
        raise CheckpointError(f'checkpoint {str(path)!r}: gate table does not match the model: '
                              f'{str(exc).splitlines()[0]}') from exc
    bad = _non_finite(gate.state_dict())
    if bad:
        raise CheckpointError(f'checkpoint {str(path)!r}: the SentryGate table must be finite, but {bad}')
    meta = {k: v for k, v in extra.items() if k != 'gate'}
    return model, gate.to(device).eval(), meta


def scene_config_of(meta: Dict[str, Any], path) -> SceneConfig:
    """The SceneConfig the checkpoint was trained on (from its training metadata)."""
    try:
        scene = meta['training']['train_config']['data']['scene']
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f'checkpoint {str(path)!r} has no training.train_config.data.scene; expected a '
                              'checkpoint written by `sentryfuse train`') from exc
    return from_dict(SceneConfig, scene, where='data.scene')


def check_fresh_seed(seed: int, meta: Dict[str, Any], path) -> None:
    """ConfigError when ``seed`` is one of the dataset seeds the checkpoint trained or validated on."""
    data = meta['training']['train_config']['data']
    used = {int(data['seed']), int(data['seed']) + 1}
    if int(seed) in used:
        raise ConfigError(f'--seed={seed}: the checkpoint {str(path)!r} trained/validated on dataset seeds '
                          f'{sorted(used)}; expected another seed for a fresh test set')
