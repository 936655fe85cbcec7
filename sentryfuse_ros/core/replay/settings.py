"""A replay's configuration: config/replay.yaml's own settings plus the graph's node parameters.

The health monitor's thresholds and battery table, the engine's freshness limits and budget levels, and
the inference rate, trigger and device come from the node graph's parameters (config/perception.yaml or
--params) through the same translation the nodes use (core/runtime/param_configs.py); config/replay.yaml
holds only what is the replay's own (topic map, label handling, checkpoint, --ignore-health).
"""
import dataclasses
import pathlib
from typing import Any, Callable, Dict, Mapping, Optional

from sentryfuse_ros.core.bags.reader import SENSOR_MODALITIES, TopicMap
from sentryfuse_ros.core.config import check, from_dict, read_yaml
from sentryfuse_ros.core.errors import BagError, ConfigError
from sentryfuse_ros.core.runtime import params
from sentryfuse_ros.core.runtime.engine import EngineConfig
from sentryfuse_ros.core.runtime.health import BatteryBudgetConfig, TopicMonitorConfig
from sentryfuse_ros.core.runtime.param_configs import battery_config, engine_config, topic_monitor_config


def _monitor(name: str) -> Callable[[], TopicMonitorConfig]:
    return lambda: topic_monitor_config({}, name)


def _perception_default(name: str) -> Callable[[], Any]:
    return lambda: params.defaults(params.PERCEPTION)[name]


@dataclasses.dataclass(frozen=True)
class HealthSettings:
    """The health_monitor node's parameters, for the replayed tracker (defaults: its schema's)."""
    update_rate: float = dataclasses.field(                          # [Hz] health checks on the bag clock
        default_factory=lambda: params.defaults(params.health_monitor_schema(()))['update_rate'])
    camera: TopicMonitorConfig = dataclasses.field(default_factory=_monitor('camera'))  # thresholds
    lidar: TopicMonitorConfig = dataclasses.field(default_factory=_monitor('lidar'))
    audio: TopicMonitorConfig = dataclasses.field(default_factory=_monitor('audio'))
    battery: BatteryBudgetConfig = dataclasses.field(                # battery -> compute budget table
        default_factory=lambda: battery_config({}))

    def __post_init__(self):
        check(isinstance(self.update_rate, (int, float)) and 0 < self.update_rate <= 1000,
              'health.update_rate', self.update_rate, 'a rate in (0, 1000] Hz')


def health_settings(values: Mapping[str, Any]) -> HealthSettings:
    """HealthSettings from health_monitor parameter values (as the node builds its tracker)."""
    rate = params.check_values(params.health_monitor_schema(()), {k: v for k, v in values.items()
                                                                   if k == 'update_rate'})
    return HealthSettings(**rate, **{m: topic_monitor_config(values, m) for m in SENSOR_MODALITIES},
                          battery=battery_config(values))


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    """How the replay itself runs (rate, trigger, device default to the perception node's)."""
    rate: float = dataclasses.field(default_factory=_perception_default('rate'))  # [Hz] inferences on the
                                       # bag clock (trigger: timer)
    trigger: str = dataclasses.field(default_factory=_perception_default('trigger'))  # 'timer' (at rate) |
                                       # 'camera' (one inference per camera frame)
    label_transition_s: float = 1.0    # predictions this soon after a label change are not scored
    battery_feed_hz: float = 1.0       # [Hz] a battery profile is fed to the budget table this often
    device: str = dataclasses.field(default_factory=_perception_default('device'))  # 'cpu' | 'cuda'
    checkpoint: str = ''               # model; '' = models/sentryfuse_sim.pt
    use_health: bool = True            # false (--ignore-health): infer on every fresh sample, without the
                                       # health monitor's rate limits (short or sparse bags); budgets still apply

    def __post_init__(self):
        check(isinstance(self.rate, (int, float)) and 0 < self.rate <= 1000, 'replay.rate',
              self.rate, 'a rate in (0, 1000] Hz')
        check(self.trigger in ('timer', 'camera'), 'replay.trigger', self.trigger, "'timer' or 'camera'")
        check(isinstance(self.label_transition_s, (int, float)) and self.label_transition_s >= 0,
              'replay.label_transition_s', self.label_transition_s, 'seconds >= 0')
        check(isinstance(self.battery_feed_hz, (int, float)) and self.battery_feed_hz > 0,
              'replay.battery_feed_hz', self.battery_feed_hz, 'a positive rate [Hz]')
        check(self.device in ('cpu', 'cuda'), 'replay.device', self.device, "'cpu' or 'cuda'")
        check(isinstance(self.use_health, bool), 'replay.use_health', self.use_health, 'true or false')


@dataclasses.dataclass(frozen=True)
class ReplayFile:
    """config/replay.yaml: the replay's own settings only."""
    topics: TopicMap = TopicMap()                                            # bag topic of each modality
    replay: Dict[str, Any] = dataclasses.field(default_factory=dict)         # ReplaySettings fields


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """What a replay runs with: config/replay.yaml's topics and settings, the graph's health and engine."""
    topics: TopicMap = TopicMap()                                                # bag topic of each modality
    health: HealthSettings = dataclasses.field(default_factory=HealthSettings)  # health monitor thresholds,
                                                                                 # battery table
    engine: EngineConfig = dataclasses.field(default_factory=lambda: engine_config({}))  # max ages, budgets
    replay: ReplaySettings = dataclasses.field(default_factory=ReplaySettings)  # inference rate, trigger, ...
    graph: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)  # the graph parameters health,
                                       # engine and replay defaults came from ({node: {parameter: value}});
                                       # the live replay starts its nodes with them


def load_replay_config(path=None, graph: Optional[Mapping[str, Mapping[str, Any]]] = None) -> ReplayConfig:
    """ReplayConfig from config/replay.yaml-style ``path`` (None = no file) and the graph's parameters
    ``graph`` ({node: {parameter: value}}, e.g. config/perception.yaml; None = the schema defaults):
    health from the health_monitor section, engine, rate, trigger and device from perception's."""
    data: Mapping[str, Any] = {}
    if path is not None:
        path = pathlib.Path(path)
        data = read_yaml(path, 'replay config') or {}
    where = f'replay config {str(path)!r}' if path is not None else 'replay config'
    if isinstance(data, Mapping) and {'health', 'engine'} & set(data):
        raise ConfigError(f'{where}: {sorted({"health", "engine"} & set(data))} come from the graph\'s '
                          'parameters (config/perception.yaml or --params), not from the replay config')
    graph = graph or {}
    monitor = {**dict(graph.get('**', {})), **dict(graph.get('health_monitor', {}))}
    perception = {**dict(graph.get('**', {})), **dict(graph.get('perception', {}))}
    try:
        own = from_dict(ReplayFile, data, where='')
        node = params.check_values(params.PERCEPTION, perception)
        replay = {k: node[k] for k in ('rate', 'trigger', 'device') if k in node}
        replay.update(own.replay)
        return ReplayConfig(topics=own.topics, health=health_settings(monitor), engine=engine_config(perception),
                            replay=from_dict(ReplaySettings, replay, where='replay'),
                            graph={k: dict(v) for k, v in graph.items()})
    except (ConfigError, BagError) as exc:
        raise ConfigError(f'{where}: {exc}') from exc
