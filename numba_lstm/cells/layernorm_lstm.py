"""LayerNorm LSTM (labml.ai's annotated LSTM with layer_norm=True): gates i, f,
g, o, each layer-normalised over its H units before its activation; state
(h, c), c kept un-normalised.

    c' = σ(LN_f(f)) ⊙ c + σ(LN_i(i)) ⊙ tanh(LN_g(g))
    h' = σ(LN_o(o)) ⊙ tanh(LN_c(c'))

The normalisation spans the row, so this cell is a ``row``, not a ``unit``.
Its parameters p (11, H): the LayerNorm weights of i, f, g, o, c, then their
biases, then eps in p[10, 0]. Its NumPy reference is reference.layernorm_lstm,
written independently.
"""

import math

from ._ops import fma, sigmoid, tanh
from .spec import Cell

HELPERS = ("moments", "normalise")


def moments(v, lo, n, eps):
    """(mean, 1/sqrt(var + eps)) of v[lo:lo+n], accumulated in float64."""
    mean = 0.0
    for j in range(n):
        mean += v[lo + j]
    mean /= n
    var = 0.0
    for j in range(n):
        dev = v[lo + j] - mean
        var += dev * dev
    return mean, 1.0 / math.sqrt(var / n + eps)


def normalise(v, lo, n, weight, bias, eps):
    mean, scale = moments(v, lo, n, eps)
    for j in range(n):
        v[lo + j] = (v[lo + j] - mean) * scale * weight[j] + bias[j]


def row(z, zx, h, c, h_new, p):
    H = h_new.shape[0]
    eps = p[10, 0]
    for g in range(4):
        normalise(z, g * H, H, p[g], p[5 + g], eps)
    for u in range(H):
        c[u] = fma(sigmoid(z[H + u]), c[u], sigmoid(z[u]) * tanh(z[2 * H + u]))
    mean, scale = moments(c, 0, H, eps)
    for u in range(H):
        h_new[u] = (c[u] - mean) * scale * p[4, u] + p[9, u]  # stored: the cell's dtype
        h_new[u] = sigmoid(z[3 * H + u]) * tanh(h_new[u])


LAYERNORM_LSTM = Cell("layernorm_lstm", gates=4, summed_gates=4, states=("h", "c"), unit=None,
                      row=row)
