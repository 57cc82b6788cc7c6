"""Argument checks for the object API: torch's exception types, messages naming
what was expected and what came. Everything that reaches a kernel passed here."""

from __future__ import annotations

import numbers

import numpy as np

DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def resolve_dtype(dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    # Not `resolved in DTYPES.values()`: NumPy compares None equal to float64.
    if resolved is None or dtype is None or resolved.name not in DTYPES:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def dtype_of_weights(weight) -> str:
    """from_state_dict's dtype=None: float64 weights stay float64, all else is float32."""
    return "float64" if np.asarray(weight).dtype == np.float64 else "float32"


def resolve_device(device) -> str:
    name = str(device)
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return name


def positive_int(value, name: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    value = int(value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "greater than zero"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_dropout(dropout) -> float:
    if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Number)
            or not 0 <= dropout <= 1):
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability "
            f"of an element being zeroed, got {dropout!r}"
        )
    return float(dropout)


def as_float_array(value, dtype: np.dtype, what: str) -> np.ndarray:
    """A C-contiguous copy-if-needed of ``value`` in ``dtype``; never a view we write to."""
    try:
        array = np.asarray(value)
    except Exception as exc:  # e.g. a CUDA tensor on a CPU module
        raise TypeError(f"{what} must be array-like, got {type(value).__name__}: {exc}") from None
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a real numeric array, got dtype {array.dtype}")
    return np.asarray(array, dtype=dtype, order="C")  # keeps 0-d, unlike ascontiguousarray


def fmt_shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def check_hx_pair(hx, what: str = "hx"):
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{what} must be a tuple (h_0, c_0), got {type(hx).__name__}")
    return hx


def as_state_pair(hx, dtype: np.dtype, what: str = "hx"):
    """(h, c) converted like any input; a TypeError unless hx is a pair."""
    h, c = check_hx_pair(hx, what)
    return as_float_array(h, dtype, f"{what}[0]"), as_float_array(c, dtype, f"{what}[1]")


def check_state(array: np.ndarray, expected: tuple, name: str) -> None:
    if array.shape != tuple(expected):
        raise RuntimeError(
            f"Expected {name} size {fmt_shape(expected)}, got {list(array.shape)}"
        )


def check_lengths(lengths, batch: int, steps: int) -> np.ndarray:
    """(B,) int64 lengths, each in [1, T]."""
    array = np.asarray(lengths)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array, got dtype {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(
            f"lengths must have shape (batch,) = ({batch},), got {fmt_shape(array.shape)}"
        )
    if batch and (array.min() < 1 or array.max() > steps):
        bad = array[(array < 1) | (array > steps)]
        raise ValueError(
            f"lengths must lie in [1, {steps}] (the input's time steps), got {bad.tolist()}"
        )
    return np.ascontiguousarray(array, dtype=np.int64)
