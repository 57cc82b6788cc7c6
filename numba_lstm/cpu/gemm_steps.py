"""Large batch: each thread runs the whole time loop for its slice of the batch,
its recurrent matmul one register-tiled GEMM per step (cpu.panel_gemm).

At large B the recurrence h (B, H) @ W_hh^T (H, 4H) is a real matrix product.
Splitting the batch (and the directions) across threads means no thread ever
waits for another inside the time loop; each streams all of W_hh per step,
which its rows (B / threads, at least 8 per tile) amortise.

Where a step projects its own input, x and h sit side by side in one operand
[x, h] (B, I + H) against [W_ih; W_hh]^T: one product with a longer k loop,
and one pass of the tiles' read-modify-write over the gates instead of two
(whole models against two products, one process, interleaved: shapes S5
1.02-1.04x, S7 1.01-1.02x).

Measured before (shapes S5-S7, and why this replaced it): a BLAS GEMM per step
from a Python loop. NumPy's BLAS repacks W_hh on every call and reached 25
GMAC/s on two threads at S6's step (32 x 512 @ 512 x 2048); the panel kernel
reaches 32-37 GMAC/s on each thread.
"""

import numpy as np
from numba import njit, prange

from .panel_gemm import chunk_start, gemm_panels_acc
from .recurrence import _FLAGS, cell_block, copy_row


@njit(parallel=True, **_FLAGS)
def lstm_layer_gemm_steps(x, gx, w, bias, h0, c0, lengths, out, h_n, c_n, n_chunks):
    """All steps of one layer without projection, every direction.

    x        (T, B, I) the layer's input
    gx       (T, B, D*4H) x @ W_ih^T + bias computed beforehand, direction-major;
             or (0, B, D*4H): then each step projects its own rows of x, which
             saves gx's round trip through memory (worth it when there are
             enough rows per task to reuse each weight read per step)
    w        (D, P, K, NR) per direction, panels (panel_gemm.pack_panels):
             [W_ih; W_hh]^T, K = I + H, when each step projects x; else
             W_hh^T, K = H
    bias     (D*4H,) b_ih + b_hh (read only when each step projects x)
    h0, c0   (D, B, H)
    lengths  (B,) int64; steps t >= lengths[b] leave sequence b's state alone
    out      (T, B, D*H) written here; padded steps get 0
    h_n, c_n (D, B, H) final states, written here
    Tasks: direction x batch chunk (n_chunks per direction), rows split in
    multiples of the micro-kernel's 8 where B allows.
    """
    T, B = x.shape[0], x.shape[1]
    D = w.shape[0]
    fused = gx.shape[0] == 0
    H = c0.shape[2]
    G = 4 * H
    n_x = w.shape[2] - H  # the operand's x columns: I, or 0
    for task in prange(D * n_chunks):
        d = task // n_chunks
        chunk = task % n_chunks
        b_lo = chunk_start(chunk, n_chunks, B)
        b_hi = chunk_start(chunk + 1, n_chunks, B)
        nb = b_hi - b_lo
        gates = np.empty((nb, G), gx.dtype)  # (nb, 4H)
        xh = np.empty((nb, n_x + H), gx.dtype)  # (nb, [I +] H) the step's operand, h last
        c = np.empty((nb, H), gx.dtype)
        for r in range(nb):
            copy_row(h0[d, b_lo + r], xh[r, n_x:])
        c[:] = c0[d, b_lo:b_hi]
        for s in range(T):
            t = T - 1 - s if d == 1 else s
            for r in range(nb):
                if fused:
                    copy_row(bias[d * G:(d + 1) * G], gates[r])
                    copy_row(x[t, b_lo + r], xh[r, :n_x])
                else:
                    copy_row(gx[t, b_lo + r, d * G:(d + 1) * G], gates[r])
            gemm_panels_acc(gates, xh, w[d])  # (nb, 4H) += (nb, K) @ (K, 4H)
            for r in range(nb):
                b = b_lo + r
                if t >= lengths[b]:
                    out[t, b, d * H:(d + 1) * H] = 0
                    continue
                cell_block(gates[r], c[r], xh[r, n_x:])
                copy_row(xh[r, n_x:], out[t, b, d * H:(d + 1) * H])
        for r in range(nb):
            copy_row(xh[r, n_x:], h_n[d, b_lo + r])
        c_n[d, b_lo:b_hi] = c
