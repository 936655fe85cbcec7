"""The ``slow`` marker: registered, carried by every test that spins nodes or needs an export, and
never so wide that ``make test-fast`` (``-m "not slow"``) stops covering the core and the conversions.

Read from the test modules' source with ast, so this check costs no collection of the suite.
"""
import ast
import pathlib

TEST = pathlib.Path(__file__).resolve().parent
# fixtures that start ROS (a context per test: nodes spin over DDS) or export ONNX graphs (~1 min once)
SLOW_FIXTURES = {'ros_context', 'exported'}
BUILTIN_MARKS = {'parametrize', 'skip', 'skipif', 'xfail', 'usefixtures', 'filterwarnings'}


def _marks(decorators) -> set:
    """Names X of ``pytest.mark.X`` (called or not) among decorators or a ``pytestmark`` value."""
    names = set()
    for node in decorators:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute) \
                    and sub.value.attr == 'mark':
                names.add(sub.attr)
    return names


def module_tests(path: pathlib.Path):
    """(name, marks, fixture arguments) of each module-level test function, module marks included."""
    tree = ast.parse(path.read_text(encoding='utf-8'))
    module_marks = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', '') == 'pytestmark' for t in node.targets):
            module_marks |= _marks([node.value])
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith('test_'):
            yield node.name, module_marks | _marks(node.decorator_list), {a.arg for a in node.args.args}


def all_tests():
    return {(path, name): (marks, args) for path in sorted(TEST.rglob('test_*.py'))
            for name, marks, args in module_tests(path)}


def test_slow_is_registered(pytestconfig):
    assert any(line.startswith('slow:') for line in pytestconfig.getini('markers'))


def test_every_mark_used_is_registered_or_builtin(pytestconfig):
    registered = {line.split(':')[0].split('(')[0] for line in pytestconfig.getini('markers')}
    unknown = {f'{path.relative_to(TEST)}::{name}: {mark}' for (path, name), (marks, _) in all_tests().items()
               for mark in marks - registered - BUILTIN_MARKS}
    assert not unknown, f'unregistered marks (a typo deselects nothing): {sorted(unknown)}'


def test_tests_that_spin_nodes_or_export_are_slow():
    missing = sorted(f'{path.relative_to(TEST)}::{name}' for (path, name), (marks, args) in all_tests().items()
                     if args & SLOW_FIXTURES and 'slow' not in marks)
    assert not missing, f'use {sorted(SLOW_FIXTURES)} but lack @pytest.mark.slow: {missing}'


def test_fast_selection_covers_every_core_package_and_the_conversions():
    tests = all_tests()
    fast = {(path, name) for (path, name), (marks, _) in tests.items() if 'slow' not in marks}
    fast_dirs = {path.parent for path, _ in fast}
    core_packages = {p for p in (TEST / 'core').iterdir() if p.is_dir() and any(p.glob('test_*.py'))}
    assert core_packages and core_packages <= fast_dirs, \
        f'test/core packages without a fast test: {sorted(str(p) for p in core_packages - fast_dirs)}'
    for conversions in ('test_msg_arrays.py', 'test_msg_arrays_fuzz.py'):
        assert any(path.name == conversions for path, _ in fast), f'{conversions} has no fast test'
    core = [key for key in tests if (TEST / 'core') in key[0].parents]
    core_fast = [key for key in core if key in fast]
    assert len(core_fast) >= 0.8 * len(core), f'only {len(core_fast)} of {len(core)} core tests are fast'


def test_the_checks_see_a_slow_mark_and_a_missing_one(tmp_path):
    module = tmp_path / 'test_example.py'
    module.write_text('import pytest\n\n@pytest.mark.slow\ndef test_a(ros_context):\n    pass\n\n\n'
                      'def test_b(exported):\n    pass\n')
    seen = {name: (marks, args) for name, marks, args in module_tests(module)}
    assert seen == {'test_a': ({'slow'}, {'ros_context'}), 'test_b': (set(), {'exported'})}
    module.write_text('import pytest\n\npytestmark = [pytest.mark.slow]\n\n\ndef test_c():\n    pass\n')
    assert [marks for _, marks, _ in module_tests(module)] == [{'slow'}]
