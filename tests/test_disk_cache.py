"""Numba's on-disk cache as users meet it: the package imported as a user's
script imports it (from outside the checkout: the installed copy), compiled
code written to a cache directory the package does not own (NUMBA_CACHE_DIR,
as for a read-only site-packages), and several processes compiling into that
empty directory at once."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from background import in_background, result

from numba_lstm import reference

# Each process: a 2-layer LSTM on a 5-step sequence (the per-layer kernels) and
# one streaming step (the one-call stack kernel), then what its cache-enabled
# dispatchers loaded from the cache (hits) and compiled because it was not
# there (misses).
_FIRST_CALLS = """
import json, sys
import numpy as np
import numba_lstm as nl
from numba.core.dispatcher import Dispatcher

case = dict(np.load(sys.argv[1]))
x = case.pop("x")
m = nl.LSTM(4, 8, 2)
m.load_state_dict(case)
out, _ = m(x)
step = m.stream()(x[:1])
hits = misses = 0
for name, module in list(sys.modules.items()):
    if name.startswith("numba_lstm"):
        for obj in vars(module).values():
            if isinstance(obj, Dispatcher) and obj.signatures:
                hits += sum(obj.stats.cache_hits.values())
                misses += sum(obj.stats.cache_misses.values())
print(json.dumps({"out": out.tolist(), "step": step.tolist(), "hits": hits, "misses": misses,
                  "package": nl.__file__}))
"""


def _start(case, cache_dir, cwd):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    env.pop("PYTHONPATH", None)  # the installed numba_lstm, as a user's script gets it
    return subprocess.Popen([sys.executable, "-c", _FIRST_CALLS, str(case)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(process):
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def _case(path):
    """A 2-layer LSTM's torch-named parameters (I=4, H=8) and x (5, 1, 4), saved
    to path; returns them."""
    rng = np.random.default_rng(0)
    case = {}
    for k in range(2):
        case[f"weight_ih_l{k}"] = rng.uniform(-0.5, 0.5, (32, 4 if k == 0 else 8))
        case[f"weight_hh_l{k}"] = rng.uniform(-0.5, 0.5, (32, 8))
        case[f"bias_ih_l{k}"] = rng.uniform(-0.5, 0.5, 32)
        case[f"bias_hh_l{k}"] = rng.uniform(-0.5, 0.5, 32)
    case["x"] = rng.standard_normal((5, 1, 4))
    case = {k: v.astype(np.float32) for k, v in case.items()}
    np.savez(path, **case)
    return case


def _shared_cache_runs():
    """Three processes compiling into one empty cache at once, then a fourth:
    the case and their reports."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache_dir, work = tmp / "numba-cache", tmp / "elsewhere"
        work.mkdir()
        case = _case(tmp / "case.npz")
        cold = [_result(p) for p in [_start(tmp / "case.npz", cache_dir, work)
                                     for _ in range(3)]]
        warm = _result(_start(tmp / "case.npz", cache_dir, work))
    return case, cold, warm


@in_background(_shared_cache_runs)
def test_installed_package_fills_a_shared_cache_from_several_processes():
    params, cold, warm = result(_shared_cache_runs)
    params = dict(params)
    x = params.pop("x").astype(np.float64)
    params = {k: v.astype(np.float64) for k, v in params.items()}

    out, _ = reference.lstm(x, params, num_layers=2)
    step, _ = reference.lstm(x[:1], params, num_layers=2)
    for run in cold + [warm]:
        np.testing.assert_allclose(run["out"], out, rtol=0, atol=2e-5)
        np.testing.assert_allclose(run["step"], step, rtol=0, atol=2e-5)
        assert run["out"] == cold[0]["out"] and run["step"] == cold[0]["step"]
    assert sum(run["misses"] for run in cold) > 0  # the three compiled into the empty cache
    # Whatever the three wrote at once, the fourth process loads all of it.
    assert warm["misses"] == 0 and warm["hits"] > 0, warm


# The threaded paths whose fresh and cached code differed before the kernels
# spelled out their FMAs: the per-layer kernel split by direction (B=2,
# bidirectional, projection, with lengths) and the panel-GEMM steps (B=16) in
# float32, the thread team (B=1, H=64) in float64. Prints each output's bytes
# as hex.
_THREADED_PATHS = """
import json
import numpy as np
import numba_lstm as nl

rng = np.random.default_rng(0)
results = {}
for name, batch, hidden, bidirectional, proj, dtype in [
        ("layer", 2, 8, True, 3, "float32"), ("gemm", 16, 8, False, 0, "float32"),
        ("team", 1, 64, False, 0, "float64")]:
    m = nl.LSTM(5, hidden, 2, bidirectional=bidirectional, proj_size=proj, dtype=dtype)
    m.load_state_dict({k: rng.uniform(-0.5, 0.5, v.shape) for k, v in m.state_dict().items()})
    x = rng.standard_normal((7, batch, 5))
    lengths = np.arange(7, 7 - batch, -1) if batch <= 7 else None
    results[name] = m(x, lengths=lengths)[0].tobytes().hex()
print(json.dumps(results))
"""


def _fresh_then_cached():
    """_THREADED_PATHS' outputs from a process compiling into an empty cache,
    then from one loading that cache."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(tmp) / "numba-cache"))
        runs = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", _THREADED_PATHS], env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


# Not in_background: the background queue is a cold suite's critical path
# (docs/performance.md, "Stop 43"), so this job runs in its test's place, its
# child beside the prefill child.
def test_cached_kernels_compute_the_same_bits_as_fresh_ones():
    # Numba optimises a parallel kernel's body twice: alone, as the compiling
    # process runs it, and inside the library that it writes to the cache. With
    # LLVM free to contract a * b + c into an FMA, the two copies differed in the
    # last bit (1.5e-8 at float32), so a process that compiled and one that read
    # the cache disagreed. The kernels spell their FMAs out; this holds them to it.
    fresh, cached = result(_fresh_then_cached)
    different = [name for name in fresh if fresh[name] != cached[name]]
    assert not different, f"cached kernels differ from fresh ones on {different}"
