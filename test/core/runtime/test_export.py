"""ONNX export: every modality subset at two budgets matches torch in onnxruntime (max |diff| <= 1e-4),
the manifest says what the runtime needs, a graph that differs is not written, a broken folder is
refused by name."""
import json
import time

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
from onnx_export import BUDGETS, export_dir  # noqa: E402  (test/ is on sys.path via conftest)

from sentryfuse_ros import cli  # noqa: E402
from sentryfuse_ros.core.errors import ExportError  # noqa: E402
from sentryfuse_ros.core.pruning.gate import modality_subsets  # noqa: E402
from sentryfuse_ros.core.pruning.prune import SubnetworkCache  # noqa: E402
from sentryfuse_ros.core.runtime import export  # noqa: E402


@pytest.fixture(scope='module')
def exported(tmp_path_factory, checkpoint):
    t0 = time.perf_counter()
    folder = export_dir(tmp_path_factory, checkpoint)
    print(f'\nexport of {2 * 7} sub-networks: {time.perf_counter() - t0:.1f} s (0 when cached)')
    return folder


@pytest.mark.slow
def test_every_subset_at_two_budgets_matches_torch_in_onnxruntime(exported, trained):
    model, gate = trained
    manifest = export.load_manifest(exported)
    cache = SubnetworkCache(model, gate.scores, budget_levels=BUDGETS)
    expected = {(live, b) for live in modality_subsets(model.modalities) for b in BUDGETS}
    assert {(s.subset, s.budget) for s in manifest.subnetworks} == expected
    gen = torch.Generator().manual_seed(7)   # fresh inputs, not the export's check samples
    for entry in manifest.subnetworks:
        sub = cache.get(entry.subset, entry.budget)
        assert entry.key == sub.key and entry.gflops == pytest.approx(sub.gflops)
        session = export.ort_session(exported / entry.file)
        assert [i.name for i in session.get_inputs()] == list(entry.subset)
        for _ in range(2):
            x = sub.model.example_inputs(entry.subset, generator=gen)
            with torch.inference_mode():
                ref = sub.model(x).numpy()                                          # (1, K)
            got = session.run(['logits'], {m: x[m].numpy() for m in entry.subset})[0]  # (1, K)
            assert np.abs(got - ref).max() <= 1e-4, entry.key
        assert entry.max_abs_diff <= 1e-4


@pytest.mark.slow
def test_manifest_holds_what_the_runtime_needs(exported, checkpoint, trained):
    model, _ = trained
    data = json.loads((exported / 'manifest.json').read_text())
    assert data['format'] == 'sentryfuse-onnx' and data['checkpoint_sha256'] == export.file_sha256(checkpoint)
    assert data['class_names'] == list(model.config.class_names)
    assert data['preprocess']['image_size'] == model.config.preprocess.image_size
    pre = model.config.preprocess
    full = next(s for s in data['subnetworks'] if s['key'] == 'camera+lidar+audio@0.50')
    assert full['file'] == 'camera+lidar+audio@0.50.onnx'
    assert full['inputs'] == [
        {'name': 'camera', 'shape': [1, 3, pre.image_size, pre.image_size], 'dtype': 'float32'},
        {'name': 'lidar', 'shape': [1, 3, pre.bev_size, pre.bev_size], 'dtype': 'float32'},
        {'name': 'audio', 'shape': [1, pre.audio_samples], 'dtype': 'float32'}]
    assert 0 < full['gflops'] < next(s for s in data['subnetworks'] if s['key'] == 'camera+lidar+audio@1.00')['gflops']
    assert not list(exported.glob('*.partial'))


@pytest.mark.slow
def test_a_graph_that_differs_from_torch_is_not_written(tmp_path, checkpoint):
    with pytest.raises(ExportError, match=r'camera@1.00: onnxruntime differs from torch by max \|diff\| = .*'
                                          r'expected <= 1e-12; not written'):
        export.export_checkpoint(checkpoint, tmp_path, budgets=(1.0,), subsets=['camera'], atol=1e-12, samples=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_exports_one_subset_at_opset_18(tmp_path, checkpoint, capsys):
    assert cli.main(['export', '--checkpoint', str(checkpoint), '--out', str(tmp_path / 'e'), '--budgets', '0.7',
                     '--subsets', 'audio', '--samples', '1', '--opset', '18']) == 0   # STFT: opset >= 17
    assert 'exported 1 sub-networks' in capsys.readouterr().out
    manifest = export.load_manifest(tmp_path / 'e')
    assert [s.key for s in manifest.subnetworks] == ['audio@0.70']
    assert json.loads((tmp_path / 'e' / 'manifest.json').read_text())['opset'] == 18
    assert cli.main(['export', '--checkpoint', str(checkpoint), '--out', str(tmp_path / 'f'), '--budgets', '0',
                     '--subsets', 'audio', '--samples', '1']) == 2
    assert "--budgets=(0.0,): expected one or more budgets in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / 'f').exists()


@pytest.mark.slow
def test_an_opset_the_exporter_does_not_write_is_refused(tmp_path, checkpoint):
    with pytest.raises(ExportError, match='audio@1.00: torch.onnx.export wrote opset 18, not the requested 17'):
        export.export_checkpoint(checkpoint, tmp_path, budgets=(1.0,), subsets=['audio'], samples=1, opset=17)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('names,match', [(['radar'], "subset 'radar'"), (['camera+camera'], "subset 'camera\\+camera'"),
                                         ([''], "subset ''")])
def test_bad_subsets_are_refused(names, match):
    with pytest.raises(ExportError, match=match):
        export.parse_subsets(names, ('camera', 'lidar', 'audio'))


def test_parse_subsets_sorts_into_canonical_order():
    assert export.parse_subsets(['audio+camera', 'lidar'], ('camera', 'lidar', 'audio')) == \
        (('camera', 'audio'), ('lidar',))


@pytest.mark.slow
def test_broken_export_folders_are_refused_by_name(tmp_path, exported):
    with pytest.raises(ExportError, match='has no manifest.json'):
        export.load_manifest(tmp_path)
    (tmp_path / 'manifest.json').write_text('{"format": "other"}')
    with pytest.raises(ExportError, match="has format 'other'"):
        export.load_manifest(tmp_path)
    data = json.loads((exported / 'manifest.json').read_text())
    (tmp_path / 'manifest.json').write_text(json.dumps(data))
    with pytest.raises(ExportError, match=r"lacks \[.*'camera@1.00.onnx'"):
        export.load_manifest(tmp_path)
    del data['class_names']
    (tmp_path / 'manifest.json').write_text(json.dumps(data))
    with pytest.raises(ExportError, match="lacks or mangles a field: KeyError: 'class_names'"):
        export.load_manifest(tmp_path)
    (tmp_path / 'bad.onnx').write_bytes(b'not onnx')
    with pytest.raises(ExportError, match="onnxruntime cannot load .*bad.onnx"):
        export.ort_session(tmp_path / 'bad.onnx')
