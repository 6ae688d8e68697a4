"""Latency of repeated calls: warm-up, then median/p90/mean/min in milliseconds."""

from __future__ import annotations

import time
from collections.abc import Callable


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed; statistics in ms."""
    import numpy as np

    for _ in range(warmup):
        fn()
    t = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        t[i] = time.perf_counter() - t0
    ms = t * 1e3
    return {"median": round(float(np.median(ms)), 4), "p90": round(float(np.percentile(ms, 90)), 4),
            "mean": round(float(ms.mean()), 4), "min": round(float(ms.min()), 4)}
