"""The input projection x @ W_ih^T + b for every step at once, shared by the
threads of a team job (cpu.team_layer), or run by one thread ahead of a
single-task layer.

Used instead of NumPy's BLAS: right after a
BLAS call its worker threads keep spinning, and with two more threads of our
own that makes three busy threads on two cores (measured at shape S4: BLAS 3
ms + kernel 16 ms became 30 ms). The rows go in blocks to whichever thread
claims them; each block streams W_ih packed in panels (cpu.panel_gemm) while
the block's rows of x and gx stay in cache (over a thread's whole share at
once, gx made two round trips to memory: S7's projection took 13 ms).
"""

import numpy as np
from numba import njit

from .activation_grids import float_rows_acc, quantize_rows
from .aligned import empty_on_lines
from .atomics import fetch_add, wait_until
from .dot_gemm import dot_acc, dot_k_bytes
from .panel_gemm import gemm_layout_acc
from .recurrence import _FLAGS, copy_row

# Rows per block: 64 rows of x and gx take 64-512 KB at the benchmark sizes (L2).
ROW_BLOCK = 64
# counters[0] hands out blocks, counters[LINE] counts finished ones (each on a
# cache line of its own).
LINE = 8


@njit(**_FLAGS)
def input_projection(x, w_ih, bias, gx, ih_dot, counters, eight_bit=False):
    """gx (N, D*G) = x (N, I) @ W_ih^T + bias (D*G,), direction-major;
    w_ih (D, P, I, NR) each direction's W_ih^T in panels. Every thread of a
    job calls it with the same counters (int64, zero before the first call);
    it returns once every block is done, by whichever thread. ih_dot: None,
    or a quantized layer's W_ih^T in a dot layout (packing.dot_layout): each
    block of rows is then quantized to int16 once for every direction (to 8
    bits, h's grid, with ``eight_bit``: x is the hidden state of the layer
    below), and a row that is not finite takes the float panels alone."""
    N = x.shape[0]
    D = w_ih.shape[0]
    G = gx.shape[1] // D
    n_blocks = (N + ROW_BLOCK - 1) // ROW_BLOCK
    k_bytes = dot_k_bytes(ih_dot)
    x_lo = empty_on_lines(ROW_BLOCK, k_bytes, np.uint8)
    x_hi = empty_on_lines(ROW_BLOCK, k_bytes, np.uint8)
    x_scales = np.empty(ROW_BLOCK, np.float32)
    bias_row = bias.reshape((1, bias.shape[0]))  # (1, D*G): every row's
    while True:
        block = fetch_add(counters, 0, 1)
        if block >= n_blocks:
            break
        r0 = block * ROW_BLOCK
        r1 = min(r0 + ROW_BLOCK, N)
        n = r1 - r0
        not_finite = quantize_rows(x[r0:r1], x_lo[:n], x_hi[:n], x_scales[:n], ih_dot,
                                   eight_bit)
        for d in range(D):  # (rows, G) = bias + (rows, I) @ (I, G)
            # a dot kernel reads the bias in its epilogue: no pass of its own over gx
            if not (not_finite >= 0 and dot_acc(gx[r0:r1, d * G:(d + 1) * G], x_lo[:n],
                                                x_hi[:n], x_scales[:n], ih_dot, d, False,
                                                eight_bit, bias_row[:, d * G:(d + 1) * G])):
                for r in range(r0, r1):
                    copy_row(bias[d * G:(d + 1) * G], gx[r, d * G:(d + 1) * G])
                gemm_layout_acc(gx[r0:r1], d * G, G, x[r0:r1], w_ih[d])
            elif not_finite > 0:  # those rows' float products, theirs alone
                float_rows_acc(gx[r0:r1], d * G, G, x[r0:r1], w_ih[d], False, x_scales[:n],
                               gemm_layout_acc)
        fetch_add(counters, LINE, 1)
    wait_until(counters, LINE, n_blocks)  # a claimed block is always being computed
