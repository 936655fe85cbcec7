"""int8 sub-networks: onnxruntime quantization of the exported fp32 graphs, each checked before it is written.

``sentryfuse export --precision int8`` exports every (live subset, budget) sub-network to fp32 ONNX
as ``export.py`` does, then quantizes each graph with onnxruntime's tools and checks it against its
fp32 graph on held-out samples; a graph over tolerance is an ExportError and nothing is written.

Quantization (``QuantizeConfig.quantization``):
    dynamic   int8 weights on the ops of ``op_types`` (MatMul/Gemm: every linear layer of the
              blocks and the head); activations are quantized per call (MatMulInteger). No
              calibration. The fastest on CPUExecutionProvider.
    static    QDQ graph: int8 weights and activations with ranges calibrated on ``calibration``
              samples (symmetric, as TensorRT's explicit quantization wants). For runtimes that
              need it (TensorRT int8 on a Jetson); slower than dynamic on the CPU provider.

What stays fp32: the log-mel front end (STFT, mel filterbank: every node that reads an initializer
of ``LogMel``, named ``*.logmel.*``), the patch-embedding Convs (unless ``op_types`` names Conv),
LayerNorm, softmax and the attention products of activations (MatMulConstBOnly), position
embeddings and biases. docs/int8.md gives the measurements behind this choice.

The check (:func:`check_int8`) runs the fp32 and the int8 graph on the same held-out samples of the
training distribution (the checkpoint's scene config, seeds the checkpoint never trained on) and
records accuracy of both, the difference in points, the agreement of predictions and the largest
logit difference.

Shapes: samples {modality: (n, ...)} float32, labels (n,) int64; graphs take batch 1.
"""
import dataclasses
import logging
import pathlib
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from sentryfuse_ros.core.config import check
from sentryfuse_ros.core.errors import CheckpointError, DataError, ExportError
from sentryfuse_ros.core.pruning.checkpoint import check_fresh_seed, scene_config_of

QUANTIZATIONS = ('dynamic', 'static')
FRONT_END_MARK = '.logmel.'   # initializer names of the log-mel front end (STFT window, mel filterbank)
SCENES = 'scenes'             # calibration/check samples rendered from the checkpoint's scene config


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    quantization: str = 'dynamic'            # 'dynamic' (int8 weights, CPU) or 'static' (QDQ, calibrated: TensorRT)
    op_types: Tuple[str, ...] = ('MatMul', 'Gemm')  # ONNX ops whose constant weights become int8
    calibration: str = SCENES                # 'scenes' or a `sentryfuse dataset` folder (static only)
    calibration_samples: int = 64            # samples whose activation ranges set the static scales
    check_samples: int = 300                 # held-out samples of the accuracy check per graph
    seed: int = 7001                         # scene seed of the calibration set; seed + 1 draws the check set
    max_drop_points: float = 1.0             # [points] largest allowed accuracy drop int8 vs fp32 in the check
    max_logit_diff: float = 1.0              # largest allowed max |int8 - fp32| logit difference in the check

    def __post_init__(self):
        check(self.quantization in QUANTIZATIONS, 'quantization', self.quantization, f'one of {list(QUANTIZATIONS)}')
        known = ('MatMul', 'Gemm', 'Conv')
        check(bool(self.op_types) and set(self.op_types) <= set(known), 'op_types', list(self.op_types),
              f'a non-empty subset of {list(known)}')
        check(self.calibration == SCENES or self.quantization == 'static', 'calibration', self.calibration,
              f"{SCENES!r} with quantization 'dynamic' (which does not calibrate)")
        for key in ('calibration_samples', 'check_samples'):
            value = getattr(self, key)
            check(isinstance(value, int) and value >= 1, key, value, 'a positive int')
        check(self.max_drop_points >= 0, 'max_drop_points', self.max_drop_points, 'a tolerance >= 0 points')
        check(self.max_logit_diff > 0, 'max_logit_diff', self.max_logit_diff, 'a positive tolerance')

    def record(self) -> Dict[str, Any]:
        """The manifest's 'quantization' entry."""
        return dict(dataclasses.asdict(self), op_types=list(self.op_types))


@dataclasses.dataclass(frozen=True)
class Int8Check:
    """The check of one int8 graph against its fp32 graph on held-out samples."""
    samples: str                  # where they came from, e.g. 'scenes seed 7002' or 'dataset DIR (held-out half)'
    n: int                        # held-out samples
    accuracy: float               # int8 graph
    fp32_accuracy: float          # fp32 graph, same samples
    delta_points: float           # 100 * (accuracy - fp32_accuracy)
    agreement: float              # fraction of identical predictions
    max_abs_logit_diff: float     # max |int8 - fp32| over the samples


class SampleSource:
    """Calibration and check samples per live subset: rendered scenes, or a `sentryfuse dataset` folder.

    Scenes: ``seed`` draws the calibration set and ``seed + 1`` the check set, from the checkpoint's
    scene config (both refused when the checkpoint trained or validated on them). Dataset: the
    samples in which the subset's sensors are present, shuffled with ``seed``; the first half
    calibrates, the second half is the check set when the checkpoint has no scene config.
    """

    def __init__(self, checkpoint, meta: Dict[str, Any], model, config: QuantizeConfig):
        self.config, self.pre, self.modalities = config, model.config.preprocess, model.modalities
        self.class_names = tuple(model.config.class_names)
        self.scene = None
        try:
            self.scene = scene_config_of(meta, checkpoint)
        except CheckpointError:   # e.g. trained on bags: the dataset's held-out half is the check set
            if config.calibration == SCENES:
                raise
        if self.scene is not None:
            for seed in (config.seed, config.seed + 1):
                check_fresh_seed(seed, meta, checkpoint)
        self.dataset = None
        if config.calibration != SCENES:
            from sentryfuse_ros.core.data.bagdataset import BagDataset  # noqa: PLC0415
            self.dataset = BagDataset(config.calibration)
            self.dataset.check_preprocess(self.pre)
            unknown = sorted(set(self.dataset.class_names) - set(self.class_names))
            if unknown:
                raise DataError(f'dataset {str(self.dataset.path)!r} has classes {unknown} the model lacks: '
                                f'expected labels among {list(self.class_names)}')
        self._scenes: Dict[int, Any] = {}

    def _rendered(self, seed: int, n: int):
        if seed not in self._scenes:
            from sentryfuse_ros.core.data.datasets import SyntheticDataset  # noqa: PLC0415
            self._scenes[seed] = SyntheticDataset(self.scene, self.pre, seed=seed, n=n).subset(self.modalities)
        return self._scenes[seed]

    def draw(self, live: Sequence[str], part: str) -> Tuple[Dict[str, np.ndarray], np.ndarray, str]:
        """({m: (n, ...) float32} for m in live, labels (n,), where from) of ``part`` 'calibration' or 'check'."""
        n = self.config.calibration_samples if part == 'calibration' else self.config.check_samples
        use_scenes = self.scene is not None and (part == 'check' or self.dataset is None)
        if use_scenes:
            seed = self.config.seed + (part == 'check')
            data = self._rendered(seed, n)
            return ({m: data.inputs[m][:n].numpy() for m in live}, data.labels[:n].numpy(),
                    f'{SCENES} seed {seed}')
        covering = np.concatenate([idx for mods, idx in self.dataset.modality_sets().items()
                                   if set(live) <= set(mods)] or [np.zeros(0, np.int64)])
        covering = np.random.default_rng(self.config.seed).permutation(np.sort(covering))
        half = covering[:len(covering) // 2] if part == 'calibration' else covering[len(covering) // 2:]
        index = half[:n]
        if not len(index):
            raise DataError(f'dataset {str(self.dataset.path)!r} has no sample with {"+".join(live)} present '
                            f'for the {part} set; expected samples of every exported subset')
        to_model = np.array([self.class_names.index(c) for c in self.dataset.class_names], np.int64)
        return (self.dataset.inputs(index, live), to_model[self.dataset.labels[index]],
                f'dataset {str(self.dataset.path)} ({"first" if part == "calibration" else "second"} half)')


def front_end_nodes(path: pathlib.Path) -> list:
    """Names of the nodes that read an initializer of the log-mel front end (kept fp32)."""
    import onnx  # noqa: PLC0415
    model = onnx.load(str(path))
    front = {i.name for i in model.graph.initializer if FRONT_END_MARK in i.name}
    return [n.name for n in model.graph.node if front & set(n.input)]


class _Calibration:
    """onnxruntime's CalibrationDataReader over samples {m: (n, ...)}: one batch-1 feed per call."""

    def __init__(self, samples: Dict[str, np.ndarray]):
        self.samples, self.i = samples, 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        n = len(next(iter(self.samples.values())))
        if self.i >= n:
            return None
        self.i += 1
        return {m: x[self.i - 1:self.i] for m, x in self.samples.items()}  # (1, ...)


def quantize_graph(fp32: pathlib.Path, out: pathlib.Path, config: QuantizeConfig,
                   calibration: Optional[Dict[str, np.ndarray]] = None) -> None:
    """Write the int8 graph of ``fp32`` to ``out`` (calibration samples: static only)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static  # noqa: PLC0415
    common = dict(op_types_to_quantize=list(config.op_types), nodes_to_exclude=front_end_nodes(fp32),
                  weight_type=QuantType.QInt8, per_channel=config.quantization == 'static')
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # onnxruntime.quantization logs advice ('consider pre-processing') on root
    try:
        if config.quantization == 'dynamic':
            quantize_dynamic(str(fp32), str(out), extra_options={'MatMulConstBOnly': True}, **common)
        else:
            quantize_static(str(fp32), str(out), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8,
                            extra_options={'ActivationSymmetric': True, 'WeightSymmetric': True,
                                           'MatMulConstBOnly': True}, **common)
    except Exception as exc:  # onnxruntime.quantization raises many types (onnx checker, ort, numpy)
        out.unlink(missing_ok=True)
        raise ExportError(f'{fp32.stem}: onnxruntime {config.quantization} quantization failed: '
                          f'{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}') from exc
    finally:
        root.setLevel(level)


def graph_logits(session, samples: Dict[str, np.ndarray]) -> np.ndarray:
    """Logits (n, K) of a batch-1 graph over samples {m: (n, ...)}, one sample per run."""
    n = len(next(iter(samples.values())))
    return np.concatenate([session.run(None, {m: x[i:i + 1] for m, x in samples.items()})[0]
                           for i in range(n)])                                          # (n, K)


def check_int8(key: str, fp32_session, int8_session, samples: Dict[str, np.ndarray], labels: np.ndarray,
               where: str, config: QuantizeConfig) -> Int8Check:
    """The int8 graph against the fp32 graph on held-out samples; ExportError over tolerance."""
    ref, got = graph_logits(fp32_session, samples), graph_logits(int8_session, samples)   # (n, K)
    if got.shape != ref.shape or not np.isfinite(got).all():
        raise ExportError(f'{key}: the int8 graph gives logits of shape {got.shape} (finite: '
                          f'{bool(np.isfinite(got).all())}): expected finite {ref.shape} like fp32; not written')
    pred, ref_pred = got.argmax(-1), ref.argmax(-1)
    result = Int8Check(samples=where, n=int(len(labels)), accuracy=round(float((pred == labels).mean()), 4),
                       fp32_accuracy=round(float((ref_pred == labels).mean()), 4),
                       delta_points=round(100 * float((pred == labels).mean() - (ref_pred == labels).mean()), 2),
                       agreement=round(float((pred == ref_pred).mean()), 4),
                       max_abs_logit_diff=float(np.abs(got - ref).max()))
    if -result.delta_points > config.max_drop_points:
        raise ExportError(f'{key}: int8 accuracy {result.accuracy:.4f} is {-result.delta_points:.2f} points below '
                          f'fp32 {result.fp32_accuracy:.4f} on {result.n} held-out samples ({where}): expected a '
                          f'drop <= {config.max_drop_points:g} points; not written')
    if not result.max_abs_logit_diff <= config.max_logit_diff:
        raise ExportError(f'{key}: int8 logits differ from fp32 by max |diff| = {result.max_abs_logit_diff:.3g} '
                          f'on {result.n} held-out samples: expected <= {config.max_logit_diff:g}; not written')
    return result
