"""Live bag replay: the bag's raw CDR bytes played onto ROS topics against the real nodes.

The health_monitor and perception nodes of :mod:`sentryfuse_ros.apps.graph` are started in this process
(own rclpy Context and DDS domain), a ``bag_player`` node publishes each mapped topic's stored CDR
bytes with raw publishers at the bag's timing scaled by ``rate`` (optionally publishing /clock
with the bag time, the nodes then on ``use_sim_time``), and a ``replay_recorder`` node records
what the graph publishes (Prediction, InferenceLatency, ModalityHealth). The result is a
:class:`~sentryfuse_ros.core.replay.replay.ReplayResult`, reported like an offline run.

Alignment with the bag: a Prediction's header stamp is the stamp of the newest sample it used (a
sensor stamp from the bag), so ``t_sample = stamp - bag start``, exactly as offline; ground truth
is looked up there. Health messages and the prediction's ``t`` are placed on the bag timeline by
wall time since playback started times ``rate``.
"""
import threading
import time
from typing import Any, Dict, List, Optional

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import BatteryState

from sentryfuse_ros.apps import graph
from sentryfuse_ros.core.bags.reader import SENSOR_MODALITIES, BagSource
from sentryfuse_ros.core.errors import BagError
from sentryfuse_ros.core.runtime import param_files
from sentryfuse_ros.core.replay.replay import (Faults, LabelTrack, ReplayConfig, ReplayResult, bag_info, faults_dict,
                                        profile_at)
from sentryfuse_ros.core.runtime.record import InferenceRecord
from sentryfuse_ros.msg import InferenceLatency, ModalityHealth, Prediction
from sentryfuse_ros.msg_arrays.inference import RecordPairer, header_seconds
from sentryfuse_ros.nodes import common

def graph_parameters(config: ReplayConfig, mapping: Dict[str, str], types: Dict[str, str], faults: Faults,
                     checkpoint: str, use_sim_time: bool) -> Dict[str, Dict[str, Any]]:
    """ros__parameters of health_monitor and perception: the graph's own (``config.graph``, e.g.
    config/perception.yaml; schema defaults where unset) with what this replay decides on top: the
    bag's topics and types, reliable QoS, the checkpoint, the replay's rate, trigger and device, a
    fixed budget."""
    health = param_files.node_values(config.graph, 'health_monitor')
    perception = param_files.node_values(config.graph, 'perception')
    health.update({'modalities': list(SENSOR_MODALITIES), 'qos': 'reliable'})
    if 'battery' in mapping:
        health['battery_topic'] = mapping['battery']
    if faults.budget:
        health['compute_budget_override'] = float(faults.budget)
    rp = config.replay
    perception.update({'model_path': checkpoint, 'device': rp.device, 'rate': float(rp.rate),
                       'trigger': rp.trigger, 'qos': 'reliable', 'prebuild': True})
    for m in SENSOR_MODALITIES:
        for values in (health, perception):
            if m in mapping:
                values[f'{m}.topic'] = mapping[m]
            if m in types:
                values[f'{m}.type'] = types[m]
    params = {'health_monitor': health, 'perception': perception}
    if use_sim_time:
        params['**'] = {'use_sim_time': True}
    else:  # the nodes run on this machine's clock, the messages keep the bag's stamps (maybe years old)
        perception['max_stamp_offset'] = 1e12
    return params


class ReplayRecorder(Node):
    """Records each inference (Prediction + InferenceLatency, paired by header stamp) and ModalityHealth.

    Args:
        origin_s: bag start [s], to place sensor stamps on the bag timeline.
        bag_time: () -> current bag time [s since bag start] (wall time since playback x rate).
        labels: ground truth.
        **kwargs: passed to rclpy Node.
    """

    def __init__(self, origin_s: float, bag_time, labels: LabelTrack, **kwargs):
        super().__init__('replay_recorder', **kwargs)
        self.origin_s, self.bag_time, self.labels = origin_s, bag_time, labels
        self.records: List[InferenceRecord] = []
        self.availability: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self._pairer = RecordPairer(self.records.append, origin_s)
        self.create_subscription(Prediction, '/sentryfuse/prediction', self._on_prediction, 100)
        self.create_subscription(InferenceLatency, '/sentryfuse/latency', self._on_latency, 100)
        self.create_subscription(ModalityHealth, '/sentryfuse/health', self._on_health, 100)

    def _on_health(self, msg: ModalityHealth) -> None:
        with self._lock:
            self.availability.append({
                't': self.bag_time(), 'live': dict(zip(msg.modalities, (bool(x) for x in msg.live))),
                'status': dict(zip(msg.modalities, (int(x) for x in msg.status))),
                'budget': float(msg.compute_budget), 'battery': float(msg.battery_percentage)})

    def _on_prediction(self, msg: Prediction) -> None:
        t_sample = header_seconds(msg) - self.origin_s  # the newest sample used, on the bag timeline
        with self._lock:
            self._pairer.prediction(msg, self.bag_time(), self.labels.truth(t_sample) if len(self.labels) else None)

    def _on_latency(self, msg: InferenceLatency) -> None:
        with self._lock:
            self._pairer.latency(msg)


def _labels_of(bag: BagSource, topic: Optional[str], start_ns: int, transition_s: float) -> LabelTrack:
    track = LabelTrack(transition_s)
    if topic:
        for t_ns, _, msgtype, raw in bag.raw_messages([topic]):
            track.add((t_ns - start_ns) / 1e9, str(bag.deserialize(raw, msgtype).data))
    return track


class _LiveGraph:
    """health_monitor + perception + the recorder in their own rclpy Context, spun in a thread.

    Args:
        params: the nodes' ros__parameters (:func:`graph_parameters`).
        origin_s, bag_time, labels: for the :class:`ReplayRecorder`.
        domain_id: DDS domain (None: ROS_DOMAIN_ID).
    """

    def __init__(self, params: Dict[str, Dict[str, Any]], origin_s: float, bag_time, labels: LabelTrack,
                 domain_id: Optional[int]):
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.executor, self.nodes, self._stop, self._spinner = None, [], threading.Event(), None
        try:
            specs = [s for s in graph.GRAPH if not s.sim_only]
            self.nodes = graph.build_graph(specs, params, use_sim=False, context=self.context)
            self.perception = next(n for n in self.nodes if n.get_name() == 'perception')
            if self.perception.engine is None:
                raise BagError(f'the perception node could not load the model: {self.perception.model_error}')
            self.recorder = ReplayRecorder(origin_s, bag_time, labels, context=self.context)
        except BaseException:
            self.close()
            raise

    def spin(self, *extra_nodes: Node) -> None:
        """Spin the graph, the recorder and ``extra_nodes`` in a thread until :meth:`close`."""
        self.executor = SingleThreadedExecutor(context=self.context)  # see sentryfuse_ros.apps.graph: why not multi
        for node in self.nodes + [self.recorder, *extra_nodes]:
            self.executor.add_node(node)

        def spin():
            while not self._stop.is_set() and self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        self._spinner = threading.Thread(target=spin, daemon=True)
        self._spinner.start()

    def close(self) -> None:
        self._stop.set()
        if self._spinner is not None:
            self._spinner.join(timeout=5.0)
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=1.0)
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()


class _BagPlayer:
    """The ``bag_player`` node: the bag's raw CDR bytes on their topics at the bag's timing x ``rate``.

    Args:
        context: the graph's rclpy Context.
        bag: the open bag.
        mapping: modality -> bag topic.
        faults: drops (not published), battery profile (published instead of the bag's BatteryState).
        rate: playback speed factor.
        battery_feed_hz: how often the battery profile is published [Hz, bag time].
        publish_clock: publish /clock with the bag time.
    """

    def __init__(self, context, bag: BagSource, mapping: Dict[str, str], faults: Faults, rate: float,
                 battery_feed_hz: float, publish_clock: bool):
        self.bag, self.faults, self.rate, self.battery_feed_hz = bag, faults, rate, battery_feed_hz
        self.played = [mapping[m] for m in SENSOR_MODALITIES + ('battery',) if m in mapping]
        self.modality_of = {t: m for m, t in mapping.items()}
        self.node = Node('bag_player', context=context, parameter_overrides=[Parameter('use_sim_time', value=False)])
        qos = common.qos_profile('reliable')
        self.pubs = {t: self.node.create_publisher(common.message_type(bag.topics[t]['type']), t, qos)
                     for t in self.played}
        battery_topic = mapping.get('battery', '/battery_state')
        self.battery_pub = (self.pubs.get(battery_topic) or self.node.create_publisher(BatteryState, battery_topic, qos)) \
            if faults.battery_profile else None
        self.clock_pub = self.node.create_publisher(Clock, '/clock', 10) if publish_clock else None
        self.wall0 = time.monotonic()  # wall time of bag time 0 (set again when playback starts)
        self.read: Dict[str, int] = {}
        self.injected: Dict[str, int] = {}

    def bag_time(self) -> float:
        """Seconds of bag time since playback started."""
        return (time.monotonic() - self.wall0) * self.rate

    def wait_for_subscribers(self, timeout_s: float, domain_id: Optional[int]) -> None:
        """Until both nodes subscribe to every sensor topic (the health monitor to the battery); BagError after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        want = {t: (2 if self.modality_of[t] in SENSOR_MODALITIES else 1) for t in self.played}
        while any(self.pubs[t].get_subscription_count() < n for t, n in want.items()):
            if time.monotonic() > deadline:
                raise BagError(f'live replay: the nodes did not subscribe within {timeout_s:g} s '
                               f'(DDS discovery on domain {domain_id})')
            time.sleep(0.05)
        time.sleep(0.2)  # let the other endpoints' discovery finish too

    def play(self, start_ns: int, duration: float, progress=None) -> None:
        """Publish the bag from now on (bag time 0 = now), then wait for the last inferences."""
        self.wall0 = time.monotonic()
        next_battery = 0.0
        for t_ns, topic, _msgtype, raw in self.bag.raw_messages(self.played):
            t = (t_ns - start_ns) / 1e9
            while self.battery_pub is not None and next_battery <= t:
                self._publish_battery(start_ns, next_battery)
                next_battery += 1.0 / self.battery_feed_hz
            m = self.modality_of[topic]
            if self.faults.dropped(m, t):
                self.injected[m] = self.injected.get(m, 0) + 1
                continue
            if m == 'battery' and self.faults.battery_profile:
                self.injected['battery_replaced'] = self.injected.get('battery_replaced', 0) + 1
                continue
            _sleep_until(self.wall0 + t / self.rate)
            if self.clock_pub is not None:
                self.clock_pub.publish(Clock(clock=_time_msg(t_ns)))
            self.pubs[topic].publish(raw)
            self.read[topic] = self.read.get(topic, 0) + 1
            if progress is not None and sum(self.read.values()) % 100 == 0:
                progress(min(1.0, t / duration) if duration else 1.0, f'{t:.1f}/{duration:.1f} s played')
        _sleep_until(self.wall0 + duration / self.rate + 0.5)  # the last inferences reach the recorder

    def _publish_battery(self, start_ns: int, t: float) -> None:
        _sleep_until(self.wall0 + t / self.rate)
        msg = BatteryState()
        msg.header.stamp = _time_msg(start_ns + int(t * 1e9))
        msg.percentage = float(profile_at(self.faults.battery_profile, t))
        self.battery_pub.publish(msg)


def replay_live(bag_path, config: ReplayConfig, *, checkpoint: str, faults: Faults = Faults(),
                labels: Optional[LabelTrack] = None, rate: float = 1.0, publish_clock: bool = False,
                domain_id: Optional[int] = None, discovery_timeout_s: float = 10.0,
                progress=None) -> ReplayResult:
    """Play ``bag_path`` into a live health_monitor + perception graph and record their output.

    Args:
        bag_path: the bag.
        config: topic map, health and engine settings, inference rate and trigger.
        checkpoint: model checkpoint for the perception node.
        faults: drop windows (not published), battery profile (published instead of the bag's
            BatteryState), fixed budget (the health monitor's compute_budget_override).
        labels: ground truth from a file; None: the bag's label topic when mapped.
        rate: playback speed factor (2.0 = twice as fast as recorded).
        publish_clock: publish /clock with the bag time; the nodes then use sim time.
        domain_id: DDS domain (None: ROS_DOMAIN_ID).
        discovery_timeout_s: how long to wait for the nodes to subscribe.
        progress: called as progress(fraction, text).
    """
    if not rate > 0:
        raise BagError(f'--rate={rate!r}: expected a positive playback speed factor')
    with BagSource(bag_path) as bag:
        info = bag_info(bag)
        mapping, notes = bag.resolve(config.topics)
        types = {m: bag.topics[t]['type'] for m, t in mapping.items()}
        start_ns, duration = info['start_ns'], info['duration_s']
        track = labels if labels is not None else _labels_of(
            bag, mapping.get('labels'), start_ns, config.replay.label_transition_s)
        clock: List[_BagPlayer] = []  # the player, once it exists: the recorder's bag clock
        params = graph_parameters(config, mapping, types, faults, checkpoint, publish_clock)
        live = _LiveGraph(params, start_ns / 1e9, lambda: clock[0].bag_time(), track, domain_id)
        try:
            player = _BagPlayer(live.context, bag, mapping, faults, rate, config.replay.battery_feed_hz,
                                publish_clock)
            clock.append(player)
            live.spin()
            player.wait_for_subscribers(discovery_timeout_s, domain_id)
            player.play(start_ns, duration, progress)
        finally:
            live.close()
        skipped = {t: {'type': v['type'], 'count': v['count']} for t, v in bag.topics.items()
                   if t not in player.played and t != mapping.get('labels')}
        if progress is not None:
            progress(1.0, f'{duration:.1f}/{duration:.1f} s played')
    engine = live.perception.engine
    return ReplayResult(
        mode='live', bag=info, mapping=mapping, notes=notes, class_names=tuple(engine.class_names),
        records=sorted(live.recorder.records, key=lambda r: r.t), availability=live.recorder.availability,
        read={'read': player.read, 'skipped': skipped, 'errors': {}, 'injected_drops': player.injected,
              'unknown_types': dict(bag.unknown_types), 'out_of_order': 0},
        faults=faults_dict(faults), switches=engine.switches, engine_errors=dict(engine.errors),
        engine_last_error=dict(engine.last_error),
        labels_source=('file' if labels is not None else f'topic {mapping["labels"]}' if 'labels' in mapping else ''),
        wall_s=time.monotonic() - player.wall0,
        settings={'rate': config.replay.rate, 'trigger': config.replay.trigger, 'playback_rate': rate,
                  'clock': publish_clock, 'health_update_rate': config.health.update_rate,
                  'label_transition_s': config.replay.label_transition_s, 'device': config.replay.device})


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _time_msg(t_ns: int):
    from builtin_interfaces.msg import Time  # noqa: PLC0415
    return Time(sec=int(t_ns // 10**9), nanosec=int(t_ns % 10**9))
