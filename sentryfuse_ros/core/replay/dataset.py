"""Labelled bags -> a training dataset, sampled exactly as the robot samples its sensors.

Each bag is driven through the replay loop (:class:`~sentryfuse_ros.core.replay.replay.BagDriver`:
health tracker on the bag clock, the perception engine's input stage with the node's converters,
freshness limits and preprocessing). At every inference tick the model inputs of the live and
fresh modalities become one sample, labelled with the ground truth in force at the newest sample
used. A tick where a sensor is dead gives a sample without it (a real dropout sample, kept); a
tick with nothing live and fresh gives none (the node would publish nothing); a tick within the
label transition time after a change is not labelled and is skipped (counted).

Writing: into ``OUT.partial`` (one shard per bag, format in ``core/data/bagdataset.py``), with
``progress.json`` recording the settings and every finished bag, so a rerun with the same
arguments resumes after the last finished bag. ``manifest.json`` is written last and the folder
renamed to ``OUT``: a folder without ``.partial`` is complete. A bag that cannot be read, has no
sensor topic or no ground truth is reported and skipped; the build fails (one line naming each
bag and why) only when no bag gives a sample.
"""
import math
import dataclasses
import hashlib
import json
import pathlib
import shutil
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from sentryfuse_ros.core.replay.faults import LabelTrack, read_csv_rows
from sentryfuse_ros.core.bags.reader import SENSOR_MODALITIES, BagSource, bag_dir
from sentryfuse_ros.core.replay.replay import BagDriver, MakeConverters, ReplayConfig
from sentryfuse_ros.core.config import to_dict
from sentryfuse_ros.core.data.bagdataset import (FORMAT, VERSION, ShardWriter, preprocess_dict, preprocess_hash,
                                                 sample_shapes)
from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.errors import BagError, ConfigError, DataError
from sentryfuse_ros.core.runtime.inputs import SensorInputs

PROGRESS = 'progress.json'


class BagSampler(BagDriver):
    """One bag -> samples in a ShardWriter (see the module docstring for what becomes a sample)."""

    def __init__(self, inputs: SensorInputs, config: ReplayConfig, make_converters: MakeConverters,
                 writer: ShardWriter, *, labels: Optional[LabelTrack] = None,
                 progress: Optional[Callable[[float, str], None]] = None):
        super().__init__(inputs, config, make_converters, labels=labels, progress=progress)
        self.writer = writer
        self.counts = {'ticks': 0, 'no_input': 0, 'unlabelled': 0}
        self.sets: Dict[str, int] = {}
        self.classes: Dict[str, int] = {}

    def progress_text(self) -> str:
        return f'{len(self.writer)} samples'

    def on_infer(self, t: float, origin: float, live: Optional[List[str]], budget: float) -> None:
        self.counts['ticks'] += 1
        try:
            prepared = self.inputs.prepare(origin + t, live)
        except Exception as exc:  # noqa: BLE001 - as the engine: one tick never stops the build, counted
            self.inputs.record_error('inference', exc)
            self.counts['no_input'] += 1
            return
        if not prepared.modalities:
            self.counts['no_input'] += 1
            return
        truth = self.track.truth(prepared.stamp_s - origin) if len(self.track) else None
        if truth is None:
            self.counts['unlabelled'] += 1
            return
        self.writer.append(prepared.arrays, t, truth)
        key = '+'.join(prepared.modalities)
        self.sets[key] = self.sets.get(key, 0) + 1
        self.classes[truth] = self.classes.get(truth, 0) + 1


def read_label_table(path) -> Dict[Optional[str], List[tuple]]:
    """Rows of a label CSV: header ``t,label`` (one bag) or ``bag,t,label`` (bag = folder name).

    Returns {bag name or None: [(t, label), ...]}.
    """
    path = pathlib.Path(path)
    rows = read_csv_rows(path, 'label file')
    header = [c.strip() for c in rows[0]] if rows else []
    if header not in (['t', 'label'], ['bag', 't', 'label']):
        raise ConfigError(f'label file {str(path)!r}: expected a CSV header "t,label" or "bag,t,label", '
                          f'got {",".join(header) if rows else "an empty file"!r}')
    out: Dict[Optional[str], List[tuple]] = {}
    for i, row in enumerate(rows[1:], start=2):
        try:
            bag = row[0].strip() if len(header) == 3 else None
            t, label = float(row[-2]), row[-1].strip()
            if len(row) != len(header) or not label or not math.isfinite(t):
                raise ValueError
        except (IndexError, ValueError):
            raise ConfigError(f'label file {str(path)!r} line {i} {row!r}: expected {",".join(header)}') from None
        out.setdefault(bag, []).append((t, label))
    if not out:
        raise ConfigError(f'label file {str(path)!r} has no labels')
    return out


def _fingerprint(bag: pathlib.Path) -> str:
    """Names a bag's content cheaply: its metadata and the names/sizes of its files."""
    h = hashlib.sha256((bag / 'metadata.yaml').read_bytes())
    for f in sorted(bag.iterdir()):
        if f.is_file():
            h.update(f'{f.name}:{f.stat().st_size}'.encode())
    return h.hexdigest()[:16]


def _unique_names(paths: Sequence[pathlib.Path]) -> List[str]:
    names, seen = [], {}
    for p in paths:
        base = p.name
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f'{base}-{seen[base]}')
    return names


@dataclasses.dataclass
class BuildResult:
    path: pathlib.Path            # the complete dataset folder
    manifest: Dict[str, Any]
    wall_s: float                 # seconds spent on bags in this run (resumed bags excluded)
    bag_seconds: float            # seconds of bag time sampled in this run


def build_dataset(bags: Sequence, out, *, pre: PreprocessConfig, modalities: Sequence[str], config: ReplayConfig,
                  make_converters: MakeConverters, label_csv=None, class_names: Optional[Sequence[str]] = None,
                  overwrite: bool = False, command: str = '', log: Callable[[str], None] = print,
                  progress: Optional[Callable[[float, str], None]] = None) -> BuildResult:
    """Build (or resume) the dataset ``out`` from ``bags``; see the module docstring.

    Args:
        bags: bag directories (or storage files beside their metadata.yaml).
        out: the dataset folder to create.
        pre: the model's preprocessing.
        modalities: the model's modalities (others in the bags are ignored).
        config: replay configuration: topic map (and label topic), health, freshness, rate.
        make_converters: the node's converters (``sentryfuse_ros.msg_arrays.modality_inputs.engine_converters``).
        label_csv: a label CSV (``t,label`` for a single bag, ``bag,t,label`` for several) instead of
            the bags' label topic.
        class_names: the classes, in model order; default: the sorted labels seen. A label outside
            the given class names is an error (DataError naming it) when the dataset is finished.
        overwrite: replace an existing ``out`` / start a ``out.partial`` of other settings afresh.
        command: the command line, recorded in the manifest.
        log: one line per bag (done, skipped).
        progress: progress(fraction over all bags, text).
    """
    out = pathlib.Path(out)
    partial = out.with_name(out.name + '.partial')
    if not bags:
        raise ConfigError('no bags given: expected one or more bag directories')
    if out.exists():
        if not overwrite:
            raise ConfigError(f'--out {str(out)!r} exists; choose a new folder or pass --overwrite')
        shutil.rmtree(out)
    modalities = tuple(m for m in SENSOR_MODALITIES if m in modalities)
    shapes = sample_shapes(pre)
    paths, names, tables = _bags_and_labels(bags, label_csv)
    settings = {'preprocess': preprocess_dict(pre), 'modalities': list(modalities), 'replay': to_dict(config),
                'class_names': list(class_names) if class_names else None,
                'label_csv': str(pathlib.Path(label_csv).resolve()) if label_csv else None,
                'bags': [str(p) for p in paths]}
    build = _Build(partial, settings, overwrite, len(paths), log)
    wall, bag_seconds = 0.0, 0.0
    for k, (path, name) in enumerate(zip(paths, names)):
        if name in build.state['done']:
            continue
        t0 = time.perf_counter()
        entry = build.bag(k, path, name, class_names, progress, pre=pre, modalities=modalities, shapes=shapes,
                          config=config, make_converters=make_converters,
                          rows=None if tables is None else tables.get(None, tables.get(name)))
        if entry is not None:
            wall += time.perf_counter() - t0
            bag_seconds += entry['duration_s']
    done = [build.state['done'][n] for n in names if n in build.state['done']]
    _require_samples(partial, done, build.state['skipped'])
    manifest = _finish(partial, out, done, build.state['skipped'], class_names, settings, shapes, pre, command)
    return BuildResult(out, manifest, wall, bag_seconds)


def _bags_and_labels(bags: Sequence, label_csv) -> Tuple[List[pathlib.Path], List[str], Optional[Dict]]:
    """(bag folders, their unique names, the label table or None); ConfigError when the label file's bags
    do not match the bags given."""
    tables = read_label_table(label_csv) if label_csv else None
    paths = []
    for b in bags:
        try:
            paths.append(bag_dir(b).resolve())
        except BagError:
            paths.append(pathlib.Path(b).resolve())  # reported as a skipped bag
    names = _unique_names(paths)
    if tables is not None and None in tables and len(paths) > 1:
        raise ConfigError(f'label file {str(label_csv)!r} has header "t,label": that labels one bag, but '
                          f'{len(paths)} bags were given; use a "bag,t,label" CSV naming each bag by folder name')
    if tables is not None and None not in tables:
        unknown = sorted(set(tables) - set(names))
        if unknown:
            raise ConfigError(f'label file {str(label_csv)!r} names bags {unknown} that were not given; '
                              f'bags: {names}')
    return paths, names, tables


class _Build:
    """The ``OUT.partial`` folder and its ``progress.json``: which bags are done or skipped.

    Opening resumes an unfinished build of the same settings, starts afresh (``overwrite``, or an
    unreadable progress file), or refuses one of other settings (ConfigError naming what differs).
    """

    def __init__(self, partial: pathlib.Path, settings: Dict[str, Any], overwrite: bool, n_bags: int,
                 log: Callable[[str], None]):
        self.partial, self.log, self.n_bags = partial, log, n_bags
        self.state = {'settings': settings, 'done': {}, 'skipped': {}}
        if partial.exists():
            try:
                old = json.loads((partial / PROGRESS).read_text())
            except (OSError, ValueError):
                old = None
            if old is not None and old.get('settings') == settings:
                self.state = old
                if self.state['done']:
                    log(f'resuming {partial}: {len(self.state["done"])} of {n_bags} bags already done')
            elif overwrite or old is None:
                shutil.rmtree(partial)
            else:
                diff = [k for k in settings if settings[k] != old.get('settings', {}).get(k)]
                raise ConfigError(f'{str(partial)!r} is an unfinished build with other settings ({", ".join(diff)} '
                                  'differ); rerun with the same arguments to resume, or pass --overwrite')
        partial.mkdir(parents=True, exist_ok=True)
        self.save()

    def save(self) -> None:
        tmp = self.partial / (PROGRESS + '.tmp')
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.partial / PROGRESS)

    def bag(self, k: int, path: pathlib.Path, name: str, class_names, progress, **sample_args) -> Optional[Dict]:
        """Sample bag ``k`` into its shard and record it as done (its entry) or skipped (None)."""
        shard = f'shard-{k:04d}'
        self.state['skipped'].pop(name, None)
        bag_progress = None
        if progress is not None:
            bag_progress = (lambda frac, text:  # noqa: E731
                            progress((k + frac) / self.n_bags, f'bag {k + 1}/{self.n_bags} {name}: {text}'))
        try:
            entry = _sample_bag(path, name, self.partial / shard, progress=bag_progress, **sample_args)
        except (BagError, DataError) as exc:
            shutil.rmtree(self.partial / shard, ignore_errors=True)
            self.state['skipped'][name] = {'path': str(path), 'error': str(exc)}
            self.save()
            if self.n_bags > 1:  # a single bag's reason is the build's error
                self.log(f'skipped bag {str(path)!r}: {exc}')
            return None
        outside = sorted(set(entry['classes']) - set(class_names)) if class_names else []
        if outside:
            raise ConfigError(f'bag {name!r} has labels {outside} that are not among --classes {list(class_names)}; '
                              'add them, or relabel')
        entry['shard'] = shard
        self.state['done'][name] = entry
        self.save()
        self.log(f"bag {name}: {entry['samples']} samples from {entry['duration_s']:.1f} s "
                 f"({', '.join(f'{s} x{n}' for s, n in entry['modality_sets'].items()) or 'none'}); "
                 f"{entry['unlabelled']} unlabelled, {entry['no_input']} with no live sensor")
        return entry


def _require_samples(partial: pathlib.Path, done: List[Dict[str, Any]], skipped: Mapping[str, Any]) -> None:
    """DataError naming each bag and why, when no bag gave a sample (``partial`` removed when nothing is done)."""
    if any(e['samples'] for e in done):
        return
    reasons = [s['error'] for s in skipped.values()] + [f"bag {e['name']!r}: 0 samples" for e in done]
    if not done:
        shutil.rmtree(partial)  # nothing worth resuming
    raise DataError(reasons[0] if len(reasons) == 1 else f'no samples from any bag: {"; ".join(reasons)}')


def _sample_bag(path: pathlib.Path, name: str, folder: pathlib.Path, *, pre, modalities, shapes, config,
                make_converters, rows, progress) -> Dict[str, Any]:
    with BagSource(path) as bag:  # BagError: missing, corrupt, unknown storage, required topic absent
        mapping, notes = bag.resolve(config.topics)
        duration = max(0.0, (bag.end_ns - bag.start_ns) / 1e9) if bag.message_count else 0.0
        storage = bag.storage
        listing = ', '.join(f"{t} ({v['type']})" for t, v in bag.topics.items()) or 'none'
    if not any(m in mapping for m in modalities):
        raise BagError(f'bag {str(path)!r} has no sensor topics for {"/".join(modalities)} (its topics: {listing}); '
                       'map yours with --topic camera=/your/image_topic')
    labels = None
    if rows is not None:
        labels = LabelTrack(config.replay.label_transition_s)
        for t, label in sorted(rows):
            if not 0 <= t <= duration + 1e-9:
                raise DataError(f'label at t={t} s is outside bag {name!r} (0..{duration:.3f} s since its start)')
            labels.add(t, label)
    elif 'labels' not in mapping:
        raise BagError(f'bag {str(path)!r} has no ground truth: no label topic {config.topics.labels!r} '
                       '(pass --labels /your/label_topic or --labels labels.csv)')
    inputs = SensorInputs(pre, modalities, config.engine.max_age_s, config.engine.min_audio_fill,
                          max_stamp_offset_s=config.engine.max_stamp_offset_s)
    writer = ShardWriter(folder, modalities, shapes)
    try:
        sampler = BagSampler(inputs, config, make_converters, writer, labels=labels, progress=progress)
        result = sampler.drive(path)
    finally:
        writer.close()
    return {'name': name, 'path': str(path), 'fingerprint': _fingerprint(path), 'storage': storage,
            'duration_s': round(duration, 3), 'samples': len(writer), 'ticks': sampler.counts['ticks'],
            'unlabelled': sampler.counts['unlabelled'], 'no_input': sampler.counts['no_input'],
            'modality_sets': dict(sorted(sampler.sets.items(), key=lambda kv: -kv[1])),
            'classes': dict(sorted(sampler.classes.items())), 'mapping': result['mapping'],
            'labels_source': result['labels_source'], 'convert_errors': dict(inputs.errors), 'notes': notes}


def _finish(partial: pathlib.Path, out: pathlib.Path, done: List[Dict[str, Any]], skipped: Mapping[str, Any],
            class_names, settings, shapes, pre, command) -> Dict[str, Any]:
    seen = sorted({c for e in done for c in e['classes']})
    names = list(class_names) if class_names else seen
    outside = sorted(set(seen) - set(names))
    if outside:
        raise DataError(f'labels {outside} are not among --classes {names}; add them or relabel')
    manifest = {
        'format': FORMAT, 'version': VERSION, 'class_names': names, 'modalities': settings['modalities'],
        'preprocess': settings['preprocess'], 'preprocess_hash': preprocess_hash(pre),
        'shapes': {m: list(shapes[m]) for m in settings['modalities']}, 'dtype': 'float16',
        'samples': sum(e['samples'] for e in done),
        'sampling': {'rate_hz': settings['replay']['replay']['rate'],
                     'trigger': settings['replay']['replay']['trigger'],
                     'label_transition_s': settings['replay']['replay']['label_transition_s'],
                     'max_age_s': settings['replay']['engine']['max_age_s'],
                     'health_update_rate': settings['replay']['health']['update_rate']},
        'bags': done, 'skipped': [{'name': n, **s} for n, s in skipped.items()], 'command': command,
    }
    tmp = partial / 'manifest.json.tmp'
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(partial / 'manifest.json')
    (partial / PROGRESS).unlink(missing_ok=True)
    partial.replace(out)
    return manifest
