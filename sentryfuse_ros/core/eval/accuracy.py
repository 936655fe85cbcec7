"""Accuracy of a checkpoint's sub-networks under a deployment runtime, against eager torch fp32.

For every modality subset x budget, the runner of the chosen runtime (torch bf16/fp16, or the
onnxruntime session of an export) and the eager fp32 torch sub-network classify the same fresh
synthetic test set; the record holds both accuracies, their difference in points, the fraction of
identical predictions and the largest logit difference.

Shapes: test inputs {modality: (n, ...)}; logits (n, K).
"""
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from sentryfuse_ros.core.data.datasets import SyntheticDataset
from sentryfuse_ros.core.errors import ConfigError, ExportError
from sentryfuse_ros.core.pruning.gate import modality_subsets
from sentryfuse_ros.core.runtime.backends import OnnxRunner, OnnxRunners, TorchRunners
from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice, check_choice
from sentryfuse_ros.core.runtime.export import file_sha256, load_manifest
from sentryfuse_ros.core.pruning.checkpoint import check_fresh_seed, load_sentryfuse, scene_config_of


def runner_logits(runner, runners, inputs: Dict[str, torch.Tensor], batch: int = 64) -> torch.Tensor:
    """Logits (n, K) float32 of ``runner`` over inputs {m: (n, ...)}; onnxruntime graphs run one sample at a time."""
    n = len(next(iter(inputs.values())))
    step = 1 if isinstance(runner, OnnxRunner) else batch   # exported graphs have batch 1
    out = []
    for i in range(0, n, step):
        x = {m: inputs[m][i:i + step].to(runners.device, runners.input_dtype) for m in runner.live}
        with torch.inference_mode():
            out.append(runner(x).float().cpu())                       # (b, K)
    return torch.cat(out)                                              # (n, K)


def runtime_accuracy(checkpoint, *, seed: int, choice: RuntimeChoice, n: int = 1000,
                     budgets: Sequence[float] = (1.0, 0.5), onnx_dir=None, threads: int = 1,
                     caps: Optional[Capabilities] = None,
                     log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Accuracy per subset x budget under ``choice`` and under eager torch fp32 on the same test set.

    Args:
        checkpoint: written by ``sentryfuse train``.
        seed: test-set seed (not the training/validation seeds).
        choice: the runtime to measure (checked against ``caps``; refused choices raise).
        n: test scenes.
        budgets: budget levels (onnxruntime: each must be exported; the subsets are the export's).
        onnx_dir: export folder (``sentryfuse export``) for backend 'onnxruntime'; it must have
            been exported from this checkpoint (checked by sha256).
        threads: onnxruntime intra-op threads.
        caps: the machine's capabilities (default: detected).
        log: progress lines.
    """
    log = log or (lambda s: None)
    caps = caps or Capabilities.detect()
    check_choice(choice, caps)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f'--n={n!r}: expected a positive number of test scenes')
    ref_model, ref_gate, meta = load_sentryfuse(checkpoint, device='cpu')
    check_fresh_seed(seed, meta, checkpoint)
    data = SyntheticDataset(scene_config_of(meta, checkpoint), ref_model.config.preprocess, seed=int(seed),
                            n=n).subset(ref_model.modalities)
    reference = TorchRunners(ref_model, ref_gate.scores, budgets, device='cpu', precision='fp32')
    if choice.backend == 'onnxruntime':
        if onnx_dir is None:
            raise ConfigError("backend='onnxruntime' needs the export folder (--onnx-dir)")
        manifest = load_manifest(onnx_dir)
        digest = file_sha256(checkpoint)
        if manifest.checkpoint_sha256 != digest:
            raise ExportError(f'export {str(onnx_dir)!r} was made from a checkpoint with sha256 '
                              f'{manifest.checkpoint_sha256[:12]}..., not from {str(checkpoint)!r} '
                              f'({digest[:12]}...): expected an export of this checkpoint')
        runners = OnnxRunners(manifest, choice, caps, threads=threads)
    else:
        model, gate, _ = load_sentryfuse(checkpoint, device='cpu')
        runners = TorchRunners(model, gate.scores, budgets, device=choice.device, precision=choice.precision)
    labels = data.labels.numpy()
    records = []
    subsets = modality_subsets(ref_model.modalities)
    if choice.backend == 'onnxruntime':   # the subsets the export holds (`sentryfuse export --subsets`)
        subsets = [live for live in subsets if live in {s.subset for s in manifest.subnetworks}]
    for live in subsets:
        for b in budgets:
            ref = reference.get(live, b)
            run = runners.get(live, b)
            if abs(run.budget - ref.budget) > 1e-9:
                raise ExportError(f'{ref.key}: the runtime has no sub-network at budget {b:g} '
                                  f'(nearest {run.key}); expected the same budget levels')
            ref_logits = runner_logits(ref, reference, data.inputs)
            logits = runner_logits(run, runners, data.inputs)
            ref_pred, pred = ref_logits.argmax(-1).numpy(), logits.argmax(-1).numpy()
            acc, ref_acc = float((pred == labels).mean()), float((ref_pred == labels).mean())
            records.append({'subset': list(live), 'budget': float(b), 'accuracy': round(acc, 4),
                            'fp32_accuracy': round(ref_acc, 4), 'delta_points': round(100 * (acc - ref_acc), 2),
                            'agreement': round(float((pred == ref_pred).mean()), 4),
                            'max_abs_logit_diff': float((logits - ref_logits).abs().max()), 'n': n})
        log(f'evaluated {"+".join(live)} under {choice}')
    return {'checkpoint': str(checkpoint), 'seed': int(seed), 'n': n, 'runtime': str(choice),
            'backend': choice.backend, 'device': choice.device, 'precision': choice.precision,
            'onnx_dir': None if onnx_dir is None else str(onnx_dir), 'records': records,
            'max_abs_delta_points': max(abs(r['delta_points']) for r in records),
            'min_agreement': min(r['agreement'] for r in records)}


def format_runtime_table(result: Dict[str, Any]) -> str:
    """The records as text, one line per subset x budget."""
    lines = [f'runtime {result["runtime"]} vs eager torch fp32, {result["n"]} scenes (seed {result["seed"]})',
             f'{"subset":<22} {"budget":>6} {"acc":>6} {"fp32":>6} {"delta":>6} {"agree":>6} {"max|dlogit|":>11}']
    for r in result['records']:
        lines.append(f'{"+".join(r["subset"]):<22} {r["budget"]:>6.2f} {r["accuracy"]:>6.3f} {r["fp32_accuracy"]:>6.3f} '
                     f'{r["delta_points"]:>6.2f} {r["agreement"]:>6.3f} {r["max_abs_logit_diff"]:>11.2e}')
    lines.append(f'max |delta| {result["max_abs_delta_points"]:.2f} points; min agreement {result["min_agreement"]:.3f}')
    return '\n'.join(lines)
