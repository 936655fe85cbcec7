"""`sentryfuse bench` (the pruning grid) and `sentryfuse bench-report` (tables, plots, markdown)."""
import pathlib
import shlex

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[2] / 'config' / 'bench.yaml'


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'bench', help='benchmark SentryGate against zero-shot pruning baselines',
        description='Train one model per (backbone, dataset, seed) with SentryGate and the curriculum (cached), '
                    'then prune that same checkpoint with every method at every ratio and modality condition, '
                    'slice it and evaluate it; every cell is a JSON record in --out.')
    parser.add_argument('--quick', action='store_true', help='the reduced grid (config section quick)')
    parser.add_argument('--config', default=None, help=f'grid YAML (default: {DEFAULT_CONFIG.name} of the package)')
    parser.add_argument('--out', required=True, help='output JSON ({"meta", "records"})')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N] (default cpu)')
    parser.add_argument('--resume', action='store_true', help='keep the cells already in --out, compute the rest')
    parser.add_argument('--cache-dir', default=None,
                        help='datasets and trained checkpoints (default: .bench_cache next to --out)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: fastest on a shared 2-core machine)')
    parser.set_defaults(func=run)

    report = subparsers.add_parser(
        'bench-report', help='tables, plots and markdown from a bench JSON',
        description='Headline table (relative improvement of SentryGate over the best baseline), per-cell '
                    'tables (mean +- std over seeds), win counts, costs of the sliced models, accuracy-vs-ratio '
                    'plots (PNG) and a markdown file, from the JSON that `sentryfuse bench` wrote.')
    report.add_argument('--in', dest='inp', required=True, help='bench JSON')
    report.add_argument('--out-dir', required=True, help='folder for bench_report.md and the PNGs')
    report.add_argument('--title', default='Pruning benchmark', help='markdown heading')
    report.set_defaults(func=run_report)


def _config_path(arg) -> pathlib.Path:
    if arg:
        return pathlib.Path(arg)
    local = pathlib.Path('config/bench.yaml')
    return local if local.is_file() else DEFAULT_CONFIG


def run(args) -> int:
    import torch

    from sentryfuse_ros.core.bench import load_bench_config, run_bench
    from sentryfuse_ros.core.errors import ConfigError

    if args.threads < 1:
        raise ConfigError(f'--threads={args.threads}: expected a positive int')
    torch.set_num_threads(args.threads)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError(f'--device={args.device!r}: CUDA is not available here; expected cpu')
    cfg_path = _config_path(args.config)
    cfg = load_bench_config(cfg_path, 'quick' if args.quick else 'full')
    out = pathlib.Path(args.out)
    cache = pathlib.Path(args.cache_dir) if args.cache_dir else out.parent / '.bench_cache'
    words = ['sentryfuse', 'bench'] + ['--quick'] * args.quick + ['--config', str(cfg_path), '--out', args.out,
                                                                  '--device', args.device]
    words += ['--resume'] * args.resume
    run_bench(cfg, out, cache_dir=cache, device=args.device, resume=args.resume,
              command=' '.join(shlex.quote(w) for w in words))
    return 0


def run_report(args) -> int:
    from sentryfuse_ros.core.bench import read_results
    from sentryfuse_ros.core.benchplots import write_report

    data = read_results(pathlib.Path(args.inp))
    path = write_report(data, pathlib.Path(args.out_dir), title=args.title, source=args.inp)
    print(path)
    return 0
