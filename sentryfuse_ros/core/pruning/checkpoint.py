"""Checkpoints: one file that alone rebuilds the model (config + weights + caller's extras).

Format (a dict saved with torch.save, read back with ``weights_only=True``, so only tensors and plain
dicts/lists/str/numbers are allowed inside):
    {'format': 'sentryfuse-checkpoint', 'version': 1, 'config': to_dict(SentryFuseConfig),
     'state_dict': {...}, 'kept_units': [[groups], [ffn blocks]] per block (only for a sliced model),
     **extra}   # e.g. gate tables, training metadata
"""
import pathlib
from typing import Any, Dict, Tuple, Union

import torch

from sentryfuse_ros.core.config import from_dict
from sentryfuse_ros.core.data.scenes import SceneConfig
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.errors import CheckpointError, ConfigError, ModelError, PruningError
from sentryfuse_ros.core.model.config import config_from_dict, config_to_dict
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
            casts them back to the dtype it is asked for). A weight the cast turns into inf is an error.
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
        raise CheckpointError(f'{path}: weights stored as {dtype} must be finite, but {bad} (out of its range?)')
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


def load_checkpoint(path: Union[str, pathlib.Path], device='cpu',
                    dtype: torch.dtype = torch.float32) -> Tuple[SentryFuseModel, Dict[str, Any]]:
    """Rebuild the model from a checkpoint alone; returns (model in eval mode on ``device``, extra).

    The weights are cast to ``dtype`` (float32, or bfloat16 for a bf16 runtime) whatever they were stored
    as, and checked for finiteness after the cast.

    Raises CheckpointError naming the path and the problem for a missing, corrupt or foreign file, a
    config that does not validate, or weights that do not match the config or are not finite.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {str(path)!r} does not exist or is not a file')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage/pickled-object files
        raise CheckpointError(f'checkpoint {str(path)!r} is corrupt or not a torch file: '
                              f'{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}') from exc
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        found = data.get('format') if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f'checkpoint {str(path)!r} has format marker {found!r}: expected {FORMAT!r}')
    if data.get('version') != VERSION:
        raise CheckpointError(f'checkpoint {str(path)!r} has version {data.get("version")!r}: expected {VERSION}')
    for key in ('config', 'state_dict'):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(f'checkpoint {str(path)!r} lacks a {key!r} mapping')
    try:
        cfg = config_from_dict(data['config'])
    except ConfigError as exc:
        raise CheckpointError(f'checkpoint {str(path)!r} has an invalid config: {exc}') from exc
    model = SentryFuseModel(cfg)
    if 'kept_units' in data:
        try:
            model = model.sliced_copy([(torch.tensor(g, dtype=torch.long), torch.tensor(f, dtype=torch.long))
                                       for g, f in data['kept_units']])
        except (PruningError, ModelError, ValueError, TypeError) as exc:
            raise CheckpointError(f'checkpoint {str(path)!r} has invalid kept_units: {exc}') from exc
    try:
        model.load_state_dict(data['state_dict'], strict=True)
    except RuntimeError as exc:
        first = str(exc).split('\n\t')
        raise CheckpointError(f'checkpoint {str(path)!r}: state_dict does not match its config: '
                              f'{" ".join(s.strip() for s in first[:3])}') from exc
    if dtype not in (torch.float32, torch.bfloat16):
        raise CheckpointError(f'checkpoint {str(path)!r}: dtype={dtype}: expected torch.float32 or torch.bfloat16')
    model = model.to(dtype)
    bad = _non_finite(model.state_dict())
    if bad:
        raise CheckpointError(f'checkpoint {str(path)!r}: weights must be finite, but {bad}')
    extra = {k: v for k, v in data.items() if k not in RESERVED}
    return model.to(device).eval(), extra


def load_sentryfuse(path, device='cpu', dtype: torch.dtype = torch.float32) -> Tuple[SentryFuseModel, SentryGate,
                                                                                     Dict[str, Any]]:
    """Model, SentryGate and metadata from one trained checkpoint (what nodes and benchmarks call).

    Returns:
        (model in eval mode on ``device``, gate on ``device``, meta) where meta holds 'class_names',
        'training' (steps, seed, val accuracy, wall time, command, versions, config) and
        'saliency_ema' (the teacher's state dict).
    """
    model, extra = load_checkpoint(path, device=device, dtype=dtype)
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
