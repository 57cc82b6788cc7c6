"""Activation rows put on the grids the dot kernels (cpu.dot_gemm) multiply:
each row on a symmetric integer grid of its own for int8 weights (int16, its
two bytes two vpdpbusd passes, or 8 bits kept in int16's bytes with the low
one 0), or rounded to bfloat16 (one part, or two where a second carries what
the first rounding left) for bfloat16 weights. A row's grid depends on the
row alone, never on the rest of its batch, and every kernel reads the same
bytes, so a sequence's numbers do not depend on the batch size that picks
its kernel (docs/quantization.md).

One row function per format serves a row alone (1-D) and row r of a block
(2-D) alike: a row view per row cost as much as the quantization at 64-96
values a row.
"""

import numpy as np
from numba import njit, types
from numba import types as nbtypes
from numba.extending import overload

from .recurrence import _FLAGS
from .simd import (
    F32,
    float32_bits,
    float32_from_bits,
    vabs_bits_max,
    vadd,
    vint,
    vload,
    vload_first,
    vmax_lane,
    vmul,
    vmuli,
    vsplat,
    vstore_int16_bytes,
    vstore_int16_bytes_first,
    vsub,
)


def quantize_row16(h, lo, hi):
    """h (H,) as int16 on a symmetric per-row grid, split into bytes for
    vpdpbusd: v = round(h / s) in [-32767, 32767], lo = v & 255, hi = (v >> 8)
    + 128 (unsigned; the kernel subtracts 128 x the column sums). lo and hi
    are padded to their length with the bytes of 0. Returns s = max|h| / 32767,
    or -1 when h holds NaN or Inf, which int16 cannot carry (the caller then
    takes a float path, and NaN propagates as in torch). For jitted code."""


def quantize_row8(h, lo, hi):
    """quantize_row16 on the coarser grid of 8-bit values: v = 256 round(127 h
    / max|h|), so every lo byte is 0 and the sums of hi alone are the whole
    product (gemm_dot_acc's high_only). Every dot kernel computes the same
    bits from these bytes, so a row's result does not depend on which kernel
    its batch size picks. Returns s = max|h| / 32512, or -1 as quantize_row16."""


# 1.5 x 2^23: x + ROUND - ROUND is x rounded to the nearest integer, ties to
# even (as np.rint), for |x| < 2^22, in two adds the compiler vectorises.
_ROUND = np.float32(1.5 * 2**23)
_LANES = F32.lanes  # float32 values a vector


@overload(quantize_row16, inline="always", jit_options=_FLAGS)
def _quantize_row16_impl(h, lo, hi):
    if h.dtype != nbtypes.float32:
        return lambda h, lo, hi: _quantize_row_scalar(h, 0, lo, hi, 32767, 1)
    return lambda h, lo, hi: _quantize_row_float32(h, 0, lo, hi, 32767, 1)


@overload(quantize_row8, inline="always", jit_options=_FLAGS)
def _quantize_row8_impl(h, lo, hi):
    if h.dtype != nbtypes.float32:
        return lambda h, lo, hi: _quantize_row_scalar(h, 0, lo, hi, 127, 256)
    return lambda h, lo, hi: _quantize_row_float32(h, 0, lo, hi, 127, 256)


def _at(a, r, k):
    """a[r, k] of a 2-D array, a[k] of a 1-D one (r unused): one row function
    for a row alone and for row r of a block, which then needs no row views
    (each costs two atomic reference-count operations: at 64-96 values a row
    they were four fifths of quantize_rows' time)."""


@overload(_at, inline="always", jit_options=_FLAGS)
def _at_impl(a, r, k):
    if a.ndim == 1:
        return lambda a, r, k: a[k]
    return lambda a, r, k: a[r, k]


def _put(a, r, k, v):
    """a[r, k] = v, or a[k] = v for a 1-D a (as _at)."""


@overload(_put, inline="always", jit_options=_FLAGS)
def _put_impl(a, r, k, v):
    if a.ndim == 1:
        def put1(a, r, k, v):
            a[k] = v
        return put1

    def put2(a, r, k, v):
        a[r, k] = v
    return put2


@njit(inline="always", **_FLAGS)
def _quantize_row_float32(h, r, lo, hi, levels, step):
    """Row r of h (or h, 1-D) into row r of lo, hi: v = step * round(levels h /
    max|h|) in loops the compiler vectorises (2.7x, the same bytes): max|h|
    as the largest of the values' bits without their sign, an integer maximum
    in which NaN's bits sort above Inf's; the rounding by _ROUND."""
    n, width = h.shape[-1], lo.shape[-1]
    # Every integer kept int32 by hand: Numba widens int32 arithmetic to
    # int64, and the loops then ran on 8 (or 4) lanes instead of 16.
    top = np.int32(0)
    for k in range(n):
        top = max(top, np.int32(float32_bits(_at(h, r, k)) & np.int32(0x7FFFFFFF)))
    if top >= np.int32(0x7F800000):  # Inf or NaN
        return np.float32(-1)
    amax = float32_from_bits(top)
    inv = np.float32(levels) / amax if amax > 0 else np.float32(0)
    for k in range(n):
        v = np.int32(np.int32((_at(h, r, k) * inv + _ROUND) - _ROUND) * np.int32(step))
        _put(lo, r, k, np.uint8(np.int32(v & np.int32(255))))
        _put(hi, r, k, np.uint8(np.int32(np.int32(v >> np.int32(8)) + np.int32(128))))
    for k in range(n, width):
        _put(lo, r, k, np.uint8(0))
        _put(hi, r, k, np.uint8(128))
    return amax / np.float32(levels * step)


@njit(inline="always", **_FLAGS)
def _quantize_row_vectors(h, r, lo, hi, levels, step):
    """_quantize_row_float32 on row r of a block (h, lo, hi 2-D, rows
    contiguous) in explicit vectors, the last one masked: the same bits
    without the compiled loops' set-up (their remainder loops and overlap
    checks), which cost ~18 ns a row, more than a row of 160 values took."""
    n, width = h.shape[1], lo.shape[1]
    whole = n - n % _LANES
    top = vsplat(np.int32(0))
    for k in range(0, whole, _LANES):
        top = vabs_bits_max(top, vload(h, r, k))
    if whole < n:
        top = vabs_bits_max(top, vload_first(h, r, whole, n - whole))
    largest = vmax_lane(top)
    if largest >= np.int32(0x7F800000):  # Inf or NaN
        return np.float32(-1)
    amax = float32_from_bits(largest)
    inv = vsplat(np.float32(levels) / amax if amax > 0 else np.float32(0))
    rounding, steps = vsplat(_ROUND), vsplat(np.int32(step))
    for k in range(0, whole, _LANES):
        vstore_int16_bytes(lo, hi, r, k, _on_grid(vload(h, r, k), inv, rounding, steps))
    if whole < n:
        vstore_int16_bytes_first(lo, hi, r, whole, _on_grid(vload_first(h, r, whole, n - whole),
                                                            inv, rounding, steps), n - whole)
    for k in range(n, width):
        lo[r, k] = np.uint8(0)
        hi[r, k] = np.uint8(128)
    return amax / np.float32(levels * step)


@njit(inline="always", **_FLAGS)
def _on_grid(x, inv, rounding, steps):
    """int32 step * round(x * inv), lane by lane: _quantize_row_float32's values."""
    return vmuli(vint(vsub(vadd(vmul(x, inv), rounding), rounding)), steps)


@njit(inline="always", **_FLAGS)
def _quantize_block_row(h, r, lo, hi, levels, step):
    """Row r of a float32 block: in vectors where its values sit side by side."""
    if h.strides[1] == 4:
        return _quantize_row_vectors(h, r, lo, hi, levels, step)
    return _quantize_row_float32(h, r, lo, hi, levels, step)


@njit(inline="always", **_FLAGS)
def _quantize_row_scalar(h, r, lo, hi, levels, step):
    """_quantize_row_float32 for other dtypes (float64), one value at a time."""
    n, width = h.shape[-1], lo.shape[-1]
    amax = h.dtype.type(0)
    for k in range(n):
        a = abs(_at(h, r, k))
        if a > amax:
            amax = a
        elif not a <= amax:  # NaN fails every comparison, wherever it sits
            return h.dtype.type(-1)
    if not amax < np.inf:
        return h.dtype.type(-1)
    inv = h.dtype.type(levels) / amax if amax > 0 else h.dtype.type(0)
    for k in range(n):
        v = np.int32(np.rint(_at(h, r, k) * inv)) * np.int32(step)
        _put(lo, r, k, np.uint8(v & 255))
        _put(hi, r, k, np.uint8((v >> 8) + 128))
    for k in range(n, width):
        _put(lo, r, k, np.uint8(0))
        _put(hi, r, k, np.uint8(128))
    return amax / h.dtype.type(levels * step)


def quantize_row_bf16(h, lo, hi, split):
    """h (H,) float32 as bfloat16 for vdpbf16ps: hi holds each value rounded to
    nearest even (two bytes a k), lo what that rounding left, rounded again
    (with ``split``; else 0), so hi + lo carries 16 of the 24 bits. Padded to
    their length with zeros. Returns 1, or -1 when h holds NaN or Inf (the
    caller then takes a float path, as the int8 kernels' callers do). For
    jitted code."""


@overload(quantize_row_bf16, inline="always", jit_options=_FLAGS)
def _quantize_row_bf16_impl(h, lo, hi, split):
    if h.dtype != nbtypes.float32:
        return lambda h, lo, hi, split: h.dtype.type(-1)

    return lambda h, lo, hi, split: _quantize_row_bf16(h, 0, lo.view(np.uint16),
                                                      hi.view(np.uint16), split)


@njit(inline="always", **_FLAGS)
def _quantize_row_bf16(h, r, lo16, hi16, split):
    """quantize_row_bf16 on row r of h (or h, 1-D) into row r of the uint16
    views lo16, hi16 (as _quantize_row_float32). One pass, the finite check
    folded in (no scale to find first, unlike the int8 grids: 1.3-1.5x), and
    ``split`` outside the loops; a row found not finite holds garbage, which
    every caller zeroes or leaves unread."""
    n, width = h.shape[-1], hi16.shape[-1]
    top = np.uint32(0)  # uint32 kept by hand, as in _quantize_row_float32
    if split:
        for k in range(n):
            x = _at(h, r, k)
            u = np.uint32(float32_bits(x))
            top = max(top, np.uint32(u & np.uint32(0x7FFFFFFF)))
            rounded = _bf16_round(u)
            _put(hi16, r, k, np.uint16(rounded))
            rest = x - float32_from_bits(np.int32(rounded << np.uint32(16)))
            _put(lo16, r, k, np.uint16(_bf16_round(np.uint32(float32_bits(np.float32(rest))))))
    else:
        for k in range(n):
            u = np.uint32(float32_bits(_at(h, r, k)))
            top = max(top, np.uint32(u & np.uint32(0x7FFFFFFF)))
            _put(hi16, r, k, np.uint16(_bf16_round(u)))
            _put(lo16, r, k, np.uint16(0))
    for k in range(n, width):
        _put(hi16, r, k, np.uint16(0))
        _put(lo16, r, k, np.uint16(0))
    return np.float32(-1) if top >= np.uint32(0x7F800000) else np.float32(1)  # Inf or NaN


@njit(inline="always", **_FLAGS)
def _bf16_round(u):
    """float32 bits u (uint32, finite) -> bfloat16 bits, rounded to nearest even."""
    odd = np.uint32(np.uint32(u >> np.uint32(16)) & np.uint32(1))
    return np.uint32(np.uint32(np.uint32(u + np.uint32(0x7FFF)) + odd) >> np.uint32(16))


def quantize_row(h, lo, hi, w_dot, eight_bit):
    """h's operands for a dot kernel on w_dot: int8 weights, quantize_row8
    (``eight_bit``) or quantize_row16; bfloat16 pairs, quantize_row_bf16 with
    lo where not ``eight_bit`` (the first layer's x). Returns the row's scale
    (1 for bfloat16), or -1 where h is not finite."""


@overload(quantize_row, inline="always", jit_options=_FLAGS)
def _quantize_row(h, lo, hi, w_dot, eight_bit):
    def impl(h, lo, hi, w_dot, eight_bit):
        lo_op, hi_op = _row_operands(lo, hi, w_dot)
        return _quantize_row_at(h, 0, lo_op, hi_op, w_dot, eight_bit)
    return impl


def _row_operands(lo, hi, w_dot):
    """lo, hi as the row functions write them: as they are for int8, their
    uint16 views for bfloat16 pairs (made once for a block of rows)."""


@overload(_row_operands, inline="always", jit_options=_FLAGS)
def _row_operands_impl(lo, hi, w_dot):
    if w_dot.dtype == nbtypes.uint8:
        return lambda lo, hi, w_dot: (lo.view(np.uint16), hi.view(np.uint16))
    return lambda lo, hi, w_dot: (lo, hi)


def _quantize_row_at(h, r, lo_op, hi_op, w_dot, eight_bit):
    """quantize_row on row r of h (or h, 1-D) into row r of _row_operands'
    lo_op, hi_op: the one place a grid is picked, for a row alone and for a
    block's rows alike."""


@overload(_quantize_row_at, inline="always", jit_options=_FLAGS)
def _quantize_row_at_impl(h, r, lo_op, hi_op, w_dot, eight_bit):
    if w_dot.dtype == nbtypes.uint8:
        if h.dtype != nbtypes.float32:
            return lambda h, r, lo_op, hi_op, w_dot, eight_bit: h.dtype.type(-1)
        return lambda h, r, lo_op, hi_op, w_dot, eight_bit: _quantize_row_bf16(
            h, r, lo_op, hi_op, not eight_bit)
    if h.dtype != nbtypes.float32:
        row = _quantize_row_scalar
    else:
        row = _quantize_block_row if h.ndim == 2 else _quantize_row_float32

    def impl(h, r, lo_op, hi_op, w_dot, eight_bit):
        # The grid's constants chosen outside the row function: its loops stay one
        # copy (a copy per grid, each branch inlined, ran 2-4x slower in a block).
        levels, step = (127, 256) if eight_bit else (32767, 1)
        return row(h, r, lo_op, hi_op, levels, step)
    return impl


def quantize_rows(rows, lo, hi, scales, dot, eight_bit=False):
    """Each row of rows (R, K) on its own int16 grid (quantize_row16), or on
    the 8-bit one (quantize_row8), into lo, hi (R, >= K) and scales (R,), for
    a dot product (bfloat16 pairs: quantize_row_bf16, lo only where not
    ``eight_bit``). Returns how many rows were not finite: each such row gets
    scale -1 and the bytes of a zero row, so a dot product adds 0 for it, and
    the caller adds that row's float product: the other rows' numbers do not
    depend on it. -1, doing nothing, where dot is None."""


@overload(quantize_rows, jit_options=_FLAGS)
def _quantize_rows(rows, lo, hi, scales, dot, eight_bit=False):
    if isinstance(dot, types.NoneType):
        return lambda rows, lo, hi, scales, dot, eight_bit=False: -1

    def impl(rows, lo, hi, scales, dot, eight_bit=False):
        lo_op, hi_op = _row_operands(lo, hi, dot[0])
        not_finite = 0
        for r in range(rows.shape[0]):
            scales[r] = _quantize_row_at(rows, r, lo_op, hi_op, dot[0], eight_bit)
            if scales[r] < 0:
                _zero_row(lo_op, hi_op, r, dot[0])
                not_finite += 1
        return not_finite
    return impl


@njit(inline="always", **_FLAGS)
def float_rows_acc(out, col, N, rows, panels, reverse, scales, gemm):
    """out[r, col:col+N] += rows[r] @ W by ``gemm`` on W's float panels, for
    each row quantize_rows found not finite (scales[r] < 0), that row alone:
    the float products quantize_rows' callers owe those rows."""
    for r in range(scales.shape[0]):
        if scales[r] < 0:
            gemm(out[r:r + 1], col, N, rows[r:r + 1], panels, reverse)


def _zero_row(lo_op, hi_op, r, w_dot):
    """Row r of _row_operands' lo_op, hi_op as a row of zeros: the padding's
    bytes (int8: lo 0, hi 128, which every int8 kernel reads as 0; bfloat16:
    0 and 0)."""


@overload(_zero_row, inline="always", jit_options=_FLAGS)
def _zero_row_impl(lo_op, hi_op, r, w_dot):
    high = 0 if w_dot.dtype == nbtypes.uint8 else 128

    def impl(lo_op, hi_op, r, w_dot):
        for k in range(lo_op.shape[1]):
            lo_op[r, k] = 0
            hi_op[r, k] = high
    return impl

