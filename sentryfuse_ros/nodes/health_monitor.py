"""health_monitor: which sensor modalities are live, and the compute budget.

Subscribes raw (no deserialization) to each modality topic and to sensor_msgs/BatteryState;
publishes sentryfuse_ros/ModalityHealth on /sentryfuse/health at `update_rate` and at once when
the live set or the budget changes, and /diagnostics (one status per modality, one for the
battery, one for the parameters). All logic lives in sentryfuse_ros.core.runtime.health.
"""
import math
from typing import Any, Dict, Mapping, Tuple

from rclpy.node import Node
from sensor_msgs.msg import BatteryState

from sentryfuse_ros.core.runtime import health, param_configs, params
from sentryfuse_ros.core.data.topics import HEALTH_TOPIC
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.msg import ModalityHealth
from sentryfuse_ros.nodes import common
from diagnostic_msgs.msg import DiagnosticArray

STATUS_LEVEL = {health.OK: common.LEVEL_OK, health.WARN_RATE: common.LEVEL_WARN,
                health.ERROR_RATE: common.LEVEL_ERROR, health.TIMEOUT: common.LEVEL_ERROR,
                health.NOT_RECEIVED: common.LEVEL_STALE}


def modality_defaults(name: str) -> Dict[str, Any]:
    """Parameter defaults `<name>.topic`, `<name>.type` and thresholds of one modality (the schema's)."""
    return {k: v for k, v in params.defaults(params.health_monitor_schema((name,))).items()
            if k.startswith(f'{name}.')}


def build_modality(values: Mapping[str, Any], name: str) -> health.TopicMonitorConfig:
    return param_configs.topic_monitor_config(values, name)


def build_battery(values: Mapping[str, Any]) -> health.BatteryBudgetConfig:
    return param_configs.battery_config(values)


def check_modalities(values: Mapping[str, Any]) -> None:
    names = values['modalities']
    if (not isinstance(names, (list, tuple)) or not names or len(set(names)) != len(names)
            or not all(isinstance(n, str) and n.isidentifier() for n in names)):
        raise ConfigError(f'modalities={names!r}: expected a non-empty list of unique names')


def check_topic(values: Mapping[str, Any], name: str) -> None:
    topic = values[f'{name}.topic']
    if not isinstance(topic, str) or not topic:
        raise ConfigError(f'{name}.topic={topic!r}: expected a topic name')
    common.message_type(values[f'{name}.type'])


class HealthMonitor(Node):
    """Args: **kwargs: passed to rclpy Node (context, parameter_overrides, ...)."""

    def __init__(self, **kwargs):
        super().__init__('health_monitor', **kwargs)
        first = tuple(s for s in params.health_monitor_schema(()) if s.name == 'modalities')
        values = common.declare_parameters(self, first)
        self._param_errors = common.fall_back_to_defaults(
            self, values, params.defaults(first), common.spec_checks(first) + [(('modalities',), check_modalities)])
        self._names = tuple(values['modalities'])
        schema = params.health_monitor_schema(self._names)
        defaults = params.defaults(schema)
        values.update(common.declare_parameters(self, schema[1:]))
        groups = common.spec_checks(schema[1:])
        groups.append((params.BATTERY_KEYS, build_battery))
        for n in self._names:
            groups.append(((f'{n}.topic', f'{n}.type'), lambda v, n=n: check_topic(v, n)))
            groups.append((tuple(f'{n}.{k}' for k in params.THRESHOLDS), lambda v, n=n: build_modality(v, n)))
        self._param_errors += common.fall_back_to_defaults(self, values, defaults, groups)
        common.fix_descriptors(self, schema)

        modality_cfgs, battery_cfg, _ = self._build(values)
        self._tracker = health.HealthTracker(modality_cfgs, battery_cfg)
        self._topics = {n: values[f'{n}.topic'] for n in self._names}
        self._hardware_id = values['hardware_id']
        common.install_validator(self, schema, self._build, self._apply)

        qos = common.qos_profile(values['qos'])
        self._subs = [
            self.create_subscription(common.message_type(values[f'{n}.type']), values[f'{n}.topic'],
                                     lambda _raw, n=n: self._on_modality(n), qos, raw=True)
            for n in self._names]
        self._battery_sub = self.create_subscription(
            BatteryState, values['battery_topic'], self._on_battery, 10)
        self._health_pub = self.create_publisher(ModalityHealth, HEALTH_TOPIC, 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._period = 1.0 / float(values['update_rate'])
        self._last_check = None  # time of the previous check [s]
        self._timer = self.create_timer(self._period, self._on_update)
        self._diag_timer = self.create_timer(float(values['diagnostics_period']), self._on_diagnostics)
        self._published = None  # last published HealthState
        self.get_logger().info(f'monitoring {dict(self._topics)}; battery on {values["battery_topic"]}')

    # -- parameters --------------------------------------------------------------------
    def _build(self, values: Mapping[str, Any]) -> Tuple[dict, health.BatteryBudgetConfig, float]:
        for n in self._names:
            check_topic(values, n)
        return ({n: build_modality(values, n) for n in self._names}, build_battery(values),
                float(values['diagnostics_period']))

    def _apply(self, built, changed) -> None:
        """Make settable parameters take effect: thresholds, battery table, diagnostics period."""
        modality_cfgs, battery_cfg, diagnostics_period = built
        if 'diagnostics_period' in changed:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(diagnostics_period, self._on_diagnostics)
        for name, cfg in modality_cfgs.items():
            self._tracker.monitors[name].reconfigure(cfg)
        if battery_cfg != self._tracker.battery.config:
            self._tracker.battery.reconfigure(battery_cfg)

    # -- callbacks ---------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_modality(self, name: str) -> None:
        self._tracker.on_message(name, self._now())

    def _on_battery(self, msg: BatteryState) -> None:
        now = self._now()
        self._tracker.on_battery(now, msg.percentage, msg.charge, msg.capacity)
        state = self._tracker.check(now, advance=False)
        if state.changed_from(self._published):
            self._publish(state)

    def _on_update(self) -> None:
        # A check that runs late ran before the sensor callbacks queued meanwhile (a starved
        # process): their arrivals are unknown for that long, so staleness is judged without it.
        now = self._now()
        lateness = 0.0 if self._last_check is None else max(0.0, now - self._last_check - self._period)
        self._last_check = now
        self._publish(self._tracker.check(now, lateness=lateness))

    def _publish(self, state: health.HealthState) -> None:
        msg = ModalityHealth()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.modalities = list(state.modalities)
        msg.live = list(state.live)
        msg.status = list(state.status)
        msg.rate_hz = [float(r) for r in state.rate_hz]
        msg.age_s = [float(a) for a in state.age_s]
        msg.battery_percentage = float(state.battery_percentage)
        msg.compute_budget = float(state.compute_budget)
        self._health_pub.publish(msg)
        if state.changed_from(self._published):
            self.get_logger().info(f'live={sorted(state.live_set)} budget={state.compute_budget:.2f}')
        self._published = state

    def _on_diagnostics(self) -> None:
        state = self._tracker.last or self._tracker.check(self._now(), advance=False)
        statuses = []
        for i, name in enumerate(state.modalities):
            code = state.status[i]
            level, message = STATUS_LEVEL[code], health.STATUS_NAMES[code]
            if code in health.HEALTHY and not state.live[i]:
                cfg = self._tracker.monitors[name].config
                level = common.LEVEL_WARN
                message = f'recovering ({state.healthy_count[i]}/{cfg.recover_count} healthy checks)'
            statuses.append(common.diagnostic_status(
                f'sentryfuse: {name}', level, message, hardware_id=self._topics[name],
                values={'live': state.live[i], 'status': health.STATUS_NAMES[code],
                        'rate_hz': state.rate_hz[i], 'age_s': state.age_s[i],
                        'topic': self._topics[name]}))
        battery = self._tracker.battery.config
        known = not math.isnan(state.battery_percentage)
        source = ('override' if battery.compute_budget_override > 0
                  else 'battery table' if known else 'unknown battery default')
        statuses.append(common.diagnostic_status(
            'sentryfuse: battery', common.LEVEL_OK if known else common.LEVEL_WARN,
            f'budget {state.compute_budget:.2f} from {source}', hardware_id=self._hardware_id,
            values={'battery_percentage': state.battery_percentage,
                    'compute_budget': state.compute_budget, 'budget_source': source}))
        statuses.append(common.diagnostic_status(
            'sentryfuse: health_monitor parameters',
            common.LEVEL_ERROR if self._param_errors else common.LEVEL_OK,
            '; '.join(self._param_errors) if self._param_errors else 'OK',
            hardware_id=self._hardware_id, values={'invalid_at_startup': len(self._param_errors)}))
        self._diag_pub.publish(common.diagnostic_array(self.get_clock().now().to_msg(), statuses))


def main(args=None) -> int:
    return common.run_node(HealthMonitor, args)


if __name__ == '__main__':
    main()
