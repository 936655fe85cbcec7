"""core/runtime/params.py: the one parameter schema per node, its checks, its generated docs, and every
entry point following a changed default (launch arguments, `sentryfuse run`'s parameters, offline and
live replay, `sentryfuse dataset`). The nodes' declared defaults and `ros2 param set` are in
test/nodes/test_common.py and test/test_ros2_launch.py."""
import argparse
import dataclasses
import math
import pathlib
import subprocess
import sys

import pytest

from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.runtime import param_configs, param_files, params, params_doc
from sentryfuse_ros.core.runtime.choice import PRECISIONS

ROOT = pathlib.Path(__file__).resolve().parents[3]


def spec(schema, name):
    return params.by_name(schema)[name]


@pytest.mark.parametrize('name, value, match', [
    ('health_timeout', math.inf, r'health_timeout=inf: expected a finite number in \(0, 3600\]'),
    ('health_timeout', math.nan, r'health_timeout=nan: expected a finite number'),
    ('health_timeout', 0.0, r'health_timeout=0.0: expected a finite number in \(0, 3600\]'),
    ('rate', True, r'rate=True: expected a finite number'),
    ('rate', '10', r"rate='10': expected a finite number"),
    ('device', 'tpu', r"device='tpu': expected a string in \['cpu', 'cuda'\]"),
    ('stats_window', 2.0, r'stats_window=2.0: expected an integer in \[1, 1e\+06\]'),
    ('budget_levels', [1.0, 0.0], r'budget_levels=\[1.0, 0.0\]: expected a list of float in \(0, 1\]'),
    ('budget_levels', [], r'budget_levels=\[\]: expected a list of float in \(0, 1\], not empty'),
    ('camera.topic', '', r"camera.topic='': expected a string, not empty"),
])
def test_check_value_refuses_naming_the_value(name, value, match):
    with pytest.raises(ConfigError, match=match):
        params.check_value(spec(params.PERCEPTION, name), value)


def test_check_value_widens_ints_and_keeps_valid_values():
    assert params.check_value(spec(params.PERCEPTION, 'rate'), 5) == 5.0
    assert params.check_value(spec(params.PERCEPTION, 'budget_levels'), (1, 0.5)) == [1.0, 0.5]
    assert params.check_value(spec(params.SENSOR_SIM, 'streams'), ['lidar']) == ['lidar']
    with pytest.raises(ConfigError, match=r"streams=\['sonar'\]: expected a list of str among"):
        params.check_value(spec(params.SENSOR_SIM, 'streams'), ['sonar'])


def test_precision_choices_are_the_runtime_constant():
    assert spec(params.PERCEPTION, 'precision').choices == PRECISIONS


def test_settable_parameters_are_the_ones_a_node_applies():
    settable = {node: sorted(s.name for s in params.node_schema(node) if not (s.read_only or s.unconfigured_only))
                for node in params.NODES}
    assert settable['perception'] == ['audio.max_age', 'camera.max_age', 'diagnostics_period', 'health_timeout',
                                      'lidar.max_age', 'rate']
    # what configure reads to load the model: settable while the lifecycle node is unconfigured
    assert sorted(params.UNCONFIGURED_ONLY) == ['backend', 'device', 'model_path', 'onnx_dir', 'precision',
                                                'runtime_fallback']
    assert not any(spec(params.PERCEPTION, name).read_only for name in params.UNCONFIGURED_ONLY)
    assert not any(s.unconfigured_only for node in ('health_monitor', 'sensor_sim') for s in params.node_schema(node))
    assert 'compute_budget_override' in settable['health_monitor'] and 'camera.timeout' in settable['health_monitor']
    assert 'update_rate' not in settable['health_monitor'] and settable['sensor_sim'] == []


def test_health_monitor_schema_follows_its_modalities():
    names = [s.name for s in params.node_schema('health_monitor', {'modalities': ['camera', 'thermal']})]
    assert 'thermal.topic' in names and 'lidar.topic' not in names
    assert params.defaults(params.health_monitor_schema(('thermal',)))['thermal.topic'] == '/thermal'


def test_unknown_parameters_and_nodes_are_refused_naming_them():
    with pytest.raises(ConfigError, match=r"--set: perception has no parameter\(s\) \['nonexistent'\]"):
        param_files.graph_parameters(None, (), ['perception.nonexistent=3'])
    with pytest.raises(ConfigError, match=r"--set names node\(s\) \['percepton'\]"):
        param_files.graph_parameters(None, (), ['percepton.rate=3.0'])


@pytest.mark.slow  # a process importing rclpy and torch
def test_sentryfuse_run_refuses_an_unknown_parameter():
    out = subprocess.run([sys.executable, '-m', 'sentryfuse_ros.cli', 'run', '--set', 'perception.nonexistent=3',
                          '--duration', '1'], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "perception has no parameter(s) ['nonexistent']" in out.stderr, out.stderr


def test_docs_parameters_md_is_current():
    path = ROOT / 'docs' / 'parameters.md'
    assert path.read_text(encoding='utf-8') == params_doc.render(), (
        'docs/parameters.md is stale: python -m sentryfuse_ros.core.runtime.params_doc > docs/parameters.md')


def test_default_topic_and_budget_levels_are_written_once():
    """In the code, the launch file, config/ and scripts/: the topic in core/data/topics.py only, the
    budget levels in core/pruning/budget.py only (the schema, the cache and the export import them)."""
    out = subprocess.run(['grep', '-rln', "'/camera/image_raw'", 'sentryfuse_ros', 'launch', 'config', 'scripts'],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ['sentryfuse_ros/core/data/topics.py'], out.stdout
    out = subprocess.run(['grep', '-rlE', r'1\.0, 0\.85, 0\.7, 0\.5, 0\.4', 'sentryfuse_ros', 'launch', 'config',
                          'scripts'], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ['sentryfuse_ros/core/pruning/budget.py'], out.stdout


def test_replay_yaml_repeats_no_graph_value(tmp_path):
    import yaml

    from sentryfuse_ros.core.replay.replay import load_replay_config
    data = yaml.safe_load((ROOT / 'config' / 'replay.yaml').read_text(encoding='utf-8'))
    assert set(data) == {'topics', 'replay'} and not {'rate', 'trigger', 'device'} & set(data['replay'])
    bad = tmp_path / 'replay.yaml'
    bad.write_text('health: {update_rate: 5.0}\n', encoding='utf-8')
    with pytest.raises(ConfigError, match=r"\['health'\] come from the graph's parameters"):
        load_replay_config(bad)


@pytest.fixture()
def changed_defaults(monkeypatch):
    """The schema with perception's camera.max_age, rate and camera topic and the health monitor's
    camera.timeout changed: what every entry point must follow."""
    changed = {'camera.max_age': 0.9, 'rate': 7.0, 'camera.topic': '/cam/changed'}
    monkeypatch.setattr(params, 'PERCEPTION', tuple(
        dataclasses.replace(s, default=changed.get(s.name, s.default)) for s in params.PERCEPTION))
    monkeypatch.setitem(params.MONITOR_DEFAULTS, 'camera', {**params.MONITOR_DEFAULTS['camera'], 'timeout': 0.45})
    return changed


def replay_args(**kw):
    base = dict(config=None, topic=[], labels=None, infer_rate=None, trigger=None, checkpoint=None, budget=None,
                drop=[], battery_profile=None, params=None, ignore_health=False)
    return argparse.Namespace(**{**base, **kw})


def test_every_entry_point_follows_a_changed_schema_default(changed_defaults):
    from sentryfuse_ros.commands.dataset import dataset_inputs
    from sentryfuse_ros.commands.replay import build_inputs
    from sentryfuse_ros.core.replay.replay import ReplayConfig
    # the launch file's arguments (test_launch.py checks the file declares exactly these)
    assert params.launch_arguments()['camera_topic'][0] == '/cam/changed'
    # `sentryfuse run` / demo: the graph's parameters per node (test/nodes: the nodes declare these defaults)
    graph = param_files.graph_parameters()
    perception = param_files.node_values(graph, 'perception')
    monitor = param_files.node_values(graph, 'health_monitor')
    assert (perception['camera.max_age'], perception['rate'], monitor['camera.timeout']) == (0.9, 7.0, 0.45)
    # offline replay (`sentryfuse replay`) and `sentryfuse dataset`
    config, _faults, _labels = build_inputs(replay_args())
    data_config, _labels = dataset_inputs(argparse.Namespace(replay_config=None, topic=[], labels=None, rate=None,
                                                             params=None))
    for c in (config, data_config, ReplayConfig()):
        assert c.engine.max_age_s[0] == 0.9 and c.health.camera.timeout == 0.45
    assert config.replay.rate == 7.0
    assert param_configs.engine_config({}).max_age_s[0] == 0.9
    # the live replay's node parameters: test/apps/test_replay_live.py
