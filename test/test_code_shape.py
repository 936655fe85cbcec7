"""The function-length rule: no function in sentryfuse_ros/ over 80 lines unless its docstring says why.

A function's length is counted from its first line (decorators included) to its last, less the lines
of its own docstring (explaining why a function is long must not make it longer). A long function
passes when its docstring holds a sentence starting ``Long because`` (e.g. "Long because the three
stages share one loop's state; splitting them would pass eleven locals around."). Nested functions
and methods are checked on their own and named ``Outer.inner``.

``KNOWN_LONG`` lists the offenders of the day; it may only shrink. The test fails when a function
not listed is over the limit, and when a listed one is no longer an offender (split, given its
reason, renamed or deleted): then delete its line.
"""
import ast
import dataclasses
import pathlib
import re
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'sentryfuse_ros'
MAX_LINES = 80  # a function longer than this needs a "Long because ..." sentence in its docstring
REASON = re.compile(r'(?:^|[.!?:;]\s+|\n\s*)Long because\s+\S')  # a sentence that starts "Long because"

# 'path relative to the repository::qualified name' of each function over the limit today, being split.
KNOWN_LONG = frozenset()


@dataclasses.dataclass(frozen=True)
class LongFunction:
    """A function over ``MAX_LINES`` whose docstring gives no reason."""

    where: str  # 'path::Outer.inner'
    lines: int  # its length, docstring excluded


def _docstring_lines(node: ast.AST) -> int:
    """How many lines the function's own docstring spans (0 without one)."""
    body = getattr(node, 'body', [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].end_lineno - body[0].lineno + 1
    return 0


def long_functions(source: str, path: str, max_lines: int = MAX_LINES) -> list:
    """Every function of ``source`` over ``max_lines`` without a "Long because" sentence."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                length = child.end_lineno - first + 1 - _docstring_lines(child)
                if length > max_lines and not REASON.search(ast.get_docstring(child) or ''):
                    found.append(LongFunction(f'{path}::{prefix}{child.name}', length))
                visit(child, f'{prefix}{child.name}.')
            elif isinstance(child, ast.ClassDef):
                visit(child, f'{prefix}{child.name}.')
            else:
                visit(child, prefix)

    visit(ast.parse(source), '')
    return found


def package_long_functions() -> list:
    """``long_functions`` over every module of sentryfuse_ros/."""
    found = []
    for module in sorted(PACKAGE.rglob('*.py')):
        found += long_functions(module.read_text(encoding='utf-8'), module.relative_to(ROOT).as_posix())
    return found


def test_no_new_long_function_without_a_reason():
    found = {f.where: f.lines for f in package_long_functions()}
    new = {where: n for where, n in found.items() if where not in KNOWN_LONG}
    assert not new, (f'functions over {MAX_LINES} lines whose docstring has no "Long because ..." sentence '
                     f'(split them at their seams, or say why they are long): {new}')


def test_known_long_list_only_names_current_offenders():
    found = {f.where for f in package_long_functions()}
    gone = sorted(KNOWN_LONG - found)
    assert not gone, f'no longer over {MAX_LINES} lines without a reason: delete from KNOWN_LONG: {gone}'


def _function(name: str, body_lines: int, docstring: str = '', indent: str = '') -> str:
    doc = f'{indent}    """{docstring}"""\n' if docstring else ''
    body = ''.join(f'{indent}    x{i} = {i}\n' for i in range(body_lines))
    return f'{indent}def {name}():\n{doc}{body}'


def test_checker_flags_a_synthetic_long_function():
    source = _function('long_one', 90, 'Does many things.')
    assert long_functions(source, 'x.py') == [LongFunction('x.py::long_one', 91)]


def test_checker_accepts_a_long_function_that_says_why():
    doc = 'Does many things.\n\n    Long because the steps share one state; split, they would pass it all around.\n    '
    assert long_functions(_function('long_one', 90, doc), 'x.py') == []


def test_checker_ignores_a_passing_mention_of_the_words():
    doc = 'It is not that long because it is fast.'  # mid-sentence: no reason given
    assert [f.where for f in long_functions(_function('long_one', 90, doc), 'x.py')] == ['x.py::long_one']


def test_checker_does_not_count_the_docstring_and_allows_the_limit():
    doc = 'Many lines.\n' + 'more words\n' * 40
    assert long_functions(_function('at_limit', 79, doc), 'x.py') == []  # 80 lines of code


def test_checker_names_methods_and_nested_functions():
    source = 'class Driver:\n' + _function('drive', 85, indent='    ') + textwrap.indent(
        _function('inner', 82), '        ')
    assert [f.where for f in long_functions(source, 'y.py')] == ['y.py::Driver.drive', 'y.py::Driver.drive.inner']
