"""Large scratch arrays kept from one call to the next (gx, the input
projections of every step).

glibc serves an allocation past its mmap threshold (which it raises to at most
32 MB) with fresh pages every time, and the kernel zeroes each page on first
touch: int8 B = 64, T = 100, H = 512 (52 MB of gx a layer) spent 22.6% of its
samples in the kernel's clear_page_erms, and went from 3.5x S6's time to
twice the batch. A call takes a buffer and gives it back; calls at once (from
several Python threads) each get their own. At most KEEP buffers stay, the
largest; ``release()`` drops them.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .aligned import aligned_empty

# Below this, np.empty's own reuse of freed heap memory serves as well.
POOLED_BYTES = 1 << 20
KEEP = 2  # a layer's gx, and the next layer's while the first is in use

_lock = threading.Lock()
_free: list[np.ndarray] = []  # 1-D uint8 buffers on a cache line, smallest first
_lent: dict[int, np.ndarray] = {}  # the buffers take() handed out, by data address


def take(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of shape and dtype on a cache line:
    a view of a kept buffer where one is large enough, else new. Hand it back
    with give() once no kernel reads it."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes < POOLED_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        i = next((i for i, b in enumerate(_free) if b.nbytes >= nbytes), None)
        buf = None if i is None else _free.pop(i)  # by place: == compares arrays' values
    if buf is None:
        buf = aligned_empty(nbytes, np.uint8)
    a = buf[:nbytes].view(dtype).reshape(shape)
    with _lock:
        _lent[a.ctypes.data] = buf
    return a


def give(a: np.ndarray) -> None:
    """Keep the buffer of an array take() made, for later calls (at most KEEP,
    the largest); anything else is left alone."""
    if a.nbytes < POOLED_BYTES:
        return
    with _lock:
        buf = _lent.pop(a.ctypes.data, None)
        if buf is not None:
            _free.append(buf)
            _free.sort(key=lambda b: b.nbytes)
            del _free[:-KEEP]


def release() -> None:
    """Drop the kept buffers (their memory goes back to the system)."""
    with _lock:
        _free.clear()
