"""`sentryfuse demo`: the main job (simulated robot + health monitor + perception, ~1 minute)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'demo', help='run the simulated robot through the demo scenario with the shipped model',
        description='Simulated robot + health monitor + perception with the shipped model, through a '
                    'scenario with a lidar dropout, an audio dropout and a battery drop; a live '
                    'terminal view, then accuracy and latency per phase and sub-network switches.')
    parser.add_argument('--params', default=None, help='ros__parameters YAML (default: config/perception.yaml)')
    parser.add_argument('--duration', type=float, default=None, metavar='S',
                        help="seconds to run (default: the scenario's duration)")
    parser.add_argument('--set', dest='sets', action='append', default=[], metavar='NODE.PARAM=VALUE',
                        help='override one parameter (repeatable), e.g. perception.device=cuda')
    parser.add_argument('--quiet', action='store_true', help='no live status line')
    parser.add_argument('--json', default=None, metavar='FILE', help='also write the summary as JSON')
    parser.set_defaults(func=run)


def run(args) -> int:
    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.demo import run_demo  # imports rclpy only when the command runs

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f'--duration={args.duration!r}: expected a positive number of seconds')
    summary = run_demo(args.params, args.duration, args.sets, live_view=not args.quiet, json_out=args.json)
    return 0 if summary['overall']['n'] > 0 else 1
