"""int8 export: `sentryfuse export --precision int8` writes checked int8 graphs and a manifest that records
each check; the log-mel front end stays fp32; a graph over tolerance (or a broken quantizer) is refused
and nothing is written; OnnxRunners refuse an export of the wrong precision and cap their sessions."""
import json

import numpy as np
import pytest

pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')
from onnx_export import BUDGETS, INT8_CHECK_SAMPLES, INT8_SUBSETS, int8_export_dir  # noqa: E402

from sentryfuse_ros.core.errors import ConfigError, DataError, ExportError  # noqa: E402
from sentryfuse_ros.core.runtime import export, quantize  # noqa: E402
from sentryfuse_ros.core.runtime.backends import OnnxRunners  # noqa: E402
from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice  # noqa: E402

CAPS = Capabilities(ort_providers=('CPUExecutionProvider',))
INT8 = RuntimeChoice(backend='onnxruntime', precision='int8')


@pytest.fixture(scope='module')
def exported(tmp_path_factory, checkpoint):
    return int8_export_dir(tmp_path_factory, checkpoint)


def ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.slow
def test_two_subsets_at_two_budgets_are_written_with_their_checked_accuracy(exported):
    manifest = export.load_manifest(exported)
    assert manifest.precision == 'int8' and manifest.quantization == 'dynamic'
    expected = {(tuple(s.split('+')), b) for s in INT8_SUBSETS for b in BUDGETS}
    assert {(s.subset, s.budget) for s in manifest.subnetworks} == expected
    for s in manifest.subnetworks:
        assert s.file == f'{s.key}.int8.onnx' and s.precision == 'int8'
        assert s.bytes == (exported / s.file).stat().st_size < s.fp32_bytes
        c = s.check
        assert c.n == INT8_CHECK_SAMPLES and c.samples == 'scenes seed 7002'
        assert 0 < c.accuracy <= 1 and 0 < c.fp32_accuracy <= 1
        assert c.delta_points == pytest.approx(100 * (c.accuracy - c.fp32_accuracy), abs=0.02)
        assert -c.delta_points <= 1.0 and 0 < c.max_abs_logit_diff <= 1.0 and c.agreement >= 0.9
    assert sorted(p.name for p in exported.iterdir()) == sorted([s.file for s in manifest.subnetworks]
                                                                + ['manifest.json'])   # no staging, no fp32 left
    data = json.loads((exported / 'manifest.json').read_text())
    assert data['quantization']['op_types'] == ['MatMul', 'Gemm'] and data['quantization']['check_samples'] == 100
    printed = (exported.parent / 'cli_output.txt').read_text()
    assert 'exported 4 sub-networks (int8)' in printed and 'int8 dynamic:' in printed


@pytest.mark.slow
def test_weights_are_int8_and_the_log_mel_front_end_stays_fp32(exported):
    graph = exported / 'lidar+audio@1.00.int8.onnx'
    found = ops(graph)
    assert 'MatMulInteger' in found and 'DynamicQuantizeLinear' in found
    assert 'STFT' in found and 'LayerNormalization' in found
    model = onnx.load(str(graph))
    filterbank = [n for n in model.graph.node if any(quantize.FRONT_END_MARK in i for i in n.input)]
    assert filterbank and all(n.op_type == 'MatMul' for n in filterbank)   # the mel filterbank: fp32 MatMul


@pytest.mark.slow
def test_the_node_side_runs_int8_and_switches_levels(exported):
    runners = OnnxRunners(exported, INT8, CAPS)
    assert runners.levels == BUDGETS
    for budget, level in ((1.0, 1.0), (0.6, 0.5), (0.5, 0.5), (1.0, 1.0)):
        runner = runners.get(('camera',), budget)
        assert runner.key == f'camera@{level:.2f}'
        logits = runner(runners.example_inputs(('camera',)))
        assert tuple(logits.shape) == (1, len(runners.class_names)) and np.isfinite(logits.numpy()).all()
    assert runners.stats['builds'] == 2 and runners.stats['hits'] == 2


@pytest.mark.slow
def test_sessions_are_kept_within_max_cache_mb(exported):
    one = max(s.bytes for s in export.load_manifest(exported).subnetworks if s.subset == ('camera',)) / 2 ** 20
    runners = OnnxRunners(exported, INT8, CAPS, max_cache_mb=1.01 * one)   # room for one camera session only
    for budget in (1.0, 0.5, 1.0):
        runners.get(('camera',), budget)
    assert runners.stats['builds'] == 3 and runners.stats['evictions'] == 2 and runners.stats['cached'] == 1
    assert runners.stats['storage_mb'] <= 1.01 * one
    runners.get(('camera',), 1.0)
    assert runners.stats['hits'] == 1
    with pytest.raises(ExportError, match=r'max_cache_mb=-1: expected a size >= 0 \[MiB\] or None'):
        OnnxRunners(exported, INT8, CAPS, max_cache_mb=-1)


@pytest.mark.slow
def test_an_int8_export_refuses_fp32_and_an_fp32_manifest_refuses_int8(exported, tmp_path):
    with pytest.raises(ExportError, match=r"holds int8 graphs: precision='fp32' expected an export of "
                                          r'`sentryfuse export --precision fp32`'):
        OnnxRunners(exported, RuntimeChoice(backend='onnxruntime'), CAPS)
    data = json.loads((exported / 'manifest.json').read_text())
    data['precision'] = 'fp32'
    for s in data['subnetworks']:
        s['precision'] = 'fp32'
        (tmp_path / s['file']).write_bytes((exported / s['file']).read_bytes())
    (tmp_path / 'manifest.json').write_text(json.dumps(data))
    with pytest.raises(ExportError, match=r"holds fp32 graphs: precision='int8' expected an export of "
                                          r'`sentryfuse export --precision int8`'):
        OnnxRunners(tmp_path, INT8, CAPS)
    data['subnetworks'][0]['precision'] = 'int8'
    (tmp_path / 'manifest.json').write_text(json.dumps(data))
    with pytest.raises(ExportError, match=r"has precision 'fp32' with graphs of precision \['int8'\]"):
        export.load_manifest(tmp_path)


@pytest.mark.slow
def test_tensorrt_int8_needs_a_static_export(exported):
    jetson = Capabilities(cuda=True, ort_providers=('TensorrtExecutionProvider', 'CPUExecutionProvider'))
    with pytest.raises(ExportError, match='holds dynamic int8 graphs: TensorRT .* expected static QDQ graphs'):
        OnnxRunners(exported, RuntimeChoice(device='cuda', backend='onnxruntime', precision='int8'), jetson)


def test_a_graph_over_the_logit_tolerance_is_not_written(tmp_path, checkpoint):
    config = quantize.QuantizeConfig(check_samples=20, max_drop_points=100.0, max_logit_diff=1e-9)
    with pytest.raises(ExportError, match=r'camera@1.00: int8 logits differ from fp32 by max \|diff\| = .* on 20 '
                                          r'held-out samples: expected <= 1e-09; not written'):
        export.export_checkpoint(checkpoint, tmp_path, budgets=(1.0,), subsets=['camera'], samples=1,
                                 precision='int8', quantize=config)
    assert list(tmp_path.iterdir()) == []


def test_a_broken_quantizer_is_caught_by_the_accuracy_check(tmp_path, checkpoint, monkeypatch):
    """A quantizer that negates the head's weights: logits within no accuracy of fp32, nothing written,
    the older export in the folder stays whole."""
    def negating_quantizer(fp32, out, config, calibration=None):
        model = onnx.load(str(fp32))
        head = next(i for i in model.graph.initializer if i.name == 'model.head.weight')
        weights = -onnx.numpy_helper.to_array(head)
        head.CopyFrom(onnx.numpy_helper.from_array(weights, head.name))
        onnx.save(model, str(out))

    old = tmp_path / 'old'
    old.mkdir()
    (old / 'manifest.json').write_text('{"format": "an older export"}')
    monkeypatch.setattr(export, 'quantize_graph', negating_quantizer)
    config = quantize.QuantizeConfig(check_samples=40, max_logit_diff=1e6)
    with pytest.raises(ExportError, match=r'camera@1.00: int8 accuracy .* points below fp32 .* on 40 held-out '
                                          r'samples \(scenes seed 7002\): expected a drop <= 1 points; not written'):
        export.export_checkpoint(checkpoint, old, budgets=(1.0,), subsets=['camera'], samples=1,
                                 precision='int8', quantize=config)
    assert [p.name for p in old.iterdir()] == ['manifest.json']
    assert (old / 'manifest.json').read_text() == '{"format": "an older export"}'


def test_static_qdq_is_calibrated_on_scenes_and_checked(tmp_path, checkpoint):
    config = quantize.QuantizeConfig(quantization='static', calibration_samples=8, check_samples=40,
                                     max_drop_points=5.0)
    manifest = export.export_checkpoint(checkpoint, tmp_path, budgets=(0.5,), subsets=['camera'], samples=1,
                                        precision='int8', quantize=config)
    entry = manifest['subnetworks'][0]
    assert manifest['quantization']['quantization'] == 'static' and entry['check']['n'] == 40
    found = ops(tmp_path / entry['file'])
    assert 'QuantizeLinear' in found and 'DequantizeLinear' in found and 'MatMulInteger' not in found
    assert export.load_manifest(tmp_path).quantization == 'static'


def test_static_calibration_on_a_dataset_uses_its_samples_with_the_subset_present(tmp_path, checkpoint, trained):
    from bag_training_fixtures import write_dataset
    model, _ = trained
    data = write_dataset(tmp_path / 'ds', [[('camera',)] * 6, [('camera', 'lidar')] * 6],
                         pre=model.config.preprocess, classes=tuple(model.config.class_names[:2]))
    config = quantize.QuantizeConfig(quantization='static', calibration=str(data), calibration_samples=4,
                                     check_samples=20, max_drop_points=100.0)
    manifest = export.export_checkpoint(checkpoint, tmp_path / 'camera', budgets=(0.5,), subsets=['camera'],
                                        samples=1, precision='int8', quantize=config)
    assert manifest['quantization']['calibration'] == str(data)
    assert manifest['subnetworks'][0]['check']['samples'] == 'scenes seed 7002'   # checked on held-out scenes
    with pytest.raises(DataError, match=r"has no sample with audio present for the calibration set"):
        export.export_checkpoint(checkpoint, tmp_path / 'audio', budgets=(0.5,), subsets=['audio'], samples=1,
                                 precision='int8', quantize=config)
    assert not (tmp_path / 'audio' / 'manifest.json').exists() and not list((tmp_path / 'audio').iterdir())


@pytest.mark.parametrize('kwargs,match', [
    ({'quantization': 'qat'}, r"quantization='qat': expected one of \['dynamic', 'static'\]"),
    ({'op_types': ('Softmax',)}, r"op_types=\['Softmax'\]: expected a non-empty subset of"),
    ({'calibration': '/data/set'}, r"calibration='/data/set': expected 'scenes' with quantization 'dynamic'"),
    ({'check_samples': 0}, 'check_samples=0: expected a positive int'),
    ({'max_drop_points': -1.0}, r'max_drop_points=-1.0: expected a tolerance >= 0 points'),
    ({'max_logit_diff': 0.0}, 'max_logit_diff=0.0: expected a positive tolerance'),
])
def test_bad_quantize_configs_are_refused_by_name(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        quantize.QuantizeConfig(**kwargs)


def test_an_unknown_export_precision_is_refused(tmp_path, checkpoint):
    with pytest.raises(ExportError, match=r"precision='int4': expected one of \['fp32', 'int8'\]"):
        export.export_checkpoint(checkpoint, tmp_path, precision='int4')
