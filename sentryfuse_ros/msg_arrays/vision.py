"""Class probabilities <-> vision_msgs/Classification, class names <-> vision_msgs/LabelInfo.

The ROS convention for classifier outputs: ``Classification`` carries one ``ObjectHypothesis``
per class (``class_id`` = the class name, ``score`` = its probability) under the header of the
input it was computed from; ``LabelInfo`` maps the integer ids (index into the model's class
list) to the names, once, on a latched topic, as ``CameraInfo`` does for images.
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple

import numpy as np

from sentryfuse_ros.core.errors import ConversionError
from sentryfuse_ros.msg_arrays._buffers import Stamp, _fill_header, message_reader

# VisionClass.class_id is uint16; 65535 is reserved for the "UNLABELED" class.
UNLABELED_CLASS_ID = 65535


def _check_class_names(class_names: Sequence[str]) -> Tuple[str, ...]:
    names = tuple(class_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConversionError(f'class_names {names!r} must be non-empty strings, at least one')
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConversionError(f'class_names {names!r} repeat {dup}, expected distinct names')
    if len(names) > UNLABELED_CLASS_ID:
        raise ConversionError(f'{len(names)} class_names, expected at most {UNLABELED_CLASS_ID} '
                              f'(VisionClass.class_id is uint16, {UNLABELED_CLASS_ID} = UNLABELED)')
    return names


def _check_probability(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise ConversionError(f'{what} is {value!r}, expected a probability in [0, 1]')
    return value


def probabilities_to_classification(probabilities: Any, class_names: Sequence[str], *,
                                    stamp: Stamp = None, frame_id: str = '') -> Any:
    """A ``vision_msgs/Classification`` with one hypothesis per class, in class-index order.

    Args:
        probabilities: (C,) softmax probabilities, each in [0, 1].
        class_names: C distinct class names; hypothesis i has ``class_id = class_names[i]``.
        stamp: None, seconds, (sec, nanosec) or a Time message: the input's stamp.
        frame_id: header.frame_id.
    """
    from vision_msgs.msg import Classification, ObjectHypothesis

    names = _check_class_names(class_names)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape != (len(names),):
        raise ConversionError(f'probabilities have shape {probs.shape}, expected ({len(names)},): '
                              f'one per class of {names!r}')
    msg = Classification()
    _fill_header(msg, stamp, frame_id)
    msg.results = [ObjectHypothesis(class_id=name, score=_check_probability(p, f'probability of {name!r}'))
                   for name, p in zip(names, probs.tolist())]
    return msg


def class_names_to_label_info(class_names: Sequence[str], *, threshold: float = 0.0,
                              stamp: Stamp = None, frame_id: str = '') -> Any:
    """A ``vision_msgs/LabelInfo`` mapping class id i (the logit index) to ``class_names[i]``.

    Args:
        class_names: C distinct class names, C < 65535.
        threshold: the confidence threshold of the pipeline, in [0, 1] (0 = none).
        stamp: None, seconds, (sec, nanosec) or a Time message.
        frame_id: header.frame_id.
    """
    from vision_msgs.msg import LabelInfo, VisionClass

    names = _check_class_names(class_names)
    msg = LabelInfo()
    _fill_header(msg, stamp, frame_id)
    msg.class_map = [VisionClass(class_id=i, class_name=name) for i, name in enumerate(names)]
    msg.threshold = _check_probability(threshold, 'threshold')
    return msg


@message_reader('vision_msgs/Classification')
def classification_to_probabilities(msg: Any, class_names: Sequence[str]) -> np.ndarray:
    """(C,) float64 scores of a Classification in ``class_names`` order; 0 for a class it omits
    (the convention lets a publisher list only the classes above a threshold)."""
    names = _check_class_names(class_names)
    index = {name: i for i, name in enumerate(names)}
    out = np.zeros(len(names), dtype=np.float64)
    seen = set()
    for hyp in msg.results:
        if hyp.class_id not in index:
            raise ConversionError(f'Classification hypothesis class_id {hyp.class_id!r} is not one of '
                                  f'{names!r}')
        if hyp.class_id in seen:
            raise ConversionError(f'Classification lists class_id {hyp.class_id!r} twice, expected once')
        seen.add(hyp.class_id)
        out[index[hyp.class_id]] = _check_probability(hyp.score, f'score of {hyp.class_id!r}')
    return out


@message_reader('vision_msgs/LabelInfo')
def label_info_to_class_names(msg: Any) -> Tuple[str, ...]:
    """The class names of a LabelInfo, by id; the ids must be 0..C-1 (each once, any order)."""
    by_id = {}
    for entry in msg.class_map:
        class_id = int(entry.class_id)
        if class_id in by_id:
            raise ConversionError(f'LabelInfo.class_map lists class_id {class_id} twice, expected once')
        by_id[class_id] = entry.class_name
    if sorted(by_id) != list(range(len(by_id))):
        raise ConversionError(f'LabelInfo.class_map ids are {sorted(by_id)}, expected 0..{len(by_id) - 1}')
    return _check_class_names([by_id[i] for i in range(len(by_id))])
