"""`sentryfuse bench` (the pruning grid) and `sentryfuse bench-report` (tables, plots, markdown)."""
import pathlib
import shlex

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / 'config' / 'bench.yaml'
DEFAULT_DATA_ROOT = REPO_ROOT.parent / 'shared' / 'data'


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
    parser.add_argument('--shard', default=None, metavar='I/N',
                        help='run only the I-th of N disjoint, cost-balanced parts of the grid models '
                             '(0 <= I < N); merge the N outputs with `sentryfuse bench-merge`')
    parser.add_argument('--models', nargs='+', default=(), metavar='PATTERN',
                        help="only grid models whose 'dataset/backbone/sSEED' matches a pattern (fnmatch), "
                             "e.g. 'sim6/*/s0' 'avmnist/mid/*'")
    parser.add_argument('--data-root', default=None,
                        help=f'folder with mnist/ and fsdd/recordings/ for avmnist (default: {DEFAULT_DATA_ROOT})')
    parser.add_argument('--prepare-data', action='store_true',
                        help='only render and cache the synthetic datasets of the selected models, then exit '
                             '(run once before parallel shards that share --cache-dir)')
    parser.set_defaults(func=run)

    merge = subparsers.add_parser(
        'bench-merge', help='merge the JSONs of several `sentryfuse bench --shard` runs',
        description='Concatenate the records (a cell present twice is kept once) and merge meta: models, '
                    'errors, per-shard wall times; the grid configs must be identical.')
    merge.add_argument('inputs', nargs='+', help='shard JSONs')
    merge.add_argument('--out', required=True, help='merged JSON')
    merge.add_argument('--allow-missing', action='store_true',
                       help='skip inputs that do not exist or are unreadable (reported) instead of failing')
    merge.set_defaults(func=run_merge)

    report = subparsers.add_parser(
        'bench-report', help='tables, plots and markdown from a bench JSON',
        description='Headline table (relative improvement of SentryGate over the best baseline), per-cell '
                    'tables (mean +- std over seeds), win counts, costs of the sliced models, accuracy-vs-ratio '
                    'plots (PNG) and a markdown file, from the JSON that `sentryfuse bench` wrote.')
    report.add_argument('--in', dest='inp', required=True, help='bench JSON')
    report.add_argument('--out-dir', required=True, help='folder for bench_report.md and the PNGs')
    report.add_argument('--title', default='Pruning benchmark', help='markdown heading')
    report.add_argument('--before', default=None,
                        help='an older bench JSON of the same grid: adds SentryGate before vs after on the same '
                             'cells and seeds')
    report.set_defaults(func=run_report)


def _config_path(arg) -> pathlib.Path:
    if arg:
        return pathlib.Path(arg)
    local = pathlib.Path('config/bench.yaml')
    return local if local.is_file() else DEFAULT_CONFIG


def run(args) -> int:
    import torch

    import dataclasses

    from sentryfuse_ros.core.bench.grid import prepare_data, run_bench
    from sentryfuse_ros.core.bench.results import parse_shard, select_jobs
    from sentryfuse_ros.core.bench.spec import load_bench_config
    from sentryfuse_ros.core.errors import ConfigError

    if args.threads < 1:
        raise ConfigError(f'--threads={args.threads}: expected a positive int')
    torch.set_num_threads(args.threads)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError(f'--device={args.device!r}: CUDA is not available here; expected cpu')
    cfg_path = _config_path(args.config)
    cfg = load_bench_config(cfg_path, 'quick' if args.quick else 'full')
    cfg = dataclasses.replace(cfg, avmnist_root=str(data_root(args.data_root, cfg.avmnist_root)))
    shard = parse_shard(args.shard) if args.shard else None
    out = pathlib.Path(args.out)
    cache = pathlib.Path(args.cache_dir) if args.cache_dir else out.parent / '.bench_cache'
    if args.prepare_data:
        prepare_data(cfg, cache, select_jobs(cfg, shard=shard, models=args.models))
        return 0
    words = ['sentryfuse', 'bench'] + ['--quick'] * args.quick + ['--config', str(cfg_path), '--out', args.out,
                                                                  '--device', args.device]
    words += ['--resume'] * args.resume + ['--shard', args.shard] * bool(args.shard)
    words += (['--models'] + list(args.models)) * bool(args.models)
    words += ['--data-root', args.data_root] * bool(args.data_root)
    result = run_bench(cfg, out, cache_dir=cache, device=args.device, resume=args.resume,
                       command=' '.join(shlex.quote(w) for w in words), shard=shard, models=args.models)
    from sentryfuse_ros.core.bench.readings import headline_line
    from sentryfuse_ros.core.bench.spec import PROTOCOL_NAMES
    for proto in PROTOCOL_NAMES:  # one line per protocol, against the baseline the config fixed in advance
        print(headline_line(result['records'], proto, cfg.headline[proto], smoke=args.quick))
    return 0


def data_root(arg, configured: str) -> pathlib.Path:
    """--data-root if given; else the config's avmnist_root, a relative one taken from the repository root."""
    if arg:
        return pathlib.Path(arg).resolve()
    root = pathlib.Path(configured)
    if root.is_absolute():
        return root
    return (REPO_ROOT / root).resolve()


def run_merge(args) -> int:
    import sys

    from sentryfuse_ros.core.bench.results import merge_results, read_results, write_results
    from sentryfuse_ros.core.errors import DataError

    parts = []
    for path in args.inputs:
        try:
            parts.append(read_results(pathlib.Path(path)))
        except DataError as exc:
            if not args.allow_missing:
                raise
            print(f'bench-merge: skipping {path}: {exc}', file=sys.stderr)
    merged = merge_results(parts)
    write_results(pathlib.Path(args.out), merged['meta'], merged['records'])
    print(f'{len(merged["records"])} cells from {len(parts)} parts, {len(merged["meta"]["errors"])} errors '
          f'-> {args.out}')
    return 0


def run_report(args) -> int:
    from sentryfuse_ros.core.bench.results import read_results
    from sentryfuse_ros.core.bench.plots import write_report

    data = read_results(pathlib.Path(args.inp))
    before = read_results(pathlib.Path(args.before))['records'] if args.before else None
    path = write_report(data, pathlib.Path(args.out_dir), title=args.title, source=args.inp, before=before)
    print(path)
    return 0
