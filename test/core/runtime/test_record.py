"""The inference record: built from the engine's Inference, written as a records.jsonl row."""
import json

import numpy as np
import pytest

from sentryfuse_ros.core.runtime.engine import Inference
from sentryfuse_ros.core.runtime.record import InferenceRecord, build_record


def _inference(**overrides) -> Inference:
    values = dict(class_id=1, label='dog', confidence=0.75, scores=np.array([0.25, 0.75], np.float32),
                  modalities_used=('camera', 'audio'), compute_budget=0.7, gflops=0.012,
                  subnetwork='camera+audio@0.70', stamp_s=1001.5, convert_ms=1.5, preprocess_ms=2.5,
                  inference_ms=4.0, reconfigure_ms=0.25, sensor_age_ms=30.0)
    values.update(overrides)
    return Inference(**values)


def test_build_record_places_the_inference_on_the_timeline():
    r = build_record(_inference(), t=2.0, origin_s=1000.0, total_ms=9.0, truth='cat',
                     stamps={'camera': 1.5, 'audio': 1.25})
    assert (r.t, r.t_sample, r.stamp_s) == (2.0, pytest.approx(1.5), 1001.5)
    assert (r.label, r.class_id, r.truth, r.confidence) == ('dog', 1, 'cat', 0.75)
    assert r.scores == (0.25, 0.75) and all(type(x) is float for x in r.scores)
    assert r.modalities == ('camera', 'audio') and r.budget == pytest.approx(0.7)
    assert (r.subnetwork, r.gflops) == ('camera+audio@0.70', pytest.approx(0.012))
    assert (r.convert_ms, r.preprocess_ms, r.reconfigure_ms, r.inference_ms, r.total_ms, r.sensor_age_ms) == \
        (1.5, 2.5, 0.25, 4.0, 9.0, 30.0)
    with pytest.raises(AttributeError):  # frozen
        r.label = 'cat'


def test_to_dict_is_the_records_jsonl_row():
    r = build_record(_inference(), t=2.0, origin_s=1000.0, total_ms=9.0, stamps={'camera': 1.5, 'audio': 1.25})
    row = r.to_dict()
    assert list(row) == ['t', 't_sample', 'label', 'class_id', 'truth', 'confidence', 'scores', 'modalities',
                         'budget', 'gflops', 'subnetwork', 'stamp_s', 'stamps', 'convert_ms', 'preprocess_ms',
                         'reconfigure_ms', 'inference_ms', 'total_ms', 'sensor_age_ms']
    assert row['scores'] == [0.25, 0.75] and row['modalities'] == ['camera', 'audio']
    assert row['stamps'] == {'camera': 1.5, 'audio': 1.25} and row['truth'] is None
    assert json.loads(json.dumps(row)) == row
    # a record read back from messages knows no per-modality stamps: the row has none
    assert 'stamps' not in InferenceRecord(**{**row, 'stamps': None}).to_dict()
