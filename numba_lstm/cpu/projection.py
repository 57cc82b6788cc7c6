"""The input projection x @ W_ih^T + b for every step at once, threaded by Numba.

Used ahead of the threaded recurrences instead of NumPy's BLAS: right after a
BLAS call its worker threads keep spinning, and with Numba's two threads that
makes three busy threads on two cores (measured at shape S4: BLAS 3 ms + kernel
16 ms became 30 ms). The rows are split across threads; each streams
W_ih packed in panels (cpu.panel_gemm) a block of rows at a time, so that the
block's rows of x and gx stay in cache while every panel passes (over the
whole chunk at once, gx made two round trips to memory: S7's projection took
13 ms).
"""

import numpy as np
from numba import njit, prange

from .dot_gemm import dot_acc, dot_k_bytes, quantize_rows
from .panel_gemm import chunk_start, gemm_layout_acc
from .recurrence import _FLAGS, copy_row

# Rows per block: 64 rows of x and gx take 64-512 KB at the benchmark sizes (L2).
ROW_BLOCK = 64


@njit(parallel=True, **_FLAGS)
def input_projection(x, w_ih, bias, gx, n_chunks, ih_dot):
    """gx (N, D*G) = x (N, I) @ W_ih^T + bias (D*G,), direction-major;
    w_ih (D, P, I, NR) each direction's W_ih^T in panels. ih_dot: None, or an
    int8 layer's W_ih^T in the dot layout (packing.dot_layout): each block of
    rows is then quantized to int16 once for every direction, and a block
    holding a row that is not finite takes the float panels."""
    N = x.shape[0]
    D = w_ih.shape[0]
    G = gx.shape[1] // D
    for chunk in prange(n_chunks):
        lo = chunk_start(chunk, n_chunks, N)
        hi = chunk_start(chunk + 1, n_chunks, N)
        k_bytes = dot_k_bytes(ih_dot)
        x_lo = np.empty((ROW_BLOCK, k_bytes), np.uint8)
        x_hi = np.empty((ROW_BLOCK, k_bytes), np.uint8)
        x_scales = np.empty(ROW_BLOCK, np.float32)
        for r0 in range(lo, hi, ROW_BLOCK):
            r1 = min(r0 + ROW_BLOCK, hi)
            n = r1 - r0
            for r in range(r0, r1):
                copy_row(bias, gx[r])
            dot = quantize_rows(x[r0:r1], x_lo[:n], x_hi[:n], x_scales[:n], ih_dot)
            for d in range(D):  # (rows, G) += (rows, I) @ (I, G)
                if not (dot and dot_acc(gx[r0:r1, d * G:(d + 1) * G], x_lo[:n], x_hi[:n],
                                        x_scales[:n], ih_dot, d)):
                    gemm_layout_acc(gx[r0:r1], d * G, G, x[r0:r1], w_ih[d])
