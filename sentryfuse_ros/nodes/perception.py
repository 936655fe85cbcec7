"""perception: SentryGate-pruned, SentryAttend inference over whatever sensors are live.

Subscribes to camera (Image | CompressedImage), lidar (PointCloud2 | LaserScan), audio
(AudioFrame | AudioDataStamped) and /sentryfuse/health; keeps the newest sample per modality
(never waits for all sensors); at `rate` (or on each camera frame) runs the sub-network for the
current (live set, compute budget) zero-shot; publishes Prediction on /sentryfuse/prediction,
InferenceLatency on /sentryfuse/latency and /diagnostics. All logic is in
sentryfuse_ros.core.runtime.engine; this node converts messages and publishes results.
"""
import dataclasses
import math
import re
import time
from typing import Any, Dict, Mapping, Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from sentryfuse_ros import msg_arrays
from sentryfuse_ros.msg_arrays.modality_inputs import audio_converter, lidar_converter
from sentryfuse_ros.core.pruning.budget import is_budget
from sentryfuse_ros.core.runtime.engine import PerceptionEngine
from sentryfuse_ros.core.errors import ConfigError, ExportError, RuntimeChoiceError, SentryFuseError
from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice, resolve_choice
from sentryfuse_ros.core.runtime import stamps
from sentryfuse_ros.core.runtime.latency import LatencyStats
from sentryfuse_ros.core.runtime.record import STAGES, InferenceRecord, build_record
from sentryfuse_ros.core.data.preprocess import MODALITIES
from sentryfuse_ros.msg import InferenceLatency, ModalityHealth, Prediction
from sentryfuse_ros.nodes import common
from sentryfuse_ros.core.runtime import params
from sentryfuse_ros.nodes.perception_params import (  # noqa: F401  (public here too)
    ERROR_HOLD_S, build_engine_config, check_values, default_model_path)



class Perception(Node):
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
        self._values = values
        self._stats = LatencyStats(int(values['stats_window']))
        self._health: Optional[ModalityHealth] = None
        self._health_received = -math.inf
        self._logged = set()  # (modality, error type) already logged once
        self._error_counts: Dict[str, int] = {}   # engine.errors as last seen
        self._error_at: Dict[str, float] = {}     # node time its count last grew
        self._model_error = ''
        self._prebuild_ms = 0.0
        self._last: Optional[InferenceRecord] = None  # the newest published inference
        self._count = 0
        self._audio_push_ms = 0.0  # audio conversion since the last inference (done in push)
        self.engine: Optional[PerceptionEngine] = None
        self._health_timeout = float(values['health_timeout'])
        self._load_engine(values)
        common.install_validator(self, schema, self._build_runtime, self._apply_runtime)

        qos = common.qos_profile(values['qos'])
        self._types = {m: values[f'{m}.type'] for m in MODALITIES}
        self._subs = []
        for m in MODALITIES:
            try:
                msg_type = common.message_type(self._types[m])
            except ConfigError as exc:
                self._param_errors.append(str(exc))
                self.get_logger().error(str(exc))
                continue
            # camera, lidar and health: only the newest is used (latest-only queues); audio: every frame
            self._subs.append(self.create_subscription(
                msg_type, values[f'{m}.topic'], lambda msg, m=m: self._on_sensor(m, msg),
                qos if m == 'audio' else common.latest_only(qos)))
        self._health_sub = self.create_subscription(ModalityHealth, values['health_topic'], self._on_health,
                                                    common.latest_only(common.qos_profile('reliable')))
        self._pred_pub = self.create_publisher(Prediction, '/sentryfuse/prediction', 10)
        self._lat_pub = self.create_publisher(InferenceLatency, '/sentryfuse/latency', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._timer = None
        if values['trigger'] == 'timer':
            self._timer = self.create_timer(1.0 / float(values['rate']), self._on_timer)
        self._diag_timer = self.create_timer(float(values['diagnostics_period']), self._on_diagnostics)
        self._jump_handle = self.get_clock().create_jump_callback(
            common.jump_back_threshold(), post_callback=self._on_clock_jump)

    @property
    def model_error(self) -> str:
        """Why the model could not be loaded ('' when it was)."""
        return self._model_error

    # -- set-up --------------------------------------------------------------------------
    def _load_engine(self, values: Mapping[str, Any]) -> None:
        import torch  # noqa: PLC0415 (torch-heavy)

        from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse  # noqa: PLC0415
        if int(values['torch_threads']) > 0:
            torch.set_num_threads(int(values['torch_threads']))
        path = values['model_path'] or default_model_path()
        try:
            choice = self._choose_runtime(values)
            if choice is None:
                return
            # the engine is assigned only once it is ready: a prebuild that fails leaves no engine
            # that would report OK "no inference yet" forever, but the model status ERROR with its cause
            if choice.backend == 'onnxruntime':
                path = values['onnx_dir']
                engine = PerceptionEngine(None, None, build_engine_config(values),
                                          runners=_onnx_runners(values, choice, self._capabilities))
                if set(engine.runners.levels) != set(engine.config.budget_levels):
                    self.get_logger().warning(
                        f'budget_levels {list(engine.config.budget_levels)} differ from the export\'s levels '
                        f'{list(engine.runners.levels)}: the export\'s levels are used (re-export with --budgets)')
            else:
                model, gate, _meta = load_sentryfuse(path, device=choice.device)
                engine = PerceptionEngine(model, gate.scores, build_engine_config(values),
                                          device=choice.device, precision=choice.precision)
            self._converters = {
                'camera': msg_arrays.image_to_rgb,
                'lidar': lidar_converter(values['lidar.type']),
                'audio': audio_converter(engine.pre.audio_rate),
            }
            self.get_logger().info(f'model {path}: classes {list(engine.class_names)}, '
                                   f'modalities {list(engine.modalities)}, runtime {choice}')
            if values['prebuild']:
                ms = engine.prebuild()
                self._prebuild_ms = ms
                self.get_logger().info(f'prebuilt {engine.runners.stats.get("builds", 0)} sub-networks '
                                       f'in {ms:.0f} ms (zero-shot: select + slice, no gradients)')
            self.engine = engine
        except Exception as exc:  # noqa: BLE001 - any failure of the model file leaves the node up, ERROR
            if not isinstance(exc, (SentryFuseError, OSError)):
                exc = f'{type(exc).__name__}: {exc}'
            self.engine = None
            self._model_error = f'cannot load model {path!r}: {exc}'
            self.get_logger().error(self._model_error)

    def _choose_runtime(self, values: Mapping[str, Any]) -> Optional[RuntimeChoice]:
        """The runtime to run (the requested one, or CPU fp32 after a refusal with runtime_fallback),
        None when it is refused without fallback. Refusals are logged and kept for /diagnostics."""
        requested = RuntimeChoice(device=values['device'], precision=values['precision'], backend=values['backend'])
        if self._capabilities is None:
            self._capabilities = Capabilities.detect()
        try:
            choice, warning = resolve_choice(requested, self._capabilities, fallback=values['runtime_fallback'])
        except RuntimeChoiceError as exc:
            self._runtime = (str(requested), '', str(exc))
            self._model_error = f'runtime {requested} refused (runtime_fallback false): {exc}'
            self.get_logger().error(self._model_error)
            return None
        self._runtime = (str(requested), str(choice), warning)
        if warning:
            self.get_logger().warning(f'runtime {requested} refused: {warning}')
        return choice

    def _runtime_status(self):
        requested, running, refusal = self._runtime
        if not requested:  # invalid parameters never reached the runtime choice
            level, message = common.LEVEL_ERROR, self._model_error or 'no runtime chosen'
        elif not running:
            level, message = common.LEVEL_ERROR, f'refused, no inference: {refusal}'
        elif refusal:
            level, message = common.LEVEL_WARN, refusal
        else:
            level, message = common.LEVEL_OK, f'running {running}'
        return common.diagnostic_status('sentryfuse: perception runtime', level, message,
                                        values={'requested': requested, 'running': running or 'none'})

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
        record = dataclasses.replace(record, total_ms=(time.perf_counter() - t0) * 1e3 + push_ms)
        self._lat_pub.publish(msg_arrays.latency_msg(record, header=pred.header))
        self._stats.add(**{k: getattr(record, k) for k in STAGES})
        self._last = record
        self._count += 1

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
        now = self._now()
        statuses = []
        if self.engine is None:
            statuses.append(common.diagnostic_status(
                'sentryfuse: perception model', common.LEVEL_ERROR, self._model_error))
        else:
            live, budget, source = self.health_view(now)
            last = self._last
            values: Dict[str, Any] = {
                'inferences': self._count, 'health_source': source, 'compute_budget': budget,
                'subnetwork': last.subnetwork if last else '', 'gflops': last.gflops if last else 0.0,
                'modalities_used': '+'.join(last.modalities) if last else '',
                'subnetwork_switches': self.engine.switches,
                'subnetworks_built': self.engine.runners.stats.get('builds', 0),
                'prebuild_ms': self._prebuild_ms,
            }
            for stage, row in self._stats.percentiles((50, 95)).items():
                values[f'{stage}_p50'] = row['p50']
                values[f'{stage}_p95'] = row['p95']
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
            statuses.append(common.diagnostic_status('sentryfuse: perception', level, message, values=values))
            inputs = [m for m in MODALITIES if m in recent]
            statuses.append(common.diagnostic_status(
                'sentryfuse: perception inputs', common.LEVEL_WARN if inputs else common.LEVEL_OK,
                '; '.join(f'{m}: {recent[m]}' for m in inputs) or 'OK',
                values={f'{m}_errors': errors.get(m, 0) for m in MODALITIES}))
        statuses.append(self._runtime_status())
        statuses.append(common.diagnostic_status(
            'sentryfuse: perception parameters',
            common.LEVEL_ERROR if self._param_errors else common.LEVEL_OK,
            '; '.join(self._param_errors) or 'OK', values={'invalid_at_startup': len(self._param_errors)}))
        self._diag_pub.publish(common.diagnostic_array(self.get_clock().now().to_msg(), statuses))


def _onnx_runners(values: Mapping[str, Any], choice, capabilities):
    """The onnxruntime sessions of ``onnx_dir`` (ExportError when it is unset, missing or corrupt)."""
    from sentryfuse_ros.core.runtime.backends import OnnxRunners  # noqa: PLC0415
    if not values['onnx_dir']:
        raise ExportError("backend='onnxruntime' needs onnx_dir (the folder of `sentryfuse export`)")
    threads = int(values['torch_threads']) or 1
    return OnnxRunners(values['onnx_dir'], choice, capabilities, threads=threads,
                       max_cache_mb=float(values['max_cache_mb']))


def main(args=None) -> int:
    return common.run_node(Perception, args)


if __name__ == '__main__':
    main()
