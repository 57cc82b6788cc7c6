"""LSTM (torch.nn.LSTM, LSTMCell): gates i, f, g, o; state (h, c).

    c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)        each gate: W_i* x + b_i* + W_h* h + b_h*
    h' = σ(o) ⊙ tanh(c')                 (then W_hr h' with a projection)
"""

from ._ops import fma, load, sigmoid, store, tanh
from .spec import Cell

HELPERS = ("update",)


def update(z_i, z_f, z_g, z_o, c):
    c_new = fma(sigmoid(z_f), c, sigmoid(z_i) * tanh(z_g))
    return c_new, sigmoid(z_o) * tanh(c_new)


def unit(z, zx, h, c, h_new, u, H, n):
    c_new, h_out = update(load(z, u, n), load(z, H + u, n), load(z, 2 * H + u, n),
                          load(z, 3 * H + u, n), load(c, u, n))
    store(c, u, c_new, n)
    store(h_new, u, h_out, n)


LSTM = Cell("lstm", gates=4, summed_gates=4, states=("h", "c"), unit=unit)
