"""The pruning benchmark grid: train per (backbone, dataset, seed), prune every way, under two protocols.

For each (backbone, dataset, seed) the grid trains (checkpoints cached under ``cache_dir``) the models in
``cfg.models``: ``sentryfuse`` (SentryGate + alignment + pruned steps + the modality-dropout curriculum)
and, for protocol P1, ``conventional`` / ``conventional_nocurr`` (same architecture, data and steps; no gate
alignment, no pruned steps; with / without the curriculum). Then for each modality condition (live set) x
pruning ratio x method, the method's unit choice for (live, keep_fraction = 1 - ratio of the prunable
MACs, not a compute budget: see ``core/pruning/budget.py``) is sliced out of the model's checkpoint
(zero-shot: no gradient step; kwon_tuned alone rescales kept units in closed form) and evaluated on the
held-out test split restricted to the live modalities.

Protocol P2 (criterion): every method prunes the ``sentryfuse`` checkpoint. Protocol P1 (system, the
paper's reading): SentryGate on ``sentryfuse`` vs every zero-shot baseline on a conventional model. In both
a baseline's mask is re-solved per live set (costs of absent blocks 0). Protocol P0 (deployed static,
``core/bench/deployed.py``): each baseline prunes a conventional model once with every sensor; that one model
runs on every live set, against SentryGate re-pruned per live set at the static model's realised FLOPs.

Every cell is one JSON record ``{model, backbone, dataset, condition, ratio, method, seed, accuracy,
gflops, params, latency_ms, peak_mem_mb, score_ms, n_test, n_classes, protocol, calibration, tuning_data, mask,
calib_samples}`` (labels: ``core/bench/methods.py``; P0's SentryGate records add matched_to, target_gflops);
the output file is ``{"meta": {...}, "records": [...]}``, rewritten atomically after every job, and ``resume`` skips the
cells already in it.

Methods (see ``core/pruning/baselines.py`` and ``masktune.py`` for what each criterion computes):
    random, magnitude_l1, magnitude_l2, taylor, fisher, kwon   zero-shot baselines (static scores)
    kwon_tuned      kwon + Kwon et al.'s layer-wise least-squares mask tuning (kwon_samples samples)
    flap            An et al. 2024 fluctuation metric + bias compensation (flap_samples samples)
    taylor_recal    Taylor saliency re-measured on the live condition's calibration data (oracle)
    sentrygate      SentryGate.scores(live) of the checkpoint (sentryfuse model only)
    gate_uncond     ablation: the all-modality gate row used for every condition
    gate_noalign    ablation: a model trained with align_weight 0 (its gate table stays at init)
    dense           ratio 0 only: the unpruned checkpoint
    dense_nocurr    ratio 0 only: a SentryFuse model trained without the curriculum
gflops = 2 x analytic MACs of the sliced model for the live set (what count_flops reports);
latency_ms / peak_mem_mb are measured at batch 1 on the bench device for seeds in
``latency_seeds`` only (null elsewhere).
"""
import dataclasses
import hashlib
import json
import os
import pathlib
import platform
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from sentryfuse_ros.core.training import train as tr
from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
from sentryfuse_ros.core.config import to_dict
from sentryfuse_ros.core.training.curriculum import CurriculumConfig
from sentryfuse_ros.core.data.datasets import MultimodalTensors, SyntheticDataset
from sentryfuse_ros.core.errors import ConfigError, DataError
from sentryfuse_ros.core.data.scenes import SCENE_PRESETS, SceneConfig
from sentryfuse_ros.core.bench.spec import (  # noqa: F401  (re-exported: the grid's public names)
    BASELINES, CONVENTIONAL_METHODS, DATASETS, DENSE_METHODS, GATE_METHODS, METHODS, MODELS, ORACLES, RECORD_KEYS,
    P0_METHODS, VARIANT_OF, BenchConfig,
    _cells, condition_name, conditions_for, load_bench_config, model_jobs, model_name)
from sentryfuse_ros.core.bench.results import (  # noqa: F401
    cell_key, merge_results, parse_shard, read_results, select_jobs, write_results)
from sentryfuse_ros.core.bench.methods import (  # noqa: F401
    MethodScorer, calibration_sets, evaluate_cell, method_labels)
from sentryfuse_ros.core.bench.deployed import run_p0


# bumped when training code changes what a config trains, so cached checkpoints are not reused across it
# (2: issue 10, skipped-block scores fixed, per-sample saliency probe, cache-independent data;
#  3: the curriculum's unimodal warm-up)
TRAIN_RECIPE = 3
VARIANT_FOR_MODEL = {'sentryfuse': 'main', 'conventional': 'conventional',
                     'conventional_nocurr': 'conventional_nocurr', 'sentryfuse_sandwich': 'sandwich'}


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
    """The training config of one grid model.

    variant: main (SentryFuse) | noalign | nocurr (its ablations) | conventional | conventional_nocurr
    (no gate alignment, no pruned steps; with / without the curriculum: protocol P1's baseline models).
    """
    model = dataclasses.replace(cfg.model, backbone=backbone, modalities=data['train'].modalities)
    t = dataclasses.replace(cfg.train, seed=seed)
    if variant == 'noalign':
        t = dataclasses.replace(t, gate=dataclasses.replace(t.gate, align_weight=0.0))
    elif variant in ('nocurr', 'conventional_nocurr'):
        t = dataclasses.replace(t, curriculum=CurriculumConfig(phase1_frac=1.0, phase2_frac=0.0))
    elif variant not in ('main', 'conventional', 'sandwich'):
        raise ConfigError(f'variant={variant!r}: expected main, noalign, nocurr, conventional, conventional_nocurr '
                          'or sandwich')
    if variant.startswith('conventional'):
        t = dataclasses.replace(t, gate=dataclasses.replace(t.gate, align_weight=0.0, prune_prob=0.0))
    if variant == 'sandwich':
        t = dataclasses.replace(t, gate=dataclasses.replace(t.gate, recipe='sandwich', prune_start_frac=0.6))
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
    key = _digest({'config': to_dict(tcfg), 'recipe': TRAIN_RECIPE})
    path = cache_dir / 'models' / f'{dataset}-{backbone}-s{seed}-{variant}-{key}.pt'
    if path.is_file():
        return path, 0.0
    start = time.perf_counter()
    log(f'training {path.name} ({tcfg.train.steps} steps, {len(data["train"])} samples)')
    kwargs = {'progress': False, 'log': lambda s: None, 'command': f'sentryfuse bench ({variant})'}
    tr.train(tcfg, path, data=(data['train'], data['val']), **kwargs)
    return path, time.perf_counter() - start


def _on(data: MultimodalTensors, device: torch.device) -> MultimodalTensors:
    return MultimodalTensors({m: x.to(device) for m, x in data.inputs.items()}, data.labels.to(device),
                             data.class_names)


def prepare_data(cfg: BenchConfig, cache_dir, jobs: Sequence[Tuple[str, str, int]],
                 log: Callable[[str], None] = None) -> None:
    """Render (and cache) the synthetic datasets these jobs use, so parallel shards only read them."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    for dataset in dict.fromkeys(j[0] for j in jobs):
        start = time.perf_counter()
        load_data(cfg, dataset, pathlib.Path(cache_dir))
        log(f'data {dataset}: {time.perf_counter() - start:.1f}s')


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
    """Train (cached) and evaluate every missing cell of one grid job's models; returns the number of new cells."""
    data = load_data(cfg, dataset, cache_dir)
    info = meta['models'].setdefault(f'{dataset}/{backbone}/s{seed}', {})
    sets = calibration_sets(data['train'], cfg)
    test = _on(data['test'], device)
    n_classes = len(data['train'].class_names)
    new, scorers = 0, {}
    for which in cfg.models:
        cells = [c for c in _cells(cfg, data['train'].modalities, seed, which)
                 if cell_key({'model': which, 'backbone': backbone, 'dataset': dataset, 'seed': seed,
                              'condition': condition_name(c[0]), 'ratio': c[1], 'method': c[2]}) not in done]
        if not cells:
            continue
        main = VARIANT_FOR_MODEL[which]
        variants_needed = sorted({VARIANT_OF[m] for _, _, m in cells if m in VARIANT_OF}) if which == 'sentryfuse' \
            else []
        models = {}
        for variant in [main] + variants_needed:
            path, wall = trained_checkpoint(cfg, backbone, dataset, seed, variant, data, cache_dir, log)
            model, gate, ckmeta = load_sentryfuse(path, device=device)
            models[variant] = (model, gate)
            training = ckmeta.get('training', {})
            info[variant] = {'checkpoint': path.name, 'train_wall_time_s': training.get('train_wall_time_s'),
                             'val_accuracy': training.get('val_accuracy'), 'bench_train_s': round(wall, 1)}
        model, gate = models[main]
        scorer = MethodScorer(model, gate, sets, seed, {k: v for k, v in models.items() if k != main})
        scorers[which] = scorer
        start = time.perf_counter()
        for live, ratio, method in cells:
            keep = 1.0 - ratio  # keep_fraction of the prunable MACs
            masks, score_ms = (None, 0.0) if method in DENSE_METHODS else scorer.masks(method, live, keep)
            result = evaluate_cell(scorer.model_for(method, live, keep), masks, test, live, batch=cfg.eval_batch,
                                   latency_repeats=cfg.latency_repeats if seed in cfg.latency_seeds else None)
            rec = {'model': which, 'backbone': backbone, 'dataset': dataset, 'condition': condition_name(live),
                   'ratio': ratio, 'method': method, 'seed': seed, **result, 'score_ms': round(score_ms, 3),
                   'n_test': len(test), 'n_classes': n_classes, 'protocol': 'P1P2', **method_labels(method, 'P1P2'),
                   'calib_samples': scorer.samples_for(method)}
            records.append(rec)
            done.add(cell_key(rec))
        info.setdefault('static_score_ms', {})[which] = {k: round(v, 2) for k, v in scorer.static_ms.items()}
        info.setdefault('eval_s', {})[which] = round(time.perf_counter() - start, 1)
        new += len(cells)
    if any(m in cfg.models for m in ('conventional', 'conventional_nocurr')):
        start = time.perf_counter()
        new += run_p0(cfg, (dataset, backbone, seed), data, test, sets, records, done,
                      lambda variant: load_sentryfuse(trained_checkpoint(cfg, backbone, dataset, seed, variant, data,
                                                                         cache_dir, log)[0], device=device)[:2],
                      scorers={k: v for k, v in scorers.items() if k != 'sentryfuse'})
        info.setdefault('eval_s', {})['P0'] = round(time.perf_counter() - start, 1)
    return new
