"""Rolling latency statistics per stage (p50/p95/p99 over a window)."""
import collections
from typing import Deque, Dict, Iterable

import numpy as np


class LatencyStats:
    """Keeps the last ``window`` samples of each named stage, in milliseconds.

    Args:
        window: number of samples kept per stage.
    """

    def __init__(self, window: int = 200):
        self._window = int(window)
        self._samples: Dict[str, Deque[float]] = {}

    def add(self, **stages_ms: float) -> None:
        for name, value in stages_ms.items():
            self._samples.setdefault(name, collections.deque(maxlen=self._window)).append(float(value))

    def percentiles(self, qs: Iterable[float] = (50, 95)) -> Dict[str, Dict[str, float]]:
        """{stage: {'p50': ms, 'p95': ms, 'n': count}} over the current window."""
        out = {}
        for name, values in self._samples.items():
            arr = np.fromiter(values, dtype=np.float64)
            row = {f'p{int(q)}': float(np.percentile(arr, q)) for q in qs}
            row['n'] = len(arr)
            out[name] = row
        return out

    def __len__(self) -> int:
        return max((len(v) for v in self._samples.values()), default=0)
