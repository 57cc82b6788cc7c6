"""nl.LSTMCell: torch.nn.LSTMCell's interface and numbers, on NumPy arrays."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _validate as v
from .base import Module, select_prefix


class LSTMCell(Module):
    """One LSTM step: ``h1, c1 = cell(input, hx=None)`` as ``torch.nn.LSTMCell``."""

    _derived = ("_layers",)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.input_size = v.positive_int(input_size, "input_size")
        self.hidden_size = v.positive_int(hidden_size, "hidden_size")
        self.bias = bool(bias)
        self._init_uniform(1.0 / math.sqrt(self.hidden_size))
        self._prepare()

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "",
                        dtype=None) -> LSTMCell:
        params = select_prefix(state_dict, prefix)
        if "weight_ih" not in params or "weight_hh" not in params:
            raise KeyError(f"no LSTMCell weights under prefix {prefix!r} (expected "
                           f"{prefix}weight_ih and {prefix}weight_hh)")
        w_ih = np.shape(params["weight_ih"])
        if dtype is None:
            dtype = v.dtype_of_weights(params["weight_hh"])
        module = cls(int(w_ih[1]), int(w_ih[0]) // 4, bias="bias_ih" in params, dtype=dtype)
        return module.load_state_dict(params)

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        shapes = {"weight_ih": (4 * H, self.input_size), "weight_hh": (4 * H, H)}
        if self.bias:
            shapes.update(bias_ih=(4 * H,), bias_hh=(4 * H,))
        return shapes

    def _prepare(self) -> None:
        p = self._params
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        self._layers = self._backend().pack_stack([[tuple(p.get(n) for n in names)]],
                                                  self._dtype)

    def __call__(self, input, hx=None):
        """input (B, I) or (I,); hx = (h0, c0) each (B, H) or (H,). Returns (h1, c1)."""
        x = v.as_float_array(input, self._dtype, "input")
        if x.ndim not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {x.ndim}D "
                             "input instead")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.shape[-1]} "
                               f"expected {self.input_size}")
        batched = x.ndim == 2
        x2 = x if batched else x[None, :]
        B, H = x2.shape[0], self.hidden_size
        h0 = c0 = None  # zeros
        if hx is not None:
            h0, c0 = v.as_state_pair(hx, self._dtype)
            expected = (B, H) if batched else (H,)
            for i, state in enumerate((h0, c0)):
                if state.shape != expected:
                    raise RuntimeError(f"hx[{i}] (hidden{i}) must have shape "
                                       f"{v.fmt_shape(expected)} for input of shape "
                                       f"{v.fmt_shape(x.shape)}, got {v.fmt_shape(state.shape)}")
            h0, c0 = h0.reshape(1, B, H), c0.reshape(1, B, H)
        _, h1, c1 = self._backend().lstm_forward(self._layers, x2[None], h0, c0, None)
        if batched:
            return h1[0], c1[0]
        return h1[0, 0], c1[0, 0]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
