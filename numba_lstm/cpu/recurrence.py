"""The LSTM time recurrence, compiled: one call runs every step of one layer.

Kernels here trust their arguments (shapes, dtypes, C-contiguity): the object
API validates and prepares them. The input projection x @ W_ih^T + b for all
steps is one BLAS matmul done beforehand by the caller (see numba_lstm.cpu),
so the kernel only does what must be sequential: h @ W_hh^T, the gates and the
cell update, and the optional projection h @ W_hr^T.

Weight layout ("packed"): transposed so the innermost loop streams a
contiguous row of 4H gate columns, gate order i, f, g, o as torch.
"""

import types

import numpy as np
from numba import njit, prange
from numba import types as nbtypes
from numba.extending import overload

from .activations import sigmoid, sigmoid32_vec, tanh, tanh32_vec
from .simd import VECTOR_BYTES, fma, vfma, vload1, vload1_first, vmul, vstore1, vstore1_first

# No fastmath, not even contraction: multiply-adds are explicit fma() calls
# (cpu.simd), so a kernel computes the same bits whether it was compiled in
# this process or loaded from the on-disk cache, and NaN/Inf propagate as in torch.
_FLAGS = dict(cache=True, nogil=True, error_model="numpy")


@njit(inline="always", **_FLAGS)
def cell_update(z_i, z_f, z_g, z_o, c_prev):
    """(c, o*tanh(c)) from one unit's four gate pre-activations: the LSTM cell."""
    c = fma(sigmoid(z_f), c_prev, sigmoid(z_i) * tanh(z_g))  # as cell_update_vec
    return c, sigmoid(z_o) * tanh(c)


@njit(inline="always", **_FLAGS)
def cell_update_vec(z_i, z_f, z_g, z_o, c_prev):
    """cell_update on float32 Vecs (cpu.simd), a vector of units at once."""
    c = vfma(sigmoid32_vec(z_f), c_prev, vmul(sigmoid32_vec(z_i), tanh32_vec(z_g)))
    return c, vmul(sigmoid32_vec(z_o), tanh32_vec(c))


@njit(inline="always", **_FLAGS)
def copy_row(src, dst):
    """dst[:] = src[:] for 1-D arrays that do not overlap: a plain loop, which
    LLVM vectorises; Numba's slice assignment checks for overlap and copies
    element by element through its strided iterator (~15 cycles a float)."""
    for j in range(src.shape[0]):
        dst[j] = src[j]


def cell_block(z, c, h):
    """c (n,), h (n,) <- the cell of units 0..n-1 from z (4U,), U >= n, laid out
    i, f, g, o by U. For jitted code only.

    Its own loop over three 1-D arrays, so that it vectorises: a loop that also
    writes out and the other h buffer needs more runtime alias checks than
    LLVM's vectoriser makes, and then every unit paid five scalar divisions.
    float32 runs in explicit full-width vectors (cpu.simd), float64 through
    libm, one unit at a time.
    """


@overload(cell_block)
def _cell_block_impl(z, c, h):
    if z.dtype == nbtypes.float32:
        return lambda z, c, h: _cell_block_vec(z, c, h)
    return lambda z, c, h: _cell_block_scalar(z, c, h)


@njit(inline="always", **_FLAGS)
def _gate_slices(z):
    # Slices, not z[U + u]: Numba's negative-index fix-up on a computed index
    # turns those loads into gathers.
    U = z.shape[0] // 4
    return z[:U], z[U:2 * U], z[2 * U:3 * U], z[3 * U:]


@njit(inline="always", **_FLAGS)
def _cell_block_scalar(z, c, h):
    z_i, z_f, z_g, z_o = _gate_slices(z)
    _cells(z_i, z_f, z_g, z_o, c, h)


@njit(inline="always", **_FLAGS)
def _cells(z_i, z_f, z_g, z_o, c, h):
    for u in range(c.shape[0]):
        c[u], h[u] = cell_update(z_i[u], z_f[u], z_g[u], z_o[u], c[u])


@njit(inline="always", **_FLAGS)
def _cell_block_vec(z, c, h):
    """float32: 16 units (AVX-512) per iteration, the last n % 16 through
    masked loads and stores: 1.7-2.8 ns a unit at 20-128 units, where the
    scalar loop, which LLVM vectorises at half width, took 3.2-10 (measured,
    docs/performance.md)."""
    z_i, z_f, z_g, z_o = _gate_slices(z)
    n = c.shape[0]
    lanes = VECTOR_BYTES // 4
    n_vec = n - n % lanes
    for u in range(0, n_vec, lanes):
        c_new, h_new = cell_update_vec(vload1(z_i, u), vload1(z_f, u), vload1(z_g, u),
                                       vload1(z_o, u), vload1(c, u))
        vstore1(c, u, c_new)
        vstore1(h, u, h_new)
    rest = n - n_vec
    if rest > 0:  # zeros in the unused lanes: finite through the cell, never stored
        c_new, h_new = cell_update_vec(
            vload1_first(z_i, n_vec, rest), vload1_first(z_f, n_vec, rest),
            vload1_first(z_g, n_vec, rest), vload1_first(z_o, n_vec, rest),
            vload1_first(c, n_vec, rest))
        vstore1_first(c, n_vec, c_new, rest)
        vstore1_first(h, n_vec, h_new, rest)


@njit(**_FLAGS)
def _row_matmul_acc(out, r, h, w, d):
    """out[r, :] += h[r, :] @ w[d]   with w (D, K, N), rows contiguous.

    k is unrolled by 4 so each pass over the output row does four FMAs per
    load/store of it. At B=1 this streams W at about L2 bandwidth (measured
    18 GMAC/s at H=128), which is the bound for a matrix-vector product.
    """
    K = w.shape[1]
    N = w.shape[2]
    k = 0
    while k + 4 <= K:
        a0 = h[r, k]
        a1 = h[r, k + 1]
        a2 = h[r, k + 2]
        a3 = h[r, k + 3]
        for j in range(N):
            out[r, j] = fma(a3, w[d, k + 3, j], fma(a2, w[d, k + 2, j], fma(
                a1, w[d, k + 1, j], fma(a0, w[d, k, j], out[r, j]))))
        k += 4
    while k < K:
        a0 = h[r, k]
        for j in range(N):
            out[r, j] = fma(a0, w[d, k, j], out[r, j])
        k += 1


@njit(**_FLAGS)
def _rows_matmul_acc(out, h, w, d, n_rows):
    """out[:n_rows] += h[:n_rows] @ w[d]: four rows share each load of w.

    Row-at-a-time would stream W once per row per step; with W_hh past L2
    (H=256: 1 MB) that made batch 8 four times as slow. 4 rows x 2 k keep
    8 broadcasts and 4 accumulators within AVX2's 16 registers.
    """
    K = w.shape[1]
    N = w.shape[2]
    r = 0
    while r + 4 <= n_rows:
        k = 0
        while k + 2 <= K:
            a00, a01 = h[r, k], h[r, k + 1]
            a10, a11 = h[r + 1, k], h[r + 1, k + 1]
            a20, a21 = h[r + 2, k], h[r + 2, k + 1]
            a30, a31 = h[r + 3, k], h[r + 3, k + 1]
            for j in range(N):
                w0 = w[d, k, j]
                w1 = w[d, k + 1, j]
                # Not a chain through out[]: with one, 3-4% slower at B=4-8.
                out[r, j] += fma(a01, w1, a00 * w0)
                out[r + 1, j] += fma(a11, w1, a10 * w0)
                out[r + 2, j] += fma(a21, w1, a20 * w0)
                out[r + 3, j] += fma(a31, w1, a30 * w0)
            k += 2
        if k < K:
            for q in range(4):
                a = h[r + q, k]
                for j in range(N):
                    out[r + q, j] = fma(a, w[d, k, j], out[r + q, j])
        r += 4
    while r < n_rows:
        _row_matmul_acc(out, r, h, w, d)
        r += 1


@njit(parallel=True, **_FLAGS)
def lstm_layer(gx, w_hh, w_hr, h0, c0, lengths, out, h_n, c_n, n_chunks):
    """All time steps of one layer, every direction.

    gx       (T, B, D*4H)  precomputed x @ W_ih^T + b_ih + b_hh, direction-major
    w_hh     (D, H_out, 4H) W_hh^T per direction
    w_hr     (D, H, H_out)  W_hr^T per direction, or (D, 0, 0) without projection
    h0, c0   (D, B, H_out), (D, B, H)
    lengths  (B,) int64; steps t >= lengths[b] leave sequence b's state alone
    out      (T, B, D*H_out) written here; padded steps get 0
    h_n, c_n (D, B, H_out), (D, B, H) final states, written here

    Work is split into D * n_chunks independent tasks (direction x batch slice),
    each running the whole time loop, so threads never synchronise per step.
    """
    T = gx.shape[0]
    B = gx.shape[1]
    D = w_hh.shape[0]
    H_out = w_hh.shape[1]
    G = w_hh.shape[2]
    H = G // 4
    has_proj = w_hr.shape[1] > 0
    for task in prange(D * n_chunks):
        d = task // n_chunks
        chunk = task % n_chunks
        b_lo = chunk * B // n_chunks
        nb = (chunk + 1) * B // n_chunks - b_lo
        gates = np.empty((nb, G), dtype=gx.dtype)  # (nb, 4H)
        h_cell = np.empty((nb, H), dtype=gx.dtype)  # o * tanh(c), before projection
        h_proj = np.empty((nb, H_out), dtype=gx.dtype)
        h = np.empty((nb, H_out), dtype=gx.dtype)
        c = np.empty((nb, H), dtype=gx.dtype)
        for r in range(nb):
            for j in range(H_out):
                h[r, j] = h0[d, b_lo + r, j]
            for j in range(H):
                c[r, j] = c0[d, b_lo + r, j]
        for s in range(T):
            t = T - 1 - s if d == 1 else s
            for r in range(nb):
                for j in range(G):
                    gates[r, j] = gx[t, b_lo + r, d * G + j]
            _rows_matmul_acc(gates, h, w_hh, d, nb)
            for r in range(nb):
                b = b_lo + r
                if t >= lengths[b]:
                    for j in range(H_out):
                        out[t, b, d * H_out + j] = 0
                    continue
                for j in range(H):
                    c[r, j], h_cell[r, j] = cell_update(gates[r, j], gates[r, H + j],
                                                        gates[r, 2 * H + j],
                                                        gates[r, 3 * H + j], c[r, j])
                if not has_proj:
                    for j in range(H):
                        h[r, j] = h_cell[r, j]
                        out[t, b, d * H_out + j] = h_cell[r, j]
            if has_proj:
                h_proj[:] = 0
                _rows_matmul_acc(h_proj, h_cell, w_hr, d, nb)  # rows past their end unused
                for r in range(nb):
                    b = b_lo + r
                    if t < lengths[b]:
                        for j in range(H_out):
                            h[r, j] = h_proj[r, j]
                            out[t, b, d * H_out + j] = h_proj[r, j]
        for r in range(nb):
            for j in range(H_out):
                h_n[d, b_lo + r, j] = h[r, j]
            for j in range(H):
                c_n[d, b_lo + r, j] = c[r, j]


def serial_twin(kernel):
    """``kernel``'s code compiled without threads, for single-task calls (cpu._launch).

    It gets its own qualified name: Numba's on-disk cache is keyed by name, file
    and line, not by ``parallel``, so a plain second njit of the same function
    shares the cache entry and loads whichever variant was compiled first
    (measured: the serial twin ran the threaded code, 180 instead of 29 us).
    """
    fn = kernel.py_func
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                              fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_serial"
    return njit(**_FLAGS)(twin)


lstm_layer_serial = serial_twin(lstm_layer)


@njit(**_FLAGS)
def lstm_stack_step(x, w_ih0, w_ih_rest, bias, w_hh, state, new_state, out):
    """One time step of a whole stack at batch 1, one direction, no projection.

    x (1, 1, I);  w_ih0 (1, I, 4H) layer 0's W_ih^T;  w_ih_rest (L-1, H, 4H)
    the other layers';  bias (L, 4H);  w_hh (L, H, 4H);  state -> new_state
    (2, L, 1, H), h then c;  out (1, 1, H) <- the last layer's h. Streaming
    calls this once per step: one dispatch for all layers instead of a matmul,
    a kernel and three arrays per layer (measured: 61 -> 13 µs per call for a
    tiny 2-layer model), and h and c in one array because each array argument
    costs the dispatcher ~0.1 µs.
    """
    L = w_hh.shape[0]
    G = w_hh.shape[2]
    H = G // 4
    x_row = x[0]  # (1, I)
    h0, c0, h_n, c_n = state[0], state[1], new_state[0], new_state[1]  # (L, 1, H)
    gates = np.empty((1, G), dtype=x.dtype)  # (1, 4H)
    for layer in range(L):
        copy_row(bias[layer], gates[0])
        if layer == 0:
            _row_matmul_acc(gates, 0, x_row, w_ih0, 0)
        else:
            _row_matmul_acc(gates, 0, h_n[layer - 1], w_ih_rest, layer - 1)
        _row_matmul_acc(gates, 0, h0[layer], w_hh, layer)
        for j in range(H):
            c_n[layer, 0, j], h_n[layer, 0, j] = cell_update(
                gates[0, j], gates[0, H + j], gates[0, 2 * H + j], gates[0, 3 * H + j],
                c0[layer, 0, j])
    copy_row(h_n[L - 1, 0], out[0, 0])
