"""Elman RNN (torch.nn.RNN, RNNCell): one gate; state h.

    h' = tanh(W_ih x + b_ih + W_hh h + b_hh)      or relu(...) with nonlinearity="relu"
"""

from ._ops import load, store, tanh
from .spec import Cell

activation = tanh  # bound per cell below: tanh or relu


def unit(z, zx, h, c, h_new, u, H, n):
    store(h_new, u, activation(load(z, u, n)), n)


RNN_TANH = Cell("rnn_tanh", gates=1, summed_gates=1, states=("h",), unit=unit,
                aliases={"activation": "tanh"})
RNN_RELU = Cell("rnn_relu", gates=1, summed_gates=1, states=("h",), unit=unit,
                aliases={"activation": "relu"})
