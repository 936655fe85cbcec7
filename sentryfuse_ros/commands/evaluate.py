"""`sentryfuse evaluate`: every modality subset x budget of a checkpoint on a fresh synthetic test set."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'evaluate', help='evaluate a checkpoint per modality subset and compute budget (zero-shot pruning)',
        description='Draw a fresh synthetic test set with --seed, prune zero-shot with the checkpoint\'s '
                    'SentryGate for every modality subset at each budget, physically slice, and record '
                    'accuracy, GFLOPs, params, batch-1 latency and peak memory; also dense-vs-sliced ratios, '
                    'sub-network build/switch times and SentryAttend vs dense attention. Writes JSON and '
                    'prints a table.')
    parser.add_argument('--checkpoint', required=True, help='checkpoint written by `sentryfuse train`')
    parser.add_argument('--seed', type=int, required=True, help='test-set seed (not the training/validation seeds)')
    parser.add_argument('--out', required=True, help='output JSON file')
    parser.add_argument('--n', type=int, default=1000, help='test scenes (default 1000)')
    parser.add_argument('--budgets', type=float, nargs='+', default=[1.0, 0.7, 0.5],
                        help='compute budgets (default 1.0 0.7 0.5)')
    parser.add_argument('--dense-checkpoint', default=None,
                        help='dense-attention twin (config/train_sim_dense.yaml) for the accuracy comparison')
    parser.add_argument('--repeats', type=int, default=20, help='timed forward passes per latency (default 20)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads for the measurements (default 1: steadier batch-1 latency)')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    parser.add_argument('--backend', default='torch', choices=['torch', 'onnxruntime'],
                        help='runtime of the sub-networks (default torch); with onnxruntime or --precision other '
                             'than fp32, reports accuracy per subset x budget against eager torch fp32')
    parser.add_argument('--precision', default='fp32', choices=['fp32', 'bf16', 'fp16', 'int8'],
                        help='fp32 (default), bf16 (CPU with native bf16, or CUDA), fp16 (CUDA), int8 (--backend '
                             'onnxruntime with --onnx-dir of `sentryfuse export --precision int8`)')
    parser.add_argument('--onnx-dir', default=None, help='export folder of `sentryfuse export` (--backend onnxruntime)')
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.core.eval.evaluate import evaluate, format_table
    from sentryfuse_ros.core.pruning.budget import check_budget_levels

    if args.threads < 1:
        raise ConfigError(f'--threads={args.threads}: expected a positive int')
    if args.repeats < 1:
        raise ConfigError(f'--repeats={args.repeats}: expected a positive int')
    args.budgets = check_budget_levels(args.budgets, '--budgets')  # where the budgets enter
    torch.set_num_threads(args.threads)
    from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice, check_choice
    check_choice(RuntimeChoice(device=args.device.split(':')[0], precision=args.precision, backend=args.backend),
                 Capabilities.detect())   # e.g. --device cuda without CUDA: a named error, not a traceback
    if args.backend != 'torch' or args.precision != 'fp32':
        return _run_runtime(args)
    result = evaluate(args.checkpoint, seed=args.seed, n=args.n, budgets=tuple(args.budgets),
                      dense_checkpoint=args.dense_checkpoint, latency_repeats=args.repeats, device=args.device,
                      log=lambda s: print(s, file=sys.stderr, flush=True))
    return _write_report(args.out, result, format_table(result))


def _run_runtime(args) -> int:
    """Accuracy under a deployment runtime (core.runtime.accuracy), written like the default report."""
    import sys

    from sentryfuse_ros.core.eval.accuracy import format_runtime_table, runtime_accuracy
    from sentryfuse_ros.core.runtime.choice import RuntimeChoice

    choice = RuntimeChoice(device=args.device, precision=args.precision, backend=args.backend)
    result = runtime_accuracy(args.checkpoint, seed=args.seed, choice=choice, n=args.n, budgets=tuple(args.budgets),
                              onnx_dir=args.onnx_dir, threads=args.threads,
                              log=lambda s: print(s, file=sys.stderr, flush=True))
    return _write_report(args.out, result, format_runtime_table(result))


def _write_report(out, result, table: str) -> int:
    """Write ``result`` as JSON to ``out`` (folders made), print the table and where it went."""
    import json
    import pathlib

    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + '\n', encoding='utf-8')
    print(table)
    print(f'\nwrote {out}')
    return 0
