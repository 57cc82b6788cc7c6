"""nl.LayerNormLSTM: runs the state_dict of labml.ai's annotated LSTM (layer_norm=True)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..cells import LAYERNORM_LSTM
from . import _validate as v
from .base import Module, select_prefix
from .stream import Stream

_CELL = re.compile(r"^cells\.(\d+)\.")


class LayerNormLSTM(Module):
    """Time-major multi-layer LSTM with LayerNorm on each gate and on c.

    ``output, (h_n, c_n) = m(input, hx=None)``; input (T, B, I) or (T, I);
    output is the last layer's h, (T, B, H); states (L, B, H).
    Parameter names: cells.{k}.input_lin.weight, cells.{k}.hidden_lin.weight/bias,
    cells.{k}.layer_norm.{0..3}.weight/bias, cells.{k}.layer_norm_c.weight/bias.
    """

    _derived = ("_layers",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 eps: float = 1e-5, dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.input_size = v.positive_int(input_size, "input_size")
        self.hidden_size = v.positive_int(hidden_size, "hidden_size")
        self.num_layers = v.positive_int(num_layers, "num_layers")
        self.eps = float(eps)
        self._init_uniform(1.0 / math.sqrt(self.hidden_size))
        for name in self._params:  # LayerNorm starts as identity, as torch's
            if ".layer_norm" in name:
                self._params[name][:] = 1.0 if name.endswith("weight") else 0.0
        self._prepare()

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "",
                        dtype=None) -> LayerNormLSTM:
        params = select_prefix(state_dict, prefix)
        cells = {int(m.group(1)) for k in params if (m := _CELL.match(k))}
        if "cells.0.input_lin.weight" not in params:
            raise KeyError(f"no LayerNormLSTM weights under prefix {prefix!r} "
                           f"(expected {prefix}cells.0.input_lin.weight)")
        w_in = np.shape(params["cells.0.input_lin.weight"])
        dtype = dtype or v.dtype_of_weights(params["cells.0.input_lin.weight"])
        module = cls(int(w_in[1]), int(w_in[0]) // 4, max(cells) + 1, dtype=dtype)
        return module.load_state_dict(params)

    def _param_shapes(self):
        H, shapes = self.hidden_size, {}
        for k in range(self.num_layers):
            p = f"cells.{k}."
            shapes[p + "input_lin.weight"] = (4 * H, self.input_size if k == 0 else H)
            shapes[p + "hidden_lin.weight"] = (4 * H, H)
            shapes[p + "hidden_lin.bias"] = (4 * H,)
            for norm in [f"layer_norm.{n}" for n in range(4)] + ["layer_norm_c"]:
                shapes[p + norm + ".weight"] = (H,)
                shapes[p + norm + ".bias"] = (H,)
        return shapes

    def _prepare(self) -> None:
        """Each cell as an LSTM layer of the LayerNorm cell (numba_lstm.cells):
        input_lin as W_ih (no bias), hidden_lin as W_hh with b_hh, and the
        cell's parameters (11, H): the five norms' weights, their biases, eps."""
        layers, cell_params = [], []
        for k in range(self.num_layers):
            p = select_prefix(self._params, f"cells.{k}.")
            norms = [f"layer_norm.{n}" for n in range(4)] + ["layer_norm_c"]
            bias = p["hidden_lin.bias"]
            layers.append([(p["input_lin.weight"], p["hidden_lin.weight"], np.zeros_like(bias),
                            bias, None)])
            cell_params.append(np.stack(
                [p[n + ".weight"] for n in norms] + [p[n + ".bias"] for n in norms]
                + [np.full(self.hidden_size, self.eps)])[None])  # (1, 11, H)
        self._layers = self._backend().pack_stack(layers, self._dtype, LAYERNORM_LSTM,
                                                  cell_params)

    def __call__(self, input, hx=None):
        x = v.as_float_array(input, self._dtype, "input")
        if x.ndim not in (2, 3):
            raise ValueError(f"LayerNormLSTM: Expected input to be 2D or 3D, got {x.ndim}D "
                             "input instead")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. "
                               f"Expected {self.input_size}, got {x.shape[-1]}")
        batched = x.ndim == 3
        if not batched:
            x = x[:, None, :]
        B, lead = x.shape[1], (self.num_layers,) + ((x.shape[1],) if batched else ())
        if hx is None:
            h0 = c0 = np.zeros((self.num_layers, B, self.hidden_size), self._dtype)
        else:
            h0, c0 = v.as_state_pair(hx, self._dtype)
            for i, state in enumerate((h0, c0)):
                v.check_state(state, lead + (self.hidden_size,), f"hidden[{i}]")
            h0, c0 = h0.reshape(self.num_layers, B, -1), c0.reshape(self.num_layers, B, -1)
        out, h_n, c_n = self._backend().forward(self._layers, x, h0, c0, None)
        if not batched:
            return out[:, 0], (h_n[:, 0], c_n[:, 0])
        return out, (h_n, c_n)

    def _output_width(self) -> int:
        return self.hidden_size

    def _state_rows(self) -> int:
        return self.num_layers

    def _state_widths(self) -> tuple[int, ...]:
        return self.hidden_size, self.hidden_size

    def stream(self, batch_size: int | None = None) -> Stream:
        return Stream(self, batch_size)

    def copy_state(self, state):
        """A copy of ``state`` (h, c), as a stream keeps it."""
        return tuple(a.copy() for a in v.as_state_pair(state, self._dtype, "state"))

    def fast_stepper(self, x, state):
        return None  # every chunk takes the forward call

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        return s + (f", num_layers={self.num_layers}" if self.num_layers != 1 else "")
