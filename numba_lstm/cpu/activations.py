"""Gate activations for the jitted kernels, chosen by dtype at compile time.

float32 uses a clamped odd rational approximation of tanh: plain arithmetic the
compiler vectorises, unlike a libm call per element, which costs several µs per
step at H=128. Its error is ≤ 4e-7 absolute over all of R (tests/test_kernels.py
checks this), well inside the float32 bound of 2e-5 (docs/index.md). float64 keeps libm's
exact functions so that it can meet the 1e-10 tolerance.
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .._config import CACHE
from .simd import Vec, fma, vclamp, vdiv, vfma, vmul, vrelu, vsaturate, vsplat

# tanh(x) ≈ x·P(x²)/Q(x²) on |x| ≤ 7.905311, past which tanh rounds to ±1 in float32
# (minimax coefficients as published with Eigen's fast float tanh).
_CLAMP = np.float32(7.90531110763549805)
_P = [np.float32(v) for v in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16,
)]
_Q = [np.float32(v) for v in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06,
)]
P0, P1, P2, P3, P4, P5, P6 = _P
Q0, Q1, Q2, Q3 = _Q
HALF32 = np.float32(0.5)
# Beyond this float32 tanh is exactly ±1; the clamped rational alone would give
# ±0.99999976 and a saturated forget gate would then leak c at every step.
_SATURATE = np.float32(9.01)
ONE32 = np.float32(1.0)


@njit(cache=CACHE, error_model="numpy")
def tanh32(x):
    # Comparisons (not min/max) so that NaN falls through and propagates.
    xc = x
    if xc > _CLAMP:
        xc = _CLAMP
    elif xc < -_CLAMP:
        xc = -_CLAMP
    x2 = xc * xc
    # The same FMAs, in the same order, as tanh32_vec: a unit's value must not
    # depend on whether it falls in a block's vector part or its scalar tail.
    p = fma(fma(fma(fma(fma(fma(P6, x2, P5), x2, P4), x2, P3), x2, P2), x2, P1), x2, P0) * xc
    q = fma(fma(fma(Q3, x2, Q2), x2, Q1), x2, Q0)
    r = p / q
    # Branch-free so the loop stays vectorised: r + (±1 - r) is exactly ±1
    # (±1 - r is exact so close to ±1), and r + 0 * (...) is r.
    above = np.float32(x > _SATURATE)
    below = np.float32(x < -_SATURATE)
    return fma(below, -ONE32 - r, fma(above, ONE32 - r, r))


def tanh(x):
    """tanh for kernels: fast rational for float32, libm for float64."""
    return np.tanh(x)


def sigmoid(x):
    """σ for kernels, via σ(x) = ½(1 + tanh(x/2)), which cannot overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def relu(x):
    """max(x, 0) for kernels; NaN stays NaN."""
    return np.maximum(x, 0)


@overload(relu)
def _relu_impl(x):
    if isinstance(x, Vec):
        return lambda x: vrelu(x)
    # NaN fails x < 0 and passes through; -inf gives 0, as torch.relu.
    if x == types.float32:
        return lambda x: x if not x < 0 else np.float32(0)
    return lambda x: x if not x < 0 else 0.0


# tanh and sigmoid also take float32 Vecs (cpu.simd), for the cells' vector form.
@overload(tanh)
def _tanh_impl(x):
    if isinstance(x, Vec) and x.dtype == types.float32:
        return lambda x: tanh32_vec(x)
    if x == types.float32:
        return lambda x: tanh32(x)
    return lambda x: math.tanh(x)


@overload(sigmoid)
def _sigmoid_impl(x):
    if isinstance(x, Vec) and x.dtype == types.float32:
        return lambda x: sigmoid32_vec(x)
    if x == types.float32:
        return lambda x: fma(HALF32, tanh32(HALF32 * x), HALF32)
    return lambda x: 0.5 + 0.5 * math.tanh(0.5 * x)


@njit(inline="always", error_model="numpy")
def tanh32_vec(x):
    """tanh32 on a whole float32 Vec (cpu.simd): the same rational, clamp and
    exact saturation, in full-width vectors where LLVM would pick half-width
    ones for the scalar loop."""
    xc = vclamp(x, vsplat(_CLAMP))
    x2 = vmul(xc, xc)
    p = vfma(vsplat(P6), x2, vsplat(P5))
    p = vfma(p, x2, vsplat(P4))
    p = vfma(p, x2, vsplat(P3))
    p = vfma(p, x2, vsplat(P2))
    p = vfma(p, x2, vsplat(P1))
    p = vmul(vfma(p, x2, vsplat(P0)), xc)
    q = vfma(vfma(vfma(vsplat(Q3), x2, vsplat(Q2)), x2, vsplat(Q1)), x2, vsplat(Q0))
    return vsaturate(vdiv(p, q), x, vsplat(_SATURATE))


@njit(inline="always", error_model="numpy")
def sigmoid32_vec(x):
    half = vsplat(HALF32)
    return vfma(half, tanh32_vec(vmul(half, x)), half)
