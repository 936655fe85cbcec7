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
    train(cfg, args.out, resume=args.resume, command=command, progress=not args.no_progress, device=args.device)
    return 0
