"""The one package that converts between ROS messages and numpy arrays.

Readers are duck-typed: they take any object carrying the message's field names, so the same
function reads an rclpy message (``data`` is ``array.array``/``bytes``/list) and a message that
the ``rosbags`` library deserialized (``data`` is a numpy uint8 array). Buffers are viewed with
numpy (``np.frombuffer`` / ``np.ndarray(buffer=..., strides=...)``), never walked element by
element in Python. Every returned array owns its memory (the message buffer is not pinned).

Writers build rclpy messages (``sensor_msgs.msg``, ``sentryfuse_ros.msg``, imported lazily) and
fill ``uint8[]`` fields through ``array.array('B').frombytes``: a memcpy, and the setter's
fast path on every ROS 2 distribution (Humble validates anything else element by element).

Every malformed input raises :class:`ConversionError` naming the field, its value and what was
expected.

Modules: ``image`` (Image, CompressedImage), ``cloud`` (PointCloud2, LaserScan), ``audio``
(AudioFrame, AudioDataStamped), ``inference`` (inference record <-> Prediction + InferenceLatency),
``vision`` (vision_msgs Classification, LabelInfo), ``_buffers`` (buffer views, stamps, headers).
Everything public is re-exported here, so callers write ``msg_arrays.image_to_rgb(msg)``.
"""
from sentryfuse_ros.core.data.resample import resample  # noqa: F401  (part of this package's API)
from sentryfuse_ros.msg_arrays._buffers import (  # noqa: F401
    AUDIO_ENCODINGS, DEPTH_ENCODINGS, IMAGE_ENCODINGS, INTENSITY_NAMES, POINTFIELD_DTYPES, Stamp,
    sec_to_stamp, stamp_to_sec)
from sentryfuse_ros.msg_arrays.audio import (  # noqa: F401
    array_to_audio_frame, audio_data_stamped_to_array, audio_frame_to_array, audio_frame_to_model_rate,
    audio_msg_to_array)
from sentryfuse_ros.msg_arrays.cloud import (  # noqa: F401
    array_to_pointcloud2, laserscan_to_points, pointcloud2_to_array)
from sentryfuse_ros.msg_arrays.image import (  # noqa: F401
    array_to_compressed_image, array_to_image, compressed_image_to_array, image_to_array, image_to_rgb)
from sentryfuse_ros.msg_arrays.inference import (  # noqa: F401
    RecordPairer, latency_msg, prediction_msg, record_from_messages)
from sentryfuse_ros.msg_arrays.vision import (  # noqa: F401
    class_names_to_label_info, classification_to_probabilities, label_info_to_class_names,
    probabilities_to_classification)
