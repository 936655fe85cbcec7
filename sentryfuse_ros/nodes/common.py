"""Helpers shared by the nodes: QoS from a parameter string, message types by name,
parameter declaration/validation with fallback, and /diagnostics building.

Parameters are declared from the node's schema (sentryfuse_ros.core.runtime.params) and validated
the same way at start-up and on every later change: each value against its ParamSpec (type, finite,
range, choices), then the node's builder (cross-parameter checks, raising ConfigError). At start-up
each invalid value is logged, reported and replaced by its default (the valid ones are kept); a later
change is refused with the error as the reason and changes nothing.
"""
import array
import importlib
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.runtime import params
from sentryfuse_ros.nodes.executable import interrupt_recorder

QOS_NAMES = params.QOS_NAMES

# Short names accepted for `<modality>.type` parameters; any 'pkg/msg/Name' works too.
MESSAGE_TYPES = {
    'Image': 'sensor_msgs/msg/Image',
    'CompressedImage': 'sensor_msgs/msg/CompressedImage',
    'PointCloud2': 'sensor_msgs/msg/PointCloud2',
    'LaserScan': 'sensor_msgs/msg/LaserScan',
    'AudioFrame': 'sentryfuse_ros/msg/AudioFrame',
    'AudioDataStamped': 'audio_common_msgs/msg/AudioDataStamped',
}

# diagnostic levels as ints (DiagnosticStatus.OK etc. are one-byte `bytes`)
LEVEL_OK = 0
LEVEL_WARN = 1
LEVEL_ERROR = 2
LEVEL_STALE = 3


def qos_profile(name: str) -> QoSProfile:
    """'sensor_data' (best effort, keep last 5) or 'reliable' (reliable, keep last 10)."""
    if name == 'sensor_data':
        return qos_profile_sensor_data
    if name == 'reliable':
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    raise ConfigError(f'qos={name!r}: expected one of {list(QOS_NAMES)}')


def latest_only(profile: QoSProfile) -> QoSProfile:
    """``profile`` with a queue of one (keep last 1): for a subscriber that uses only the newest message,
    so a callback that runs late (an inference in progress) finds the newest, not a queue of stale ones."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=profile.reliability,
                      durability=profile.durability)


def latched() -> QoSProfile:
    """Reliable, transient local, keep last 1: a late subscriber that asks for transient local gets the
    one message published (a map such as LabelInfo, published once per model)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def check_qos_name(name: Any, key: str = 'qos') -> None:
    if name not in QOS_NAMES:
        raise ConfigError(f'{key}={name!r}: expected one of {list(QOS_NAMES)}')


def message_type(name: str) -> type:
    """The message class for 'Image', 'sensor_msgs/msg/Image' or 'sensor_msgs/Image'."""
    full = MESSAGE_TYPES.get(name, name)
    parts = full.split('/') if isinstance(full, str) else []
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f'message type {name!r}: expected a short name {sorted(MESSAGE_TYPES)} '
                          "or 'package/msg/Name'")
    try:
        return getattr(importlib.import_module(f'{parts[0]}.{parts[1]}'), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f'message type {name!r} cannot be imported here: {exc}') from exc


# ---- parameters ------------------------------------------------------------------------

def declare_parameters(node: Node, schema: params.Schema) -> Dict[str, Any]:
    """Declare every parameter of ``schema`` with its description (dynamic typing: a wrong type never
    crashes start-up, the schema check rejects it) and return {name: value} as given by overrides or
    the defaults. Call :func:`fix_descriptors` once the values are checked."""
    for spec in schema:
        node.declare_parameter(spec.name, _parameter_value(spec.default),
                               ParameterDescriptor(dynamic_typing=True, description=spec.description))
    return current_values(node, schema)


def fix_descriptors(node: Node, schema: params.Schema) -> None:
    """The final descriptors: read_only, the description with what a valid value is, ranges."""
    for spec in schema:
        descriptor = ParameterDescriptor(
            dynamic_typing=True, read_only=spec.read_only,
            description=f'{spec.description} ({spec.expected()})',
            additional_constraints=spec.expected())
        if spec.low is not None and spec.high is not None:
            if spec.type is int:
                descriptor.integer_range = [IntegerRange(
                    from_value=int(spec.low), to_value=int(spec.high), step=1)]
            elif spec.type is float or spec.item is float:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(spec.low), to_value=float(spec.high), step=0.0)]
        node.set_descriptor(spec.name, descriptor)


def spec_checks(schema: params.Schema) -> List[Tuple[Tuple[str, ...], Callable[[Mapping[str, Any]], Any]]]:
    """One start-up check group per parameter: its type, range and choices from the schema."""
    return [((s.name,), lambda v, s=s: params.check_value(s, v[s.name])) for s in schema]


def fall_back_to_defaults(node: Node, values: Dict[str, Any], defaults: Mapping[str, Any],
groups: Sequence[Tuple[Sequence[str], Callable[[Mapping[str, Any]], Any]]]
                          ) -> List[str]:
    """Start-up validation: each group (its parameter names, a checker raising ConfigError) whose
    values are invalid has ONLY the offending values reset to their defaults (in ``values`` and on
    the node) and logged; every other value of the group is kept. Call before
    :func:`install_validator`. Returns the error messages (for /diagnostics)."""
    errors = []
    for names, checker in groups:
        for name, exc in _offending(values, defaults, names, checker):
            message = f'{exc}; using the default for {list(name)}'
            node.get_logger().error(f'invalid parameter: {message}')
            errors.append(message)
            for n in name:
                values[n] = defaults[n]
            node.set_parameters([Parameter(n, value=_parameter_value(defaults[n])) for n in name])
    return errors


def _error(checker: Callable[[Mapping[str, Any]], Any], values: Mapping[str, Any]) -> str:
    """The checker's error for ``values`` ('' when they are valid)."""
    try:
        checker(values)
    except (ConfigError, TypeError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return ''


def _offending(values: Mapping[str, Any], defaults: Mapping[str, Any], names: Sequence[str],
               checker: Callable[[Mapping[str, Any]], Any]) -> List[Tuple[Tuple[str, ...], str]]:
    """[(names to reset, error)]: one error at a time, the first non-default value whose default
    clears or changes that error is the offender; when none does alone, the whole group."""
    trial = dict(values)
    found = []
    for _ in range(len(names) + 1):
        error = _error(checker, trial)
        if not error:
            return found
        culprit = None
        for name in names:
            if trial[name] == defaults[name]:
                continue
            if _error(checker, {**trial, name: defaults[name]}) != error:
                culprit = (name,)
                break
        if culprit is None:  # no single value explains it: the group's values only work together
            culprit = tuple(n for n in names if trial[n] != defaults[n]) or tuple(names)
        found.append((culprit, error))
        trial.update({n: defaults[n] for n in culprit})
    return found


def install_validator(node: Node, schema: params.Schema,
                      build: Callable[[Mapping[str, Any]], Any],
                      apply: Callable[[Any, Set[str]], None],
                      gate: Optional[Callable[[List[str]], str]] = None) -> Callable:
    """Register the on-set callback of a node: a change of a read-only parameter is refused; every
    proposed value is checked against the schema (type, finite, range, choices: the start-up policy),
    then the merged values of the schema go through ``build`` (cross-parameter checks, ConfigError
    refuses); success calls ``apply(built, changed names)``, which makes the change take effect.
    ``gate(changed names)``, when given, runs before the value checks: a non-empty reason refuses.
    A refusal names the value and what was expected, and changes nothing. Returns the callback."""
    specs = params.by_name(schema)

    def on_set(changes: List[Parameter]) -> SetParametersResult:
        mine = [p for p in changes if p.name in specs]
        fixed = sorted(p.name for p in mine if specs[p.name].read_only)
        if fixed:
            return SetParametersResult(
                successful=False, reason=f'{fixed} cannot change at run time; restart the node')
        blocked = gate([p.name for p in mine]) if gate is not None else ''
        if blocked:  # e.g. a lifecycle node's parameters that change only while it is unconfigured
            return SetParametersResult(successful=False, reason=blocked)
        values = {n: node.get_parameter(n).value for n in specs}
        try:
            for p in mine:
                values[p.name] = params.check_value(specs[p.name], _plain(p.value))
            built = build(values)
        except (ConfigError, TypeError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if mine:
            apply(built, {p.name for p in mine})
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return on_set


def current_values(node: Node, schema: params.Schema) -> Dict[str, Any]:
    """{name: value} of the schema's parameters as the node holds them now (plain Python)."""
    return {spec.name: _plain(node.get_parameter(spec.name).value) for spec in schema}


def _plain(value: Any) -> Any:
    """A parameter value as plain Python (array.array of a double/int array -> list)."""
    return list(value) if isinstance(value, array.array) else value


def _parameter_value(value: Any) -> Any:
    """Lists of mixed ints and floats become floats (a ROS array has one element type)."""
    if isinstance(value, (list, tuple)):
        value = list(value)
        if any(isinstance(v, float) for v in value) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [float(v) for v in value]
    return value


def as_float(value: Any, key: str) -> float:
    """A number parameter (int or float, not bool) as float; ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f'{key}={value!r}: expected a number')
    return float(value)


def as_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f'{key}={value!r}: expected an integer')
    return int(value)


# ---- diagnostics -----------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return 'inf' if math.isinf(value) else ('nan' if math.isnan(value) else f'{value:.4g}')
    return str(value)


def diagnostic_status(name: str, level: int, message: str, hardware_id: str = '',
                      values: Mapping[str, Any] = None) -> DiagnosticStatus:
    """A DiagnosticStatus (diagnostic_updater conventions: name 'node: task', level byte)."""
    return DiagnosticStatus(
        level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in (values or {}).items()])


def diagnostic_array(stamp, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = list(statuses)
    return msg


# ---- time ------------------------------------------------------------------------------

def jump_back_threshold():
    """rclpy's JumpThreshold for a clock step back of more than core.runtime.stamps.JUMP_BACK_S, or a
    clock change (use_sim_time switched): what a node's jump callback resets its time state on."""
    from rclpy.clock import JumpThreshold  # noqa: PLC0415
    from rclpy.duration import Duration  # noqa: PLC0415

    from sentryfuse_ros.core.runtime.stamps import JUMP_BACK_S  # noqa: PLC0415
    return JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-int(JUMP_BACK_S * 1e9)),
                         on_clock_change=True)


# ---- executables -----------------------------------------------------------------------

def run_node(factory: Callable[[], Node], args=None) -> int:
    """The body of every node's ``main``: init, spin until Ctrl-C or shutdown, clean up.

    SIGINT is recorded, never raised (see nodes/executable.py: a KeyboardInterrupt inside C++ that
    calls back into Python can abort the process): a Ctrl-C before the spin is seen at the next
    safe point (after rclpy.init, after the node's construction) and ends the node with exit 0.
    While spinning, rclpy's SIGINT handler shuts the context down from its own thread
    (ExternalShutdownException), so a callback caught mid-publish raises from a handle that was
    just invalidated: once the context is down, such an error is part of stopping (exit 0), not a
    failure. A second Ctrl-C during clean-up does not interrupt it. Works from Humble to Kilted.
    """
    stop = interrupt_recorder()
    import rclpy  # noqa: PLC0415
    from rclpy.executors import ExternalShutdownException  # noqa: PLC0415
    if stop.requested:
        return 0
    rclpy.init(args=args)
    node = None
    try:
        if not stop.requested:
            node = factory()
        if node is not None and not stop.requested:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001 - re-raised unless stopping (context shut down, Ctrl-C seen)
        if rclpy.ok() and not stop.requested:
            raise
    finally:
        _quietly(node.destroy_node if node is not None else None)
        _quietly(rclpy.try_shutdown)
    return 0


def _quietly(step: Optional[Callable[[], Any]]) -> None:
    """Run one clean-up step; a further Ctrl-C must not leave it half done with a traceback."""
    if step is None:
        return
    try:
        step()
    except KeyboardInterrupt:
        pass
