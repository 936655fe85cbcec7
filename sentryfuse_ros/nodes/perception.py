"""perception: SentryGate-pruned, SentryAttend inference over whatever sensors are live.

A lifecycle (managed) node. configure loads and checks the checkpoint, chooses the runtime, builds
the sub-networks and publishes the class map (vision_msgs/LabelInfo, transient local) on
/sentryfuse/label_info; activate subscribes to camera (Image | CompressedImage), lidar
(PointCloud2 | LaserScan), audio (AudioFrame | AudioDataStamped) and /sentryfuse/health and starts
inferring: it keeps the newest sample per modality (never waits for all sensors) and at `rate` (or
on each camera frame) runs the sub-network for the current (live set, compute budget) zero-shot,
publishing Prediction (/sentryfuse/prediction), vision_msgs/Classification
(/sentryfuse/classification) and InferenceLatency (/sentryfuse/latency); deactivate drops the
subscriptions and the timer (no forward pass while inactive); cleanup releases the model.
/diagnostics is published in every state. With `autostart` (default) the node configures and
activates itself at construction, so `ros2 run`, `ros2 launch` and apps/graph.py's in-process graph
start it as before; `autostart:=false` leaves the transitions to `ros2 lifecycle set /perception ...`
or a lifecycle manager. All logic is in sentryfuse_ros.core.runtime.engine.
"""
import dataclasses
import math
import re
import time
from typing import Any, Dict, Mapping, Optional

from diagnostic_msgs.msg import DiagnosticArray
from vision_msgs.msg import Classification, LabelInfo
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from sentryfuse_ros import msg_arrays
from sentryfuse_ros.core.pruning.budget import is_budget
from sentryfuse_ros.core.runtime.engine import PerceptionEngine
from sentryfuse_ros.core.errors import ConfigError, ConversionError
from sentryfuse_ros.core.runtime.choice import Capabilities
from sentryfuse_ros.core.runtime import stamps
from sentryfuse_ros.core.runtime.latency import LatencyStats
from sentryfuse_ros.core.runtime.record import STAGES, InferenceRecord, build_record
from sentryfuse_ros.core.data.preprocess import MODALITIES
from sentryfuse_ros.msg import InferenceLatency, ModalityHealth, Prediction
from sentryfuse_ros.nodes import common
from sentryfuse_ros.core.runtime import params
from sentryfuse_ros.nodes.perception_params import (  # noqa: F401  (public here too)
    ERROR_HOLD_S, check_values, default_model_path)
from sentryfuse_ros.nodes.perception_model import load_model, runtime_status

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class Perception(LifecycleNode):
    """Args:
        capabilities: what this machine can run (default: detected; tests pass their own).
        **kwargs: passed to rclpy Node (context, parameter_overrides, ...).
    """

    def __init__(self, capabilities: Optional[Capabilities] = None, **kwargs):
        super().__init__('perception', **kwargs)
        self._capabilities = capabilities
        self._runtime = ('', '', '')  # (requested, running, refusal) runtime descriptions
        schema = params.PERCEPTION
        defaults = params.defaults(schema)
        values = common.declare_parameters(self, schema)
        self._param_errors = common.fall_back_to_defaults(self, values, defaults, common.spec_checks(schema) + [
            (tuple(k for k in defaults if k != 'model_path'), check_values)])
        common.fix_descriptors(self, schema)
        self._values = values         # as the last configure read them (the parameters until then)
        self._state = 'unconfigured'  # lifecycle primary state, as this node's transitions left it
        self._type_errors = []        # message types the last configure could not import
        self._stats = LatencyStats(int(values['stats_window']))
        self._health: Optional[ModalityHealth] = None
        self._health_received = -math.inf
        self._logged = set()  # (modality, error type) already logged once
        self._error_counts: Dict[str, int] = {}   # engine.errors as last seen
        self._error_at: Dict[str, float] = {}     # node time its count last grew
        self._model_error = ''
        self._prebuild_ms = 0.0
        self._last: Optional[InferenceRecord] = None  # the newest published inference
        self._count = 0          # Predictions published since start (every state, every configure)
        self._forward_passes = 0  # sub-network calls of engines released by cleanup
        self._audio_push_ms = 0.0  # audio conversion since the last inference (done in push)
        self.engine: Optional[PerceptionEngine] = None
        self._health_timeout = float(values['health_timeout'])
        common.install_validator(self, schema, self._build_runtime, self._apply_runtime,
                                 gate=self._configure_gate)

        self._pred_pub = self.create_publisher(Prediction, '/sentryfuse/prediction', 10)
        self._lat_pub = self.create_publisher(InferenceLatency, '/sentryfuse/latency', 10)
        self._class_pub = self.create_publisher(Classification, '/sentryfuse/classification', 10)
        self._label_pub = self.create_publisher(LabelInfo, '/sentryfuse/label_info', common.latched())
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._subs, self._health_sub, self._timer = [], None, None  # created by activate
        self._diag_timer = self.create_timer(float(values['diagnostics_period']), self._on_diagnostics)
        self._jump_handle = self.get_clock().create_jump_callback(
            common.jump_back_threshold(), post_callback=self._on_clock_jump)
        if values['autostart'] and self.trigger_configure() == SUCCESS:
            self.trigger_activate()

    # -- lifecycle -----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and check the checkpoint, choose the runtime, build the sub-networks; FAILURE (the
        node stays unconfigured, the reason logged and on /diagnostics) when any of it fails."""
        values = common.current_values(self, params.PERCEPTION)
        self._values, self._model_error, self._runtime = values, '', ('', '', '')
        self._stats = LatencyStats(int(values['stats_window']))
        if self._capabilities is None:
            self._capabilities = Capabilities.detect()
        loaded = load_model(values, self._capabilities, self.get_logger())
        self.engine, self._converters, self._runtime = loaded.engine, loaded.converters, loaded.runtime
        self._prebuild_ms, self._model_error = loaded.prebuild_ms, loaded.error
        if self.engine is None:
            self.get_logger().error('configure failed, the node stays unconfigured (fix the parameter, '
                                    'then `ros2 lifecycle set /perception configure`)')
            return FAILURE
        self._types = {}
        self._type_errors = []
        for m in MODALITIES:
            try:
                self._types[m] = common.message_type(values[f'{m}.type'])
            except ConfigError as exc:
                self._type_errors.append(str(exc))
                self.get_logger().error(str(exc))
        # class id -> name, once per loaded model, for the late subscribers (transient local)
        self._label_pub.publish(msg_arrays.class_names_to_label_info(
            self.engine.class_names, stamp=self.get_clock().now().to_msg()))
        self._state = 'inactive'
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the sensors and the health topic, start the inference timer."""
        values = self._values
        qos = common.qos_profile(values['qos'])
        for m, msg_type in self._types.items():
            # camera, lidar and health: only the newest is used (latest-only queues); audio: every frame
            self._subs.append(self.create_subscription(
                msg_type, values[f'{m}.topic'], lambda msg, m=m: self._on_sensor(m, msg),
                qos if m == 'audio' else common.latest_only(qos)))
        self._health_sub = self.create_subscription(ModalityHealth, values['health_topic'], self._on_health,
                                                    common.latest_only(common.qos_profile('reliable')))
        if values['trigger'] == 'timer':
            self._timer = self.create_timer(1.0 / float(values['rate']), self._on_timer)
        self._state = 'active'
        self.get_logger().info(f"active: inferring ({values['trigger']} trigger)")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop all compute: no subscription, no timer, no forward pass until activated again."""
        self._stop_inputs()
        self._state = 'inactive'
        self.get_logger().info('inactive: no inference until activated')
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model (sub-networks, caches, sessions); the parameters can change again."""
        self._release_engine()
        self._runtime, self._state = ('', '', ''), 'unconfigured'
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release_engine()
        self._state = 'finalized'
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to unconfigured."""
        self.get_logger().error(f'a transition from {state.label} raised; releasing the model')
        self._stop_inputs()
        self._release_engine()
        self._state = 'unconfigured'
        return SUCCESS

    def _stop_inputs(self) -> None:
        for sub in self._subs + [self._health_sub]:
            if sub is not None:
                self.destroy_subscription(sub)
        if self._timer is not None:
            self.destroy_timer(self._timer)
        self._subs, self._health_sub, self._timer = [], None, None
        self._health, self._health_received, self._audio_push_ms = None, -math.inf, 0.0
        if self.engine is not None:  # an activate starts from new samples
            for m in self.engine.modalities:
                self.engine.drop(m)

    def _release_engine(self) -> None:
        if self.engine is not None:
            self._forward_passes += self.engine.forward_passes
            device = self.engine.device
            self.engine, self._converters, self._last = None, {}, None
            if getattr(device, 'type', device) == 'cuda':
                import torch  # noqa: PLC0415 (torch-heavy)
                torch.cuda.empty_cache()

    def _configure_gate(self, names) -> str:
        """Why a change of ``names`` is refused now ('' = go on): the parameters that configure reads
        to load the model change only while unconfigured, taking effect at the next configure."""
        fixed = sorted(n for n in names if n in params.UNCONFIGURED_ONLY)
        if fixed and self._state != 'unconfigured':
            return (f'{fixed} cannot change while the node is {self._state}: configure reads them; '
                    '`ros2 lifecycle set /perception deactivate` (if active), `cleanup`, set them, then `configure`')
        return ''

    @property
    def lifecycle_state(self) -> str:
        """'unconfigured', 'inactive', 'active' or 'finalized'."""
        return self._state

    @property
    def model_error(self) -> str:
        """Why the model could not be loaded ('' when it was)."""
        return self._model_error

    # -- set-up --------------------------------------------------------------------------
    def _build_runtime(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        check_values(values)
        return values

    def _apply_runtime(self, values: Mapping[str, Any], changed) -> None:
        """Make settable parameters take effect: timers re-created, freshness limits replaced."""
        self._values = dict(values)
        self._health_timeout = float(values['health_timeout'])
        if 'rate' in changed and self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = self.create_timer(1.0 / float(values['rate']), self._on_timer)
        if 'diagnostics_period' in changed:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(float(values['diagnostics_period']), self._on_diagnostics)
        if self.engine is not None:
            self.engine.inputs.max_age_s = tuple(float(values[f'{m}.max_age']) for m in MODALITIES)

    # -- callbacks -----------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_sensor(self, modality: str, msg) -> None:
        if self.engine is None:
            return
        header = getattr(msg, 'header', None)
        try:
            stamp = msg_arrays.stamp_to_sec(header.stamp) if header is not None else 0.0
        except Exception as exc:  # noqa: BLE001 - e.g. nanosec >= 1e9: skip the message, count it, stay alive
            self.engine.record_error(modality, exc)
            return
        now = self._now()
        t0 = time.perf_counter()
        self.engine.push(modality, msg, stamp if stamp > 0 else now, self._converters[modality],
                         received_s=now)
        if modality == 'audio':  # converted on arrival: part of the next inference's convert_ms and total_ms
            self._audio_push_ms += (time.perf_counter() - t0) * 1e3
        if modality == 'camera' and self._values['trigger'] == 'camera':
            self._infer()

    def _on_health(self, msg: ModalityHealth) -> None:
        now = self._now()
        try:  # a health message stamped far from this node's clock is an error, never obeyed
            stamp = msg_arrays.stamp_to_sec(msg.header.stamp)
            if stamp != 0.0:  # unstamped: taken as received now
                stamps.check_stamp(stamp, now, 'health', self._max_stamp_offset())
        except Exception as exc:  # noqa: BLE001 - counted under 'health', the message is dropped
            if self.engine is not None:
                self.engine.record_error('health', exc)
            return
        self._health = msg
        self._health_received = now

    def _max_stamp_offset(self) -> float:
        return self.engine.config.max_stamp_offset_s if self.engine is not None else stamps.MAX_STAMP_OFFSET_S

    def _on_clock_jump(self, jump) -> None:
        """The clock stepped back (use_sim_time and a /clock that restarts): every time kept is "in the
        future"; forget the buffered samples, the health message and when errors happened."""
        if self.engine is not None:
            self.engine.reset_time()
        self._health, self._health_received = None, -math.inf
        self._error_at.clear()

    def _on_timer(self) -> None:
        self._infer()

    def health_view(self, now: float):
        """(live modalities or None, budget, source) from the newest health message."""
        if self._health is None or now - self._health_received > self._health_timeout:
            return None, 1.0, 'no health message: own freshness check, budget 1.0'
        live = [m for m, ok in zip(self._health.modalities, self._health.live) if ok]
        budget = float(self._health.compute_budget)
        if not is_budget(budget):  # where a budget enters the node: fall back instead of raising
            return live, 1.0, f'health compute_budget={budget!r} invalid: using 1.0'
        return live, budget, 'health monitor'

    def _infer(self) -> None:
        if self.engine is None:
            return
        t0 = time.perf_counter()
        now = self._now()
        live, budget, _ = self.health_view(now)
        try:
            result = self.engine.infer(now, live, budget)
        except Exception as exc:  # noqa: BLE001 - the engine contains its errors; this is the last net
            self.engine.record_error('inference', exc)
            result = None
        push_ms, self._audio_push_ms = self._audio_push_ms, 0.0  # the engine counted it in convert_ms
        self._report_new_errors(now)
        if result is None:
            return
        # the record is published as built, except total_ms, which covers the Prediction's publish too
        record = build_record(result, t=now, origin_s=0.0, total_ms=0.0)
        pred = msg_arrays.prediction_msg(record)
        self._pred_pub.publish(pred)
        self._publish_classification(record, pred.header)
        record = dataclasses.replace(record, total_ms=(time.perf_counter() - t0) * 1e3 + push_ms)
        self._lat_pub.publish(msg_arrays.latency_msg(record, header=pred.header))
        self._stats.add(**{k: getattr(record, k) for k in STAGES})
        self._last = record
        self._count += 1

    def _publish_classification(self, record: InferenceRecord, header) -> None:
        """vision_msgs/Classification of the inference: one hypothesis per class (class_id = its name,
        score = its probability) under the Prediction's header (the stamp of the newest sample used)."""
        try:
            msg = msg_arrays.probabilities_to_classification(
                record.scores, self.engine.class_names, stamp=header.stamp, frame_id=header.frame_id)
        except ConversionError as exc:  # scores the engine checked finite; counted should one be out of [0, 1]
            self.engine.record_error('inference', exc)
            return
        self._class_pub.publish(msg)

    def _note_errors(self, now: float) -> None:
        """Remember when each error count last grew (statuses clear ERROR_HOLD_S after that)."""
        for key, count in self.engine.errors.items():
            if count != self._error_counts.get(key):
                self._error_counts[key] = count
                self._error_at[key] = now

    def _recent_errors(self, now: float) -> Dict[str, str]:
        """{modality or 'inference': last error text} for errors of the last ERROR_HOLD_S."""
        return {k: self.engine.last_error[k] for k in sorted(self._error_at)
                if now - self._error_at[k] <= ERROR_HOLD_S}

    def _report_new_errors(self, now: float) -> None:
        self._note_errors(now)
        for modality, text in self.engine.last_error.items():
            # the cause is the message with its numbers masked (sizes vary, the cause does not);
            # the exception type alone would log only the first of many ConversionError causes
            key = (modality, re.sub(r'\d+', '#', text))
            if key not in self._logged:
                self._logged.add(key)
                self.get_logger().error(f'{modality}: {text} (logged once per cause; counted on /diagnostics)')

    def _on_diagnostics(self) -> None:
        """Published in every lifecycle state: while unconfigured the model status (ERROR with the
        reason of a failed configure), while inactive the perception status OK 'inactive' with its
        counters (inferences, forward_passes: unchanged while inactive)."""
        now = self._now()
        if self.engine is None:
            statuses = [self._unconfigured_status()]
        else:
            statuses = self._engine_statuses(now)
        statuses.append(runtime_status(self._runtime, self._model_error, self._state, self.engine is not None))
        errors = self._param_errors + self._type_errors
        statuses.append(common.diagnostic_status(
            'sentryfuse: perception parameters', common.LEVEL_ERROR if errors else common.LEVEL_OK,
            '; '.join(errors) or 'OK', values={'invalid_at_startup': len(self._param_errors)}))
        self._diag_pub.publish(common.diagnostic_array(self.get_clock().now().to_msg(), statuses))

    def _counters(self) -> Dict[str, Any]:
        passes = self._forward_passes + (self.engine.forward_passes if self.engine is not None else 0)
        return {'lifecycle_state': self._state, 'inferences': self._count, 'forward_passes': passes}

    def _unconfigured_status(self):
        if self._model_error:
            level, message = common.LEVEL_ERROR, self._model_error
        else:
            level, message = common.LEVEL_OK, (f'{self._state}: no model loaded '
                                               '(`ros2 lifecycle set /perception configure` loads it)')
        return common.diagnostic_status('sentryfuse: perception model', level, message, values=self._counters())

    def _engine_statuses(self, now: float) -> list:
        live, budget, source = self.health_view(now)
        last = self._last
        values: Dict[str, Any] = {
            **self._counters(), 'health_source': source, 'compute_budget': budget,
            'subnetwork': last.subnetwork if last else '', 'gflops': last.gflops if last else 0.0,
            'modalities_used': '+'.join(last.modalities) if last else '',
            'subnetwork_switches': self.engine.switches,
            'subnetworks_built': self.engine.runners.stats.get('builds', 0),
            'prebuild_ms': self._prebuild_ms,
        }
        for stage, row in self._stats.percentiles((50, 95)).items():
            values[f'{stage}_p50'] = row['p50']
            values[f'{stage}_p95'] = row['p95']
        if self._state != 'active':  # a commanded state, not a fault: OK, and how to resume
            level = common.LEVEL_OK
            message = f'{self._state}: no inference (`ros2 lifecycle set /perception activate` resumes)'
        else:
            level = common.LEVEL_OK if source == 'health monitor' else common.LEVEL_WARN
            message = f'{last.subnetwork} {last.gflops:.3f} GFLOPs' if last else 'no inference yet'
            if source != 'health monitor':
                message += f'; {source}'
        self._note_errors(now)
        recent = self._recent_errors(now)
        errors = self.engine.errors
        values['inference_errors'] = errors.get('inference', 0)
        values['health_errors'] = errors.get('health', 0)  # health messages refused (e.g. stamps far off)
        if 'inference' in recent:   # e.g. non-finite logits: nothing is published, say why
            level = common.LEVEL_ERROR
            message = f'inference failed: {recent["inference"]}; {message}'
        inputs = [m for m in MODALITIES if m in recent]
        return [common.diagnostic_status('sentryfuse: perception', level, message, values=values),
                common.diagnostic_status(
                    'sentryfuse: perception inputs', common.LEVEL_WARN if inputs else common.LEVEL_OK,
                    '; '.join(f'{m}: {recent[m]}' for m in inputs) or 'OK',
                    values={f'{m}_errors': errors.get(m, 0) for m in MODALITIES})]


def main(args=None) -> int:
    return common.run_node(Perception, args)


if __name__ == '__main__':
    main()
