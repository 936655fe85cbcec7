"""core.scenario: loading, validation and playback of scripted sensor dropouts."""
import pathlib

import pytest

from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.sim.scenario import Scenario, ScenarioPlayer, load_scenario

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_demo_scenario_loads_sorted_with_lidar_audio_and_battery_events():
    sc = load_scenario(ROOT / 'config' / 'scenarios' / 'demo.yaml')
    times = [e.t for e in sc.events]
    assert times == sorted(times) and sc.duration > times[-1]
    kinds = {(e.action, e.modality) for e in sc.events}
    assert {('drop', 'lidar'), ('restore', 'lidar'), ('drop', 'audio'), ('battery', '')} <= kinds


def test_player_hands_out_each_event_once_in_order():
    sc = Scenario(events=[{'t': 2.0, 'action': 'restore', 'modality': 'lidar'},
                          {'t': 1.0, 'action': 'drop', 'modality': 'lidar'},
                          {'t': 3, 'action': 'battery', 'value': 0.2}])
    player = ScenarioPlayer(sc)
    assert player.advance(0.5) == []
    assert [e.action for e in player.advance(2.0)] == ['drop', 'restore']
    assert player.advance(2.5) == [] and not player.done
    assert [e.value for e in player.advance(10.0)] == [0.2] and player.done


@pytest.mark.parametrize('text, match', [
    ('events: [{t: 1.0, action: explode}]', r"action='explode': expected one of"),
    ('events: [{t: -1.0, action: drop, modality: lidar}]', r't=-1.0: expected a time >= 0'),
    ('events: [{t: 1.0, action: drop, modality: radar}]', r"modality='radar'"),
    ('events: [{t: 1.0, action: battery, value: 1.5}]', r'value=1.5: expected a battery fraction'),
    ('events: [{t: 1.0, action: label}]', r"label='': expected a class name"),
    ('events: [{t: 1.0, action: drop, modality: lidar, when: 3}]', r"events\[0\]: unknown key\(s\) \['when'\]"),
    ('durations: 3', r"unknown key\(s\) \['durations'\]"),
    ('events: [{t: 1.0', r'is not valid YAML'),
])
def test_scenario_errors_name_the_file_and_key(tmp_path, text, match):
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_scenario(path)


def test_missing_scenario_file(tmp_path):
    with pytest.raises(ConfigError, match=r"scenario file '.*nope.yaml' does not exist"):
        load_scenario(tmp_path / 'nope.yaml')
