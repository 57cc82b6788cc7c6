"""The kernels' argument types, for compiling them ahead of a launch: PTX
without a GPU (cuda.compile_ptx: the float32-arithmetic test), and register
counts on one (the GPU check)."""

from __future__ import annotations

import numba
import numpy as np
from numba import types

from ..cells import Cell
from .kernels import Kernels


def signatures(dtype) -> dict[str, tuple]:
    """Kernel name -> its argument types as backend.py calls it (C-contiguous arrays)."""
    f = numba.from_dtype(np.dtype(dtype))
    i64 = types.int64

    def a(ndim, of=f):
        return types.Array(of, ndim, "C")

    return {
        "fill": (a(1, i64), i64),
        "swap_leading_axes": (a(3), a(3)),
        "state_in": (a(3), a(3), i64, i64, a(4)),
        "state_out": (a(4), i64, i64, a(3), a(3)),
        "matmul_bias": (a(2), a(2), a(1), a(2)),
        "project": (a(3), a(3), i64, a(4), a(3), a(1, i64)),
        "step": (a(3), i64, a(3), a(4), a(3), a(3), a(1, i64)),
        "persistent": (a(3), a(3), a(4), a(3), a(1, i64), i64, i64, types.boolean),
        "row_gates": (a(3), i64, a(3), a(4), a(3), a(1, i64)),
        "row_cells": (a(3), i64, a(3), a(3), a(4), a(3), a(1, i64)),
    }


class _Device:
    def __init__(self, cc):
        self.compute_capability = cc


def ptx(cell: Cell, dtype, cc: tuple[int, int] = (9, 0), names=None) -> dict[str, str]:
    """Kernel name -> its PTX for compute capability ``cc`` (the kernels in
    ``names``, or all); needs NVVM, no GPU.

    Fresh kernels, so the device functions compiled here for ``cc`` never
    serve a launch. numba-cuda compiles a kernel's device functions for the
    current device, which a machine without a GPU lacks: for the length of
    this call it is told the device is one of ``cc``.
    """
    from numba import cuda
    from numba.cuda import dispatcher

    sigs = signatures(dtype)
    current = dispatcher.get_current_device
    if not cuda.is_available():
        dispatcher.get_current_device = lambda: _Device(cc)
    try:
        return {name: cuda.compile_ptx(kernel.py_func, sigs[name], cc=cc)[0]
                for name, kernel in Kernels(cell, dtype).all().items()
                if names is None or name in names}
    finally:
        dispatcher.get_current_device = current


def float64_instructions(text: str) -> list[str]:
    """PTX instructions that compute in double precision (loads, stores and
    parameter moves of f64 do not appear in a float32 kernel at all)."""
    return [line.strip() for line in text.splitlines()
            if ".f64" in line and not line.strip().startswith("//")]
