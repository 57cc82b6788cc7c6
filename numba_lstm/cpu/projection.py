"""The input projection x @ W_ih^T + b for every step at once, threaded by Numba.

Used ahead of the threaded recurrence instead of NumPy's BLAS: right after a
BLAS call its worker threads keep spinning, and with Numba's two threads that
makes three busy threads on two cores (measured at SPEC S4: BLAS 3 ms + kernel
16 ms became 30 ms; this kernel, ~5 ms, leaves nothing spinning).
"""

from numba import njit, prange

from .recurrence import _FLAGS, _rows_matmul_acc


@njit(parallel=True, **_FLAGS)
def input_projection(x, w_ih, bias, gx, n_chunks):
    """gx (N, G) = x (N, I) @ w_ih (1, I, G) + bias (G,), rows split in n_chunks."""
    N = x.shape[0]
    G = gx.shape[1]
    for chunk in prange(n_chunks):
        lo = chunk * N // n_chunks
        hi = (chunk + 1) * N // n_chunks
        for r in range(lo, hi):
            for j in range(G):
                gx[r, j] = bias[j]
        _rows_matmul_acc(gx[lo:hi], x[lo:hi], w_ih, 0, hi - lo)
