"""The perception node's parameters: defaults, checks, the shipped model's path (ROS-free)."""
import os
from typing import Any, Mapping

from sentryfuse_ros.core.data.preprocess import MODALITIES
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.runtime.choice import BACKENDS, PRECISIONS
from sentryfuse_ros.core.runtime.engine import EngineConfig
from sentryfuse_ros.nodes import common

DEFAULTS = {
    'autostart': True,                # configure + activate at start-up; false: wait for `ros2 lifecycle set`
    'model_path': '',                 # checkpoint; '' = the shipped models/sentryfuse_sim.pt
    'device': 'cpu',                  # 'cpu' or 'cuda'
    'precision': 'fp32',              # 'fp32', 'bf16' (CPU with native bf16, or CUDA), 'fp16' (CUDA)
    'backend': 'torch',               # 'torch' (eager sub-networks) or 'onnxruntime' (sessions of onnx_dir)
    'onnx_dir': '',                   # export folder of `sentryfuse export` (backend 'onnxruntime')
    'runtime_fallback': True,         # a device/precision/backend this machine cannot run: true = run
                                      # on CPU fp32 with a WARN status; false = no inference, ERROR status
    'rate': 10.0,                     # [Hz] inference rate when trigger = 'timer'
    'trigger': 'timer',               # 'timer' or 'camera' (one inference per camera frame)
    'qos': 'sensor_data',             # QoS of the sensor subscriptions
    'health_topic': '/sentryfuse/health',
    'health_timeout': 1.0,            # [s] without health messages -> own freshness check, budget 1.0
    'diagnostics_period': 1.0,        # [s]
    'stats_window': 200,              # inferences in the latency percentile window
    'budget_levels': [1.0, 0.85, 0.7, 0.5, 0.4],  # budgets (fractions of the live set's dense FLOPs)
    'max_cache_mb': 32.0,             # [MiB] gathered sub-network weights kept beyond the one dense copy (MRU)
    'prebuild': True,                 # build every (live subset, budget level) sub-network at start-up
    'torch_threads': 1,               # CPU threads for torch ops (0 = torch's default); 1 keeps
                                      # OpenMP workers from spinning against the other nodes' callbacks
    'camera.topic': '/camera/image_raw', 'camera.type': 'sensor_msgs/msg/Image', 'camera.max_age': 0.5,
    'lidar.topic': '/lidar/points', 'lidar.type': 'sensor_msgs/msg/PointCloud2', 'lidar.max_age': 0.5,
    'audio.topic': '/audio/frames', 'audio.type': 'sentryfuse_ros/msg/AudioFrame', 'audio.max_age': 0.5,
}
LIVE = ('health_timeout', 'diagnostics_period')  # settable in every lifecycle state
READ_ONLY = ['autostart']                         # read once, at construction
# read by configure: settable while the node is unconfigured, taking effect at the next configure
CONFIGURE_TIME = frozenset(k for k in DEFAULTS if k not in LIVE and k not in READ_ONLY)
ERROR_HOLD_S = 5.0  # [s] an input or inference error keeps its status WARN/ERROR this long after it last
                    # happened, then the status clears (its count stays in the values)


def default_model_path() -> str:
    """The shipped checkpoint: share/sentryfuse_ros/models (installed) or the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory  # noqa: PLC0415
        candidates.append(os.path.join(get_package_share_directory('sentryfuse_ros'), 'models'))
    except Exception:  # noqa: BLE001 - ament index absent or package not installed
        pass
    candidates.append(os.path.join(os.path.dirname(__file__), '..', '..', 'models'))
    for folder in candidates:
        path = os.path.realpath(os.path.join(folder, 'sentryfuse_sim.pt'))
        if os.path.isfile(path):
            return path
    return os.path.realpath(os.path.join(candidates[-1], 'sentryfuse_sim.pt'))


def build_engine_config(values: Mapping[str, Any]) -> EngineConfig:
    ages = tuple(common.as_float(values[f'{m}.max_age'], f'{m}.max_age') for m in MODALITIES)
    levels = tuple(common.as_float(b, 'budget_levels') for b in values['budget_levels'])
    return EngineConfig(max_age_s=ages, budget_levels=levels,
                        max_cache_mb=common.as_float(values['max_cache_mb'], 'max_cache_mb'))


def check_values(values: Mapping[str, Any]) -> None:
    if not isinstance(values['autostart'], bool):
        raise ConfigError(f"autostart={values['autostart']!r}: expected true or false")
    if values['device'] not in ('cpu', 'cuda'):
        raise ConfigError(f"device={values['device']!r}: expected 'cpu' or 'cuda'")
    if values['precision'] not in PRECISIONS:
        raise ConfigError(f"precision={values['precision']!r}: expected one of {list(PRECISIONS)}")
    if values['backend'] not in BACKENDS:
        raise ConfigError(f"backend={values['backend']!r}: expected one of {list(BACKENDS)}")
    if not isinstance(values['runtime_fallback'], bool):
        raise ConfigError(f"runtime_fallback={values['runtime_fallback']!r}: expected true or false")
    if values['trigger'] not in ('timer', 'camera'):
        raise ConfigError(f"trigger={values['trigger']!r}: expected 'timer' or 'camera'")
    common.check_qos_name(values['qos'])
    for key in ('rate', 'health_timeout', 'diagnostics_period'):
        if not common.as_float(values[key], key) > 0:
            raise ConfigError(f'{key}={values[key]!r}: expected a positive number')
    if common.as_int(values['torch_threads'], 'torch_threads') < 0:
        raise ConfigError(f"torch_threads={values['torch_threads']!r}: expected an integer >= 0")
    if not isinstance(values['prebuild'], bool):
        raise ConfigError(f"prebuild={values['prebuild']!r}: expected true or false")
    if common.as_int(values['stats_window'], 'stats_window') < 1:
        raise ConfigError(f"stats_window={values['stats_window']!r}: expected an integer >= 1")
    build_engine_config(values)
