"""The object API: validation, layout, dispatch to a backend. No kernels here."""

from .cell import LSTMCell
from .lstm import LSTM, LSTMConfig, infer_lstm_config, lstm_prefixes

__all__ = ["LSTM", "LSTMCell", "LSTMConfig", "infer_lstm_config", "lstm_prefixes"]
