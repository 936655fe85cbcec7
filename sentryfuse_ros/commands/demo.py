"""`sentryfuse demo`: the main job (simulated robot + health monitor + perception, ~1 minute)."""
from typing import List

DEFAULT_MODEL = 'robot'


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'demo', help='run the simulated robot through the demo scenario with the shipped robot model',
        description='Simulated robot + health monitor + perception with the shipped robot model '
                    '(--model tiny for the small sim model), through a scenario with a lidar dropout, an '
                    'audio dropout and a battery drop; a live terminal view, then accuracy and latency per '
                    'phase, sub-network switches and the sensors the health monitor declared dead.')
    parser.add_argument('--params', default=None, help='ros__parameters YAML (default: config/perception.yaml)')
    parser.add_argument('--duration', type=float, default=None, metavar='S',
                        help="seconds to run (default: the scenario's duration)")
    parser.add_argument('--set', dest='sets', action='append', default=[], metavar='NODE.PARAM=VALUE',
                        help='override one parameter (repeatable, applied after the model\'s settings), '
                             'e.g. perception.device=cuda')
    parser.add_argument('--quiet', action='store_true', help='no live status line')
    parser.add_argument('--json', default=None, metavar='FILE', help='also write the summary as JSON')
    parser.add_argument('--model', choices=sorted(DEMO_MODELS), default=DEFAULT_MODEL,
                        help='robot (default): models/sentryfuse_robot.pt (6.5 GFLOPs dense, ~90 ms per '
                             'inference on one CPU core) on robot-resolution scenes (128x416 camera, 16k-point '
                             '64-beam lidar, 16 kHz audio), sensors at 10 Hz, inference at 5 Hz; '
                             'tiny: models/sentryfuse_sim.pt (0.015 GFLOPs) at the node defaults (camera 15 Hz, '
                             'lidar 10 Hz, inference 10 Hz)')
    parser.set_defaults(func=run)


# --set overrides each demo model needs; a bare model file name is looked up next to the shipped default model.
# robot: the sensor simulator renders what the model was trained on (robot6 scenes at its resolution), and the
# rates fit a 2-core CPU that also runs the simulator: inference at 5 Hz (the ~90 ms dense forward pass takes
# under half of one core, so the node keeps its rate and latencies are not queueing), camera and lidar at
# 10 Hz (a 64-beam lidar's spin rate), audio in 100 ms frames (10/s: at 16 kHz in 10 ms frames, 100 frames/s
# would overflow perception's keep-last-5 sensor queue during one forward pass and leave gaps in its audio
# window), and health thresholds for 10 Hz streams (timeout 3.5 periods, warn/error rates 0.7/0.3 of the rate,
# as the node defaults are for lidar).
DEMO_MODELS = {
    'tiny': [],
    'robot': ['perception.model_path=sentryfuse_robot.pt', 'sensor_sim.scene.preset=robot6',
              'sensor_sim.camera.width=416', 'sensor_sim.camera.height=128', 'sensor_sim.lidar.points=16384',
              'sensor_sim.audio.sample_rate=16000',
              'perception.rate=5.0',
              'sensor_sim.camera.rate=10.0', 'sensor_sim.lidar.rate=10.0', 'sensor_sim.audio.frame_samples=1600',
              'health_monitor.camera.timeout=0.35', 'health_monitor.camera.warn_rate=7.0',
              'health_monitor.camera.error_rate=3.0',
              'health_monitor.lidar.timeout=0.35', 'health_monitor.lidar.warn_rate=7.0',
              'health_monitor.lidar.error_rate=3.0',
              'health_monitor.audio.timeout=0.35', 'health_monitor.audio.warn_rate=7.0',
              'health_monitor.audio.error_rate=3.0', 'health_monitor.audio.window_size=10'],
}


def demo_sets(model: str) -> List[str]:
    """The --set overrides of demo model ``model``, its model path made absolute."""
    import os

    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.nodes.perception import default_model_path

    if model not in DEMO_MODELS:
        raise ConfigError(f'--model {model!r}: expected one of {sorted(DEMO_MODELS)}')
    models = os.path.dirname(default_model_path())
    return [f'perception.model_path={os.path.join(models, v.split("=", 1)[1])}'
            if v.startswith('perception.model_path=') else v for v in DEMO_MODELS[model]]


def run(args) -> int:
    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.apps.demo import run_demo  # imports rclpy only when the command runs

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f'--duration={args.duration!r}: expected a positive number of seconds')
    sets = demo_sets(args.model) + list(args.sets)  # explicit --set wins (applied last)
    summary = run_demo(args.params, args.duration, sets, live_view=not args.quiet, json_out=args.json)
    return 0 if summary['overall']['n'] > 0 else 1
