"""GRU (torch.nn.GRU, GRUCell): gates r, z, n; state h.

    r = σ(W_ir x + b_ir + W_hr h + b_hr)
    z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h  =  n + z ⊙ (h − n)

n's two parts stay apart (summed_gates=2): r multiplies only the h part and
b_hn, so b_hn cannot be folded into b_in.
"""

from ._ops import fma, load, sigmoid, store, tanh
from .spec import Cell

HELPERS = ("update",)


def update(z_r, z_z, n_h, n_x, h):
    n = tanh(fma(sigmoid(z_r), n_h, n_x))
    return fma(sigmoid(z_z), h - n, n)


def unit(z, zx, h, c, h_new, u, H, n):
    store(h_new, u, update(load(z, u, n), load(z, H + u, n), load(z, 2 * H + u, n),
                           load(zx, 2 * H + u, n), load(h, u, n)), n)


GRU = Cell("gru", gates=3, summed_gates=2, states=("h",), unit=unit)
