"""The perception node's parameters: schema checks, engine config, the shipped model's path (ROS-free).

Names, defaults, ranges and which parameters are settable live in
sentryfuse_ros.core.runtime.params.PERCEPTION (the one schema).
"""
import os
from typing import Any, Dict, Mapping

from sentryfuse_ros.core.runtime import params
from sentryfuse_ros.core.runtime.param_configs import engine_config

ERROR_HOLD_S = 5.0  # [s] an input or inference error keeps its status WARN/ERROR this long after it last
                    # happened, then the status clears (its count stays in the values)


def defaults() -> Dict[str, Any]:
    """{parameter: default} of the perception node (from the schema)."""
    return params.defaults(params.PERCEPTION)


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


def check_values(values: Mapping[str, Any]) -> None:
    """ConfigError for the first invalid value (schema checks, then the engine config's own)."""
    params.check_values(params.PERCEPTION, values)
    engine_config(values)
