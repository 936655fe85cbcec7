#!/usr/bin/env python3
"""Deployment runtimes at robot scale: eager fp32 / bf16, onnxruntime fp32 / int8 (CPU EP), budgets 1.0 / 0.5.

Builds a random-weight SentryFuse model of robot width (dim 384, depth 6, 6 query / 2 KV heads,
FFN 1536 in blocks of 64; camera 224x224 in 16 px patches, lidar BEV 128x128 in 16-cell patches,
1 s of 16 kHz audio with a 512-point STFT: ~290 tokens), saves it with an untrained SentryGate as a
checkpoint (or takes ``--checkpoint``), exports the all-modality sub-networks at each budget with
``sentryfuse export``'s code in fp32 and int8 (or reads ``--fp32-dir`` / ``--int8-dir``), and times
every runtime interleaved (round-robin, so load drifts hit all alike) at batch 1 on ``--threads``
threads. Speed-ups are against eager fp32 dense and against onnxruntime fp32 dense of the same run.
Also: graph sizes, the int8 check's accuracy per subset x budget (from the int8 manifest: held-out
scenes, int8 vs its fp32 graph), the resident memory of a process (torch + onnxruntime imported,
as the node) holding every session of each export, and the cached switch cost.
Random weights: timings only; accuracy needs a trained ``--checkpoint`` (and ``sentryfuse evaluate``).

    taskset -c 1 python scripts/bench_runtimes.py --out runs/bench_runtimes.json
    taskset -c 1 python scripts/bench_runtimes.py --checkpoint models/sentryfuse_robot.pt \\
        --fp32-dir EXPORT_FP32 --int8-dir EXPORT_INT8 --repeats 40 --out runs/bench_runtimes_robot.json
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import torch

LIVE = ('camera', 'lidar', 'audio')


def build_checkpoint(path: pathlib.Path) -> float:
    from sentryfuse_ros.core.data.preprocess import PreprocessConfig
    from sentryfuse_ros.core.model.backbone import SentryFuseModel
    from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig
    from sentryfuse_ros.core.pruning.gate import SentryGate
    from sentryfuse_ros.core.pruning.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = SentryFuseConfig(
        model=ModelConfig(dim=384, depth=6, num_heads=6, num_kv_heads=2, ffn_dim=1536, ffn_block=64,
                          image_patch=16, bev_patch=16, n_fft=512, hop=160, n_mels=64, audio_patch_frames=4),
        preprocess=PreprocessConfig(image_size=224, bev_size=128, bev_range_m=40.0, audio_rate=16000,
                                    audio_samples=16000),
        class_names=('person', 'cyclist', 'car', 'dog', 'delivery_robot', 'drone'))
    model = SentryFuseModel(cfg).eval()
    gate = SentryGate(modalities=model.modalities, layout=model.unit_layout())
    with torch.no_grad():   # untrained table: random scores, so budget 0.5 keeps a random half
        for p in gate.parameters():
            p.normal_()
    save_checkpoint(path, model, extra={'gate': gate.state_dict()})
    from sentryfuse_ros.core.model.flops import count_flops
    return count_flops(model, model.example_inputs(model.modalities)) / 1e9


def rss_probe(folder: str) -> int:
    """(child process) Open and run once every session of an export; print VmRSS before/after as JSON."""
    import onnxruntime  # noqa: F401 - imported before the baseline, as in the node

    from sentryfuse_ros.core.runtime.backends import OnnxRunners
    from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice
    from sentryfuse_ros.core.runtime.export import load_manifest

    def rss_mb(field='VmRSS'):
        line = next(x for x in open('/proc/self/status') if x.startswith(field + ':'))
        return int(line.split()[1]) / 1024

    manifest = load_manifest(folder)
    base = rss_mb()
    runners = OnnxRunners(manifest, RuntimeChoice(backend='onnxruntime', precision=manifest.precision),
                          Capabilities.detect(), threads=1)
    runners.prebuild()
    print(json.dumps({'sessions': runners.stats['cached'], 'baseline_mb': round(base, 1),
                      'with_sessions_mb': round(rss_mb(), 1), 'peak_mb': round(rss_mb('VmHWM'), 1),
                      'graph_mb': round(sum(s.bytes or (manifest.folder / s.file).stat().st_size
                                            for s in manifest.subnetworks) / 2 ** 20, 1)}))
    return 0


def measure_rss(folder: pathlib.Path) -> dict:
    out = subprocess.run([sys.executable, __file__, '--rss-probe', str(folder)], check=True, capture_output=True,
                         text=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data['sessions_mb'] = round(data['with_sessions_mb'] - data['baseline_mb'], 1)
    return data


def exports(args, ckpt: pathlib.Path, tmp: pathlib.Path) -> dict:
    """{'onnxruntime fp32': folder, 'onnxruntime int8': folder[, 'onnxruntime int8 static': folder]}, export s."""
    from sentryfuse_ros.core.runtime.export import export_checkpoint
    from sentryfuse_ros.core.runtime.quantize import QuantizeConfig

    log = (lambda s: print(s, file=sys.stderr, flush=True))
    wanted = {'onnxruntime fp32': ('fp32', None, args.fp32_dir), 'onnxruntime int8': ('int8', 'dynamic', args.int8_dir)}
    if args.static:
        wanted['onnxruntime int8 static'] = ('int8', 'static', None)
    folders, seconds = {}, 0.0
    for name, (precision, how, given) in wanted.items():
        if given:
            folders[name] = pathlib.Path(given)
            continue
        if how and not args.checkpoint:   # random weights: no scene config for the int8 check
            log(f'{name}: skipped (the int8 check needs a trained --checkpoint, or pass --int8-dir)')
            continue
        folders[name] = tmp / name.replace(' ', '_')
        t0 = time.perf_counter()
        quantize = QuantizeConfig(quantization=how, check_samples=args.check_samples) if how else None
        export_checkpoint(ckpt, folders[name], budgets=args.budgets, subsets=['+'.join(LIVE)], precision=precision,
                          quantize=quantize, log=log)
        seconds += time.perf_counter() - t0
    return folders, seconds


def time_interleaved(runs: dict, warmup: int, repeats: int) -> dict:
    """{key: [ms]} of ``repeats`` round-robin calls per runner, after ``warmup`` rounds."""
    times = {k: [] for k in runs}
    for i in range(warmup + repeats):
        for key, (runner, x) in runs.items():
            start = time.perf_counter()
            runner(x)
            if i >= warmup:
                times[key].append((time.perf_counter() - start) * 1e3)
    return times


def switch_cost(sets: dict, budgets) -> dict:
    switch = {}
    for name, runners in sets.items():
        if name.startswith('eager') and name != 'eager fp32':
            continue
        keys = [(LIVE, b) for b in budgets]
        dt = []
        for i in range(1000):
            start = time.perf_counter()
            runners.get(*keys[i % len(keys)])
            dt.append((time.perf_counter() - start) * 1e3)
        switch[name] = {'median_ms': round(statistics.median(dt), 5), 'max_ms': round(max(dt), 4)}
    return switch


def graph_table(folders: dict) -> list:
    """Per exported graph: bytes per runtime, and the int8 check (held-out accuracy vs its fp32 graph)."""
    from sentryfuse_ros.core.runtime.export import load_manifest
    rows = {}
    for name, folder in folders.items():
        for s in load_manifest(folder).subnetworks:
            row = rows.setdefault(s.key, {'subset': '+'.join(s.subset), 'budget': s.budget})
            row[f'{name} MB'] = round((s.bytes or (folder / s.file).stat().st_size) / 1e6, 3)
            if s.check is not None:
                row[f'{name} check'] = {'accuracy': s.check.accuracy, 'fp32_accuracy': s.check.fp32_accuracy,
                                        'delta_points': s.check.delta_points, 'n': s.check.n}
    return list(rows.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required='--rss-probe' not in sys.argv)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--budgets', type=float, nargs='+', default=[1.0, 0.5])
    parser.add_argument('--checkpoint', default=None,
                        help='a trained checkpoint (e.g. models/sentryfuse_robot.pt); default: the random robot-like model')
    parser.add_argument('--fp32-dir', default=None, help='an fp32 export of --checkpoint to time (default: export one)')
    parser.add_argument('--int8-dir', default=None, help='an int8 export of --checkpoint to time (default: export one)')
    parser.add_argument('--static', action='store_true', help='also export and time static (QDQ) int8')
    parser.add_argument('--check-samples', type=int, default=300, help='held-out samples of the int8 exports made here')
    parser.add_argument('--rss-probe', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_probe:
        return rss_probe(args.rss_probe)
    torch.set_num_threads(args.threads)

    from sentryfuse_ros.core.pruning.budget import check_budget_levels
    from sentryfuse_ros.core.model.flops import count_flops
    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
    from sentryfuse_ros.core.runtime.backends import OnnxRunners, TorchRunners
    from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice

    args.budgets = check_budget_levels(args.budgets, '--budgets')  # where the budgets enter

    caps = Capabilities.detect()
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            ckpt = pathlib.Path(args.checkpoint)
            model, _, _ = load_sentryfuse(ckpt)
            dense_gflops = count_flops(model, model.example_inputs(model.modalities)) / 1e9
        else:
            ckpt = pathlib.Path(tmp) / 'robot_like.pt'
            dense_gflops = build_checkpoint(ckpt)
        folders, export_s = exports(args, ckpt, pathlib.Path(tmp))
        sets = {}
        for precision in ('fp32', 'bf16') if caps.cpu_bf16 else ('fp32',):
            model, gate, _ = load_sentryfuse(ckpt)
            sets[f'eager {precision}'] = TorchRunners(model, gate.scores, args.budgets, precision=precision)
        for name, folder in folders.items():
            precision = 'int8' if 'int8' in name else 'fp32'
            sets[name] = OnnxRunners(folder, RuntimeChoice(backend='onnxruntime', precision=precision), caps,
                                     threads=args.threads)
        x32 = sets['eager fp32'].example_inputs(LIVE)
        runs = {(name, b): (runners.get(LIVE, b), {m: v.to(runners.input_dtype) for m, v in x32.items()})
                for b in args.budgets for name, runners in sets.items()}
        diffs = {}
        with torch.inference_mode():   # outputs against eager fp32 at the same budget
            for (name, b), (runner, x) in runs.items():
                diffs[(name, b)] = float((runner(x).float() - runs[('eager fp32', b)][0](x32)).abs().max())
        times = time_interleaved(runs, args.warmup, args.repeats)
        dense = max(args.budgets)
        base = statistics.median(times[('eager fp32', dense)])
        ort_base = statistics.median(times[('onnxruntime fp32', dense)])
        rows = [{'runtime': name, 'budget': b, 'gflops': runs[(name, b)][0].gflops,
                 'median_ms': round(statistics.median(t), 2),
                 'speedup_vs_eager_fp32_dense': round(base / statistics.median(t), 2),
                 'speedup_vs_onnxruntime_fp32_dense': round(ort_base / statistics.median(t), 2),
                 'max_abs_diff_vs_eager_fp32': diffs[(name, b)]} for (name, b), t in times.items()]
        switch = switch_cost(sets, args.budgets)
        graphs = graph_table(folders)
        rss = {name: measure_rss(folder) for name, folder in folders.items()}
    result = {'model': args.checkpoint or 'random-weight robot-like (dim 384, depth 6, ~290 tokens)',
              'dense_gflops': round(dense_gflops, 3), 'threads': args.threads, 'warmup': args.warmup,
              'repeats': args.repeats, 'export_s': round(export_s, 1), 'cpu_bf16': caps.cpu_bf16,
              'torch': torch.__version__, 'rows': rows, 'switch': switch, 'graphs': graphs, 'rss': rss}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + '\n')
    report(result)
    print(f'wrote {out}')
    return 0


def report(result: dict) -> None:
    print(f'{"runtime":<24} {"budget":>6} {"GFLOPs":>7} {"ms":>8} {"vs eager":>8} {"vs ort":>7} {"max|diff|":>9}')
    for r in result['rows']:
        print(f'{r["runtime"]:<24} {r["budget"]:>6.2f} {r["gflops"]:>7.3f} {r["median_ms"]:>8.2f} '
              f'{r["speedup_vs_eager_fp32_dense"]:>7.2f}x {r["speedup_vs_onnxruntime_fp32_dense"]:>6.2f}x '
              f'{r["max_abs_diff_vs_eager_fp32"]:>9.2e}')
    print('switch (alternating get):', result['switch'])
    for g in result['graphs']:
        sizes = {k[:-3]: v for k, v in g.items() if k.endswith(' MB')}
        fp32 = sizes.get('onnxruntime fp32')
        line = ', '.join(f'{k} {v:.2f} MB' + (f' ({v / fp32:.2f}x)' if fp32 and k != 'onnxruntime fp32' else '')
                         for k, v in sizes.items())
        checks = '; '.join(f'{k[:-6]} held-out acc {c["fp32_accuracy"]:.3f} -> {c["accuracy"]:.3f} '
                           f'({c["delta_points"]:+.2f} pts, n {c["n"]})' for k, c in g.items() if k.endswith(' check'))
        print(f'{g["subset"]:<20} @{g["budget"]:.2f}: {line}' + (f'; {checks}' if checks else ''))
    fp32 = result['rss'].get('onnxruntime fp32')
    for name, r in result['rss'].items():
        ratio = (f' = {r["with_sessions_mb"] / fp32["with_sessions_mb"]:.2f}x fp32 (sessions alone '
                 f'{r["sessions_mb"] / fp32["sessions_mb"]:.2f}x)') if fp32 and name != 'onnxruntime fp32' else ''
        print(f'RSS {name}: {r["sessions"]} sessions ({r["graph_mb"]} MB of graphs): {r["with_sessions_mb"]} MB '
              f'(baseline {r["baseline_mb"]} MB, +{r["sessions_mb"]} MB){ratio}')


if __name__ == '__main__':
    sys.exit(main())
