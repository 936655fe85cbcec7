"""Scripted scenarios for the simulated robot: sensor dropouts, recoveries, battery levels.

YAML form (times in seconds since the simulation started)::

    duration: 60.0
    events:
      - {t: 10.0, action: drop, modality: lidar}
      - {t: 20.0, action: restore, modality: lidar}
      - {t: 30.0, action: battery, value: 0.2}
      - {t: 40.0, action: label, label: person}

``drop``/``restore`` take a modality (camera, lidar, audio, or battery: a dropped battery
goes silent); ``battery`` sets the state of charge (0..1), which keeps draining from there;
``label`` sets the ground-truth class the scene source shows.
"""
import dataclasses
import math
import pathlib
from typing import List


from sentryfuse_ros.core.config import check, from_dict, read_yaml
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.data.preprocess import MODALITIES

ACTIONS = ('drop', 'restore', 'battery', 'label')
DROPPABLE = MODALITIES + ('battery',)


@dataclasses.dataclass(frozen=True)
class ScenarioEvent:
    t: float                  # [s] since the simulation started, >= 0
    action: str               # one of ACTIONS
    modality: str = ''        # drop/restore: one of DROPPABLE
    value: float = math.nan   # battery: state of charge in [0, 1]
    label: str = ''           # label: class name

    def __post_init__(self):
        check(isinstance(self.t, (int, float)) and not isinstance(self.t, bool)
              and math.isfinite(self.t) and self.t >= 0, 't', self.t, 'a time >= 0 [s]')
        check(self.action in ACTIONS, 'action', self.action, f'one of {list(ACTIONS)}')
        if self.action in ('drop', 'restore'):
            check(self.modality in DROPPABLE, 'modality', self.modality, f'one of {list(DROPPABLE)}')
        if self.action == 'battery':
            check(isinstance(self.value, (int, float)) and 0.0 <= self.value <= 1.0, 'value',
                  self.value, 'a battery fraction in [0, 1]')
        if self.action == 'label':
            check(isinstance(self.label, str) and bool(self.label), 'label', self.label, 'a class name')


@dataclasses.dataclass(frozen=True)
class Scenario:
    events: tuple = ()        # ScenarioEvent, sorted by t on construction
    duration: float = 0.0     # [s] suggested run length; 0 = open-ended

    def __post_init__(self):
        events = []
        for i, e in enumerate(self.events):
            if isinstance(e, dict):
                e = from_dict(ScenarioEvent, e, where=f'events[{i}]')
            check(isinstance(e, ScenarioEvent), f'events[{i}]', e, 'a mapping with t and action')
            events.append(e)
        check(isinstance(self.duration, (int, float)) and self.duration >= 0, 'duration',
              self.duration, 'a time >= 0 [s]')
        object.__setattr__(self, 'events', tuple(sorted(events, key=lambda e: e.t)))


def load_scenario(path) -> Scenario:
    """Read a scenario YAML file; ConfigError names the file and the bad key."""
    path = pathlib.Path(path)
    data = read_yaml(path, 'scenario file')
    try:
        return from_dict(Scenario, data, where='scenario')
    except ConfigError as exc:
        raise ConfigError(f'scenario file {str(path)!r}: {exc}') from exc


class ScenarioPlayer:
    """Hands out each event once, when the simulation time passes it.

    Args:
        scenario: the script.
    """

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self._next = 0

    def advance(self, t: float) -> List[ScenarioEvent]:
        """Events with time <= ``t`` not handed out yet, in time order."""
        events = self.scenario.events
        start = self._next
        while self._next < len(events) and events[self._next].t <= t:
            self._next += 1
        return list(events[start:self._next])

    @property
    def done(self) -> bool:
        return self._next >= len(self.scenario.events)
