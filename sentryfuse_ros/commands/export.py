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
                    '--backend onnxruntime` and trtexec read it.')
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
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys
    import time

    import torch

    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.core.pruning.budget import check_budget_levels
    from sentryfuse_ros.core.runtime.export import DEFAULT_BUDGETS, export_checkpoint

    if args.threads < 1:
        raise ConfigError(f'--threads={args.threads}: expected a positive int')
    if args.samples < 1:
        raise ConfigError(f'--samples={args.samples}: expected a positive int')
    if not args.atol > 0:
        raise ConfigError(f'--atol={args.atol}: expected a positive tolerance')
    budgets = check_budget_levels(args.budgets or DEFAULT_BUDGETS, '--budgets')  # where the budgets enter
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    manifest = export_checkpoint(args.checkpoint, args.out, budgets=budgets,
                                 subsets=args.subsets, samples=args.samples, atol=args.atol, opset=args.opset,
                                 log=lambda s: print(s, file=sys.stderr, flush=True))
    subs = manifest['subnetworks']
    print(f'exported {len(subs)} sub-networks to {args.out} in {time.perf_counter() - t0:.1f} s; '
          f'max |onnxruntime - torch| {max(s["max_abs_diff"] for s in subs):.2e} (atol {args.atol:g})')
    return 0
