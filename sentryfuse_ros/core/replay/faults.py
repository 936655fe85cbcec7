"""What a replay adds to a bag: fault injection (drop windows, battery profile, fixed budget)
and ground truth (label topic or CSV)."""
import csv
import dataclasses
import math
import pathlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from sentryfuse_ros.core.bags.reader import SENSOR_MODALITIES
from sentryfuse_ros.core.errors import BagError, ConfigError
from sentryfuse_ros.core.pruning.budget import check_budget


@dataclasses.dataclass(frozen=True)
class DropWindow:
    modality: str   # camera | lidar | audio | battery
    start: float    # [s] since bag start, inclusive
    end: float      # [s] since bag start, exclusive

    def covers(self, t: float) -> bool:
        return self.start <= t < self.end


def parse_drop(text: str) -> DropWindow:
    """'lidar@12:22' -> DropWindow('lidar', 12, 22) (seconds since bag start; END may be 'end')."""
    modality, sep, span = str(text).partition('@')
    start, sep2, end = span.partition(':')
    allowed = SENSOR_MODALITIES + ('battery',)
    try:
        window = DropWindow(modality, float(start), math.inf if end.strip() == 'end' else float(end))
    except ValueError:
        window = None
    if not sep or not sep2 or window is None:
        raise ConfigError(f'--drop {text!r}: expected MODALITY@START:END in seconds since bag start, '
                          f'e.g. lidar@12:22')
    if modality not in allowed:
        raise ConfigError(f'--drop {text!r}: modality {modality!r} is not one of {list(allowed)}')
    if not 0 <= window.start < window.end:
        raise ConfigError(f'--drop {text!r}: expected 0 <= START < END')
    return window


def load_battery_profile(path) -> Tuple[Tuple[float, float], ...]:
    """(t [s since bag start], fraction in [0, 1]) rows from a CSV (header t,percentage) or a YAML
    list of [t, fraction] pairs; times strictly increasing."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except OSError as exc:
        raise ConfigError(f'battery profile {str(path)!r} cannot be read: {exc}') from exc
    rows: List[Sequence[Any]]
    if path.suffix.lower() == '.csv':
        reader = list(csv.reader(line for line in text.splitlines() if line.strip()))
        if not reader or [c.strip() for c in reader[0]] != ['t', 'percentage']:
            raise ConfigError(f'battery profile {str(path)!r}: expected a CSV header "t,percentage", '
                              f'got {",".join(reader[0]) if reader else "an empty file"!r}')
        rows = reader[1:]
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f'battery profile {str(path)!r} is not valid YAML: {exc}') from exc
        rows = data if isinstance(data, list) else None
        if rows is None:
            raise ConfigError(f'battery profile {str(path)!r}: expected a list of [t, fraction] pairs')
    out: List[Tuple[float, float]] = []
    for i, row in enumerate(rows):
        try:
            t, value = (float(v) for v in row)
        except (TypeError, ValueError):
            raise ConfigError(f'battery profile {str(path)!r} row {i + 1} {row!r}: expected t, fraction') \
                from None
        if not (0.0 <= value <= 1.0) or t < 0 or (out and t <= out[-1][0]):
            raise ConfigError(f'battery profile {str(path)!r} row {i + 1} {row!r}: expected t >= 0 '
                              f'increasing and a fraction in [0, 1]')
        out.append((t, value))
    if not out:
        raise ConfigError(f'battery profile {str(path)!r} has no rows')
    return tuple(out)


def profile_at(profile: Sequence[Tuple[float, float]], t: float) -> float:
    """The profile's fraction at ``t``: linear between points, held before the first and after the last."""
    if t <= profile[0][0]:
        return profile[0][1]
    for (t0, v0), (t1, v1) in zip(profile, profile[1:]):
        if t < t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return profile[-1][1]


@dataclasses.dataclass(frozen=True)
class Faults:
    drops: Tuple[DropWindow, ...] = ()                     # messages removed in these windows
    battery_profile: Tuple[Tuple[float, float], ...] = ()  # replaces the bag's battery when set
    budget: Optional[float] = None                         # None = off; else a fixed compute budget in (0, 1]

    def __post_init__(self):
        if self.budget is not None:
            object.__setattr__(self, 'budget', check_budget(self.budget, '--budget'))

    def dropped(self, modality: str, t: float) -> bool:
        return any(w.modality == modality and w.covers(t) for w in self.drops)


class LabelTrack:
    """Ground-truth labels over bag time; ``truth(t)`` is None near a change (transition)."""

    def __init__(self, transition_s: float = 1.0):
        self.transition_s = float(transition_s)
        self.times: List[float] = []
        self.labels: List[str] = []
        self._changes: List[float] = []

    def add(self, t: float, label: str) -> None:
        if self.labels and t < self.times[-1]:
            raise BagError(f'label at t={t:.3f}s is before the previous one ({self.times[-1]:.3f}s)')
        if not self.labels or label != self.labels[-1]:
            self._changes.append(t)
        self.times.append(float(t))
        self.labels.append(str(label))

    def __len__(self) -> int:
        return len(self.labels)

    def truth(self, t: float) -> Optional[str]:
        """The label in force at ``t``, or None before the first or within the transition time."""
        import bisect  # noqa: PLC0415
        i = bisect.bisect_right(self.times, t) - 1
        if i < 0:
            return None
        j = bisect.bisect_right(self._changes, t) - 1
        if j > 0 and t - self._changes[j] < self.transition_s:
            return None
        return self.labels[i]


def load_label_csv(path, class_names: Sequence[str], duration_s: float,
                   transition_s: float = 1.0) -> LabelTrack:
    """A LabelTrack from a CSV with header ``t,label`` (t in seconds since bag start).

    Raises ConfigError when the file does not match the bag and model: unknown class names,
    times outside [0, duration], or none at all.
    """
    path = pathlib.Path(path)
    try:
        lines = [line for line in path.read_text(encoding='utf-8').splitlines() if line.strip()]
    except OSError as exc:
        raise ConfigError(f'label file {str(path)!r} cannot be read: {exc}') from exc
    rows = list(csv.reader(lines))
    if not rows or [c.strip() for c in rows[0]] != ['t', 'label']:
        raise ConfigError(f'label file {str(path)!r}: expected a CSV header "t,label", '
                          f'got {",".join(rows[0]) if rows else "an empty file"!r}')
    track = LabelTrack(transition_s)
    unknown = set()
    for i, row in enumerate(rows[1:], start=2):
        try:
            t, label = float(row[0]), row[1].strip()
        except (IndexError, ValueError):
            raise ConfigError(f'label file {str(path)!r} line {i} {row!r}: expected t,label') from None
        if not 0 <= t <= duration_s + 1e-9:
            raise ConfigError(f'label file {str(path)!r} line {i}: t={t} is outside the bag '
                              f'(0..{duration_s:.3f} s since its start)')
        if label not in class_names:
            unknown.add(label)
        track.add(t, label)
    if unknown:
        raise ConfigError(f'label file {str(path)!r} names classes {sorted(unknown)} the model does not '
                          f'know; its classes: {list(class_names)}')
    if not len(track):
        raise ConfigError(f'label file {str(path)!r} has no labels')
    return track


def faults_dict(faults: Faults) -> Dict[str, Any]:
    return {'drops': [{'modality': w.modality, 'start': w.start,
                       'end': None if math.isinf(w.end) else w.end} for w in faults.drops],
            'battery_profile': [list(p) for p in faults.battery_profile],
            'budget': faults.budget or None}
