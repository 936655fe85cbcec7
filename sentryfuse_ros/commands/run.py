"""`sentryfuse run`: the launch file's node graph in one process (where `ros2 launch` is missing)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'run', help='start the node graph of perception.launch.py in one process',
        description='Start health_monitor + perception (+ sensor_sim with --use-sim) in one '
                    'process, each node reading its own section of the parameters YAML. Stops on '
                    'Ctrl-C or after --duration.')
    parser.add_argument('--params', default=None,
                        help='ros__parameters YAML (default: config/perception.yaml)')
    parser.add_argument('--overlay', dest='overlays', action='append', default=[], metavar='FILE',
                        help='ros__parameters YAML applied over --params (repeatable), e.g. '
                             'config/demo_robot.yaml')
    parser.add_argument('--use-sim', action='store_true', help='also start sensor_sim')
    parser.add_argument('--duration', type=float, default=None, metavar='S',
                        help='stop after S seconds (default: run until Ctrl-C)')
    parser.add_argument('--set', dest='sets', action='append', default=[], metavar='NODE.PARAM=VALUE',
                        help='override one parameter, e.g. health_monitor.camera.timeout=0.5 '
                             '(repeatable; value parsed as YAML; an unknown node or parameter is refused)')
    parser.set_defaults(func=run)


def run(args) -> int:
    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.apps.graph import run_graph  # imports rclpy only when the command runs

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f'--duration={args.duration!r}: expected a positive number of seconds')
    return run_graph(params_file=args.params, use_sim=args.use_sim, duration=args.duration,
                     sets=args.sets, overlays=args.overlays)
