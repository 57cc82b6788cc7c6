"""nl.LSTM: torch.nn.LSTM's interface and numbers, on NumPy arrays."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _validate as v
from .base import Module, select_prefix
from .stream import Stream

_LAYER_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


@dataclass(frozen=True)
class LSTMConfig:
    """Constructor arguments of an nn.LSTM, as read from its state_dict."""

    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    bidirectional: bool
    proj_size: int

    def kwargs(self) -> dict[str, Any]:
        return dict(num_layers=self.num_layers, bias=self.bias,
                    bidirectional=self.bidirectional, proj_size=self.proj_size)


def lstm_prefixes(state_dict: Mapping[str, Any]) -> list[str]:
    """Every prefix under which ``state_dict`` holds an LSTM (``""`` for a bare one)."""
    return sorted({k[: -len("weight_ih_l0")] for k in state_dict
                   if k.endswith("weight_ih_l0")})


def _check_lstm_shapes(prefix: str, w_ih: tuple, w_hh: tuple, w_hr: tuple | None) -> None:
    """Layer 0's shapes must agree on one LSTM: weight_ih (4H, I), weight_hh
    (4H, H) or, with a projection weight_hr (P, H), weight_hh (4H, P). A GRU's
    (3H, .) or an RNN's (H, .) weights fail here rather than be read as an LSTM
    of another hidden size."""
    names = f"{prefix}weight_ih_l0 {w_ih}, {prefix}weight_hh_l0 {w_hh}"
    if w_hr is not None:
        names += f", {prefix}weight_hr_l0 {w_hr}"
    expected = ("(4*hidden, input), (4*hidden, hidden)" if w_hr is None else
                "(4*hidden, input), (4*hidden, proj), (proj, hidden)")
    if len(w_ih) != 2 or len(w_hh) != 2 or (w_hr is not None and len(w_hr) != 2):
        raise ValueError(f"not an LSTM: {names}; expected 2-D shapes {expected}")
    rows, columns = w_hh
    hidden = rows // 4
    if rows % 4 or w_ih[0] != rows:
        problem = f"{rows} rows is not 4 x hidden" if rows % 4 else \
            f"weight_ih has {w_ih[0]} rows, weight_hh {rows}"
    elif w_hr is None and columns != hidden:
        problem = f"weight_hh has {rows} rows = 4 x {hidden}, but {columns} columns"
    elif w_hr is not None and (w_hr[1] != hidden or columns != w_hr[0]):
        problem = (f"with projection, weight_hr must be ({columns}, {hidden}) for "
                   f"weight_hh {w_hh}")
    else:
        return
    raise ValueError(f"not an LSTM: {names} disagree ({problem}); expected {expected}")


def infer_lstm_config(state_dict: Mapping[str, Any], prefix: str = "") -> LSTMConfig:
    """Read sizes, layers, bias, direction and projection from names and shapes."""
    params = select_prefix(state_dict, prefix)
    if "weight_ih_l0" not in params or "weight_hh_l0" not in params:
        found = lstm_prefixes(state_dict)
        raise KeyError(
            f"no LSTM weights under prefix {prefix!r} (expected {prefix}weight_ih_l0 and "
            f"{prefix}weight_hh_l0); LSTM prefixes found: {found or 'none'}"
        )
    w_ih = np.shape(params["weight_ih_l0"])
    w_hh = np.shape(params["weight_hh_l0"])
    w_hr = np.shape(params["weight_hr_l0"]) if "weight_hr_l0" in params else None
    _check_lstm_shapes(prefix, w_ih, w_hh, w_hr)
    layers = [int(m.group(2)) for k in params if (m := _LAYER_KEY.match(k))]
    proj = w_hr[0] if w_hr is not None else 0
    return LSTMConfig(
        input_size=int(w_ih[1]), hidden_size=int(w_hh[0]) // 4, num_layers=max(layers) + 1,
        bias="bias_ih_l0" in params, bidirectional="weight_ih_l0_reverse" in params,
        proj_size=int(proj),
    )


class LSTM(Module):
    """Multi-layer LSTM over NumPy arrays, as ``torch.nn.LSTM`` at inference.

    ``lstm(input, hx=None, *, lengths=None)`` returns ``output, (h_n, c_n)`` with
    torch's shapes; ``lengths`` gives packed-sequence semantics for right-padded
    batches. ``dropout`` is validated and has no effect (inference).
    """

    _derived = ("_layers",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, *,
                 dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.input_size = v.positive_int(input_size, "input_size")
        self.hidden_size = v.positive_int(hidden_size, "hidden_size")
        self.num_layers = v.positive_int(num_layers, "num_layers")
        self.proj_size = v.positive_int(proj_size, "proj_size", allow_zero=True)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size has to be smaller than hidden_size, "
                             f"got proj_size={proj_size}, hidden_size={hidden_size}")
        self.dropout = v.check_dropout(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=2)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self._init_uniform(1.0 / math.sqrt(self.hidden_size))
        self._prepare()

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "",
                        batch_first: bool = False, dtype=None) -> LSTM:
        """Build an LSTM whose configuration is inferred from ``state_dict``.

        ``prefix`` selects a sub-module (``"lstm."`` in a whole model's state_dict);
        ``dtype=None`` keeps float64 weights float64 and makes anything else float32.
        """
        config = infer_lstm_config(state_dict, prefix)
        params = select_prefix(state_dict, prefix)
        if dtype is None:
            dtype = v.dtype_of_weights(params["weight_hh_l0"])
        module = cls(config.input_size, config.hidden_size, batch_first=batch_first,
                     dtype=dtype, **config.kwargs())
        return module.load_state_dict(params)

    # -- shapes ---------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """H_out: proj_size if projecting, else hidden_size."""
        return self.proj_size or self.hidden_size

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        H, H_out, D = self.hidden_size, self.output_size, self.num_directions
        shapes = {}
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[:D]:
                k = f"_l{layer}{suffix}"
                in_size = self.input_size if layer == 0 else D * H_out
                shapes["weight_ih" + k] = (4 * H, in_size)
                shapes["weight_hh" + k] = (4 * H, H_out)
                if self.bias:
                    shapes["bias_ih" + k] = (4 * H,)
                    shapes["bias_hh" + k] = (4 * H,)
                if self.proj_size:
                    shapes["weight_hr" + k] = (self.proj_size, H)
        return shapes

    def _prepare(self) -> None:
        backend = self._backend()
        p = self._params
        self._layers = backend.pack_stack([
            [tuple(p.get(f"{name}_l{layer}{suffix}") for name in
                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))
             for suffix in ("", "_reverse")[: self.num_directions]]
            for layer in range(self.num_layers)
        ], self._dtype)

    # -- forward --------------------------------------------------------------------------
    def __call__(self, input, hx=None, *, lengths=None):
        """input (T, I) unbatched, (T, B, I), or (B, T, I) if batch_first.

        Returns output (T, B, D*H_out) (batch-first if so built; no B axis when
        unbatched) and (h_n (D*L, B, H_out), c_n (D*L, B, H)).
        """
        backend = self._backend()
        x = self._as_array(input, "input")
        if x.ndim not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {x.ndim}D input instead")
        if tuple(x.shape)[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. "
                               f"Expected {self.input_size}, got {tuple(x.shape)[-1]}")
        batched = x.ndim == 3
        if not batched:
            if lengths is not None:
                raise ValueError("lengths is only supported for batched 3-D input, "
                                 f"got unbatched input of shape {v.fmt_shape(x.shape)}")
            x = x.reshape((x.shape[0], 1, x.shape[1]))
        elif self.batch_first:
            x = self._swap_leading_axes(x)
        T, B = x.shape[:2]
        h0, c0 = self._initial_state(hx, B, batched)
        if lengths is not None:
            if self._on_device(lengths):
                raise RuntimeError("lengths must be a host (NumPy) integer array, as torch "
                                   "wants CPU int64 lengths; got a GPU array")
            lengths = v.check_lengths(lengths, B, T)
        out, h_n, c_n = backend.lstm_forward(self._layers, x, h0, c0, lengths)
        if not batched:
            n, _, H_out = h_n.shape
            return (out.reshape((T, out.shape[2])),
                    (h_n.reshape((n, H_out)), c_n.reshape((n, c_n.shape[2]))))
        if self.batch_first:
            out = self._swap_leading_axes(out)
        return out, (h_n, c_n)

    def _stream_stepper(self, x, state):
        """Stream's fast path for the chunks after x, starting at ``state`` (which
        this module returned for x): cpu.StackStepper when x was one step at
        batch 1 and the stack has a one-call kernel, else None."""
        if self._device != "cpu" or self._layers.step is None or x.size != self.input_size:
            return None
        return self._backend().StackStepper(self._layers, *state, batched=state[0].ndim == 3)

    # The shapes of a call's results, for callers that build them lazily (numba_lstm.dask).
    def _output_width(self) -> int:
        return self.num_directions * self.output_size

    def _state_rows(self) -> int:
        return self.num_layers * self.num_directions

    def _state_widths(self) -> tuple[int, ...]:
        return self.output_size, self.hidden_size

    def stream(self, batch_size: int | None = None) -> Stream:
        """A stateful stream: ``y = stream(chunk)`` carries (h, c) between calls."""
        return Stream(self, batch_size)

    def _initial_state(self, hx, batch: int, batched: bool):
        """(h0, c0) as (L*D, B, H_out), (L*D, B, H), or (None, None) for zeros.

        On a GPU module, hx parts that already live on the GPU stay there.
        """
        if hx is None:
            return None, None
        h0, c0 = v.check_hx_pair(hx)
        h0, c0 = (self._as_array(s, f"hx[{k}]") for k, s in enumerate((h0, c0)))
        n = self.num_layers * self.num_directions
        rank = 3 if batched else 2
        if h0.ndim != rank or c0.ndim != rank:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(f"For {kind} input, hx and cx should also be {rank}-D but got "
                               f"({h0.ndim}-D, {c0.ndim}-D) tensors")
        h_shape, c_shape = (n, batch, self.output_size), (n, batch, self.hidden_size)
        if not batched:
            v.check_state(h0, (n, self.output_size), "hidden[0]")
            v.check_state(c0, (n, self.hidden_size), "hidden[1]")
            return h0.reshape(h_shape), c0.reshape(c_shape)
        v.check_state(h0, h_shape, "hidden[0]")
        v.check_state(c0, c_shape, "hidden[1]")
        return h0, c0

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s
