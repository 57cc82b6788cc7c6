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
from .layer import cell_math
from .recurrence import _FLAGS
from .simd import vadd, vfma, vload, vload1, vload_widened, vmul, vsplat, vstore1

lstm_update = cell_math(LSTM)  # (c, h) from gate values and c: scalars or Vecs


def row_block_step(gx_row, w_q, h_prev, c, h_next, out_row, reverse):
    """If it can, one row's block step, returning True: gates z = gx_row +
    h_prev @ W (W: w_q, (P, H, NR) in panels, i, f, g, o by U units), then
    c (U,) updated in place, h_next and out_row (U,) set to the new h.
    Returns False, having done nothing, unless float32 with U a multiple of NR
    and c, h_next, out_row U long. reverse: take the units' groups last to
    first (the same numbers, see cooperative._recur). For jitted code only."""


@overload(row_block_step)
def _row_block_step_impl(gx_row, w_q, h_prev, c, h_next, out_row, reverse):
    if gx_row.dtype == nbtypes.float32:
        def impl(gx_row, w_q, h_prev, c, h_next, out_row, reverse):
            U = gx_row.shape[0] // 4
            if U % w_q.shape[2] != 0 or c.shape[0] != U:
                return False
            _row_block_step32(gx_row, w_q, h_prev, c, h_next, out_row, reverse)
            return True
        return impl
    return lambda gx_row, w_q, h_prev, c, h_next, out_row, reverse: False


@njit(inline="always", **_FLAGS)
def _row_block_step32(gx_row, w_q, h_prev, c, h_next, out_row, reverse):
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
            i0, i1 = vfma(s, vload(w_i, k, 0), i0), vfma(s, vload(w_i, k, L), i1)
            f0, f1 = vfma(s, vload(w_f, k, 0), f0), vfma(s, vload(w_f, k, L), f1)
            g0, g1 = vfma(s, vload(w_g, k, 0), g0), vfma(s, vload(w_g, k, L), g1)
            o0, o1 = vfma(s, vload(w_o, k, 0), o0), vfma(s, vload(w_o, k, L), o1)
        _cell(gx_row, U, g * NR, i0, f0, g0, o0, c, h_next, out_row)
        _cell(gx_row, U, g * NR + L, i1, f1, g1, o1, c, h_next, out_row)


def row_block_step_widened(gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse):
    """row_block_step with reduced-precision weights (numba_lstm.quantization):
    w_q (P, H, NR) int8 or bfloat16 bits, widened to float32 in registers as
    they are read; scale_q (4U,) each gate column's scale (ones for bfloat16),
    applied to the column's sum. At batch 1 the step is bound by reading W_hh,
    and the narrow weights are a quarter (int8) or half of float32's bytes.
    Same conditions and return value as row_block_step. For jitted code only."""


@overload(row_block_step_widened)
def _row_block_step_widened_impl(gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse):
    if gx_row.dtype == nbtypes.float32:
        def impl(gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse):
            U = gx_row.shape[0] // 4
            if U % w_q.shape[2] != 0 or c.shape[0] != U:
                return False
            _row_block_step_widened32(gx_row, w_q, scale_q, h_prev, c, h_next, out_row,
                                      reverse)
            return True
        return impl
    return lambda gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse: False


@njit(inline="always", **_FLAGS)
def _row_block_step_widened32(gx_row, w_q, scale_q, h_prev, c, h_next, out_row, reverse):
    NR = w_q.shape[2]
    L = NR // 2
    U = gx_row.shape[0] // 4
    groups = U // NR
    for n in range(groups):
        g = groups - 1 - n if reverse else n
        w_i, w_f = w_q[g], w_q[groups + g]  # (H, NR) each
        w_g, w_o = w_q[2 * groups + g], w_q[3 * groups + g]
        i0 = i1 = f0 = f1 = g0 = g1 = o0 = o1 = vsplat(gx_row.dtype.type(0))
        for k in range(h_prev.shape[0]):
            s = vsplat(h_prev[k])
            i0 = vfma(s, vload_widened(w_i, k, 0), i0)
            i1 = vfma(s, vload_widened(w_i, k, L), i1)
            f0 = vfma(s, vload_widened(w_f, k, 0), f0)
            f1 = vfma(s, vload_widened(w_f, k, L), f1)
            g0 = vfma(s, vload_widened(w_g, k, 0), g0)
            g1 = vfma(s, vload_widened(w_g, k, L), g1)
            o0 = vfma(s, vload_widened(w_o, k, 0), o0)
            o1 = vfma(s, vload_widened(w_o, k, L), o1)
        _scaled_cell(gx_row, scale_q, U, g * NR, i0, f0, g0, o0, c, h_next, out_row)
        _scaled_cell(gx_row, scale_q, U, g * NR + L, i1, f1, g1, o1, c, h_next, out_row)


@njit(inline="always", **_FLAGS)
def _scaled_cell(gx_row, scale_q, U, j, s_i, s_f, s_g, s_o, c, h_next, out_row):
    _cell(gx_row, U, j, vmul(s_i, vload1(scale_q, j)), vmul(s_f, vload1(scale_q, U + j)),
          vmul(s_g, vload1(scale_q, 2 * U + j)), vmul(s_o, vload1(scale_q, 3 * U + j)),
          c, h_next, out_row)


@njit(inline="always", **_FLAGS)
def _cell(gx_row, U, j, s_i, s_f, s_g, s_o, c, h_next, out_row):
    """Units j .. j+lanes-1 from their gate sums s_* (without gx)."""
    c_new, h = lstm_update(vadd(vload1(gx_row, j), s_i), vadd(vload1(gx_row, U + j), s_f),
                               vadd(vload1(gx_row, 2 * U + j), s_g),
                               vadd(vload1(gx_row, 3 * U + j), s_o), vload1(c, j))
    vstore1(c, j, c_new)
    vstore1(h_next, j, h)
    vstore1(out_row, j, h)
