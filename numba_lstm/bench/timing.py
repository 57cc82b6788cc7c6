"""Medians of interleaved samples: every runner is sampled once per round, so a
burst of load from a neighbour on this shared machine hits all of them alike.

Before each sample the process idles briefly (SETTLE_SECONDS): torch's OpenMP
and ONNX Runtime's pool threads keep spinning after a call, and on two cores a
runner sampled right after a peer otherwise shares the CPU with the peer's idle
spin (measured: S1 0.7 ms alone, 1.9 ms 50 ms after an ONNX Runtime sample).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

SETTLE_SECONDS = 0.25


def _sample(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def calls_per_sample(fn: Callable[[], object], min_seconds: float) -> int:
    """How many back-to-back calls make one sample last at least ``min_seconds``."""
    number = 1
    while True:
        seconds = _sample(fn, number) * number
        if seconds >= min_seconds or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * min_seconds / max(seconds, 1e-9) * 1.2))


def interleaved_medians(runners: dict[str, Callable[[], object]], rounds: int,
                        min_seconds: float) -> dict[str, float]:
    """Median seconds per call of each runner, after a warm-up call each."""
    for fn in runners.values():
        fn()
    numbers = {name: calls_per_sample(fn, min_seconds) for name, fn in runners.items()}
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            time.sleep(SETTLE_SECONDS)
            samples[name].append(_sample(fn, numbers[name]))
    return {name: float(np.median(s)) for name, s in samples.items()}


def matmul_gflops(size: int = 1024, rounds: int = 7) -> float:
    """This machine's NumPy float32 matmul rate (default BLAS threads), GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    seconds = min(_sample(lambda: np.matmul(a, b, out=out), 3) for _ in range(rounds))
    return 2 * size ** 3 / seconds / 1e9
