"""The node graph of launch/perception.launch.py in one process, for machines without
`ros2 launch`: the same nodes, each reading its own section of the same parameters YAML
(`<node name>: {ros__parameters: ...}`, with `/**` applying to every node), spun until Ctrl-C or a
duration.

Executors: one SingleThreadedExecutor spins the nodes with short callbacks (simulator, health
monitor), and a node marked ``own_thread`` (perception, whose forward pass takes ~100 ms at the
robot preset on one CPU core) gets its own SingleThreadedExecutor on its own thread, as it gets
its own process under `ros2 launch`. Torch releases the GIL inside its operators, so the
simulator's timers and the health monitor's checks keep their rates while a forward pass runs;
with one executor for all, measured here with the robot model, every camera, lidar and check
waited behind each forward pass, the camera arrived at the inference rate (4.4 Hz, below its 5 Hz
error rate) and the health monitor flapped sensors dead and alive. Not rclpy's
MultiThreadedExecutor: with Kilted's, measured here, the spinning thread re-polls entities whose
callbacks are still queued in its pool and starves the pool of the GIL (a live bag replay
delivered ~10 of 45 camera frames in 4 s and the health monitor saw sensors flap).

To add a node, append one :class:`NodeSpec` to ``GRAPH``.
"""
import dataclasses
import pathlib
import threading
import time
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence

from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.runtime.param_files import (  # noqa: F401  (the graph's parameter files, public here)
    default_params_file, graph_parameters, load_parameters, node_parameters, parse_sets)


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    name: str                     # node name; also its section in the parameters YAML
    factory: Callable[..., Any]   # factory(context=..., parameter_overrides=[...]) -> rclpy Node
    sim_only: bool = False        # started only with use_sim (like IfCondition(use_sim) in launch)
    own_thread: bool = False      # spun by its own executor on its own thread (long callbacks)


def _health_monitor(**kwargs):
    from sentryfuse_ros.nodes.health_monitor import HealthMonitor
    return HealthMonitor(**kwargs)


def _sensor_sim(**kwargs):
    from sentryfuse_ros.nodes.sensor_sim import SensorSim
    return SensorSim(**kwargs)


def _perception(**kwargs):
    from sentryfuse_ros.nodes.perception import Perception
    return Perception(**kwargs)


GRAPH = (
    NodeSpec('health_monitor', _health_monitor),
    NodeSpec('perception', _perception, own_thread=True),
    NodeSpec('sensor_sim', _sensor_sim, sim_only=True),
)


def to_parameters(values: Mapping[str, Any]) -> list:
    """rclpy Parameters from plain values (int/float mixed lists become float lists)."""
    from rclpy.parameter import Parameter
    out = []
    for name, value in values.items():
        if isinstance(value, (list, tuple)) and any(isinstance(v, float) for v in value) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            value = [float(v) for v in value]
        try:
            out.append(Parameter(name, value=value))
        except TypeError as exc:
            raise ConfigError(f'parameter {name}={value!r}: not a ROS parameter value ({exc})') from exc
    return out


def started_specs(specs: Sequence[NodeSpec], use_sim: bool) -> List[NodeSpec]:
    """The specs whose nodes run (sim-only ones only with ``use_sim``), in order."""
    return [s for s in specs if use_sim or not s.sim_only]


def build_graph(specs: Sequence[NodeSpec], params: Mapping[str, Mapping[str, Any]], *,
                use_sim: bool, context) -> List[Any]:
    """Create the nodes of :func:`started_specs` (same order)."""
    nodes = []
    try:
        for spec in started_specs(specs, use_sim):
            overrides = to_parameters(node_parameters(params, spec.name))
            nodes.append(spec.factory(context=context, parameter_overrides=overrides))
    except BaseException:
        for node in nodes:
            node.destroy_node()
        raise
    return nodes


def run_graph(specs: Sequence[NodeSpec] = GRAPH, *, params_file=None, use_sim: bool = False,
              duration: Optional[float] = None, sets: Iterable[str] = (), log=print,
              domain_id: Optional[int] = None, overlays: Sequence = ()) -> int:
    """Start the graph, spin until Ctrl-C / shutdown / ``duration`` seconds, stop cleanly.

    Args:
        specs: the nodes.
        params_file: ros__parameters YAML (default :func:`default_params_file`).
        use_sim: also start the sim-only nodes.
        duration: wall-clock seconds to run; None = until Ctrl-C.
        sets: `node.param=value` overrides, applied over the file and the overlays.
        log: where status lines go.
        domain_id: DDS domain (default: ROS_DOMAIN_ID or 0).
        overlays: ros__parameters YAML files applied over ``params_file`` (e.g. config/demo_robot.yaml).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    path = pathlib.Path(params_file) if params_file else default_params_file()
    params = graph_parameters(path, overlays, sets, nodes=[s.name for s in specs])

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=domain_id)
    executors: List[Any] = []
    nodes: List[Any] = []
    threads: List[_Spinner] = []
    try:
        nodes = build_graph(specs, params, use_sim=use_sim, context=context)
        executor = SingleThreadedExecutor(context=context)
        executors.append(executor)
        for spec, node in zip(started_specs(specs, use_sim), nodes):
            if spec.own_thread:
                own = SingleThreadedExecutor(context=context)
                executors.append(own)
                own.add_node(node)
                threads.append(_Spinner(own, context, spec.name))
            else:
                executor.add_node(node)
        log(f'sentryfuse run: {[n.get_name() for n in nodes]} with {path}'
            + (f' for {duration:g} s' if duration else ' (Ctrl-C to stop)'))
        for thread in threads:
            thread.start()
        deadline = None if duration is None else time.monotonic() + duration
        while context.ok() and (deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.1)
            for thread in threads:
                thread.raise_error()
    except (KeyboardInterrupt, ExternalShutdownException):
        log('sentryfuse run: stopping')
    finally:
        for thread in threads:
            thread.stop()
        for executor in executors:
            for node in list(executor.get_nodes()):
                executor.remove_node(node)
            executor.shutdown(timeout_sec=1.0)
        for node in nodes:
            node.destroy_node()
        context.try_shutdown()
    for thread in threads:
        thread.raise_error()
    return 0


class _Spinner(threading.Thread):
    """Spins one executor on its own thread until stopped; keeps the exception that ended it
    (a callback's), which :meth:`raise_error` re-raises on the main thread."""

    def __init__(self, executor, context, name: str):
        super().__init__(name=f'spin-{name}', daemon=True)
        self.executor, self.context = executor, context
        self._stop_event = threading.Event()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        from rclpy.executors import ExternalShutdownException
        try:
            while self.context.ok() and not self._stop_event.is_set():
                self.executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            if self.context.ok():     # an error while the context shuts down (Ctrl-C) is not one
                self.error = exc

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the callback in progress (an inference) and wait for it."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout_s)

    def raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
