"""Process-wide Numba settings: where (or whether) compiled kernels cache,
applied before any kernel is defined, and the threading layer the bench's
own parallel loops ask for."""

import functools
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numba


def configure_threading() -> None:
    """Numba's workqueue layer for the bench's own parallel loops: the OpenMP
    layer keeps its threads spinning after a parallel region, and on few
    cores they spin against NumPy's BLAS threads and the peers' (measured:
    8.0 ms instead of 0.79 ms for benchmark shape S1, when the layers ran on
    it). The workqueue layer sleeps instead. An explicit user choice wins."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def _writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` (made if missing). A real
    attempt, not os.access: root passes os.access on a read-only mount."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _numba_user_cache() -> Path:
    from numba.misc.appdirs import AppDirs

    return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)


def configure_cache() -> bool:
    """Whether kernels may use Numba's on-disk cache, choosing a directory Numba
    can write. Numba itself writes next to the sources, else to the user's
    cache directory, and raises at import when neither is writable (a read-only
    container or serverless image). Then kernels cache under the temporary
    directory instead; where even that is read-only they run uncached, with
    one warning. NUMBA_CACHE_DIR, when writable, always wins."""
    if numba.config.CACHE_DIR:
        if _writable(Path(numba.config.CACHE_DIR)):
            return True
    elif _writable(Path(__file__).parent / "cpu" / "__pycache__") or _writable(
            _numba_user_cache()):
        return True
    try:
        fallback = Path(tempfile.gettempdir()) / f"numba_lstm-cache-{os.getuid()}"
    except OSError:  # gettempdir() raises where no candidate is writable
        fallback = None
    if fallback is not None and _writable(fallback):
        numba.config.CACHE_DIR = str(fallback)
        return True
    warnings.warn("numba_lstm: no writable directory for Numba's cache (the package, the user "
                  "cache, NUMBA_CACHE_DIR and the temporary directory are read-only): kernels "
                  "run uncached, so every process compiles them on first use; run "
                  "`numba-lstm compile --cache-dir DIR` at build time and set "
                  "NUMBA_CACHE_DIR=DIR to avoid it", RuntimeWarning, stacklevel=2)
    return False


CACHE = configure_cache()


@functools.cache
def _host_features() -> str:
    """The host's LLVM feature string: asked once (~0.25 ms a query), though
    target_features is read by every kernel module's choice at import."""
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_features().flatten()


def target_features() -> list[str]:
    """The LLVM features ("+avx2", "-amx-tile", ...) of the CPU Numba compiles
    for: NUMBA_CPU_FEATURES, else the host's; none for a CPU named without a
    feature list (kernels then assume no extension past AVX2). Kernels choose
    instructions by these (cpu.simd), so a cache filled on one CPU is not used
    on another (Numba's cache index keys on the CPU's name and features)."""
    features = numba.config.CPU_FEATURES
    if features is None:
        if numba.config.CPU_NAME not in (None, "host"):
            return []
        features = _host_features()
    return features.split(",")


# The AMX features Numba would compile for on a host that has them.
_AMX = ("amx-tile", "amx-int8", "amx-bf16")


def request_amx() -> bool:
    """Ask Linux for the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM,
    XTILEDATA) where the CPU Numba compiles for has AMX; True if granted.
    Without the grant a tile instruction kills the process (SIGILL), so then
    Numba compiles for that CPU without AMX: no kernel of this process uses
    tiles, and the changed feature list keeps its on-disk cache from loading
    code compiled where the grant was given. Kernels pick tiles by the
    compile target's features (cpu.simd), as for every other instruction."""
    features = target_features()
    if "+amx-tile" not in features:
        return False
    granted = False
    if sys.platform == "linux" and platform.machine() == "x86_64":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        sys_arch_prctl, req_xcomp_perm, xfeature_xtiledata = 158, 0x1023, 18
        granted = libc.syscall(sys_arch_prctl, req_xcomp_perm, xfeature_xtiledata) == 0
    if not granted:
        numba.config.CPU_FEATURES = without_amx(features)
    return granted


def without_amx(features: list[str]) -> str:
    """An LLVM feature list (["+avx2", "+amx-tile", ...]) with AMX turned off."""
    return ",".join("-" + f[1:] if f[1:] in _AMX else f for f in features)


AMX_GRANTED = request_amx()
