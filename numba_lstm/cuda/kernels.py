"""numba.cuda kernels: input projection, the fused step, the persistent recurrence.

Same weight layout as the CPU backend (numba_lstm.cpu.packing): W^T with the
4H gate columns contiguous, so threads j, j+1, ... of a warp read adjacent
weights (coalesced). Kernels trust their arguments; backend.py prepares them.
Gate order i, f, g, o as torch.
"""

import math

from numba import cuda

TILE = 16  # matmul_bias tile: 16x16 threads, two TILE^2 shared tiles


@cuda.jit(device=True, inline=True)
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@cuda.jit(device=True, inline=True)
def _cell(z_i, z_f, z_g, z_o, c_prev):
    """(c, o*tanh(c)) from one unit's four gate pre-activations."""
    c = _sigmoid(z_f) * c_prev + _sigmoid(z_i) * math.tanh(z_g)
    return c, _sigmoid(z_o) * math.tanh(c)


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
def lstm_step(gx, s, w_hh, h_in, c_in, h_out, c_out, out, lengths, write_out):
    """One step of every direction: recurrent matvec + gates + cell update, fused.

    gx (T, B, D*4H);  w_hh (D, H_out, 4H);  h_in (D, B, H_out);  c_in, c_out
    (D, B, H);  h_out (D, B, H) gets o*tanh(c) (before any projection).
    Sequences past their length copy their state through; out (T, B, D*H) gets
    h (when write_out, i.e. no projection) or 0 past the length.
    Launch: 1-D, one thread per (d, b, j), D*B*H threads, no shared memory.
    """
    D, B, H = c_in.shape
    d, b, j, t = _step_thread(cuda.grid(1), D, B, H, gx.shape[0], s)
    if d >= D:
        return
    G = 4 * H
    if t >= lengths[b]:
        c_out[d, b, j] = c_in[d, b, j]
        if write_out:
            h_out[d, b, j] = h_in[d, b, j]
            out[t, b, d * H + j] = 0
        return
    zi = gx[t, b, d * G + j]
    zf = gx[t, b, d * G + H + j]
    zg = gx[t, b, d * G + 2 * H + j]
    zo = gx[t, b, d * G + 3 * H + j]
    for k in range(w_hh.shape[1]):
        hk = h_in[d, b, k]
        zi += hk * w_hh[d, k, j]
        zf += hk * w_hh[d, k, H + j]
        zg += hk * w_hh[d, k, 2 * H + j]
        zo += hk * w_hh[d, k, 3 * H + j]
    c, h = _cell(zi, zf, zg, zo, c_in[d, b, j])
    c_out[d, b, j] = c
    h_out[d, b, j] = h
    if write_out:
        out[t, b, d * H + j] = h


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


def make_persistent(dtype):
    """The persistent recurrence for one dtype (shared-array dtypes are compile-time)."""

    @cuda.jit
    def lstm_persistent(gx, w_hh, h_buf, c, out, lengths, units):
        """Every step of one layer (no projection) in one launch.

        gx (T, B, D*4H);  w_hh (D, H, 4H);  h_buf (2, D, B, H) ping-pong, h0 in
        [0], the final h in [T % 2];  c (D, B, H) updated in place.
        Launch (cooperative): grid D*ceil(H/units) blocks of units*B threads;
        dynamic shared memory H*4*units elements. Block n owns hidden units
        j0..j0+units of one direction and keeps their W_hh columns (all four
        gates) in shared memory for the whole sequence: weights are read from
        global memory once per sequence, not once per step. One grid-wide
        barrier per step publishes the new h to every block.
        """
        smem = cuda.shared.array(0, dtype)
        grid = cuda.cg.this_grid()
        D, B, H = c.shape
        T = gx.shape[0]
        G = 4 * H
        per_dir = (H + units - 1) // units
        d = cuda.blockIdx.x // per_dir
        j0 = (cuda.blockIdx.x % per_dir) * units
        n_units = min(units, H - j0)
        tid = cuda.threadIdx.x
        for e in range(tid, H * 4 * n_units, cuda.blockDim.x):
            u = e % n_units
            g = (e // n_units) % 4
            k = e // (4 * n_units)
            smem[(k * 4 + g) * units + u] = w_hh[d, k, g * H + j0 + u]
        cuda.syncthreads()
        u = tid % units
        b = tid // units
        active = u < n_units and b < B
        j = j0 + u
        for s in range(T):
            src = s % 2
            if active:
                t = T - 1 - s if d == 1 else s
                if t >= lengths[b]:
                    h_buf[1 - src, d, b, j] = h_buf[src, d, b, j]
                    out[t, b, d * H + j] = 0
                else:
                    zi = gx[t, b, d * G + j]
                    zf = gx[t, b, d * G + H + j]
                    zg = gx[t, b, d * G + 2 * H + j]
                    zo = gx[t, b, d * G + 3 * H + j]
                    for k in range(H):
                        hk = h_buf[src, d, b, k]
                        base = k * 4 * units + u
                        zi += hk * smem[base]
                        zf += hk * smem[base + units]
                        zg += hk * smem[base + 2 * units]
                        zo += hk * smem[base + 3 * units]
                    c[d, b, j], h = _cell(zi, zf, zg, zo, c[d, b, j])
                    h_buf[1 - src, d, b, j] = h
                    out[t, b, d * H + j] = h
            grid.sync()

    return lstm_persistent
