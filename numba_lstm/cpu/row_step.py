"""One batch row's step of a block of hidden units, the gates summed and the
cell applied in registers: the batch-1 kernel of the team (cpu.cooperative).

At batch 1 a block step is a matrix-vector product. Through the general path
(cpu.panel_gemm's one-row tile per panel, then the LSTM row on the sums) each
panel's sums form one dependency chain of FMAs, and the block's gate sums make
a round trip through memory. Here NR units at a time keep their four gates'
sums in 8 vectors, so 8 chains run at once over 4 panels, and the cell update
reads them from registers. It reads W_hh once per step, as any kernel must:
at batch 1 that read is the step's cost (shapes S1-S3).

The sums come out bitwise as on the general path: each panel column summed from
0 over k in order, then added to gx, and the same vector cell
(cells.lstm.update).
"""

from numba import njit
from numba import types as nbtypes
from numba.extending import overload

from ..cells import LSTM
from .activation_grids import quantize_row
from .dot_gemm import (
    DOT_LANES,
    DOT_NR,
    dot_quads,
    dot_row,
    dot_sum,
    dot_zero,
    every_row_on_tiles,
    row_tiles_acc,
    takes_high_kernel,
    vdot,
)
from .layer import cell_math
from .recurrence import _FLAGS
from .simd import (
    vadd,
    vfma,
    vload,
    vload1,
    vload_bf16_halves,
    vload_quads,
    vload_widened,
    vmul,
    vsplat,
    vsplat_quad,
    vstore1,
)

lstm_update = cell_math(LSTM)  # (c, h) from gate values and c: scalars or Vecs


def row_block_step(gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse):
    """If it can, one row's block step, returning True: gates z = gx_row +
    h_prev @ W (W: w_q, (P, H, NR) in panels, i, f, g, o by U units), then
    c (U,) updated in place, h_next and out_row (U,) set to the new h.

    w_q holds float32, or reduced-precision weights (numba_lstm.quantization:
    int8, or bfloat16 bits in uint16) widened to float32 in registers as they
    are read; scale_q is then each gate column's scale (4U,) (ones for
    bfloat16), applied to the column's sum, and None for float32 weights.
    Returns False, having done nothing, unless float32 with U a multiple of NR
    and c, h_next, out_row U long. reverse: take the units' groups last to
    first (the same numbers, see cooperative._recur). For jitted code only."""


@overload(row_block_step)
def _row_block_step_impl(gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse):
    if gx_row.dtype == nbtypes.float32:
        def impl(gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse):
            U = gx_row.shape[0] // 4
            if U % w_q.shape[2] != 0 or c.shape[0] != U:
                return False
            _row_block_step32(gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse)
            return True
        return impl
    return lambda gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse: False


def _load_row(w, k, L):
    """Row k of a two-vector panel as two float32 Vecs (columns 0.. and L..),
    widening reduced-precision weights; bfloat16 panels hold the two vectors'
    columns interleaved (packing.interleave_bf16)."""


@overload(_load_row, inline="always", jit_options=_FLAGS)
def _load_row_impl(w, k, L):
    if w.dtype == nbtypes.float32:
        return lambda w, k, L: (vload(w, k, 0), vload(w, k, L))
    if w.dtype == nbtypes.uint16:
        return lambda w, k, L: vload_bf16_halves(w, k, 0)
    return lambda w, k, L: (vload_widened(w, k, 0), vload_widened(w, k, L))


def _scaled(v, scale_q, j):
    """v times scale_q[j : j + lanes], or v itself where scale_q is None."""


@overload(_scaled, inline="always", jit_options=_FLAGS)
def _scaled_impl(v, scale_q, j):
    if isinstance(scale_q, nbtypes.NoneType):
        return lambda v, scale_q, j: v
    return lambda v, scale_q, j: vmul(v, vload1(scale_q, j))


@njit(inline="always", **_FLAGS)
def _row_block_step32(gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse):
    NR = w_q.shape[2]
    L = NR // 2
    U = gx_row.shape[0] // 4
    groups = U // NR  # panels per gate
    for n in range(groups):
        g = groups - 1 - n if reverse else n
        w_i, w_f = w_q[g], w_q[groups + g]  # (H, NR) each
        w_g, w_o = w_q[2 * groups + g], w_q[3 * groups + g]
        i0 = i1 = f0 = f1 = g0 = g1 = o0 = o1 = vsplat(gx_row.dtype.type(0))
        for k in range(h_prev.shape[0]):
            s = vsplat(h_prev[k])
            w0, w1 = _load_row(w_i, k, L)
            i0, i1 = vfma(s, w0, i0), vfma(s, w1, i1)
            w0, w1 = _load_row(w_f, k, L)
            f0, f1 = vfma(s, w0, f0), vfma(s, w1, f1)
            w0, w1 = _load_row(w_g, k, L)
            g0, g1 = vfma(s, w0, g0), vfma(s, w1, g1)
            w0, w1 = _load_row(w_o, k, L)
            o0, o1 = vfma(s, w0, o0), vfma(s, w1, o1)
        _scaled_cell(gx_row, scale_q, U, g * NR, i0, f0, g0, o0, c, h_next, out_row)
        _scaled_cell(gx_row, scale_q, U, g * NR + L, i1, f1, g1, o1, c, h_next, out_row)


@njit(inline="always", **_FLAGS)
def _scaled_cell(gx_row, scale_q, U, j, s_i, s_f, s_g, s_o, c, h_next, out_row):
    _cell(gx_row, U, j, _scaled(s_i, scale_q, j), _scaled(s_f, scale_q, U + j),
          _scaled(s_g, scale_q, 2 * U + j), _scaled(s_o, scale_q, 3 * U + j),
          c, h_next, out_row)


def row_block_step_dot(gx_row, w_dot, offset, scale_q, h_prev, lo, hi, c, h_next, out_row,
                       reverse):
    """row_block_step for int8 weights in a dot layout: h_prev quantized to 8
    bits per row (quantize_row8, error 0.4% of max|h|, in int16's bytes), dotted with
    the int8 weights four at a time by vpdpbusd (64 multiply-adds an
    instruction against 16 for a float32 FMA) with AVX512-VNNI, as int16
    pairs elsewhere (dot_gemm). w_dot (P, K4, 4 * DOT_NR) int8:
    panel p's row k4 holds, for each of its DOT_NR columns, the weights of
    k = 4*k4 .. 4*k4+3; offset (4U,) int32 128 x each column's weight sum;
    scale_q (4U,) the columns' scales; lo, hi (4 * K4,) uint8 scratch. Returns
    False, having done nothing, under row_block_step's conditions or when h_prev
    is not finite. bfloat16 weights in pairs (uint8, dot_gemm) take h rounded
    to bfloat16 and vdpbf16ps the same way. For jitted code only."""


@overload(row_block_step_dot)
def _row_block_step_dot_impl(gx_row, w_dot, offset, scale_q, h_prev, lo, hi, c, h_next,
                             out_row, reverse):
    if gx_row.dtype == nbtypes.float32:
        def impl(gx_row, w_dot, offset, scale_q, h_prev, lo, hi, c, h_next, out_row, reverse):
            U = gx_row.shape[0] // 4
            if U % DOT_NR != 0 or c.shape[0] != U:
                return False
            s_h = quantize_row(h_prev, lo, hi, w_dot, True)
            if s_h < 0:
                return False
            _row_block_step_dot32(gx_row, w_dot, offset, scale_q, s_h, lo, hi, c, h_next,
                                  out_row, reverse)
            return True
        return impl
    return (lambda gx_row, w_dot, offset, scale_q, h_prev, lo, hi, c, h_next, out_row,
            reverse: False)


@njit(inline="always", **_FLAGS)
def _row_block_step_dot32(gx_row, w_dot, offset, scale_q, s_h, lo, hi, c, h_next, out_row,
                          reverse):
    if _row_block_step_tiles(gx_row, w_dot, offset, scale_q, s_h, lo, hi, c, h_next, out_row,
                             reverse):
        return
    if takes_high_kernel(w_dot):  # h on its 8-bit grid, or bfloat16: the low sums are 0
        _row_block_step_high32(gx_row, w_dot, offset, scale_q, s_h, hi, c, h_next, out_row,
                               reverse)
        return
    U = gx_row.shape[0] // 4
    groups = U // DOT_NR
    Q = 4 * DOT_LANES  # bytes of one Vec of quads
    for n in range(groups):
        g = groups - 1 - n if reverse else n
        w_i, w_f = w_dot[g], w_dot[groups + g]  # (K4, 4 * DOT_NR) each
        w_g, w_o = w_dot[2 * groups + g], w_dot[3 * groups + g]
        zero = dot_zero(w_dot)
        li0 = li1 = lf0 = lf1 = lg0 = lg1 = lo0 = lo1 = zero  # sums of the low bytes
        hi0 = hi1 = hf0 = hf1 = hg0 = hg1 = ho0 = ho1 = zero  # and of the high ones
        for k in range(w_dot.shape[1]):
            a, b = dot_row(lo, hi, k, zero)
            li0, hi0, li1, hi1 = dot_quads(a, b, vload_quads(w_i, k, 0), vload_quads(w_i, k, Q),
                                           li0, hi0, li1, hi1)
            lf0, hf0, lf1, hf1 = dot_quads(a, b, vload_quads(w_f, k, 0), vload_quads(w_f, k, Q),
                                           lf0, hf0, lf1, hf1)
            lg0, hg0, lg1, hg1 = dot_quads(a, b, vload_quads(w_g, k, 0), vload_quads(w_g, k, Q),
                                           lg0, hg0, lg1, hg1)
            lo0, ho0, lo1, ho1 = dot_quads(a, b, vload_quads(w_o, k, 0), vload_quads(w_o, k, Q),
                                           lo0, ho0, lo1, ho1)
        j = g * DOT_NR
        _dot_cell(gx_row, U, j, li0, hi0, lf0, hf0, lg0, hg0, lo0, ho0, offset, scale_q, s_h,
                  c, h_next, out_row)
        _dot_cell(gx_row, U, j + DOT_LANES, li1, hi1, lf1, hf1, lg1, hg1, lo1, ho1, offset,
                  scale_q, s_h, c, h_next, out_row)


@njit(inline="always", **_FLAGS)
def _row_block_step_tiles(gx_row, w_dot, offset, scale_q, s_h, lo, hi, c, h_next, out_row,
                          reverse):
    """Where bfloat16 rows take AMX tiles (dot_gemm.every_row_on_tiles): the
    gates summed on a one-row tile into a copy of gx_row, as the many-row
    steps sum them, then the cell; returns True. Else False, doing nothing.
    ``reverse`` as the other kernels': a block past L2 then keeps its last
    part there for the next step."""
    if not every_row_on_tiles(w_dot):
        return False
    gates = gx_row.copy()  # (4U,) gx, then + h @ W
    row_tiles_acc(gates, w_dot, offset, scale_q, s_h, lo, hi, True, reverse)
    U = gx_row.shape[0] // 4
    for j in range(0, U, DOT_LANES):
        c_new, h = lstm_update(vload1(gates, j), vload1(gates, U + j),
                               vload1(gates, 2 * U + j), vload1(gates, 3 * U + j), vload1(c, j))
        vstore1(c, j, c_new)
        vstore1(h_next, j, h)
        vstore1(out_row, j, h)
    return True


@njit(inline="always", **_FLAGS)
def _row_block_step_high32(gx_row, w_dot, offset, scale_q, s_h, hi, c, h_next, out_row,
                           reverse):
    """_row_block_step_dot32 on the high bytes alone (quantize_row8's rows):
    half the vpdpbusd, the same bits."""
    U = gx_row.shape[0] // 4
    groups = U // DOT_NR
    Q = 4 * DOT_LANES
    zero = dot_zero(w_dot)
    for n in range(groups):
        g = groups - 1 - n if reverse else n
        w_i, w_f = w_dot[g], w_dot[groups + g]
        w_g, w_o = w_dot[2 * groups + g], w_dot[3 * groups + g]
        hi0 = hi1 = hf0 = hf1 = hg0 = hg1 = ho0 = ho1 = zero
        for k in range(w_dot.shape[1]):
            b = vsplat_quad(hi, 4 * k)
            hi0 = vdot(hi0, b, vload_quads(w_i, k, 0))
            hi1 = vdot(hi1, b, vload_quads(w_i, k, Q))
            hf0 = vdot(hf0, b, vload_quads(w_f, k, 0))
            hf1 = vdot(hf1, b, vload_quads(w_f, k, Q))
            hg0 = vdot(hg0, b, vload_quads(w_g, k, 0))
            hg1 = vdot(hg1, b, vload_quads(w_g, k, Q))
            ho0 = vdot(ho0, b, vload_quads(w_o, k, 0))
            ho1 = vdot(ho1, b, vload_quads(w_o, k, Q))
        j = g * DOT_NR
        _dot_cell(gx_row, U, j, zero, hi0, zero, hf0, zero, hg0, zero, ho0, offset, scale_q,
                  s_h, c, h_next, out_row)
        _dot_cell(gx_row, U, j + DOT_LANES, zero, hi1, zero, hf1, zero, hg1, zero, ho1, offset,
                  scale_q, s_h, c, h_next, out_row)


@njit(inline="always", **_FLAGS)
def _dot_cell(gx_row, U, j, li, hi, lf, hf, lg, hg, lo, ho, offset, scale_q, s_h, c, h_next,
              out_row):
    """The cell on units j.. from the four gates' low- and high-byte sums."""
    _cell(gx_row, U, j, dot_sum(li, hi, offset, scale_q, s_h, j),
          dot_sum(lf, hf, offset, scale_q, s_h, U + j),
          dot_sum(lg, hg, offset, scale_q, s_h, 2 * U + j),
          dot_sum(lo, ho, offset, scale_q, s_h, 3 * U + j), c, h_next, out_row)


@njit(inline="always", **_FLAGS)
def _cell(gx_row, U, j, s_i, s_f, s_g, s_o, c, h_next, out_row):
    """Units j .. j+lanes-1 from their gate sums s_* (without gx)."""
    c_new, h = lstm_update(vadd(vload1(gx_row, j), s_i), vadd(vload1(gx_row, U + j), s_f),
                               vadd(vload1(gx_row, 2 * U + j), s_g),
                               vadd(vload1(gx_row, 3 * U + j), s_o), vload1(c, j))
    vstore1(c, j, c_new)
    vstore1(h_next, j, h)
    vstore1(out_row, j, h)
