"""The object API: validation, layout, dispatch to a backend. No kernels here."""

from .base import StateDictError
from .cell import GRUCell, LSTMCell, RNNCell, RNNCellBase
from .layernorm_lstm import LayerNormLSTM
from .layers import Embedding, Linear
from .lstm import LSTM, LSTMConfig, infer_lstm_config, lstm_prefixes
from .recurrent import RecurrentConfig, RNNBase, family_of, infer_config
from .rnn import GRU, RNN
from .stream import Stream

__all__ = [
    "GRU", "LSTM", "RNN", "Embedding", "GRUCell", "LSTMCell", "LSTMConfig", "LayerNormLSTM",
    "Linear", "RNNBase", "RNNCell", "RNNCellBase", "RecurrentConfig", "StateDictError", "Stream",
    "family_of", "infer_config", "infer_lstm_config", "lstm_prefixes",
]
