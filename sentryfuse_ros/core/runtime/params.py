"""The parameter schema of each node: the one source of every default, range and choice (ROS-free).

A :class:`ParamSpec` is one ROS parameter: name, type, default, range or choices, whether it can
change at run time, and a one-line description. The nodes declare their parameters from these
(ParameterDescriptor with the description, ranges and read_only), validate them with
:func:`check_value` at start-up and in their on-set callback, and the launch file, `sentryfuse run`,
the offline and live replays and `sentryfuse dataset` read their defaults from here.
config/perception.yaml holds only what a deployment sets; docs/parameters.md is generated from
these schemas (`python -m sentryfuse_ros.core.runtime.params_doc`).
"""
import array
import dataclasses
import math
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from sentryfuse_ros.core.data.scenes import SCENE_PRESETS
from sentryfuse_ros.core.data.topics import BATTERY_TOPIC, HEALTH_TOPIC, LABEL_TOPIC, MODALITIES, SENSOR_TOPICS
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.runtime.stamps import MAX_STAMP_OFFSET_S
from sentryfuse_ros.core.pruning.budget import BUDGET_LEVELS  # perception: budgets with a cached sub-network
from sentryfuse_ros.core.runtime.choice import BACKENDS, PRECISIONS

QOS_NAMES = ('sensor_data', 'reliable')
DEVICES = ('cpu', 'cuda')
TRIGGERS = ('timer', 'camera')
# health monitor: modality -> its thresholds (fit the default sensor rates: camera 15 Hz, lidar 10 Hz,
# audio 50 frames/s; a dead camera is reported within timeout + one check period, 0.3 s + 0.1 s at 10 Hz)
MONITOR_DEFAULTS = {
    'camera': {'timeout': 0.3, 'warn_rate': 10.0, 'error_rate': 5.0, 'window_size': 10, 'recover_count': 3},
    'lidar': {'timeout': 0.35, 'warn_rate': 7.0, 'error_rate': 3.0, 'window_size': 10, 'recover_count': 3},
    'audio': {'timeout': 0.2, 'warn_rate': 35.0, 'error_rate': 20.0, 'window_size': 25, 'recover_count': 3},
}
# a modality the monitor has no defaults for (e.g. a thermal camera added by a deployment)
OTHER_MONITOR = {'timeout': 1.0, 'warn_rate': 5.0, 'error_rate': 1.0, 'window_size': 10, 'recover_count': 3}
THRESHOLDS = tuple(OTHER_MONITOR)
BATTERY_KEYS = ('budget_levels', 'budget_values', 'budget_hysteresis', 'battery_timeout',
                'unknown_budget', 'compute_budget_override')


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str                         # ROS parameter name; dotted for nested ones ('camera.topic')
    type: type                        # bool | int | float | str | list (elements of `item`)
    default: Any                      # the one default value
    description: str                  # one line (ParameterDescriptor.description, docs/parameters.md)
    low: Optional[float] = None       # numbers (and number lists' elements): lower bound, None = none
    high: Optional[float] = None      # upper bound (inclusive), None = none
    low_open: bool = False            # True: the value must be > low (a rate, a period), not >= low
    choices: Tuple[Any, ...] = ()     # allowed values (of the elements for a list), () = any
    item: Optional[type] = None       # element type of a list parameter
    read_only: bool = True            # True: cannot change at run time (ros2 param set is refused)
    unconfigured_only: bool = False   # lifecycle node: settable only while it is unconfigured (configure
                                      # reads it); read_only is then False
    nonempty: bool = False            # strings and lists: '' / [] refused

    def expected(self) -> str:
        """What a valid value is, in words (the tail of every error message)."""
        kind = {bool: 'true or false', int: 'an integer', float: 'a finite number', str: 'a string',
                list: f'a list of {self.item.__name__ if self.item else "values"}'}[self.type]
        if self.choices:
            kind += f' among {list(self.choices)}' if self.type is list else f' in {list(self.choices)}'
        if self.low is not None or self.high is not None:
            lo = '-inf' if self.low is None else f'{self.low:g}'
            hi = 'inf' if self.high is None else f'{self.high:g}'
            kind += f" in {'(' if self.low_open or self.low is None else '['}{lo}, {hi}{']' if self.high is not None else ')'}"
        if self.nonempty:
            kind += ', not empty'
        return kind


def _scalar_ok(spec: ParamSpec, kind: type, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            return False
        if not math.isfinite(value):
            return False
        if spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)):
            return False
        return spec.high is None or value <= spec.high
    return isinstance(value, str)


def check_value(spec: ParamSpec, value: Any) -> Any:
    """``value`` as the parameter's type (ints widened to float); ConfigError naming it otherwise."""
    if spec.type is list:
        ok = isinstance(value, (list, tuple, array.array)) and all(
            _scalar_ok(spec, spec.item, v) and (not spec.choices or v in spec.choices) for v in value)
    else:
        ok = _scalar_ok(spec, spec.type, value) and (not spec.choices or value in spec.choices)
    if ok and spec.nonempty and len(value) == 0:
        ok = False
    if not ok:
        raise ConfigError(f'{spec.name}={value!r}: expected {spec.expected()}')
    if spec.type is float:
        return float(value)
    if spec.type is list and spec.item is float:
        return [float(v) for v in value]
    return list(value) if spec.type is list else value


Schema = Tuple[ParamSpec, ...]


def defaults(schema: Schema) -> Dict[str, Any]:
    """{name: default} of a schema (lists copied)."""
    return {s.name: list(s.default) if isinstance(s.default, (list, tuple)) else s.default for s in schema}


def by_name(schema: Schema) -> Dict[str, ParamSpec]:
    return {s.name: s for s in schema}


def check_known(schema: Schema, names: Iterable[str], node: str) -> None:
    """ConfigError naming every parameter of ``names`` that ``node`` does not have."""
    known = by_name(schema)
    unknown = sorted(n for n in names if n not in known and n != 'use_sim_time')
    if unknown:
        raise ConfigError(f'{node} has no parameter(s) {unknown}; its parameters are {sorted(known)}')


def check_values(schema: Schema, values: Mapping[str, Any]) -> Dict[str, Any]:
    """Every value of ``values`` that the schema knows, checked; ConfigError for the first invalid one."""
    specs = by_name(schema)
    return {name: check_value(specs[name], value) for name, value in values.items() if name in specs}


def _spec(name, kind, default, description, **kw) -> ParamSpec:
    return ParamSpec(name, kind, default, description, **kw)


# ---------------------------------------------------------------------------------------- perception
def _perception_schema() -> Schema:
    # what configure needs to load a model: fixable while unconfigured after a failed configure
    model = dict(read_only=False, unconfigured_only=True)
    out = [
        _spec('autostart', bool, True, 'configure and activate at start-up; false: stay unconfigured until '
              '`ros2 lifecycle set /perception configure` (or a lifecycle manager)'),
        _spec('model_path', str, '', "checkpoint; '' = the shipped models/sentryfuse_sim.pt", **model),
        _spec('device', str, 'cpu', 'torch device of inference', choices=DEVICES, **model),
        _spec('precision', str, 'fp32', 'bf16: CPU with native bf16 or CUDA; fp16: CUDA; int8: backend onnxruntime '
              'with the onnx_dir of an int8 export', choices=PRECISIONS, **model),
        _spec('backend', str, 'torch', 'torch: eager sub-networks; onnxruntime: sessions of onnx_dir',
              choices=BACKENDS, **model),
        _spec('onnx_dir', str, '', 'folder written by `sentryfuse export` (backend onnxruntime; its budget '
              'levels replace budget_levels)', **model),
        _spec('runtime_fallback', bool, True, 'a device/precision/backend this machine cannot run: true = CPU '
              'fp32 with a WARN status; false = no inference, ERROR status', **model),
        _spec('rate', float, 10.0, '[Hz] inferences when trigger = timer', low=0.0, high=1000.0, low_open=True,
              read_only=False),
        _spec('trigger', str, 'timer', 'timer (at rate) | camera (one inference per camera frame)',
              choices=TRIGGERS),
        _spec('qos', str, 'sensor_data', 'QoS of the sensor subscriptions', choices=QOS_NAMES),
        _spec('health_topic', str, HEALTH_TOPIC, 'ModalityHealth of the health monitor', nonempty=True),
        _spec('max_stamp_offset', float, MAX_STAMP_OFFSET_S, '[s] a sensor or health message stamped further than '
              'this from the node\'s clock is refused and counted (old bags replayed without /clock need more)',
              low=0.0, high=1e12, low_open=True),
        _spec('health_timeout', float, 1.0, '[s] without health messages -> own freshness check, budget 1.0',
              low=0.0, high=3600.0, low_open=True, read_only=False),
        _spec('diagnostics_period', float, 1.0, '[s] between /diagnostics publications', low=0.0, high=3600.0,
              low_open=True, read_only=False),
        _spec('stats_window', int, 200, 'inferences in the latency p50/p95 window', low=1, high=1_000_000),
        _spec('budget_levels', list, list(BUDGET_LEVELS), "budgets with a cached sub-network (fractions of "
              "the live set's dense FLOPs; a budget is snapped down to one)", item=float, low=0.0, high=1.0,
              low_open=True, nonempty=True),
        _spec('max_cache_mb', float, 32.0, '[MiB] gathered sub-network weights kept beyond the one dense copy '
              '(MRU); backend onnxruntime: graph bytes of the sessions kept (MRU)', low=0.0, high=1e6),
        _spec('prebuild', bool, True, 'build every (live subset, budget level) sub-network at start-up'),
        _spec('torch_threads', int, 1, "CPU threads for torch ops (0 = torch's default; 1 keeps OpenMP "
              "workers from spinning against the other nodes' callbacks)", low=0, high=1024),
    ]
    for m in MODALITIES:
        topic, type_name = SENSOR_TOPICS[m]
        out += [_spec(f'{m}.topic', str, topic, f'{m} topic', nonempty=True),
                _spec(f'{m}.type', str, type_name, f'{m} message type (short name or pkg/msg/Name)',
                      nonempty=True),
                _spec(f'{m}.max_age', float, 0.5, f'[s] older {m} samples are not used', low=0.0, high=3600.0,
                      low_open=True, read_only=False)]
    return tuple(out)


PERCEPTION = _perception_schema()
UNCONFIGURED_ONLY = frozenset(s.name for s in PERCEPTION if s.unconfigured_only)


# ------------------------------------------------------------------------------------ health monitor
def _monitor_specs(name: str) -> list:
    topic, type_name = SENSOR_TOPICS.get(name, (f'/{name}', 'sensor_msgs/msg/Image'))
    d = MONITOR_DEFAULTS.get(name, OTHER_MONITOR)
    rate = dict(low=0.0, high=100_000.0, read_only=False)
    return [
        _spec(f'{name}.topic', str, topic, f'{name} topic (subscribed raw)', nonempty=True),
        _spec(f'{name}.type', str, type_name, f'{name} message type (short name or pkg/msg/Name)', nonempty=True),
        _spec(f'{name}.timeout', float, d['timeout'], '[s] silence -> TIMEOUT (not live)', low=0.0, high=3600.0,
              low_open=True, read_only=False),
        _spec(f'{name}.warn_rate', float, d['warn_rate'], '[Hz] below -> WARN_RATE (still live)', **rate),
        _spec(f'{name}.error_rate', float, d['error_rate'], '[Hz] below -> ERROR_RATE (not live); '
              '<= warn_rate', **rate),
        _spec(f'{name}.window_size', int, d['window_size'], 'arrivals in the rate window', low=2, high=100_000,
              read_only=False),
        _spec(f'{name}.recover_count', int, d['recover_count'], 'healthy checks before a dead modality is '
              'live again', low=1, high=100_000, read_only=False),
    ]


def health_monitor_schema(modalities: Sequence[str] = MODALITIES) -> Schema:
    """The health monitor's parameters for its ``modalities`` (each gets topic, type and thresholds)."""
    out = [
        _spec('modalities', list, list(MODALITIES), 'order of the arrays in ModalityHealth', item=str,
              nonempty=True),
        _spec('qos', str, 'sensor_data', 'QoS of the modality subscriptions', choices=QOS_NAMES),
        _spec('update_rate', float, 10.0, '[Hz] checks and ModalityHealth publications', low=0.0, high=1000.0,
              low_open=True),
        _spec('diagnostics_period', float, 1.0, '[s] between /diagnostics publications', low=0.0, high=3600.0,
              low_open=True, read_only=False),
        _spec('hardware_id', str, 'sentryfuse', 'DiagnosticStatus.hardware_id of the battery/parameter '
              'statuses', nonempty=True),
        _spec('battery_topic', str, BATTERY_TOPIC, 'sensor_msgs/BatteryState topic', nonempty=True),
    ]
    for name in modalities:
        out += _monitor_specs(name)
    out += [
        _spec('battery_timeout', float, 5.0, '[s] silent battery -> unknown', low=0.0, high=86400.0,
              low_open=True, read_only=False),
        _spec('budget_levels', list, [0.5, 0.25, 0.0], 'battery >= level ... (strictly descending, last 0.0)',
              item=float, low=0.0, high=1.0, nonempty=True, read_only=False),
        _spec('budget_values', list, [1.0, 0.7, 0.5], '... -> this compute_budget (one per level)', item=float,
              low=0.0, high=1.0, low_open=True, nonempty=True, read_only=False),
        _spec('budget_hysteresis', float, 0.03, 'climb back to a higher budget only past level + this',
              low=0.0, high=0.49, read_only=False),
        _spec('unknown_budget', float, 1.0, 'budget while the battery is unknown', low=0.0, high=1.0,
              low_open=True, read_only=False),
        _spec('compute_budget_override', float, 0.0, '0 = off; else this budget in (0, 1] wins', low=0.0,
              high=1.0, read_only=False),
    ]
    return tuple(out)


HEALTH_MONITOR = health_monitor_schema()


# ---------------------------------------------------------------------------------------- sensor_sim
def _sensor_sim_schema() -> Schema:
    cam_topic, lidar_topic, audio_topic = (SENSOR_TOPICS[m][0] for m in ('camera', 'lidar', 'audio'))
    pos = dict(low=0.0, low_open=True)
    return (
        _spec('streams', list, list(MODALITIES), 'which sensor streams to publish', item=str, choices=MODALITIES),
        _spec('qos', str, 'sensor_data', 'QoS of the sensor streams', choices=QOS_NAMES),
        _spec('scenario', str, '', "scenario YAML ('' = none); relative: cwd, then config/"),
        _spec('seed', int, 0, 'scene timeline seed', low=0, high=2**31 - 1),
        _spec('scene.kind', str, 'synthetic', 'synthetic (coherent core scenes) | simple',
              choices=('synthetic', 'simple')),
        _spec('scene.preset', str, 'sim6', "core.scenes preset; must match the model's training data",
              choices=tuple(sorted(SCENE_PRESETS))),
        _spec('scene.duration', float, 5.0, '[s] per scene', high=86400.0, **pos),
        _spec('camera.topic', str, cam_topic, 'camera topic', nonempty=True),
        _spec('camera.rate', float, 15.0, '[Hz]', high=1000.0, **pos),
        _spec('camera.width', int, 128, '[px]', low=1, high=16384),
        _spec('camera.height', int, 128, '[px]', low=1, high=16384),
        _spec('camera.frame_id', str, 'camera', 'header.frame_id'),
        _spec('lidar.topic', str, lidar_topic, 'lidar topic', nonempty=True),
        _spec('lidar.rate', float, 10.0, '[Hz]', high=1000.0, **pos),
        _spec('lidar.points', int, 4096, 'points per cloud', low=1, high=10_000_000),
        _spec('lidar.frame_id', str, 'lidar', 'header.frame_id'),
        _spec('audio.topic', str, audio_topic, 'audio topic', nonempty=True),
        _spec('audio.sample_rate', int, 8000, '[Hz]', low=1, high=384_000),
        _spec('audio.frame_samples', int, 160, 'samples per AudioFrame; frames/s = sample_rate / this',
              low=1, high=384_000),
        _spec('audio.encoding', str, 'S16LE', 'AudioFrame encoding', choices=('S16LE', 'F32LE')),
        _spec('audio.frame_id', str, 'microphone', 'header.frame_id'),
        _spec('battery.topic', str, BATTERY_TOPIC, 'BatteryState topic', nonempty=True),
        _spec('battery.rate', float, 1.0, '[Hz]', high=1000.0, **pos),
        _spec('battery.start', float, 1.0, 'state of charge at start', low=0.0, high=1.0),
        _spec('battery.drain_per_s', float, 0.002, 'state of charge lost per second', low=0.0, high=1.0),
        _spec('battery.capacity', float, 10.0, '[Ah] BatteryState.charge/capacity', high=1e6, **pos),
        _spec('label.enabled', bool, True, 'publish the ground-truth class'),
        _spec('label.topic', str, LABEL_TOPIC, 'std_msgs/String ground truth topic', nonempty=True),
        _spec('label.rate', float, 2.0, '[Hz]', high=1000.0, **pos),
    )


SENSOR_SIM = _sensor_sim_schema()

NODES = ('health_monitor', 'perception', 'sensor_sim')  # the graph's nodes with a schema


def node_schema(node: str, values: Mapping[str, Any] = None) -> Schema:
    """The schema of graph node ``node`` (read when called); the health monitor's follows its
    ``modalities`` value."""
    if node not in NODES:
        raise ConfigError(f'no node {node!r}; the graph has {list(NODES)}')
    if node == 'health_monitor':
        names = MODALITIES
        if values and 'modalities' in values:
            names = check_value(by_name(health_monitor_schema(()))['modalities'], values['modalities'])
        return health_monitor_schema(names)
    return PERCEPTION if node == 'perception' else SENSOR_SIM


# perception parameters the launch file exposes as arguments (health_monitor gets compute_budget_override)
LAUNCH_PERCEPTION = ('model_path', 'device', 'precision', 'backend', 'onnx_dir')


def launch_arguments() -> Dict[str, Tuple[str, str]]:
    """{launch argument: (default as a string, description)} of launch/perception.launch.py, from the
    schemas: `<modality>_topic` (remaps every node's default topic), perception's runtime choices and
    autostart, and the health monitor's budget override."""
    perception, monitor = by_name(PERCEPTION), by_name(health_monitor_schema(()))
    out = {f'{m}_topic': (perception[f'{m}.topic'].default, f'remaps {m} topic of every node')
           for m in MODALITIES}
    for name in LAUNCH_PERCEPTION:
        spec = perception[name]
        out[name] = (str(spec.default), f'perception {name}: {spec.description} ({spec.expected()})')
    spec = monitor['compute_budget_override']
    out[spec.name] = (str(spec.default), f'health_monitor {spec.name}: {spec.description}')
    spec = perception['autostart']
    out[spec.name] = (str(spec.default).lower(), f'perception {spec.name}: {spec.description}')
    return out
