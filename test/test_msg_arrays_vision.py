"""Tests of sentryfuse_ros.msg_arrays.vision on real vision_msgs messages (set-up builds them from
../shared/ros-sources/vision_msgs; missing, these tests fail on the import, naming it)."""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from vision_msgs.msg import Classification, LabelInfo, ObjectHypothesis, VisionClass

from sentryfuse_ros import msg_arrays as conv
from sentryfuse_ros.core.errors import ConversionError

NAMES = ('person', 'vehicle', 'background')


def test_classification_has_one_hypothesis_per_class_in_index_order():
    probs = np.array([0.2, 0.7, 0.1], dtype=np.float32)
    msg = conv.probabilities_to_classification(probs, NAMES, stamp=(12, 345), frame_id='sentryfuse')
    assert isinstance(msg, Classification)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 345, 'sentryfuse')
    assert [h.class_id for h in msg.results] == list(NAMES)
    np.testing.assert_array_equal([h.score for h in msg.results], probs.astype(np.float64))
    best = max(msg.results, key=lambda h: h.score)
    assert best.class_id == NAMES[int(np.argmax(probs))]


def test_classification_survives_cdr_and_reads_back():
    probs = np.array([0.25, 0.5, 0.25])
    msg = conv.probabilities_to_classification(probs, NAMES, stamp=1.5)
    back = deserialize_message(serialize_message(msg), Classification)
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (1, 500_000_000)
    np.testing.assert_array_equal(conv.classification_to_probabilities(back, NAMES), probs)


def test_classification_reader_takes_a_subset_in_any_order():
    msg = Classification(results=[ObjectHypothesis(class_id='background', score=0.25),
                                  ObjectHypothesis(class_id='person', score=0.75)])
    np.testing.assert_array_equal(conv.classification_to_probabilities(msg, NAMES), [0.75, 0.0, 0.25])


def test_label_info_maps_index_to_name_and_reads_back():
    msg = conv.class_names_to_label_info(NAMES, threshold=0.5, stamp=3.0)
    assert isinstance(msg, LabelInfo)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == list(enumerate(NAMES))
    assert msg.threshold == 0.5 and msg.header.stamp.sec == 3
    back = deserialize_message(serialize_message(msg), LabelInfo)
    assert conv.label_info_to_class_names(back) == NAMES
    shuffled = LabelInfo(class_map=[VisionClass(class_id=1, class_name='b'),
                                    VisionClass(class_id=0, class_name='a')])
    assert conv.label_info_to_class_names(shuffled) == ('a', 'b')


@pytest.mark.parametrize('probs, names, match', [
    ([0.5, 0.5], NAMES, r'probabilities have shape \(2,\), expected \(3,\): one per class of'),
    ([[0.2, 0.7, 0.1]], NAMES, r'probabilities have shape \(1, 3\), expected \(3,\)'),
    ([0.2, 1.5, 0.1], NAMES, r"probability of 'vehicle' is 1.5, expected a probability in \[0, 1\]"),
    ([0.2, np.nan, 0.1], NAMES, r"probability of 'vehicle' is nan, expected"),
    ([-0.1, 0.7, 0.4], NAMES, r"probability of 'person' is -0.1"),
    ([0.5, 0.5], ('a', 'a'), r"class_names \('a', 'a'\) repeat \['a'\], expected distinct names"),
    ([0.5, 0.5], ('a', ''), r"class_names \('a', ''\) must be non-empty strings"),
    ([], (), r'class_names \(\) must be non-empty strings, at least one'),
])
def test_classification_rejects(probs, names, match):
    with pytest.raises(ConversionError, match=match):
        conv.probabilities_to_classification(probs, names)


@pytest.mark.parametrize('kwargs, match', [
    (dict(class_names=('a', 'b'), threshold=2.0), r'threshold is 2.0, expected a probability in \[0, 1\]'),
    (dict(class_names=[str(i) for i in range(65536)]), r'65536 class_names, expected at most 65535 '
                                                       r'\(VisionClass.class_id is uint16'),
    (dict(class_names=('a', 7)), r"class_names \('a', 7\) must be non-empty strings"),
])
def test_label_info_rejects(kwargs, match):
    with pytest.raises(ConversionError, match=match):
        conv.class_names_to_label_info(**kwargs)


@pytest.mark.parametrize('results, match', [
    ([ObjectHypothesis(class_id='cat', score=0.5)], r"class_id 'cat' is not one of \('person'"),
    ([ObjectHypothesis(class_id='person', score=0.5)] * 2, r"lists class_id 'person' twice"),
    ([ObjectHypothesis(class_id='person', score=3.0)], r"score of 'person' is 3.0, expected"),
])
def test_classification_reader_rejects(results, match):
    with pytest.raises(ConversionError, match=match):
        conv.classification_to_probabilities(Classification(results=results), NAMES)


def test_readers_reject_other_messages_with_conversion_error():
    with pytest.raises(ConversionError, match=r'LabelInfo is not a readable vision_msgs/Classification'):
        conv.classification_to_probabilities(LabelInfo(), NAMES)
    gap = LabelInfo(class_map=[VisionClass(class_id=0, class_name='a'),
                               VisionClass(class_id=2, class_name='c')])
    with pytest.raises(ConversionError, match=r'LabelInfo.class_map ids are \[0, 2\], expected 0..1'):
        conv.label_info_to_class_names(gap)
    twice = LabelInfo(class_map=[VisionClass(class_id=0, class_name='a')] * 2)
    with pytest.raises(ConversionError, match=r'lists class_id 0 twice'):
        conv.label_info_to_class_names(twice)
