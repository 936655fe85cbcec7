"""Accuracy under a deployment runtime against eager torch fp32 on the same fresh scenes."""
import json

import pytest

pytest.importorskip('onnxruntime')
from onnx_export import BUDGETS, export_dir  # noqa: E402

from sentryfuse_ros import cli  # noqa: E402
from sentryfuse_ros.core.errors import ExportError, RuntimeChoiceError  # noqa: E402
from sentryfuse_ros.core.eval.accuracy import format_runtime_table, runtime_accuracy  # noqa: E402
from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice  # noqa: E402


@pytest.fixture(scope='module')
def exported(tmp_path_factory, checkpoint):
    return export_dir(tmp_path_factory, checkpoint)


@pytest.mark.slow
def test_onnxruntime_accuracy_equals_torch_fp32(exported, checkpoint, tmp_path, capsys):
    out = tmp_path / 'ort.json'
    assert cli.main(['evaluate', '--checkpoint', str(checkpoint), '--seed', '1000', '--n', '40', '--budgets',
                     *map(str, BUDGETS), '--backend', 'onnxruntime', '--onnx-dir', str(exported),
                     '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result['records']) == 7 * 2 and result['runtime'] == 'onnxruntime cpu fp32'
    assert result['max_abs_delta_points'] == 0 and result['min_agreement'] == 1.0
    assert max(r['max_abs_logit_diff'] for r in result['records']) < 1e-4
    assert 'runtime onnxruntime cpu fp32 vs eager torch fp32' in capsys.readouterr().out


def test_bf16_accuracy_is_reported_against_fp32(checkpoint):
    result = runtime_accuracy(checkpoint, seed=1000, n=40, budgets=(1.0,), choice=RuntimeChoice(precision='bf16'),
                              caps=Capabilities(cpu_bf16=True))
    assert {r['budget'] for r in result['records']} == {1.0} and result['runtime'] == 'torch cpu bf16'
    assert result['min_agreement'] >= 0.9   # bf16 rounding flips a few predictions at most
    assert 0 < max(r['max_abs_logit_diff'] for r in result['records']) < 1.0
    assert 'torch cpu bf16 vs eager torch fp32' in format_runtime_table(result)


@pytest.mark.slow
def test_refused_runtimes_and_foreign_exports(exported, checkpoint, tmp_path):
    with pytest.raises(RuntimeChoiceError, match="precision='bf16': this CPU has no native bf16"):
        runtime_accuracy(checkpoint, seed=1000, n=4, choice=RuntimeChoice(precision='bf16'),
                         caps=Capabilities(cpu_bf16=False))
    foreign = tmp_path / 'foreign.pt'
    import torch
    data = torch.load(checkpoint, weights_only=True)
    data['training']['command'] = 'another run'
    torch.save(data, foreign)
    with pytest.raises(ExportError, match=r"was made from a checkpoint with sha256 .* not from .*foreign.pt"):
        runtime_accuracy(foreign, seed=1000, n=4, budgets=BUDGETS, choice=RuntimeChoice(backend='onnxruntime'),
                         onnx_dir=exported)
    assert cli.main(['evaluate', '--checkpoint', str(checkpoint), '--seed', '1000', '--out', str(tmp_path / 'x'),
                     '--precision', 'fp16']) == 2


def test_evaluate_on_cuda_without_cuda_is_a_named_error(checkpoint, tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    assert cli.main(['evaluate', '--checkpoint', str(checkpoint), '--seed', '1000', '--out', str(tmp_path / 'x'),
                     '--device', 'cuda']) == 2
    assert "device='cuda': torch here is built without CUDA" in capsys.readouterr().err
