"""Process-wide Numba settings numba_lstm needs, applied before any kernel runs."""

import os

import numba


def configure_threading() -> None:
    # Numba's OpenMP layer keeps its threads spinning after a parallel region;
    # interleaved with NumPy's BLAS threads on few cores the two spin against
    # each other (measured: 8.0 ms instead of 0.79 ms for benchmark shape S1). The
    # workqueue layer sleeps instead. An explicit user choice always wins.
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"
