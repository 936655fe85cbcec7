"""graph: parameters YAML per node, --set overrides, and the one-process runner."""
import pathlib
import time

import pytest

from sentryfuse_ros.apps import graph
from sentryfuse_ros.core.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'config' / 'perception.yaml'


def test_load_parameters_flattens_nested_keys_and_applies_wildcard(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters: {use_sim_time: true, qos: reliable}\n'
                    '/health_monitor:\n  ros__parameters:\n    qos: sensor_data\n    camera: {timeout: 0.5}\n')
    params = graph.load_parameters(path)
    assert params['health_monitor'] == {'qos': 'sensor_data', 'camera.timeout': 0.5}
    assert graph.node_parameters(params, 'health_monitor') == {
        'use_sim_time': True, 'qos': 'sensor_data', 'camera.timeout': 0.5}
    assert graph.node_parameters(params, 'sensor_sim') == {'use_sim_time': True, 'qos': 'reliable'}


@pytest.mark.parametrize('text, match', [
    ('health_monitor: {qos: reliable}', r"section 'health_monitor' has no 'ros__parameters'"),
    ('[1, 2]', r'expected a mapping of node names'),
    ('a: [', r'is not valid YAML'),
])
def test_load_parameters_errors(tmp_path, text, match):
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        graph.load_parameters(path)


def test_parse_sets():
    assert graph.parse_sets(['health_monitor.camera.timeout=0.5', 'sensor_sim.streams=[camera]',
                             'sensor_sim.scenario=']) == {
        'health_monitor': {'camera.timeout': 0.5}, 'sensor_sim': {'streams': ['camera'], 'scenario': ''}}
    with pytest.raises(ConfigError, match=r"--set 'timeout=3': expected node.param=value"):
        graph.parse_sets(['timeout=3'])


def test_to_parameters_makes_mixed_number_lists_float():
    (p,) = graph.to_parameters({'budget_levels': [1, 0.5, 0]})
    assert p.value == [1.0, 0.5, 0.0]
    with pytest.raises(ConfigError, match=r"parameter x=\{'a': 1\}"):
        graph.to_parameters({'x': {'a': 1}})


@pytest.mark.slow
def test_config_builds_the_graph_with_valid_parameters(ros_context):
    params = graph.load_parameters(CONFIG)
    nodes = graph.build_graph(graph.GRAPH, params, use_sim=True, context=ros_context)
    try:
        by_name = {n.get_name(): n for n in nodes}
        assert set(by_name) == {'health_monitor', 'perception', 'sensor_sim'}
        assert by_name['health_monitor']._param_errors == []
        assert by_name['perception']._param_errors == []
        for name, node in by_name.items():
            undeclared = [k for k in params[name] if not node.has_parameter(k)]
            assert undeclared == [], f'{name}: YAML keys the node does not declare'
        assert by_name['sensor_sim']._player.scenario.events  # demo scenario found
    finally:
        for node in nodes:
            node.destroy_node()
    no_sim = graph.build_graph(graph.GRAPH, params, use_sim=False, context=ros_context)
    assert [n.get_name() for n in no_sim] == ['health_monitor', 'perception']
    for node in no_sim:
        node.destroy_node()


@pytest.mark.slow
def test_run_graph_stops_after_duration():
    lines = []
    start = time.monotonic()
    rc = graph.run_graph(params_file=CONFIG, use_sim=True, duration=1.0, log=lines.append,
                         sets=['health_monitor.update_rate=20.0'], domain_id=231)
    assert rc == 0 and 1.0 <= time.monotonic() - start < 10.0
    assert "['health_monitor', 'perception', 'sensor_sim']" in lines[0]
    with pytest.raises(ConfigError, match=r"--set names node\(s\) \['nope'\]"):
        graph.run_graph(params_file=CONFIG, sets=['nope.x=1'], domain_id=231)
