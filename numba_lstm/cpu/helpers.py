"""Helper threads that join cooperative kernels (numba_lstm.cpu.cooperative).

One daemon thread per core beyond the caller's, started on first use (and
again after a fork, which keeps no threads). ``offer`` hands every helper the
same kernel call and returns at once: the kernels are written so that a
helper that is busy, late or missing only means less help, never a wrong
result or a wait.
"""

from __future__ import annotations

import os
import queue
import threading

import numba


class Helpers:
    def __init__(self) -> None:
        self._pid: int | None = None
        self._queues: list[queue.SimpleQueue] = []
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self._running())

    def _running(self) -> list[queue.SimpleQueue]:
        """The helpers' job queues, starting the threads in a new process."""
        if self._pid != os.getpid():
            self._start()
        return self._queues

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._queues = []
            for _ in range(numba.config.NUMBA_NUM_THREADS - 1):
                jobs: queue.SimpleQueue = queue.SimpleQueue()
                threading.Thread(target=_serve, args=(jobs,), daemon=True,
                                 name="numba_lstm-helper").start()
                self._queues.append(jobs)
            self._pid = os.getpid()

    def offer(self, kernel, *args) -> None:
        """Helper i calls ``kernel(*args, i + 1)`` when it is free."""
        for i, jobs in enumerate(self._running()):
            jobs.put((kernel, args + (i + 1,)))


def _serve(jobs: queue.SimpleQueue) -> None:
    while True:
        kernel, args = jobs.get()
        try:
            kernel(*args)
        except Exception:  # noqa: BLE001
            # The caller runs the same call and raises the same error itself;
            # a helper must outlive it to help the next call.
            pass


HELPERS = Helpers()
