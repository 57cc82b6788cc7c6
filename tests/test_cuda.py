"""Runs tests/cuda in Numba's CUDA simulator when there is no GPU.

NUMBA_ENABLE_CUDASIM must be set before numba is imported, and this process
imported numba long ago, so the CUDA tests run in a child interpreter. On a
machine with a GPU they run in-process instead and this driver skips.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _gpu_here() -> bool:
    if importlib.util.find_spec("numba_cuda") is None:
        return False
    from numba import cuda

    return cuda.is_available()


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="numba-cuda not installed (the cuda extra)")
def test_cuda_suite_in_simulator():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or _gpu_here():
        pytest.skip("tests/cuda runs in this process")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    tests = Path(__file__).parent / "cuda"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tests)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary
