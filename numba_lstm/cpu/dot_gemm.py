"""The dot products of quantized weights: int8 weights times rows quantized
to int16 on a per-row grid, and bfloat16 weights times rows rounded to
bfloat16. Three micro-kernels on one layout:

- AVX512-VNNI's vpdpbusd, four k at a time (64 multiply-adds an instruction,
  against 16 for a float32 FMA), the activation's two bytes in two sums;
- elsewhere, int16 pairs (vpmaddwd on AVX2: 16 multiply-adds an instruction,
  and a quarter of float32's bytes): at batch 1, where a step streams its
  weights, it beats widening them to float32 (cpu.row_step), and two rows a
  tile it beats float32 FMAs on many rows (DOT_BY_DEFAULT);
- bfloat16 weights (uint8 arrays of pairs) by AVX512_BF16's vdpbf16ps, two k
  at a time into float32 sums (32 multiply-adds an instruction), or its exact
  emulation (tests).

Used by the batch-1 block step (cpu.row_step), the streaming step, the
team's projections and batch > 1 steps, and the large-batch steps and
projection of an int8 layer.

Layout (packing._pack_quads): W (K, N) int8 becomes (P, K4, 4 * DOT_NR);
panel p's row k4 holds, for each of its DOT_NR columns, the weights of
k = 4*k4 .. 4*k4+3 side by side. An int16 activation's two bytes go through
vpdpbusd separately, the high one offset by 128 to make it unsigned; the
columns' offsets (128 x their weight sums) take that back out, exactly.
bfloat16 W (K, N) becomes (P, K2, 4 * DOT_NR) uint8, the same bytes a lane:
row k2 holds, for each column, the bfloat16 of k = 2*k2 and 2*k2+1. A row's
activations are two bfloat16 per k: its value rounded ("hi") and what
rounding left ("lo", 0 for h); their sums add last, high + low, as the int8
kernels' byte sums do. Every row's grid, int8's and bfloat16's, is made in
cpu.activation_grids; the kernels here read its bytes. Every bfloat16 kernel sums a column
in the same order (its k from 0, one float32 chain for each of hi and lo),
so a row gets the same bits whatever kernel its batch size picks.
"""

import numpy as np
from numba import njit, types
from numba import types as nbtypes
from numba.extending import overload

from ..cells import rebind
from .aligned import empty_on_lines
from .amx import (
    AMX_ROW_BYTES,
    AMX_ROWS,
    EMULATED,
    EMULATED_TILES,
    HAS_AMX,
    HAS_AMX_BF16,
    tile_config,
    tile_config_bytes,
    tile_dot,
    tile_load,
    tile_load_once,
    tile_release,
    tile_store,
    tile_zero,
)
from .recurrence import _FLAGS, keep_alive, unowned
from .simd import (
    HAS_BF16,
    HAS_VNNI,
    I32,
    prefetch,
    vadd,
    vdpbf16,
    vdpbusd,
    vfloat,
    vfma,
    vload,
    vload1,
    vload_quads,
    vmadd_high,
    vmadd_low,
    vmul,
    vselect,
    vsplat,
    vsplat_pairs16,
    vsplat_quad,
    vsplat_row16,
    vstore,
    vstore1,
    vsubi,
    vsum_pairs,
)

DOT_LANES = I32.lanes
DOT_NR = 2 * DOT_LANES  # columns a panel of the int8 dot layout holds (two Vecs)
# The micro-kernel: vpdpbusd where the CPU has it, else int16 pairs.
PAIRS = not HAS_VNNI
# The longest K whose int32 sums cannot overflow, |w| <= 128: with pairs, K/2
# products of |v| <= 32767 a lane (a column's two lanes add in float32); with
# vpdpbusd, K of a byte (<= 255).
DOT_MAX_K = 1024 if PAIRS else 65792
# int8 layers take the dot layouts by default on every CPU: vpdpbusd's with
# VNNI, else the pairs. On AVX2 the pairs beat widening int8 to float32 where
# one row streams its weights (batch 1) and, two rows a tile, float32 FMAs on
# many rows where vpmaddwd has two pipes (Zen 5's AVX2 build, one core: 70
# against 43-51 G multiply-adds/s; whole models 1.04-1.90x float32 where the
# widening ran 0.85-1.16x). One kind of product for every batch size, because
# mixing exact int32 sums with float32 ones breaks batch invariance: a row's h
# differs by float32 rounding between the two, and its grid turns that into a
# step of the grid now and then (2e-6 to 2e-5 on the outputs, measured;
# docs/quantization.md).
DOT_BY_DEFAULT = True
# bfloat16 layers take the pairs layout where the CPU has vdpbf16ps; elsewhere
# they widen their weights at batch 1 and read float32 values above it.
BF16_DOT_BY_DEFAULT = HAS_BF16


def dot_fits(K: int) -> bool:
    """Whether a product over K rows of int8 W fits the dot kernels' int32 sums."""
    return K <= DOT_MAX_K



@njit(inline="always", **_FLAGS)
def _row_bytes(lo, hi, k4):
    """A row's activation operands for k = 4*k4 .. 4*k4+3: its low and high bytes."""
    return vsplat_quad(lo, 4 * k4), vsplat_quad(hi, 4 * k4)


@njit(inline="always", **_FLAGS)
def _quads_bytes(a, b, q0, q1, low0, high0, low1, high1):
    """One k4 row of a panel (its two Vecs of quads q0, q1) against one row's
    low and high activation bytes a, b: the four sums, updated."""
    return (vdpbusd(low0, a, q0), vdpbusd(high0, b, q0), vdpbusd(low1, a, q1),
            vdpbusd(high1, b, q1))


@njit(inline="always", **_FLAGS)
def _sum_bytes(low, high, offset, scale_q, s_h, j):
    """Columns j.. of h @ W as float32: (256 (high - 128 colsum) + low) s_h scale.
    The int32 difference is exact; its float conversion rounds by 6e-8 at most."""
    exact = vsubi(high, vload1(offset, j))
    total = vfma(vfloat(exact), vsplat(np.float32(256)), vfloat(low))
    return vmul(total, vmul(vsplat(s_h), vload1(scale_q, j)))


@njit(inline="always", **_FLAGS)
def _row_pairs(lo, hi, k4):
    """The pairs kernel's operand for k = 4*k4 .. 4*k4+3 (twice: one operand)."""
    a = vsplat_row16(lo, hi, 4 * k4)
    return a, a


@njit(inline="always", **_FLAGS)
def _quads_pairs(a, b, q0, q1, low0, high0, low1, high1):
    """_quads_bytes with int16 pairs: "low" and "high" sum the first and the
    second half of each Vec's columns, two lanes a column."""
    return (vmadd_low(low0, a, q0), vmadd_high(high0, a, q0), vmadd_low(low1, a, q1),
            vmadd_high(high1, a, q1))


@njit(inline="always", **_FLAGS)
def _sum_pairs(low, high, offset, scale_q, s_h, j):
    """_sum_bytes for the pairs kernel (no offset: v was never made unsigned):
    each column's two exact int32 half-sums added in float32, since their
    total can pass 2^31 at K = DOT_MAX_K; then scaled."""
    total = vsum_pairs(vfloat(low), vfloat(high))
    return vmul(total, vmul(vsplat(s_h), vload1(scale_q, j)))


@njit(inline="always", **_FLAGS)
def _quads_bf16(a, b, q0, q1, low0, high0, low1, high1):
    """_quads_bytes for bfloat16 pairs: a and b hold two bfloat16 of a row's lo
    and hi, the sums are float32."""
    return (vdpbf16(low0, a, q0), vdpbf16(high0, b, q0), vdpbf16(low1, a, q1),
            vdpbf16(high1, b, q1))


@njit(inline="always", **_FLAGS)
def _sum_bf16(low, high, offset, scale_q, s_h, j):
    """A bfloat16 column's sum: its hi chain, then its lo chain (0 for h)."""
    return vadd(high, low)


# Every dot kernel is written in these, and the type of its sums picks the
# micro-kernel: int32 sums are int8's (vpdpbusd, or the pairs without VNNI),
# float32 sums bfloat16's. dot_zero(w_dot) -> the zero sums for w_dot's kind;
# dot_row(lo, hi, k4, sums) -> (a, b); dot_quads(a, b, q0, q1, four sums) ->
# four sums; dot_sum(low, high, offset, scale_q, s_h, j) -> float32 Vec of
# columns j..; vdot(sums, b, q): one k4 row of high bytes (or k2 of hi).
def dot_zero(w_dot):
    """Zero sums of a dot kernel on w_dot: int32 for int8, float32 for bfloat16 pairs."""


@overload(dot_zero, inline="always", jit_options=_FLAGS)
def _dot_zero(w_dot):
    if w_dot.dtype == nbtypes.uint8:
        return lambda w_dot: vsplat(np.float32(0))
    return lambda w_dot: vsplat(np.int32(0))


def is_bf16(w_dot):
    """Whether w_dot holds bfloat16 pairs (a constant of its type)."""


@overload(is_bf16, inline="always", jit_options=_FLAGS)
def _is_bf16(w_dot):
    bf16 = w_dot.dtype == nbtypes.uint8
    return lambda w_dot: bf16


def dot_row(lo, hi, k4, sums):
    """(a, b): a row's operands for the dot layout's row k4 (the bytes, or int16 pairs)."""


@overload(dot_row, inline="always", jit_options=_FLAGS)
def _dot_row(lo, hi, k4, sums):
    if sums.dtype == nbtypes.float32 or not PAIRS:
        return lambda lo, hi, k4, sums: _row_bytes(lo, hi, k4)
    return lambda lo, hi, k4, sums: _row_pairs(lo, hi, k4)


def dot_quads(a, b, q0, q1, low0, high0, low1, high1):
    """One row of a panel (its two Vecs q0, q1) against a row's operands a, b."""


@overload(dot_quads, inline="always", jit_options=_FLAGS)
def _dot_quads(a, b, q0, q1, low0, high0, low1, high1):
    if low0.dtype == nbtypes.float32:
        return lambda a, b, q0, q1, low0, high0, low1, high1: _quads_bf16(
            a, b, q0, q1, low0, high0, low1, high1)
    if PAIRS:
        return lambda a, b, q0, q1, low0, high0, low1, high1: _quads_pairs(
            a, b, q0, q1, low0, high0, low1, high1)
    return lambda a, b, q0, q1, low0, high0, low1, high1: _quads_bytes(
        a, b, q0, q1, low0, high0, low1, high1)


def dot_sum(low, high, offset, scale_q, s_h, j):
    """Columns j.. of a product as float32, from their low and high sums."""


@overload(dot_sum, inline="always", jit_options=_FLAGS)
def _dot_sum(low, high, offset, scale_q, s_h, j):
    if low.dtype == nbtypes.float32:
        return lambda low, high, offset, scale_q, s_h, j: _sum_bf16(
            low, high, offset, scale_q, s_h, j)
    if PAIRS:
        return lambda low, high, offset, scale_q, s_h, j: _sum_pairs(
            low, high, offset, scale_q, s_h, j)
    return lambda low, high, offset, scale_q, s_h, j: _sum_bytes(
        low, high, offset, scale_q, s_h, j)


def vdot(sums, b, q):
    """sums + one dot-layout row q against b: vpdpbusd on int32 sums (b a
    row's high bytes), vdpbf16ps on float32 ones (b a row's hi pairs)."""


@overload(vdot, inline="always", jit_options=_FLAGS)
def _vdot(sums, b, q):
    if sums.dtype == nbtypes.float32:
        return lambda sums, b, q: vdpbf16(sums, b, q)
    return lambda sums, b, q: vdpbusd(sums, b, q)


def takes_high_kernel(w_dot):
    """Whether rows without low parts (quantize_row8's, or h in bfloat16) run
    the kernels on their high parts alone: vpdpbusd's and vdpbf16ps's, not the
    pairs (which read both bytes as one int16)."""


@overload(takes_high_kernel, inline="always", jit_options=_FLAGS)
def _takes_high_kernel(w_dot):
    high = w_dot.dtype == nbtypes.uint8 or not PAIRS
    return lambda w_dot: high


@njit(**_FLAGS)
def row_dot_acc(out_row, w_dot, offset, scale_q, s_x, lo, hi):
    """out_row (N,) += x @ W for a row x that quantize_row16 (or
    quantize_row_bf16, for bfloat16 pairs) has put in lo, hi
    with scale s_x; W int8 in the dot layout (P, K4, 4 * DOT_NR), N = P *
    DOT_NR, offset (N,) 128 x each column's weight sum, scale_q (N,) the
    columns' scales. Two panels at a time where there are two, so that eight
    vpdpbusd chains cover the instruction's latency. bfloat16 rows go through
    the tiles where gemm_dot_acc's do (every_row_on_tiles). Callers pass C
    rows (_c_row), so that one kernel a format serves them all."""
    if row_tiles_acc(out_row, w_dot, offset, scale_q, s_x, lo, hi, False, False):
        return
    Q = 4 * DOT_LANES
    P = w_dot.shape[0]
    zero = dot_zero(w_dot)
    for p in range(0, P - 1, 2):
        wa, wb = w_dot[p], w_dot[p + 1]
        la0 = la1 = ha0 = ha1 = lb0 = lb1 = hb0 = hb1 = zero
        for k in range(w_dot.shape[1]):
            a, b = dot_row(lo, hi, k, zero)
            la0, ha0, la1, ha1 = dot_quads(a, b, vload_quads(wa, k, 0), vload_quads(wa, k, Q),
                                           la0, ha0, la1, ha1)
            lb0, hb0, lb1, hb1 = dot_quads(a, b, vload_quads(wb, k, 0), vload_quads(wb, k, Q),
                                           lb0, hb0, lb1, hb1)
        j = p * DOT_NR
        _dot_add(out_row, j, la0, ha0, offset, scale_q, s_x)
        _dot_add(out_row, j + DOT_LANES, la1, ha1, offset, scale_q, s_x)
        _dot_add(out_row, j + DOT_NR, lb0, hb0, offset, scale_q, s_x)
        _dot_add(out_row, j + DOT_NR + DOT_LANES, lb1, hb1, offset, scale_q, s_x)
    if P % 2 == 1:
        w = w_dot[P - 1]
        l0 = l1 = h0 = h1 = zero
        for k in range(w_dot.shape[1]):
            a, b = dot_row(lo, hi, k, zero)
            l0, h0, l1, h1 = dot_quads(a, b, vload_quads(w, k, 0), vload_quads(w, k, Q),
                                       l0, h0, l1, h1)
        j = (P - 1) * DOT_NR
        _dot_add(out_row, j, l0, h0, offset, scale_q, s_x)
        _dot_add(out_row, j + DOT_LANES, l1, h1, offset, scale_q, s_x)


def gemm_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse=False, high_only=False,
                 base=None):
    """out (R, N) += x @ W for rows x that quantize_row16 has put in lo, hi
    (R, 4 * K4) with scales s_rows (R,); W as in row_dot_acc (or bfloat16
    pairs, the rows quantize_row_bf16's). ``reverse``: the tiles take the
    panels last to first (a recurrence alternates it, as the float panels'
    steps do). ``high_only``: the rows are quantize_row8's, every lo byte 0
    (or bfloat16 rows without lo), so the kernels sum the high parts alone
    (half the instructions; the same bits). ``base`` (R, N), or (1, N) for
    every row: out = base + x @ W instead, the same bits as copying base into
    out first (the tiles' epilogue reads base where it would read out: a
    step's gx rows or a projection's bias, without a pass of their own).
    Returns True; False, having done nothing, where out is not float32. For
    jitted code."""


@overload(gemm_dot_acc, inline="always", jit_options=_FLAGS)  # a wrapper: no call of its own
def _gemm_dot_acc_impl(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse=False,
                       high_only=False, base=None):
    if out.dtype != nbtypes.float32:
        return (lambda out, lo, hi, s_rows, w_dot, offset, scale_q, reverse=False,
                high_only=False, base=None: False)
    # One compiled kernel for every caller (each is ~12 s of a cold call): out
    # and base as any-layout views (the team's steps pass whole rows, the
    # projection column slices) and the flags as run-time bools, not literals.
    if base is None or isinstance(base, types.NoneType):
        def impl(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse=False, high_only=False,
                 base=None):
            _gemm_dot_acc32(out[:, :], lo, hi, s_rows, w_dot, offset, scale_q, bool(reverse),
                            bool(high_only), out[:, :])
            return True
        return impl

    def impl_base(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse=False, high_only=False,
                  base=None):
        _gemm_dot_acc32(out[:, :], lo, hi, s_rows, w_dot, offset, scale_q, bool(reverse),
                        bool(high_only), base[:, :])
        return True
    return impl_base


@njit(**_FLAGS)
def _gemm_dot_acc32(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse, high_only, base):
    """Sixteen int8 rows at a time on AMX tiles where the CPU has them (4.3-4.7x
    vpdpbusd at 16-64 rows, K = 512, one core; the same int32 sums), every
    bfloat16 row where it has AMX-BF16 (every_row_on_tiles); then
    rows whose lo bytes are all 0 on their high bytes alone (_high_dot_acc);
    int16 pairs (no VNNI) two rows a tile (_pairs_dot_acc); else four rows at
    a time share each weight load (a row at a time is
    load-bound: 64 bytes per two vpdpbusd); the last R % 4 through
    row_dot_acc. ``base``: gemm_dot_acc's, or out itself; the tiles' epilogues
    read it where they would read out (a pass copying it into out first cost
    S9's projection 13% of its time on Zen 5), the single rows get a copy."""
    R = out.shape[0]
    if every_row_on_tiles(w_dot):
        _amx_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, R, reverse, _NO_TILES,
                     high_only, base)
        return
    R16 = tile_rows(R, w_dot) if HAS_AMX and not is_bf16(w_dot) else 0
    if R16 > 0:
        _amx_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, R16, reverse, _NO_TILES,
                     high_only, base)
    if high_only and takes_high_kernel(w_dot):
        if R16 == 0:  # no views: at small layers their counts are a share of the call
            _high_dot_acc(out, hi, s_rows, w_dot, offset, scale_q, reverse, base)
        else:
            _high_dot_acc(out[R16:], hi[R16:], s_rows[R16:], w_dot, offset, scale_q, reverse,
                          base[R16:] if base.shape[0] > 1 else base)
        return
    if R16 == 0 and pairs_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse, base):
        return
    group = panel_group(w_dot)
    for g0 in range(0, w_dot.shape[0], group):
        for r in range(R16, R - (R - R16) % 4, 4):
            _four_rows_two_parts(out, lo, hi, s_rows, w_dot, offset, scale_q, r, g0,
                                 min(g0 + group, w_dot.shape[0]), base)
    for r in range(R - (R - R16) % 4, R):
        _copy_base_row(base, out, r, 0, out.shape[1])
        row_dot_acc(_c_row(out, r), w_dot, offset, scale_q, s_rows[r], lo[r], hi[r])


@njit(inline="always", **_FLAGS)
def _c_row(out, r):
    """Row r of out as a C array (a view owning nothing; out keeps it alive).
    out's rows are contiguous (C arrays and their column slices, as every
    caller passes), but a row of an any-layout view is typed 'A': passed as
    such, row_dot_acc compiled a second kernel beside the streaming step's C
    one, and its strided loads cost the row 1-3%."""
    return unowned(out[r])


@njit(inline="always", **_FLAGS)
def _copy_base_row(base, out, r, j0, j1):
    """out[r, j0:j1] = base's row for r (base (R, N), or (1, N) for every row),
    where base is not out itself: a row that a one-row kernel then adds to."""
    if base.ctypes.data != out.ctypes.data:
        rb = r if base.shape[0] > 1 else 0
        for j in range(j0, j1):
            out[r, j] = base[rb, j]


def pairs_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse, base):
    """_pairs_dot_acc, returning True, where the int8 kernel is the pairs (no
    VNNI); else False, a constant: hosts with VNNI never compile the pairs."""


@overload(pairs_dot_acc, inline="always", jit_options=_FLAGS)
def _pairs_dot_acc_impl(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse, base):
    if not PAIRS or w_dot.dtype == nbtypes.uint8:
        return lambda out, lo, hi, s_rows, w_dot, offset, scale_q, reverse, base: False

    def impl(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse, base):
        _pairs_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse, base)
        return True
    return impl


@njit(**_FLAGS)
def _pairs_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse, base):
    """gemm_dot_acc on int16 pairs: each row's int16 values made once
    (vsplat_row16's, there made at every k4 of every panel), then two rows a
    tile, whose eight sums, two weight vectors, their widened halves and two
    splats fit AVX2's sixteen registers (four rows spilled: one core, AVX2
    build of Zen 5, 68-70 against 38-41 G multiply-adds/s); an odd last row
    through row_dot_acc. The same exact int32 sums, so the same bits."""
    R = out.shape[0]
    K = 4 * w_dot.shape[1]
    pairs = empty_on_lines(R - R % 2, K, np.int16)  # (R', K) the rows' int16 values
    for r in range(R - R % 2):
        for k in range(K):
            # (hi << 8 | lo) is v + 32768 (quantize_row16's bytes)
            pairs[r, k] = np.int16((np.int32(hi[r, k]) << 8 | np.int32(lo[r, k])) - 32768)
    P = w_dot.shape[0]
    group = panel_group(w_dot)
    for g in range(0, P, group):
        # reverse: the groups last to first, so the panels read last are read first
        p0 = P - min(g + group, P) if reverse else g
        for r in range(0, R - 1, 2):
            _two_rows_pairs(out, pairs, s_rows, w_dot, offset, scale_q, r, p0,
                            p0 + min(group, P - g), base)
    if R % 2 == 1:
        _copy_base_row(base, out, R - 1, 0, out.shape[1])
        row_dot_acc(_c_row(out, R - 1), w_dot, offset, scale_q, s_rows[R - 1], lo[R - 1],
                    hi[R - 1])


@njit(inline="always", **_FLAGS)
def _two_rows_pairs(out, pairs, s_rows, w_dot, offset, scale_q, r, p0, p1, base):
    """Rows r, r+1 of int16 ``pairs`` (R, 4 * K4) over panels p0..p1-1, added
    to base's rows (_gemm_dot_acc32's)."""
    one = base.shape[0] == 1
    Q = 4 * DOT_LANES
    zero = vsplat(np.int32(0))
    _prefetch_base(base, r, r + 1, 0, 1, p0, p1, False)
    for p in range(p0, p1):
        w = w_dot[p]
        _prefetch_base(base, r, r + 1, p - p0 + 1, 1, p0, p1, False)
        l00 = l01 = h00 = h01 = l10 = l11 = h10 = h11 = zero  # row, vector: low, high half
        for k in range(w_dot.shape[1]):
            q0, q1 = vload_quads(w, k, 0), vload_quads(w, k, Q)
            a = vsplat_pairs16(pairs, r, 4 * k)
            l00, h00, l01, h01 = _quads_pairs(a, a, q0, q1, l00, h00, l01, h01)
            a = vsplat_pairs16(pairs, r + 1, 4 * k)
            l10, h10, l11, h11 = _quads_pairs(a, a, q0, q1, l10, h10, l11, h11)
        j = p * DOT_NR
        _dot_add2_rows(out, r, base, 0 if one else r, j, l00, h00, l01, h01, offset, scale_q,
                       s_rows[r])
        _dot_add2_rows(out, r + 1, base, 0 if one else r + 1, j, l10, h10, l11, h11, offset,
                       scale_q, s_rows[r + 1])


@njit(inline="always", **_FLAGS)
def _four_rows_two_parts(out, lo, hi, s_rows, w_dot, offset, scale_q, r, p0, p1, base):
    """Rows r..r+3 over panels p0..p1-1, both bytes (or both bfloat16 parts),
    added to base's rows (_gemm_dot_acc32's)."""
    one = base.shape[0] == 1
    Q = 4 * DOT_LANES
    zero = dot_zero(w_dot)
    lo0, lo1, lo2, lo3 = lo[r], lo[r + 1], lo[r + 2], lo[r + 3]
    hi0, hi1, hi2, hi3 = hi[r], hi[r + 1], hi[r + 2], hi[r + 3]
    for p in range(p0, p1):
        w = w_dot[p]
        l00 = l01 = l10 = l11 = l20 = l21 = l30 = l31 = zero  # row, vector: low bytes
        h00 = h01 = h10 = h11 = h20 = h21 = h30 = h31 = zero  # and high ones
        for k in range(w_dot.shape[1]):
            q0, q1 = vload_quads(w, k, 0), vload_quads(w, k, Q)
            a, b = dot_row(lo0, hi0, k, zero)
            l00, h00, l01, h01 = dot_quads(a, b, q0, q1, l00, h00, l01, h01)
            a, b = dot_row(lo1, hi1, k, zero)
            l10, h10, l11, h11 = dot_quads(a, b, q0, q1, l10, h10, l11, h11)
            a, b = dot_row(lo2, hi2, k, zero)
            l20, h20, l21, h21 = dot_quads(a, b, q0, q1, l20, h20, l21, h21)
            a, b = dot_row(lo3, hi3, k, zero)
            l30, h30, l31, h31 = dot_quads(a, b, q0, q1, l30, h30, l31, h31)
        j = p * DOT_NR
        _dot_add2_rows(out, r, base, 0 if one else r, j, l00, h00, l01, h01, offset, scale_q,
                       s_rows[r])
        _dot_add2_rows(out, r + 1, base, 0 if one else r + 1, j, l10, h10, l11, h11, offset,
                       scale_q, s_rows[r + 1])
        _dot_add2_rows(out, r + 2, base, 0 if one else r + 2, j, l20, h20, l21, h21, offset,
                       scale_q, s_rows[r + 2])
        _dot_add2_rows(out, r + 3, base, 0 if one else r + 3, j, l30, h30, l31, h31, offset,
                       scale_q, s_rows[r + 3])


@njit(inline="always", **_FLAGS)  # its one caller's: a call costs ~100 ns at small layers
def _high_dot_acc(out, hi, s_rows, w_dot, offset, scale_q, reverse, base):
    """gemm_dot_acc's rows from their high bytes alone (lo all 0): eight rows
    at a time, sixteen vpdpbusd (or vdpbf16ps) chains on two weight loads and
    eight splats (1.9x the two-byte four-row loop on Zen 5, one core, K =
    512), seven as eight; then six or five rows, four, or three on two panels
    a tile (_high_six, _high_four, _high_three: in a bigger tile the missing
    rows cost what rows do), two rows on four panels (0.36 against 0.63 µs
    as four, 2 x 160 x 320 on one core of Zen 5), a single row on four
    panels. dot_sum with a low sum of 0 gives the bits the two-part kernels
    give. Returns R."""
    P = w_dot.shape[0]
    group = panel_group(w_dot)
    for g in range(0, P, group):
        # reverse: the groups last to first too, so the panels read last are read first
        p0 = P - min(g + group, P) if reverse else g
        _high_dot_range(out, hi, s_rows, w_dot, offset, scale_q, reverse, p0,
                        p0 + min(group, P - g), base)
    return out.shape[0]


@njit(inline="always", **_FLAGS)
def _high_dot_range(out, hi, s_rows, w_dot, offset, scale_q, reverse, p0, p1, base):
    """_high_dot_acc over panels p0..p1-1, added to base's rows."""
    R = out.shape[0]
    Q = 4 * DOT_LANES
    zero = dot_zero(w_dot)
    r = 0
    while R - r >= 7:  # eight rows a tile; seven as eight (the missing row's sums dropped)
        n = min(8, R - r)
        last = r + n - 1
        h0, h1, h2, h3 = hi[r], hi[r + 1], hi[r + 2], hi[r + 3]
        h4, h5, h6, h7 = hi[r + 4], hi[min(r + 5, last)], hi[min(r + 6, last)], hi[last]
        _prefetch_base(base, r, last, 0, 1, p0, p1, reverse)
        for i in range(p1 - p0):
            p = p1 - 1 - i if reverse else p0 + i
            w = w_dot[p]
            _prefetch_base(base, r, last, i + 1, 1, p0, p1, reverse)
            s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = zero  # row, vector
            s40 = s41 = s50 = s51 = s60 = s61 = s70 = s71 = zero
            for k in range(w_dot.shape[1]):
                q0, q1 = vload_quads(w, k, 0), vload_quads(w, k, Q)
                s00, s01 = _high_quads(h0, k, q0, q1, s00, s01)
                s10, s11 = _high_quads(h1, k, q0, q1, s10, s11)
                s20, s21 = _high_quads(h2, k, q0, q1, s20, s21)
                s30, s31 = _high_quads(h3, k, q0, q1, s30, s31)
                s40, s41 = _high_quads(h4, k, q0, q1, s40, s41)
                s50, s51 = _high_quads(h5, k, q0, q1, s50, s51)
                s60, s61 = _high_quads(h6, k, q0, q1, s60, s61)
                s70, s71 = _high_quads(h7, k, q0, q1, s70, s71)
            j = p * DOT_NR
            _high_add4(out, r, 4, j, s00, s01, s10, s11, s20, s21, s30, s31, zero, offset,
                       scale_q, s_rows, base)
            _high_add4(out, r + 4, n - 4, j, s40, s41, s50, s51, s60, s61, s70, s71, zero,
                       offset, scale_q, s_rows, base)
        r += n
    if R - r >= 5:  # five or six rows: as eight they took eight's time
        _high_six(out, hi, s_rows, r, R - r, w_dot, offset, scale_q, reverse, p0, p1, base)
        r = R
    if R - r == 4:
        _high_four(out, hi, s_rows, r, w_dot, offset, scale_q, reverse, p0, p1, base)
        r += 4
    if R - r == 3:  # as four they took four rows' time
        _high_three(out, hi, s_rows, r, w_dot, offset, scale_q, reverse, p0, p1, base)
        r += 3
    if R - r == 2:
        _high_two(out, hi, s_rows, r, w_dot, offset, scale_q, reverse, p0, p1, base)
        r += 2
    if R - r == 1:
        _copy_base_row(base, out, r, p0 * DOT_NR, p1 * DOT_NR)  # this group's columns
        _high_row_acc(out[r], hi[r], s_rows[r], w_dot, offset, scale_q, reverse, p0, p1)


@njit(inline="always", **_FLAGS)
def _prefetch_base(base, r, last, i, count, p0, p1, reverse):
    """The lines of base's rows r..last that the epilogues of the panels at
    positions i..i+count-1 of p0..p1-1 (last to first where ``reverse``)
    read, asked for a tile ahead: a step's gx rows come from memory at long
    sequences (T x B x 4H floats), and the epilogue would wait on them (one
    core of Zen 5, 8 x 256 x 1024 bfloat16 on gx rows from a 65 MB array:
    9.90 against 8.24 µs on rows in cache, 8.67 with this)."""
    if base.shape[0] > 1:
        for pos in range(i, min(i + count, p1 - p0)):
            j = (p1 - 1 - pos if reverse else p0 + pos) * DOT_NR
            for rb in range(r, last + 1):
                prefetch(base, rb, j)
                prefetch(base, rb, j + DOT_LANES)


@njit(**_FLAGS)
def _high_six(out, hi, s_rows, r, n, w_dot, offset, scale_q, reverse, p0, p1, base):
    """Rows r..r+n-1 (n = 5 or 6) of hi into out over panels p0..p1-1, as a
    tile of six (a missing row repeats the last, its sums dropped), two panels
    at a time: 24 chains on four weight loads and six splats a k. Five or six
    rows as eight cost eight rows' time; this tile takes 0.74-0.78x of it
    (one core of Zen 5, K = 256-512, int8 and bfloat16)."""
    P = p1 - p0
    Q = 4 * DOT_LANES
    zero = dot_zero(w_dot)
    h0, h1, h2, h3, h4, h5 = hi[r], hi[r + 1], hi[r + 2], hi[r + 3], hi[r + 4], hi[r + n - 1]
    _prefetch_base(base, r, r + n - 1, 0, 2, p0, p1, reverse)
    for i in range(0, P, 2):
        pa, pb = _panel_pair(i, p0, p1, reverse)
        _prefetch_base(base, r, r + n - 1, i + 2, 2, p0, p1, reverse)
        wa, wb = w_dot[pa], w_dot[pb]
        s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = s40 = s41 = s50 = s51 = zero  # panel a
        t00 = t01 = t10 = t11 = t20 = t21 = t30 = t31 = t40 = t41 = t50 = t51 = zero  # panel b
        for k in range(w_dot.shape[1]):
            qa0, qa1 = vload_quads(wa, k, 0), vload_quads(wa, k, Q)
            qb0, qb1 = vload_quads(wb, k, 0), vload_quads(wb, k, Q)
            s00, s01, t00, t01 = _high_quads2(h0, k, qa0, qa1, qb0, qb1, s00, s01, t00, t01)
            s10, s11, t10, t11 = _high_quads2(h1, k, qa0, qa1, qb0, qb1, s10, s11, t10, t11)
            s20, s21, t20, t21 = _high_quads2(h2, k, qa0, qa1, qb0, qb1, s20, s21, t20, t21)
            s30, s31, t30, t31 = _high_quads2(h3, k, qa0, qa1, qb0, qb1, s30, s31, t30, t31)
            s40, s41, t40, t41 = _high_quads2(h4, k, qa0, qa1, qb0, qb1, s40, s41, t40, t41)
            s50, s51, t50, t51 = _high_quads2(h5, k, qa0, qa1, qb0, qb1, s50, s51, t50, t51)
        _high_add4(out, r, 4, pa * DOT_NR, s00, s01, s10, s11, s20, s21, s30, s31, zero,
                   offset, scale_q, s_rows, base)
        _high_add4(out, r + 4, n - 4, pa * DOT_NR, s40, s41, s50, s51, zero, zero, zero, zero,
                   zero, offset, scale_q, s_rows, base)
        if pb != pa:
            _high_add4(out, r, 4, pb * DOT_NR, t00, t01, t10, t11, t20, t21, t30, t31, zero,
                       offset, scale_q, s_rows, base)
            _high_add4(out, r + 4, n - 4, pb * DOT_NR, t40, t41, t50, t51, zero, zero, zero,
                       zero, zero, offset, scale_q, s_rows, base)


@njit(**_FLAGS)
def _high_three(out, hi, s_rows, r, w_dot, offset, scale_q, reverse, p0, p1, base):
    """Rows r..r+2 of hi into out over panels p0..p1-1, two panels at a time:
    twelve chains on four weight loads and three splats a k. As a tile of
    four they took four rows' time; this takes 0.58-0.65 (int8) and 0.79-0.84
    (bfloat16) of it (one core of Zen 5, K = 256-512)."""
    P = p1 - p0
    Q = 4 * DOT_LANES
    zero = dot_zero(w_dot)
    h0, h1, h2 = hi[r], hi[r + 1], hi[r + 2]
    _prefetch_base(base, r, r + 2, 0, 2, p0, p1, reverse)
    for i in range(0, P, 2):
        pa, pb = _panel_pair(i, p0, p1, reverse)
        _prefetch_base(base, r, r + 2, i + 2, 2, p0, p1, reverse)
        wa, wb = w_dot[pa], w_dot[pb]
        s00 = s01 = s10 = s11 = s20 = s21 = zero  # panel a: row, vector
        t00 = t01 = t10 = t11 = t20 = t21 = zero  # panel b
        for k in range(w_dot.shape[1]):
            qa0, qa1 = vload_quads(wa, k, 0), vload_quads(wa, k, Q)
            qb0, qb1 = vload_quads(wb, k, 0), vload_quads(wb, k, Q)
            s00, s01, t00, t01 = _high_quads2(h0, k, qa0, qa1, qb0, qb1, s00, s01, t00, t01)
            s10, s11, t10, t11 = _high_quads2(h1, k, qa0, qa1, qb0, qb1, s10, s11, t10, t11)
            s20, s21, t20, t21 = _high_quads2(h2, k, qa0, qa1, qb0, qb1, s20, s21, t20, t21)
        _high_add4(out, r, 3, pa * DOT_NR, s00, s01, s10, s11, s20, s21, zero, zero, zero,
                   offset, scale_q, s_rows, base)
        if pb != pa:
            _high_add4(out, r, 3, pb * DOT_NR, t00, t01, t10, t11, t20, t21, zero, zero, zero,
                       offset, scale_q, s_rows, base)


@njit(**_FLAGS)
def _high_four(out, hi, s_rows, r, w_dot, offset, scale_q, reverse, p0, p1, base):
    """Rows r..r+3 of hi into out over panels p0..p1-1, two panels at a time:
    sixteen chains, as the eight-row tile has (a chain's latency is several
    of its instructions). The caller passes whole arrays: at small layers a
    row view or scratch array per call cost as much as the products
    (docs/performance.md)."""
    P = p1 - p0
    Q = 4 * DOT_LANES
    zero = dot_zero(w_dot)
    h0, h1, h2, h3 = hi[r], hi[r + 1], hi[r + 2], hi[r + 3]
    _prefetch_base(base, r, r + 3, 0, 2, p0, p1, reverse)
    for i in range(0, P - 1, 2):
        pa, pb = (p1 - 1 - i, p1 - 2 - i) if reverse else (p0 + i, p0 + i + 1)
        _prefetch_base(base, r, r + 3, i + 2, 2, p0, p1, reverse)
        wa, wb = w_dot[pa], w_dot[pb]
        s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = zero  # row, vector: panel a
        t00 = t01 = t10 = t11 = t20 = t21 = t30 = t31 = zero  # and panel b
        for k in range(w_dot.shape[1]):
            qa0, qa1 = vload_quads(wa, k, 0), vload_quads(wa, k, Q)
            qb0, qb1 = vload_quads(wb, k, 0), vload_quads(wb, k, Q)
            s00, s01, t00, t01 = _high_quads2(h0, k, qa0, qa1, qb0, qb1, s00, s01, t00, t01)
            s10, s11, t10, t11 = _high_quads2(h1, k, qa0, qa1, qb0, qb1, s10, s11, t10, t11)
            s20, s21, t20, t21 = _high_quads2(h2, k, qa0, qa1, qb0, qb1, s20, s21, t20, t21)
            s30, s31, t30, t31 = _high_quads2(h3, k, qa0, qa1, qb0, qb1, s30, s31, t30, t31)
        _high_add4(out, r, 4, pa * DOT_NR, s00, s01, s10, s11, s20, s21, s30, s31, zero,
                   offset, scale_q, s_rows, base)
        _high_add4(out, r, 4, pb * DOT_NR, t00, t01, t10, t11, t20, t21, t30, t31, zero,
                   offset, scale_q, s_rows, base)
    if P % 2 == 1:
        p = p0 if reverse else p1 - 1
        w = w_dot[p]
        s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = zero
        for k in range(w_dot.shape[1]):
            q0, q1 = vload_quads(w, k, 0), vload_quads(w, k, Q)
            s00, s01 = _high_quads(h0, k, q0, q1, s00, s01)
            s10, s11 = _high_quads(h1, k, q0, q1, s10, s11)
            s20, s21 = _high_quads(h2, k, q0, q1, s20, s21)
            s30, s31 = _high_quads(h3, k, q0, q1, s30, s31)
        _high_add4(out, r, 4, p * DOT_NR, s00, s01, s10, s11, s20, s21, s30, s31, zero,
                   offset, scale_q, s_rows, base)


@njit(**_FLAGS)
def _high_two(out, hi, s_rows, r, w_dot, offset, scale_q, reverse, p0, p1, base):
    """Rows r, r+1 of hi into out over panels p0..p1-1, four panels at a
    time: sixteen chains, as the four-row tile has, on half its splats (as
    a tile of four, two rows repeated, they took twice the instructions)."""
    P = p1 - p0
    Q = 4 * DOT_LANES
    zero = dot_zero(w_dot)
    h0, h1 = hi[r], hi[r + 1]
    _prefetch_base(base, r, r + 1, 0, 4, p0, p1, reverse)
    for i in range(0, P - P % 4, 4):
        pa, pb, pc, pd = ((p1 - 1 - i, p1 - 2 - i, p1 - 3 - i, p1 - 4 - i) if reverse
                          else (p0 + i, p0 + i + 1, p0 + i + 2, p0 + i + 3))
        _prefetch_base(base, r, r + 1, i + 4, 4, p0, p1, reverse)
        wa, wb, wc, wd = w_dot[pa], w_dot[pb], w_dot[pc], w_dot[pd]
        a00 = a01 = a10 = a11 = b00 = b01 = b10 = b11 = zero  # panel, row, vector
        c00 = c01 = c10 = c11 = d00 = d01 = d10 = d11 = zero
        for k in range(w_dot.shape[1]):
            qa0, qa1 = vload_quads(wa, k, 0), vload_quads(wa, k, Q)
            qb0, qb1 = vload_quads(wb, k, 0), vload_quads(wb, k, Q)
            qc0, qc1 = vload_quads(wc, k, 0), vload_quads(wc, k, Q)
            qd0, qd1 = vload_quads(wd, k, 0), vload_quads(wd, k, Q)
            a00, a01 = _high_quads(h0, k, qa0, qa1, a00, a01)
            a10, a11 = _high_quads(h1, k, qa0, qa1, a10, a11)
            b00, b01 = _high_quads(h0, k, qb0, qb1, b00, b01)
            b10, b11 = _high_quads(h1, k, qb0, qb1, b10, b11)
            c00, c01 = _high_quads(h0, k, qc0, qc1, c00, c01)
            c10, c11 = _high_quads(h1, k, qc0, qc1, c10, c11)
            d00, d01 = _high_quads(h0, k, qd0, qd1, d00, d01)
            d10, d11 = _high_quads(h1, k, qd0, qd1, d10, d11)
        _high_add4(out, r, 2, pa * DOT_NR, a00, a01, a10, a11, zero, zero, zero, zero, zero,
                   offset, scale_q, s_rows, base)
        _high_add4(out, r, 2, pb * DOT_NR, b00, b01, b10, b11, zero, zero, zero, zero, zero,
                   offset, scale_q, s_rows, base)
        _high_add4(out, r, 2, pc * DOT_NR, c00, c01, c10, c11, zero, zero, zero, zero, zero,
                   offset, scale_q, s_rows, base)
        _high_add4(out, r, 2, pd * DOT_NR, d00, d01, d10, d11, zero, zero, zero, zero, zero,
                   offset, scale_q, s_rows, base)
    for i in range(P - P % 4, P):
        p = p1 - 1 - i if reverse else p0 + i
        w = w_dot[p]
        a00 = a01 = a10 = a11 = zero
        for k in range(w_dot.shape[1]):
            q0, q1 = vload_quads(w, k, 0), vload_quads(w, k, Q)
            a00, a01 = _high_quads(h0, k, q0, q1, a00, a01)
            a10, a11 = _high_quads(h1, k, q0, q1, a10, a11)
        _high_add4(out, r, 2, p * DOT_NR, a00, a01, a10, a11, zero, zero, zero, zero, zero,
                   offset, scale_q, s_rows, base)


@njit(inline="always", **_FLAGS)
def _high_add4(out, r, n, j, s00, s01, s10, s11, s20, s21, s30, s31, zero, offset, scale_q,
               s_rows, base):
    """Rows r..r+n-1 (n = 1-4) of two vectors of high sums (row, vector) into
    columns j.. of out. A row past n stores its row's value back unchanged
    (the last row, already updated): a branch on n here cost the two- and
    three-row tiles a third of their speed (docs/performance.md)."""
    last = r + n - 1
    _dot_add2_at(out, r, j, s00, s01, True, zero, offset, scale_q, s_rows, base)
    _dot_add2_at(out, min(r + 1, last), j, s10, s11, n > 1, zero, offset, scale_q, s_rows, base)
    _dot_add2_at(out, min(r + 2, last), j, s20, s21, n > 2, zero, offset, scale_q, s_rows, base)
    _dot_add2_at(out, min(r + 3, last), j, s30, s31, n > 3, zero, offset, scale_q, s_rows, base)


@njit(inline="always", **_FLAGS)
def _dot_add2_at(out, r, j, high0, high1, live, zero, offset, scale_q, s_rows, base):
    """out[r, j : j + DOT_NR] = base's row + high sums alone where ``live``,
    else out's row as it is (a row past a tile's rows is its last, already
    written); through 2-D loads and stores, no row view."""
    s_x = s_rows[r]
    j1 = j + DOT_LANES
    rb = r if base.shape[0] > 1 else 0
    v0, v1 = vload(out, r, j), vload(out, r, j1)
    b0, b1 = vload(base, rb, j), vload(base, rb, j1)
    vstore(out, r, j, vselect(live, vadd(b0, dot_sum(zero, high0, offset, scale_q, s_x, j)), v0))
    vstore(out, r, j1, vselect(live, vadd(b1, dot_sum(zero, high1, offset, scale_q, s_x, j1)),
                               v1))


@njit(**_FLAGS)
def _high_row_acc(out_row, hi, s_x, w_dot, offset, scale_q, reverse, first, end):
    """One row's high parts alone over panels first..end-1, four panels at a
    time (eight chains: one row has no other rows to share a weight load
    with, so the loads bound it); row_dot_acc's bits."""
    P = end - first
    Q = 4 * DOT_LANES
    zero = dot_zero(w_dot)
    for i in range(0, P - P % 4, 4):
        p0, p1, p2, p3 = ((end - 1 - i, end - 2 - i, end - 3 - i, end - 4 - i) if reverse
                          else (first + i, first + i + 1, first + i + 2, first + i + 3))
        w0, w1, w2, w3 = w_dot[p0], w_dot[p1], w_dot[p2], w_dot[p3]
        a0 = a1 = b0 = b1 = c0 = c1 = d0 = d1 = zero
        for k in range(w_dot.shape[1]):
            a0, a1 = _high_quads(hi, k, vload_quads(w0, k, 0), vload_quads(w0, k, Q), a0, a1)
            b0, b1 = _high_quads(hi, k, vload_quads(w1, k, 0), vload_quads(w1, k, Q), b0, b1)
            c0, c1 = _high_quads(hi, k, vload_quads(w2, k, 0), vload_quads(w2, k, Q), c0, c1)
            d0, d1 = _high_quads(hi, k, vload_quads(w3, k, 0), vload_quads(w3, k, Q), d0, d1)
        _dot_add2(out_row, p0 * DOT_NR, zero, a0, zero, a1, offset, scale_q, s_x)
        _dot_add2(out_row, p1 * DOT_NR, zero, b0, zero, b1, offset, scale_q, s_x)
        _dot_add2(out_row, p2 * DOT_NR, zero, c0, zero, c1, offset, scale_q, s_x)
        _dot_add2(out_row, p3 * DOT_NR, zero, d0, zero, d1, offset, scale_q, s_x)
    for i in range(P - P % 4, P):
        p = end - 1 - i if reverse else first + i
        w = w_dot[p]
        a0 = a1 = zero
        for k in range(w_dot.shape[1]):
            a0, a1 = _high_quads(hi, k, vload_quads(w, k, 0), vload_quads(w, k, Q), a0, a1)
        _dot_add2(out_row, p * DOT_NR, zero, a0, zero, a1, offset, scale_q, s_x)


@njit(inline="always", **_FLAGS)
def _high_quads(hi, k4, q0, q1, high0, high1):
    """One k4 row of a panel against a row's high bytes alone."""
    b = vsplat_quad(hi, 4 * k4)
    return vdot(high0, b, q0), vdot(high1, b, q1)


@njit(inline="always", **_FLAGS)
def _high_quads2(hi, k4, qa0, qa1, qb0, qb1, a0, a1, b0, b1):
    """One k4 row of panels a and b against a row's high bytes alone, one
    splat for both (the two-panel tiles)."""
    x = vsplat_quad(hi, 4 * k4)
    return vdot(a0, x, qa0), vdot(a1, x, qa1), vdot(b0, x, qb0), vdot(b1, x, qb1)


@njit(inline="always", **_FLAGS)
def _panel_pair(i, p0, p1, reverse):
    """The two panels of p0..p1-1 a two-panel tile takes at its i-th (i even),
    last to first where ``reverse``; an odd last panel pairs with itself (the
    tile drops its second sums)."""
    pa = p1 - 1 - i if reverse else p0 + i
    pb = (p1 - 2 - i if reverse else p0 + i + 1) if i + 1 < p1 - p0 else pa
    return pa, pb


# Bytes of a dot layout's panels that every row tile of a product runs over
# before the next ones: where W is past L2, tile after tile would read all of
# it from L3 again (12 rows of an int8 H = 1024 direction: 4 MB twice a step).
# A quarter of the smallest L2 among the CPUs we run on (512 KB, Zen 2 and 3),
# so the group stays there beside the rows and sums.
PANEL_GROUP_BYTES = 128 * 1024


@njit(inline="always", **_FLAGS)
def panel_group(w_dot):
    """Panels a group holds (at least four: the one-row kernel's step)."""
    panel_bytes = w_dot.shape[1] * w_dot.shape[2] * w_dot.itemsize
    return max(4, PANEL_GROUP_BYTES // panel_bytes // 4 * 4)


@njit(inline="always", **_FLAGS)
def tile_rows(R, w_dot):
    """Rows the int8 tile kernel takes where K4 fills whole tiles (16 k4
    rows): every row where the last tile would hold half a tile or more,
    else the whole tiles; 0 where K4 does not fill them. A tile costs about
    the same for 1-16 rows (one core, K = 512, N = 2048: 8 rows as fast as
    vpdpbusd's, 12 rows 1.45x, 4 rows 0.85x); the sums are the same."""
    if w_dot.shape[1] % AMX_ROWS != 0:
        return 0
    return R if R % AMX_ROWS >= AMX_ROWS // 2 else R - R % AMX_ROWS


@njit(inline="always", **_FLAGS)
def every_row_on_tiles(w_dot):
    """Whether every row of a product on w_dot, one row or many, takes the
    tiles: bfloat16 where the CPU has AMX-BF16 and K2 fills whole tiles (a
    property of the matrix, not of the batch). tdpbf16ps rounds its sums
    otherwise than vdpbf16ps, and a row's h rounded to bfloat16 would turn
    that last bit into a step of its grid now and then; so one kernel for
    every batch size, as int8 has one kind of sum."""
    return HAS_AMX_BF16 and is_bf16(w_dot) and w_dot.shape[1] % AMX_ROWS == 0


def rows_on_tiles(w_dot: np.ndarray) -> bool:
    """every_row_on_tiles for Python (the dispatch table): w_dot one block's
    dot layout (P, K2 or K4, 4 * DOT_NR), bfloat16 pairs stored as uint8."""
    return HAS_AMX_BF16 and w_dot.dtype == np.uint8 and w_dot.shape[1] % AMX_ROWS == 0


def row_tiles_acc(out_row, w_dot, offset, scale_q, s_x, lo, hi, high_only, reverse):
    """row_dot_acc on a one-row tile, returning True, where every_row_on_tiles;
    else False, a constant for int8 and on CPUs without AMX-BF16. ``reverse``:
    the panels last to first, as gemm_dot_acc's."""


@overload(row_tiles_acc, inline="always", jit_options=_FLAGS)
def _row_tiles_acc(out_row, w_dot, offset, scale_q, s_x, lo, hi, high_only, reverse):
    if not HAS_AMX_BF16 or w_dot.dtype != nbtypes.uint8:
        return lambda out_row, w_dot, offset, scale_q, s_x, lo, hi, high_only, reverse: False

    def impl(out_row, w_dot, offset, scale_q, s_x, lo, hi, high_only, reverse):
        if not every_row_on_tiles(w_dot):
            return False
        out = out_row[np.newaxis, :]
        # as _gemm_dot_acc32 calls it, so that both share one compiled kernel
        _amx_dot_acc(out[:, :], lo[np.newaxis, :], hi[np.newaxis, :],
                     np.full(1, s_x, np.float32), w_dot, offset, scale_q, np.int64(1),
                     bool(reverse), _NO_TILES, bool(high_only), out[:, :])
        return True
    return impl


# High parts go two row tiles a weight tile: each weight tile then serves 32
# rows, a third fewer tile loads (with them the 2 x 2 loop runs at the
# instruction's own rate on aligned data, docs/performance.md). The weights
# are loaded with tileloaddt1, so the 32 rows' tiles keep L1 (without it they
# crowded W out and pairs lost within L2). One core, 32 rows' high parts,
# pairs against one row tile at a time: bfloat16 K = 512, N = 1024 (1 MB)
# 1.2x, N = 2048 1.4x; int8 within L2 the same, 4 MB 1.6x (docs/performance.md).
# A function, so that tests can force either (emulated_tiles_dot_acc).
@njit(inline="always", **_FLAGS)
def tile_pairs_pay(w_dot):
    """Whether _tiles_dot_acc runs high parts two row tiles at a time on w_dot."""
    return True


# Where W is past half the 2 MB L2 of every AMX CPU so far, the tile kernel
# takes it in groups of a quarter of that, which stay in L2 beside the rows'
# tiles (_tiles_dot_acc). Within it, one group: there groups would only
# read the rows again.
TILE_W_IN_L2_BYTES = 1024 * 1024
TILE_GROUP_BYTES = 512 * 1024


@njit(inline="always", **_FLAGS)
def tile_panel_group(w_dot):
    """Panels a group of the tile kernel holds (at least one)."""
    panel_bytes = w_dot.shape[1] * w_dot.shape[2] * w_dot.itemsize
    if w_dot.shape[0] * panel_bytes <= TILE_W_IN_L2_BYTES:
        return w_dot.shape[0]
    return max(1, TILE_GROUP_BYTES // panel_bytes)


def tile_sums(w_dot):
    """The tiles' sums for w_dot, zero: int32 for int8, float32 for bfloat16 pairs."""


@overload(tile_sums, inline="always", jit_options=_FLAGS)
def _tile_sums(w_dot):
    dtype = np.float32 if w_dot.dtype == nbtypes.uint8 else np.int32

    def impl(w_dot):
        sums = empty_on_lines(4 * AMX_ROWS, AMX_ROWS, dtype)  # tile stores split no line
        sums[...] = 0
        return sums
    return impl


def _tiles_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, R16, reverse, tiles, high_only,
                   base):
    """Rows 0..R16-1 of gemm_dot_acc on tiles, 16 rows x 16 columns x 64
    bytes of k a tile_dot (tdpbusd; tdpbf16ps for bfloat16 pairs): per panel, tiles 0-3
    sum the low and high parts' products of its one or two 16-column halves,
    4 and 5 hold 16 rows of lo and hi, 6 and 7 the halves' weights (16 k4 or
    k2 rows each, the layout's own rows); with high_only (lo all 0) tiles
    0-1 are left out and their sums stay the zeros they start as, and so
    for bfloat16, whose lo products go into hi's sums, first at each k step.
    A last tile of fewer rows is configured with fewer rows. Where a column
    has one sum (high parts, bfloat16) rows go two whole row tiles at a time
    first (tile_pairs_pay). Weight tiles are loaded once a
    pass (tile_load_once), the rows' with plain loads. out = base + the sums (base
    is out itself, or gemm_dot_acc's). Compiled with amx's instructions, and
    with their emulation for tests."""
    P, K4 = w_dot.shape[0], w_dot.shape[1]
    sums_mem = tile_sums(w_dot)
    sums = unowned(sums_mem)  # tile t's sums: rows 16t..16t+15
    zero = dot_zero(w_dot)
    # bfloat16 rows with lo add its products into the sums of hi's, first at
    # each k step: one sum a column, as for high parts alone. int8's lo and hi
    # sums stay apart (exact int32s, scaled 1 and 256).
    lo_in_sums = not high_only and is_bf16(w_dot)
    lo_apart = not high_only and not lo_in_sums
    # Two whole row tiles at a time where each column has one sum: tiles 4 and
    # 5 hold their rows, 0-1 and 2-3 their sums, and each weight tile serves
    # both (4 loads for 4 products, not 6; with lo, 6 loads for 8, not 8).
    pairs_end = R16 - R16 % (2 * AMX_ROWS) if not lo_apart and tile_pairs_pay(w_dot) else 0
    first = lo if lo_in_sums else hi  # the rows multiplied first at each k step
    # Every row tile runs over a group of panels before the next group: where
    # W is past L2, each pass over it then comes from L3 once, not once for
    # every 16 or 32 rows.
    group = tile_panel_group(w_dot)
    for g0 in range(0, P, group):
        if pairs_end > 0:
            tile_config(tiles, tile_config_bytes(AMX_ROWS))
        for r0 in range(0, pairs_end, 2 * AMX_ROWS):
            a_first = r0 * first.strides[0]
            b_first = a_first + AMX_ROWS * first.strides[0]
            a_hi = r0 * hi.strides[0]
            b_hi = a_hi + AMX_ROWS * hi.strides[0]
            for i in range(g0, min(g0 + group, P)):
                p = P - 1 - i if reverse else i
                tile_zero(tiles, 0)
                tile_zero(tiles, 2)
                if DOT_NR == 2 * AMX_ROWS:
                    tile_zero(tiles, 1)
                    tile_zero(tiles, 3)
                for k4 in range(0, K4, AMX_ROWS):
                    tile_load(tiles, 4, first, a_first + 4 * k4, first.strides[0])
                    tile_load(tiles, 5, first, b_first + 4 * k4, first.strides[0])
                    w = p * w_dot.strides[0] + k4 * w_dot.strides[1]
                    tile_load_once(tiles, 6, w_dot, w, w_dot.strides[1])
                    tile_dot(tiles, 0, 4, 6, w_dot)
                    tile_dot(tiles, 2, 5, 6, w_dot)
                    if DOT_NR == 2 * AMX_ROWS:
                        tile_load_once(tiles, 7, w_dot, w + AMX_ROW_BYTES, w_dot.strides[1])
                        tile_dot(tiles, 1, 4, 7, w_dot)
                        tile_dot(tiles, 3, 5, 7, w_dot)
                    if lo_in_sums:  # then hi's rows, on the weight tiles already loaded
                        tile_load(tiles, 4, hi, a_hi + 4 * k4, hi.strides[0])
                        tile_load(tiles, 5, hi, b_hi + 4 * k4, hi.strides[0])
                        tile_dot(tiles, 0, 4, 6, w_dot)
                        tile_dot(tiles, 2, 5, 6, w_dot)
                        if DOT_NR == 2 * AMX_ROWS:
                            tile_dot(tiles, 1, 4, 7, w_dot)
                            tile_dot(tiles, 3, 5, 7, w_dot)
                tile_store(tiles, 0, sums, 0, AMX_ROW_BYTES)
                tile_store(tiles, 2, sums, 2 * AMX_ROWS * AMX_ROW_BYTES, AMX_ROW_BYTES)
                if DOT_NR == 2 * AMX_ROWS:
                    tile_store(tiles, 1, sums, AMX_ROWS * AMX_ROW_BYTES, AMX_ROW_BYTES)
                    tile_store(tiles, 3, sums, 3 * AMX_ROWS * AMX_ROW_BYTES, AMX_ROW_BYTES)
                for r in range(2 * AMX_ROWS):
                    b = r0 + r if base.shape[0] > 1 else 0
                    t = 2 * (r // AMX_ROWS) * AMX_ROWS + r % AMX_ROWS  # its sums: tiles 0-1 or 2-3
                    for half in range(DOT_NR // AMX_ROWS):
                        for j in range(0, AMX_ROWS, DOT_LANES):
                            col = p * DOT_NR + half * AMX_ROWS + j
                            vstore(out, r0 + r, col, vadd(vload(base, b, col), one_sum(
                                zero, vload(sums, t + half * AMX_ROWS, j), offset, scale_q,
                                s_rows[r0 + r], col)))
        for r0 in range(pairs_end, R16, AMX_ROWS):
            rows = min(AMX_ROWS, R16 - r0)
            if r0 == pairs_end or rows < AMX_ROWS:
                tile_config(tiles, tile_config_bytes(rows))
            a_lo = r0 * lo.strides[0]
            a_hi = r0 * hi.strides[0]
            for i in range(g0, min(g0 + group, P)):
                p = P - 1 - i if reverse else i
                if lo_apart:
                    tile_zero(tiles, 0)
                tile_zero(tiles, 2)
                if DOT_NR == 2 * AMX_ROWS:
                    if lo_apart:
                        tile_zero(tiles, 1)
                    tile_zero(tiles, 3)
                for k4 in range(0, K4, AMX_ROWS):
                    if not high_only:
                        tile_load(tiles, 4, lo, a_lo + 4 * k4, lo.strides[0])
                    tile_load(tiles, 5, hi, a_hi + 4 * k4, hi.strides[0])
                    w = p * w_dot.strides[0] + k4 * w_dot.strides[1]
                    tile_load_once(tiles, 6, w_dot, w, w_dot.strides[1])
                    if lo_in_sums:
                        tile_dot(tiles, 2, 4, 6, w_dot)
                    elif lo_apart:
                        tile_dot(tiles, 0, 4, 6, w_dot)
                    tile_dot(tiles, 2, 5, 6, w_dot)
                    if DOT_NR == 2 * AMX_ROWS:
                        tile_load_once(tiles, 7, w_dot, w + AMX_ROW_BYTES, w_dot.strides[1])
                        if lo_in_sums:
                            tile_dot(tiles, 3, 4, 7, w_dot)
                        elif lo_apart:
                            tile_dot(tiles, 1, 4, 7, w_dot)
                        tile_dot(tiles, 3, 5, 7, w_dot)
                if lo_apart:
                    tile_store(tiles, 0, sums, 0, AMX_ROW_BYTES)
                tile_store(tiles, 2, sums, 2 * AMX_ROWS * AMX_ROW_BYTES, AMX_ROW_BYTES)
                if DOT_NR == 2 * AMX_ROWS:
                    if lo_apart:
                        tile_store(tiles, 1, sums, AMX_ROWS * AMX_ROW_BYTES, AMX_ROW_BYTES)
                    tile_store(tiles, 3, sums, 3 * AMX_ROWS * AMX_ROW_BYTES, AMX_ROW_BYTES)
                for r in range(rows):
                    b = r0 + r if base.shape[0] > 1 else 0
                    for half in range(DOT_NR // AMX_ROWS):
                        for j in range(0, AMX_ROWS, DOT_LANES):
                            col = p * DOT_NR + half * AMX_ROWS + j
                            high = vload(sums, (2 + half) * AMX_ROWS + r, j)
                            total = (tile_sum(vload(sums, half * AMX_ROWS + r, j), high, offset,
                                              scale_q, s_rows[r0 + r], col) if lo_apart else
                                     one_sum(zero, high, offset, scale_q, s_rows[r0 + r], col))
                            vstore(out, r0 + r, col, vadd(vload(base, b, col), total))
    tile_release(tiles)
    keep_alive(sums_mem)


def one_sum(zero, high, offset, scale_q, s_h, j):
    """tile_sum of a column with one sum (high parts, or bfloat16's): the
    float32 sum itself, int8's with zero low parts."""


@overload(one_sum, inline="always", jit_options=_FLAGS)
def _one_sum(zero, high, offset, scale_q, s_h, j):
    if high.dtype == nbtypes.float32:
        return lambda zero, high, offset, scale_q, s_h, j: high
    return lambda zero, high, offset, scale_q, s_h, j: _sum_bytes(
        zero, high, offset, scale_q, s_h, j)


def tile_sum(low, high, offset, scale_q, s_h, j):
    """dot_sum for the tiles' sums: int8's are vpdpbusd's (bytes, offset by
    128) on every CPU, the emulated kernel's without VNNI too."""


@overload(tile_sum, inline="always", jit_options=_FLAGS)
def _tile_sum(low, high, offset, scale_q, s_h, j):
    if low.dtype == nbtypes.float32:
        return lambda low, high, offset, scale_q, s_h, j: _sum_bf16(
            low, high, offset, scale_q, s_h, j)
    return lambda low, high, offset, scale_q, s_h, j: _sum_bytes(
        low, high, offset, scale_q, s_h, j)


_NO_TILES = np.empty((0, 0, 0), np.uint8)  # the instructions' registers are their own
if HAS_AMX:
    _amx_dot_acc = njit(**_FLAGS)(_tiles_dot_acc)
else:  # tile instructions do not compile for a target without them
    @njit(**_FLAGS)
    def _amx_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, R16, reverse, tiles,
                     high_only, base):
        pass
_EMULATED: dict = {}
_PAIRS_AS = {None: tile_pairs_pay, True: njit(inline="always")(lambda w_dot: True),
             False: njit(inline="always")(lambda w_dot: False)}
_ONE_PANEL = njit(inline="always")(lambda w_dot: 1)


def emulated_tiles_dot_acc(out, lo, hi, s_rows, w_dot, offset, scale_q, reverse=False,
                           high_only=False, base=None, pairs=None, one_panel_groups=False):
    """The tile kernel with its tile operations emulated (tests, on any
    CPU): rows 0..R16-1 of gemm_dot_acc, R16 = tile_rows(R, w_dot) for int8,
    every row for bfloat16 pairs (K2 filling whole tiles, else none).
    ``pairs``: True or False forces two row tiles at a time on or off (None:
    tile_pairs_pay); ``one_panel_groups``: groups of one panel each (as W
    far past L2 would have). Returns R16."""
    key = (pairs, one_panel_groups)
    if key not in _EMULATED:
        names = dict(EMULATED, tile_pairs_pay=_PAIRS_AS[pairs])
        tag = "_emulated" if pairs is None else f"_emulated_{'pairs' if pairs else 'single'}"
        if one_panel_groups:
            names["tile_panel_group"] = _ONE_PANEL
            tag += "_groups"
        _EMULATED[key] = njit(**_FLAGS)(rebind(_tiles_dot_acc, names, tag))
    R = out.shape[0]
    if w_dot.dtype == np.uint8:
        R16 = R if w_dot.shape[1] % AMX_ROWS == 0 else 0
    else:
        R16 = tile_rows(R, w_dot)
    _EMULATED[key](out, lo, hi, s_rows, w_dot, offset, scale_q, R16, reverse,
                     np.zeros((EMULATED_TILES, AMX_ROWS, AMX_ROW_BYTES), np.uint8), high_only,
                     out if base is None else base)
    return R16


@njit(inline="always", **_FLAGS)
def _dot_add2(out_row, j, low0, high0, low1, high1, offset, scale_q, s_x):
    """A panel's two vectors of sums into out_row[j : j + DOT_NR]."""
    _dot_add(out_row, j, low0, high0, offset, scale_q, s_x)
    _dot_add(out_row, j + DOT_LANES, low1, high1, offset, scale_q, s_x)


@njit(inline="always", **_FLAGS)
def _dot_add2_rows(out, r, base, rb, j, low0, high0, low1, high1, offset, scale_q, s_x):
    """out[r, j : j + DOT_NR] = base[rb, same] + a panel's two vectors of sums
    (base may be out itself, rb = r); 2-D loads and stores, no row views."""
    j1 = j + DOT_LANES
    vstore(out, r, j, vadd(vload(base, rb, j), dot_sum(low0, high0, offset, scale_q, s_x, j)))
    vstore(out, r, j1, vadd(vload(base, rb, j1), dot_sum(low1, high1, offset, scale_q, s_x, j1)))


@njit(inline="always", **_FLAGS)
def _dot_add(out_row, j, low, high, offset, scale_q, s_x):
    vstore1(out_row, j, vadd(vload1(out_row, j), dot_sum(low, high, offset, scale_q, s_x, j)))


# -- a dot, or None where a kernel is compiled for float weights: each helper
# has a None overload that compiles to a constant, so a float layer's kernel
# carries no int8 code. A dot is (w_dot (n, P, K4, 4 * DOT_NR), offset (n, N),
# scale (n, N)): n blocks (directions, or the team's unit blocks).
def dot_k_bytes(dot):
    """Bytes of a quantized row the dot kernel reads (4 * K4), or 0."""


@overload(dot_k_bytes, inline="always", jit_options=_FLAGS)
def _dot_k_bytes(dot):
    if isinstance(dot, types.NoneType):
        return lambda dot: 0
    return lambda dot: 4 * dot[0].shape[2]


def dot_acc(out, lo, hi, s_rows, dot, q, reverse=False, high_only=False, base=None):
    """gemm_dot_acc on block q of dot; False, doing nothing, without one."""


@overload(dot_acc, inline="always", jit_options=_FLAGS)
def _dot_acc(out, lo, hi, s_rows, dot, q, reverse=False, high_only=False, base=None):
    if isinstance(dot, types.NoneType):
        return lambda out, lo, hi, s_rows, dot, q, reverse=False, high_only=False, base=None: False
    return (lambda out, lo, hi, s_rows, dot, q, reverse=False, high_only=False, base=None:
            gemm_dot_acc(out, lo, hi, s_rows, dot[0][q], dot[1][q], dot[2][q], reverse,
                         high_only, base))
