"""Shared fixtures. Tests that spin ROS nodes use ``ros_context`` (own DDS domain per test)."""
import itertools
import os
import pathlib

import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / 'shared' / 'data'
_domain_ids = itertools.count(os.getpid() % 50)


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
    domain = 100 + (next(_domain_ids) % 100)
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

    from sentryfuse_ros.core.training.checkpoint import load_sentryfuse
    torch.set_num_threads(1)
    model, gate, _meta = load_sentryfuse(checkpoint)
    return model, gate
