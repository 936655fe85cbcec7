"""One inference as everything downstream of the engine sees it: the inference record.

The perception node publishes it (Prediction + InferenceLatency, converted by
``sentryfuse_ros.msg_arrays.inference``), the offline replay builds it straight from the engine, the
live replay, the demo view and the load/soak observer read it back from those two messages, and
the reports and the per-phase summary (``core/replay/report.py``, ``core/replay/phases.py``) read
it. :func:`build_record` is the one place an engine :class:`~sentryfuse_ros.core.runtime.engine.Inference`
becomes a record. ROS-free.
"""
import dataclasses
from typing import Any, Dict, Optional, Tuple

# the latency stages of a record (and of InferenceLatency), in the order reports list them
STAGES = ('convert_ms', 'preprocess_ms', 'reconfigure_ms', 'inference_ms', 'total_ms', 'sensor_age_ms')


@dataclasses.dataclass(frozen=True)
class InferenceRecord:
    """One prediction, what fed it and what it cost, placed on the run's timeline."""
    t: float                        # [s] when the inference ran, on the run's timeline (bag time since start)
    t_sample: float                 # [s] stamp of the newest sample used, on the same timeline
    label: str                      # predicted class name
    class_id: int                   # index of ``label`` in the model's classes
    truth: Optional[str]            # ground truth at ``t_sample``; None when unknown or in a label transition
    confidence: float               # softmax probability of ``class_id``, 0..1
    scores: Tuple[float, ...]       # (num_classes,) softmax probabilities
    modalities: Tuple[str, ...]     # the live set that fed the inference, canonical order
    budget: float                   # compute budget the sub-network was chosen for, (0, 1]
    gflops: float                   # GFLOPs of this inference (batch 1)
    subnetwork: str                 # sub-network key, e.g. 'camera+lidar@0.70'
    stamp_s: float                  # header stamp of the newest sample used [s] (the messages' stamp)
    convert_ms: float               # messages -> arrays
    preprocess_ms: float            # arrays -> model inputs
    reconfigure_ms: float           # sub-network switch (0 when unchanged)
    inference_ms: float             # forward pass
    total_ms: float                 # the whole inference as published (audio conversion on arrival included)
    sensor_age_ms: float            # inference time - stamp of the newest sample used
    stamps: Optional[Dict[str, float]] = None  # modality -> its sample's stamp on the timeline [s]; offline only

    def to_dict(self) -> Dict[str, Any]:
        """The record as a row of ``records.jsonl`` (plain JSON types; ``stamps`` only when known)."""
        row = dataclasses.asdict(self)
        row['scores'] = list(self.scores)
        row['modalities'] = list(self.modalities)
        stamps = row.pop('stamps')
        if stamps is not None:  # after stamp_s, where the offline rows have always had it
            items = list(row.items())
            at = next(i for i, (k, _) in enumerate(items) if k == 'stamp_s') + 1
            row = dict(items[:at] + [('stamps', stamps)] + items[at:])
        return row


def build_record(result, *, t: float, origin_s: float, total_ms: float, truth: Optional[str] = None,
                 stamps: Optional[Dict[str, float]] = None) -> InferenceRecord:
    """The record of an engine ``Inference`` (core.runtime.engine) that ran at ``t`` on the run's timeline.

    Args:
        result: the engine's Inference.
        t: when it ran [s] on the run's timeline.
        origin_s: the timeline's zero on the stamps' clock [s] (bag start; 0 for the robot's own clock).
        total_ms: the whole inference as the caller measured it (it includes the caller's own work).
        truth: ground truth at the newest sample used, when known.
        stamps: modality -> its sample's stamp on the timeline [s], when known.
    """
    return InferenceRecord(
        t=t, t_sample=result.stamp_s - origin_s, label=result.label, class_id=int(result.class_id),
        truth=truth, confidence=float(result.confidence), scores=tuple(float(x) for x in result.scores),
        modalities=tuple(result.modalities_used), budget=float(result.compute_budget),
        gflops=float(result.gflops), subnetwork=result.subnetwork, stamp_s=result.stamp_s,
        convert_ms=float(result.convert_ms), preprocess_ms=float(result.preprocess_ms),
        reconfigure_ms=float(result.reconfigure_ms), inference_ms=float(result.inference_ms),
        total_ms=float(total_ms), sensor_age_ms=float(result.sensor_age_ms), stamps=stamps)
