"""The graph's ros__parameters YAML (config/perception.yaml) read without ROS, plus overlays and --set.

One file holds every node's section (``<node name>: {ros__parameters: ...}``, ``/**`` for all nodes);
`sentryfuse run`, the demo (base + model overlay), the offline and live replays and
`sentryfuse dataset` read it through :func:`graph_parameters`. Every name is checked against the
node's schema (core/runtime/params.py): an unknown parameter is an error naming it, never ignored.
"""
import pathlib
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import yaml

from sentryfuse_ros.core.config import read_yaml
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.runtime import params

Params = Dict[str, Dict[str, Any]]  # {node name: {dotted parameter name: value}}


def config_dir() -> pathlib.Path:
    """config/ of the source checkout, else of the installed package share."""
    candidates = [pathlib.Path(__file__).resolve().parents[3] / 'config']
    try:
        from ament_index_python.packages import get_package_share_directory  # noqa: PLC0415
        candidates.append(pathlib.Path(get_package_share_directory('sentryfuse_ros')) / 'config')
    except Exception:  # noqa: BLE001  (no ament index: a pip install of the core)
        pass
    for path in candidates:
        if (path / 'perception.yaml').is_file():
            return path
    raise ConfigError(f'no parameters file found; looked at {[str(p / "perception.yaml") for p in candidates]}')


def default_params_file() -> pathlib.Path:
    """config/perception.yaml, the one YAML of the graph."""
    return config_dir() / 'perception.yaml'


def _flatten(data: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + '.'))
        else:
            out[name] = value
    return out


def load_parameters(path) -> Params:
    """{node name: {dotted parameter name: value}} from a ros__parameters YAML file.
    A `/**` section applies to every node (its own section wins); leading '/' is dropped."""
    path = pathlib.Path(path)
    data = read_yaml(path, 'parameters file')
    if not isinstance(data, Mapping):
        raise ConfigError(f'parameters file {str(path)!r}: expected a mapping of node names')
    out = {}
    for node, section in data.items():
        if not isinstance(section, Mapping) or not isinstance(section.get('ros__parameters'), Mapping):
            raise ConfigError(f'parameters file {str(path)!r}: section {node!r} has no '
                              "'ros__parameters' mapping")
        out[str(node).lstrip('/')] = _flatten(section['ros__parameters'])
    return out


def parse_sets(items: Iterable[str]) -> Params:
    """`node.param=value` strings (value parsed as YAML) -> {node: {param: value}}."""
    out: Params = {}
    for item in items:
        key, sep, raw = item.partition('=')
        node, dot, param = key.strip().partition('.')
        if not sep or not dot or not node or not param:
            raise ConfigError(f'--set {item!r}: expected node.param=value, e.g. '
                              'health_monitor.camera.timeout=0.5')
        out.setdefault(node, {})[param] = yaml.safe_load(raw) if raw.strip() else ''
    return out


def merge(base: Mapping[str, Mapping[str, Any]], *layers: Mapping[str, Mapping[str, Any]]) -> Params:
    """``base`` with each layer's values on top (per node, per parameter)."""
    out = {node: dict(values) for node, values in base.items()}
    for layer in layers:
        for node, values in layer.items():
            out.setdefault(node, {}).update(values)
    return out


def node_parameters(all_params: Mapping[str, Mapping[str, Any]], name: str) -> Dict[str, Any]:
    """The parameters of node ``name``: the `**` section, then its own section."""
    merged = dict(all_params.get('**', {}))
    merged.update(all_params.get(name, {}))
    return merged


def check_known(all_params: Mapping[str, Mapping[str, Any]], nodes: Sequence[str], where: str) -> None:
    """ConfigError naming each node or parameter of ``all_params`` that the graph's schemas lack."""
    unknown_nodes = sorted(set(all_params) - set(nodes) - {'**'})
    if unknown_nodes:
        raise ConfigError(f'{where} names node(s) {unknown_nodes}; this graph has {sorted(nodes)}')
    for node in (n for n in nodes if n in params.NODES):
        own = node_parameters(all_params, node)
        names = set(all_params.get(node, {}))  # `**` may hold parameters of other nodes
        try:
            params.check_known(params.node_schema(node, own), names, node)
        except ConfigError as exc:
            raise ConfigError(f'{where}: {exc}') from exc


def graph_parameters(params_file=None, overlays: Sequence = (), sets: Iterable[str] = (),
                     nodes: Optional[Sequence[str]] = None) -> Params:
    """The graph's parameters: ``params_file`` (default config/perception.yaml), each overlay file, then
    the `node.param=value` strings; unknown nodes and parameters refused, naming them."""
    nodes = tuple(nodes or params.NODES)
    path = pathlib.Path(params_file) if params_file else default_params_file()
    out = load_parameters(path)
    check_known(out, nodes, str(path))
    for overlay in overlays:
        layer = load_parameters(overlay)
        check_known(layer, nodes, str(overlay))
        out = merge(out, layer)
    extra = parse_sets(sets)
    check_known(extra, nodes, '--set')
    return merge(out, extra)


def node_values(all_params: Mapping[str, Mapping[str, Any]], node: str) -> Dict[str, Any]:
    """Every parameter of ``node``: its schema defaults, then the given values (schema-checked)."""
    own = node_parameters(all_params, node)
    schema = params.node_schema(node, own)
    return {**params.defaults(schema), **params.check_values(schema, own)}
