#!/usr/bin/env python3
"""Compare the modality-balancing methods on the bench models: per-subset test accuracy over seeds.

Each training is the grid's ``sentryfuse`` model (``core/bench/grid.py`` train_config: the bench YAML's
model, train section and data sizes, sim6 at its difficulty override) with ``train.balance`` replaced
by the method's settings; it is scored on the grid's test split, every modality subset, dense (budget
1.0) and at SentryGate's budget 0.5. One JSON line per finished training is appended to ``--out``, so
a rerun skips what is done (resumable; interrupt it any time). Then a table: mean and 95% t-interval
over the seeds per (backbone, method, subset).

    nice -n 10 python scripts/compare_balancing.py --threads 1 --out bench/balancing.jsonl &
    # or one process per backbone (shards share the output file):
    for b in early mid bottleneck; do nice -n 10 python scripts/compare_balancing.py --backbones $b & done
    python scripts/compare_balancing.py --out bench/balancing.jsonl --report   # the table only
"""
import argparse
import dataclasses
import fcntl
import json
import math
import pathlib
import statistics
import sys
import time

import torch

from sentryfuse_ros.core.bench import grid
from sentryfuse_ros.core.training import train as tr
from sentryfuse_ros.core.training.config import BalanceConfig
from sentryfuse_ros.core.training.state import state_path

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the compared settings (core/training/config.py BalanceConfig); 'none' is the recipe without balancing
METHODS = {
    'none': BalanceConfig(),
    'aux': BalanceConfig(aux_weight=0.5),
    'ogm': BalanceConfig(ogm_alpha=0.5),
    'aux+ogm': BalanceConfig(aux_weight=0.5, ogm_alpha=0.5),
}
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}  # two-sided 95% t quantiles by degrees of freedom


def run_key(backbone: str, seed: int, method: str) -> str:
    return f'sim6-{backbone}-s{seed}-{method}'


def read_done(path: pathlib.Path) -> dict:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row['key']] = row
    return done


def train_one(cfg, backbone: str, seed: int, method: str, data, cache: pathlib.Path, checkpoint_every: int) -> dict:
    """Train the grid's sentryfuse model of (backbone, seed) with ``method``'s balancing; its test row."""
    tcfg = grid.train_config(cfg, backbone, 'sim6', seed, 'main', data, cache)
    t = dataclasses.replace(tcfg.train, balance=METHODS[method], checkpoint_every=checkpoint_every)
    tcfg = dataclasses.replace(tcfg, train=t)
    out = cache / 'models' / f'{run_key(backbone, seed, method)}.pt'
    start = time.perf_counter()
    resume = state_path(out).is_file()  # an interrupted training continues where its state file left it
    result = tr.train(tcfg, out, data=(data['train'], data['val']), progress=False, log=lambda s: None,
                      resume=resume, command=f'scripts/compare_balancing.py ({method})')
    train_s = time.perf_counter() - start
    test = tr.validate(result.model, result.gate, data['test'].subset(result.model.modalities),
                       batch=cfg.eval_batch, budgets=(1.0, 0.5))
    return {'key': run_key(backbone, seed, method), 'backbone': backbone, 'seed': seed, 'method': method,
            'balance': dataclasses.asdict(METHODS[method]), 'train_s': round(train_s, 1), 'test': test,
            'progress': result.meta['progress'], 'checkpoint': str(out)}


def interval(values, signed: bool = False) -> str:
    m = statistics.fmean(values)
    text = f'{m:+.3f}' if signed else f'{m:.3f}'
    if len(values) < 2:
        return text
    half = T95.get(len(values) - 1, 2.0) * statistics.stdev(values) / math.sqrt(len(values))
    return f'{text} ± {half:.3f}'


def report(rows: dict, budget: str = '1.00') -> str:
    """A markdown table per backbone: methods as rows, subsets as columns, mean ± 95% t-interval (n seeds)."""
    lines = []
    for backbone in sorted({r['backbone'] for r in rows.values()}):
        mine = [r for r in rows.values() if r['backbone'] == backbone]
        subsets = list(mine[0]['test'][budget])
        lines += [f'\n{backbone} (test accuracy at budget {budget}; mean ± 95% t-interval over n seeds)\n',
                  '| method | n | ' + ' | '.join(subsets) + ' |', '|---|---|' + '---|' * len(subsets)]
        for method in METHODS:
            got = [r for r in mine if r['method'] == method]
            if got:
                cells = [interval([r['test'][budget][s] for r in got]) for s in subsets]
                lines.append(f'| {method} | {len(got)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def paired_report(rows: dict, budget: str = '1.00') -> str:
    """Each method minus 'none' on the same (backbone, seed), pooled over backbones: mean ± 95% t-interval."""
    base = {(r['backbone'], r['seed']): r for r in rows.values() if r['method'] == 'none'}
    if not base:
        return ''
    subsets = list(next(iter(base.values()))['test'][budget])
    lines = [f'\npaired difference to none (test accuracy at budget {budget}; n = backbone x seed pairs)\n',
             '| method | n | ' + ' | '.join(subsets) + ' | mean of subsets |', '|---|---|' + '---|' * (len(subsets) + 1)]
    for method in METHODS:
        pairs = [(r, base[(r['backbone'], r['seed'])]) for r in rows.values()
                 if r['method'] == method and method != 'none' and (r['backbone'], r['seed']) in base]
        if not pairs:
            continue
        diffs = {s: [r['test'][budget][s] - b['test'][budget][s] for r, b in pairs] for s in subsets}
        mean_all = [statistics.fmean(d) for d in zip(*diffs.values())]
        cells = [interval(diffs[s], signed=True) for s in subsets] + [interval(mean_all, signed=True)]
        lines.append(f'| {method} | {len(pairs)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=str(ROOT / 'config' / 'bench.yaml'))
    parser.add_argument('--section', default='full')
    parser.add_argument('--out', default=str(ROOT / 'bench' / 'balancing.jsonl'))
    parser.add_argument('--cache-dir', default='/tmp/compare_balancing')
    parser.add_argument('--backbones', default='early,mid,bottleneck')
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--methods', default=','.join(METHODS))
    parser.add_argument('--checkpoint-every', type=int, default=200, help='probe rows per run (training log)')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--report', action='store_true', help='print the table of what is done and exit')
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    done = read_done(out)
    if not args.report:
        torch.set_num_threads(args.threads)
        cfg = grid.load_bench_config(args.config, args.section)
        cache = pathlib.Path(args.cache_dir)
        data = grid.load_data(cfg, 'sim6', cache)
        out.parent.mkdir(parents=True, exist_ok=True)
        for seed in (int(s) for s in args.seeds.split(',')):  # seed outermost: a partial run covers every backbone
            for backbone in args.backbones.split(','):
                for method in args.methods.split(','):
                    if run_key(backbone, seed, method) in done:
                        continue
                    row = train_one(cfg, backbone, seed, method, data, cache, args.checkpoint_every)
                    with out.open('a') as f:  # shards (--backbones) may share the file
                        fcntl.flock(f, fcntl.LOCK_EX)
                        f.write(json.dumps(row) + '\n')
                    done[row['key']] = row
                    print(f'{row["key"]}: {row["train_s"]:.0f}s, test ' +
                          ', '.join(f'{k} {v:.3f}' for k, v in row['test']['1.00'].items()), flush=True)
    print(report(done))
    print(report(done, '0.50'))
    print(paired_report(done))
    print(paired_report(done, '0.50'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
