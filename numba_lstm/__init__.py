"""numba_lstm: PyTorch-trained LSTMs, GRUs and RNNs on plain NumPy arrays, compiled with Numba.

>>> import numba_lstm as nl
>>> lstm = nl.LSTM(10, 20, num_layers=2)
>>> output, (h_n, c_n) = lstm(x)        # x: (T, B, 10) NumPy array
"""

from .io import LoadError, load, save
from .modules import (
    GRU,
    LSTM,
    RNN,
    Embedding,
    GRUCell,
    LayerNormLSTM,
    Linear,
    LSTMCell,
    LSTMConfig,
    RecurrentConfig,
    RNNCell,
    StateDictError,
    Stream,
    family_of,
    infer_config,
    infer_lstm_config,
    lstm_prefixes,
)
from .precompile import compile, wait_compiled  # noqa: A004 (the name the API promises)

__version__ = "0.1.0"

__all__ = [
    "GRU", "LSTM", "RNN", "Embedding", "GRUCell", "LSTMCell", "LSTMConfig", "LayerNormLSTM",
    "Linear", "LoadError", "RNNCell", "RecurrentConfig", "StateDictError", "Stream", "compile",
    "family_of",
    "infer_config", "infer_lstm_config", "load", "lstm_prefixes", "save", "wait_compiled",
]
