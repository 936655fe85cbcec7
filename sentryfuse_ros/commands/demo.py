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
    parser.add_argument('--model', choices=sorted(DEMO_MODELS), default='tiny',
                        help='tiny: the shipped sim model (default; real time at 10 Hz on a 2-core CPU); robot: '
                             'models/sentryfuse_robot.pt with robot-resolution scenes (6.5 GFLOPs dense: ~100 ms '
                             'per inference on one core here, so the node falls below 10 Hz)')
    parser.set_defaults(func=run)


# --set overrides each demo model needs (the sensor simulator must render what the model was trained on);
# a bare model file name is looked up next to the shipped default model
DEMO_MODELS = {
    'tiny': [],
    'robot': ['perception.model_path=sentryfuse_robot.pt', 'sensor_sim.scene.preset=robot6',
              'sensor_sim.camera.width=416', 'sensor_sim.camera.height=128', 'sensor_sim.lidar.points=16384',
              'sensor_sim.audio.sample_rate=16000'],
}


def run(args) -> int:
    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.demo import run_demo  # imports rclpy only when the command runs

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f'--duration={args.duration!r}: expected a positive number of seconds')
    import os

    from sentryfuse_ros.nodes.perception import default_model_path

    models = os.path.dirname(default_model_path())
    preset = [f'perception.model_path={os.path.join(models, v.split("=", 1)[1])}'
              if v.startswith('perception.model_path=') else v for v in DEMO_MODELS[args.model]]
    sets = preset + list(args.sets)  # explicit --set wins (applied last)
    summary = run_demo(args.params, args.duration, sets, live_view=not args.quiet, json_out=args.json)
    return 0 if summary['overall']['n'] > 0 else 1
