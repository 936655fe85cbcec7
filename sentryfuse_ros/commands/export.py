"""`sentryfuse export`: one ONNX file per (live subset, budget level) sub-network + manifest.json."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'export', help='export the zero-shot sub-networks of a checkpoint to ONNX (one per subset x budget)',
        description='Prune zero-shot with the checkpoint\'s SentryGate for each live modality subset and budget '
                    'level, slice, and export each sub-network with torch.onnx.export(dynamo=True) to DIR/'
                    '<subset>@<budget>.onnx (fp32, batch 1). Each graph is run in onnxruntime on sample inputs '
                    'and compared with torch before it is written. DIR/manifest.json (written last) lists subset, '
                    'budget, GFLOPs, input names and shapes, preprocessing, class names and the checkpoint '
                    'sha256; the perception node (backend: onnxruntime, onnx_dir: DIR), `sentryfuse evaluate '
                    '--backend onnxruntime` and trtexec read it. With --precision int8 each graph is then quantized '
                    'with onnxruntime (dynamic int8 weights on MatMul/Gemm, or --quantization static: QDQ calibrated '
                    'on scenes of the training distribution or on --calibration DATASET) and checked against its '
                    'fp32 graph on held-out scenes; DIR/<subset>@<budget>.int8.onnx is written only within '
                    '--max-drop-points and --max-logit-diff, and the manifest records each check.')
    parser.add_argument('--checkpoint', required=True, help='checkpoint written by `sentryfuse train`')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--budgets', type=float, nargs='+', default=None,
                        help='budget levels (default 1.0 0.85 0.7 0.5 0.4, the node\'s budget_levels)')
    parser.add_argument('--subsets', nargs='+', default=None,
                        help="modality subsets like camera+lidar audio (default: every non-empty subset)")
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest allowed max |onnxruntime - torch| logit difference (default 1e-4)')
    parser.add_argument('--samples', type=int, default=3, help='sample inputs per graph for the check (default 3)')
    parser.add_argument('--opset', type=int, default=None,
                        help="ONNX opset (default: the exporter's, 20 with torch 2.13; 18 is the lowest it writes)")
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    parser.add_argument('--precision', default='fp32', choices=['fp32', 'int8'],
                        help='graph weights: fp32 (default) or int8 (quantized and checked against fp32)')
    parser.add_argument('--quantization', default='dynamic', choices=['dynamic', 'static'],
                        help='int8: dynamic (int8 weights, activations per call; fastest on CPU, default) or static '
                             '(QDQ with calibrated activation ranges, e.g. for TensorRT int8)')
    parser.add_argument('--int8-ops', nargs='+', default=['MatMul', 'Gemm'], choices=['MatMul', 'Gemm', 'Conv'],
                        help='int8: ONNX ops whose weights are quantized (default MatMul Gemm; Conv adds the patch '
                             'embeddings, smaller but slower on CPU, see docs/int8.md)')
    parser.add_argument('--calibration', default='scenes', metavar='scenes|DATASET',
                        help="static int8: 'scenes' (the checkpoint's training scene config, default) or a folder "
                             'of `sentryfuse dataset`')
    parser.add_argument('--calibration-samples', type=int, default=64, help='static int8: calibration samples (64)')
    parser.add_argument('--check-samples', type=int, default=300,
                        help='int8: held-out samples of the accuracy check per graph (default 300)')
    parser.add_argument('--max-drop-points', type=float, default=1.0,
                        help='int8: largest allowed accuracy drop vs fp32 in the check [points] (default 1.0)')
    parser.add_argument('--max-logit-diff', type=float, default=1.0,
                        help='int8: largest allowed max |int8 - fp32| logit difference in the check (default 1.0)')
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys
    import time

    import torch

    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.core.pruning.budget import check_budget_levels
    from sentryfuse_ros.core.runtime.export import DEFAULT_BUDGETS, export_checkpoint
    from sentryfuse_ros.core.runtime.quantize import QuantizeConfig

    if args.threads < 1:
        raise ConfigError(f'--threads={args.threads}: expected a positive int')
    if args.samples < 1:
        raise ConfigError(f'--samples={args.samples}: expected a positive int')
    if not args.atol > 0:
        raise ConfigError(f'--atol={args.atol}: expected a positive tolerance')
    budgets = check_budget_levels(args.budgets or DEFAULT_BUDGETS, '--budgets')  # where the budgets enter
    quantize = None
    if args.precision == 'int8':
        quantize = QuantizeConfig(quantization=args.quantization, op_types=tuple(dict.fromkeys(args.int8_ops)),
                                  calibration=args.calibration, calibration_samples=args.calibration_samples,
                                  check_samples=args.check_samples, max_drop_points=args.max_drop_points,
                                  max_logit_diff=args.max_logit_diff)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    manifest = export_checkpoint(args.checkpoint, args.out, budgets=budgets,
                                 subsets=args.subsets, samples=args.samples, atol=args.atol, opset=args.opset,
                                 precision=args.precision, quantize=quantize,
                                 log=lambda s: print(s, file=sys.stderr, flush=True))
    subs = manifest['subnetworks']
    print(f'exported {len(subs)} sub-networks ({args.precision}) to {args.out} in {time.perf_counter() - t0:.1f} s; '
          f'max |onnxruntime - torch| {max(s["max_abs_diff"] for s in subs):.2e} (atol {args.atol:g})')
    if quantize is not None:
        worst = min(subs, key=lambda s: s['check']['delta_points'])
        print(f'int8 {args.quantization}: {sum(s["bytes"] for s in subs) / sum(s["fp32_bytes"] for s in subs):.2f}x '
              f'the fp32 bytes; largest accuracy change {worst["check"]["delta_points"]:+.2f} points ({worst["key"]}) '
              f'on {quantize.check_samples} held-out samples; max |int8 - fp32| logit '
              f'{max(s["check"]["max_abs_logit_diff"] for s in subs):.2e}')
    return 0
