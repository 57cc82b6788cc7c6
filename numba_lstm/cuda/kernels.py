"""numba.cuda kernels: input projection, the fused step and the persistent
recurrence, both written once for every cell (numba_lstm.cells).

Same weight layout as the CPU backend: W^T with a gate's H columns contiguous,
so threads j, j+1, ... of a warp read adjacent weights (coalesced). Kernels
trust their arguments; backend.py prepares them. The step templates name
``GATES``, ``SUMMED``, ``DTYPE`` and ``cell_unit``; ``recurrence_kernels``
compiles them with a cell's bound in, for one dtype.
"""

import math

import numba
import numpy as np
from numba import cuda

from ..cells import Cell, bind, rebind

# Bound per cell and dtype by recurrence_kernels(); placeholders for the reader.
GATES = SUMMED = 1
DTYPE = np.float32
HALF, ZERO = np.float32(0.5), np.float32(0)  # typed constants, rebound per dtype


def cell_unit(z, zx, h, c, h_new, u, H, n):
    raise NotImplementedError


def cell_row(z, zx, h, c, h_new, p):
    raise NotImplementedError

TILE = 16  # matmul_bias tile: 16x16 threads, two TILE^2 shared tiles


@cuda.jit(device=True, inline=True)
def _step_thread(i, D, B, n, T, s):
    """Thread i of a 1-D (D, B, n) launch at step s -> (d, b, unit, t); d == D if idle.

    Direction 1 runs backwards in time: t = T-1-s.
    """
    d = i // (n * B)
    t = T - 1 - s if d == 1 else s
    return d, (i // n) % B, i % n, t


@cuda.jit
def fill(flat, value):
    """flat (N,) = value. Launch: 1-D, one thread per element."""
    i = cuda.grid(1)
    if i < flat.shape[0]:
        flat[i] = value


@cuda.jit
def swap_leading_axes(src, dst):
    """dst (B, T, F) = src (T, B, F) transposed on its first two axes.

    Launch: 1-D, one thread per element; consecutive threads walk F, so both
    the reads and the writes are coalesced when F is a warp or more.
    """
    T, B, F = src.shape
    i = cuda.grid(1)
    if i < T * B * F:
        t, rest = divmod(i, B * F)
        b, f = divmod(rest, F)
        dst[b, t, f] = src[t, b, f]


@cuda.jit
def matmul_bias(x, w, bias, out):
    """out (N, G) = x (N, K) @ w (K, G) + bias (G,).

    Launch: block (TILE, TILE), grid (ceil(G/TILE), ceil(N/TILE)); shared
    memory 2*TILE^2 elements. Each block stages a tile of x and of w per K-step
    so every global element is read once per tile instead of once per thread.
    """
    xs = cuda.shared.array((TILE, TILE), dtype=x.dtype)
    ws = cuda.shared.array((TILE, TILE), dtype=x.dtype)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    col = cuda.blockIdx.x * TILE + tx
    row = cuda.blockIdx.y * TILE + ty
    N, K = x.shape
    G = w.shape[1]
    acc = bias[min(col, G - 1)] * 0  # typed zero in the weights' dtype (bias is finite)
    for k0 in range(0, K, TILE):
        xs[ty, tx] = x[row, k0 + tx] if row < N and k0 + tx < K else 0.0
        ws[ty, tx] = w[k0 + ty, col] if k0 + ty < K and col < G else 0.0
        cuda.syncthreads()
        for k in range(TILE):
            acc += xs[ty, k] * ws[k, tx]
        cuda.syncthreads()
    if row < N and col < G:
        out[row, col] = acc + bias[col]


@cuda.jit
def project_step(h_cell, w_hr, s, h_in, h_out, out, lengths):
    """h_out (D, B, P) = h_cell (D, B, H) @ w_hr (D, H, P), for proj_size P.

    Past a sequence's length h is carried from h_in and out gets 0.
    Launch: 1-D, one thread per (d, b, p).
    """
    D, B, P = h_out.shape
    d, b, p, t = _step_thread(cuda.grid(1), D, B, P, out.shape[0], s)
    if d >= D:
        return
    if t >= lengths[b]:
        h_out[d, b, p] = h_in[d, b, p]
        out[t, b, d * P + p] = 0
        return
    acc = h_cell[d, b, 0] * w_hr[d, 0, p]  # typed in the arrays' dtype (H >= 1)
    for k in range(1, h_cell.shape[2]):
        acc += h_cell[d, b, k] * w_hr[d, k, p]
    h_out[d, b, p] = acc
    out[t, b, d * P + p] = acc




# -- the cell's primitives on the device (cells._ops), per dtype -------------------------
def _load(a, j, n):
    return a[j]


def _store(a, j, v, n):
    a[j] = v


def _sigmoid(x):
    # σ(x) = ½ + ½·tanh(x/2): no overflow, and HALF typed so float32 stays float32.
    return HALF + HALF * math.tanh(HALF * x)


def _tanh(x):
    return math.tanh(x)


def _relu(x):
    return x if not x < 0 else ZERO  # NaN passes through, as torch.relu


def _fma(a, b, c):
    return a * b + c  # nvcc's contraction makes it one FFMA/DFMA


# -- the step templates ------------------------------------------------------------------
def _step(gx, s, w_hh, bias_h, h_in, c_in, h_out, c_out, out, lengths, write_out):
    """One step of every direction: recurrent matvec, gates and cell, fused.

    gx (T, B, D*G);  w_hh (D, H_out, G);  bias_h (D, G) the h-side bias of the
    cell's unsummed gates;  h_in (D, B, H_out);  c_in, c_out (D, B, Hc), Hc = H
    or 0;  h_out (D, B, H) gets the cell's h (before any projection).
    Sequences past their length copy their state through; out (T, B, D*H) gets
    h (when write_out, i.e. no projection) or 0 past the length.
    Launch: 1-D, one thread per (d, b, j), D*B*H threads, no shared memory.
    """
    D, B, H = h_out.shape
    d, b, j, t = _step_thread(cuda.grid(1), D, B, H, gx.shape[0], s)
    if d >= D:
        return
    G = GATES * H
    has_c = c_in.shape[2] > 0
    if t >= lengths[b]:
        if has_c:
            c_out[d, b, j] = c_in[d, b, j]
        if write_out:
            h_out[d, b, j] = h_in[d, b, j]
            out[t, b, d * H + j] = 0
        return
    z = cuda.local.array(GATES, DTYPE)  # this unit's gate sums
    zx = cuda.local.array(GATES, DTYPE)  # and their x parts
    state = cuda.local.array(3, DTYPE)  # h, c, new h
    for g in range(GATES):
        zx[g] = gx[t, b, d * G + g * H + j]
        z[g] = zx[g] if g < SUMMED else bias_h[d, g * H + j]
    for k in range(w_hh.shape[1]):
        hk = h_in[d, b, k]
        for g in range(GATES):
            z[g] += hk * w_hh[d, k, g * H + j]
    state[0] = h_in[d, b, j] if write_out else 0  # the cell's own h (no projection)
    state[1] = c_in[d, b, j] if has_c else 0
    cell_unit(z, zx, state[0:1], state[1:2], state[2:3], 0, 1, 1)
    if has_c:
        c_out[d, b, j] = state[1]
    h_out[d, b, j] = state[2]
    if write_out:
        out[t, b, d * H + j] = state[2]


def _persistent(gx, w_hh, bias_h, h_buf, c, out, lengths, units):
    """Every step of one layer (no projection) in one launch.

    gx (T, B, D*G);  w_hh (D, H, G);  bias_h (D, G);  h_buf (2, D, B, H)
    ping-pong, h0 in [0], the final h in [T % 2];  c (D, B, Hc) updated in place.
    Launch (cooperative): grid D*ceil(H/units) blocks of units*B threads;
    dynamic shared memory H*GATES*units elements. Block n owns hidden units
    j0..j0+units of one direction and keeps their W_hh columns (every gate) in
    shared memory for the whole sequence: weights are read from global memory
    once per sequence, not once per step. One grid-wide barrier per step
    publishes the new h to every block.
    """
    smem = cuda.shared.array(0, DTYPE)
    grid = cuda.cg.this_grid()
    D, B, H = h_buf.shape[1:]
    T = gx.shape[0]
    G = GATES * H
    has_c = c.shape[2] > 0
    per_dir = (H + units - 1) // units
    d = cuda.blockIdx.x // per_dir
    j0 = (cuda.blockIdx.x % per_dir) * units
    n_units = min(units, H - j0)
    tid = cuda.threadIdx.x
    for e in range(tid, H * GATES * n_units, cuda.blockDim.x):
        u = e % n_units
        g = (e // n_units) % GATES
        k = e // (GATES * n_units)
        smem[(k * GATES + g) * units + u] = w_hh[d, k, g * H + j0 + u]
    cuda.syncthreads()
    u = tid % units
    b = tid // units
    active = u < n_units and b < B
    j = j0 + u
    z = cuda.local.array(GATES, DTYPE)
    zx = cuda.local.array(GATES, DTYPE)
    state = cuda.local.array(3, DTYPE)
    for s in range(T):
        src = s % 2
        if active:
            t = T - 1 - s if d == 1 else s
            if t >= lengths[b]:
                h_buf[1 - src, d, b, j] = h_buf[src, d, b, j]
                out[t, b, d * H + j] = 0
            else:
                for g in range(GATES):
                    zx[g] = gx[t, b, d * G + g * H + j]
                    z[g] = zx[g] if g < SUMMED else bias_h[d, g * H + j]
                for k in range(H):
                    hk = h_buf[src, d, b, k]
                    base = k * GATES * units + u
                    for g in range(GATES):
                        z[g] += hk * smem[base + g * units]
                state[0] = h_buf[src, d, b, j]
                state[1] = c[d, b, j] if has_c else 0
                cell_unit(z, zx, state[0:1], state[1:2], state[2:3], 0, 1, 1)
                if has_c:
                    c[d, b, j] = state[1]
                h_buf[1 - src, d, b, j] = state[2]
                out[t, b, d * H + j] = state[2]
        grid.sync()


# -- cells with a row of their own (LayerNorm LSTM): two launches a step ------------------
def _row_gates(gx, s, w_hh, bias_h, h_in, z, lengths):
    """z (D, B, G) = the step's gate pre-activations: gx[t] (+ bias_h on the
    unsummed gates) + h_in @ W_hh^T. Launch: 1-D, one thread per (d, b, column)."""
    D, B, G = z.shape
    d, b, j, t = _step_thread(cuda.grid(1), D, B, G, gx.shape[0], s)
    if d >= D or t >= lengths[b]:
        return
    acc = gx[t, b, d * G + j] if j < SUMMED * (G // GATES) else bias_h[d, j]
    for k in range(w_hh.shape[1]):
        acc += h_in[d, b, k] * w_hh[d, k, j]
    z[d, b, j] = acc


def _row_cells(gx, s, z, cell_params, h_in, c, h_out, out, lengths):
    """The cell's row on z[d, b] for every (d, b): c (D, B, H) in place, h_out
    (D, B, H) and out (T, B, D*H) written (0 and the state carried past a
    sequence's length). Launch: 1-D, one thread per (d, b): the row's
    normalisation is a reduction over its units, and H is small beside the
    step's matmul."""
    D, B, H = h_out.shape
    G = z.shape[2]
    d, b, _, t = _step_thread(cuda.grid(1), D, B, 1, gx.shape[0], s)
    if d >= D:
        return
    if t >= lengths[b]:
        for j in range(H):
            h_out[d, b, j] = h_in[d, b, j]
            out[t, b, d * H + j] = 0
        return
    cell_row(z[d, b], gx[t, b, d * G:(d + 1) * G], h_in[d, b], c[d, b], h_out[d, b],
             cell_params[d])
    for j in range(H):
        out[t, b, d * H + j] = h_out[d, b, j]


_KERNELS: dict = {}


def recurrence_kernels(cell: Cell, dtype) -> tuple:
    """The step kernels with ``cell`` bound in, for one dtype (local and shared
    arrays take their dtype at compile time), made on first use: (step,
    persistent) for a cell of units, (gates, rows) for a cell with a row."""
    dtype = np.dtype(dtype)
    key = (cell.name, dtype.name)
    if key not in _KERNELS:
        scalar = dtype.type
        device = cuda.jit(device=True, inline=True)
        primitives = {"load": _load, "store": _store, "fma": _fma, "tanh": _tanh}
        env = dict(HALF=scalar(0.5), ZERO=scalar(0))
        primitives = {name: device(rebind(fn, env)) for name, fn in primitives.items()}
        primitives["sigmoid"] = device(rebind(_sigmoid, env))
        primitives["relu"] = device(rebind(_relu, env))
        names = dict(GATES=cell.gates, SUMMED=cell.summed_gates, DTYPE=numba.from_dtype(dtype))
        if cell.row is not None:
            names["cell_row"] = bind(cell, primitives, device, part="row")
            _KERNELS[key] = (cuda.jit(rebind(_row_gates, names)),
                             cuda.jit(rebind(_row_cells, names)))
        else:
            names["cell_unit"] = bind(cell, primitives, device)
            _KERNELS[key] = (cuda.jit(rebind(_step, names)),
                             cuda.jit(rebind(_persistent, names)))
    return _KERNELS[key]
