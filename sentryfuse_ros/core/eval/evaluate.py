"""Evaluating a trained checkpoint: every modality subset x compute budget, zero-shot.

For each (subset, budget) the SentryGate scores of the checkpoint pick units under the compute budget
(``SubnetworkCache``, no gradient step), the weights are physically sliced, and the sub-network is
measured on a fresh synthetic test set drawn with ``seed``: accuracy, GFLOPs (``count_flops`` at
batch 1), parameters, batch-1 latency and peak memory. In the same run:

* SentryAttend vs dense attention: GFLOPs of the same architecture with ``attention: dense`` (built
  untrained: FLOPs do not depend on weights) and, given a dense-attention twin checkpoint trained
  by the same recipe (``config/train_sim_dense.yaml``), its accuracy per subset;
* dense (unsliced) vs sliced model for the full modality set at each budget: parameter, peak
  memory and batch-1 latency ratios, latencies measured side by side with interleaved repeats;
* sub-network build time (select + slice) and switch time (a cache hit swap).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.data.datasets import SyntheticDataset
from sentryfuse_ros.core.errors import CheckpointError, ConfigError
from sentryfuse_ros.core.model.flops import count_flops, count_params, measure_latency_ms, peak_memory_mb
from sentryfuse_ros.core.pruning.gate import modality_subsets
from sentryfuse_ros.core.pruning.prune import SubnetworkCache
from sentryfuse_ros.core.pruning.checkpoint import check_fresh_seed, load_sentryfuse, scene_config_of
from sentryfuse_ros.core.training.train import accuracy, subset_key

BUDGETS = (1.0, 0.7, 0.5)
RECORD_KEYS = ('subset', 'budget', 'accuracy', 'gflops', 'params', 'latency_ms', 'peak_mem_mb', 'n')


def _batch1(model: SentryFuseModel, data, live) -> Dict[str, torch.Tensor]:
    return {m: data.inputs[m][:1] for m in live}


def _sync(inputs: Dict[str, torch.Tensor]) -> None:
    device = next(iter(inputs.values())).device
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def interleaved_latency_ms(models: Dict[str, torch.nn.Module], inputs: Dict[str, torch.Tensor], *,
                           repeats: int = 30, warmup: int = 3) -> Dict[str, float]:
    """Median batch-1 latency per model, timing the models round-robin so load drifts hit all alike."""
    times: Dict[str, List[float]] = {k: [] for k in models}
    with torch.no_grad():
        for i in range(warmup + repeats):
            for name, model in models.items():
                _sync(inputs)
                start = time.perf_counter()
                model(inputs)
                _sync(inputs)
                if i >= warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
    return {k: float(statistics.median(v)) for k, v in times.items()}


def evaluate(checkpoint, *, seed: int, n: int = 1000, budgets: Sequence[float] = BUDGETS,
             dense_checkpoint=None, latency_repeats: int = 20, device='cpu',
             log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Evaluate ``checkpoint`` on a fresh test set; returns the JSON-ready result.

    Args:
        checkpoint: a checkpoint written by ``sentryfuse train``.
        seed: test-set seed (must differ from the training and validation seeds).
        n: test scenes.
        budgets: compute budgets (fractions of the live set's dense forward FLOPs, fixed parts included),
            checked by the caller (``sentryfuse evaluate --budgets``).
        dense_checkpoint: optional dense-attention twin (same recipe, ``attention: dense``).
        latency_repeats: timed forward passes per latency figure.
        device: where the models run.
        log: progress lines (default: silent).
    """
    log = log or (lambda s: None)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f'--n={n!r}: expected a positive number of test scenes')
    model, gate, meta = load_sentryfuse(checkpoint, device=device)
    check_fresh_seed(seed, meta, checkpoint)
    scene = scene_config_of(meta, checkpoint)
    t0 = time.perf_counter()
    data = SyntheticDataset(scene, model.config.preprocess, seed=int(seed), n=n).subset(model.modalities)
    data.inputs = {m: x.to(device) for m, x in data.inputs.items()}
    data.labels = data.labels.to(device)
    log(f'test set: {n} scenes, seed {seed}, rendered in {time.perf_counter() - t0:.1f}s')
    cache = SubnetworkCache(model, gate.scores, budget_levels=budgets, device=device)
    subsets = modality_subsets(model.modalities)
    records, subnets = [], {}
    for live in subsets:
        inputs1 = _batch1(model, data, live)
        for b in budgets:
            sub = cache.get(live, b)
            subnets[(live, b)] = sub
            records.append({
                'subset': list(live), 'budget': float(b),
                'accuracy': round(accuracy(sub.model, data, live), 4),
                'gflops': round(count_flops(sub.model, inputs1) / 1e9, 6),
                'params': int(sub.params),
                'latency_ms': round(measure_latency_ms(sub.model, inputs1, repeats=latency_repeats), 4),
                'peak_mem_mb': round(peak_memory_mb(sub.model, inputs1), 4),
                'n': n})
        log(f'evaluated {subset_key(live)}')
    full = tuple(model.modalities)
    result = {
        'checkpoint': str(checkpoint), 'seed': int(seed), 'n': n, 'budgets': [float(b) for b in budgets],
        'class_names': list(model.config.class_names), 'attention': model.config.model.attention,
        'records': records,
        'dense_vs_sliced': _dense_vs_sliced(model, subnets, full, budgets, data, latency_repeats),
        'subnetwork_times': _build_and_switch(cache, subnets, full, budgets),
        'dense_attention': _attention_comparison(model, records, data, subsets, dense_checkpoint, device),
        'environment': {'torch': str(torch.__version__), 'threads': torch.get_num_threads(), 'device': str(device)},
    }
    return result


def _dense_vs_sliced(model, subnets, full, budgets, data, repeats) -> Dict[str, Any]:
    inputs1 = _batch1(model, data, full)
    models = {'dense': model}
    models.update({f'{b:.2f}': subnets[(full, b)].model for b in budgets})
    lat = interleaved_latency_ms(models, inputs1, repeats=max(repeats, 30))
    dense_params, dense_mem = count_params(model), peak_memory_mb(model, inputs1)
    rows = []
    for b in budgets:
        sub = subnets[(full, b)].model
        mem = peak_memory_mb(sub, inputs1)
        params, ms = count_params(sub), lat[f'{b:.2f}']
        rows.append({'budget': float(b), 'params': params, 'params_ratio': round(params / dense_params, 4),
                     'peak_mem_mb': round(mem, 4), 'peak_mem_ratio': round(mem / dense_mem, 4),
                     'latency_ms': round(ms, 4), 'latency_ratio': round(ms / lat['dense'], 4)})
    return {'subset': list(full), 'dense_params': dense_params, 'dense_peak_mem_mb': round(dense_mem, 4),
            'dense_latency_ms': round(lat['dense'], 4), 'sliced': rows}


def _build_and_switch(cache: SubnetworkCache, subnets, full, budgets) -> Dict[str, Any]:
    builds = [s.build_ms for s in subnets.values()]
    keys = [(full, budgets[0]), (full, budgets[-1])]
    switch = []
    for i in range(200):  # alternate between two cached sub-networks: each get() is a cache hit swap
        live, b = keys[i % 2]
        start = time.perf_counter()
        cache.get(live, b)
        switch.append((time.perf_counter() - start) * 1e3)
    return {'build_ms_median': round(statistics.median(builds), 3), 'build_ms_max': round(max(builds), 3),
            'builds': len(builds), 'switch_ms_median': round(statistics.median(switch), 5),
            'switch_ms_max': round(max(switch), 5), 'cache': cache.stats}


def _attention_comparison(model, records, data, subsets, dense_checkpoint, device) -> Dict[str, Any]:
    cfg = model.config
    twin_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, attention='dense'))
    twin, source = SentryFuseModel(twin_cfg).to(device).eval(), 'untrained twin (FLOPs only)'
    trained = dense_checkpoint is not None
    if trained:
        twin, _, _ = load_sentryfuse(dense_checkpoint, device=device)
        source = str(dense_checkpoint)
        as_sentry = dataclasses.replace(twin.config.model, attention='sentry', num_kv_heads=cfg.model.num_kv_heads)
        if twin.config.model.attention != 'dense' or as_sentry != cfg.model:
            raise CheckpointError(f'--dense-checkpoint {str(dense_checkpoint)!r}: expected the dense-attention twin '
                                  f'of the evaluated model (same config except attention: dense), got '
                                  f'attention={twin.config.model.attention!r}')
        if twin.config.class_names != cfg.class_names:
            raise CheckpointError(f'--dense-checkpoint {str(dense_checkpoint)!r}: class names '
                                  f'{list(twin.config.class_names)} differ from {list(cfg.class_names)}')
    rows, top = [], max(r['budget'] for r in records)
    for live in subsets:
        inputs1 = _batch1(model, data, live)
        sentry = next(r for r in records if r['subset'] == list(live) and r['budget'] == top)
        dense_gflops = count_flops(twin, inputs1) / 1e9
        row = {'subset': list(live), 'sentry_gflops': sentry['gflops'], 'dense_gflops': round(dense_gflops, 6),
               'gflops_ratio': round(sentry['gflops'] / dense_gflops, 4),
               'sentry_params': count_params(model), 'dense_params': count_params(twin),
               'sentry_accuracy': sentry['accuracy']}
        if trained:
            row['dense_accuracy'] = round(accuracy(twin, data, live), 4)
        rows.append(row)
    return {'dense_source': source, 'rows': rows}


def format_table(result: Dict[str, Any]) -> str:
    """The records, the dense-vs-sliced ratios, build/switch times and the attention comparison as text."""
    lines = [f'{"subset":<22} {"budget":>6} {"acc":>6} {"GFLOPs":>8} {"params":>8} {"lat ms":>7} {"mem MB":>7}']
    for r in result['records']:
        lines.append(f'{"+".join(r["subset"]):<22} {r["budget"]:>6.2f} {r["accuracy"]:>6.3f} {r["gflops"]:>8.4f} '
                     f'{r["params"]:>8d} {r["latency_ms"]:>7.2f} {r["peak_mem_mb"]:>7.2f}')
    d = result['dense_vs_sliced']
    lines += ['', f'dense (unsliced) vs sliced, subset {"+".join(d["subset"])}, batch 1 (latency interleaved): '
                  f'dense {d["dense_params"]} params, {d["dense_peak_mem_mb"]:.2f} MB, {d["dense_latency_ms"]:.2f} ms',
              f'{"budget":>6} {"params":>8} {"ratio":>6} {"mem MB":>7} {"ratio":>6} {"lat ms":>7} {"ratio":>6}']
    for r in d['sliced']:
        lines.append(f'{r["budget"]:>6.2f} {r["params"]:>8d} {r["params_ratio"]:>6.3f} {r["peak_mem_mb"]:>7.2f} '
                     f'{r["peak_mem_ratio"]:>6.3f} {r["latency_ms"]:>7.2f} {r["latency_ratio"]:>6.3f}')
    s = result['subnetwork_times']
    lines += ['', f'sub-network build (select + slice): median {s["build_ms_median"]:.2f} ms, '
                  f'max {s["build_ms_max"]:.2f} ms over {s["builds"]}; '
                  f'switch (cache hit): median {s["switch_ms_median"] * 1e3:.1f} us']
    a = result['dense_attention']
    lines += ['', f'SentryAttend vs dense attention at budget 1.0 (dense: {a["dense_source"]})',
              f'{"subset":<22} {"GFLOPs S":>9} {"GFLOPs D":>9} {"ratio":>6} {"acc S":>6} {"acc D":>6}']
    for r in a['rows']:
        acc_d = f'{r["dense_accuracy"]:>6.3f}' if 'dense_accuracy' in r else f'{"-":>6}'
        lines.append(f'{"+".join(r["subset"]):<22} {r["sentry_gflops"]:>9.4f} {r["dense_gflops"]:>9.4f} '
                     f'{r["gflops_ratio"]:>6.3f} {r["sentry_accuracy"]:>6.3f} {acc_d}')
    return '\n'.join(lines)
