"""`sentryfuse simulate-bag`: record the simulated robot into a rosbag2 bag, without live ROS."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'simulate-bag', help='write a rosbag2 bag of the simulated robot (camera, lidar, audio, battery, labels)',
        description='Render the simulated robot (the coherent scenes the shipped model was trained on) '
                    'through a scenario (dropouts, battery events) straight into a standard rosbag2 bag '
                    '(metadata v8, playable by `ros2 bag play` on Humble and later). No ROS graph needed.')
    parser.add_argument('out', help='bag directory to create (must not exist)')
    parser.add_argument('--scenario', default='config/scenarios/demo.yaml',
                        help="scenario YAML ('' = none; default: %(default)s)")
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap', help='storage plugin')
    parser.add_argument('--duration', type=float, default=None, metavar='S',
                        help="seconds to record (default: the scenario's duration, else 60)")
    parser.add_argument('--seed', type=int, default=0, help='scene timeline seed')
    parser.add_argument('--scene-duration', type=float, default=5.0, metavar='S', help='seconds per scene')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from sentryfuse_ros.commands.replay import progress_bar, resolve_file
    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.core.sim.scenario import Scenario, load_scenario
    from sentryfuse_ros.core.sim.simulate import SimBagConfig, simulate_bag

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f'--duration={args.duration!r}: expected a positive number of seconds')
    scenario = Scenario()
    if args.scenario:
        scenario = load_scenario(resolve_file(args.scenario, 'scenario'))
    config = SimBagConfig(seed=args.seed, scene_duration_s=args.scene_duration)
    summary = simulate_bag(args.out, scenario, storage=args.storage, duration=args.duration, config=config,
                           progress=None if args.no_progress else progress_bar())
    counts = ', '.join(f'{t} x{n}' for t, n in summary['messages'].items())
    print(f"wrote {summary['path']} ({args.storage}, {summary['duration_s']:g} s) in {summary['wall_s']:.1f} s: {counts}")
    for note in summary['ignored_events']:
        print(f'note: {note}', file=sys.stderr)
    return 0
