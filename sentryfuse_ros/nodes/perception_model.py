"""The perception node's configure step: the runtime chosen, the checkpoint (or ONNX export) loaded
and checked, the sub-networks built, and the runtime's status. Everything but the node itself: a
logger is passed in."""
import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from sentryfuse_ros import msg_arrays
from sentryfuse_ros.core.errors import ExportError, RuntimeChoiceError, SentryFuseError
from sentryfuse_ros.core.runtime.choice import Capabilities, RuntimeChoice, resolve_choice
from sentryfuse_ros.core.runtime.engine import PerceptionEngine
from sentryfuse_ros.msg_arrays.modality_inputs import audio_converter, lidar_converter
from sentryfuse_ros.nodes import common
from sentryfuse_ros.core.runtime.param_configs import engine_config
from sentryfuse_ros.nodes.perception_params import default_model_path


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    engine: Optional[PerceptionEngine]   # None: loading failed (``error`` says why)
    converters: Dict[str, Callable]      # modality -> message converter for engine.push
    runtime: Tuple[str, str, str]        # (requested, running, refusal) runtime descriptions
    prebuild_ms: float                   # [ms] building every sub-network at load (0 without prebuild)
    error: str                           # why there is no engine ('' when there is)


def load_model(values: Mapping[str, Any], capabilities: Capabilities, logger) -> LoadedModel:
    """The engine of the parameter ``values``, or why there is none (logged as well).

    The engine is returned only once it is ready: a prebuild that fails leaves no engine that would
    report OK "no inference yet" forever, but the error with its cause."""
    import torch  # noqa: PLC0415 (torch-heavy)

    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse  # noqa: PLC0415
    if int(values['torch_threads']) > 0:
        torch.set_num_threads(int(values['torch_threads']))
    path = values['model_path'] or default_model_path()
    runtime = ('', '', '')
    try:
        choice, runtime, error = choose_runtime(values, capabilities, logger)
        if choice is None:
            return LoadedModel(None, {}, runtime, 0.0, error)
        if choice.backend == 'onnxruntime':
            path = values['onnx_dir']
            engine = PerceptionEngine(None, None, engine_config(values),
                                      runners=_onnx_runners(values, choice, capabilities))
            if set(engine.runners.levels) != set(engine.config.budget_levels):
                logger.warning(
                    f'budget_levels {list(engine.config.budget_levels)} differ from the export\'s levels '
                    f'{list(engine.runners.levels)}: the export\'s levels are used (re-export with --budgets)')
        else:
            model, gate, _meta = load_sentryfuse(path, device=choice.device)
            engine = PerceptionEngine(model, gate.scores, engine_config(values),
                                      device=choice.device, precision=choice.precision)
        converters = {
            'camera': msg_arrays.image_to_rgb,
            'lidar': lidar_converter(values['lidar.type']),
            'audio': audio_converter(engine.pre.audio_rate),
        }
        logger.info(f'model {path}: classes {list(engine.class_names)}, '
                    f'modalities {list(engine.modalities)}, runtime {choice}')
        ms = 0.0
        if values['prebuild']:
            ms = engine.prebuild()
            logger.info(f'prebuilt {engine.runners.stats.get("builds", 0)} sub-networks '
                        f'in {ms:.0f} ms (zero-shot: select + slice, no gradients)')
        return LoadedModel(engine, converters, runtime, ms, '')
    except Exception as exc:  # noqa: BLE001 - any failure of the model file leaves the node up, ERROR
        if not isinstance(exc, (SentryFuseError, OSError)):
            exc = f'{type(exc).__name__}: {exc}'
        error = f'cannot load model {path!r}: {exc}'
        logger.error(error)
        return LoadedModel(None, {}, runtime, 0.0, error)


def choose_runtime(values: Mapping[str, Any], capabilities: Capabilities,
                   logger) -> Tuple[Optional[RuntimeChoice], Tuple[str, str, str], str]:
    """(the runtime to run, (requested, running, refusal), error): the requested one, or CPU fp32
    after a refusal with runtime_fallback; None and the error when it is refused without fallback.
    Refusals are logged."""
    requested = RuntimeChoice(device=values['device'], precision=values['precision'], backend=values['backend'])
    try:
        choice, warning = resolve_choice(requested, capabilities, fallback=values['runtime_fallback'])
    except RuntimeChoiceError as exc:
        error = f'runtime {requested} refused (runtime_fallback false): {exc}'
        logger.error(error)
        return None, (str(requested), '', str(exc)), error
    if warning:
        logger.warning(f'runtime {requested} refused: {warning}')
    return choice, (str(requested), str(choice), warning), ''


def _onnx_runners(values: Mapping[str, Any], choice, capabilities):
    """The onnxruntime sessions of ``onnx_dir`` (ExportError when it is unset, missing or corrupt)."""
    from sentryfuse_ros.core.runtime.backends import OnnxRunners  # noqa: PLC0415
    if not values['onnx_dir']:
        raise ExportError("backend='onnxruntime' needs onnx_dir (the folder of `sentryfuse export`)")
    threads = int(values['torch_threads']) or 1
    return OnnxRunners(values['onnx_dir'], choice, capabilities, threads=threads,
                       max_cache_mb=float(values['max_cache_mb']))


def runtime_status(runtime: Tuple[str, str, str], model_error: str, state: str, loaded: bool):
    """The 'sentryfuse: perception runtime' DiagnosticStatus of (requested, running, refusal)."""
    requested, running, refusal = runtime
    if not requested and not model_error:  # unconfigured: configure chooses it
        level, message = common.LEVEL_OK, f'{state}: none chosen yet (configure chooses it)'
    elif not requested:  # invalid parameters never reached the runtime choice
        level, message = common.LEVEL_ERROR, model_error
    elif not running:
        level, message = common.LEVEL_ERROR, f'refused, no inference: {refusal}'
    elif refusal:
        level, message = common.LEVEL_WARN, refusal
    elif not loaded:
        level, message = common.LEVEL_OK, f'{running} chosen; no model loaded ({state})'
    else:
        level, message = common.LEVEL_OK, f'running {running}'
    return common.diagnostic_status('sentryfuse: perception runtime', level, message,
                                    values={'requested': requested, 'running': running or 'none'})
