"""The object API: validation, layout, dispatch to a backend. No kernels here."""

from .base import StateDictError
from .cell import LSTMCell
from .layernorm_lstm import LayerNormLSTM
from .layers import Embedding, Linear
from .lstm import LSTM, LSTMConfig, infer_lstm_config, lstm_prefixes
from .stream import Stream

__all__ = [
    "LSTM", "Embedding", "LSTMCell", "LSTMConfig", "LayerNormLSTM", "Linear", "StateDictError",
    "Stream", "infer_lstm_config", "lstm_prefixes",
]
