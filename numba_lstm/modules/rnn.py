"""nl.GRU and nl.RNN: torch.nn.GRU's and nn.RNN's interfaces and numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cells import GRU as GRU_CELL
from ..cells import RNN_RELU, RNN_TANH, Cell
from .recurrent import RNNBase

NONLINEARITIES = {"tanh": RNN_TANH, "relu": RNN_RELU}


def _refuse_projection(family: str, proj_size: int) -> None:
    if proj_size:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")


class GRU(RNNBase):
    """Multi-layer GRU over NumPy arrays, as ``torch.nn.GRU`` at inference:
    ``output, h_n = gru(input, hx=None, *, lengths=None)``."""

    family = "GRU"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, *, proj_size: int = 0, dtype="float32",
                 device="cpu"):
        _refuse_projection("GRU", proj_size)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype=dtype, device=device)

    @property
    def _cell(self) -> Cell:
        return GRU_CELL


class RNN(RNNBase):
    """Multi-layer Elman RNN over NumPy arrays, as ``torch.nn.RNN`` at inference:
    ``output, h_n = rnn(input, hx=None, *, lengths=None)``, tanh or relu."""

    family = "RNN"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, proj_size: int = 0,
                 dtype="float32", device="cpu"):
        _refuse_projection("RNN", proj_size)
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                             "'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype=dtype, device=device)

    @property
    def _cell(self) -> Cell:
        return NONLINEARITIES[self.nonlinearity]

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "",
                        batch_first: bool = False, dtype=None, nonlinearity: str = "tanh"):
        """As LSTM.from_state_dict; the nonlinearity is not in a state_dict, so it
        is an argument (torch's default, tanh)."""
        return super().from_state_dict(state_dict, prefix=prefix, batch_first=batch_first,
                                       dtype=dtype, nonlinearity=nonlinearity)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s
