"""The resumable training state: everything a run needs to continue bit-identically after an interruption."""
from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np
import torch

from sentryfuse_ros.core.config import to_dict
from sentryfuse_ros.core.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from sentryfuse_ros.core.training.config import TrainFileConfig


STATE_FORMAT = 'sentryfuse-train-state'


def state_path(out) -> pathlib.Path:
    """The resumable state file kept next to the output checkpoint."""
    out = pathlib.Path(out)
    return out.with_name(out.stem + '.train_state.pt')


def _save_state(path: pathlib.Path, cfg: 'TrainFileConfig', step: int, elapsed: float, model, gate, teacher, opt,
                rng: np.random.Generator, extra: Optional[Dict[str, Any]] = None) -> None:
    """Write the state atomically; ``extra``: more plain data/tensors of the run (balancing heads, monitor rows)."""
    data = {'extra': dict(extra or {}), 'format': STATE_FORMAT, 'config': to_dict(cfg), 'step': step, 'elapsed_s': elapsed,
            'model': model.state_dict(), 'gate': gate.state_dict(), 'teacher': teacher.state_dict(),
            'optimizer': opt.state_dict(), 'numpy_rng': rng.bit_generator.state,
            'torch_rng': torch.get_rng_state()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    torch.save(data, tmp)
    tmp.replace(path)


def _load_state(path: pathlib.Path, cfg: 'TrainFileConfig', model, gate, teacher, opt,
                rng: np.random.Generator) -> Tuple[int, float, Dict[str, Any]]:
    """Load the state into the given objects; (step, elapsed seconds, the ``extra`` it was saved with)."""
    if not path.is_file():
        raise CheckpointError(f'--resume: no training state {str(path)!r}; expected one written by an earlier '
                              'interrupted run with the same --out')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise CheckpointError(f'training state {str(path)!r} is corrupt: {type(exc).__name__}: {exc}') from exc
    if not isinstance(data, dict) or data.get('format') != STATE_FORMAT:
        raise CheckpointError(f'training state {str(path)!r}: expected format {STATE_FORMAT!r}')
    if data['config'] != to_dict(cfg):
        diff = _first_difference(data['config'], to_dict(cfg))
        raise ConfigError(f'--resume: training state {str(path)!r} was made with another config ({diff}); '
                          'expected the same config, seed and steps')
    model.load_state_dict(data['model'])
    gate.load_state_dict(data['gate'])
    teacher.load_state_dict(data['teacher'])
    opt.load_state_dict(data['optimizer'])
    rng.bit_generator.state = data['numpy_rng']
    torch.set_rng_state(data['torch_rng'])
    return int(data['step']), float(data['elapsed_s']), dict(data.get('extra') or {})


def _first_difference(a, b, where: str = '') -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f'{where}.{k}' if where else k)
    return f'{where}: saved {a!r}, now {b!r}'
