"""`sentryfuse dataset`: labelled bags -> a training dataset, sampled as the perception node samples."""
import shlex


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'dataset', help='build a training dataset from labelled rosbag2 bags',
        description='Drive each bag through the same health monitor, freshness rules, message converters and '
                    'preprocessing as the perception node (the offline replay\'s loop), and store the model '
                    'inputs of every inference tick with its ground truth: sharded float16 tensors (memory-mapped '
                    'for training) plus manifest.json. A tick with a dead sensor is a real dropout sample and is '
                    'kept. Written to OUT.partial and renamed when complete; rerun the same command to resume. '
                    'Unreadable bags, bags without sensor topics or without labels are reported and skipped.')
    parser.add_argument('bags', nargs='+', metavar='BAG', help='bag directories (sqlite3 or mcap, split bags too)')
    parser.add_argument('--out', required=True, help='dataset folder (written as OUT.partial, renamed when complete)')
    parser.add_argument('--labels', default=None, metavar='TOPIC|FILE.csv',
                        help='ground truth: a std_msgs/String topic, or a CSV with header t,label (one bag) or '
                             'bag,t,label (bag = folder name), t in s since bag start; default: the replay '
                             'config\'s label topic')
    parser.add_argument('--topic', action='append', default=[], metavar='MODALITY=/TOPIC',
                        help='map a bag topic to camera|lidar|audio|battery|labels (repeatable; must exist)')
    parser.add_argument('--rate', type=float, default=None, metavar='HZ',
                        help='samples per second of bag time (default: replay config rate, the inference rate)')
    parser.add_argument('--classes', default=None, metavar='A,B,...',
                        help='class names in model order (default: the sorted labels found)')
    parser.add_argument('--config', default='config/train_sim.yaml', metavar='FILE',
                        help='training YAML whose model modalities and preprocess section the dataset is '
                             'built for (default: %(default)s)')
    parser.add_argument('--replay-config', default=None, metavar='FILE',
                        help='replay YAML: topic map, labels (default: config/replay.yaml)')
    parser.add_argument('--params', default=None, metavar='FILE',
                        help='the graph\'s ros__parameters YAML: health thresholds, freshness limits '
                             '(default: config/perception.yaml)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out (or a .partial of '
                                                                  'other settings)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')
    parser.set_defaults(func=run)


def dataset_inputs(args):
    """(replay config, labels CSV or None): the replay's own flag handling (topic map, label topic or CSV,
    rate) over config/replay.yaml and the graph's parameters (--params, default config/perception.yaml)."""
    import argparse

    from sentryfuse_ros.commands.replay import build_inputs
    replay_args = argparse.Namespace(config=args.replay_config, topic=args.topic, labels=args.labels,
                                     infer_rate=args.rate, trigger=None, checkpoint=None, budget=None,
                                     drop=[], battery_profile=None, params=args.params)
    config, _faults, label_csv = build_inputs(replay_args)
    return config, label_csv


def run(args) -> int:
    import sys

    from sentryfuse_ros.commands.replay import progress_bar, resolve_file
    from sentryfuse_ros.core.replay.dataset import build_dataset
    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.core.training.train import load_train_config
    from sentryfuse_ros.msg_arrays.modality_inputs import engine_converters

    if args.rate is not None and not 0 < args.rate <= 1000:
        raise ConfigError(f'--rate={args.rate!r}: expected a rate in (0, 1000] Hz')
    cfg = load_train_config(resolve_file(args.config, '--config'))
    config, label_csv = dataset_inputs(args)
    classes = [c.strip() for c in args.classes.split(',') if c.strip()] if args.classes else None
    words = ['sentryfuse', 'dataset', *args.bags, '--out', args.out, '--config', args.config]
    for flag in ('labels', 'rate', 'classes', 'replay_config', 'params'):
        if getattr(args, flag) is not None:
            words += [f'--{flag.replace("_", "-")}', str(getattr(args, flag))]
    words += [w for t in args.topic for w in ('--topic', t)]
    result = build_dataset(
        args.bags, args.out, pre=cfg.preprocess, modalities=cfg.model.modalities, config=config,
        make_converters=engine_converters, label_csv=label_csv, class_names=classes, overwrite=args.overwrite,
        command=' '.join(shlex.quote(w) for w in words), log=lambda s: print(s, file=sys.stderr),
        progress=None if args.no_progress else progress_bar())
    m = result.manifest
    speed = result.bag_seconds / result.wall_s if result.wall_s > 0 else float('nan')
    print(f"wrote {result.path}: {m['samples']} samples from {len(m['bags'])} bags "
          f"({len(m['skipped'])} skipped), classes {m['class_names']}, preprocess {m['preprocess_hash']}; "
          f"{result.bag_seconds:.1f} s of bag in {result.wall_s:.1f} s ({speed:.1f}x real time)")
    return 0
