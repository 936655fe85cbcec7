"""Field-by-field validation of an ONNX export manifest (``manifest.json`` of ``sentryfuse export``).

Every field the runtime uses is checked for type, range and finiteness before anything acts on it:
budgets in (0, 1], finite non-negative costs, input shapes equal to the ones the manifest's own
preprocessing produces (batch 1), file names confined to the export folder (no absolute path, no
``..``, no link that leaves it). Fields not listed here are allowed and left to their readers, so
a new optional field (e.g. a precision or calibration entry) needs no change here; a reader of a
new field validates it with the helpers below (:func:`number`, :func:`plain_file`).

A problem is a :class:`ManifestFieldError` naming the field path (``subnetworks[3].budget``), the
value and what was expected; :func:`sentryfuse_ros.core.runtime.export.load_manifest` turns it
into an ExportError naming the manifest.
"""
import math
import pathlib
import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from sentryfuse_ros.core.config import from_dict
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig, check_preprocess_limits
from sentryfuse_ros.core.errors import ConfigError, ExportError
from sentryfuse_ros.core.limits import DEFAULT_LIMITS, ReadLimits, outside_folder


class ManifestFieldError(ExportError):
    """One manifest field is missing, of the wrong type, out of range or outside the folder."""


def field(data: Mapping[str, Any], key: str, where: str = '') -> Any:
    """``data[key]``, or ManifestFieldError naming the missing field."""
    if not isinstance(data, Mapping):
        raise ManifestFieldError(f'{where or "manifest"} is {type(data).__name__}: expected a JSON object')
    if key not in data:
        raise ManifestFieldError(f'{where + "." if where else ""}{key} is missing')
    return data[key]


def number(value: Any, name: str, low: float, high: float, *, low_open: bool = False, integer: bool = False):
    """``value`` as int/float when it is a finite number in [low, high] ((low, high] with ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (not integer or isinstance(value, int))
    if ok and math.isfinite(value) and (low < value if low_open else low <= value) and value <= high:
        return int(value) if integer else float(value)
    kind = 'an integer' if integer else 'a finite number'
    span = f'({low}, {high}]' if low_open else f'[{low}, {high}]'
    raise ManifestFieldError(f'{name}={value!r}: expected {kind} in {span}')


def text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestFieldError(f'{name}={value!r}: expected a non-empty string')
    return value


def names(value: Any, name: str, allowed: Sequence[str] = (), minimum: int = 1, maximum: int = 10_000) -> Tuple[str, ...]:
    """Distinct non-empty strings (all in ``allowed`` when given), between ``minimum`` and ``maximum`` of them."""
    ok = isinstance(value, list) and minimum <= len(value) <= maximum and len(set(map(repr, value))) == len(value)
    if not ok or not all(isinstance(v, str) and v and (not allowed or v in allowed) for v in value):
        within = f' from {list(allowed)}' if allowed else ''
        raise ManifestFieldError(f'{name}={_short(value)}: expected {minimum} to {maximum} distinct names{within}')
    return tuple(value)


def plain_file(value: Any, name: str, folder: pathlib.Path) -> str:
    """A file name that stays inside ``folder``: no separator, no '..', not absolute, no link out of it."""
    why = outside_folder(folder, value)
    if why:
        raise ManifestFieldError(f'{name}={value!r}: {why}')
    return value


def expected_inputs(pre: PreprocessConfig) -> Dict[str, Tuple[int, ...]]:
    """Graph input shape per modality at batch 1, as the preprocessing makes them."""
    return {'camera': (1, 3, *pre.image_hw), 'lidar': (1, 3, *pre.bev_hw), 'audio': (1, pre.audio_samples)}


def _short(value: Any) -> str:
    text_ = repr(value)
    return text_ if len(text_) <= 80 else text_[:77] + '...'


def check_top(data: Any, limits: ReadLimits = DEFAULT_LIMITS) -> Dict[str, Any]:
    """The validated top-level fields: checkpoint, checkpoint_sha256, class_names, modalities, preprocess."""
    out = {'checkpoint': text(field(data, 'checkpoint'), 'checkpoint')}
    sha = field(data, 'checkpoint_sha256')
    if not isinstance(sha, str) or not re.fullmatch(r'[0-9a-f]{64}', sha):
        raise ManifestFieldError(f'checkpoint_sha256={_short(sha)}: expected 64 lowercase hex digits')
    out['checkpoint_sha256'] = sha
    out['class_names'] = names(field(data, 'class_names'), 'class_names', minimum=2, maximum=limits.max_classes)
    out['modalities'] = names(field(data, 'modalities'), 'modalities', allowed=MODALITIES)
    try:
        pre = from_dict(PreprocessConfig, field(data, 'preprocess'), where='preprocess')
        check_preprocess_limits(pre, limits)
    except (ConfigError, TypeError) as exc:
        raise ManifestFieldError(str(exc)) from exc
    out['preprocess'] = pre
    if 'batch' in data and data['batch'] != 1:
        raise ManifestFieldError(f'batch={_short(data["batch"])}: expected 1 (graphs are exported at batch 1)')
    return out


def check_subnetwork(entry: Any, i: int, top: Mapping[str, Any], folder: pathlib.Path) -> Dict[str, Any]:
    """The validated fields of ``subnetworks[i]`` (see ExportedSubnetwork)."""
    where = f'subnetworks[{i}]'
    subset = names(field(entry, 'subset', where), f'{where}.subset', allowed=top['modalities'])
    subset = tuple(m for m in MODALITIES if m in subset)  # canonical order = graph input order
    shapes = expected_inputs(top['preprocess'])
    inputs = field(entry, 'inputs', where)
    if not isinstance(inputs, list) or len(inputs) != len(subset):
        raise ManifestFieldError(f'{where}.inputs={_short(inputs)}: expected one input per modality of {list(subset)}')
    parsed: List[Tuple[str, Tuple[int, ...]]] = []
    for k, (item, modality) in enumerate(zip(inputs, subset)):
        name, shape = field(item, 'name', f'{where}.inputs[{k}]'), field(item, 'shape', f'{where}.inputs[{k}]')
        if name != modality or not isinstance(shape, list) or tuple(shape) != shapes[modality] \
                or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise ManifestFieldError(f'{where}.inputs[{k}]=({_short(name)}, {_short(shape)}): expected '
                                     f'({modality!r}, {list(shapes[modality])}) from the manifest\'s preprocess')
        parsed.append((modality, shapes[modality]))
    return {
        'key': text(field(entry, 'key', where), f'{where}.key'), 'subset': subset,
        'budget': number(field(entry, 'budget', where), f'{where}.budget', 0.0, 1.0, low_open=True),
        'file': plain_file(field(entry, 'file', where), f'{where}.file', folder),
        'gflops': number(field(entry, 'gflops', where), f'{where}.gflops', 0.0, 1e6),
        'params': number(field(entry, 'params', where), f'{where}.params', 0, 10 ** 12, integer=True),
        'inputs': tuple(parsed),
        'max_abs_diff': number(field(entry, 'max_abs_diff', where), f'{where}.max_abs_diff', 0.0, 1e6),
    }


def check_subnetworks(data: Any, top: Mapping[str, Any], folder: pathlib.Path,
                      limits: ReadLimits = DEFAULT_LIMITS) -> List[Dict[str, Any]]:
    """Every entry of ``subnetworks`` validated; at least one, at most ``limits.max_subnetworks``, no
    (subset, budget) twice."""
    subs = field(data, 'subnetworks')
    if not isinstance(subs, list) or not 1 <= len(subs) <= limits.max_subnetworks:
        count = len(subs) if isinstance(subs, list) else type(subs).__name__
        raise ManifestFieldError(f'subnetworks lists {count} sub-networks: expected 1 to {limits.max_subnetworks}')
    out, seen = [], {}
    for i, entry in enumerate(subs):
        sub = check_subnetwork(entry, i, top, folder)
        key = (sub['subset'], sub['budget'])
        if key in seen:
            raise ManifestFieldError(f'subnetworks[{i}] repeats subset {"+".join(key[0])} at budget {key[1]} '
                                     f'of subnetworks[{seen[key]}]: expected each (subset, budget) once')
        seen[key] = i
        out.append(sub)
    return out
