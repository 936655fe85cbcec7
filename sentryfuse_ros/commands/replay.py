"""`sentryfuse replay`: evaluate the perception stack on a rosbag2 bag (offline or live)."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'replay', help='replay a rosbag2 bag through health + perception and write a report',
        description='Replay a rosbag2 bag (sqlite3 or mcap) through the health monitor and the perception '
                    'engine. offline: the same core code as the nodes, on the bag clock, deterministic, as '
                    'fast as the CPU allows. live: the bag\'s CDR bytes played onto ROS topics against the '
                    'real nodes started in this process. Writes metrics.json, report.md and PNG plots to --out.')
    parser.add_argument('bag', help='bag directory (or one of its storage files)')
    parser.add_argument('--out', required=True, help='report folder (written as OUT.partial, renamed when complete)')
    parser.add_argument('--mode', choices=('offline', 'live'), default='offline')
    parser.add_argument('--labels', default=None, metavar='TOPIC|FILE.csv',
                        help='ground truth: a std_msgs/String topic, or a CSV with header t,label (t in s '
                             'since bag start); default: the config\'s label topic when the bag has it')
    parser.add_argument('--topic', action='append', default=[], metavar='MODALITY=/TOPIC',
                        help='map a bag topic to camera|lidar|audio|battery|labels (repeatable; must exist)')
    parser.add_argument('--drop', action='append', default=[], metavar='MODALITY@START:END',
                        help='inject a dropout: remove a modality\'s messages in [START, END) s since bag start '
                             '(repeatable; END may be "end")')
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument('--budget', type=float, default=None, metavar='B', help='fixed compute budget in (0, 1]')
    budget.add_argument('--battery-profile', default=None, metavar='FILE',
                        help='CSV (t,percentage) or YAML [[t, fraction], ...] replacing the bag\'s battery')
    parser.add_argument('--rate', type=float, default=1.0, metavar='R', help='live: playback speed factor')
    parser.add_argument('--clock', action='store_true', help='live: publish /clock, nodes on sim time')
    parser.add_argument('--domain-id', type=int, default=None, help='live: DDS domain (default ROS_DOMAIN_ID)')
    parser.add_argument('--infer-rate', type=float, default=None, metavar='HZ',
                        help='inferences per second of bag time (default: config replay.rate)')
    parser.add_argument('--trigger', choices=('timer', 'camera'), default=None, help='inference trigger')
    parser.add_argument('--scenario', default=None, metavar='FILE',
                        help='scenario YAML of the recording: its events name the report\'s phases')
    parser.add_argument('--ignore-health', action='store_true',
                        help='infer on every fresh sample without the health monitor\'s rate limits (short or '
                             'sparse bags, whose few messages never make a sensor live); budgets still apply')
    parser.add_argument('--checkpoint', default=None, metavar='PATH', help='model (default: models/sentryfuse_sim.pt)')
    parser.add_argument('--config', default=None, metavar='FILE', help='replay YAML (default: config/replay.yaml)')
    parser.add_argument('--params', default=None, metavar='FILE',
                        help='the graph\'s ros__parameters YAML: health thresholds, freshness, budget levels, '
                             'rate (default: config/perception.yaml)')
    parser.add_argument('--threads', type=int, default=1, metavar='N',
                        help='torch CPU threads (default 1: fastest for batch-1 inference of a small model)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out folder')
    parser.add_argument('--no-plots', action='store_true', help='skip the PNG plots')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')
    parser.set_defaults(func=run)


def resolve_file(path: str, what: str) -> pathlib.Path:
    """An existing file: as given (absolute or relative to the cwd), else under the package root."""
    from sentryfuse_ros.core.errors import ConfigError
    for candidate in (pathlib.Path(path), ROOT / path, ROOT / 'config' / path):
        if candidate.is_file():
            return candidate
    raise ConfigError(f'{what} {path!r} does not exist (looked in the working directory and {str(ROOT)!r})')


def progress_bar():
    """progress(fraction, text) drawing a bar on stderr (one line per 10% when not a terminal)."""
    from sentryfuse_ros.core.training.train import Progress
    bar = Progress(1000, stream=sys.stderr)
    return lambda frac, text: bar.update(int(round(min(max(frac, 0.0), 1.0) * 1000)), 0, text)


def default_checkpoint() -> str:
    path = ROOT / 'models' / 'sentryfuse_sim.pt'
    if not path.is_file():
        try:
            from ament_index_python.packages import get_package_share_directory
            path = pathlib.Path(get_package_share_directory('sentryfuse_ros')) / 'models' / 'sentryfuse_sim.pt'
        except Exception:  # noqa: BLE001 - no ament index (pip install of the core)
            pass
    return str(path)


def build_inputs(args):
    """(config, faults, labels CSV path or None, phases scenario) from the flags."""
    import dataclasses

    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.core.replay.faults import Faults, load_battery_profile, parse_drop
    from sentryfuse_ros.core.replay.replay import load_replay_config
    from sentryfuse_ros.core.runtime.param_files import graph_parameters

    params_file = getattr(args, 'params', None)
    graph = graph_parameters(resolve_file(params_file, '--params') if params_file else None)
    if args.config is not None:
        config = load_replay_config(resolve_file(args.config, '--config'), graph)
    else:
        default = ROOT / 'config' / 'replay.yaml'
        config = load_replay_config(default if default.is_file() else None, graph)
    topics = {}
    for item in args.topic:
        modality, sep, topic = item.partition('=')
        if not sep or not topic.startswith('/'):
            raise ConfigError(f'--topic {item!r}: expected MODALITY=/topic, e.g. camera=/front/image_raw')
        topics[modality.strip()] = topic.strip()
    label_file = None
    if args.labels:
        if args.labels.lower().endswith('.csv'):
            label_file = args.labels
            topics.setdefault('labels', '')
        elif args.labels.startswith('/'):
            topics['labels'] = args.labels
        else:
            raise ConfigError(f'--labels {args.labels!r}: expected a topic (/name) or a .csv file')
    from sentryfuse_ros.core.errors import BagError
    try:
        config = dataclasses.replace(config, topics=config.topics.with_topics(**topics))
    except BagError as exc:
        raise ConfigError(f'--topic: {exc}') from exc
    replay = {}
    if args.infer_rate is not None:
        replay['rate'] = args.infer_rate
    if args.trigger is not None:
        replay['trigger'] = args.trigger
    if args.checkpoint is not None:
        replay['checkpoint'] = args.checkpoint
    if getattr(args, 'ignore_health', False):
        replay['use_health'] = False
    if replay:
        config = dataclasses.replace(config, replay=dataclasses.replace(config.replay, **replay))
    faults = Faults(drops=tuple(parse_drop(d) for d in args.drop),
                    battery_profile=load_battery_profile(args.battery_profile) if args.battery_profile else (),
                    budget=args.budget)  # checked by Faults, where it enters core
    return config, faults, label_file


def report_phases(scenario_path, faults, duration):
    """Phases named by the recording's scenario (optional) plus the injected drops."""
    from sentryfuse_ros.core.replay.phases import scenario_phases
    from sentryfuse_ros.core.sim.scenario import Scenario, ScenarioEvent, load_scenario

    events = list(load_scenario(resolve_file(scenario_path, '--scenario')).events) if scenario_path else []
    for w in faults.drops:
        events.append(ScenarioEvent(t=w.start, action='drop', modality=w.modality))
        if w.end < duration:
            events.append(ScenarioEvent(t=w.end, action='restore', modality=w.modality))
    return scenario_phases(Scenario(events=tuple(events)), duration) if events else []


def run(args) -> int:
    from sentryfuse_ros.core.bags.reader import SENSOR_MODALITIES, BagSource
    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.core.replay.faults import load_label_csv
    from sentryfuse_ros.core.replay.report import write_report

    config, faults, label_file = build_inputs(args)
    out = pathlib.Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f'--out {str(out)!r} exists; choose a new folder or pass --overwrite')
    with BagSource(args.bag) as bag:  # fail fast: missing/corrupt bag, unknown storage, absent topic
        mapping, notes = bag.resolve(config.topics)
        duration = max(0.0, (bag.end_ns - bag.start_ns) / 1e9) if bag.message_count else 0.0
    sensors = {m: t for m, t in mapping.items() if m in SENSOR_MODALITIES}
    if not sensors:
        print(f'sentryfuse replay: bag {args.bag!r} has no sensor topics '
              f'({"; ".join(notes)}); reporting what it holds', file=sys.stderr)
    if args.mode == 'live' and not config.replay.use_health:
        raise ConfigError('--ignore-health applies to --mode offline (live mode runs the real health_monitor node)')
    checkpoint = config.replay.checkpoint or default_checkpoint()
    progress = None if args.no_progress else progress_bar()
    phases = report_phases(args.scenario, faults, duration)

    import torch

    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
    if args.threads < 1:
        raise ConfigError(f'--threads={args.threads}: expected a positive int')
    torch.set_num_threads(args.threads)
    model, gate, _meta = load_sentryfuse(checkpoint, device=config.replay.device)
    class_names = tuple(model.config.class_names)
    labels = (load_label_csv(label_file, class_names, duration, config.replay.label_transition_s)
              if label_file else None)
    if args.mode == 'offline':
        from sentryfuse_ros.msg_arrays.modality_inputs import engine_converters
        from sentryfuse_ros.core.runtime.engine import PerceptionEngine
        from sentryfuse_ros.core.replay.replay import OfflineReplay
        engine = PerceptionEngine(model, gate.scores, config.engine, device=config.replay.device)
        prebuild_ms = engine.prebuild()
        with torch.inference_mode():
            result = OfflineReplay(engine, config, engine_converters, faults=faults, labels=labels,
                                   progress=progress).run(args.bag)
        result.prebuild_ms = prebuild_ms
    else:
        del model, gate
        from sentryfuse_ros.apps.replay_live import replay_live
        result = replay_live(args.bag, config, checkpoint=checkpoint, faults=faults, labels=labels,
                             rate=args.rate, publish_clock=args.clock, domain_id=args.domain_id,
                             progress=progress)
    result.settings['checkpoint'] = str(checkpoint)
    metrics = write_report(out, result, phases, overwrite=args.overwrite, plots=not args.no_plots)
    acc = metrics['accuracy']['overall']['accuracy']
    print(f"sentryfuse replay ({args.mode}): {metrics['run']['inferences']} inferences over "
          f"{metrics['bag']['duration_s']:.1f} s of bag in {metrics['run']['wall_s']:.1f} s "
          f"({metrics['run']['speed_x_realtime'] or 0:.1f}x real time); accuracy "
          f"{'-' if acc is None else f'{acc:.3f}'}; report {str(out / 'report.md')!r}")
    print(metrics['phase_table'])
    for m, n in sorted(metrics['skipped']['engine_errors'].items()):
        print(f"sentryfuse replay: {m}: {n} messages failed ({metrics['skipped']['engine_last_error'].get(m, '')})",
              file=sys.stderr)
    for warning in metrics['warnings']:
        print(f'sentryfuse replay: warning: {warning}', file=sys.stderr)
    if metrics['run']['inferences'] == 0 and sensors:
        print(f'sentryfuse replay: error: 0 inferences from sensor topics {sorted(sensors.values())} '
              f'(see the warnings above and {str(out / "report.md")!r})', file=sys.stderr)
        return 1
    return 0
