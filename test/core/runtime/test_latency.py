"""LatencyStats: rolling window per stage, percentiles against numpy on the window."""
import numpy as np
import pytest

from sentryfuse_ros.core.runtime.latency import LatencyStats


@pytest.mark.parametrize('window, n', [(1, 5), (5, 3), (10, 25), (200, 200)])
def test_percentiles_over_the_last_window(window, n):
    stats = LatencyStats(window)
    rng = np.random.default_rng(window + n)
    a, b = rng.exponential(5.0, n), rng.uniform(0, 1, n)
    for x, y in zip(a, b):
        stats.add(total_ms=x, inference_ms=y)
    rows = stats.percentiles((50, 95, 99))
    assert set(rows) == {'total_ms', 'inference_ms'}
    for name, values in (('total_ms', a), ('inference_ms', b)):
        kept = values[-window:]
        assert rows[name]['n'] == len(kept) == min(window, n)
        for q in (50, 95, 99):
            assert rows[name][f'p{q}'] == pytest.approx(np.percentile(kept, q))
    assert len(stats) == min(window, n)


def test_stages_are_independent_and_empty_stats_are_empty():
    stats = LatencyStats(3)
    assert stats.percentiles() == {} and len(stats) == 0
    for v in (1, 2, 3, 4):
        stats.add(convert_ms=v)
    stats.add(inference_ms=10)
    rows = stats.percentiles((50,))
    assert rows['convert_ms'] == {'p50': 3.0, 'n': 3}   # 1 fell out of the window
    assert rows['inference_ms'] == {'p50': 10.0, 'n': 1}
    assert len(stats) == 3


def test_values_are_stored_as_float():
    stats = LatencyStats(2)
    stats.add(total_ms=np.float32(1.5))
    stats.add(total_ms=2)
    assert stats.percentiles((50, 100))['total_ms'] == {'p50': 1.75, 'p100': 2.0, 'n': 2}
