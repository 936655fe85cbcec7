"""Bench results files: reading and atomic writing, sharding a grid over processes, merging shard outputs."""
import fnmatch
import gzip
import json
import pathlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sentryfuse_ros.core.bench.spec import VARIANT_OF, BenchConfig, _cells, model_jobs, model_name, p0_cells
from sentryfuse_ros.core.data.preprocess import MODALITIES
from sentryfuse_ros.core.errors import ConfigError, DataError


def cell_key(rec: Dict[str, Any]) -> Tuple:
    """What identifies one cell: model, backbone, dataset, condition, ratio, method, seed, protocol and, for P0's
    SentryGate records, the static model it is matched to."""
    return (rec.get('model', 'sentryfuse'), rec['backbone'], rec['dataset'], rec['condition'],
            round(float(rec['ratio']), 4), rec['method'], int(rec['seed']), rec.get('protocol', 'P1P2'),
            rec.get('matched_to'))


def read_results(path: pathlib.Path) -> Dict[str, Any]:
    """{'meta': ..., 'records': [...]} from a bench JSON, plain or .gz (a bare list of records too)."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == '.gz':
            raw = gzip.decompress(raw)
        data = json.loads(raw.decode('utf-8'))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f'bench results {str(path)!r} are unreadable: {exc}') from exc
    if isinstance(data, list):
        data = {'meta': {}, 'records': data}
    if not isinstance(data, dict) or not isinstance(data.get('records'), list):
        raise DataError(f'bench results {str(path)!r}: expected {{"meta": ..., "records": [...]}}')
    for rec in data['records']:  # older files: every method on the SentryFuse model, masks per live set
        rec.setdefault('model', 'sentryfuse')
        rec.setdefault('protocol', 'P1P2')
    return data


def write_results(path: pathlib.Path, meta: Dict[str, Any], records: List[Dict[str, Any]]) -> None:
    """Atomic write (temporary file + rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps({'meta': meta, 'records': records}, indent=None, separators=(',', ':')) + '\n',
                   encoding='utf-8')
    tmp.replace(path)


def parse_shard(text: str) -> Tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    parts = str(text).split('/')
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not 0 <= int(parts[0]) < int(parts[1]):
        raise ConfigError(f'shard={text!r}: expected I/N with 0 <= I < N, e.g. 3/15')
    return int(parts[0]), int(parts[1])


def _job_weight(cfg: BenchConfig, job: Tuple[str, str, int]) -> float:
    """Rough cost of one grid model: trainings (~100 s each) + cells (~0.2 s; x2 with latency)."""
    n_mods = 2 if job[0] == 'avmnist' else 3
    cells = [c for model in cfg.models for c in _cells(cfg, MODALITIES[:n_mods], job[2], model)]
    trainings = len(cfg.models) + len({VARIANT_OF[m] for _, _, m in cells if m in VARIANT_OF})
    p0 = 2 * len(p0_cells(cfg, MODALITIES[:n_mods])) * (2 ** n_mods - 1)  # static + matched SentryGate per live set
    return 100.0 * trainings + 0.2 * (len(cells) * (2 if job[2] in cfg.latency_seeds else 1) + p0)


def select_jobs(cfg: BenchConfig, *, shard: Optional[Tuple[int, int]] = None,
                models: Sequence[str] = ()) -> List[Tuple[str, str, int]]:
    """The grid models one process runs.

    Args:
        shard: (I, N): the I-th of N disjoint, cost-balanced parts (greedy longest-first on ``_job_weight``;
            every process computes the same assignment from the config alone).
        models: fnmatch patterns on 'dataset/backbone/sSEED' (e.g. 'sim6/*/s0'); empty keeps every model.
    """
    jobs = model_jobs(cfg)
    if models:
        jobs = [j for j in jobs if any(fnmatch.fnmatchcase(model_name(j), p) for p in models)]
        if not jobs:
            raise ConfigError(f'models={list(models)!r}: no grid model matches; names look like '
                              f'{model_name(model_jobs(cfg)[0])!r}')
    if shard is None:
        return jobs
    index, count = shard
    loads, owner = [0.0] * count, {}
    for j in sorted(jobs, key=lambda j: (-_job_weight(cfg, j), model_name(j))):
        k = min(range(count), key=lambda i: (loads[i], i))
        loads[k] += _job_weight(cfg, j)
        owner[j] = k
    return [j for j in jobs if owner[j] == index]


def merge_results(parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One {'meta', 'records'} from several shard outputs of the same grid config.

    Records are concatenated (a cell present in two parts is kept once, the first); meta keeps the first
    part's fields, unions 'models' and 'errors', sets wall_time_s to the slowest part and lists every part's
    shard, wall time and cell count under 'shards'.
    """
    if not parts:
        raise DataError('merge: no bench results given')
    def grid_of(meta):  # where the AV-MNIST files lay is not part of the grid
        cfg = meta.get('config')
        return {k: v for k, v in cfg.items() if k != 'avmnist_root'} if isinstance(cfg, dict) else cfg
    config = grid_of(parts[0].get('meta', {}))
    records, seen, errors, models, shards = [], set(), [], {}, []
    for i, part in enumerate(parts):
        meta = part.get('meta', {})
        if grid_of(meta) != config:
            raise DataError(f'merge: part {i} was run with another grid config than part 0; expected the same '
                            f'config.yaml section for every shard')
        for rec in part['records']:
            key = cell_key(rec)
            if key not in seen:
                seen.add(key)
                records.append(rec)
        errors += meta.get('errors', [])
        models.update(meta.get('models', {}))
        shards.append({'shard': meta.get('shard'), 'wall_time_s': meta.get('wall_time_s'),
                       'cells': len(part['records']), 'command': meta.get('command')})
    meta = dict(parts[0].get('meta', {}))
    walls = [s['wall_time_s'] for s in shards if isinstance(s['wall_time_s'], (int, float))]
    meta.update(models=models, errors=errors, shards=shards, wall_time_s=max(walls) if walls else None,
                shard=None)
    return {'meta': meta, 'records': records}
