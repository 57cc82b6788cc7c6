"""The LayerNorm LSTM recurrence (labml.ai's annotated LSTM, layer_norm=True).

Like recurrence.lstm_layer, but each gate's pre-activation is layer-normalised
over its H units and h = σ(o)·tanh(LN_c(c)). Normalisation needs the whole
gate vector of a step, so it cannot fold into the weights: it runs per step.
"""

import numpy as np
from numba import njit, prange

from .activations import sigmoid, tanh
from .recurrence import _FLAGS, _rows_matmul_acc, serial_twin
from .simd import fma


@njit(**_FLAGS)
def _normalise(z, r, lo, n, weight, bias, g, eps):
    """z[r, lo:lo+n] = LayerNorm(z[r, lo:lo+n]) with weight[g], bias[g] (g-th norm)."""
    mean = 0.0
    for j in range(n):
        mean += z[r, lo + j]
    mean /= n
    var = 0.0
    for j in range(n):
        dev = z[r, lo + j] - mean
        var += dev * dev
    scale = 1.0 / np.sqrt(var / n + eps)
    for j in range(n):
        z[r, lo + j] = (z[r, lo + j] - mean) * scale * weight[g, j] + bias[g, j]


@njit(parallel=True, **_FLAGS)
def layernorm_lstm_layer(gx, w_hh, ln_w, ln_b, h0, c0, out, h_n, c_n, eps, n_chunks):
    """All steps of one LayerNorm LSTM layer.

    gx (T, B, 4H)  x @ W_in^T + b_hidden, precomputed
    w_hh (1, H, 4H) W_hidden^T
    ln_w, ln_b (5, H)  LayerNorm weights/biases for i, f, g, o and c
    h0, c0 (B, H); out (T, B, H), h_n, c_n (B, H) written here
    """
    T = gx.shape[0]
    B = gx.shape[1]
    G = w_hh.shape[2]
    H = G // 4
    for chunk in prange(n_chunks):
        b_lo = chunk * B // n_chunks
        nb = (chunk + 1) * B // n_chunks - b_lo
        gates = np.empty((nb, G), dtype=gx.dtype)  # (nb, 4H)
        h = np.empty((nb, H), dtype=gx.dtype)
        c = np.empty((nb, H), dtype=gx.dtype)
        c_norm = np.empty((nb, H), dtype=gx.dtype)
        for r in range(nb):
            for j in range(H):
                h[r, j] = h0[b_lo + r, j]
                c[r, j] = c0[b_lo + r, j]
        for t in range(T):
            for r in range(nb):
                for j in range(G):
                    gates[r, j] = gx[t, b_lo + r, j]
            _rows_matmul_acc(gates, h, w_hh, 0, nb)
            for r in range(nb):
                for g in range(4):
                    _normalise(gates, r, g * H, H, ln_w, ln_b, g, eps)
                for j in range(H):
                    c_new = fma(sigmoid(gates[r, H + j]), c[r, j],
                                sigmoid(gates[r, j]) * tanh(gates[r, 2 * H + j]))
                    c[r, j] = c_new
                    c_norm[r, j] = c_new
                _normalise(c_norm, r, 0, H, ln_w, ln_b, 4, eps)
                for j in range(H):
                    h[r, j] = sigmoid(gates[r, 3 * H + j]) * tanh(c_norm[r, j])
                    out[t, b_lo + r, j] = h[r, j]
        for r in range(nb):
            for j in range(H):
                h_n[b_lo + r, j] = h[r, j]
                c_n[b_lo + r, j] = c[r, j]


layernorm_lstm_layer_serial = serial_twin(layernorm_lstm_layer)
