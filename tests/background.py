"""Tests whose work is a child process compiling on an empty cache run that
work on a thread beside the suite.

Such a child is one core's worth of Numba compilation for tens of seconds,
and the suite in this process mostly compiles on one core too. conftest.py
queues the job of every collected test marked ``@in_background(job)``,
moves those tests to the end of the session and starts the queue once
collection ends. The jobs run one after another, after the children queued
before them (wait_first: tests/prefill.py's, then the CUDA simulator's), so
that no more than two processes compile at once. Each test waits for its
job's result and makes its assertions on it; a job never queued (a test run
on its own) runs when its test asks.

A job is a function without arguments that returns what its test checks; it
makes its own temporary directories.
"""

import threading
from collections.abc import Callable

Job = Callable[[], object]

_LOCK = threading.Lock()
_QUEUE: list = []
_ENTRIES: dict = {}  # job -> (done Event, {"value" | "error": ...})
_BEFORE: list = []  # what the queue waits for before its first job
_STARTED = threading.Event()


def in_background(job: Job):
    """Marks a test whose work is ``job``."""
    def mark(test):
        test.background_job = job
        return test
    return mark


def enqueue(job: Job) -> None:
    with _LOCK:
        if job not in _ENTRIES:
            _ENTRIES[job] = threading.Event(), {}
            _QUEUE.append(job)


def wait_first(wait: Callable[[], object]) -> None:
    """Have the queue call ``wait()`` before its first job (in the order asked)."""
    _BEFORE.append(wait)


def start() -> None:
    """Run the queue on a daemon thread (once)."""
    if (_QUEUE or _BEFORE) and not _STARTED.is_set():
        _STARTED.set()
        threading.Thread(target=_run_queue, name="background-tests", daemon=True).start()


def _run_queue() -> None:
    for wait in _BEFORE:
        try:
            wait()
        except Exception:  # what it waited for reports its own failure
            pass
    while True:
        with _LOCK:
            if not _QUEUE:
                return
            job = _QUEUE.pop(0)
        _run(job)


def _run(job: Job) -> None:
    done, outcome = _ENTRIES[job]
    try:
        outcome["value"] = job()
    except BaseException as error:  # re-raised in the test that asks
        outcome["error"] = error
    done.set()


def result(job: Job, timeout: float = 1800) -> object:
    """``job``'s return value once it has run; its exception re-raised."""
    with _LOCK:
        here = job not in _ENTRIES or (job in _QUEUE and not _STARTED.is_set())
        if here:
            if job in _QUEUE:
                _QUEUE.remove(job)
            _ENTRIES[job] = threading.Event(), {}
    if here:
        _run(job)
    done, outcome = _ENTRIES[job]
    if not done.wait(timeout):
        raise TimeoutError(f"background job {job.__name__} still running after {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
