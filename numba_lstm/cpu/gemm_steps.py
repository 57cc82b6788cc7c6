"""Large batch: the recurrent matmul of each step is one BLAS GEMM.

At large B the recurrence h (B, H) @ W_hh^T (H, 4H) is a real matrix product
and NumPy's BLAS runs it on every core far faster than a jitted loop can; a
jitted kernel fuses what follows (input projection add, gates, cell update,
masking) in one pass over the gate rows. The step loop stays in Python: a GEMM
here costs ≥ 50 µs, the loop ~3 µs a step. The gate kernel is serial so that
its threads never contend with BLAS's (see numba_lstm._config).

Tried and dropped: a batch-minor layout (W (4H, H) @ h (H, B)). Its GEMM is
25-40% faster in isolation, but the gate pass then writes out[t] transposed,
and end to end it was 0-20% slower at SPEC S4-S7.
"""

import numpy as np
from numba import njit

from .recurrence import _FLAGS, cell_update


@njit(**_FLAGS)
def lstm_gates_step(gates, gx, s, lengths, c, h, out):
    """Step s of every direction, after gates (D, B, 4H) = h (D, B, H) @ W_hh^T.

    gx   (T, B, D*4H) input projection with both biases; direction d runs at
         time t = s forward, T-1-s in reverse
    c, h (D, B, H) updated in place, except for sequences past their length
    out  (T, B, D*H) gets h at t, or 0 past the sequence's length
    """
    T = gx.shape[0]
    D, B, G = gates.shape
    H = G // 4
    for d in range(D):
        t = T - 1 - s if d == 1 else s
        for b in range(B):
            if t >= lengths[b]:
                for j in range(H):
                    out[t, b, d * H + j] = 0
                continue
            z = gates[d, b]  # (4H,)
            x = gx[t, b, d * G:(d + 1) * G]  # (4H,)
            for j in range(H):
                c[d, b, j], h_new = cell_update(z[j] + x[j], z[H + j] + x[H + j],
                                                z[2 * H + j] + x[2 * H + j],
                                                z[3 * H + j] + x[3 * H + j], c[d, b, j])
                h[d, b, j] = h_new
                out[t, b, d * H + j] = h_new


def lstm_layer_gemm_steps(gx, w_hh, h0, c0, lengths, out, h_n, c_n):
    """All steps of one layer without projection; arguments as recurrence.lstm_layer.

    The state lives in h_n, c_n from the start, so they hold the final state at the end.
    """
    h_n[...] = h0
    c_n[...] = c0
    gates = np.empty(w_hh.shape[:1] + h0.shape[1:2] + w_hh.shape[2:], w_hh.dtype)  # (D, B, 4H)
    for s in range(gx.shape[0]):
        np.matmul(h_n, w_hh, out=gates)  # (D, B, H) @ (D, H, 4H)
        lstm_gates_step(gates, gx, s, lengths, c_n, h_n, out)
