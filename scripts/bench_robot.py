#!/usr/bin/env python3
"""Does pruning pay at robot scale? Budgets vs dense, GFLOP/s vs an fp32 matmul floor, switch times, RSS.

All in one process at 1 torch thread, variants interleaved round-robin (the machine is shared and
noisy, so the ratios are the result, not the absolute times):

1. latency (median of --repeats) and peak memory (weights + forward activations, ``peak_memory_mb``)
   of the dense model and of the sub-networks at budgets 0.7 / 0.5 / 0.4, with all modalities and
   with lidar missing; budget = fraction of the live set's dense forward FLOPs;
2. achieved GFLOP/s of the dense model against torch.mm 1024^3 fp32 measured in the same loop;
3. sub-network switch: a cached one (dictionary hit) and an uncached build (gather from the one
   dense copy), medians over --switches;
4. process peak RSS (VmHWM) of a child holding the dense model alone vs a child running the
   PerceptionEngine's cache over all 35 (subset, budget) sub-networks (prebuild, default
   max_cache_mb), each running forwards.

Random weights (timing does not depend on them) unless --checkpoint is given (then its gate too).

Usage:
    python scripts/bench_robot.py [--preset robot|tiny] [--checkpoint PATH] [--repeats 15] [--threads 1]
"""
import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sentryfuse_ros.core.model.backbone import SentryFuseModel  # noqa: E402
from sentryfuse_ros.core.model.flops import count_flops, peak_memory_mb  # noqa: E402
from sentryfuse_ros.core.model.presets import preset_config  # noqa: E402
from sentryfuse_ros.core.pruning.budget import BUDGET_LEVELS  # noqa: E402
from sentryfuse_ros.core.pruning.prune import SubnetworkCache  # noqa: E402

ALL = ('camera', 'lidar', 'audio')
NO_LIDAR = ('camera', 'audio')
BUDGETS = (1.0, 0.7, 0.5, 0.4)
CLASSES = ('person', 'cyclist', 'car', 'dog', 'delivery_robot', 'drone')


def build(preset: str, checkpoint: str):
    """(model in eval mode, score_fn) from a preset with random weights, or from a checkpoint."""
    if checkpoint:
        from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse  # noqa: PLC0415
        model, gate, _ = load_sentryfuse(checkpoint)
        return model.eval(), gate.scores
    torch.manual_seed(0)
    model = SentryFuseModel(preset_config(preset, CLASSES)).eval()
    gen = torch.Generator().manual_seed(0)
    table = {}

    def scores(live):  # fixed random scores per live set (a stand-in for a trained SentryGate)
        if live not in table:
            table[live] = [(torch.rand(a, generator=gen), torch.rand(f, generator=gen)) for a, f in model.unit_layout()]
        return table[live]
    return model, scores


def matmul_floor_ms(a, b) -> tuple:
    """(wall ms, CPU ms of this thread) of one torch.mm."""
    start, cpu = time.perf_counter(), time.thread_time()
    torch.mm(a, b)
    return (time.perf_counter() - start) * 1e3, (time.thread_time() - cpu) * 1e3


def forward_ms(model, x) -> tuple:
    """(wall ms, CPU ms of this thread) of one no-grad forward (1 torch thread: all work is on this thread)."""
    start, cpu = time.perf_counter(), time.thread_time()
    with torch.inference_mode():
        model(x)
    return (time.perf_counter() - start) * 1e3, (time.thread_time() - cpu) * 1e3


def peak_rss_mb() -> float:
    """This process's peak resident set [MiB]: VmHWM (ru_maxrss would include the parent's peak,
    since Linux carries it across fork + exec)."""
    for line in pathlib.Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_rss(mode: str, preset: str, checkpoint: str) -> None:
    """Run in a child process: hold the dense model (mode 'dense') or the engine's cache over all 35
    sub-networks (mode 'engine'), run forwards, print the peak RSS [MiB] as JSON."""
    from sentryfuse_ros.core.runtime.engine import EngineConfig  # noqa: PLC0415
    torch.set_num_threads(1)
    model, scores = build(preset, checkpoint)
    import itertools  # noqa: PLC0415
    lives = [c for r in (1, 2, 3) for c in itertools.combinations(ALL, r)]
    cfg = EngineConfig()
    with torch.inference_mode():
        if mode == 'dense':
            for live in lives:
                model(model.example_inputs(live))
        else:
            cache = SubnetworkCache(model, scores, budget_levels=cfg.budget_levels, max_cache_mb=cfg.max_cache_mb)
            for live in lives:
                for b in cfg.budget_levels:
                    sub = cache.get(live, b)
                    sub.model(model.example_inputs(live))
    print(json.dumps({'rss_mb': peak_rss_mb(),
                      'storage_mb': 0.0 if mode == 'dense' else cache.storage_bytes() / 2 ** 20}))


def rss_of(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, '--rss-child', mode, '--preset', args.preset]
    if args.checkpoint:
        cmd += ['--checkpoint', args.checkpoint]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default='robot', choices=('robot', 'tiny'))
    parser.add_argument('--checkpoint', default='', help='a trained checkpoint instead of random weights')
    parser.add_argument('--repeats', type=int, default=15, help='timed forwards per variant (interleaved)')
    parser.add_argument('--switches', type=int, default=40, help='timed cached / uncached switches')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--rss-child', default='', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        child_rss(args.rss_child, args.preset, args.checkpoint)
        return 0
    torch.set_num_threads(args.threads)
    model, scores = build(args.preset, args.checkpoint)
    cache = SubnetworkCache(model, scores, budget_levels=BUDGETS)
    variants = []  # (live, budget, module, inputs)
    for live in (ALL, NO_LIDAR):
        x = model.example_inputs(live)
        for b in BUDGETS:
            variants.append((live, b, model if b == 1.0 else cache.get(live, b).model, x))
    a, bmat = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _, _, m, x in variants:  # warm-up
        forward_ms(m, x)
    times = {i: [] for i in range(len(variants))}
    mm = []
    for _ in range(args.repeats):  # interleaved round-robin
        mm.append(matmul_floor_ms(a, bmat))
        for i, (_, _, m, x) in enumerate(variants):
            times[i].append(forward_ms(m, x))
    mm_ms = statistics.median(w for w, _ in mm)
    mm_cpu = statistics.median(c for _, c in mm)
    floor_gflops = 2 * 1024 ** 3 / mm_ms / 1e6
    floor_cpu = 2 * 1024 ** 3 / mm_cpu / 1e6
    print(f'preset {args.preset} ({"checkpoint " + args.checkpoint if args.checkpoint else "random weights"}), '
          f'torch {torch.__version__}, {args.threads} thread(s), {args.repeats} interleaved repeats')
    print(f'fp32 matmul floor (torch.mm 1024^3): wall {mm_ms:.2f} ms = {floor_gflops:.0f} GFLOP/s; '
          f'thread CPU time {mm_cpu:.2f} ms = {floor_cpu:.0f} GFLOP/s')
    print('wall = elapsed time; cpu = this thread\'s CPU time (robust to being descheduled on a shared machine)')
    print(f'{"live":<20}{"budget":>7}{"GFLOPs":>8}{"flops":>7}{"wall ms":>9}{"speed-up":>9}{"cpu ms":>8}'
          f'{"speed-up":>9}{"peak MiB":>9}{"memory":>7}{"GFLOP/s":>8}{"/floor":>7}')
    for live in (ALL, NO_LIDAR):
        rows = [(i, v) for i, v in enumerate(variants) if v[0] == live]
        dense_i = rows[0][0]
        dense_ms = statistics.median(w for w, _ in times[dense_i])
        dense_cpu = statistics.median(c for _, c in times[dense_i])
        dense_flops = count_flops(model, rows[0][1][3])
        dense_mem = peak_memory_mb(model, rows[0][1][3])
        for i, (lv, b, m, x) in rows:
            ms = statistics.median(w for w, _ in times[i])
            cpu = statistics.median(c for _, c in times[i])
            flops = count_flops(m, x)
            mem = peak_memory_mb(m, x)
            rate = flops / cpu / 1e6  # achieved GFLOP/s on CPU time, against the matmul floor on CPU time
            print(f'{"+".join(lv):<20}{b:>7.2f}{flops / 1e9:>8.3f}{flops / dense_flops:>7.3f}{ms:>9.2f}'
                  f'{dense_ms / ms:>8.2f}x{cpu:>8.2f}{dense_cpu / cpu:>8.2f}x{mem:>9.1f}{mem / dense_mem:>7.2f}'
                  f'{rate:>8.1f}{rate / floor_cpu:>7.2f}')
    # switches: cached = a dictionary hit; uncached = select + gather from the one dense copy
    hit_cache = SubnetworkCache(model, scores, budget_levels=(0.7, 0.5))
    hit_cache.get(ALL, 0.7)
    hit_cache.get(ALL, 0.5)
    hits, builds, build_cpu = [], [], []
    levels = BUDGET_LEVELS[1:]  # every pruned level of the node's default budget_levels
    cold = SubnetworkCache(model, scores, budget_levels=levels, max_cache_mb=0)
    cold.get(ALL, 0.4)
    for k in range(args.switches):
        start = time.perf_counter()
        hit_cache.get(ALL, (0.7, 0.5)[k % 2])
        hits.append((time.perf_counter() - start) * 1e3)
        start, cpu = time.perf_counter(), time.thread_time()
        cold.get((ALL, NO_LIDAR)[(k // 4) % 2], levels[k % 4])
        builds.append((time.perf_counter() - start) * 1e3)
        build_cpu.append((time.thread_time() - cpu) * 1e3)
    print(f'switch, cached: p50 {statistics.median(hits):.4f} ms, max {max(hits):.4f} ms; '
          f'uncached build (select + gather): wall p50 {statistics.median(builds):.2f} ms, max {max(builds):.2f} ms, '
          f'CPU p50 {statistics.median(build_cpu):.2f} ms, max {max(build_cpu):.2f} ms')
    dense_rss, engine_rss = rss_of('dense', args), rss_of('engine', args)
    print(f'process peak RSS: dense model only {dense_rss["rss_mb"]:.0f} MiB; engine cache over all 35 '
          f'(subset, budget) sub-networks {engine_rss["rss_mb"]:.0f} MiB (gathered weights held at the end '
          f'{engine_rss["storage_mb"]:.1f} MiB) = {engine_rss["rss_mb"] / dense_rss["rss_mb"]:.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
