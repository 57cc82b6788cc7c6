"""The layer loop, written once for every cell (numba_lstm.cells), CPU side.

Each step of each direction: gates = gx[t] (+ the h-side bias of the cell's
unsummed gates), gates += h @ W_hh^T, then the cell on each row. Two step
matmuls: the axpy rows (recurrence._rows_matmul_acc, W_hh streamed row by row;
batch 1 and projections) and the register-tiled panels (cpu.panel_gemm; from
batch 2). The template names ``cell_row``, ``GATES`` and ``SUMMED``;
``layer_kernels(cell)`` compiles it with a cell's bound in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, types
from numba.extending import overload

from ..cells import Cell, bind, rebind
from .activation_grids import float_rows_acc, quantize_rows
from .activations import relu, sigmoid, tanh
from .aligned import empty_on_lines
from .dot_gemm import dot_acc, dot_k_bytes
from .panel_gemm import chunk_start, gemm_layout_acc
from .recurrence import _FLAGS, _rows_matmul_acc, copy_row, keep_alive, unowned
from .simd import VECTOR_BYTES, fma, vload1, vload1_first, vstore1, vstore1_first

# Bound per cell by layer_kernels(); these placeholders are never called.
GATES = SUMMED = 1
WITH_PANELS = True


def cell_row(z, zx, h, c, h_new, p):
    raise NotImplementedError


def unit_vector(z, zx, h, c, h_new, u, H, n):
    raise NotImplementedError


unit_tail = unit_scalar = unit_vector


def layer_task(task, x, gx, w_rows, w_panels, w_hr, bias, cell_params, h0, c0, lengths, out,
               h_n, c_n, n_chunks, panels, hh_dot):
    raise NotImplementedError


# -- the primitives a cell's math is bound to on the CPU (cells._ops) -------------------
@njit(inline="always", **_FLAGS)
def _load_scalar(a, j, n):
    return a[j]


@njit(inline="always", **_FLAGS)
def _store_scalar(a, j, v, n):
    a[j] = v


@njit(inline="always", **_FLAGS)
def _load_vector(a, j, n):
    return vload1(a, j)


@njit(inline="always", **_FLAGS)
def _store_vector(a, j, v, n):
    vstore1(a, j, v)


_MATH = dict(sigmoid=sigmoid, tanh=tanh, relu=relu, fma=fma)
_SCALAR = dict(_MATH, load=_load_scalar, store=_store_scalar)
_VECTOR = dict(_MATH, load=_load_vector, store=_store_vector)
_TAIL = dict(_MATH, load=vload1_first, store=vstore1_first)


def _row_vector(z, zx, h, c, h_new, p):
    """float32: whole vectors of units, then one masked vector for the rest, so
    every unit goes through the same instructions (no scalar tail). The gates
    are z.shape[0] // GATES apart; the units computed are h_new's (a block of
    the team's may hold fewer units than its gates' stride)."""
    H = z.shape[0] // GATES
    n = h_new.shape[0]
    lanes = VECTOR_BYTES // 4
    n_vec = n - n % lanes
    for u in range(0, n_vec, lanes):
        unit_vector(z, zx, h, c, h_new, u, H, lanes)
    if n_vec < n:
        unit_tail(z, zx, h, c, h_new, n_vec, H, n - n_vec)


def _row_scalar(z, zx, h, c, h_new, p):
    H = z.shape[0] // GATES
    for u in range(h_new.shape[0]):
        unit_scalar(z, zx, h, c, h_new, u, H, 1)


# -- the layer loop ------------------------------------------------------------------------
def _layer(x, gx, w_rows, w_panels, w_hr, bias, cell_params, h0, c0, lengths, out, h_n, c_n,
           n_chunks, panels, hh_dot):
    """All time steps of one layer, every direction, on this thread. Tasks are
    direction x batch slice (rows split in multiples of the panel tile's 8
    where B allows), each running the whole time loop; the team's threads take
    them in parallel (cpu.team_layer) and never synchronise per step.

    x           (T, B, I) the layer's input, read when each step projects its own
    gx          (T, B, D*G) x @ W_ih^T + bias_x for every step, direction-major; or
                (0, B, D*G): then each step projects its rows of x itself (cells
                whose gates are all summed), saving gx's round trip through memory
    w_rows      (D, H_out, G) W_hh^T, the axpy matmul's
    w_panels    (D, P, K, NR) panels (cpu.panel_gemm) of [W_ih; W_hh]^T (K = I + H)
                when each step projects x, else of W_hh^T (K = H)
    w_hr        (D, H, H_out) W_hr^T, or (D, 0, 0) without projection (axpy only)
    bias        (D, 2, G) [0] bias_x (read when each step projects x), [1] the h
                side's bias of the cell's unsummed gates (cells.Cell.split_bias)
    cell_params (D, P, H) the cell's own parameters (LayerNorm's), or (D, 0, 0)
    h0, c0      (D, B, H_out), (D, B, Hc): Hc = H with a cell state, else 0
    lengths     (B,) int64; steps t >= lengths[b] leave sequence b's state alone
    out         (T, B, D*H_out) written here, 0 at padded steps; h_n, c_n as h0, c0
    panels      the step's matmul on register tiles (batch >= 2), else on the
                axpy rows; only the team's task has the tiles (WITH_PANELS)
    hh_dot      None, or a quantized layer's W_hh^T in a dot layout (w_dot (D, P, K4,
                4 * DOT_NR), offset (D, G), scale (D, G): packing.dot_layout): the
                panel steps then multiply h on a per-row 8-bit grid by vpdpbusd,
                a row whose h is not finite on the float panels alone
    """
    for task in range(w_rows.shape[0] * n_chunks):
        layer_task(task, x, gx, w_rows, w_panels, w_hr, bias, cell_params, h0, c0, lengths, out,
                   h_n, c_n, n_chunks, panels, hh_dot)


def _layer_task(task, x, gx, w_rows, w_panels, w_hr, bias, cell_params, h0, c0, lengths, out,
                h_n, c_n, n_chunks, panels, hh_dot):
    """Task ``task`` of _layer: direction task // n_chunks, batch slice
    task % n_chunks, the whole time loop. A function of its own so that the
    team's threads (cpu.team_layer) run the same compiled tasks."""
    T, B = x.shape[0], x.shape[1]
    D, H_out, G = w_rows.shape
    H = G // GATES
    S = SUMMED * H
    fused = gx.shape[0] == 0
    has_proj = w_hr.shape[1] > 0
    n_x = w_panels.shape[2] - H_out if fused else 0  # the operand's x columns
    d = task // n_chunks
    chunk = task % n_chunks
    b_lo = chunk_start(chunk, n_chunks, B)
    b_hi = chunk_start(chunk + 1, n_chunks, B)
    nb = b_hi - b_lo
    gates_mem = empty_on_lines(nb, G, x.dtype)
    xh_mem = empty_on_lines(nb, n_x + H_out, x.dtype)
    c_mem = empty_on_lines(nb, c0.shape[2], x.dtype)
    h_cell_mem = empty_on_lines(nb, H, x.dtype)
    h_proj_mem = empty_on_lines(nb, H_out, x.dtype)
    k_bytes = dot_k_bytes(hh_dot)
    h_lo_mem = empty_on_lines(nb, k_bytes, np.uint8)
    h_hi_mem = empty_on_lines(nb, k_bytes, np.uint8)
    h_scales_mem = np.empty(nb, np.float32)
    gates = unowned(gates_mem)  # (nb, G)
    xh = unowned(xh_mem)  # (nb, [I +] H_out) the operand, h last
    c = unowned(c_mem)
    h_cell = unowned(h_cell_mem)  # the cell's h, before any projection
    h_proj = unowned(h_proj_mem)
    h_lo, h_hi = unowned(h_lo_mem), unowned(h_hi_mem)
    h_scales = unowned(h_scales_mem)
    for r in range(nb):
        copy_row(h0[d, b_lo + r], xh[r, n_x:])
        copy_row(c0[d, b_lo + r], c[r])
    for s in range(T):
        t = T - 1 - s if d == 1 else s
        reverse = s % 2 == 1
        not_finite = -1
        summed = False  # whether gates hold gx's rows plus h's product already
        if WITH_PANELS and panels:  # WITH_PANELS: a constant per compile
            not_finite = quantize_rows(xh, h_lo, h_hi, h_scales, hh_dot, True) if n_x == 0 else -1
            if not fused and SUMMED == GATES:
                # (nb, G) = gx's rows + (nb, H) @ (H, G) on a dot kernel, gx read
                # by its epilogue instead of copied into the gates first
                summed = not_finite >= 0 and dot_acc(gates, h_lo, h_hi, h_scales, hh_dot, d,
                                                     reverse, True,
                                                     gx[t, b_lo:b_hi, d * G:(d + 1) * G])
        for r in range(nb if not summed else 0):
            if fused:
                copy_row(bias[d, 0], gates[r])
                copy_row(x[t, b_lo + r], xh[r, :n_x])
            else:
                copy_row(gx[t, b_lo + r, d * G:d * G + S], gates[r, :S])
                copy_row(bias[d, 1, S:], gates[r, S:])
        if WITH_PANELS and panels:
            # (nb, G) += (nb, K) @ (K, G), int8 x h's 8-bit grid (or bfloat16 x h's) where it can
            if not (summed or (not_finite >= 0 and dot_acc(gates, h_lo, h_hi, h_scales, hh_dot,
                                                           d, reverse, True))):
                gemm_layout_acc(gates, 0, G, xh, w_panels[d], reverse)
            elif not_finite > 0:  # those rows' float products, theirs alone
                float_rows_acc(gates, 0, G, xh, w_panels[d], reverse, h_scales, gemm_layout_acc)
        else:
            _rows_matmul_acc(gates, xh, w_rows, d, nb)  # never fused: xh is h
        for r in range(nb):
            b = b_lo + r
            if t >= lengths[b]:
                out[t, b, d * H_out:(d + 1) * H_out] = 0
                continue
            zx = gates[r] if fused else gx[t, b, d * G:(d + 1) * G]  # fused: never read
            # Without a projection the cell writes h in place: each unit
            # reads its own h before writing it (cells.Cell.unit).
            h_new = h_cell[r] if has_proj else xh[r, n_x:]
            cell_row(gates[r], zx, xh[r, n_x:], c[r], h_new, cell_params[d])
            if not has_proj:
                copy_row(h_new, out[t, b, d * H_out:(d + 1) * H_out])
        if has_proj:
            h_proj[:] = 0
            _rows_matmul_acc(h_proj, h_cell, w_hr, d, nb)  # rows past their end unused
            for r in range(nb):
                b = b_lo + r
                if t < lengths[b]:
                    copy_row(h_proj[r], xh[r, n_x:])
                    copy_row(h_proj[r], out[t, b, d * H_out:(d + 1) * H_out])
    for r in range(nb):
        copy_row(xh[r, n_x:], h_n[d, b_lo + r])
        copy_row(c[r], c_n[d, b_lo + r])
    keep_alive(gates_mem, xh_mem, c_mem, h_cell_mem, h_proj_mem, h_lo_mem, h_hi_mem,
               h_scales_mem)


def cell_math(cell: Cell):
    """The cell's pure math (``update``, for an LSTM: gate values and c in, (c, h)
    out) bound to the CPU's primitives: for scalars of either dtype and for
    float32 Vecs alike. For kernels that load and store gates themselves
    (cpu.row_step)."""
    if cell.name not in _HELPERS:
        _HELPERS[cell.name] = njit(inline="always", **_FLAGS)(
            rebind(cell.unit.__globals__["update"], _MATH, f"__{cell.name}"))
    return _HELPERS[cell.name]


def row_function(cell: Cell):
    """``row(z, zx, h, c, h_new, p)``: the cell on every unit of one row (see
    cells.Cell.unit; H = len(h_new)), for jitted code of either dtype: float32
    in whole vectors and a masked tail, float64 one unit at a time through libm.
    p: the cell's parameters (a cell with a ``row`` of its own reads them)."""
    if cell.name not in _ROWS and cell.row is not None:
        _ROWS[cell.name] = bind(cell, _MATH, njit(inline="always", **_FLAGS), f"__{cell.name}",
                                part="row")
    if cell.name not in _ROWS:
        tag = f"__{cell.name}"
        inline = njit(inline="always", **_FLAGS)
        vector = inline(rebind(_row_vector, dict(
            unit_vector=bind(cell, _VECTOR, inline, tag + "_vector"),
            unit_tail=bind(cell, _TAIL, inline, tag + "_tail"), GATES=cell.gates), tag))
        scalar = inline(rebind(_row_scalar, dict(
            unit_scalar=bind(cell, _SCALAR, inline, tag), GATES=cell.gates), tag))

        def row(z, zx, h, c, h_new, p):
            raise NotImplementedError("for jitted code")

        @overload(row, inline="always", jit_options=_FLAGS)
        def _row_impl(z, zx, h, c, h_new, p):
            if z.dtype == types.float32:
                return lambda z, zx, h, c, h_new, p: vector(z, zx, h, c, h_new, p)
            return lambda z, zx, h, c, h_new, p: scalar(z, zx, h, c, h_new, p)

        _ROWS[cell.name] = row
    return _ROWS[cell.name]


_HELPERS: dict = {}
_ROWS: dict = {}


@dataclass(frozen=True)
class LayerKernels:
    """One cell's layer loop, compiled from its one text."""

    task: object  # one task with either matmul (the ``panels`` argument): what the
    # team's threads run (cpu.team_layer)
    serial: object  # one task on the axpy rows, on the calling thread: handing one
    # task to threads only adds the hand-off (a Numba launch measured 418 against
    # 155 µs a 2-layer streaming step) and without the tiles (a batch-1 GRU's first call 18.4 ->
    # 6.0 s cold). A third compile, threaded rows without the tiles, would make
    # bidirectional batch-1 and projected first calls 21-22 s cold instead of
    # 34-41, but the suite, which compiles every path, then ran 10.6 against
    # 8.0 min cold in CI (docs/performance.md).


_KERNELS: dict[str, LayerKernels] = {}


def layer_kernels(cell: Cell) -> LayerKernels:
    """The layer loop with ``cell`` bound in, made on first use. Each compile
    gets a qualified name of its own (``_layer__gru_serial``) because Numba's
    on-disk cache is keyed by name, not by bound globals or ``parallel``."""
    if cell.name not in _KERNELS:
        tag = f"__{cell.name}"
        names = dict(cell_row=row_function(cell), GATES=cell.gates, SUMMED=cell.summed_gates)
        task = njit(**_FLAGS)(rebind(_layer_task, names, tag))
        serial_task = njit(**_FLAGS)(rebind(_layer_task, dict(names, WITH_PANELS=False),
                                            tag + "_serial"))
        _KERNELS[cell.name] = LayerKernels(
            task, njit(**_FLAGS)(rebind(_layer, dict(layer_task=serial_task), tag + "_serial")))
    return _KERNELS[cell.name]
