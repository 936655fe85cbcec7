"""sentryfuse_ros: SentryFuse multimodal perception for ROS 2.

``sentryfuse_ros.core`` is ROS-free; ``sentryfuse_ros.nodes`` and ``sentryfuse_ros.msg_arrays``
are the only parts that import ROS.
"""
import pkgutil

# The generated interfaces (sentryfuse_ros.msg) are installed by colcon next to a copy of this
# package; when this source tree is imported first (cwd, pip install -e), find them there too.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = '0.1.0'
