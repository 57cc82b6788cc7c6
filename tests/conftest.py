import os

import numpy as np
import pytest
from hypothesis import settings

# Every test runs the compiled strategy it reaches, compiling it in-process on a
# cold cache: the NumPy strategy a cold process answers with meanwhile would
# make a kernel test compare the reference with itself (cpu.warm; tests of that
# behaviour set the mode themselves). Subprocesses inherit it.
os.environ["NUMBA_LSTM_COLD_START"] = "compile"

settings.register_profile("default", deadline=None, max_examples=40)
settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

try:
    import torch

    torch.set_num_threads(1)  # tiny shapes: threads only add noise and oversubscription
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

TOL = {np.float32: 2e-5, np.float64: 1e-10}  # max |Δ| against torch, docs/index.md


def max_abs_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.max(np.abs(a - b), initial=0.0))


def assert_close(actual, expected, dtype, what=""):
    diff = max_abs_diff(actual, expected)
    assert diff <= TOL[dtype], f"{what}: max|Δ| = {diff:.3g} > {TOL[dtype]:g}"


def pytest_collection_modifyitems(config, items):
    # Child processes that compile run beside the rest of the suite, one at a
    # time: the suite's costliest kernels into its own cache first
    # (tests/prefill.py), then the CUDA simulator suite (tests/test_cuda.py),
    # then the jobs of the tests marked in_background (tests/background.py).
    # Their tests move to the end, so that the suite only waits for them there.
    import background
    import prefill

    if any(item.path.name in prefill.MODULES for item in items):
        background.wait_first(prefill.run)
    # Tests marked prefilled reach the child's kernels before it has them
    # compiled: run last, they load them from the cache instead of compiling
    # them a second time beside it.
    late = [item for item in items if item.get_closest_marker("prefilled")]
    waiting = []
    for item in items:
        if item.name == "test_cuda_suite_in_simulator":
            background.wait_first(item.module.start_simulator_suite)
            background.wait_first(item.module.wait_for_simulator_suite)
            waiting.append(item)
        job = getattr(getattr(item, "function", None), "background_job", None)
        if job is not None:
            background.enqueue(job)
            waiting.append(item)
    items[:] = ([item for item in items if item not in waiting and item not in late]
                + [item for item in late if item not in waiting] + waiting)
    background.start()


@pytest.fixture
def dot_at_any_size(monkeypatch):
    """Quantized layers of any hidden size take the dot layouts where the CPU
    does (by default only from packing.DOT_MIN_HIDDEN, where they pay): the
    tests' small layers then run the dot kernels."""
    from numba_lstm.cpu import packing

    monkeypatch.setattr(packing, "DOT_MIN_HIDDEN", {"int8": 0, "bfloat16": 0})
