"""numba_lstm: PyTorch-trained LSTMs on plain NumPy arrays, compiled with Numba.

>>> import numba_lstm as nl
>>> lstm = nl.LSTM(10, 20, num_layers=2)
>>> output, (h_n, c_n) = lstm(x)        # x: (T, B, 10) NumPy array
"""

from .io import LoadError, load, save
from .modules import (
    LSTM,
    Embedding,
    LayerNormLSTM,
    Linear,
    LSTMCell,
    LSTMConfig,
    StateDictError,
    Stream,
    infer_lstm_config,
    lstm_prefixes,
)

__version__ = "0.1.0"

__all__ = [
    "LSTM", "Embedding", "LSTMCell", "LSTMConfig", "LayerNormLSTM", "Linear", "LoadError",
    "StateDictError", "Stream", "infer_lstm_config", "load", "lstm_prefixes", "save",
]
