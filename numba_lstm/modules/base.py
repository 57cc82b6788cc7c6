"""What every module shares: torch-named parameters, state_dict I/O, dtype,
device, pickling and repr. Subclasses declare their parameter shapes and how to
lay the parameters out for a backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import quantization as quant
from . import _validate as v


class StateDictError(KeyError, ValueError):
    """A state_dict that does not fit a module: missing or unexpected names
    (torch's KeyError side) and shape mismatches (the ValueError side), all listed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # not KeyError's quoted repr


def select_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state_dict`` under ``prefix``, with the prefix removed."""
    if not prefix:
        return dict(state_dict)
    return {k[len(prefix):]: val for k, val in state_dict.items() if k.startswith(prefix)}


_BACKENDS: dict[str, Any] = {}


def backend_for(device: str):
    backend = _BACKENDS.get(device)
    if backend is None:
        backend = _BACKENDS[device] = _import_backend(device)
    return backend


def _import_backend(device: str):
    if device == "cpu":
        from .. import cpu

        return cpu
    from .. import cuda  # imported lazily: CPU users never need CUDA

    return cuda.load_backend()


class Module:
    """Base class: parameters live in ``self._params`` (name -> array, module dtype).

    A quantized module (``quantize``) keeps its weight matrices as stored
    (``self._stored``: name -> numba_lstm.quantization tensors) and the rest
    (biases) in ``_params``; the float32 values the matrices stand for are
    made for the backends when they pack them (``_float_params``), not kept.
    """

    _quantizable = False  # LSTM, GRU, RNN, their cells and Linear set it
    _weights = quant.FLOAT
    _stored: dict[str, tuple] = {}  # replaced, never mutated: a shared empty default

    def __init__(self, dtype="float32", device="cpu"):
        self._dtype = v.resolve_dtype(dtype)
        self._device = v.resolve_device(device)
        self._params: dict[str, np.ndarray] = {}

    # -- to be provided by subclasses -------------------------------------------------
    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Lay the parameters out for the backend; called after every change to them."""

    def extra_repr(self) -> str:
        return ""

    # -- parameters ---------------------------------------------------------------------
    def _init_uniform(self, bound: float, rng=None) -> None:
        rng = np.random.default_rng() if rng is None else rng
        self._params = {
            name: rng.uniform(-bound, bound, size=shape).astype(self._dtype)
            for name, shape in self._param_shapes().items()
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters under torch's names. A quantized module's
        matrices are its stored tensors (int8 with ``<name>_scale`` beside, or
        bfloat16 bits as uint16); docs/quantization.md."""
        out = {}
        for name in self._param_shapes():
            if name in self._params:
                out[name] = self._params[name].copy()
            elif name in self._stored:
                out.update(quant.stored_entries(self._weights, name, self._stored[name]))
        return out

    def _float_params(self) -> dict[str, np.ndarray]:
        """Every parameter's values in the module's dtype, for a backend to pack:
        a stored matrix's made from its stored form for this call (the same
        bits each time), the others as they are."""
        return {name: self._params[name] if name in self._params
                else quant.values(self._weights, self._stored[name])
                for name in self._param_shapes() if name in self._params or name in self._stored}

    # -- reduced-precision weights ------------------------------------------------------
    @property
    def weights(self) -> str:
        """How the weight matrices are stored: "float32" (or the module's dtype),
        "int8" or "bfloat16"."""
        return self._weights if self._stored else self._dtype.name

    def _matrix_names(self) -> list[str]:
        return [name for name, shape in self._param_shapes().items()
                if len(shape) == 2 and name.startswith("weight")]

    def quantize(self, weights: str):
        """A new module of the same class with its weight matrices stored as
        ``weights`` ("int8" or "bfloat16"); biases, states and arithmetic stay
        float32. This module is untouched."""
        quant.check_format(weights)
        if not self._quantizable:
            raise TypeError(f"{type(self).__name__} has no quantized form; LSTM, GRU, RNN, "
                            "their cells and Linear do")
        if self._stored:
            raise ValueError(f"this {type(self).__name__} is already quantized "
                             f"({self._weights}); quantize the float module instead")
        new = object.__new__(type(self))
        new.__dict__.update(self.__getstate__())
        new._dtype = np.dtype(np.float32)
        new._weights = weights
        new._stored = {name: quant.store(weights, self._params[name].astype(np.float32))
                       for name in self._matrix_names()}
        new._params = {k: p.astype(np.float32) for k, p in self._params.items()
                       if k not in new._stored}
        new._prepare()
        return new

    def _take_format_of(self, state_dict: Mapping[str, Any]):
        """Before loading a state_dict into a new module: store its matrices
        the way the state_dict does (from_state_dict restores a quantized module)."""
        weights = quant.format_of(state_dict, self._matrix_names())
        if weights != quant.FLOAT:
            if not self._quantizable:
                raise TypeError(f"{type(self).__name__} has no quantized form, but the "
                                f"state_dict holds {weights} weights")
            if self._dtype != np.float32:
                raise ValueError(f"a module with {weights} weights computes in float32, "
                                 f"not {self._dtype.name}")
            self._weights = weights
            self._stored = {name: () for name in self._matrix_names()}  # filled by the load
        return self

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True):
        """Load torch-named parameters (anything ``np.asarray`` accepts).

        Every problem is reported in one StateDictError (a KeyError and a
        ValueError): with strict, missing and unexpected names; always, shape
        mismatches. Nothing is loaded unless everything fits.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        shapes = self._param_shapes()
        given = quant.format_of(state_dict, self._matrix_names())
        expected = self._weights if self._stored else quant.FLOAT
        if given != expected:
            how = ("use from_state_dict, which takes the state_dict's format"
                   if expected == quant.FLOAT else "quantize the float weights first")
            raise StateDictError(f"Error(s) in loading state_dict for {type(self).__name__}:\n"
                                 f"  the module stores {expected} weights, the state_dict "
                                 f"{given} ({how})")
        names = set(shapes)
        if expected == "int8":
            names |= {n + quant.SCALE_SUFFIX for n in self._stored}
        problems = []
        if strict:
            missing = [k for k in shapes if k not in state_dict]
            unexpected = [str(k) for k in state_dict if k not in names]
            if missing:
                problems.append("missing keys: " + ", ".join(missing))
            if unexpected:
                problems.append("unexpected keys: " + ", ".join(unexpected))
        loaded, stored = {}, {}
        for name, shape in shapes.items():
            if name not in state_dict:
                continue
            if name in self._stored:
                stored[name], found = quant.read_entries(expected, state_dict, name, shape)
                problems.extend(found)
                continue
            value = v.as_float_array(state_dict[name], self._dtype, f"state_dict[{name!r}]")
            if value.shape != shape:
                problems.append(f"size mismatch for {name}: expected {v.fmt_shape(shape)}, "
                                f"got {v.fmt_shape(value.shape)}")
            loaded[name] = value.copy()
        if problems:
            raise StateDictError(f"Error(s) in loading state_dict for {type(self).__name__}:\n  "
                                 + "\n  ".join(problems))
        self._params.update(loaded)
        if stored:
            self._stored = dict(self._stored, **stored)
            for name in stored:  # its values are made from the stored form from now on
                self._params.pop(name, None)
        self._prepare()
        return self

    # -- dtype / device -----------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def device(self) -> str:
        return self._device

    def to(self, device=None, dtype=None):
        """Move to ``device`` and/or convert to ``dtype`` in place; returns self."""
        if dtype is not None:
            if self._stored and v.resolve_dtype(dtype) != np.float32:
                raise ValueError(f"a module with {self._weights} weights computes in float32; "
                                 f"got dtype={dtype!r}")
            self._dtype = v.resolve_dtype(dtype)
            self._params = {k: p.astype(self._dtype) for k, p in self._params.items()}
        if device is not None:
            self._device = v.resolve_device(device)
        self._prepare()
        return self

    def _backend(self):
        return backend_for(self._device)

    def _on_device(self, value) -> bool:
        """Whether ``value`` is a GPU array this (GPU) module takes without a copy."""
        return self._device != "cpu" and self._backend().is_device_array(value)

    def _as_array(self, value, what: str):
        """``value`` in the module's dtype: a GPU array stays where it is (the
        backend checks it, no copy); anything else becomes a NumPy array."""
        if self._on_device(value):
            return self._backend().as_input(value, self._dtype, what)
        return v.as_float_array(value, self._dtype, what)

    def _swap_leading_axes(self, x, stream=None):
        """(T, B, ...) <-> (B, T, ...) as a new C-contiguous array where x lives:
        a GPU array on the GPU, a NumPy array on the host (NumPy in, NumPy out)."""
        if self._on_device(x):
            return self._backend().swap_leading_axes(x, stream)
        return np.ascontiguousarray(np.swapaxes(x, 0, 1))

    def _stream_kwargs(self, stream, like) -> dict:
        """The backend's ``stream`` keyword for a call: none on the CPU (where
        passing one is an error); on a GPU the caller's stream, else ``like``'s
        own (numba_lstm.cuda.backend.resolve_stream)."""
        if self._device == "cpu":
            if stream is not None:
                raise ValueError(f"stream= is for modules on device='cuda'; this "
                                 f"{type(self).__name__} is on the CPU")
            return {}
        return {"stream": self._backend().resolve_stream(stream, like)}

    # -- pickling and repr --------------------------------------------------------------
    _derived: tuple[str, ...] = ()

    def __getstate__(self):
        # Weights and config only: derived layouts are rebuilt where it is unpickled.
        return {k: val for k, val in self.__dict__.items() if k not in self._derived}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._prepare()

    def __repr__(self) -> str:
        extra = self.extra_repr()
        if self._dtype != np.float32:
            extra += f", dtype={self._dtype.name}"
        if self._stored:
            extra += f", weights={self._weights!r}"
        if self._device != "cpu":
            extra += f", device={self._device!r}"
        return f"{type(self).__name__}({extra})"
