"""Every core module imports with rclpy and ROS message packages blocked."""
import pathlib
import subprocess
import sys

import pytest

CORE = pathlib.Path(__file__).resolve().parents[2] / 'sentryfuse_ros' / 'core'

BLOCKER = r'''
import importlib, importlib.abc, pkgutil, sys
BLOCKED = ('rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'builtin_interfaces',
           'rosidl_runtime_py', 'sentryfuse_ros.msg', 'sentryfuse_ros.nodes', 'sentryfuse_ros.msg_arrays')
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCKED):
            raise ImportError(f'core must not import {name}')
sys.meta_path.insert(0, Block())
import sentryfuse_ros.core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, 'sentryfuse_ros.core.')]
for name in names:
    importlib.import_module(name)
print(len(names))
'''


@pytest.mark.slow  # a subprocess that imports every core module
def test_core_modules_import_without_ros():
    out = subprocess.run([sys.executable, '-c', BLOCKER], capture_output=True, text=True,
                         cwd=CORE.parents[1], timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 40  # every module of every subpackage imported


def test_blocker_catches_a_ros_import(tmp_path):
    """The check can fail: a module importing rclpy under the blocker raises."""
    code = BLOCKER.split('import sentryfuse_ros.core')[0] + 'import rclpy\n'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert 'core must not import rclpy' in out.stderr
