"""What every CPU loop shares: the compile flags, row copies and the axpy step
matmuls (W^T streamed a contiguous row of gate columns at a time).

Kernels trust their arguments (shapes, dtypes, C-contiguity): the object API
validates and prepares them.
"""


from numba import carray, njit

from .._config import CACHE
from .atomics import address_as_voidptr
from .simd import fma

# No fastmath, not even contraction: multiply-adds are explicit fma() calls
# (cpu.simd), so a kernel computes the same bits whether it was compiled in
# this process or loaded from the on-disk cache, and NaN/Inf propagate as in torch.
_FLAGS = dict(cache=CACHE, nogil=True, error_model="numpy")


@njit(inline="always", **_FLAGS)
def unowned(a):
    """a's elements through a view that owns no memory: slicing it in a loop
    costs no atomic reference counting. The caller keeps ``a`` alive (uses it
    after the view's last use)."""
    return carray(address_as_voidptr(a.ctypes.data), a.shape, a.dtype)


@njit(**_FLAGS)
def keep_alive(*arrays):
    """Nothing: a use of ``arrays`` that keeps their memory alive to here."""


@njit(inline="always", **_FLAGS)
def copy_row(src, dst):
    """dst[:] = src[:] for 1-D arrays that do not overlap: a plain loop, which
    LLVM vectorises; Numba's slice assignment checks for overlap and copies
    element by element through its strided iterator (~15 cycles a float)."""
    for j in range(src.shape[0]):
        dst[j] = src[j]


@njit(**_FLAGS)
def _row_matmul_acc(out, r, h, w, d):
    """out[r, :] += h[r, :] @ w[d]   with w (D, K, N), rows contiguous.

    k is unrolled by 4 so each pass over the output row does four FMAs per
    load/store of it. At B=1 this streams W at about L2 bandwidth (measured
    18 GMAC/s at H=128), which is the bound for a matrix-vector product.
    """
    K = w.shape[1]
    N = w.shape[2]
    k = 0
    while k + 4 <= K:
        a0 = h[r, k]
        a1 = h[r, k + 1]
        a2 = h[r, k + 2]
        a3 = h[r, k + 3]
        for j in range(N):
            out[r, j] = fma(a3, w[d, k + 3, j], fma(a2, w[d, k + 2, j], fma(
                a1, w[d, k + 1, j], fma(a0, w[d, k, j], out[r, j]))))
        k += 4
    while k < K:
        a0 = h[r, k]
        for j in range(N):
            out[r, j] = fma(a0, w[d, k, j], out[r, j])
        k += 1


@njit(**_FLAGS)
def _rows_matmul_acc(out, h, w, d, n_rows):
    """out[:n_rows] += h[:n_rows] @ w[d]: four rows share each load of w.

    Row-at-a-time would stream W once per row per step; with W_hh past L2
    (H=256: 1 MB) that made batch 8 four times as slow. 4 rows x 2 k keep
    8 broadcasts and 4 accumulators within AVX2's 16 registers.
    """
    K = w.shape[1]
    N = w.shape[2]
    r = 0
    while r + 4 <= n_rows:
        k = 0
        while k + 2 <= K:
            a00, a01 = h[r, k], h[r, k + 1]
            a10, a11 = h[r + 1, k], h[r + 1, k + 1]
            a20, a21 = h[r + 2, k], h[r + 2, k + 1]
            a30, a31 = h[r + 3, k], h[r + 3, k + 1]
            for j in range(N):
                w0 = w[d, k, j]
                w1 = w[d, k + 1, j]
                # Not a chain through out[]: with one, 3-4% slower at B=4-8.
                out[r, j] += fma(a01, w1, a00 * w0)
                out[r + 1, j] += fma(a11, w1, a10 * w0)
                out[r + 2, j] += fma(a21, w1, a20 * w0)
                out[r + 3, j] += fma(a31, w1, a30 * w0)
            k += 2
        if k < K:
            for q in range(4):
                a = h[r + q, k]
                for j in range(N):
                    out[r + q, j] = fma(a, w[d, k, j], out[r + q, j])
        r += 4
    while r < n_rows:
        _row_matmul_acc(out, r, h, w, d)
        r += 1
