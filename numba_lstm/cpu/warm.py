"""Cold start: which compiled strategies are ready, and a background process
that compiles the others into Numba's on-disk cache.

With a cold cache the first call of a compiled strategy waits for Numba: 15-25
s on two cores for the team or the panel steps. Instead, a process whose
strategy is not ready answers with the NumPy strategy (cpu.numpy_path) and
starts ``python -m numba_lstm.cpu.warm`` once per strategy: a process of its
own, so its compilation (Python, under that process's GIL) does not slow this
one's Python down. It compiles the strategy for the cell, dtype and weight
format through numba_lstm.precompile and leaves a marker beside the cache;
from the next call on, this process (and every later one) loads the kernels
from the cache and runs them.

A strategy is ready when its marker exists. Markers are named by a
fingerprint of what Numba's cache depends on (the package's source files'
sizes and times, Numba's version, the CPU's name and features), so a new
install or another CPU has none. ``numba-lstm compile`` writes them too.
NUMBA_LSTM_COLD_START=compile turns this off: every call then runs its
compiled strategy, compiling in this process if it must (results the same
bits from the first call on; the NumPy strategy differs from the kernels by
float32 rounding, ~1e-7). Without a writable cache nothing could carry the
kernels over, so this is off too.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

MODE_ENV = "NUMBA_LSTM_COLD_START"
MODES = ("background", "compile")
# A lock older than this belongs to a warm-up that died: start another.
STALE_LOCK_SECONDS = 600.0
_FAMILIES = {"lstm": "lstm", "gru": "gru", "rnn_tanh": "rnn", "rnn_relu": "rnn",
             "layernorm_lstm": "layernorm"}


def mode() -> str:
    value = os.environ.get(MODE_ENV, "background")
    if value not in MODES:
        raise ValueError(f"{MODE_ENV}={value!r}; choose from {', '.join(MODES)}")
    return value


def key_of(strategy: str, layers) -> tuple[str, str, str, str]:
    """(strategy, family, dtype, weights): what a warm-up compiles."""
    layer = layers[0]
    dtype = layer.w_hh.dtype.name
    return (strategy, _FAMILIES[layer.cell.name], dtype,
            layer.stored[0] if layer.stored is not None else dtype)


_MARKER_DIRS: dict[str, Path] = {}


def marker_dir() -> Path:
    """Beside the kernels' cache: NUMBA_CACHE_DIR, else where Numba caches this
    package's kernels (its __pycache__, or the user's cache directory). Found
    once per cache directory: the test for a writable one creates a file."""
    import numba

    from .._config import _numba_user_cache, _writable

    cache_dir = numba.config.CACHE_DIR or ""
    if cache_dir not in _MARKER_DIRS:
        if cache_dir:
            found = Path(cache_dir)
        elif _writable(Path(__file__).parent / "__pycache__"):
            found = Path(__file__).parent / "__pycache__"
        else:
            found = _numba_user_cache()
        _MARKER_DIRS[cache_dir] = found / "numba_lstm-ready"
    return _MARKER_DIRS[cache_dir]


_FINGERPRINT: list[str] = []


def fingerprint() -> str:
    """What a cached kernel depends on: each source file's size and time
    (Numba's own test of a cache entry), Numba's and Python's versions, and the
    CPU the kernels are compiled for."""
    if not _FINGERPRINT:
        import numba
        from numba.core.registry import cpu_target

        package = Path(__file__).resolve().parent.parent
        parts = [numba.__version__, sys.version,
                 repr(cpu_target.target_context.codegen().magic_tuple())]
        for path in sorted(package.rglob("*.py")):
            stat = path.stat()
            parts.append(f"{path.relative_to(package)}:{stat.st_size}:{stat.st_mtime_ns}")
        _FINGERPRINT.append(hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16])
    return _FINGERPRINT[0]


def _marker(key: tuple[str, ...]) -> Path:
    return marker_dir() / ("-".join((fingerprint(),) + key))


def mark_ready(key: tuple[str, ...]) -> None:
    """Record that ``key``'s kernels are in the on-disk cache (best effort)."""
    try:
        path = _marker(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        pass


class Warmup:
    """The strategies this process knows to be ready, and its warm-ups."""

    def __init__(self) -> None:
        self._ready: set[tuple[str, ...]] = set()
        self._running: dict[tuple[str, ...], subprocess.Popen | None] = {}
        self._lock = threading.Lock()

    def ready(self, keys) -> bool:
        """Whether every key's compiled strategy should run now; starts a
        warm-up for each that is not ready."""
        all_ready = True
        for key in keys:
            if key not in self._ready and not self._check(key):
                all_ready = False
        return all_ready

    def _check(self, key) -> bool:
        from .._config import CACHE

        if not CACHE or mode() == "compile":
            self._ready.add(key)
            return True
        with self._lock:
            try:
                if _marker(key).exists():
                    self._ready.add(key)
                    return True
                return not self._warming(key)
            except OSError:  # no place for markers: compile here, as without warm-ups
                self._ready.add(key)
                return True

    def _warming(self, key) -> bool:
        """True while a warm-up for key runs (started here if none is); False
        once one has failed: the caller then compiles in-process."""
        lock = _marker(key).with_suffix(".lock")
        proc = self._running.get(key, ())
        if proc == ():  # none started by this process
            if not _take(lock):
                if _fresh(lock):
                    self._running[key] = None  # another process's warm-up
                    return True
                lock.unlink(missing_ok=True)
                if not _take(lock):
                    self._running[key] = None
                    return True
            self._running[key] = _start(key, lock)
            return True
        if proc is None:  # another process's: wait for its marker, or its lock to go stale
            if _fresh(lock):
                return True
            self._ready.add(key)
            return False
        failure = None
        if proc.poll() is None:
            # Running, or finishing (it removes its lock last); stuck once its
            # lock is stale.
            if not lock.exists() or _fresh(lock):
                return True
            proc.kill()
            failure = f"still running after {STALE_LOCK_SECONDS:.0f} s"
        elif proc.returncode != 0:
            failure = f"exit {proc.returncode}"
        if failure is not None:
            warnings.warn(f"numba_lstm: the background compilation of {'/'.join(key)} failed "
                          f"({failure}); compiling in this process instead",
                          RuntimeWarning, stacklevel=4)
        lock.unlink(missing_ok=True)
        self._ready.add(key)
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for this process's warm-ups to finish; True if none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for proc in list(self._running.values()):
            if proc is not None:
                try:
                    proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    return False
        return True


def _take(lock: Path) -> bool:
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _fresh(lock: Path) -> bool:
    """Whether lock exists and is younger than STALE_LOCK_SECONDS."""
    try:
        return time.time() - lock.stat().st_mtime < STALE_LOCK_SECONDS
    except OSError:
        return False


def _start(key: tuple[str, ...], lock: Path) -> subprocess.Popen:
    import numba

    env = dict(os.environ, **{MODE_ENV: "compile"})
    if numba.config.CACHE_DIR:  # also the fallback _config chose, which env does not show
        env["NUMBA_CACHE_DIR"] = str(numba.config.CACHE_DIR)
    # Its own session: it finishes filling the cache if this process exits first.
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(lock), *key],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


WARMUP = Warmup()
# The warm-up process's entry (not ``-m``, which would import this module twice).
_CHILD = "import sys; from numba_lstm.cpu.warm import _main; sys.exit(_main(sys.argv[1:]))"


def _main(argv: list[str]) -> int:
    lock, strategy, family, dtype, weights = argv
    try:
        os.nice(10)  # the process that asked keeps its core first
    except (OSError, AttributeError):  # AttributeError: no nice() (Windows)
        pass
    try:
        from ..precompile import compile

        if weights == dtype:
            compile([dtype], [family], strategies=[strategy])
        else:  # a quantized module's: no float one with it
            compile([], [family], weights=[weights], strategies=[strategy])
    finally:
        Path(lock).unlink(missing_ok=True)
    return 0
