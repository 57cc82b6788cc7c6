"""Runs tests/cuda in Numba's CUDA simulator when there is no GPU.

NUMBA_ENABLE_CUDASIM must be set before numba is imported, and this process
imported numba long ago, so the CUDA tests run in a child interpreter. The
child runs on the second core while the rest of the suite compiles on the
first (conftest.py queues it after tests/prefill.py's child, and the
background jobs of tests/background.py follow it): the simulator is pure
Python, and the suite is mostly single-threaded Numba compilation. On a
machine with a GPU they run in-process instead and this driver skips.
"""

import atexit
import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

_RUN: dict = {}
_STARTING = threading.Lock()


def _gpu_here() -> bool:
    if importlib.util.find_spec("numba_cuda") is None:
        return False
    from numba import cuda

    return cuda.is_available()


def _wanted() -> bool:
    return (importlib.util.find_spec("numba_cuda") is not None
            and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and not _gpu_here())


def start_simulator_suite() -> None:
    """Start the child run now (once); the test waits for it."""
    with _STARTING:  # from the background thread or from the test, whichever is first
        if _RUN or not _wanted():
            return
        _start()


def _start() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    tests = Path(__file__).parent / "cuda"
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block it
    _RUN["log"] = log
    _RUN["proc"] = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    atexit.register(_RUN["proc"].kill)  # a session that stops early leaves no child behind


def wait_for_simulator_suite() -> None:
    """Return once the child run (if one was started) has ended."""
    if "proc" in _RUN:
        _RUN["proc"].wait()


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="numba-cuda not installed (the cuda extra)")
def test_cuda_suite_in_simulator():
    if not _wanted():
        pytest.skip("tests/cuda runs in this process")
    start_simulator_suite()
    proc, log = _RUN["proc"], _RUN["log"]
    try:
        code = proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    log.seek(0)
    output = log.read()
    log.close()
    assert code == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary
