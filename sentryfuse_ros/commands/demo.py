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


# The overlays (ros__parameters YAML in config/, applied over config/perception.yaml) of each demo model;
# a bare model_path file name is looked up next to the shipped default model.
DEMO_MODELS = {
    'tiny': [],
    'robot': ['demo_robot.yaml'],
}


def demo_overlays(model: str) -> List[str]:
    """The overlay files of demo model ``model`` (paths under config/)."""
    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.core.runtime.param_files import config_dir

    if model not in DEMO_MODELS:
        raise ConfigError(f'--model {model!r}: expected one of {sorted(DEMO_MODELS)}')
    return [str(config_dir() / name) for name in DEMO_MODELS[model]]


def demo_sets(model: str) -> List[str]:
    """Demo model ``model``'s overlays as `node.param=value` strings, its model path made absolute."""
    import os

    import yaml

    from sentryfuse_ros.core.runtime.param_files import load_parameters, merge
    from sentryfuse_ros.nodes.perception import default_model_path

    layers = merge({}, *(load_parameters(path) for path in demo_overlays(model)))
    out = []
    for node, values in layers.items():
        for name, value in values.items():
            if (node, name) == ('perception', 'model_path') and os.path.basename(value) == value:
                value = os.path.join(os.path.dirname(default_model_path()), value)
            out.append(f'{node}.{name}=' + yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip())
    return out


def run(args) -> int:
    from sentryfuse_ros.core.errors import ConfigError
    from sentryfuse_ros.apps.demo import run_demo  # imports rclpy only when the command runs

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f'--duration={args.duration!r}: expected a positive number of seconds')
    # base + the model's overlays; its model path made absolute; explicit --set wins (applied last)
    model_path = [s for s in demo_sets(args.model) if s.startswith('perception.model_path=')]
    summary = run_demo(args.params, args.duration, model_path + list(args.sets), live_view=not args.quiet,
                       json_out=args.json, overlays=demo_overlays(args.model))
    return 0 if summary['overall']['n'] > 0 else 1
