"""Cold start (numba_lstm.cpu.warm): a process whose compiled strategy is not
in the cache answers with the NumPy strategy and compiles it in a background
process; markers beside the cache say what is ready."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
from background import in_background
from background import result as result_of

from numba_lstm.cpu import warm

KEY = ("axpy", "gru", "float32", "float32")


class FakeWarmup:
    """A stand-in for the background process: poll() is None until finished."""

    def __init__(self, returncode=None):
        self.returncode = returncode

    def poll(self):
        return self.returncode

    def kill(self):
        self.returncode = -9

    def wait(self, timeout=None):
        return self.returncode


@pytest.fixture
def markers(tmp_path, monkeypatch):
    monkeypatch.setenv(warm.MODE_ENV, "background")
    monkeypatch.setattr(warm, "marker_dir", lambda: tmp_path)
    started = []

    def start(key, lock):
        started.append(FakeWarmup())
        return started[-1]

    monkeypatch.setattr(warm, "_start", start)
    return tmp_path, started


def test_a_marked_strategy_is_ready_and_starts_nothing(markers):
    _, started = markers
    warm.mark_ready(KEY)
    assert warm.Warmup().ready([KEY]) and not started


def test_an_unmarked_strategy_warms_up_once_then_is_ready(markers):
    _, started = markers
    warmup = warm.Warmup()
    assert not warmup.ready([KEY]) and len(started) == 1
    assert warm._marker(KEY).with_suffix(".lock").exists()  # other processes wait for it
    assert not warmup.ready([KEY]) and len(started) == 1  # still running: not started again
    warm.mark_ready(KEY)  # what the warm-up process does when it has compiled
    started[0].returncode = 0
    assert warmup.ready([KEY]) and len(started) == 1


def test_a_failed_warm_up_falls_back_to_compiling_in_process(markers):
    _, started = markers
    warmup = warm.Warmup()
    assert not warmup.ready([KEY])
    started[0].returncode = 1
    with pytest.warns(RuntimeWarning, match="failed"):
        assert warmup.ready([KEY])
    assert not warm._marker(KEY).with_suffix(".lock").exists()


def test_a_warm_up_stuck_past_the_stale_age_is_killed_and_compiled_here(markers):
    _, started = markers
    warmup = warm.Warmup()
    assert not warmup.ready([KEY])
    lock = warm._marker(KEY).with_suffix(".lock")
    old = time.time() - warm.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="still running after"):
        assert warmup.ready([KEY])
    assert started[0].returncode == -9 and not lock.exists()


def test_another_process_warming_up_is_waited_for_not_repeated(markers):
    _, started = markers
    lock = warm._marker(KEY).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()  # another process's warm-up holds it
    warmup = warm.Warmup()
    assert not warmup.ready([KEY]) and not started
    lock.unlink()  # it ended without a marker (it failed): compile here
    assert warmup.ready([KEY]) and not started


def test_a_stale_lock_is_taken_over(markers):
    _, started = markers
    lock = warm._marker(KEY).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()
    old = time.time() - warm.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    assert not warm.Warmup().ready([KEY]) and len(started) == 1


def test_compile_mode_never_warms_up(markers, monkeypatch):
    _, started = markers
    monkeypatch.setenv(warm.MODE_ENV, "compile")
    assert warm.Warmup().ready([KEY]) and not started
    monkeypatch.setenv(warm.MODE_ENV, "later")
    with pytest.raises(ValueError, match="NUMBA_LSTM_COLD_START='later'; choose from"):
        warm.Warmup().ready([("panels",) + KEY[1:]])


_COLD_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba.core import event
    import numba_lstm as nl
    from numba_lstm.cells import GRU
    from numba_lstm.cpu import warm
    from numba_lstm.cpu.layer import layer_kernels

    compiles = []
    class Count(event.Listener):
        def on_start(self, ev): compiles.append(ev.data["dispatcher"].py_func.__name__)
        def on_end(self, ev): pass
    event.register("numba:compile", Count())
    gru = nl.GRU(3, 8)
    x = np.random.default_rng(0).standard_normal((4, 1, 3)).astype(np.float32)
    compiles.clear()
    first, _ = gru(x)
    during_first = list(compiles)
    key = warm.key_of("axpy", gru._layers)  # batch 1, one direction: the serial rows
    started = warm.WARMUP._running.get(key) is not None
    done = warm.WARMUP.wait(600)
    second, _ = gru(x)
    serial = layer_kernels(GRU).serial.stats
    print(json.dumps(dict(during_first=during_first, started=started, done=done,
                          marker=warm._marker(key).exists(),
                          diff=float(abs(first - second).max()),
                          hits=len(serial.cache_hits), misses=len(serial.cache_misses))))
""")


def _cold_process():
    """_COLD_PROCESS's run on an empty cache, warming up in the background."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, **{warm.MODE_ENV: "background"})
        return subprocess.run([sys.executable, "-c", _COLD_PROCESS], env=env,
                              capture_output=True, text=True, timeout=900)


@in_background(_cold_process)
def test_a_cold_process_answers_at_once_then_runs_the_kernel_the_warm_up_compiled():
    # A new process on an empty cache: the first call compiles nothing (the
    # NumPy strategy), a background process compiles the GRU's batch-1 layer
    # kernel into the cache, and the call after it loads that kernel.
    result = result_of(_cold_process)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["during_first"] == []  # the first answer compiled nothing
    assert report["started"] and report["done"] and report["marker"]
    assert report["hits"] == 1 and report["misses"] == 0  # loaded, not compiled here
    assert report["diff"] <= 2e-5  # NumPy strategy and kernel: float32 rounding apart
    assert np.isfinite(report["diff"])


def test_a_stream_steps_through_numpy_until_its_kernel_is_ready(monkeypatch):
    # Until the one-step kernel is ready a stream's steps go through forward,
    # which answers with the NumPy strategy; then it takes the stepper.
    import numba_lstm as nl
    from numba_lstm import cpu

    rng = np.random.default_rng(0)
    lstm = nl.LSTM(4, 8, 2)
    steps = rng.standard_normal((6, 1, 4)).astype(np.float32)
    twin = nl.LSTM.from_state_dict(lstm.state_dict())  # its readiness is its own
    expected = [twin.stream()(steps[:t + 1])[-1] for t in range(6)]  # whole prefixes
    ready = {"now": False}
    numpy_calls = []
    monkeypatch.setattr(cpu.WARMUP, "ready", lambda keys: ready["now"])
    real_numpy = cpu.BY_NAME["numpy"].run
    monkeypatch.setattr(cpu, "numpy_forward", lambda *a: numpy_calls.append(1) or real_numpy(*a))
    stream = lstm.stream()
    for t in range(3):
        np.testing.assert_allclose(stream(steps[t]), expected[t], rtol=0, atol=2e-5)
        assert stream._stepper is None
    assert len(numpy_calls) == 3
    ready["now"] = True
    for t in range(3, 6):
        np.testing.assert_allclose(stream(steps[t]), expected[t], rtol=0, atol=2e-5)
    assert stream._stepper is not None and len(numpy_calls) == 3
