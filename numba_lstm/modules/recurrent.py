"""The recurrent base shared by nl.LSTM, nl.GRU and nl.RNN (as torch's RNNBase):
constructor checks, torch's parameter names, config inference from a
state_dict, the forward call, hx, lengths, streams. A subclass names its cell
(numba_lstm.cells) and what differs in its state."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cells import Cell
from . import _validate as v
from .base import Module, select_prefix
from .stream import Stream

_LAYER_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")
_FAMILY_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass(frozen=True)
class RecurrentConfig:
    """Constructor arguments of an nn.LSTM / nn.GRU / nn.RNN, read from its state_dict."""

    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    bidirectional: bool
    proj_size: int = 0

    def kwargs(self) -> dict[str, Any]:
        kw = dict(num_layers=self.num_layers, bias=self.bias, bidirectional=self.bidirectional)
        if self.proj_size:
            kw["proj_size"] = self.proj_size
        return kw


def recurrent_prefixes(state_dict: Mapping[str, Any]) -> list[str]:
    """Every prefix under which ``state_dict`` holds a recurrent layer stack."""
    return sorted({k[: -len("weight_ih_l0")] for k in state_dict
                   if k.endswith("weight_ih_l0")})


def family_of(state_dict: Mapping[str, Any], prefix: str = "") -> str:
    """"LSTM", "GRU" or "RNN", from layer 0's shapes: weight_hh has 4, 3 or 1
    times as many rows as columns (a weight_hr, a projection, means an LSTM).
    A KeyError without weights under ``prefix``, a ValueError when the shapes
    fit none of the three."""
    params = select_prefix(state_dict, prefix)
    if "weight_ih_l0" not in params or "weight_hh_l0" not in params:
        raise KeyError(
            f"no LSTM, GRU or RNN weights under prefix {prefix!r} (expected "
            f"{prefix}weight_ih_l0 and {prefix}weight_hh_l0); prefixes with recurrent "
            f"weights: {recurrent_prefixes(state_dict) or 'none'}")
    w_ih, w_hh = np.shape(params["weight_ih_l0"]), np.shape(params["weight_hh_l0"])
    shapes = f"{prefix}weight_ih_l0 {w_ih}, {prefix}weight_hh_l0 {w_hh}"
    if "weight_hr_l0" in params:
        return "LSTM"  # a projection: only LSTMs have one, checked by infer_config
    if len(w_ih) == 2 and len(w_hh) == 2 and w_ih[0] == w_hh[0] and w_hh[1] > 0:
        for family, gates in _FAMILY_GATES.items():
            if w_hh[0] == gates * w_hh[1]:
                return family
    raise ValueError(f"not an LSTM, GRU or RNN: {shapes}; expected weight_hh (k*hidden, "
                     "hidden) and weight_ih (k*hidden, input) with k = 4 (LSTM), 3 (GRU) "
                     "or 1 (RNN)")


def check_layer0_shapes(family: str, prefix: str, w_ih: tuple, w_hh: tuple,
                        w_hr: tuple | None) -> None:
    """Layer 0's shapes must agree on one network of ``family``: weight_ih
    (k*H, I), weight_hh (k*H, H) or, with an LSTM's projection weight_hr (P, H),
    weight_hh (4H, P). Another family's weights fail here rather than be read
    as this family with another hidden size."""
    k = _FAMILY_GATES[family]
    gates = f"{k}*hidden" if k > 1 else "hidden"
    names = f"{prefix}weight_ih_l0 {w_ih}, {prefix}weight_hh_l0 {w_hh}"
    if w_hr is not None:
        names += f", {prefix}weight_hr_l0 {w_hr}"
    expected = (f"({gates}, input), ({gates}, hidden)" if w_hr is None else
                f"({gates}, input), ({gates}, proj), (proj, hidden)")
    if len(w_ih) != 2 or len(w_hh) != 2 or (w_hr is not None and len(w_hr) != 2):
        raise ValueError(f"not an {family}: {names}; expected 2-D shapes {expected}")
    rows, columns = w_hh
    hidden = rows // k
    if w_hr is not None and family != "LSTM":
        problem = "weight_hr is a projection, which only an LSTM has"
    elif rows % k or w_ih[0] != rows:
        problem = f"{rows} rows is not {k} x hidden" if rows % k else \
            f"weight_ih has {w_ih[0]} rows, weight_hh {rows}"
    elif w_hr is None and columns != hidden:
        problem = f"weight_hh has {rows} rows = {k} x {hidden}, but {columns} columns"
    elif w_hr is not None and (w_hr[1] != hidden or columns != w_hr[0]):
        problem = (f"with projection, weight_hr must be ({columns}, {hidden}) for "
                   f"weight_hh {w_hh}")
    else:
        return
    an = "an" if family[0] in "AEIOU LR" else "a"
    raise ValueError(f"not {an} {family}: {names} disagree ({problem}); expected {expected}")


def infer_config(state_dict: Mapping[str, Any], prefix: str = "",
                 family: str = "LSTM") -> RecurrentConfig:
    """Read sizes, layers, bias, direction and projection from names and shapes."""
    params = select_prefix(state_dict, prefix)
    if "weight_ih_l0" not in params or "weight_hh_l0" not in params:
        found = recurrent_prefixes(state_dict)
        raise KeyError(
            f"no {family} weights under prefix {prefix!r} (expected {prefix}weight_ih_l0 and "
            f"{prefix}weight_hh_l0); prefixes with recurrent weights: {found or 'none'}")
    w_ih = np.shape(params["weight_ih_l0"])
    w_hh = np.shape(params["weight_hh_l0"])
    w_hr = np.shape(params["weight_hr_l0"]) if "weight_hr_l0" in params else None
    check_layer0_shapes(family, prefix, w_ih, w_hh, w_hr)
    layers = [int(m.group(2)) for k in params if (m := _LAYER_KEY.match(k))]
    return RecurrentConfig(
        input_size=int(w_ih[1]), hidden_size=int(w_hh[0]) // _FAMILY_GATES[family],
        num_layers=max(layers) + 1, bias="bias_ih_l0" in params,
        bidirectional="weight_ih_l0_reverse" in params,
        proj_size=int(w_hr[0]) if w_hr is not None else 0)


class RNNBase(Module):
    """What LSTM, GRU and RNN share. Subclasses set ``family`` and ``_cell``."""

    family = ""
    _derived = ("_layers",)
    _quantizable = True

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
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self._init_uniform(1.0 / math.sqrt(self.hidden_size))
        self._prepare()

    @property
    def _cell(self) -> Cell:
        raise NotImplementedError

    @classmethod
    def _from_config(cls, config: RecurrentConfig, batch_first: bool, dtype, **extra):
        return cls(config.input_size, config.hidden_size, batch_first=batch_first,
                   dtype=dtype, **config.kwargs(), **extra)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "",
                        batch_first: bool = False, dtype=None, **extra):
        """Build a module whose configuration is inferred from ``state_dict``.

        ``prefix`` selects a sub-module (``"lstm."`` in a whole model's state_dict);
        ``dtype=None`` keeps float64 weights float64 and makes anything else float32.
        """
        config = infer_config(state_dict, prefix, cls.family)
        params = select_prefix(state_dict, prefix)
        if dtype is None:
            dtype = v.dtype_of_weights(params["weight_hh_l0"])
        module = cls._from_config(config, batch_first, dtype, **extra)
        return module._take_format_of(params).load_state_dict(params)

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
        G = self._cell.gates * H
        shapes = {}
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[:D]:
                k = f"_l{layer}{suffix}"
                in_size = self.input_size if layer == 0 else D * H_out
                shapes["weight_ih" + k] = (G, in_size)
                shapes["weight_hh" + k] = (G, H_out)
                if self.bias:
                    shapes["bias_ih" + k] = (G,)
                    shapes["bias_hh" + k] = (G,)
                if self.proj_size:
                    shapes["weight_hr" + k] = (self.proj_size, H)
        return shapes

    def _prepare(self) -> None:
        p = self._float_params()
        suffixes = ("", "_reverse")[: self.num_directions]
        extra = {}
        if self._stored:  # the stored W_hh and W_ih too: what quantized kernels read
            extra["quantized"] = (self._weights, *([
                [self._stored[f"{name}_l{layer}{suffix}"] for suffix in suffixes]
                for layer in range(self.num_layers)] for name in ("weight_hh", "weight_ih")))
        self._layers = self._backend().pack_stack([
            [tuple(p.get(f"{name}_l{layer}{suffix}") for name in
                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))
             for suffix in suffixes]
            for layer in range(self.num_layers)
        ], self._dtype, self._cell, **extra)

    # The state: h, or (h, c) for an LSTM, each (D*L, B, width).
    def _state_widths(self) -> tuple[int, ...]:
        return (self.output_size, self.hidden_size)[:len(self._cell.states)]

    def _state_rows(self) -> int:
        return self.num_layers * self.num_directions

    def _output_width(self) -> int:
        return self.num_directions * self.output_size

    def _state_parts(self, hx, what: str = "hx") -> tuple:
        """hx as a tuple of its parts: (h, c) for an LSTM (a pair required), (h,) else."""
        if len(self._cell.states) == 1:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"{what} for {self.family} must be one array h_0, got a "
                                f"{type(hx).__name__}")
            return (hx,)
        return tuple(v.check_hx_pair(hx, what))

    def _state_value(self, parts: tuple):
        """The inverse of _state_parts: what the caller sees."""
        return parts if len(parts) > 1 else parts[0]

    # -- forward --------------------------------------------------------------------------
    def __call__(self, input, hx=None, *, lengths=None, stream=None):
        """input (T, I) unbatched, (T, B, I), or (B, T, I) if batch_first.

        Returns output (T, B, D*H_out) (batch-first if so built; no B axis when
        unbatched) and h_n (D*L, B, H_out), or (h_n, c_n) for an LSTM. On a GPU,
        the work goes on ``stream`` (a numba, torch or CuPy stream, or a handle)
        or else on the stream the input's producer declared (docs/cuda.md).
        """
        backend = self._backend()
        x = self._as_array(input, "input")
        on_stream = self._stream_kwargs(stream, x)
        if x.ndim not in (2, 3):
            raise ValueError(f"{self.family}: Expected input to be 2D or 3D, got {x.ndim}D "
                             "input instead")
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
            x = self._swap_leading_axes(x, **on_stream)
        T, B = x.shape[:2]
        h0, c0 = self._initial_state(hx, B, batched)
        if lengths is not None:
            if self._on_device(lengths):
                raise RuntimeError("lengths must be a host (NumPy) integer array, as torch "
                                   "wants CPU int64 lengths; got a GPU array")
            lengths = v.check_lengths(lengths, B, T)
        out, h_n, c_n = backend.forward(self._layers, x, h0, c0, lengths, **on_stream)
        states = (h_n, c_n)[:len(self._cell.states)]
        if not batched:
            out = out.reshape((T, out.shape[2]))
            states = tuple(s.reshape((s.shape[0], s.shape[2])) for s in states)
        elif self.batch_first:
            out = self._swap_leading_axes(out, **on_stream)
        return out, self._state_value(states)

    def _initial_state(self, hx, batch: int, batched: bool):
        """(h0, c0) as (L*D, B, H_out), (L*D, B, H) (c0 None without a cell state),
        or (None, None) for zeros. On a GPU module, parts on the GPU stay there."""
        if hx is None:
            return None, None
        parts = tuple(self._as_array(s, f"hx[{k}]" if len(self._cell.states) > 1 else "hx")
                      for k, s in enumerate(self._state_parts(hx)))
        n = self._state_rows()
        rank = 3 if batched else 2
        if any(p.ndim != rank for p in parts):
            kind = "batched 3-D" if batched else "unbatched 2-D"
            names = "hx and cx" if len(parts) > 1 else "hx"
            dims = ", ".join(f"{p.ndim}-D" for p in parts)
            raise RuntimeError(f"For {kind} input, {names} should also be {rank}-D but got "
                               f"({dims}) tensors")
        checked = []
        for k, (p, width) in enumerate(zip(parts, self._state_widths(), strict=True)):
            shape = (n, batch, width) if batched else (n, width)
            v.check_state(p, shape, f"hidden[{k}]" if len(parts) > 1 else "hidden")
            checked.append(p if batched else p.reshape((n, batch, width)))
        return (checked[0], checked[1] if len(checked) > 1 else None)

    # -- streams --------------------------------------------------------------------------
    def stream(self, batch_size: int | None = None) -> Stream:
        """A stateful stream: ``y = stream(chunk)`` carries the state between calls."""
        return Stream(self, batch_size)

    def copy_state(self, state):
        """A copy of ``state`` (h, or (h, c) for an LSTM, as hx), where it lives:
        what a stream keeps so that the caller's later writes do not change it."""
        parts = tuple(self._as_array(s, f"state[{k}]")
                      for k, s in enumerate(self._state_parts(state, "state")))
        return self._state_value(tuple(self._backend().copy(s) if self._on_device(s)
                                       else s.copy() for s in parts))

    def fast_stepper(self, x, state):
        """A one-call stepper for a stream's next chunks, starting at ``state``
        (which this module returned for chunk x), or None; see Stream."""
        return None

    def stepper_is_current(self, stepper) -> bool:
        """Whether ``stepper`` (from fast_stepper) still runs this module's weights."""
        return stepper.layers is self._layers

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
