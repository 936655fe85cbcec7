"""`sentryfuse train`: train SentryFuse + SentryGate on synthetic scenes (CPU, seed fixed, resumable)."""
import shlex


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'train', help='train a SentryFuse model and its SentryGate table',
        description='Train on synthetic tri-modal scenes with the modality-dropout curriculum, the '
                    'first-order saliency teacher and the listwise alignment loss; write one checkpoint '
                    '(config, weights, class names, gate table, saliency EMA, training metadata). A state '
                    'file <out stem>.train_state.pt is kept next to --out while training; --resume '
                    'continues from it.')
    parser.add_argument('--config', required=True, help='training YAML (sections model, preprocess, data, train)')
    parser.add_argument('--out', required=True, help='output checkpoint (.pt)')
    parser.add_argument('--resume', action='store_true', help='continue an interrupted run with the same --out')
    parser.add_argument('--seed', type=int, default=None, help='override train.seed')
    parser.add_argument('--steps', type=int, default=None, help='override train.steps')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch decides)')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu, the reference)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')
    parser.add_argument('--data', default=None, metavar='DS',
                        help='train on a dataset built by `sentryfuse dataset` instead of synthetic scenes '
                             '(its preprocessing must equal the config\'s)')
    parser.add_argument('--val-bags', default=None, metavar='NAME,...',
                        help='with --data: bags held out for validation, by name (default: the last 10%% of '
                             'the bags); the split is by bag, never by frame')
    parser.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    import torch

    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.core.training.train import load_train_config, train

    cfg = load_train_config(args.config)
    overrides = {}
    if args.seed is not None:
        overrides['seed'] = args.seed
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f'--steps={args.steps}: expected a positive int')
        overrides['steps'] = args.steps
    if overrides:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides))
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f'--threads={args.threads}: expected a positive int')
        torch.set_num_threads(args.threads)
    words = ['sentryfuse', 'train', '--config', args.config, '--out', args.out]
    words += ['--resume'] * args.resume + [f'--{k}={v}' for k, v in overrides.items()]
    command = ' '.join(shlex.quote(str(w)) for w in words)
    if args.data is None:
        if args.val_bags is not None:
            raise ConfigError('--val-bags needs --data')
        if torchrun_world()[1] > 1:
            raise ConfigError('torchrun with more than one process needs --data (a bag dataset to shard)')
        train(cfg, args.out, resume=args.resume, command=command, progress=not args.no_progress,
              device=args.device)
        return 0
    return train_on_dataset(args, cfg, command)


def torchrun_world():
    """(rank, world size, local rank) as torchrun passes them to each process; (0, 1, 0) without torchrun."""
    import os
    return tuple(int(os.environ.get(k, d)) for k, d in (('RANK', 0), ('WORLD_SIZE', 1), ('LOCAL_RANK', 0)))


def train_on_dataset(args, cfg, command: str) -> int:
    """`--data DS`: a bag dataset, split by bag; under torchrun, one DDP process per device."""
    from sentryfuse_ros.core.data.bagdataset import BagDataset
    from sentryfuse_ros.core.training import distributed
    from sentryfuse_ros.core.training.bagsource import BagBatches, default_val_bags
    from sentryfuse_ros.core.training.train import train

    dataset = BagDataset(args.data)
    dataset.check_preprocess(cfg.preprocess)
    val_bags = ([b.strip() for b in args.val_bags.split(',') if b.strip()] if args.val_bags is not None
                else default_val_bags(dataset.bag_names))
    rank, world, local_rank = torchrun_world()
    dist = None
    device = args.device
    if world > 1:
        dist = distributed.init_distributed(rank, world, local_rank, args.device)
        device = f'cuda:{local_rank}' if dist.backend == 'nccl' else 'cpu'
    try:
        source = BagBatches(dataset, cfg.model.modalities, val_bags, batch_size=cfg.train.batch_size,
                            seed=cfg.train.seed, rank=rank, world_size=world)
        command += f' --data {args.data}' + (f' --val-bags {args.val_bags}' if args.val_bags is not None else '')
        if world > 1:
            command = f'torchrun --nproc_per_node {world} -m sentryfuse_ros.cli ' + command.split(' ', 1)[1]
        train(cfg, args.out, resume=args.resume, command=command, progress=not args.no_progress, device=device,
              data=source, dist=dist)
    finally:
        distributed.shutdown()
    return 0
