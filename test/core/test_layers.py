"""The core's subpackages import only the layers below them (no cycles, the design stays visible)."""
import ast
import pathlib

import pytest

CORE = pathlib.Path(__file__).resolve().parents[2] / 'sentryfuse_ros' / 'core'

# subpackage -> core subpackages it may import (errors and config are open to all)
ALLOWED = {
    'data': set(),
    'bags': {'data'},
    'model': {'data'},
    'pruning': {'data', 'model'},
    'training': {'data', 'model', 'pruning'},
    'runtime': {'data', 'model', 'pruning'},
    'eval': {'data', 'model', 'pruning', 'training', 'runtime'},
    'sim': {'data', 'bags'},
    'replay': {'data', 'bags', 'model', 'pruning', 'training', 'runtime', 'sim'},
    'bench': {'data', 'model', 'pruning', 'training'},
}
OPEN = {'errors', 'config', 'limits'}


def core_imports(path: pathlib.Path):
    """Top-level core names (subpackage or module) that one source file imports."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split('.')
            if parts[:2] == ['sentryfuse_ros', 'core']:
                if len(parts) > 2:
                    yield parts[2]
                else:
                    yield from (a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split('.')
                if parts[:2] == ['sentryfuse_ros', 'core'] and len(parts) > 2:
                    yield parts[2]


def violations(core: pathlib.Path):
    out = []
    for pkg, allowed in ALLOWED.items():
        for path in sorted((core / pkg).glob('*.py')):
            for name in core_imports(path):
                if name not in allowed | OPEN | {pkg}:
                    out.append(f'{pkg}/{path.name} imports core.{name}')
    return out


def test_every_subpackage_is_known():
    found = {p.name for p in CORE.iterdir() if p.is_dir() and (p / '__init__.py').exists()}
    assert found == set(ALLOWED)


def test_core_layers_are_respected():
    assert violations(CORE) == []


def test_layer_check_can_fail(tmp_path):
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'x.py').write_text('from sentryfuse_ros.core.model.backbone import SentryFuseModel\n')
    for pkg in ALLOWED:
        (tmp_path / pkg).mkdir(exist_ok=True)
    assert violations(tmp_path) == ['data/x.py imports core.model']


@pytest.mark.parametrize('pkg', sorted(ALLOWED))
def test_subpackage_says_what_lives_there(pkg):
    doc = ast.get_docstring(ast.parse((CORE / pkg / '__init__.py').read_text()))
    assert doc and 'May import' in doc
