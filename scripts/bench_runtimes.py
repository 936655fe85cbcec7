#!/usr/bin/env python3
"""Deployment runtimes at robot scale: eager fp32 vs eager bf16 vs onnxruntime (CPU EP), budgets 1.0 / 0.5.

Builds a random-weight SentryFuse model of robot width (dim 384, depth 6, 6 query / 2 KV heads,
FFN 1536 in blocks of 64; camera 224x224 in 16 px patches, lidar BEV 128x128 in 16-cell patches,
1 s of 16 kHz audio with a 512-point STFT: ~290 tokens), saves it with an untrained SentryGate as a
checkpoint, exports the all-modality sub-networks at each budget with ``sentryfuse export``'s code,
and times every runtime interleaved (round-robin, so load drifts hit all alike) at batch 1 on
``--threads`` threads. Random weights: timings and torch/onnxruntime differences only; accuracy is
measured on the trained tiny model with ``sentryfuse evaluate --backend/--precision``.

    python scripts/bench_runtimes.py --out runs/bench_runtimes.json
"""
import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import torch


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--budgets', type=float, nargs='+', default=[1.0, 0.5])
    parser.add_argument('--checkpoint', default=None,
                        help='a trained checkpoint (e.g. models/sentryfuse_robot.pt); default: the random robot-like model')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sentryfuse_ros.core.pruning.budget import check_budget_levels
    from sentryfuse_ros.core.runtime.backends import OnnxRunners, TorchRunners
    from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice
    from sentryfuse_ros.core.runtime.export import export_checkpoint
    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse

    args.budgets = check_budget_levels(args.budgets, '--budgets')  # where the budgets enter

    caps = Capabilities.detect()
    live = ('camera', 'lidar', 'audio')
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            from sentryfuse_ros.core.model.flops import count_flops
            ckpt = pathlib.Path(args.checkpoint)
            model, _, _ = load_sentryfuse(ckpt)
            dense_gflops = count_flops(model, model.example_inputs(model.modalities)) / 1e9
        else:
            ckpt = pathlib.Path(tmp) / 'robot_like.pt'
            dense_gflops = build_checkpoint(ckpt)
        t0 = time.perf_counter()
        manifest = export_checkpoint(ckpt, pathlib.Path(tmp) / 'onnx', budgets=args.budgets, subsets=['+'.join(live)],
                                     log=lambda s: print(s, file=sys.stderr, flush=True))
        export_s = time.perf_counter() - t0
        sets = {}
        for precision in ('fp32', 'bf16'):
            model, gate, _ = load_sentryfuse(ckpt)
            sets[f'eager {precision}'] = TorchRunners(model, gate.scores, args.budgets, precision=precision)
        ort = OnnxRunners(pathlib.Path(tmp) / 'onnx', RuntimeChoice(backend='onnxruntime'), caps, threads=args.threads)
        sets['onnxruntime fp32'] = ort
        x32 = sets['eager fp32'].example_inputs(live)
        runs = {}
        for name, runners in sets.items():
            x = {m: v.to(runners.input_dtype) for m, v in x32.items()}
            for b in args.budgets:
                runner = runners.get(live, b)
                runs[(name, b)] = (runner, x)
        # outputs against eager fp32 at the same budget
        diffs = {}
        with torch.inference_mode():
            for (name, b), (runner, x) in runs.items():
                ref = runs[('eager fp32', b)][0](x32)
                diffs[f'{name}@{b:.2f}'] = float((runner(x).float() - ref).abs().max())
        times = {k: [] for k in runs}
        for i in range(3 + args.repeats):
            for key, (runner, x) in runs.items():
                start = time.perf_counter()
                runner(x)
                if i >= 3:
                    times[key].append((time.perf_counter() - start) * 1e3)
        base = statistics.median(times[('eager fp32', max(args.budgets))])
        rows = []
        for (name, b), t in times.items():
            ms = statistics.median(t)
            rows.append({'runtime': name, 'budget': b, 'gflops': runs[(name, b)][0].gflops, 'median_ms': round(ms, 2),
                         'speedup_vs_eager_fp32_dense': round(base / ms, 2),
                         'max_abs_diff_vs_eager_fp32': diffs[f'{name}@{b:.2f}']})
        switch = {}
        for name, runners in (('torch sub-networks', sets['eager fp32']), ('onnxruntime sessions', ort)):
            keys = [(live, b) for b in args.budgets]
            dt = []
            for i in range(1000):
                start = time.perf_counter()
                runners.get(*keys[i % len(keys)])
                dt.append((time.perf_counter() - start) * 1e3)
            switch[name] = {'median_ms': round(statistics.median(dt), 5), 'max_ms': round(max(dt), 4)}
    result = {'model': args.checkpoint or 'random-weight robot-like (dim 384, depth 6, ~290 tokens)', 'dense_gflops': round(dense_gflops, 3),
              'threads': args.threads, 'repeats': args.repeats, 'export_s': round(export_s, 1),
              'cpu_bf16': caps.cpu_bf16, 'torch': torch.__version__, 'rows': rows, 'switch': switch,
              'export_max_abs_diff': max(s['max_abs_diff'] for s in manifest['subnetworks'])}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + '\n')
    print(f'{"runtime":<18} {"budget":>6} {"GFLOPs":>7} {"ms":>8} {"speed-up":>8} {"max|diff|":>9}')
    for r in rows:
        print(f'{r["runtime"]:<18} {r["budget"]:>6.2f} {r["gflops"]:>7.3f} {r["median_ms"]:>8.2f} '
              f'{r["speedup_vs_eager_fp32_dense"]:>7.2f}x {r["max_abs_diff_vs_eager_fp32"]:>9.2e}')
    print('switch (alternating get):', switch)
    print(f'export of {len(args.budgets)} sub-networks: {export_s:.1f} s; wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
