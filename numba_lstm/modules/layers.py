"""Companion layers so whole models run: nl.Linear and nl.Embedding (torch names)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _validate as v
from .base import Module, select_prefix


class Linear(Module):
    """y = x @ weight^T + bias, as torch.nn.Linear; x (..., in_features)."""

    _quantizable = True
    _derived = ("_weight",)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.in_features = v.positive_int(in_features, "in_features")
        self.out_features = v.positive_int(out_features, "out_features")
        self.bias = bool(bias)
        self._init_uniform(1.0 / math.sqrt(self.in_features))
        self._prepare()

    def _prepare(self) -> None:
        # Each call multiplies by it: a quantized Linear keeps its float32 values.
        self._weight = self._float_params()["weight"]

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "",
                        dtype=None) -> Linear:
        params = select_prefix(state_dict, prefix)
        if "weight" not in params:
            raise KeyError(f"no Linear weight under prefix {prefix!r} (expected {prefix}weight)")
        out_f, in_f = np.shape(params["weight"])
        dtype = dtype or v.dtype_of_weights(params["weight"])
        module = cls(in_f, out_f, bias="bias" in params, dtype=dtype)
        return module._take_format_of(params).load_state_dict(params)

    def _param_shapes(self):
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def __call__(self, input) -> np.ndarray:
        x = v.as_float_array(input, self._dtype, "input")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise RuntimeError(f"Linear: input must have shape (..., {self.in_features}), "
                               f"got {v.fmt_shape(x.shape)}")
        y = x @ self._weight.T
        if self.bias:
            y += self._params["bias"]
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias}")


class Embedding(Module):
    """weight[indices], as torch.nn.Embedding; out-of-range indices are an IndexError."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 *, dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.num_embeddings = v.positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = v.positive_int(embedding_dim, "embedding_dim")
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx must be within [-{num_embeddings}, "
                             f"{num_embeddings}), got {padding_idx}")
        self.padding_idx = padding_idx
        rng = np.random.default_rng()
        self._params = {"weight": rng.standard_normal(
            (self.num_embeddings, self.embedding_dim)).astype(self._dtype)}
        if padding_idx is not None:
            self._params["weight"][padding_idx] = 0

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "",
                        dtype=None) -> Embedding:
        params = select_prefix(state_dict, prefix)
        if "weight" not in params:
            raise KeyError(f"no Embedding weight under prefix {prefix!r} "
                           f"(expected {prefix}weight)")
        n, dim = np.shape(params["weight"])
        dtype = dtype or v.dtype_of_weights(params["weight"])
        return cls(n, dim, dtype=dtype).load_state_dict(params)

    def _param_shapes(self):
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def __call__(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be integers, got dtype {idx.dtype}")
        bad = (idx < 0) | (idx >= self.num_embeddings)
        if bad.any():
            raise IndexError(f"Embedding: index {idx[bad].flat[0]} is out of range for a "
                             f"vocabulary of size {self.num_embeddings}")
        return self._params["weight"][idx]

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
