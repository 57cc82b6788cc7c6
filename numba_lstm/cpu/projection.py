"""The input projection x @ W_ih^T + b for every step at once, shared by the
threads of a team job (cpu.team_layer), or run by one thread ahead of a
single-task layer.

Used instead of NumPy's BLAS: right after a
BLAS call its worker threads keep spinning, and with two more threads of our
own that makes three busy threads on two cores (measured at shape S4: BLAS 3
ms + kernel 16 ms became 30 ms). The rows go in blocks to whichever thread
claims them; each block streams W_ih packed in panels (cpu.panel_gemm) while
the block's rows of x and gx stay in cache (over a thread's whole share at
once, gx made two round trips to memory: S7's projection took 13 ms).
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .activation_grids import float_rows_acc, quantize_rows
from .aligned import empty_on_lines
from .atomics import fetch_add, wait_until
from .dot_gemm import DOT_NR, dot_k_bytes, gemm_dot_acc
from .panel_gemm import gemm_layout_acc
from .recurrence import _FLAGS, copy_row, keep_alive, unowned

# Rows per block: 64 rows of x and gx take 64-512 KB at the benchmark sizes (L2).
ROW_BLOCK = 64
# counters[0] hands out blocks, counters[LINE] counts finished ones (each on a
# cache line of its own).
LINE = 8
# A sliced projection's (input_projection) rows a chunk, and W_ih a column
# slice takes in its dot layout.
SLICED_ROWS = 256
SLICE_W_BYTES = 1024 * 1024


@njit(**_FLAGS)
def input_projection(x, w_ih, bias, gx, ih_dot, counters, eight_bit=False, sliced=False):
    """gx (N, D*G) = x (N, I) @ W_ih^T + bias (D*G,), direction-major;
    w_ih (D, P, I, NR) each direction's W_ih^T in panels. Every thread of a
    job calls it with the same counters (int64, zero before the first call);
    it returns once every block is done, by whichever thread. ih_dot: None,
    or a quantized layer's W_ih^T in a dot layout (packing.dot_layout): each
    block of rows is then quantized to int16 once for every direction (to 8
    bits, h's grid, with ``eight_bit``: x is the hidden state of the layer
    below), and a row that is not finite takes the float panels alone.
    ``sliced``: by (row chunk, direction, column slice) tasks instead
    (_sliced_projection), where every block of rows would stream W_ih from
    past the caches again (cpu.projection_sliced)."""
    N = x.shape[0]
    D = w_ih.shape[0]
    G = gx.shape[1] // D
    if sliced:
        _sliced_projection(x, w_ih, bias, gx, ih_dot, counters, eight_bit)
        return
    n_blocks = (N + ROW_BLOCK - 1) // ROW_BLOCK
    k_bytes = dot_k_bytes(ih_dot)
    x_lo = empty_on_lines(ROW_BLOCK, k_bytes, np.uint8)
    x_hi = empty_on_lines(ROW_BLOCK, k_bytes, np.uint8)
    x_scales = np.empty(ROW_BLOCK, np.float32)
    while True:
        block = fetch_add(counters, 0, 1)
        if block >= n_blocks:
            break
        r0 = block * ROW_BLOCK
        r1 = min(r0 + ROW_BLOCK, N)
        n = r1 - r0
        not_finite = quantize_rows(x[r0:r1], x_lo[:n], x_hi[:n], x_scales[:n], ih_dot,
                                   eight_bit)
        for d in range(D):
            _project_columns(x, w_ih, bias, gx, ih_dot, eight_bit, r0, r1, d, 0, G, x_lo,
                             x_hi, x_scales, not_finite)
        fetch_add(counters, LINE, 1)
    wait_until(counters, LINE, n_blocks)  # a claimed block is always being computed


def slice_width(w_ih, ih_dot):
    """Columns of a sliced projection's slice (_sliced_projection): whole
    panels of W_ih's float layout and, with ih_dot, of its dot layout too,
    about SLICE_W_BYTES of the layout the products read."""


@overload(slice_width, inline="always", jit_options=_FLAGS)
def _slice_width(w_ih, ih_dot):
    if isinstance(ih_dot, types.NoneType):
        def float_width(w_ih, ih_dot):
            NR = w_ih.shape[3]
            return max(1, SLICE_W_BYTES // w_ih[0, 0].nbytes) * NR  # (K, NR) panels
        return float_width

    def dot_width(w_ih, ih_dot):
        NR = w_ih.shape[3]
        unit = DOT_NR * NR // math.gcd(DOT_NR, NR)  # columns of whole panels in both layouts
        unit_bytes = ih_dot[0][0, 0].nbytes * (unit // DOT_NR)  # (D, P, K4, row) panels
        return max(1, SLICE_W_BYTES // unit_bytes) * unit
    return dot_width


@njit(**_FLAGS)
def _sliced_projection(x, w_ih, bias, gx, ih_dot, counters, eight_bit):
    """input_projection by (row chunk, direction, column slice) tasks, chunk
    by chunk: each slice's W_ih is read once a chunk of SLICED_ROWS rows, where
    blocks of ROW_BLOCK rows read all of it once a block, and the tasks share
    out evenly where a few hundred rows make few blocks. Each thread puts a
    chunk's rows on their grid once for the slices it takes of it. A slice is
    whole panels of both layouts (the dot layout's, and the float one's that
    rows which are not finite take): every column gets the sums it gets in a
    product over the whole direction. Float weights (ih_dot None) slice their
    panels alone."""
    N = x.shape[0]
    D = w_ih.shape[0]
    G = gx.shape[1] // D
    width = slice_width(w_ih, ih_dot)  # columns a slice
    n_slices = (G + width - 1) // width
    n_chunks = (N + SLICED_ROWS - 1) // SLICED_ROWS
    n_tasks = n_chunks * D * n_slices
    k_bytes = dot_k_bytes(ih_dot)
    lo_mem = empty_on_lines(SLICED_ROWS, k_bytes, np.uint8)
    hi_mem = empty_on_lines(SLICED_ROWS, k_bytes, np.uint8)
    scales_mem = np.empty(SLICED_ROWS, np.float32)
    x_lo, x_hi, x_scales = unowned(lo_mem), unowned(hi_mem), unowned(scales_mem)
    chunk_held = -1  # the chunk whose rows x_lo, x_hi hold
    not_finite = 0
    while True:
        task = fetch_add(counters, 0, 1)
        if task >= n_tasks:
            break
        chunk = task // (D * n_slices)
        d = task // n_slices % D
        c0 = task % n_slices * width
        c1 = min(c0 + width, G)
        r0 = chunk * SLICED_ROWS
        r1 = min(r0 + SLICED_ROWS, N)
        n = r1 - r0
        if chunk != chunk_held:
            not_finite = quantize_rows(x[r0:r1], x_lo[:n], x_hi[:n], x_scales[:n], ih_dot,
                                       eight_bit)
            chunk_held = chunk
        _project_columns(x, w_ih, bias, gx, ih_dot, eight_bit, r0, r1, d, c0, c1, x_lo, x_hi,
                         x_scales, not_finite)
        fetch_add(counters, LINE, 1)
    wait_until(counters, LINE, n_tasks)
    keep_alive(lo_mem, hi_mem, scales_mem)


@njit(inline="always", **_FLAGS)
def _project_columns(x, w_ih, bias, gx, ih_dot, eight_bit, r0, r1, d, c0, c1, x_lo, x_hi,
                     x_scales, not_finite):
    """gx[r0:r1] = bias + x[r0:r1] @ W_ih^T over direction d's columns c0..c1
    (c0 on a panel boundary of both layouts), from rows quantize_rows put in
    x_lo, x_hi, x_scales (``not_finite`` its count): on the dot kernel, the
    bias read by its epilogue (no pass of its own over gx), else on the float
    panels; a row that is not finite gets the float products alone."""
    G = gx.shape[1] // w_ih.shape[0]
    NR = w_ih.shape[3]
    n = r1 - r0
    cols = slice(d * G + c0, d * G + c1)
    w_float = w_ih[d, c0 // NR:(c1 + NR - 1) // NR]  # the columns' whole panels
    if not (not_finite >= 0 and dot_columns_acc(gx[r0:r1, cols], x_lo[:n], x_hi[:n],
                                                x_scales[:n], ih_dot, d, c0, c1, eight_bit,
                                                bias.reshape((1, bias.shape[0]))[:, cols])):
        for r in range(r0, r1):
            copy_row(bias[cols], gx[r, cols])
        gemm_layout_acc(gx[r0:r1], d * G + c0, c1 - c0, x[r0:r1], w_float)
    elif not_finite > 0:  # those rows' float products, theirs alone
        float_rows_acc(gx[r0:r1], d * G + c0, c1 - c0, x[r0:r1], w_float, False,
                       x_scales[:n], gemm_layout_acc)


def dot_columns_acc(out, lo, hi, scales, dot, d, c0, c1, eight_bit, base):
    """gemm_dot_acc over direction d's columns c0..c1 of dot (c0 on a panel
    boundary); False, doing nothing, where dot is None."""


@overload(dot_columns_acc, inline="always", jit_options=_FLAGS)
def _dot_columns_acc(out, lo, hi, scales, dot, d, c0, c1, eight_bit, base):
    if isinstance(dot, types.NoneType):
        return lambda out, lo, hi, scales, dot, d, c0, c1, eight_bit, base: False

    def impl(out, lo, hi, scales, dot, d, c0, c1, eight_bit, base):
        w_dot, offset, scale = dot
        return gemm_dot_acc(out, lo, hi, scales,
                            w_dot[d, c0 // DOT_NR:(c1 + DOT_NR - 1) // DOT_NR],
                            offset[d, c0:c1], scale[d, c0:c1], False, eight_bit, base)
    return impl
