"""out += a @ W with W packed once into column panels: the large-batch matmuls.

Layout (pack_panels): W (K, N) becomes panels (P, K, NR), NR = two or three
SIMD vectors of columns, zero-padded to P * NR columns; a panel's row k is the
NR weights that column block needs at step k, so the kernel streams it in order.

Micro-kernel: on AVX-512 an 8-row x NR tile of out lives in 16 or 24 vector
registers while k runs; each k loads NR/lanes vectors of W, broadcasts 8
scalars of a and issues 16 or 24 FMAs (zmm, of its 32 registers). With 16
registers (AVX2) the main tile is 4 rows x 2 vectors. Rows past the last
whole tile go through at most one 4-row and one 1-, 2- or 3-row tile, so a
small batch (2-7 rows: the team's step at batch 2-7) reads each panel once per
tile, not once per row. That is the tile
shape of BLIS-style kernels; NumPy's BLAS instead repacks W on every call,
which at one LSTM step (32 x 512 @ 512 x 2048, shape S6) measured 25 GMAC/s on
two threads against 32-37 here on one. Three-vector panels are the large-batch
layout: their 24 FMAs per 11 loads kept the FMA units busier, measured on one
core with the tile in L1 (K=512, 40 interleaved runs): median 84 GFLOP/s
against 64 for two vectors. Two-vector panels stay where a block of units is
cut into panels (cpu.row_step's four gates of NR units). Plain FMAs, no
reassociation: NaN and Inf propagate.
"""

import numpy as np
from numba import njit

from .recurrence import _FLAGS
from .simd import VECTOR_BYTES, prefetch, vadd_store, vfma, vload, vsplat

TILE_ROWS = 8
# Tiles of 1-4 rows use each weight they load for at most 4 FMAs, so they
# stream W from L2 at up to 16 bytes a cycle, faster than the hardware
# prefetcher keeps up with; they ask for the panel's rows this far ahead (an
# L3 latency's worth at that rate). The 4-row tile at S9's step, one thread,
# Zen 4: 1.03-1.05x at 1, 2 and 4 KB ahead; the 8-row tile gains nothing.
PREFETCH_BYTES = 2048


def panel_width(dtype, vectors: int = 2) -> int:
    """NR: columns per panel, two or three vectors."""
    return vectors * VECTOR_BYTES // np.dtype(dtype).itemsize


def pack_panels(w: np.ndarray, vectors: int = 2, widened_to=None) -> np.ndarray:
    """W (K, N) -> panels (P, K, NR), C-contiguous, zeros past column N. With
    ``widened_to`` (float32), NR counts lanes of that dtype: a reduced-precision
    W's panels hold as many columns as the vectors it widens into."""
    K, N = w.shape
    NR = panel_width(widened_to or w.dtype, vectors)
    P = -(-N // NR)
    padded = np.zeros((K, P * NR), w.dtype)
    padded[:, :N] = w
    return np.ascontiguousarray(padded.reshape(K, P, NR).transpose(1, 0, 2))


@njit(**_FLAGS)
def _tile8(dst, r_dst, c_dst, a, r, panel):
    """dst[r_dst:r_dst+8, c_dst:c_dst+NR] += a[r:r+8] @ panel (K, NR)."""
    L = panel.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = z
    c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = z
    a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
    a4, a5, a6, a7 = a[r + 4], a[r + 5], a[r + 6], a[r + 7]
    for k in range(panel.shape[0]):
        w0 = vload(panel, k, 0)
        w1 = vload(panel, k, L)
        s = vsplat(a0[k])
        c00, c01 = vfma(s, w0, c00), vfma(s, w1, c01)
        s = vsplat(a1[k])
        c10, c11 = vfma(s, w0, c10), vfma(s, w1, c11)
        s = vsplat(a2[k])
        c20, c21 = vfma(s, w0, c20), vfma(s, w1, c21)
        s = vsplat(a3[k])
        c30, c31 = vfma(s, w0, c30), vfma(s, w1, c31)
        s = vsplat(a4[k])
        c40, c41 = vfma(s, w0, c40), vfma(s, w1, c41)
        s = vsplat(a5[k])
        c50, c51 = vfma(s, w0, c50), vfma(s, w1, c51)
        s = vsplat(a6[k])
        c60, c61 = vfma(s, w0, c60), vfma(s, w1, c61)
        s = vsplat(a7[k])
        c70, c71 = vfma(s, w0, c70), vfma(s, w1, c71)
    _store_row(dst, r_dst, c_dst, L, c00, c01)
    _store_row(dst, r_dst + 1, c_dst, L, c10, c11)
    _store_row(dst, r_dst + 2, c_dst, L, c20, c21)
    _store_row(dst, r_dst + 3, c_dst, L, c30, c31)
    _store_row(dst, r_dst + 4, c_dst, L, c40, c41)
    _store_row(dst, r_dst + 5, c_dst, L, c50, c51)
    _store_row(dst, r_dst + 6, c_dst, L, c60, c61)
    _store_row(dst, r_dst + 7, c_dst, L, c70, c71)


@njit(**_FLAGS)
def _tile4(dst, r_dst, c_dst, a, r, panel):
    """dst[r_dst:r_dst+4, c_dst:c_dst+NR] += a[r:r+4] @ panel (K, NR): batches
    of 4-7 rows (or their last rows) read each panel once, not once a row."""
    L = panel.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = z
    a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
    ahead = _rows_ahead(panel)
    for k in range(panel.shape[0]):
        _prefetch_row(panel, k + ahead, L)
        w0 = vload(panel, k, 0)
        w1 = vload(panel, k, L)
        s = vsplat(a0[k])
        c00, c01 = vfma(s, w0, c00), vfma(s, w1, c01)
        s = vsplat(a1[k])
        c10, c11 = vfma(s, w0, c10), vfma(s, w1, c11)
        s = vsplat(a2[k])
        c20, c21 = vfma(s, w0, c20), vfma(s, w1, c21)
        s = vsplat(a3[k])
        c30, c31 = vfma(s, w0, c30), vfma(s, w1, c31)
    _store_row(dst, r_dst, c_dst, L, c00, c01)
    _store_row(dst, r_dst + 1, c_dst, L, c10, c11)
    _store_row(dst, r_dst + 2, c_dst, L, c20, c21)
    _store_row(dst, r_dst + 3, c_dst, L, c30, c31)


@njit(**_FLAGS)
def _tile3(dst, r_dst, c_dst, a, r, panel):
    """dst[r_dst:r_dst+3, c_dst:c_dst+NR] += a[r:r+3] @ panel (K, NR): three
    rows in one pass over the panel, where a 2-row and a 1-row tile took two
    (and the 1-row tile's two FMA chains cannot cover the FMA latency)."""
    L = panel.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c10 = c11 = c20 = c21 = z
    a0, a1, a2 = a[r], a[r + 1], a[r + 2]
    ahead = _rows_ahead(panel)
    for k in range(panel.shape[0]):
        _prefetch_row(panel, k + ahead, L)
        w0 = vload(panel, k, 0)
        w1 = vload(panel, k, L)
        s = vsplat(a0[k])
        c00, c01 = vfma(s, w0, c00), vfma(s, w1, c01)
        s = vsplat(a1[k])
        c10, c11 = vfma(s, w0, c10), vfma(s, w1, c11)
        s = vsplat(a2[k])
        c20, c21 = vfma(s, w0, c20), vfma(s, w1, c21)
    _store_row(dst, r_dst, c_dst, L, c00, c01)
    _store_row(dst, r_dst + 1, c_dst, L, c10, c11)
    _store_row(dst, r_dst + 2, c_dst, L, c20, c21)


@njit(**_FLAGS)
def _tile2(dst, r_dst, c_dst, a, r, panel):
    """dst[r_dst:r_dst+2, c_dst:c_dst+NR] += a[r:r+2] @ panel (K, NR)."""
    L = panel.shape[1] // 2
    c00 = c01 = c10 = c11 = vsplat(dst.dtype.type(0))
    a0, a1 = a[r], a[r + 1]
    ahead = _rows_ahead(panel)
    for k in range(panel.shape[0]):
        _prefetch_row(panel, k + ahead, L)
        w0 = vload(panel, k, 0)
        w1 = vload(panel, k, L)
        s = vsplat(a0[k])
        c00, c01 = vfma(s, w0, c00), vfma(s, w1, c01)
        s = vsplat(a1[k])
        c10, c11 = vfma(s, w0, c10), vfma(s, w1, c11)
    _store_row(dst, r_dst, c_dst, L, c00, c01)
    _store_row(dst, r_dst + 1, c_dst, L, c10, c11)


@njit(**_FLAGS)
def _tile1(dst, r_dst, c_dst, a, r, panel):
    """dst[r_dst, c_dst:c_dst+NR] += a[r] @ panel (K, NR): leftover rows."""
    L = panel.shape[1] // 2
    c0 = c1 = vsplat(dst.dtype.type(0))
    a0 = a[r]
    ahead = _rows_ahead(panel)
    for k in range(panel.shape[0]):
        _prefetch_row(panel, k + ahead, L)
        s = vsplat(a0[k])
        c0, c1 = vfma(s, vload(panel, k, 0), c0), vfma(s, vload(panel, k, L), c1)
    _store_row(dst, r_dst, c_dst, L, c0, c1)


@njit(**_FLAGS)
def _tile8x3(dst, r_dst, c_dst, a, r, panel):
    """_tile8 for three-vector panels: dst[r_dst:r_dst+8, c_dst:c_dst+NR] +=
    a[r:r+8] @ panel (K, NR)."""
    L = panel.shape[1] // 3
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = c30 = c31 = c32 = z
    c40 = c41 = c42 = c50 = c51 = c52 = c60 = c61 = c62 = c70 = c71 = c72 = z
    a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
    a4, a5, a6, a7 = a[r + 4], a[r + 5], a[r + 6], a[r + 7]
    for k in range(panel.shape[0]):
        w0 = vload(panel, k, 0)
        w1 = vload(panel, k, L)
        w2 = vload(panel, k, 2 * L)
        s = vsplat(a0[k])
        c00, c01, c02 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02)
        s = vsplat(a1[k])
        c10, c11, c12 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12)
        s = vsplat(a2[k])
        c20, c21, c22 = vfma(s, w0, c20), vfma(s, w1, c21), vfma(s, w2, c22)
        s = vsplat(a3[k])
        c30, c31, c32 = vfma(s, w0, c30), vfma(s, w1, c31), vfma(s, w2, c32)
        s = vsplat(a4[k])
        c40, c41, c42 = vfma(s, w0, c40), vfma(s, w1, c41), vfma(s, w2, c42)
        s = vsplat(a5[k])
        c50, c51, c52 = vfma(s, w0, c50), vfma(s, w1, c51), vfma(s, w2, c52)
        s = vsplat(a6[k])
        c60, c61, c62 = vfma(s, w0, c60), vfma(s, w1, c61), vfma(s, w2, c62)
        s = vsplat(a7[k])
        c70, c71, c72 = vfma(s, w0, c70), vfma(s, w1, c71), vfma(s, w2, c72)
    _store_row3(dst, r_dst, c_dst, L, c00, c01, c02)
    _store_row3(dst, r_dst + 1, c_dst, L, c10, c11, c12)
    _store_row3(dst, r_dst + 2, c_dst, L, c20, c21, c22)
    _store_row3(dst, r_dst + 3, c_dst, L, c30, c31, c32)
    _store_row3(dst, r_dst + 4, c_dst, L, c40, c41, c42)
    _store_row3(dst, r_dst + 5, c_dst, L, c50, c51, c52)
    _store_row3(dst, r_dst + 6, c_dst, L, c60, c61, c62)
    _store_row3(dst, r_dst + 7, c_dst, L, c70, c71, c72)


@njit(**_FLAGS)
def _tile4x3(dst, r_dst, c_dst, a, r, panel):
    """_tile4 for three-vector panels."""
    L = panel.shape[1] // 3
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = c30 = c31 = c32 = z
    a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
    for k in range(panel.shape[0]):
        w0 = vload(panel, k, 0)
        w1 = vload(panel, k, L)
        w2 = vload(panel, k, 2 * L)
        s = vsplat(a0[k])
        c00, c01, c02 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02)
        s = vsplat(a1[k])
        c10, c11, c12 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12)
        s = vsplat(a2[k])
        c20, c21, c22 = vfma(s, w0, c20), vfma(s, w1, c21), vfma(s, w2, c22)
        s = vsplat(a3[k])
        c30, c31, c32 = vfma(s, w0, c30), vfma(s, w1, c31), vfma(s, w2, c32)
    _store_row3(dst, r_dst, c_dst, L, c00, c01, c02)
    _store_row3(dst, r_dst + 1, c_dst, L, c10, c11, c12)
    _store_row3(dst, r_dst + 2, c_dst, L, c20, c21, c22)
    _store_row3(dst, r_dst + 3, c_dst, L, c30, c31, c32)


@njit(**_FLAGS)
def _tile3x3(dst, r_dst, c_dst, a, r, panel):
    """_tile3 for three-vector panels."""
    L = panel.shape[1] // 3
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = z
    a0, a1, a2 = a[r], a[r + 1], a[r + 2]
    for k in range(panel.shape[0]):
        w0 = vload(panel, k, 0)
        w1 = vload(panel, k, L)
        w2 = vload(panel, k, 2 * L)
        s = vsplat(a0[k])
        c00, c01, c02 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02)
        s = vsplat(a1[k])
        c10, c11, c12 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12)
        s = vsplat(a2[k])
        c20, c21, c22 = vfma(s, w0, c20), vfma(s, w1, c21), vfma(s, w2, c22)
    _store_row3(dst, r_dst, c_dst, L, c00, c01, c02)
    _store_row3(dst, r_dst + 1, c_dst, L, c10, c11, c12)
    _store_row3(dst, r_dst + 2, c_dst, L, c20, c21, c22)


@njit(**_FLAGS)
def _tile2x3(dst, r_dst, c_dst, a, r, panel):
    """_tile2 for three-vector panels."""
    L = panel.shape[1] // 3
    c00 = c01 = c02 = c10 = c11 = c12 = vsplat(dst.dtype.type(0))
    a0, a1 = a[r], a[r + 1]
    for k in range(panel.shape[0]):
        w0 = vload(panel, k, 0)
        w1 = vload(panel, k, L)
        w2 = vload(panel, k, 2 * L)
        s = vsplat(a0[k])
        c00, c01, c02 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02)
        s = vsplat(a1[k])
        c10, c11, c12 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12)
    _store_row3(dst, r_dst, c_dst, L, c00, c01, c02)
    _store_row3(dst, r_dst + 1, c_dst, L, c10, c11, c12)


@njit(**_FLAGS)
def _tile1x3(dst, r_dst, c_dst, a, r, panel):
    """_tile1 for three-vector panels."""
    L = panel.shape[1] // 3
    c0 = c1 = c2 = vsplat(dst.dtype.type(0))
    a0 = a[r]
    for k in range(panel.shape[0]):
        s = vsplat(a0[k])
        c0 = vfma(s, vload(panel, k, 0), c0)
        c1 = vfma(s, vload(panel, k, L), c1)
        c2 = vfma(s, vload(panel, k, 2 * L), c2)
    _store_row3(dst, r_dst, c_dst, L, c0, c1, c2)


@njit(inline="always", **_FLAGS)
def _rows_ahead(panel):
    return PREFETCH_BYTES // (panel.shape[1] * panel.itemsize)


@njit(inline="always", **_FLAGS)
def _prefetch_row(panel, k, L):
    """Row k of a two-vector panel into L1; past the panel's end that is the
    next panel's start (panels are contiguous), past the array's end a no-op."""
    prefetch(panel, k, 0)
    prefetch(panel, k, L)


@njit(inline="always", **_FLAGS)
def _store_row(dst, r, c, L, v0, v1):
    vadd_store(dst, r, c, v0)
    vadd_store(dst, r, c + L, v1)


@njit(inline="always", **_FLAGS)
def _store_row3(dst, r, c, L, v0, v1, v2):
    vadd_store(dst, r, c, v0)
    vadd_store(dst, r, c + L, v1)
    vadd_store(dst, r, c + 2 * L, v2)


@njit(**_FLAGS)
def gemm_panels_acc(out, a, panels):
    """out (R, N) += a (R, K) @ W, W packed by pack_panels into (P, K, NR)."""
    if panels.shape[2] == 3 * (VECTOR_BYTES // panels.itemsize):
        gemm_panels3_acc(out, 0, out.shape[1], a, panels)
    else:
        gemm_panels2_acc(out, 0, out.shape[1], a, panels)


# Kernels call the product for the one panel width they are given, so that each
# compiles one set of tiles, not both (a set is ~2 s of a cold first call, more
# in every caller that optimizes it again). They take out whole, with the
# columns to add to, so that a slice of columns (the input projection's, per
# direction) does not make another type of out and another set of tiles.
@njit(**_FLAGS)
def gemm_panels2_acc(out, col, N, a, panels):
    """out[:, col:col+N] += a (R, K) @ W for two-vector panels of W (K, N)."""
    _gemm(out, col, N, a, panels, _tile8, _tile4, _tile3, _tile2, _tile1)


@njit(**_FLAGS)
def gemm_panels3_acc(out, col, N, a, panels):
    """gemm_panels2_acc for three-vector panels."""
    _gemm(out, col, N, a, panels, _tile8x3, _tile4x3, _tile3x3, _tile2x3, _tile1x3)


# Panel width, in vectors, of the large-batch layout (packing.PackedLayer's
# panels): three where there are 32 vector registers (AVX-512) to hold the
# 8 x 3 tile; its product, for the layer loop and the input projection.
GEMM_PANEL_VECTORS = 3 if VECTOR_BYTES == 64 else 2
gemm_layout_acc = gemm_panels3_acc if GEMM_PANEL_VECTORS == 3 else gemm_panels2_acc


@njit(inline="always", **_FLAGS)
def _gemm(out, col, N, a, panels, tile8, tile4, tile3, tile2, tile1):
    R = a.shape[0]
    NR = panels.shape[2]
    # 8-row tiles need 32 vector registers (AVX-512); with 16 (AVX2) the 4-row
    # tile is the main one: 107 against 52 GFLOP/s for the 8-row one there.
    R8 = R - R % TILE_ROWS if VECTOR_BYTES == 64 else 0
    R4 = R8 + (R - R8) // 4 * 4
    rest = R - R4  # 0-3 rows: one more tile, one more pass over each panel
    for p in range(panels.shape[0]):
        panel = panels[p]  # (K, NR)
        n = p * NR
        if n + NR <= N:
            for r in range(0, R8, TILE_ROWS):
                tile8(out, r, col + n, a, r, panel)
            for r in range(R8, R4, 4):
                tile4(out, r, col + n, a, r, panel)
            _tile_rest(out, R4, col + n, a, R4, rest, panel, tile3, tile2, tile1)
        else:  # the last, partial panel: through a scratch tile
            tile = np.zeros((TILE_ROWS, NR), out.dtype)
            # Not a literal 0: Numba compiles a function once more for each
            # literal argument it is called with (Literal[int](0)).
            origin = np.int64(0)
            for r in range(0, R8, TILE_ROWS):
                tile8(tile, origin, origin, a, r, panel)
                _drain(tile, TILE_ROWS, out, r, col + n, N - n)
            for r in range(R8, R4, 4):
                tile4(tile, origin, origin, a, r, panel)
                _drain(tile, 4, out, r, col + n, N - n)
            if rest > 0:
                _tile_rest(tile, origin, origin, a, R4, rest, panel, tile3, tile2, tile1)
                _drain(tile, rest, out, R4, col + n, N - n)


@njit(inline="always", **_FLAGS)
def _tile_rest(dst, r_dst, c_dst, a, r, rows, panel, tile3, tile2, tile1):
    """dst[r_dst:r_dst+rows, c_dst:c_dst+NR] += a[r:r+rows] @ panel, rows 0-3."""
    if rows == 3:
        tile3(dst, r_dst, c_dst, a, r, panel)
    elif rows == 2:
        tile2(dst, r_dst, c_dst, a, r, panel)
    elif rows == 1:
        tile1(dst, r_dst, c_dst, a, r, panel)


@njit(inline="always", **_FLAGS)
def _drain(tile, rows, out, r, c, width):
    """out[r:r+rows, c:c+width] += tile[:rows, :width], and those tile entries back to 0."""
    for q in range(rows):
        for j in range(width):
            out[r + q, c + j] += tile[q, j]
            tile[q, j] = 0


@njit(inline="always", **_FLAGS)
def chunk_start(chunk, n_chunks, n):
    """Start of chunk `chunk` of n rows cut in n_chunks: on a multiple of the
    tile's 8 rows when the chunks are at least that long, so that only the last
    chunk has leftover rows."""
    start = chunk * n // n_chunks
    if chunk == n_chunks or n < TILE_ROWS * n_chunks:
        return start
    return start - start % TILE_ROWS
