"""nl.LSTMCell, nl.GRUCell, nl.RNNCell: one step, as torch's cells."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..cells import GRU as GRU_CELL
from ..cells import LSTM as LSTM_CELL
from ..cells import Cell
from . import _validate as v
from .base import Module, select_prefix
from .rnn import NONLINEARITIES


class RNNCellBase(Module):
    """One step of a cell: ``h1 = cell(input, hx=None)``, ``(h1, c1)`` for LSTMCell."""

    _derived = ("_layers",)
    _quantizable = True
    _family_cell: Cell  # the subclass's cell; RNNCell picks by nonlinearity, same gates

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.input_size = v.positive_int(input_size, "input_size")
        self.hidden_size = v.positive_int(hidden_size, "hidden_size")
        self.bias = bool(bias)
        self._init_uniform(1.0 / math.sqrt(self.hidden_size))
        self._prepare()

    @property
    def _cell(self) -> Cell:
        return self._family_cell

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "", dtype=None,
                        **extra):
        params = select_prefix(state_dict, prefix)
        name = cls.__name__
        if "weight_ih" not in params or "weight_hh" not in params:
            raise KeyError(f"no {name} weights under prefix {prefix!r} (expected "
                           f"{prefix}weight_ih and {prefix}weight_hh)")
        w_ih, w_hh = np.shape(params["weight_ih"]), np.shape(params["weight_hh"])
        gates = cls._family_cell.gates
        if (len(w_ih) != 2 or len(w_hh) != 2 or w_hh[0] != gates * w_hh[1]
                or w_ih[0] != w_hh[0]):
            k = f"{gates}*hidden" if gates > 1 else "hidden"
            raise ValueError(f"not a {name}: weight_ih {w_ih}, weight_hh {w_hh}; expected "
                             f"({k}, input) and ({k}, hidden)")
        if dtype is None:
            dtype = v.dtype_of_weights(params["weight_hh"])
        module = cls(int(w_ih[1]), int(w_hh[1]), bias="bias_ih" in params, dtype=dtype, **extra)
        return module._take_format_of(params).load_state_dict(params)

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        G = self._cell.gates * self.hidden_size
        shapes = {"weight_ih": (G, self.input_size), "weight_hh": (G, self.hidden_size)}
        if self.bias:
            shapes.update(bias_ih=(G,), bias_hh=(G,))
        return shapes

    def _prepare(self) -> None:
        p = self._float_params()
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        self._layers = self._backend().pack_stack([[tuple(p.get(n) for n in names)]],
                                                  self._dtype, self._cell)

    def __call__(self, input, hx=None):
        """input (B, I) or (I,); hx each (B, H) or (H,): h, or (h, c) for LSTMCell.
        Returns h1, or (h1, c1) for LSTMCell."""
        x = v.as_float_array(input, self._dtype, "input")
        name = type(self).__name__
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {x.ndim}D "
                             "input instead")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.shape[-1]} "
                               f"expected {self.input_size}")
        batched = x.ndim == 2
        x2 = x if batched else x[None, :]
        B, H = x2.shape[0], self.hidden_size
        state = [None, None]  # zeros
        if hx is not None:
            parts = self._hx_parts(hx)
            expected = (B, H) if batched else (H,)
            for i, part in enumerate(parts):
                if part.shape != expected:
                    raise RuntimeError(f"hx[{i}] (hidden{i}) must have shape "
                                       f"{v.fmt_shape(expected)} for input of shape "
                                       f"{v.fmt_shape(x.shape)}, got {v.fmt_shape(part.shape)}")
                state[i] = part.reshape(1, B, H)
        _, h1, c1 = self._backend().forward(self._layers, x2[None], *state, None)
        result = (h1[0], c1[0]) if self._cell.has_cell_state else (h1[0],)
        if not batched:
            result = tuple(r[0] for r in result)
        return result if len(result) > 1 else result[0]

    def _hx_parts(self, hx) -> tuple:
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"hx for {type(self).__name__} must be one array h_0, got a "
                            f"{type(hx).__name__}")
        return (v.as_float_array(hx, self._dtype, "hx"),)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class LSTMCell(RNNCellBase):
    """One LSTM step: ``h1, c1 = cell(input, hx=None)`` as ``torch.nn.LSTMCell``."""

    _family_cell = LSTM_CELL

    def _hx_parts(self, hx) -> tuple:
        return v.as_state_pair(hx, self._dtype)


class GRUCell(RNNCellBase):
    """One GRU step: ``h1 = cell(input, hx=None)`` as ``torch.nn.GRUCell``."""

    _family_cell = GRU_CELL


class RNNCell(RNNCellBase):
    """One Elman RNN step: ``h1 = cell(input, hx=None)`` as ``torch.nn.RNNCell``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", *, dtype="float32", device="cpu"):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, dtype=dtype, device=device)

    _family_cell = NONLINEARITIES["tanh"]

    @property
    def _cell(self) -> Cell:
        return NONLINEARITIES[self.nonlinearity]

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")
