"""Typed configs from node parameter values (the nodes' and the replays' one translation, ROS-free).

``values`` are {parameter name: value} of one node, as declared from core/runtime/params.py (a
missing name takes its schema default), so the health monitor node, the perception node and the
offline / live replays turn the same parameters into the same configs.
"""
from typing import Any, Dict, Mapping

from sentryfuse_ros.core.data.preprocess import MODALITIES
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.runtime import params
from sentryfuse_ros.core.runtime.engine import EngineConfig
from sentryfuse_ros.core.runtime.health import BatteryBudgetConfig, TopicMonitorConfig


def _with_defaults(schema: params.Schema, values: Mapping[str, Any], names) -> Dict[str, Any]:
    """The values of ``names`` (schema-checked), their defaults where missing."""
    return {**params.defaults(schema), **params.check_values(schema, {n: values[n] for n in names if n in values})}


def topic_monitor_config(values: Mapping[str, Any], name: str) -> TopicMonitorConfig:
    """Thresholds of modality ``name`` from health monitor parameters."""
    v = _with_defaults(params.health_monitor_schema((name,)), values, [f'{name}.{k}' for k in params.THRESHOLDS])
    try:
        return TopicMonitorConfig(**{k: v[f'{name}.{k}'] for k in params.THRESHOLDS})
    except ConfigError as exc:
        raise ConfigError(f'{name}.{exc}') from exc


def battery_config(values: Mapping[str, Any]) -> BatteryBudgetConfig:
    """The battery -> compute budget table from health monitor parameters."""
    v = _with_defaults(params.health_monitor_schema(()), values, params.BATTERY_KEYS)
    return BatteryBudgetConfig(**{k: v[k] for k in params.BATTERY_KEYS})


def engine_config(values: Mapping[str, Any]) -> EngineConfig:
    """The perception engine's freshness limits, budget levels and cache cap from perception parameters."""
    v = _with_defaults(params.PERCEPTION, values, [*(f'{m}.max_age' for m in MODALITIES), 'budget_levels', 'max_cache_mb',
                                                   'max_stamp_offset'])
    return EngineConfig(max_age_s=tuple(v[f'{m}.max_age'] for m in MODALITIES),
                        budget_levels=tuple(v['budget_levels']), max_cache_mb=v['max_cache_mb'],
                        max_stamp_offset_s=v['max_stamp_offset'])
