"""Helpers for tests that spin real rclpy nodes."""
import time


def spin_until(executor, predicate, timeout_s: float, what: str) -> None:
    """Spin ``executor`` until ``predicate()`` is true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
        if predicate():
            return
    raise AssertionError(f'timed out after {timeout_s} s waiting for {what}')
