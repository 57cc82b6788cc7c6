"""Recurrent cells as data plus math (cells.spec): LSTM, GRU, RNN (tanh, relu),
LayerNorm LSTM.

A cell's file holds its gate count, its state, how its biases split, and its
math written once over a few primitives; numba_lstm.reference, the CPU
kernels and the CUDA kernels bind those primitives and share the one text.
"""

from .gru import GRU
from .layernorm_lstm import LAYERNORM_LSTM
from .lstm import LSTM
from .rnn import RNN_RELU, RNN_TANH
from .spec import Cell, bind, rebind

CELLS = {cell.name: cell for cell in (LSTM, GRU, RNN_TANH, RNN_RELU, LAYERNORM_LSTM)}

__all__ = ["CELLS", "GRU", "LAYERNORM_LSTM", "LSTM", "RNN_RELU", "RNN_TANH", "Cell", "bind",
           "rebind"]
