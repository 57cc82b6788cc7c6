"""The primitives a cell's math is written over, as NumPy functions.

A cell file calls these names; run as they are, they make the cell the NumPy
reference. Each backend binds its own versions of the same names (cells.bind):
the CPU its fast float32 rationals and SIMD loads, CUDA its device functions.
``load(a, j, n)`` reads a[..., j:j+n] (one unit, a vector of units, or a whole
row), ``store(a, j, v, n)`` writes it.
"""

import numpy as np


def sigmoid(x):
    # 0.5 * (1 + tanh(x / 2)) is σ exactly and never overflows, unlike 1 / (1 + exp(-x)).
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def tanh(x):
    return np.tanh(x)


def relu(x):
    return np.maximum(x, 0)  # NaN stays NaN, as torch.relu


def fma(a, b, c):
    return a * b + c


def load(a, j, n):
    return a[..., j:j + n]


def store(a, j, v, n):
    a[..., j:j + n] = v
