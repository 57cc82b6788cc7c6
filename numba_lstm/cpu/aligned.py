"""Arrays whose data starts on a 64-byte cache line, for the kernels' streams.

NumPy aligns an array's data to 16 bytes, and Numba's np.empty to 32. An
AVX-512 load of 64 bytes from an address that is not a multiple of 64 spans two
cache lines, and the kernels load every weight that way. Measured on one core,
weights 16 bytes off a line against on one: cpu.row_step's loop (weights in
L2) 10.7 against 7.0 ns a k-step; the 8 x 48 GEMM tile at S7's step 63
against 71 GFLOP/s. Where NumPy's allocations happen to fall changes from one
array to the next, so misaligned weights also made a process's speed a lottery.
The kernels' own buffers (a row's bytes for the tiles, sums) are allocated
inside jitted code, where Numba puts data 0 or 32 bytes past a line by size:
empty_on_lines is np.empty for them.
"""

import math

import numpy as np
from numba import njit

from .._config import CACHE

CACHE_LINE = 64


@njit(cache=CACHE)
def _address(a):
    return a.ctypes.data  # ~0.5 µs through Numba, against ~2.3 for ndarray.ctypes.data


@njit(inline="always")
def empty_on_lines(rows, cols, dtype):
    """np.empty((rows, cols), dtype) in jitted code, its data on a cache line
    (the buffer has CACHE_LINE items to spare: at least a line's bytes)."""
    n = rows * cols
    buf = np.empty(n + CACHE_LINE, dtype)
    skip = -buf.ctypes.data % CACHE_LINE // buf.itemsize
    return buf[skip:skip + n].reshape((rows, cols))


def aligned_empty(shape, dtype) -> np.ndarray:
    """np.empty(shape, dtype), C-contiguous, its data on a cache line. For
    dtypes of 1, 2, 4, 8 or 16 bytes: the buffer is allocated in the dtype
    itself, so no view is needed, which keeps a call at ~1.5 µs instead of
    ~2.5 (the team allocates its counters on every call)."""
    return _on_a_line(np.empty, shape, dtype)


def aligned_zeros(shape, dtype) -> np.ndarray:
    """np.zeros(shape, dtype), C-contiguous, its data on a cache line."""
    return _on_a_line(np.zeros, shape, dtype)


def _on_a_line(allocate, shape, dtype) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    size = shape if isinstance(shape, int) else math.prod(shape)
    buf = allocate(size + CACHE_LINE // itemsize, dtype)
    # NumPy aligns data to 16 bytes, a multiple of the itemsize: whole items reach a line.
    skip = -_address(buf) % CACHE_LINE // itemsize
    out = buf[skip:skip + size]
    return out if isinstance(shape, int) else out.reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of a, its data on a cache line."""
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out
