"""Inference record <-> Prediction + InferenceLatency, and the pairing of the two messages.

The perception node publishes each :class:`~sentryfuse_ros.core.runtime.record.InferenceRecord` as a
Prediction and an InferenceLatency with the same header (:func:`prediction_msg`,
:func:`latency_msg`); the live replay, the demo view and the load/soak observer read it back with
:class:`RecordPairer` (which calls :func:`record_from_messages`). The messages carry float32, so a
record read back equals the published one to float32 precision; ``t``, ``truth`` and ``stamps`` are
not in the messages (the reader supplies the first two).
"""
import collections
from typing import Any, Callable, Deque, Dict, Optional, Tuple

from sentryfuse_ros.core.runtime.record import InferenceRecord
from sentryfuse_ros.msg_arrays._buffers import sec_to_stamp

FRAME_ID = 'sentryfuse'  # header.frame_id of both messages


def _header(stamp_s: float):
    from std_msgs.msg import Header  # noqa: PLC0415 (messages imported lazily, as the other writers)
    from builtin_interfaces.msg import Time  # noqa: PLC0415
    sec, nanosec = sec_to_stamp(stamp_s)
    return Header(stamp=Time(sec=int(sec), nanosec=int(nanosec)), frame_id=FRAME_ID)


def prediction_msg(record: InferenceRecord, header=None):
    """The Prediction of ``record`` (header stamp = the newest sample used, unless ``header`` is given)."""
    from sentryfuse_ros.msg import Prediction  # noqa: PLC0415
    pred = Prediction()
    pred.header = header if header is not None else _header(record.stamp_s)
    pred.label = record.label
    pred.class_id = int(record.class_id)
    pred.confidence = float(record.confidence)
    pred.scores = [float(x) for x in record.scores]
    pred.modalities_used = list(record.modalities)
    pred.compute_budget = float(record.budget)
    pred.gflops = float(record.gflops)
    pred.subnetwork = record.subnetwork
    return pred


def latency_msg(record: InferenceRecord, header=None):
    """The InferenceLatency of ``record`` (same header as its Prediction)."""
    from sentryfuse_ros.msg import InferenceLatency  # noqa: PLC0415
    lat = InferenceLatency()
    lat.header = header if header is not None else _header(record.stamp_s)
    lat.convert_ms = float(record.convert_ms)
    lat.preprocess_ms = float(record.preprocess_ms)
    lat.inference_ms = float(record.inference_ms)
    lat.reconfigure_ms = float(record.reconfigure_ms)
    lat.total_ms = float(record.total_ms)
    lat.sensor_age_ms = float(record.sensor_age_ms)
    return lat


def header_key(msg: Any) -> Tuple[int, int]:
    """(sec, nanosec) of a message's header stamp: what pairs a Prediction with its InferenceLatency."""
    return (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))


def header_seconds(msg: Any) -> float:
    """A message's header stamp in seconds."""
    sec, nanosec = header_key(msg)
    return sec + nanosec * 1e-9


def record_from_messages(pred: Any, lat: Any, *, t: float, origin_s: float = 0.0,
                         truth: Optional[str] = None) -> InferenceRecord:
    """The record of one inference from its Prediction and InferenceLatency.

    Args:
        pred, lat: the two messages (same header stamp).
        t: when the reader saw the inference [s] on its timeline.
        origin_s: the timeline's zero on the stamps' clock [s] (``t_sample = stamp - origin_s``).
        truth: ground truth, when the reader knows it.
    """
    stamp = header_seconds(pred)
    return InferenceRecord(
        t=t, t_sample=stamp - origin_s, label=pred.label, class_id=int(pred.class_id), truth=truth,
        confidence=float(pred.confidence), scores=tuple(float(x) for x in pred.scores),
        modalities=tuple(pred.modalities_used), budget=float(pred.compute_budget), gflops=float(pred.gflops),
        subnetwork=pred.subnetwork, stamp_s=stamp, convert_ms=float(lat.convert_ms),
        preprocess_ms=float(lat.preprocess_ms), reconfigure_ms=float(lat.reconfigure_ms),
        inference_ms=float(lat.inference_ms), total_ms=float(lat.total_ms), sensor_age_ms=float(lat.sensor_age_ms))


class RecordPairer:
    """Pairs each Prediction with the InferenceLatency of the same header stamp into a record.

    Either message may come first; several inferences on the same newest sample (same stamp) pair
    in arrival order. Not thread-safe: the caller holds its own lock when callbacks run in threads.

    Args:
        on_record: called with each completed InferenceRecord.
        origin_s: the timeline's zero on the stamps' clock [s].
    """

    def __init__(self, on_record: Callable[[InferenceRecord], None], origin_s: float = 0.0):
        self.on_record, self.origin_s = on_record, origin_s
        self._pred: Dict[Tuple[int, int], Deque[Tuple[float, Optional[str], Any]]] = {}
        self._lat: Dict[Tuple[int, int], Deque[Any]] = {}

    def prediction(self, msg: Any, t: float, truth: Optional[str] = None) -> None:
        """A Prediction seen at ``t`` [s on the reader's timeline], with the ground truth the reader knows."""
        key = header_key(msg)
        self._pred.setdefault(key, collections.deque()).append((t, truth, msg))
        self._match(key)

    def latency(self, msg: Any) -> None:
        key = header_key(msg)
        self._lat.setdefault(key, collections.deque()).append(msg)
        self._match(key)

    def _match(self, key: Tuple[int, int]) -> None:
        preds, lats = self._pred.get(key), self._lat.get(key)
        while preds and lats:
            t, truth, pred = preds.popleft()
            self.on_record(record_from_messages(pred, lats.popleft(), t=t, origin_s=self.origin_s, truth=truth))
        for table in (self._pred, self._lat):
            if key in table and not table[key]:
                del table[key]

