"""Reduced-precision weight formats: how a weight matrix is stored, and the
float32 values it stands for. Pure NumPy; the modules keep the stored
tensors (state_dict, files, pickles) and make the values when the backend
packs its layouts.

- ``int8``: per output row (each row of torch's (out, in) weight) a float32
  scale s = max|w_row| / 127 and q = round(w / s) in [-127, 127]; the value
  is q * s. Symmetric, no zero point, so a row of zeros stays zeros.
- ``bfloat16``: the upper 16 bits of the float32, rounded to nearest even;
  NumPy has no bfloat16, so the bits are stored as uint16.

Activations, states, biases and the arithmetic stay float32: only the matrices
are reduced, so a sequence's result never depends on the rest of its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

FLOAT = "float32"
FORMATS = ("int8", "bfloat16")
SCALE_SUFFIX = "_scale"


def check_format(weights) -> str:
    if weights not in FORMATS:
        raise ValueError(f"weights must be one of {', '.join(map(repr, FORMATS))}, "
                         f"got {weights!r}")
    return weights


# -- int8 ---------------------------------------------------------------------------------
def int8_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w (out, in) -> (q int8 (out, in), scale float32 (out,))."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1) if w.size else np.zeros(w.shape[0], np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(w / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale


def int8_values(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale.astype(np.float32)[:, None]


# -- bfloat16 -----------------------------------------------------------------------------
def bfloat16_bits(w: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(w, np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))
    out = (rounded >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(w, np.float32))
    out[nan] = (bits[nan] >> 16).astype(np.uint16) | np.uint16(0x40)  # quiet, sign kept
    return out


def bfloat16_values(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


# -- a module's stored tensors ------------------------------------------------------------
def store(weights: str, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """The stored tensors of one matrix: (q, scale) for int8, (bits,) for bfloat16."""
    return int8_rows(w) if weights == "int8" else (bfloat16_bits(w),)


def values(weights: str, stored: tuple[np.ndarray, ...]) -> np.ndarray:
    """The float32 values a stored matrix stands for."""
    return int8_values(*stored) if weights == "int8" else bfloat16_values(stored[0])


def format_of(state_dict: Mapping[str, Any], names) -> str:
    """The weight format of a state_dict's matrices ``names``: int8 tensors with
    a scale beside them, uint16 bfloat16 bits, or float. Mixed formats are an
    error: a module stores all its matrices one way."""
    found = set()
    for name in names:
        if name not in state_dict:
            continue
        dtype = np.asarray(state_dict[name]).dtype
        if dtype == np.int8 and name + SCALE_SUFFIX in state_dict:
            found.add("int8")
        elif dtype == np.uint16:
            found.add("bfloat16")
        else:
            found.add(FLOAT)
    if len(found) > 1:
        raise ValueError(f"the state_dict mixes weight formats ({', '.join(sorted(found))}); "
                         "a module stores all its weight matrices one way")
    return found.pop() if found else FLOAT


def stored_entries(weights: str, name: str, stored: tuple[np.ndarray, ...]) -> dict:
    """A stored matrix as state_dict entries: torch's name for the tensor, and
    ``<name>_scale`` beside it for int8."""
    if weights == "int8":
        return {name: stored[0].copy(), name + SCALE_SUFFIX: stored[1].copy()}
    return {name: stored[0].copy()}


def read_entries(weights: str, state_dict: Mapping[str, Any], name: str,
                 shape: tuple[int, ...]) -> tuple[tuple[np.ndarray, ...], list[str]]:
    """One matrix's stored tensors from a state_dict, and the problems found."""
    tensor = np.asarray(state_dict[name])
    problems = []
    if tensor.shape != shape:
        problems.append(f"size mismatch for {name}: expected {tuple(shape)}, "
                        f"got {tuple(tensor.shape)}")
    if weights == "int8":
        scale = np.asarray(state_dict.get(name + SCALE_SUFFIX, np.zeros(0)))
        if tensor.dtype != np.int8:
            problems.append(f"{name}: an int8 module needs int8 weights, got {tensor.dtype}")
        if scale.shape != shape[:1] or scale.dtype.kind != "f":
            problems.append(f"{name}{SCALE_SUFFIX}: expected float {tuple(shape[:1])}, got "
                            f"{scale.dtype} {tuple(scale.shape)}")
        return (np.array(tensor, np.int8), np.array(scale, np.float32)), problems
    if tensor.dtype != np.uint16:
        problems.append(f"{name}: a bfloat16 module needs uint16 bit patterns, got "
                        f"{tensor.dtype}")
    return (np.array(tensor, np.uint16),), problems
