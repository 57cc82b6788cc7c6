"""A team of threads that run one jitted job together, without launches or locks.

The caller is thread 0; one helper thread per further core waits for jobs in
nogil jitted code (``cooperative.SERVE``, a loop per job kind). A job is
published through ``ctrl``, a small shared int64 array: the caller writes a
descriptor (kind, sizes, array addresses) into ``ctrl[DESC:]``, opens the job,
works on it itself, closes it, and waits until no helper is still inside.
Joining therefore costs a cache-line transfer (~0.1 µs), not a thread wake-up
(60-200 µs measured on these VMs) nor a Python dispatch.

After a job, helpers wait for the next one for a bounded time
(NUMBA_LSTM_SPIN_US, default 1000 µs, at least MIN_SPIN_US so that a woken
helper finds the job it was woken for) and then sleep until a job wakes them,
as OpenMP and ONNX Runtime pools do. The first PURE_SPINS checks spin on the
CPU (a back-to-back call is joined in ~0.1 µs); later ones call sched_yield,
so that another runnable thread, such as a BLAS worker the user's next NumPy
call starts, gets the core at once instead of fighting a spinning helper. Jobs are
written so that a helper that is asleep, late or missing only means less
help: work is claimed block by block, and the caller takes what nobody claimed.

ctrl layout (int64, each counter on its own 64-byte line):
  ctrl[GEN]     job generation, odd while a job is open
  ctrl[ACTIVE]  helpers inside the open job
  ctrl[DESC:]   the open job's descriptor: its kind in ctrl[KIND], the rest
                belongs to the job (sizes, and array addresses that view() reads)
"""

from __future__ import annotations

import os
import threading
import time

import numba
import numpy as np
from numba import carray, njit

from .._config import CACHE
from .atomics import address_as_voidptr, fetch_add, load_acquire, spin_pause, yield_cpu

GEN = 0
ACTIVE = 8
DESC = 16
KIND = DESC
CTRL_SIZE = DESC + 64
MIN_SPIN_US = 50.0
PURE_SPINS = 256  # ~10-40 µs of PAUSE loops

_FLAGS = dict(cache=CACHE, nogil=True)


@njit(**_FLAGS)
def open_job(ctrl):
    """Publish the descriptor written in ctrl[DESC:]: helpers may join from now on."""
    fetch_add(ctrl, GEN, 1)


@njit(**_FLAGS)
def close_job(ctrl):
    """No helper joins from now on; returns once none is still inside."""
    fetch_add(ctrl, GEN, 1)
    # A seq_cst read-modify-write, not a plain load: it must be ordered after the
    # GEN increment, against a helper's ACTIVE increment then GEN read (enter_job).
    while fetch_add(ctrl, ACTIVE, 0) != 0:
        spin_pause()


@njit(inline="always", **_FLAGS)
def wait_for_job(ctrl, last_gen, spin_limit):
    """Spin until a job other than last_gen is open: its generation, or -1 after
    spin_limit idle iterations."""
    for i in range(spin_limit):
        gen = load_acquire(ctrl, GEN)
        if gen % 2 == 1 and gen != last_gen:
            return gen
        if i < PURE_SPINS:
            spin_pause()
        else:
            yield_cpu()
    return -1


@njit(inline="always", **_FLAGS)
def enter_job(ctrl, gen):
    """True if this helper is now inside job gen (leave_job must follow); False if
    it closed meanwhile."""
    fetch_add(ctrl, ACTIVE, 1)
    if fetch_add(ctrl, GEN, 0) == gen:
        return True
    fetch_add(ctrl, ACTIVE, -1)
    return False


@njit(inline="always", **_FLAGS)
def leave_job(ctrl):
    fetch_add(ctrl, ACTIVE, -1)


@njit(inline="always", **_FLAGS)
def view(ctrl, slot, shape, dtype):
    """The C-contiguous array of ``shape`` and ``dtype`` whose address the
    descriptor holds in ctrl[slot]. It owns no memory, so slicing it in a loop
    costs no atomic reference counting."""
    return carray(address_as_voidptr(ctrl[slot]), shape, dtype)


@njit(inline="always", **_FLAGS)
def serve(ctrl, spin_limit, tid, kind, join):
    """A job kind's loop. A helper (tid > 0) joins every job of ``kind``
    opened on ctrl through ``join(ctrl, tid)``; it returns 0 after spin_limit
    idle iterations, or the kind of an open job of another kind (it then
    switches loops, Team._helper). The caller (tid 0) opens the job it
    described on ctrl, does its share and closes it. Every thread runs the
    same machine code, so a task's numbers do not depend on which thread
    computed it."""
    gen = -1
    while True:
        if tid == 0:
            open_job(ctrl)
        else:
            gen = wait_for_job(ctrl, gen, spin_limit)
            if gen < 0:
                return 0
            if ctrl[KIND] != kind:
                return ctrl[KIND]
            if not enter_job(ctrl, gen):
                continue
        join(ctrl, tid)
        if tid == 0:
            close_job(ctrl)
            return 0
        leave_job(ctrl)


@njit(**_FLAGS)
def _idle_spin(ctrl, n):
    return wait_for_job(ctrl, -1, n)


def _spin_iterations(microseconds: float) -> int:
    """How many idle iterations of wait_for_job last ``microseconds`` on an
    otherwise idle core (with other threads runnable, the yields last longer,
    which costs this core nothing)."""
    quiet = np.zeros(CTRL_SIZE, np.int64)
    n = PURE_SPINS + 2000
    _idle_spin(quiet, 10)
    start = time.perf_counter()
    _idle_spin(quiet, n)
    per_iteration = max((time.perf_counter() - start) / n, 1e-9)
    return max(PURE_SPINS, int(microseconds * 1e-6 / per_iteration))


class Team:
    """The shared ctrl array and the helper threads serving it.

    ``serve[kind](ctrl, spin_limit, thread_id)`` are the jitted helper
    loops, one per job kind (a nonzero int); each returns 0 after spin_limit
    idle iterations, or the kind of an open job of another kind (the helper
    then switches loops). The team starts after the first job in a process (again after a
    fork, which keeps no threads): that job runs alone. A loop is compiled (or
    loaded from Numba's cache) by the calling thread before the first job of its
    kind is posted, because the caller runs its own share through the same loop
    (cooperative.stack_team), which Numba compiles before it runs. Compiling
    it in a helper instead made the next ~10 s of a cold-cache process crawl:
    Numba compiles under the GIL, and the demo's Python loop got it every 5 ms
    (153 instead of ~4,300 characters/s).
    """

    def __init__(self, serve: dict, spin_us: float | None = None) -> None:
        self._serve = dict(serve)  # register() adds kinds
        self._spin_us = float(os.environ.get("NUMBA_LSTM_SPIN_US", 1000)
                              if spin_us is None else spin_us)
        self._lock = threading.Lock()  # one open job at a time
        self._start_lock = threading.Lock()
        self._pid: int | None = None
        self._wake: list[threading.Event] = []
        self._asleep: list[bool] = []
        self._sleep_lock = threading.Lock()  # a helper's going to sleep against acquire()'s check
        self._ready: list[threading.Event] = []
        self._spin_limit = 0
        self.ctrl = np.zeros(CTRL_SIZE, np.int64)

    @property
    def size(self) -> int:
        """Threads a job may use: the caller and the helpers."""
        return numba.config.NUMBA_NUM_THREADS

    def register(self, kind: int, loop) -> None:
        """Add a job kind's loop (a jitted serve(ctrl, spin_limit, tid))."""
        self._serve.setdefault(kind, loop)

    def _start(self, kind: int) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._spin_limit = _spin_iterations(max(self._spin_us, MIN_SPIN_US))
            self.ctrl = np.zeros(CTRL_SIZE, np.int64)
            self._lock = threading.Lock()  # a fork may have copied it held
            self._sleep_lock = threading.Lock()
            self._wake = [threading.Event() for _ in range(self.size - 1)]
            self._ready = [threading.Event() for _ in range(self.size - 1)]
            self._asleep = [False] * (self.size - 1)
            for i in range(self.size - 1):
                threading.Thread(target=self._helper, args=(i, kind), daemon=True,
                                 name=f"numba_lstm-team-{i + 1}").start()
            self._pid = os.getpid()

    def _helper(self, i: int, kind: int) -> None:
        ctrl = self.ctrl
        self._ready[i].set()
        while True:
            other = self._serve[kind](ctrl, self._spin_limit, i + 1)
            if other:  # compiled by the caller that posted it (see the class docstring)
                kind = other
                continue
            # A helper whose spin ran out while a caller holds the team (between
            # acquire() and release()) was seen awake and not woken: it serves on
            # instead of missing that job (LSTM B = 12 two-direction calls ran a
            # direction in three on the caller alone: a ~1 ms gap between calls,
            # the spin's length).
            with self._sleep_lock:
                if self._lock.locked():
                    continue
                self._asleep[i] = True
            self._wake[i].wait()
            self._wake[i].clear()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until every helper thread is running; True if they are."""
        return all(ready.wait(timeout) for ready in self._ready)

    def acquire(self) -> np.ndarray:
        """The ctrl array for one job, helpers awake. A private
        ctrl that no helper watches, on which the job runs on the calling thread
        alone, when another thread's job holds the team or the helpers have not
        started. Pair with release()."""
        if self._pid != os.getpid() or not self._lock.acquire(blocking=False):
            return np.zeros(CTRL_SIZE, np.int64)
        with self._sleep_lock:
            for i, asleep in enumerate(self._asleep):
                if asleep:
                    self._asleep[i] = False
                    self._wake[i].set()
        return self.ctrl

    def release(self, ctrl: np.ndarray, kind: int) -> None:
        if ctrl is self.ctrl:
            self._lock.release()
        elif self._pid != os.getpid():
            self._start(kind)
