"""The pruning benchmark grid: train once per (backbone, dataset, seed), prune that checkpoint every way.

For each (backbone, dataset, seed) one model is trained with SentryGate and the modality-dropout
curriculum (``core/training/train.py``; checkpoints cached under ``cache_dir``). Then for each modality
condition (live set) x pruning ratio x method, the method's unit choice for (live, budget = 1 - ratio)
is sliced out of **that same checkpoint** (zero-shot, no weight update) and evaluated on the held-out
test split restricted to the live modalities. Every cell is one JSON record
``{backbone, dataset, condition, ratio, method, seed, accuracy, gflops, params, latency_ms,
peak_mem_mb, score_ms, n_test}``; the output file is ``{"meta": {...}, "records": [...]}``, rewritten
atomically after every model, and ``resume`` skips the cells already in it.

Methods (see ``core/pruning/baselines.py`` for what each criterion computes):
    random, magnitude_l1, magnitude_l2, taylor, fisher, kwon   zero-shot baselines (static scores)
    taylor_recal    Taylor saliency re-measured on the live condition's calibration data (oracle)
    sentrygate      SentryGate.scores(live) of the checkpoint
    gate_uncond     ablation: the all-modality gate row used for every condition
    gate_noalign    ablation: a model trained with align_weight 0 (its gate table stays at init)
    dense           ratio 0 only: the unpruned checkpoint
    dense_nocurr    ratio 0 only: a model trained without the curriculum (all modalities always)
gflops = 2 x analytic MACs of the sliced model for the live set (what count_flops reports);
latency_ms / peak_mem_mb are measured at batch 1 on the bench device for seeds in
``latency_seeds`` only (null elsewhere).
"""
import dataclasses
import fnmatch
import hashlib
import gzip
import json
import os
import pathlib
import platform
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from sentryfuse_ros.core.pruning import baselines as bl
from sentryfuse_ros.core.training import train as tr
from sentryfuse_ros.core.config import check, load_yaml, to_dict
from sentryfuse_ros.core.training.curriculum import CurriculumConfig
from sentryfuse_ros.core.data.datasets import MultimodalTensors, SyntheticDataset
from sentryfuse_ros.core.errors import ConfigError, DataError
from sentryfuse_ros.core.model.flops import count_params, measure_latency_ms, peak_memory_mb
from sentryfuse_ros.core.pruning.gate import modality_subsets
from sentryfuse_ros.core.model.config import BACKBONES, ModelConfig
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig
from sentryfuse_ros.core.pruning.prune import select_units, slice_model, total_macs, unit_costs
from sentryfuse_ros.core.data.scenes import SCENE_PRESETS, SceneConfig

BASELINES = ('random', 'magnitude_l1', 'magnitude_l2', 'taylor', 'fisher', 'kwon')
ORACLES = ('taylor_recal',)
GATE_METHODS = ('sentrygate', 'gate_uncond', 'gate_noalign')
DENSE_METHODS = ('dense', 'dense_nocurr')
METHODS = BASELINES + ORACLES + GATE_METHODS + DENSE_METHODS
DATASETS = tuple(SCENE_PRESETS) + ('avmnist',)
RECORD_KEYS = ('backbone', 'dataset', 'condition', 'ratio', 'method', 'seed', 'accuracy', 'gflops', 'params',
               'latency_ms', 'peak_mem_mb')
VARIANT_OF = {'gate_noalign': 'noalign', 'dense_nocurr': 'nocurr'}  # methods needing another checkpoint


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    backbones: tuple = BACKBONES                    # fusion backbones to train
    datasets: tuple = DATASETS                      # scene presets (core/data/scenes.py) and/or 'avmnist'
    seeds: tuple = (0, 1, 2)                        # training seeds (model init, batch order, curriculum)
    ratios: tuple = (0.2, 0.3, 0.4, 0.5, 0.6)       # fractions of prunable MACs removed (budget = 1 - ratio)
    methods: tuple = METHODS                        # which rows to compute (module docstring)
    conditions: str = 'all_subsets'                 # 'main' (all + each single modality missing) | 'all_subsets'
    ablation_seeds: tuple = (0,)                    # seeds that also train the noalign / nocurr variants
    latency_seeds: tuple = (0,)                     # seeds whose cells get latency and peak memory
    latency_repeats: int = 10                       # timed batch-1 forward passes per latency cell
    train_size: int = 4000                          # synthetic training scenes (avmnist: its train speakers)
    val_size: int = 500                             # synthetic validation scenes (reported in the checkpoint)
    test_size: int = 500                            # synthetic test scenes (avmnist: its test speaker, 500 clips)
    data_seed: int = 0                              # dataset seed (train = s, val = s + 1, test = s + 1000)
    scene_overrides: dict = dataclasses.field(default_factory=dict)  # {preset: {SceneConfig field: value}}
    calib_batches: int = 4                          # calibration batches for taylor / fisher / kwon / recal
    calib_batch_size: int = 32                      # samples per calibration batch (from the training split)
    eval_batch: int = 250                           # test batch size
    avmnist_root: str = '../shared/data'            # folder with mnist/ and fsdd/recordings/ (CLI: relative to the repo root)
    model: ModelConfig = ModelConfig()              # architecture; backbone and modalities set per cell
    preprocess: PreprocessConfig = PreprocessConfig()  # input geometry
    train: tr.TrainConfig = tr.TrainConfig()        # optimisation; seed set per cell

    def __post_init__(self):
        for key in ('backbones', 'datasets', 'seeds', 'ratios', 'methods', 'ablation_seeds', 'latency_seeds'):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        check(len(self.backbones) > 0 and set(self.backbones) <= set(BACKBONES), 'backbones', self.backbones,
              f'a non-empty subset of {BACKBONES}')
        check(len(self.datasets) > 0 and set(self.datasets) <= set(DATASETS), 'datasets', self.datasets,
              f'a non-empty subset of {DATASETS}')
        check(len(self.seeds) > 0 and all(isinstance(s, int) for s in self.seeds), 'seeds', self.seeds,
              'a non-empty list of ints')
        check(len(self.ratios) > 0 and all(isinstance(r, (int, float)) and 0.0 < r < 1.0 for r in self.ratios),
              'ratios', self.ratios, 'a non-empty list of fractions in (0, 1)')
        check(len(self.methods) > 0 and set(self.methods) <= set(METHODS), 'methods', self.methods,
              f'a non-empty subset of {METHODS}')
        check(self.conditions in ('main', 'all_subsets'), 'conditions', self.conditions, "'main' or 'all_subsets'")
        check(set(self.scene_overrides) <= set(SCENE_PRESETS), 'scene_overrides', self.scene_overrides,
              f'keys from {tuple(SCENE_PRESETS)}')
        for key in ('train_size', 'val_size', 'test_size', 'calib_batches', 'calib_batch_size', 'eval_batch',
                    'latency_repeats'):
            check(isinstance(getattr(self, key), int) and getattr(self, key) >= 1, key, getattr(self, key),
                  'a positive int')


def load_bench_config(path, section: str) -> BenchConfig:
    """One section ('quick' or 'full') of the bench YAML."""
    return load_yaml(BenchConfig, path, section=section)


def conditions_for(modalities: Sequence[str], which: str) -> List[Tuple[str, ...]]:
    """Live sets: all modalities, then each single modality missing, then (all_subsets) the rest."""
    mods = tuple(modalities)
    main = [mods] + [tuple(m for m in mods if m != gone) for gone in mods if len(mods) > 1]
    if which == 'main':
        return main
    rest = [s for s in reversed(modality_subsets(mods)) if s not in main]
    return main + rest


def condition_name(live: Sequence[str]) -> str:
    return '+'.join(live)


def scene_for(cfg: BenchConfig, dataset: str) -> SceneConfig:
    base = SCENE_PRESETS[dataset]
    return dataclasses.replace(base, **cfg.scene_overrides.get(dataset, {})) if dataset in cfg.scene_overrides \
        else base


def load_data(cfg: BenchConfig, dataset: str, cache_dir: pathlib.Path) -> Dict[str, MultimodalTensors]:
    """{'train', 'val', 'test'} splits of ``dataset`` (synthetic ones rendered once and cached)."""
    if dataset == 'avmnist':
        from sentryfuse_ros.core.data.avmnist import load_avmnist
        root = pathlib.Path(cfg.avmnist_root)
        if not root.is_dir():
            raise DataError(f'avmnist_root={cfg.avmnist_root!r} is not a folder: expected one holding mnist/ and '
                            f'fsdd/recordings/ (sentryfuse bench --data-root DIR)')
        return {s: load_avmnist(root, s, cfg.data_seed, cfg.preprocess) for s in ('train', 'val', 'test')}
    scene = scene_for(cfg, dataset)
    sizes = {'train': (cfg.data_seed, cfg.train_size), 'val': (cfg.data_seed + 1, cfg.val_size),
             'test': (cfg.data_seed + 1000, cfg.test_size)}
    return {s: SyntheticDataset(scene, cfg.preprocess, seed=seed, n=n, cache_dir=cache_dir / 'data')
            for s, (seed, n) in sizes.items()}


def train_config(cfg: BenchConfig, backbone: str, dataset: str, seed: int, variant: str,
                 data: Dict[str, MultimodalTensors], cache_dir: pathlib.Path) -> tr.TrainFileConfig:
    """The training config of one grid model (variant: main | noalign | nocurr)."""
    model = dataclasses.replace(cfg.model, backbone=backbone, modalities=data['train'].modalities)
    t = dataclasses.replace(cfg.train, seed=seed)
    if variant == 'noalign':
        t = dataclasses.replace(t, gate=dataclasses.replace(t.gate, align_weight=0.0))
    elif variant == 'nocurr':
        t = dataclasses.replace(t, curriculum=CurriculumConfig(phase1_frac=1.0, phase2_frac=0.0))
    elif variant != 'main':
        raise ConfigError(f'variant={variant!r}: expected main, noalign or nocurr')
    scene = scene_for(cfg, dataset) if dataset != 'avmnist' else SceneConfig(name='avmnist', num_classes=10)
    d = tr.DataConfig(scene=scene, train_size=len(data['train']), val_size=len(data['val']), seed=cfg.data_seed,
                      cache_dir=str(cache_dir / 'data'))
    return tr.TrainFileConfig(model=model, preprocess=cfg.preprocess, data=d, train=t)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trained_checkpoint(cfg: BenchConfig, backbone: str, dataset: str, seed: int, variant: str,
                       data: Dict[str, MultimodalTensors], cache_dir: pathlib.Path,
                       log: Callable[[str], None]) -> Tuple[pathlib.Path, float]:
    """Path of the cached checkpoint for this grid model, training it first if absent; (path, train s)."""
    tcfg = train_config(cfg, backbone, dataset, seed, variant, data, cache_dir)
    path = cache_dir / 'models' / f'{dataset}-{backbone}-s{seed}-{variant}-{_digest(to_dict(tcfg))}.pt'
    if path.is_file():
        return path, 0.0
    start = time.perf_counter()
    log(f'training {path.name} ({tcfg.train.steps} steps, {len(data["train"])} samples)')
    kwargs = {'progress': False, 'log': lambda s: None, 'command': f'sentryfuse bench ({variant})'}
    tr.train(tcfg, path, datasets=(data['train'], data['val']), **kwargs)
    return path, time.perf_counter() - start


def _on(data: MultimodalTensors, device: torch.device) -> MultimodalTensors:
    return MultimodalTensors({m: x.to(device) for m, x in data.inputs.items()}, data.labels.to(device),
                             data.class_names)


def calibration_batches(data: MultimodalTensors, cfg: BenchConfig) -> List[Tuple[Dict[str, torch.Tensor], torch.Tensor]]:
    """The first calib_batches x calib_batch_size samples of a fixed permutation of the training split."""
    n = min(len(data), cfg.calib_batches * cfg.calib_batch_size)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.data_seed))[:n]
    sub = data.select(perm)
    b = cfg.calib_batch_size
    return [({m: x[i:i + b] for m, x in sub.inputs.items()}, sub.labels[i:i + b]) for i in range(0, n, b)]


class MethodScorer:
    """Unit choices of every method for one trained model (static scores computed once, lazily).

    Args:
        model, gate: the main checkpoint.
        calib: calibration batches (all modalities).
        seed: the random baseline's seed.
        variants: {'noalign': (model, gate), 'nocurr': (model, gate)} where trained.
    """

    def __init__(self, model, gate, calib, seed: int, variants: Dict[str, Tuple[Any, Any]]):
        self.model, self.gate, self.calib, self.seed, self.variants = model, gate, calib, seed, variants
        self._static: Dict[str, Any] = {}
        self.static_ms: Dict[str, float] = {}

    def _cached(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._static:
            start = time.perf_counter()
            self._static[key] = fn()
            self.static_ms[key] = (time.perf_counter() - start) * 1e3
        return self._static[key]

    def model_for(self, method: str):
        variant = VARIANT_OF.get(method)
        return self.model if variant is None else self.variants[variant][0]

    def masks(self, method: str, live: Tuple[str, ...], budget: float):
        """(masks, score_ms): score_ms is the per-condition scoring time (static scores: 0, see static_ms)."""
        m = self.model_for(method)
        costs = unit_costs(m, live)
        start = time.perf_counter()
        if method == 'random':
            scores = self._cached('random', lambda: bl.random_scores(m, self.seed))
        elif method in ('magnitude_l1', 'magnitude_l2'):
            p = 1 if method.endswith('l1') else 2
            scores = self._cached(method, lambda: bl.magnitude_scores(m, p=p))
        elif method in ('taylor', 'fisher', 'kwon'):
            grads = self._cached('grads', lambda: bl.calibration_grads(m, self.calib))
            if method == 'kwon':
                fisher = self._cached('fisher', lambda: bl.fisher_scores(grads))
                return bl.kwon_rearrange(bl.kwon_mask_search(fisher, costs, budget), grads), 0.0
            scores = self._cached(method, lambda: (bl.taylor_scores if method == 'taylor' else bl.fisher_scores)(grads))
        elif method == 'taylor_recal':
            scores = self._cached(f'recal:{condition_name(live)}',
                                  lambda: bl.taylor_scores(bl.calibration_grads(m, self.calib, live=live)))
        elif method == 'sentrygate':
            scores = self.gate.scores(live)
        elif method == 'gate_uncond':
            scores = self.gate.scores(self.model.modalities)
        elif method == 'gate_noalign':
            scores = self.variants['noalign'][1].scores(live)
        else:
            raise ConfigError(f'method={method!r}: expected one of {METHODS}')
        score_ms = (time.perf_counter() - start) * 1e3 if method in ('taylor_recal', 'sentrygate',
                                                                     'gate_uncond', 'gate_noalign') else 0.0
        if method == 'taylor_recal':
            score_ms = self.static_ms[f'recal:{condition_name(live)}']
        return select_units(scores, costs, budget), score_ms


def cell_key(rec: Dict[str, Any]) -> Tuple:
    return (rec['backbone'], rec['dataset'], rec['condition'], round(float(rec['ratio']), 4), rec['method'],
            int(rec['seed']))


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
    return data


def write_results(path: pathlib.Path, meta: Dict[str, Any], records: List[Dict[str, Any]]) -> None:
    """Atomic write (temporary file + rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps({'meta': meta, 'records': records}, indent=None, separators=(',', ':')) + '\n',
                   encoding='utf-8')
    tmp.replace(path)


def _cells(cfg: BenchConfig, modalities: Sequence[str], seed: int) -> List[Tuple[Tuple[str, ...], float, str]]:
    """(live, ratio, method) of one model; dense rows only at ratio 0, variants only on ablation seeds."""
    out = []
    for live in conditions_for(modalities, cfg.conditions):
        for method in cfg.methods:
            if method in VARIANT_OF and seed not in cfg.ablation_seeds:
                continue
            for ratio in ((0.0,) if method in DENSE_METHODS else cfg.ratios):
                out.append((live, float(ratio), method))
    return out


def evaluate_cell(model, masks, test: MultimodalTensors, live: Tuple[str, ...], *, batch: int,
                  latency_repeats: Optional[int]) -> Dict[str, Any]:
    """Slice, then accuracy on ``test`` (already on the model's device), GFLOPs, params, latency, memory."""
    sliced = model if masks is None else slice_model(model, masks)
    sliced.eval()
    acc = tr.accuracy(sliced, test, live, batch=batch)
    out = {'accuracy': round(acc, 6), 'gflops': round(2.0 * total_macs(sliced, live) / 1e9, 6),
           'params': int(count_params(sliced)), 'latency_ms': None, 'peak_mem_mb': None}
    if latency_repeats:
        device = next(sliced.parameters()).device
        x = sliced.example_inputs(live, batch=1, device=device, generator=torch.Generator().manual_seed(0))
        out['latency_ms'] = round(measure_latency_ms(sliced, x, repeats=latency_repeats, warmup=2), 4)
        out['peak_mem_mb'] = round(peak_memory_mb(sliced, x), 4)
    return out


def model_jobs(cfg: BenchConfig) -> List[Tuple[str, str, int]]:
    """(dataset, backbone, seed) of every grid model, in run order."""
    return [(d, b, s) for d in cfg.datasets for b in cfg.backbones for s in cfg.seeds]


def model_name(job: Tuple[str, str, int]) -> str:
    return f'{job[0]}/{job[1]}/s{job[2]}'


def parse_shard(text: str) -> Tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    parts = str(text).split('/')
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not 0 <= int(parts[0]) < int(parts[1]):
        raise ConfigError(f'shard={text!r}: expected I/N with 0 <= I < N, e.g. 3/15')
    return int(parts[0]), int(parts[1])


def _job_weight(cfg: BenchConfig, job: Tuple[str, str, int]) -> float:
    """Rough cost of one grid model: trainings (~100 s each) + cells (~0.2 s; x2 with latency)."""
    n_mods = 2 if job[0] == 'avmnist' else 3
    cells = _cells(cfg, MODALITIES[:n_mods], job[2])
    trainings = 1 + len({VARIANT_OF[m] for _, _, m in cells if m in VARIANT_OF})
    return 100.0 * trainings + 0.2 * len(cells) * (2 if job[2] in cfg.latency_seeds else 1)


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


def prepare_data(cfg: BenchConfig, cache_dir, jobs: Sequence[Tuple[str, str, int]],
                 log: Callable[[str], None] = None) -> None:
    """Render (and cache) the synthetic datasets these jobs use, so parallel shards only read them."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    for dataset in dict.fromkeys(j[0] for j in jobs):
        start = time.perf_counter()
        load_data(cfg, dataset, pathlib.Path(cache_dir))
        log(f'data {dataset}: {time.perf_counter() - start:.1f}s')


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


def run_bench(cfg: BenchConfig, out, *, cache_dir, device='cpu', resume: bool = False, command: str = '',
              log: Callable[[str], None] = None, shard: Optional[Tuple[int, int]] = None,
              models: Sequence[str] = ()) -> Dict[str, Any]:
    """Run the grid (or this shard's models), writing ``out`` after every model; returns {'meta', 'records'}.

    An exception while training or evaluating one model is logged and recorded in meta['errors']
    ({model, error, traceback}); the run goes on with the next model (its finished cells are kept).
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    device = torch.device(device)
    out, cache_dir = pathlib.Path(out), pathlib.Path(cache_dir)
    records: List[Dict[str, Any]] = []
    old_meta: Dict[str, Any] = {}
    if resume and out.is_file():
        old = read_results(out)
        records, old_meta = old['records'], old['meta']
        log(f'resuming: {len(records)} cells already in {out}')
    done = {cell_key(r) for r in records}
    jobs = select_jobs(cfg, shard=shard, models=models)
    meta = {'command': command, 'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'device': str(device),
            'machine': f'{platform.machine()} {platform.processor() or ""}'.strip(), 'cpu_count': os.cpu_count(),
            'torch_threads': torch.get_num_threads(), 'torch': torch.__version__,
            'python': sys.version.split()[0], 'config': to_dict(cfg),
            'shard': None if shard is None else f'{shard[0]}/{shard[1]}',
            'jobs': [model_name(j) for j in jobs], 'models': old_meta.get('models', {}), 'errors': []}
    log(f'{len(jobs)} models: {", ".join(meta["jobs"])}')
    t0, n_new = time.perf_counter(), 0
    for j, (dataset, backbone, seed) in enumerate(jobs):
        name = model_name((dataset, backbone, seed))
        try:
            n_new += _run_model(cfg, dataset, backbone, seed, cache_dir, device, records, done, meta, log)
        except Exception as exc:  # noqa: BLE001  (one model's failure must not end the grid)
            meta['errors'].append({'model': name, 'error': f'{type(exc).__name__}: {exc}',
                                   'traceback': traceback.format_exc(limit=8)})
            log(f'ERROR {name}: {type(exc).__name__}: {exc} (continuing with the next model)')
        write_results(out, meta, records)
        elapsed = time.perf_counter() - t0
        eta = elapsed / (j + 1) * (len(jobs) - j - 1)
        log(f'[{j + 1}/{len(jobs)}] {name} done, {elapsed:.0f}s elapsed, eta {eta:.0f}s')
    meta['wall_time_s'] = round(time.perf_counter() - t0, 1)
    write_results(out, meta, records)
    log(f'{n_new} new cells, {len(records)} in {out} ({meta["wall_time_s"]:.0f}s, {len(meta["errors"])} errors)')
    return {'meta': meta, 'records': records}


def _run_model(cfg: BenchConfig, dataset: str, backbone: str, seed: int, cache_dir: pathlib.Path,
               device: torch.device, records: List[Dict[str, Any]], done: set, meta: Dict[str, Any],
               log: Callable[[str], None]) -> int:
    """Train (cached) and evaluate every missing cell of one grid model; returns the number of new cells."""
    data = load_data(cfg, dataset, cache_dir)
    cells = [c for c in _cells(cfg, data['train'].modalities, seed)
             if (backbone, dataset, condition_name(c[0]), round(c[1], 4), c[2], seed) not in done]
    if not cells:
        return 0
    variants_needed = sorted({VARIANT_OF[m] for _, _, m in cells if m in VARIANT_OF})
    info = meta['models'].setdefault(f'{dataset}/{backbone}/s{seed}', {})
    models = {}
    for variant in ['main'] + variants_needed:
        path, wall = trained_checkpoint(cfg, backbone, dataset, seed, variant, data, cache_dir, log)
        model, gate, ckmeta = tr.load_sentryfuse(path, device=device)
        models[variant] = (model, gate)
        training = ckmeta.get('training', {})
        info[variant] = {'checkpoint': path.name, 'train_wall_time_s': training.get('train_wall_time_s'),
                         'val_accuracy': training.get('val_accuracy'), 'bench_train_s': round(wall, 1)}
    model, gate = models['main']
    scorer = MethodScorer(model, gate, calibration_batches(data['train'], cfg), seed,
                          {k: v for k, v in models.items() if k != 'main'})
    test = _on(data['test'], device)
    start = time.perf_counter()
    for live, ratio, method in cells:
        masks, score_ms = (None, 0.0) if method in DENSE_METHODS else scorer.masks(method, live, 1.0 - ratio)
        result = evaluate_cell(scorer.model_for(method), masks, test, live, batch=cfg.eval_batch,
                               latency_repeats=cfg.latency_repeats if seed in cfg.latency_seeds else None)
        rec = {'backbone': backbone, 'dataset': dataset, 'condition': condition_name(live), 'ratio': ratio,
               'method': method, 'seed': seed, **result, 'score_ms': round(score_ms, 3), 'n_test': len(test)}
        records.append(rec)
        done.add(cell_key(rec))
    info['static_score_ms'] = {k: round(v, 2) for k, v in scorer.static_ms.items()}
    info['eval_s'] = round(time.perf_counter() - start, 1)
    return len(cells)
