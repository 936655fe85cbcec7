"""Inference record <-> Prediction + InferenceLatency: the round trip and the pairing by header stamp."""
import dataclasses

import numpy as np
import pytest

from sentryfuse_ros import msg_arrays
from sentryfuse_ros.core.runtime.record import InferenceRecord


def _record(stamp_s=1_700_000_000.25, label='dog', total_ms=9.5) -> InferenceRecord:
    return InferenceRecord(t=0.0, t_sample=0.0, label=label, class_id=1, truth=None, confidence=0.75,
                           scores=(0.25, 0.75), modalities=('camera', 'lidar'), budget=0.7, gflops=0.0123,
                           subnetwork='camera+lidar@0.70', stamp_s=stamp_s, convert_ms=1.25, preprocess_ms=2.5,
                           reconfigure_ms=0.125, inference_ms=4.0, total_ms=total_ms, sensor_age_ms=33.0,
                           stamps={'camera': 0.1, 'lidar': 0.05})


def test_record_survives_the_messages_to_float32_precision():
    r = _record()
    pred, lat = msg_arrays.prediction_msg(r), msg_arrays.latency_msg(r)
    assert pred.header.frame_id == 'sentryfuse' and lat.header == pred.header
    assert (pred.header.stamp.sec, pred.header.stamp.nanosec) == msg_arrays.sec_to_stamp(r.stamp_s)
    back = msg_arrays.record_from_messages(pred, lat, t=3.0, origin_s=1_700_000_000.0, truth='cat')
    assert (back.t, back.truth, back.stamps) == (3.0, 'cat', None)
    assert back.t_sample == pytest.approx(0.25, abs=1e-6) and back.stamp_s == pytest.approx(r.stamp_s, abs=1e-6)
    for field in ('label', 'class_id', 'modalities', 'subnetwork'):
        assert getattr(back, field) == getattr(r, field), field
    for field in ('confidence', 'budget', 'gflops', 'convert_ms', 'preprocess_ms', 'reconfigure_ms',
                  'inference_ms', 'total_ms', 'sensor_age_ms'):
        assert getattr(back, field) == pytest.approx(float(np.float32(getattr(r, field)))), field
    assert back.scores == pytest.approx(r.scores)


def test_pairer_pairs_by_stamp_in_arrival_order_whichever_message_comes_first():
    got = []
    pairer = msg_arrays.RecordPairer(got.append, origin_s=1_700_000_000.0)
    a, b = _record(label='cat', total_ms=1.0), _record(label='dog', total_ms=2.0)  # same stamp: same sample
    c = _record(stamp_s=1_700_000_001.0, label='fox', total_ms=3.0)
    pairer.latency(msg_arrays.latency_msg(c))         # latency before its prediction
    pairer.prediction(msg_arrays.prediction_msg(a), t=0.5, truth='cat')
    pairer.prediction(msg_arrays.prediction_msg(b), t=0.6)
    assert got == []
    pairer.latency(msg_arrays.latency_msg(a))
    pairer.latency(msg_arrays.latency_msg(b))
    pairer.prediction(msg_arrays.prediction_msg(c), t=0.7)
    assert [(r.label, r.t, r.truth, r.total_ms) for r in got] == [
        ('cat', 0.5, 'cat', 1.0), ('dog', 0.6, None, 2.0), ('fox', 0.7, None, 3.0)]
    assert got[2].t_sample == pytest.approx(1.0)
    # nothing waits any more: a further latency of the same stamp pairs with nothing
    pairer.latency(msg_arrays.latency_msg(dataclasses.replace(a, total_ms=4.0)))
    assert len(got) == 3
