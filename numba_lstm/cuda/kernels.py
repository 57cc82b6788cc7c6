"""numba.cuda kernels: input projection, the fused step and the persistent
recurrence, written once for every cell (numba_lstm.cells) and compiled per
cell and dtype.

Same weight layout as the CPU backend: W^T with a gate's H columns contiguous,
so threads j, j+1, ... of a warp read adjacent weights (coalesced). The h-side
bias rides as one more row of W_hh^T, and h and c share one ping-pong buffer,
so a step launch carries five arrays: numba-cuda's launch cost grows with each
array argument. Kernels trust their arguments; backend.py prepares them. The
templates name ``GATES``, ``SUMMED``, ``DTYPE``, ``ZERO`` and ``cell_unit``;
``kernels_for`` compiles them with a cell's and a dtype's bound in, so a
float32 kernel has no float64 arithmetic (tests/cuda/test_ptx.py).

Shapes: gx (T, B, D*G), G = GATES*H;  w (D, H_in + 1, G): W_hh^T, then the
bias of the unsummed gates;  state (2, D, B, P + Hc): [s % 2] is read at step
s and [1 - s % 2] written, h in the first P columns, c (Hc = H or 0) after;
out (T, B, D*P);  lengths (B,) int64.
"""

import math

import numba
import numpy as np
from numba import cuda

from ..cells import Cell, bind, rebind

# Bound per cell and dtype by kernels_for(); placeholders for the reader.
GATES = SUMMED = 1
DTYPE = numba.float32
HALF, ZERO = np.float32(0.5), np.float32(0)

TILE = 16  # matmul_bias: 16x16 threads, two TILE^2 shared tiles


def cell_unit(z, zx, h, c, h_new, u, H, n):
    raise NotImplementedError


def cell_row(z, zx, h, c, h_new, p):
    raise NotImplementedError


@cuda.jit(device=True, inline=True)
def _step_thread(i, D, B, n, T, s):
    """Item i of a (D, B, n) grid at step s -> (d, b, unit, t). Direction 1 runs
    backwards in time: t = T-1-s."""
    d = i // (n * B)
    t = T - 1 - s if d == 1 else s
    return d, (i // n) % B, i % n, t


# -- whole-array kernels (1-D grid-stride loops: any size fits the grid) ----------------
def _fill(flat, value):
    """flat (N,) = value (full lengths made on the device, no host copy)."""
    for i in range(cuda.grid(1), flat.shape[0], cuda.gridsize(1)):
        flat[i] = value


def _swap_leading_axes(src, dst):
    """dst (B, T, F) = src (T, B, F) transposed on its first two axes. Consecutive
    threads walk F: reads and writes coalesce when F is a warp or more."""
    T, B, F = src.shape
    for i in range(cuda.grid(1), T * B * F, cuda.gridsize(1)):
        t, rest = divmod(i, B * F)
        b, f = divmod(rest, F)
        dst[b, t, f] = src[t, b, f]


def _state_in(h0, c0, k0, P, state):
    """state[0] (D, B, P + Hc) = rows k0..k0+D of h0 (n, B, P) and c0 (n, B, Hc);
    zeros where h0 (c0) has no rows (the caller passed none)."""
    D, B, S = state.shape[1:]
    for i in range(cuda.grid(1), D * B * S, cuda.gridsize(1)):
        d, rest = divmod(i, B * S)
        b, j = divmod(rest, S)
        if j < P:
            state[0, d, b, j] = h0[k0 + d, b, j] if h0.shape[0] else ZERO
        else:
            state[0, d, b, j] = c0[k0 + d, b, j - P] if c0.shape[0] else ZERO


def _state_out(state, src, k0, h_n, c_n):
    """Rows k0..k0+D of h_n (n, B, P) and c_n (n, B, Hc) = state[src]."""
    D, B, S = state.shape[1:]
    P = h_n.shape[2]
    for i in range(cuda.grid(1), D * B * S, cuda.gridsize(1)):
        d, rest = divmod(i, B * S)
        b, j = divmod(rest, S)
        if j < P:
            h_n[k0 + d, b, j] = state[src, d, b, j]
        else:
            c_n[k0 + d, b, j - P] = state[src, d, b, j]


def _matmul_bias(x, w, bias, out):
    """out (N, G) = x (N, K) @ w (K, G) + bias (G,).

    Launch: block (TILE, TILE), grid (row tiles, column tiles) as launch.matmul_grid
    (row tiles on x, looping past its limit); shared memory 2*TILE^2 elements,
    so each global element is read once per tile, not once per thread.
    """
    xs = cuda.shared.array((TILE, TILE), dtype=DTYPE)
    ws = cuda.shared.array((TILE, TILE), dtype=DTYPE)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, K = x.shape
    G = w.shape[1]
    col = cuda.blockIdx.y * TILE + tx
    for row0 in range(cuda.blockIdx.x * TILE, N, cuda.gridDim.x * TILE):
        row = row0 + ty
        acc = ZERO
        for k0 in range(0, K, TILE):
            xs[ty, tx] = x[row, k0 + tx] if row < N and k0 + tx < K else ZERO
            ws[ty, tx] = w[k0 + ty, col] if k0 + ty < K and col < G else ZERO
            cuda.syncthreads()
            for k in range(TILE):
                acc += xs[ty, k] * ws[k, tx]
            cuda.syncthreads()
        if row < N and col < G:
            out[row, col] = acc + bias[col]


def _project(h_cell, w_hr, s, state, out, lengths):
    """h (state[1 - s%2], first P columns) = h_cell (D, B, H) @ w_hr (D, H, P), for
    proj_size P; past a sequence's length h is carried and out gets 0.
    Launch: 1-D over (d, b, p)."""
    D, B, P = h_cell.shape[0], h_cell.shape[1], w_hr.shape[2]
    src = s % 2
    for i in range(cuda.grid(1), D * B * P, cuda.gridsize(1)):
        d, b, p, t = _step_thread(i, D, B, P, out.shape[0], s)
        if t >= lengths[b]:
            state[1 - src, d, b, p] = state[src, d, b, p]
            out[t, b, d * P + p] = ZERO
            continue
        acc = ZERO
        for k in range(h_cell.shape[2]):
            acc += h_cell[d, b, k] * w_hr[d, k, p]
        state[1 - src, d, b, p] = acc
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
    return a * b + c  # contracted to one FFMA/DFMA


# -- the recurrence ----------------------------------------------------------------------
def _step(gx, s, w, state, h_cell, out, lengths):
    """One step of every direction: recurrent mat-vec, gates and cell, fused.

    h_cell (D, B, H) gets the cell's h when the layer projects (then _project
    writes h and out), else it is (D, B, 0) and this kernel writes them.
    Launch: 1-D over (d, b, j), no shared memory.
    """
    D, B = state.shape[1], state.shape[2]
    H_in = w.shape[1] - 1
    H = w.shape[2] // GATES
    G = GATES * H
    projected = h_cell.shape[2] > 0
    c0 = H_in  # c's first column in state (h has H_in = P columns)
    has_c = state.shape[3] > H_in
    src = s % 2
    z = cuda.local.array(GATES, DTYPE)  # this unit's gate sums
    zx = cuda.local.array(GATES, DTYPE)  # and their x parts
    hc = cuda.local.array(3, DTYPE)  # h, c, new h
    for i in range(cuda.grid(1), D * B * H, cuda.gridsize(1)):
        d, b, j, t = _step_thread(i, D, B, H, gx.shape[0], s)
        if t >= lengths[b]:
            if has_c:
                state[1 - src, d, b, c0 + j] = state[src, d, b, c0 + j]
            if not projected:
                state[1 - src, d, b, j] = state[src, d, b, j]
                out[t, b, d * H + j] = ZERO
            continue
        for g in range(GATES):
            zx[g] = gx[t, b, d * G + g * H + j]
            z[g] = zx[g] if g < SUMMED else w[d, H_in, g * H + j]
        for k in range(H_in):
            hk = state[src, d, b, k]
            for g in range(GATES):
                z[g] += hk * w[d, k, g * H + j]
        hc[0] = ZERO if projected else state[src, d, b, j]
        hc[1] = state[src, d, b, c0 + j] if has_c else ZERO
        cell_unit(z, zx, hc[0:1], hc[1:2], hc[2:3], 0, 1, 1)
        if has_c:
            state[1 - src, d, b, c0 + j] = hc[1]
        if projected:
            h_cell[d, b, j] = hc[2]
        else:
            state[1 - src, d, b, j] = hc[2]
            out[t, b, d * H + j] = hc[2]


def _persistent(gx, w, state, out, lengths, units, lanes, stage_h):
    """Every step of one layer (no projection) in one cooperative launch.

    Block n owns hidden units j0..j0+units of one direction, for every batch
    row, and keeps their W_hh columns (every gate) in shared memory for the
    whole sequence: weights are read from global memory once per sequence.
    ``lanes`` threads split each (unit, row)'s dot product over k (a warp per
    unit at B=1) and reduce in shared memory; with stage_h the block copies its
    direction's h into shared memory once a step. One grid barrier a step
    publishes the new h. Launch (launch.persistent_plan): blocks x threads,
    dynamic shared memory units*unit_stride + (B*H if stage_h) + (threads*GATES
    if lanes > 1) elements.
    """
    smem = cuda.shared.array(0, DTYPE)
    grid = cuda.cg.this_grid()
    T = gx.shape[0]
    B = state.shape[2]
    H = w.shape[1] - 1
    G = GATES * H
    has_c = state.shape[3] > H
    stride = G | 1  # launch.unit_stride: odd, so a warp's units hit different banks
    per_dir = (H + units - 1) // units
    d = cuda.blockIdx.x // per_dir
    j0 = (cuda.blockIdx.x % per_dir) * units
    n_units = min(units, H - j0)
    tid, n_threads = cuda.threadIdx.x, cuda.blockDim.x
    h_at = units * stride  # the staged h (B, H)
    red_at = h_at + (B * H if stage_h else 0)  # the partial sums (GATES, threads)
    # Consecutive threads read consecutive units: coalesced global reads.
    for e in range(tid, n_units * G, n_threads):
        u, rest = e % n_units, e // n_units
        g, k = rest % GATES, rest // GATES
        smem[u * stride + g * H + k] = w[d, k, g * H + j0 + u]
    lane, task = tid % lanes, tid // lanes
    u, b = task % units, task // units
    j = j0 + u
    z = cuda.local.array(GATES, DTYPE)
    zx = cuda.local.array(GATES, DTYPE)
    hc = cuda.local.array(3, DTYPE)
    for s in range(T):
        src = s % 2
        t = T - 1 - s if d == 1 else s
        cuda.syncthreads()  # the weights (s = 0) or last step's partial sums are done with
        if stage_h:
            for e in range(tid, B * H, n_threads):
                smem[h_at + e] = state[src, d, e // H, e % H]
            cuda.syncthreads()
        live = u < n_units and t < lengths[b]
        for g in range(GATES):
            z[g] = ZERO
        if live:
            for k in range(lane, H, lanes):
                hk = smem[h_at + b * H + k] if stage_h else state[src, d, b, k]
                for g in range(GATES):
                    z[g] += hk * smem[u * stride + g * H + k]
        if lanes > 1:
            for g in range(GATES):
                smem[red_at + g * n_threads + tid] = z[g]
            width = lanes // 2
            while width > 0:
                cuda.syncthreads()
                if lane < width:
                    for g in range(GATES):
                        smem[red_at + g * n_threads + tid] += \
                            smem[red_at + g * n_threads + tid + width]
                width //= 2
            cuda.syncthreads()
            for g in range(GATES):
                z[g] = smem[red_at + g * n_threads + tid]
        if lane == 0 and u < n_units:
            if t >= lengths[b]:
                state[1 - src, d, b, j] = state[src, d, b, j]
                if has_c:
                    state[1 - src, d, b, H + j] = state[src, d, b, H + j]
                out[t, b, d * H + j] = ZERO
            else:
                for g in range(GATES):
                    zx[g] = gx[t, b, d * G + g * H + j]
                    z[g] += zx[g] if g < SUMMED else w[d, H, g * H + j]
                hc[0] = state[src, d, b, j]
                hc[1] = state[src, d, b, H + j] if has_c else ZERO
                cell_unit(z, zx, hc[0:1], hc[1:2], hc[2:3], 0, 1, 1)
                if has_c:
                    state[1 - src, d, b, H + j] = hc[1]
                state[1 - src, d, b, j] = hc[2]
                out[t, b, d * H + j] = hc[2]
        grid.sync()


# -- cells with a row of their own (LayerNorm LSTM): two launches a step ------------------
def _row_gates(gx, s, w, state, z, lengths):
    """z (D, B, G) = the step's gate pre-activations: gx[t] (+ the bias row on
    the unsummed gates) + h @ W_hh^T. Launch: 1-D over (d, b, column)."""
    D, B, G = z.shape
    H_in = w.shape[1] - 1
    src = s % 2
    for i in range(cuda.grid(1), D * B * G, cuda.gridsize(1)):
        d, b, j, t = _step_thread(i, D, B, G, gx.shape[0], s)
        if t >= lengths[b]:
            continue
        acc = gx[t, b, d * G + j] if j < SUMMED * (G // GATES) else w[d, H_in, j]
        for k in range(H_in):
            acc += state[src, d, b, k] * w[d, k, j]
        z[d, b, j] = acc


def _row_cells(gx, s, z, cell_params, state, out, lengths):
    """The cell's row on z[d, b] for every (d, b), into state[1 - s%2]; 0 out and
    the state carried past a sequence's length. Launch: 1-D over (d, b): the
    row's normalisation is a reduction over its units, small beside the matmul."""
    D, B, G = z.shape
    H = G // GATES
    src = s % 2
    for i in range(cuda.grid(1), D * B, cuda.gridsize(1)):
        d, b, _, t = _step_thread(i, D, B, 1, gx.shape[0], s)
        for j in range(H, 2 * H):  # c is updated in place in the new half
            state[1 - src, d, b, j] = state[src, d, b, j]
        if t >= lengths[b]:
            for j in range(H):
                state[1 - src, d, b, j] = state[src, d, b, j]
                out[t, b, d * H + j] = ZERO
            continue
        cell_row(z[d, b], gx[t, b, d * G:(d + 1) * G], state[src, d, b, :H],
                 state[1 - src, d, b, H:], state[1 - src, d, b, :H], cell_params[d])
        for j in range(H):
            out[t, b, d * H + j] = state[1 - src, d, b, j]


class Kernels:
    """The kernels of one (cell, dtype), compiled on first use."""

    def __init__(self, cell: Cell, dtype):
        scalar = np.dtype(dtype).type
        device = cuda.jit(device=True, inline=True)
        env = dict(HALF=scalar(0.5), ZERO=scalar(0), DTYPE=numba.from_dtype(np.dtype(dtype)))
        primitives = {name: device(rebind(fn, env)) for name, fn in (
            ("load", _load), ("store", _store), ("fma", _fma), ("tanh", _tanh),
            ("sigmoid", _sigmoid), ("relu", _relu))}
        names = dict(env, GATES=cell.gates, SUMMED=cell.summed_gates)
        if cell.row is not None:
            names["cell_row"] = bind(cell, primitives, device, part="row")
        else:
            names["cell_unit"] = bind(cell, primitives, device)
        suffix = f"__{cell.name}_{np.dtype(dtype).name}"

        def jit(fn):
            return cuda.jit(rebind(fn, names, suffix))

        self.cell = cell
        self.matmul_bias = jit(_matmul_bias)
        self.swap_leading_axes = jit(_swap_leading_axes)
        self.fill = jit(_fill)
        self.state_in = jit(_state_in)
        self.state_out = jit(_state_out)
        self.project = jit(_project)
        if cell.row is not None:
            self.row_gates, self.row_cells = jit(_row_gates), jit(_row_cells)
            self.step = self.persistent = None
        else:
            self.step, self.persistent = jit(_step), jit(_persistent)

    def all(self) -> dict:
        """Every kernel by name (the PTX test and the GPU check walk them)."""
        return {k: v for k, v in vars(self).items() if k != "cell" and v is not None}


_KERNELS: dict = {}


def kernels_for(cell: Cell, dtype) -> Kernels:
    key = (cell.name, np.dtype(dtype).name)
    if key not in _KERNELS:
        _KERNELS[key] = Kernels(cell, dtype)
    return _KERNELS[key]
