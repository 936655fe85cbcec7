"""Datasets built from labelled bags: the on-disk format, its writer and its memory-mapped reader.

A dataset is a folder (written as ``DS.partial``, renamed to ``DS`` when complete):

    DS/manifest.json        class names, preprocessing config and its hash, per-bag sample counts,
                            modality sets per bag, how it was sampled, skipped bags
    DS/shard-0000/          one shard per bag (a validation split by bag is a choice of shards)
        camera.f16          (N, 3, S, SW) float16, raw C order (zeros where the sample has no camera)
        lidar.f16           (N, 3, G, GW) float16
        audio.f16           (N, A) float16
        present.u8          (N, 3) uint8: 1 where the modality was live and fresh (camera, lidar, audio)
        t.f64               (N,) float64: inference time [s since bag start]
        labels.json         N class names (ground truth at the newest sample used)

Raw little-endian files with shapes in the manifest are read back with ``np.memmap``: a random
batch reads only its rows, so a dataset larger than memory trains at disk speed. The builder
(``core/replay/dataset.py``) fills the shards from bags; this module knows nothing of bags.

Shapes: N samples; camera (3, S, SW), lidar (3, G, GW), audio (A,) per sample, as preprocess makes them.
"""
import hashlib
import json
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sentryfuse_ros.core.config import from_dict, to_dict
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig, check_preprocess_limits
from sentryfuse_ros.core.errors import ConfigError, DataError
from sentryfuse_ros.core.limits import DEFAULT_LIMITS, ReadLimits, outside_folder, over

FORMAT = 'sentryfuse-bag-dataset'
VERSION = 1
STORE_DTYPE = np.dtype('<f2')  # float16 halves the disk and read traffic; inputs are O(1) after preprocessing


def preprocess_dict(pre: PreprocessConfig) -> Dict[str, Any]:
    """The preprocessing config as plain JSON-able data (tuples as lists)."""
    return json.loads(json.dumps(to_dict(pre)))


def preprocess_hash(pre: PreprocessConfig) -> str:
    """A short hash naming the preprocessing: equal hashes, equal model inputs."""
    blob = json.dumps(preprocess_dict(pre), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sample_shapes(pre: PreprocessConfig) -> Dict[str, Tuple[int, ...]]:
    """Per-sample shape of each modality's model input."""
    return {'camera': (3, *pre.image_hw), 'lidar': (3, *pre.bev_hw), 'audio': (pre.audio_samples,)}


def preprocess_difference(built: Mapping[str, Any], expected: PreprocessConfig) -> List[str]:
    """'key: dataset X, model Y' for every preprocessing key that differs (empty when equal)."""
    want = preprocess_dict(expected)
    out = []
    for key in sorted(set(built) | set(want)):
        if built.get(key) != want.get(key):
            out.append(f'preprocess.{key}: dataset {built.get(key)!r}, model {want.get(key)!r}')
    return out


class ShardWriter:
    """Appends samples of one bag to a shard folder; :meth:`close` writes the labels.

    Args:
        folder: the shard folder (created; files in it are replaced).
        modalities: the modalities stored (others never appear in a sample).
        shapes: per-sample shape of each modality.
    """

    def __init__(self, folder: pathlib.Path, modalities: Sequence[str], shapes: Mapping[str, Tuple[int, ...]]):
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.modalities = tuple(modalities)
        self.shapes = {m: tuple(shapes[m]) for m in self.modalities}
        self._files = {m: open(self.folder / f'{m}.f16', 'wb') for m in self.modalities}
        self._present = open(self.folder / 'present.u8', 'wb')
        self._t = open(self.folder / 't.f64', 'wb')
        self._zeros = {m: np.zeros(self.shapes[m], STORE_DTYPE) for m in self.modalities}
        self.labels: List[str] = []

    def append(self, arrays: Mapping[str, np.ndarray], t: float, label: str) -> None:
        """One sample: ``arrays`` holds the present modalities' model inputs (others stored as zeros)."""
        present = np.zeros(len(MODALITIES), np.uint8)
        for m in self.modalities:
            x = arrays.get(m)
            if x is None:
                self._files[m].write(self._zeros[m].tobytes())
                continue
            if tuple(x.shape) != self.shapes[m]:
                raise DataError(f'{m} input shape={tuple(x.shape)}: expected {self.shapes[m]} from the preprocessing')
            self._files[m].write(np.ascontiguousarray(x, dtype=STORE_DTYPE).tobytes())
            present[MODALITIES.index(m)] = 1
        self._present.write(present.tobytes())
        self._t.write(np.float64(t).tobytes())
        self.labels.append(str(label))

    def __len__(self) -> int:
        return len(self.labels)

    def close(self) -> None:
        for f in (*self._files.values(), self._present, self._t):
            f.close()
        tmp = self.folder / 'labels.json.tmp'
        tmp.write_text(json.dumps(self.labels))
        tmp.replace(self.folder / 'labels.json')


def manifest_hash(path: pathlib.Path) -> str:
    """sha256 (first 16 hex digits) of a dataset's manifest.json bytes: names the dataset in checkpoints."""
    return hashlib.sha256((pathlib.Path(path) / 'manifest.json').read_bytes()).hexdigest()[:16]


def _read_json(path: pathlib.Path, limits: ReadLimits, what: str, missing: str = '') -> Any:
    """Parsed JSON of ``path`` (at most ``limits.max_manifest_bytes``); DataError naming it otherwise."""
    try:
        size = path.stat().st_size
    except OSError:
        raise DataError(f'{what} {str(path)!r} does not exist{"; " + missing if missing else ""}') from None
    if size > limits.max_manifest_bytes:
        raise DataError(f'{what} {str(path)!r} is {size} bytes: expected at most {limits.max_manifest_bytes} (ReadLimits)')
    try:
        return json.loads(path.read_bytes().decode('utf-8'))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError(f'{what} {str(path)!r} is not valid JSON: {exc}') from None


def _check_manifest(path: pathlib.Path, data: Any, limits: ReadLimits) -> None:
    """DataError naming the first field of a dataset manifest that is missing, mistyped or out of range."""
    where = f'dataset {str(path)!r}'
    if not isinstance(data, dict) or data.get('format') != FORMAT or data.get('version') != VERSION:
        found = (data.get('format'), data.get('version')) if isinstance(data, dict) else (type(data).__name__, None)
        raise DataError(f'{where} has format {found[0]!r} version {found[1]!r}: expected {FORMAT!r} version {VERSION}')
    for key in ('class_names', 'modalities', 'shapes', 'preprocess', 'bags'):
        if key not in data:
            raise DataError(f'{where} manifest lacks {key!r}')
    names, mods = data['class_names'], data['modalities']
    if not (isinstance(names, list) and 1 <= len(names) <= limits.max_classes and len(set(map(repr, names))) == len(names)
            and all(isinstance(c, str) and c for c in names)):
        raise DataError(f'{where} class_names={str(names)[:80]}: expected 1 to {limits.max_classes} distinct names')
    if not (isinstance(mods, list) and mods and len(set(map(repr, mods))) == len(mods) and all(m in MODALITIES for m in mods)):
        raise DataError(f'{where} modalities={str(mods)[:80]}: expected distinct names from {list(MODALITIES)}')
    try:
        pre = from_dict(PreprocessConfig, data['preprocess'], where='preprocess')
        check_preprocess_limits(pre, limits)
    except (ConfigError, TypeError) as exc:
        raise DataError(f'{where} manifest: {exc}') from None
    shapes, want = data['shapes'], sample_shapes(pre)
    if not isinstance(shapes, dict) or set(shapes) != set(mods) or \
            any(not isinstance(shapes[m], list) or tuple(shapes[m]) != want[m] for m in mods):
        raise DataError(f'{where} shapes={str(shapes)[:120]}: expected {({m: list(want[m]) for m in mods})} '
                        'from its preprocess')
    _check_bags(path, data['bags'], limits)


def _check_bags(path: pathlib.Path, bags: Any, limits: ReadLimits) -> None:
    where = f'dataset {str(path)!r}'
    if not isinstance(bags, list):
        raise DataError(f'{where} bags={str(bags)[:80]}: expected a list of shard entries')
    seen = set()
    for i, entry in enumerate(bags):
        if not isinstance(entry, dict) or not all(k in entry for k in ('name', 'shard', 'samples')):
            raise DataError(f'{where} bags[{i}]={str(entry)[:80]}: expected {{"name", "shard", "samples"}}')
        if not isinstance(entry['name'], str) or not entry['name']:
            raise DataError(f'{where} bags[{i}].name={entry["name"]!r}: expected a non-empty string')
        why = outside_folder(path, entry['shard'])
        if why or entry['shard'] in seen:
            raise DataError(f'{where} bags[{i}].shard={entry["shard"]!r}: {why or "listed twice"}')
        seen.add(entry['shard'])
        n = entry['samples']
        if isinstance(n, bool) or not isinstance(n, int) or over(n, limits.max_samples):
            raise DataError(f'{where} bags[{i}].samples={n!r}: expected an integer in [0, {limits.max_samples}]')


class BagDataset:
    """A built dataset, memory-mapped. Indices run over all shards in manifest order.

    Args:
        path: the dataset folder (not ``.partial``: an incomplete build is refused).

    Attributes:
        manifest: the parsed manifest.json; ``hash``: its :func:`manifest_hash`.
        class_names, modalities, bag_names: from the manifest.
        labels (N,) int64 class ids; present (N, 3) bool; bag_index (N,) int64 shard of each sample.
    """

    def __init__(self, path, limits: ReadLimits = DEFAULT_LIMITS):
        self.path = pathlib.Path(path)
        self.limits = limits
        if self.path.name.endswith('.partial') or (not self.path.exists()
                                                   and self.path.with_name(self.path.name + '.partial').exists()):
            raise DataError(f'dataset {str(self.path)!r} is an incomplete build (.partial); rerun '
                            '`sentryfuse dataset` with the same arguments to finish it')
        if not (self.path / 'manifest.json').is_file():
            raise DataError(f'dataset {str(self.path)!r} has no manifest.json: expected a folder written by '
                            '`sentryfuse dataset`')
        self.manifest = _read_json(self.path / 'manifest.json', limits, 'dataset manifest')
        _check_manifest(self.path, self.manifest, limits)
        self.hash = manifest_hash(self.path)
        self.class_names = tuple(self.manifest['class_names'])
        self.modalities = tuple(self.manifest['modalities'])
        self.shapes = {m: tuple(s) for m, s in self.manifest['shapes'].items()}
        ids = {name: i for i, name in enumerate(self.class_names)}
        self.bag_names: List[str] = []
        self._maps: List[Dict[str, np.memmap]] = []
        labels, present, bag_index = [], [], []
        for b, entry in enumerate(self.manifest['bags']):
            folder, n = self.path / entry['shard'], int(entry['samples'])
            self.bag_names.append(entry['name'])
            where = f'dataset {str(self.path)!r} shard {entry["shard"]!r}'
            self._check_sizes(folder, n, where)
            try:
                maps = {m: np.memmap(folder / f'{m}.f16', STORE_DTYPE, mode='r', shape=(n, *self.shapes[m]))
                        for m in self.modalities} if n else {}
                pres = np.fromfile(folder / 'present.u8', np.uint8).reshape(-1, len(MODALITIES))
            except (OSError, ValueError) as exc:
                raise DataError(f'{where} is unreadable or does not match its manifest entry ({n} samples): '
                                f'{exc}') from exc
            names = _read_json(folder / 'labels.json', limits, f'{where} labels')
            if not isinstance(names, list) or len(names) != n or len(pres) != n:
                raise DataError(f'{where} holds {len(names) if isinstance(names, list) else type(names).__name__} '
                                f'labels and {len(pres)} rows: expected {n} samples as in the manifest')
            unknown = sorted({repr(x) for x in names if not isinstance(x, str) or x not in ids})
            if unknown:
                raise DataError(f'{where} has labels {unknown[:5]} outside its class_names {list(self.class_names)}')
            if pres.size and pres.max() > 1:
                raise DataError(f'{where} present.u8 holds value {int(pres.max())}: expected 0 or 1')
            self._maps.append(maps)
            labels.append(np.array([ids[x] for x in names], np.int64))
            present.append(pres.astype(bool))
            bag_index.append(np.full(n, b, np.int64))
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        self.present = np.concatenate(present) if present else np.zeros((0, len(MODALITIES)), bool)
        self.bag_index = np.concatenate(bag_index) if bag_index else np.zeros(0, np.int64)
        self._offsets = np.cumsum([0] + [int(e['samples']) for e in self.manifest['bags']])

    def _check_sizes(self, folder: pathlib.Path, n: int, where: str) -> None:
        """Every shard file holds exactly the bytes its manifest entry declares, checked before any is mapped."""
        expected = {f'{m}.f16': n * int(np.prod(self.shapes[m])) * STORE_DTYPE.itemsize for m in self.modalities}
        expected.update({'present.u8': n * len(MODALITIES), 't.f64': n * 8})
        for name, size in expected.items():
            try:
                found = (folder / name).stat().st_size
            except OSError as exc:
                raise DataError(f'{where} lacks {name}: {exc.strerror}') from None
            if found != size:
                raise DataError(f'{where} {name} has {found} bytes: expected {size} for the {n} samples its '
                                'manifest entry declares')

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def preprocess(self) -> Dict[str, Any]:
        return dict(self.manifest['preprocess'])

    def check_preprocess(self, expected: PreprocessConfig) -> None:
        """DataError naming every preprocessing key where this dataset differs from ``expected``."""
        diff = preprocess_difference(self.manifest['preprocess'], expected)
        if diff:
            raise DataError(f'dataset {str(self.path)!r} was preprocessed differently from the model: '
                            f'{"; ".join(diff)}; rebuild it with `sentryfuse dataset --config` of this model')

    def modality_sets(self, index: Optional[np.ndarray] = None) -> Dict[Tuple[str, ...], np.ndarray]:
        """{present modalities: sample indices} over ``index`` (default all), in first-seen order."""
        index = np.arange(len(self)) if index is None else np.asarray(index, np.int64)
        keys = self.present[index] @ (1 << np.arange(len(MODALITIES)))  # (n,) bit code of each set
        out = {}
        for code in sorted(set(keys.tolist())):
            mods = tuple(m for i, m in enumerate(MODALITIES) if code >> i & 1)
            out[mods] = index[keys == code]
        return out

    def inputs(self, index: np.ndarray, modalities: Sequence[str]) -> Dict[str, np.ndarray]:
        """{modality: (len(index), ...) float32} for global sample indices (any order, repeats allowed)."""
        index = np.asarray(index, np.int64)
        shard = np.searchsorted(self._offsets, index, side='right') - 1  # (n,)
        out = {}
        for m in modalities:
            if m not in self.modalities:
                raise DataError(f'modality {m!r}: dataset {str(self.path)!r} stores {list(self.modalities)}')
            x = np.empty((len(index), *self.shapes[m]), np.float32)
            for s in np.unique(shard):
                sel = shard == s
                x[sel] = self._maps[s][m][index[sel] - self._offsets[s]]
            bad = x.size - np.count_nonzero(np.isfinite(x))
            if bad:
                rows = index[~np.isfinite(x.reshape(len(index), -1)).all(axis=1)]
                raise DataError(f'dataset {str(self.path)!r}: {m} of samples {rows[:5].tolist()} holds {bad} NaN/inf '
                                'values: expected finite model inputs (a tampered or corrupt shard); refused')
            out[m] = x
        return out

    def bags_index(self, names: Sequence[str]) -> np.ndarray:
        """Sample indices of the named bags (DataError for a name the dataset lacks)."""
        missing = sorted(set(names) - set(self.bag_names))
        if missing:
            raise DataError(f'bags {missing} are not in dataset {str(self.path)!r}; its bags: {self.bag_names}')
        wanted = [i for i, n in enumerate(self.bag_names) if n in set(names)]
        return np.flatnonzero(np.isin(self.bag_index, wanted))
