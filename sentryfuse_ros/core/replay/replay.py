"""Offline bag replay: a rosbag2 bag drives the same health and perception code as the nodes.

The bag is read in receive-time order (:func:`sentryfuse_ros.core.bags.reader.iter_messages`). Every
sensor message is an *arrival* for :class:`~sentryfuse_ros.core.runtime.health.HealthTracker` (as the
health_monitor node's raw subscriptions are) and a sample for
:class:`~sentryfuse_ros.core.runtime.engine.PerceptionEngine` (as the perception node's callbacks are);
battery messages feed the budget table. Time is the BAG's clock: the health check runs every
``1 / health.update_rate`` s and inference every ``1 / replay.rate`` s of bag time (or on each
camera frame with ``trigger: camera``), so the result is deterministic and independent of how
fast the CPU is. Ties: a message received at the very instant of a check or an inference is
handled first; at one instant a health check runs before an inference.

Fault injection on top of the bag: :class:`DropWindow` removes a modality's messages in a window
(seconds since bag start), a battery profile replaces the bag's BatteryState with (t, fraction)
points (linear in between, fed at ``replay.battery_feed_hz``), a fixed budget overrides the table.
Ground truth comes from the bag's label topic or a CSV file (:class:`LabelTrack`).

ROS-free: messages are ``rosbags`` objects and the message -> array converters are injected
(the CLI passes ``sentryfuse_ros.msg_arrays.modality_inputs``, the node's own).
"""
import dataclasses
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple


from sentryfuse_ros.core.replay.faults import (  # noqa: F401  (re-exported: a replay's inputs)
    DropWindow, Faults, LabelTrack, faults_dict, load_battery_profile, load_label_csv, parse_drop, profile_at)
from sentryfuse_ros.core.bags.reader import SENSOR_MODALITIES, BagSource, ReadStats, iter_messages
from sentryfuse_ros.core.runtime.engine import PerceptionEngine
from sentryfuse_ros.core.runtime.inputs import SensorInputs
from sentryfuse_ros.core.runtime.health import STATUS_NAMES, HealthState, HealthTracker
from sentryfuse_ros.core.replay.settings import (  # noqa: F401  (re-exported: a replay's configuration)
    HealthSettings, ReplayConfig, ReplaySettings, health_settings, load_replay_config)
from sentryfuse_ros.core.runtime.record import STAGES, InferenceRecord, build_record  # noqa: F401  (STAGES re-exported)
from sentryfuse_ros.core.replay.schedule import TickSchedule

MakeConverters = Callable[[Mapping[str, str], int], Dict[str, Callable]]


# ---------------------------------------------------------------------------- the replay
@dataclasses.dataclass
class ReplayResult:
    """What a replay (offline or live) produced; :mod:`sentryfuse_ros.core.replay.report` writes it out."""
    mode: str
    bag: Dict[str, Any]                      # path, storage, version, start_ns, duration_s, topics
    mapping: Dict[str, str]                  # modality -> topic
    notes: List[str]
    class_names: Tuple[str, ...]
    records: List[InferenceRecord]           # one per inference
    availability: List[Dict[str, Any]]       # one per health check (t, live, budget, battery)
    read: Dict[str, Any]                     # ReadStats.to_dict() + injected drops
    faults: Dict[str, Any]
    switches: int = 0
    engine_errors: Dict[str, int] = dataclasses.field(default_factory=dict)
    engine_last_error: Dict[str, str] = dataclasses.field(default_factory=dict)  # modality -> newest error text
    warnings: List[str] = dataclasses.field(default_factory=list)  # why modalities were never used
    labels_source: str = ''
    wall_s: float = 0.0
    prebuild_ms: float = 0.0
    settings: Dict[str, Any] = dataclasses.field(default_factory=dict)


def stamp_seconds(msg: Any, fallback: float) -> float:
    """header.stamp of a rosbags message in seconds; ``fallback`` when absent or zero."""
    stamp = getattr(getattr(msg, 'header', None), 'stamp', None)
    if stamp is None:
        return fallback
    value = float(stamp.sec) + float(stamp.nanosec) * 1e-9
    return value if value > 0 else fallback


def bag_info(bag: BagSource) -> Dict[str, Any]:
    return {'path': str(bag.path), 'storage': bag.storage, 'version': bag.version,
            'start_ns': bag.start_ns, 'end_ns': bag.end_ns,
            'duration_s': max(0.0, (bag.end_ns - bag.start_ns) / 1e9) if bag.message_count else 0.0,
            'message_count': bag.message_count, 'topics': bag.topics,
            'files': len(bag.metadata['relative_file_paths'])}


class BagDriver:
    """The replay loop: one bag drives HealthTracker + the engine's input stage on the bag clock.

    Every sensor message is an arrival for the tracker and a sample for ``inputs`` (camera and lidar
    converted on arrival, see :meth:`_push_sample`); health checks, battery feeds and inference
    ticks run on the bag clock (:class:`TickSchedule`) as the nodes' timers do. What an inference
    tick does is :meth:`on_infer`:
    :class:`OfflineReplay` runs the model, the bag-dataset builder (``core/replay/dataset.py``)
    stores the prepared inputs for training.

    Args:
        inputs: the input stage (a PerceptionEngine's ``inputs``, or a model-free SensorInputs).
        config: the replay configuration.
        make_converters: (modality -> msgtype, audio rate) -> {modality: converter}.
        faults: drops, battery profile, fixed budget.
        labels: a LabelTrack from a CSV (None: the bag's label topic when mapped).
        progress: called as progress(fraction, text) now and then.
    """

    def __init__(self, inputs: SensorInputs, config: ReplayConfig, make_converters: MakeConverters, *,
                 faults: Faults = Faults(), labels: Optional[LabelTrack] = None,
                 progress: Optional[Callable[[float, str], None]] = None):
        self.inputs, self.config, self.faults = inputs, config, faults
        self.make_converters, self.labels, self.progress = make_converters, labels, progress
        battery = config.health.battery
        if faults.budget:
            battery = dataclasses.replace(battery, compute_budget_override=float(faults.budget))
        self.tracker = HealthTracker({m: getattr(config.health, m) for m in SENSOR_MODALITIES}, battery)
        self.track = LabelTrack(config.replay.label_transition_s)
        self.origin = 0.0                          # bag start [s] of the bag being driven
        self.state: Optional[HealthState] = None   # the newest health check (None before the first)
        self.availability: List[Dict[str, Any]] = []  # one row per health check
        self.injected: Dict[str, int] = {}         # messages removed or replaced by fault injection
        self.arrival_ms: Dict[str, float] = {}     # conversion time of the newest camera/lidar sample [ms]

    def on_infer(self, t: float, origin: float, live: Optional[List[str]], budget: float) -> None:
        """An inference tick at ``t`` s of bag time (``origin`` = bag start [s]); ``live`` None = no health
        yet, or ``replay.use_health`` off."""
        raise NotImplementedError

    def progress_text(self) -> str:
        return ''

    def drive(self, bag_path) -> Dict[str, Any]:
        """Run the loop over ``bag_path``; BagError for a missing/corrupt bag or a required topic that is absent.

        Returns {'info', 'mapping', 'stats', 'availability', 'injected', 'unknown_types', 'labels_source'}.
        """
        stats = ReadStats()
        bag_labels = self.labels is None
        self.track = self.labels if self.labels is not None else LabelTrack(self.config.replay.label_transition_s)
        self.state, self.availability, self.injected = None, [], {}
        with BagSource(bag_path) as bag:
            info = bag_info(bag)
            mapping, _ = bag.resolve(self.config.topics)
            converters = self.make_converters({m: bag.topics[t]['type'] for m, t in mapping.items()},
                                              self.inputs.pre.audio_rate)
            start_ns, duration = info['start_ns'], info['duration_s']
            self.origin = start_ns / 1e9
            schedule = self._schedule()
            for n_done, bm in enumerate(iter_messages(bag, self.config.topics, stats=stats), start=1):
                t = (bm.t_ns - start_ns) / 1e9
                self._run_due(schedule, t)
                if self.progress is not None and n_done % 200 == 0:
                    self._report_progress(t, duration)
                self._on_message(bm, t, converters, bag_labels)
            self._run_due(schedule, duration, inclusive=True)
        if self.progress is not None:
            self._report_progress(duration, duration)
        return {'info': info, 'mapping': mapping, 'stats': stats, 'availability': self.availability,
                'injected': self.injected, 'unknown_types': dict(bag.unknown_types),
                'labels_source': ('file' if not bag_labels else
                                  f'topic {mapping["labels"]}' if 'labels' in mapping else '')}

    # -- the bag clock's timers ------------------------------------------------------------
    def _schedule(self) -> TickSchedule:
        """Health checks from 0 s, inference ticks from one period (trigger: timer), battery feeds from 0 s
        (with a battery profile)."""
        rp = self.config.replay
        order = ['health'] + (['infer'] if rp.trigger == 'timer' else []) + \
            (['battery'] if self.faults.battery_profile else [])
        periods = {'health': 1.0 / self.config.health.update_rate, 'infer': 1.0 / rp.rate,
                   'battery': 1.0 / rp.battery_feed_hz}
        return TickSchedule(periods, order, first={'infer': 1})

    def _run_due(self, schedule: TickSchedule, t_end: float, inclusive: bool = False) -> None:
        actions = {'health': self._health_tick, 'infer': self._infer_tick, 'battery': self._battery_feed}
        for name, t in schedule.due(t_end, inclusive):
            actions[name](t)

    def _health_tick(self, t: float) -> None:
        s = self.state = self.tracker.check(self.origin + t)
        self.availability.append({'t': t, 'live': dict(zip(s.modalities, s.live)),
                                  'status': dict(zip(s.modalities, s.status)),
                                  'budget': s.compute_budget, 'battery': s.battery_percentage})

    def _infer_tick(self, t: float) -> None:
        s = self.state
        use = s is not None and self.config.replay.use_health
        live = [m for m, ok in zip(s.modalities, s.live) if ok] if use else None
        self.on_infer(t, self.origin, live, 1.0 if s is None else float(s.compute_budget))

    def _battery_feed(self, t: float) -> None:
        self.tracker.on_battery(self.origin + t, profile_at(self.faults.battery_profile, t))
        self.state = self.tracker.check(self.origin + t, advance=False)

    # -- the bag's messages ----------------------------------------------------------------
    def _on_message(self, bm, t: float, converters: Mapping[str, Callable], bag_labels: bool) -> None:
        """One bag message at ``t`` s of bag time: a sensor sample, a battery reading or a label."""
        if self.faults.dropped(bm.modality, t):
            self.injected[bm.modality] = self.injected.get(bm.modality, 0) + 1
            return
        if bm.msg is None:
            return
        now = self.origin + t
        if bm.modality in SENSOR_MODALITIES:
            self.tracker.on_message(bm.modality, now)   # an arrival, as the raw subscription sees
            if self._push_sample(bm.modality, bm.msg, now, converters[bm.modality]) and \
                    bm.modality == 'camera' and self.config.replay.trigger == 'camera':
                self._infer_tick(t)
        elif bm.modality == 'battery':
            if self.faults.battery_profile:
                self.injected['battery_replaced'] = self.injected.get('battery_replaced', 0) + 1
                return
            self.tracker.on_battery(now, float(bm.msg.percentage), float(bm.msg.charge), float(bm.msg.capacity))
            self.state = self.tracker.check(now, advance=False)
        elif bm.modality == 'labels' and bag_labels:
            self.track.add(t, str(bm.msg.data))

    def _push_sample(self, modality: str, msg: Any, now: float, converter: Callable) -> bool:
        """Push one sensor message into the input stage; False when its conversion failed (counted).

        Camera and lidar are converted here, on arrival, where the node converts when an inference
        uses them: the replay's report names every malformed frame of the bag, inferred on or not
        (a short bag's frames may never be). The predictions are the same either way; the time is
        kept in ``arrival_ms`` and counted in the next inference that uses the sample, as the node
        counts it. Audio is converted by ``push``, as in the node.
        """
        payload = msg
        if modality != 'audio':
            c0 = time.perf_counter()
            try:
                payload, converter = converter(msg), None
            except Exception as exc:  # noqa: BLE001 - counted like the node's, never fatal
                self.inputs.record_error(modality, exc)
                return False
            self.arrival_ms[modality] = (time.perf_counter() - c0) * 1e3
        self.inputs.push(modality, payload, stamp_seconds(msg, now), converter, received_s=now)
        return True

    def _report_progress(self, t: float, duration: float) -> None:
        self.progress(min(1.0, t / duration) if duration else 1.0,
                      f'{t:.1f}/{duration:.1f} s bag time, {self.progress_text()}')


class OfflineReplay(BagDriver):
    """Drives HealthTracker + PerceptionEngine from one bag. Call :meth:`run` once.

    Args:
        engine: a PerceptionEngine (prebuilt or not); it is used as it is.
        config, make_converters, faults, labels, progress: as for :class:`BagDriver`.
    """

    def __init__(self, engine: PerceptionEngine, config: ReplayConfig, make_converters: MakeConverters, *,
                 faults: Faults = Faults(), labels: Optional[LabelTrack] = None,
                 progress: Optional[Callable[[float, str], None]] = None):
        super().__init__(engine.inputs, config, make_converters, faults=faults, labels=labels, progress=progress)
        self.engine = engine
        self.records: List[InferenceRecord] = []

    def progress_text(self) -> str:
        return f'{len(self.records)} inferences'

    def on_infer(self, t: float, origin: float, live: Optional[List[str]], budget: float) -> None:
        t0 = time.perf_counter()
        result = self.engine.infer(origin + t, live, budget)
        if result is None:
            return
        # camera/lidar were converted on arrival; their conversion counts here, as in the node
        arrival = sum(self.arrival_ms.get(m, 0.0) for m in result.modalities_used)
        result.convert_ms += arrival
        t_sample = result.stamp_s - origin  # the newest sample used, on the bag clock
        self.records.append(build_record(
            result, t=t, origin_s=origin, total_ms=(time.perf_counter() - t0) * 1e3 + arrival,
            truth=self.track.truth(t_sample) if len(self.track) else None,
            stamps={m: self.engine.stamp_of(m) - origin for m in result.modalities_used}))

    def run(self, bag_path) -> ReplayResult:
        """Replay ``bag_path``; BagError for a missing/corrupt bag or a required topic that is absent."""
        cfg, rp = self.config, self.config.replay
        t_wall = time.perf_counter()
        self.records = []
        out = self.drive(bag_path)
        stats, records, availability = out['stats'], self.records, out['availability']
        read = stats.to_dict()
        read['injected_drops'] = out['injected']
        read['unknown_types'] = out['unknown_types']
        return ReplayResult(
            mode='offline', bag=out['info'], mapping=dict(stats.mapping), notes=list(stats.notes),
            class_names=tuple(self.engine.class_names), records=records, availability=availability,
            read=read, faults=faults_dict(self.faults), switches=self.engine.switches,
            engine_errors=dict(self.engine.errors), engine_last_error=dict(self.engine.last_error),
            warnings=never_used_warnings(cfg, stats.mapping, stats.read, availability, records, out['injected']),
            labels_source=out['labels_source'],
            wall_s=time.perf_counter() - t_wall,
            settings={'rate': rp.rate, 'trigger': rp.trigger, 'health_update_rate': cfg.health.update_rate,
                      'label_transition_s': rp.label_transition_s, 'device': rp.device,
                      'use_health': rp.use_health})


def never_used_warnings(config: ReplayConfig, mapping: Mapping[str, str], read: Mapping[str, int],
                        availability: List[Dict[str, Any]], records: List[InferenceRecord],
                        injected: Optional[Mapping[str, int]] = None) -> List[str]:
    """Why each mapped sensor was never used: its message count against the health limits it failed.

    A bag with a few messages per topic (another implementation's test bag) never passes the rate
    limits, so no modality becomes live and nothing is inferred: say which topics, how many
    messages, which limit, and the flag that relaxes it.
    """
    used = {m for r in records for m in r.modalities}
    out = []
    for m in SENSOR_MODALITIES:
        if m not in mapping or m in used:
            continue
        topic, n = mapping[m], read.get(mapping[m], 0)
        if n and (injected or {}).get(m, 0) >= n:
            out.append(f'{m} {topic}: all {n} messages removed by --drop')
            continue
        seen: Dict[str, int] = {}
        for a in availability:
            name = STATUS_NAMES[a['status'][m]] if m in a['status'] else 'NOT_RECEIVED'
            seen[name] = seen.get(name, 0) + 1
        ever_live = any(a['live'].get(m) for a in availability)
        lim = getattr(config.health, m)
        if not ever_live and config.replay.use_health:
            out.append(
                f'{m} {topic}: {n} messages, never live for the health monitor (checks: '
                f'{", ".join(f"{k} x{v}" for k, v in sorted(seen.items())) or "none"}); live needs '
                f'>= {lim.error_rate:g} Hz over {lim.window_size} arrivals, no gap over {lim.timeout:g} s, for '
                f'{lim.recover_count} consecutive checks at {config.health.update_rate:g} Hz '
                f'(health.{m} in the replay config); pass --ignore-health to infer on every fresh sample')
        else:
            out.append(f'{m} {topic}: {n} messages, never used by an inference (no sample was fresh within '
                       f'max_age_s, or every one failed to convert)')
    return out
