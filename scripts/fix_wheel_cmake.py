"""Rewrite the ROS 2 wheels' CMake exports that name the wheel build machine's paths.

The PyPI wheels export targets whose include dirs are
``/opt/python/cp3XX-cp3XX/include/python3.XX`` and
``/opt/python/cp3XX-cp3XX/lib/python3.XX/site-packages/numpy/_core/include``; CMake refuses
to generate while those are missing. This replaces them with this interpreter's include dir
and with a link to this venv's numpy include dir. The link lives outside the source tree
(under ~/.cache/sentryfuse_ros/) because CMake rejects exported include dirs inside the source
dir, where .venv/ is. Idempotent; needs no root.

Usage: python fix_wheel_cmake.py VENV   (prints the numpy include link on stdout)
"""
import hashlib
import os
import pathlib
import re
import sys
import sysconfig

import numpy


def _numpy_include_link(venv: pathlib.Path) -> str:
    """A stable path outside the source tree that points at this venv's numpy headers."""
    cache = pathlib.Path(os.environ.get('XDG_CACHE_HOME') or pathlib.Path.home() / '.cache')
    key = hashlib.sha256(str(venv.resolve()).encode()).hexdigest()[:12]
    link = cache / 'sentryfuse_ros' / key / 'numpy_include'
    link.parent.mkdir(parents=True, exist_ok=True)
    target = pathlib.Path(numpy.get_include())
    if not (link.is_symlink() and pathlib.Path(os.readlink(link)) == target):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    return str(link)


def _has_system_ros() -> bool:
    return bool(os.environ.get('ROS_DISTRO'))


def main(argv: list) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    venv = pathlib.Path(argv[1])
    py_include = sysconfig.get_paths()['include']
    np_include = _numpy_include_link(venv)
    numpy_pat = re.compile(r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include')
    python_pat = re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+')
    changed = 0
    for path in (venv / 'share').glob('*/cmake/*.cmake') if not _has_system_ros() else ():
        text = path.read_text(encoding='utf-8', errors='surrogateescape')
        if '/opt/python/' not in text:
            continue
        new = python_pat.sub(py_include, numpy_pat.sub(np_include, text))
        if new != text:
            path.write_text(new, encoding='utf-8', errors='surrogateescape')
            changed += 1
    print(f'[setup] wheel CMake exports: {changed} file(s) rewritten', file=sys.stderr)
    print(np_include)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
