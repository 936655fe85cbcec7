"""Message -> engine-input converters, shared by the perception node and bag replay.

Each factory returns a ``Converter`` (message -> numpy array) for ``PerceptionEngine.push``,
built on the readers of :mod:`sentryfuse_ros.msg_arrays` (duck-typed: rclpy messages and
``rosbags``-deserialized messages alike). Keeping them here means the node and offline replay
convert a message with exactly the same code.
"""
from typing import Callable, Dict, Mapping

import numpy as np

from sentryfuse_ros import msg_arrays
from sentryfuse_ros.core.errors import ConversionError

Converter = Callable[[object], np.ndarray]


def lidar_converter(type_name: str) -> Converter:
    """(N, 4) float32 x, y, z, intensity from a PointCloud2 or a LaserScan (intensity 0).

    Args:
        type_name: the topic's message type, e.g. 'sensor_msgs/msg/LaserScan'.
    """
    def convert(msg) -> np.ndarray:
        if type_name.endswith('LaserScan'):
            pts = msg_arrays.laserscan_to_points(msg)                                  # (N, 3)
            pts = np.concatenate([pts, np.zeros((len(pts), 1), np.float32)], axis=1)    # (N, 4)
        else:
            pts = msg_arrays.pointcloud2_to_array(msg, with_intensity=True)           # (N, 4)
        if len(pts) == 0:
            raise ConversionError(f'{type_name.rsplit("/", 1)[-1]} has no finite points '
                                  f'(width={getattr(msg, "width", "?")}, all NaN/inf or empty)')
        return pts
    return convert


def audio_converter(rate: int) -> Converter:
    """(samples,) float32 mono PCM at the model rate from an AudioFrame / AudioDataStamped.

    Args:
        rate: the model's audio sample rate [Hz]; other rates are resampled.
    """
    def convert(msg) -> np.ndarray:
        pcm, src_rate = msg_arrays.audio_msg_to_array(msg)
        return msg_arrays.resample(pcm, src_rate, rate) if src_rate != rate else pcm
    return convert


def engine_converters(types: Mapping[str, str], audio_rate: int) -> Dict[str, Converter]:
    """{modality: converter} for camera, lidar and audio.

    Args:
        types: modality -> message type name of its topic (only 'lidar' matters).
        audio_rate: the model's audio sample rate [Hz].
    """
    return {
        'camera': msg_arrays.image_to_rgb,  # Image (any encoding) or CompressedImage
        'lidar': lidar_converter(types.get('lidar', 'sensor_msgs/msg/PointCloud2')),
        'audio': audio_converter(audio_rate),
    }
