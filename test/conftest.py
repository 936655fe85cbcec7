"""Shared fixtures. Tests that spin ROS nodes use ``ros_context`` (own DDS domain per test)."""
import itertools
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / 'shared' / 'data'
# DDS domains for this test process: SENTRYFUSE_TEST_DOMAINS='BASE:COUNT' (default 100:100) lets several
# test runs on one machine (parallel worktrees) use disjoint domain ranges; CI uses the default.
_DOMAIN_BASE, _DOMAIN_COUNT = (int(v) for v in os.environ.get('SENTRYFUSE_TEST_DOMAINS', '100:100').split(':'))
_domain_ids = itertools.count(os.getpid() % 50)


def pytest_configure(config):
    """Register the project's markers (``make test-fast`` deselects ``slow`` with ``-m "not slow"``)."""
    config.addinivalue_line(
        'markers', 'slow: spins ROS nodes or processes, runs the ros2 CLI, the demo, training, DDP or an '
                   'export, or takes over ~3 s here; left out by `make test-fast`')


def domain_for(offset: int = 0) -> int:
    """A DDS domain id inside this run's range (offset picks a fixed one, e.g. for a CLI test)."""
    return _DOMAIN_BASE + (offset % _DOMAIN_COUNT)


@pytest.fixture
def shared_data() -> pathlib.Path:
    """../shared/data, or skip with the reason when a user's machine lacks it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f'real data folder {SHARED_DATA} is absent (CI always has it)')
    return SHARED_DATA


@pytest.fixture
def ros_context():
    """A fresh rclpy Context on its own DDS domain, shut down after the test."""
    rclpy = pytest.importorskip('rclpy')
    context = rclpy.context.Context()
    domain = domain_for(next(_domain_ids))
    rclpy.init(context=context, domain_id=domain)
    try:
        yield context
    finally:
        context.try_shutdown()


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # test helper modules


@pytest.fixture(scope='session')
def checkpoint(tmp_path_factory) -> pathlib.Path:
    """The shipped model, or a tiny one trained once per session (see sentryfuse_checkpoint.py)."""
    from sentryfuse_checkpoint import checkpoint_path
    return checkpoint_path(tmp_path_factory)


@pytest.fixture(scope='module')
def trained(checkpoint):
    """(model, gate) loaded from ``checkpoint``, on CPU, torch at 1 thread."""
    import torch

    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
    torch.set_num_threads(1)
    model, gate, _meta = load_sentryfuse(checkpoint)
    return model, gate
