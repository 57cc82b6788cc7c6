"""out += a @ W with W packed once into column panels: the large-batch matmuls.

Layout (pack_panels): W (K, N) becomes panels (P, K, NR), NR = two or three
SIMD vectors of columns, zero-padded to P * NR columns; a panel's row k is the
NR weights that column block needs at step k, so the kernel streams it in order.

Micro-kernel: on AVX-512 an 8-row x NR tile of out lives in 16 or 24 vector
registers while k runs; each k loads NR/lanes vectors of W, broadcasts 8
scalars of a and issues 16 or 24 FMAs (zmm, of its 32 registers). With 16
registers (AVX2) the main tile is 6 rows x 2 vectors (12 sums) and rows past
it go 5 at a time where they can. Rows past the last whole tile go through
at most one 4-row and one 1-, 2- or 3-row tile over two
panels at once (where the registers hold those sums), so a small batch (2-7
rows: the team's step at batch 2-7) reads each panel once per tile, not once
per row, with enough independent sums to keep the FMA units busy; 8 + 4
rows over whole two-vector panels go as one 12-row tile on AVX-512. That is the tile
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
from .simd import (
    VECTOR_BYTES,
    VECTOR_REGISTERS,
    prefetch,
    schedule_barrier,
    vadd,
    vadd_store,
    vfma,
    vload,
    vload1,
    vload1_first,
    vsplat,
    vstore1,
    vstore1_first,
)

TILE_ROWS = 8
# Tiles of 1-4 rows use each weight they load for at most 4 FMAs, so they
# stream W from L2 at up to 16 bytes a cycle, faster than the hardware
# prefetcher keeps up with; they ask for the panel's rows this far ahead (an
# L3 latency's worth at that rate). The 4-row tile at S9's step, one thread,
# Zen 4: 1.03-1.05x at 1, 2 and 4 KB ahead; the 8-row tile gained nothing
# there, but on the AMX Xeon, where a team step's share streams from L3 (B =
# 12, H = 1024: 8 MB a thread), its two-vector tile gains 7%, from L2 2-4%.
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
    s0, s1, s2, s3, s4, s5, s6, s7 = _sums8x2(a, r, panel, L)
    _store_row(dst, r_dst, c_dst, L, s0[0], s0[1])
    _store_row(dst, r_dst + 1, c_dst, L, s1[0], s1[1])
    _store_row(dst, r_dst + 2, c_dst, L, s2[0], s2[1])
    _store_row(dst, r_dst + 3, c_dst, L, s3[0], s3[1])
    _store_row(dst, r_dst + 4, c_dst, L, s4[0], s4[1])
    _store_row(dst, r_dst + 5, c_dst, L, s5[0], s5[1])
    _store_row(dst, r_dst + 6, c_dst, L, s6[0], s6[1])
    _store_row(dst, r_dst + 7, c_dst, L, s7[0], s7[1])


@njit(**_FLAGS)
def _tile6(dst, r_dst, c_dst, a, r, panel):
    """dst[r_dst:r_dst+6, c_dst:c_dst+NR] += a[r:r+6] @ panel (K, NR): the main
    tile with 16 vector registers (AVX2), 12 sums, two weight vectors and a
    broadcast. Twelve FMA chains cover a 5-cycle FMA latency at two FMAs a
    cycle (Zen 2); the 4-row tile's eight leave a fifth of the units idle."""
    L = panel.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = z
    a0, a1, a2, a3, a4, a5 = a[r], a[r + 1], a[r + 2], a[r + 3], a[r + 4], a[r + 5]
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
    _store_row(dst, r_dst, c_dst, L, c00, c01)
    _store_row(dst, r_dst + 1, c_dst, L, c10, c11)
    _store_row(dst, r_dst + 2, c_dst, L, c20, c21)
    _store_row(dst, r_dst + 3, c_dst, L, c30, c31)
    _store_row(dst, r_dst + 4, c_dst, L, c40, c41)
    _store_row(dst, r_dst + 5, c_dst, L, c50, c51)


@njit(**_FLAGS)
def _tile5(dst, r_dst, c_dst, a, r, panel):
    """dst[r_dst:r_dst+5, c_dst:c_dst+NR] += a[r:r+5] @ panel (K, NR): with 16
    registers, the rows past the 6-row tiles go 5 at a time (ten FMA chains)
    where they can, not 4 (eight)."""
    L = panel.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = z
    a0, a1, a2, a3, a4 = a[r], a[r + 1], a[r + 2], a[r + 3], a[r + 4]
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
        s = vsplat(a4[k])
        c40, c41 = vfma(s, w0, c40), vfma(s, w1, c41)
    _store_row(dst, r_dst, c_dst, L, c00, c01)
    _store_row(dst, r_dst + 1, c_dst, L, c10, c11)
    _store_row(dst, r_dst + 2, c_dst, L, c20, c21)
    _store_row(dst, r_dst + 3, c_dst, L, c30, c31)
    _store_row(dst, r_dst + 4, c_dst, L, c40, c41)


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


@njit(inline="always", **_FLAGS)
def _sums8x3(a, r, panel):
    """a[r:r+8] @ panel (K, NR) for three-vector panels: 24 sums, row by row."""
    L = panel.shape[1] // 3
    z = vsplat(panel.dtype.type(0))
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
    return ((c00, c01, c02), (c10, c11, c12), (c20, c21, c22), (c30, c31, c32),
            (c40, c41, c42), (c50, c51, c52), (c60, c61, c62), (c70, c71, c72))


@njit(inline="always", **_FLAGS)
def _sums8x2(a, r, panel, L):
    """a[r:r+8] @ the panel's first two vectors of columns (0 and L on): the
    two-vector tile's sums, and those of a three-vector panel's first two
    (as _sums8x3's); a third, zero vector a row so that both return alike."""
    z = vsplat(panel.dtype.type(0))
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = z
    c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = z
    a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
    a4, a5, a6, a7 = a[r + 4], a[r + 5], a[r + 6], a[r + 7]
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
        s = vsplat(a4[k])
        c40, c41 = vfma(s, w0, c40), vfma(s, w1, c41)
        s = vsplat(a5[k])
        c50, c51 = vfma(s, w0, c50), vfma(s, w1, c51)
        s = vsplat(a6[k])
        c60, c61 = vfma(s, w0, c60), vfma(s, w1, c61)
        s = vsplat(a7[k])
        c70, c71 = vfma(s, w0, c70), vfma(s, w1, c71)
    return ((c00, c01, z), (c10, c11, z), (c20, c21, z), (c30, c31, z),
            (c40, c41, z), (c50, c51, z), (c60, c61, z), (c70, c71, z))


@njit(inline="always", **_FLAGS)
def _sums8x1(a, r, panel):
    """The first vector's columns of _sums8x3 (the same sums)."""
    z = vsplat(panel.dtype.type(0))
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = z
    a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
    a4, a5, a6, a7 = a[r + 4], a[r + 5], a[r + 6], a[r + 7]
    for k in range(panel.shape[0]):
        w0 = vload(panel, k, 0)
        c0, c1 = vfma(vsplat(a0[k]), w0, c0), vfma(vsplat(a1[k]), w0, c1)
        c2, c3 = vfma(vsplat(a2[k]), w0, c2), vfma(vsplat(a3[k]), w0, c3)
        c4, c5 = vfma(vsplat(a4[k]), w0, c4), vfma(vsplat(a5[k]), w0, c5)
        c6, c7 = vfma(vsplat(a6[k]), w0, c6), vfma(vsplat(a7[k]), w0, c7)
    return ((c0, z, z), (c1, z, z), (c2, z, z), (c3, z, z),
            (c4, z, z), (c5, z, z), (c6, z, z), (c7, z, z))


@njit(**_FLAGS)
def _tile8x3(dst, r_dst, c_dst, a, r, panel):
    """_tile8 for three-vector panels: dst[r_dst:r_dst+8, c_dst:c_dst+NR] +=
    a[r:r+8] @ panel (K, NR)."""
    L = panel.shape[1] // 3
    s0, s1, s2, s3, s4, s5, s6, s7 = _sums8x3(a, r, panel)
    _store_row3(dst, r_dst, c_dst, L, s0[0], s0[1], s0[2])
    _store_row3(dst, r_dst + 1, c_dst, L, s1[0], s1[1], s1[2])
    _store_row3(dst, r_dst + 2, c_dst, L, s2[0], s2[1], s2[2])
    _store_row3(dst, r_dst + 3, c_dst, L, s3[0], s3[1], s3[2])
    _store_row3(dst, r_dst + 4, c_dst, L, s4[0], s4[1], s4[2])
    _store_row3(dst, r_dst + 5, c_dst, L, s5[0], s5[1], s5[2])
    _store_row3(dst, r_dst + 6, c_dst, L, s6[0], s6[1], s6[2])
    _store_row3(dst, r_dst + 7, c_dst, L, s7[0], s7[1], s7[2])


@njit(**_FLAGS)
def _tile8x3_first(dst, r_dst, c_dst, a, r, panel, width):
    """_tile8x3 for a last panel cut short: only the first ``width`` (< NR)
    columns are added to dst, by masked stores, so the tile needs no scratch
    and no drain (4H = 512: 10 whole panels and 32 columns), and only the
    vectors that hold them are summed (4H = 1024: one of three)."""
    L = panel.shape[1] // 3
    if width <= L:
        sums = _sums8x1(a, r, panel)
    elif width <= 2 * L:
        sums = _sums8x2(a, r, panel, L)
    else:
        sums = _sums8x3(a, r, panel)
    s0, s1, s2, s3, s4, s5, s6, s7 = sums
    _store_row3_first(dst[r_dst], c_dst, L, width, s0[0], s0[1], s0[2])
    _store_row3_first(dst[r_dst + 1], c_dst, L, width, s1[0], s1[1], s1[2])
    _store_row3_first(dst[r_dst + 2], c_dst, L, width, s2[0], s2[1], s2[2])
    _store_row3_first(dst[r_dst + 3], c_dst, L, width, s3[0], s3[1], s3[2])
    _store_row3_first(dst[r_dst + 4], c_dst, L, width, s4[0], s4[1], s4[2])
    _store_row3_first(dst[r_dst + 5], c_dst, L, width, s5[0], s5[1], s5[2])
    _store_row3_first(dst[r_dst + 6], c_dst, L, width, s6[0], s6[1], s6[2])
    _store_row3_first(dst[r_dst + 7], c_dst, L, width, s7[0], s7[1], s7[2])


@njit(**_FLAGS)
def _tile12(dst, r_dst, c_dst, a, r, panel):
    """dst[r_dst:r_dst+12, c_dst:c_dst+NR] += a[r:r+12] @ panel (K, NR), two-vector
    panels: 24 sums. Where W streams from L3 (a team step's share past L2), 12
    rows in one pass keep the panel's stream going; as 8 rows and then 4 over
    the panels again from L2, it stands still during the 4. The barriers keep
    each k step to 4 live broadcasts: 24 sums + 2 weights + 4 of 32 registers."""
    L = panel.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = z
    c60 = c61 = c70 = c71 = c80 = c81 = c90 = c91 = ca0 = ca1 = cb0 = cb1 = z
    a0, a1, a2, a3, a4, a5 = a[r], a[r + 1], a[r + 2], a[r + 3], a[r + 4], a[r + 5]
    a6, a7, a8, a9, aa, ab = a[r + 6], a[r + 7], a[r + 8], a[r + 9], a[r + 10], a[r + 11]
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
        schedule_barrier()
        s = vsplat(a4[k])
        c40, c41 = vfma(s, w0, c40), vfma(s, w1, c41)
        s = vsplat(a5[k])
        c50, c51 = vfma(s, w0, c50), vfma(s, w1, c51)
        s = vsplat(a6[k])
        c60, c61 = vfma(s, w0, c60), vfma(s, w1, c61)
        s = vsplat(a7[k])
        c70, c71 = vfma(s, w0, c70), vfma(s, w1, c71)
        schedule_barrier()
        s = vsplat(a8[k])
        c80, c81 = vfma(s, w0, c80), vfma(s, w1, c81)
        s = vsplat(a9[k])
        c90, c91 = vfma(s, w0, c90), vfma(s, w1, c91)
        s = vsplat(aa[k])
        ca0, ca1 = vfma(s, w0, ca0), vfma(s, w1, ca1)
        s = vsplat(ab[k])
        cb0, cb1 = vfma(s, w0, cb0), vfma(s, w1, cb1)
    _store_row(dst, r_dst, c_dst, L, c00, c01)
    _store_row(dst, r_dst + 1, c_dst, L, c10, c11)
    _store_row(dst, r_dst + 2, c_dst, L, c20, c21)
    _store_row(dst, r_dst + 3, c_dst, L, c30, c31)
    _store_row(dst, r_dst + 4, c_dst, L, c40, c41)
    _store_row(dst, r_dst + 5, c_dst, L, c50, c51)
    _store_row(dst, r_dst + 6, c_dst, L, c60, c61)
    _store_row(dst, r_dst + 7, c_dst, L, c70, c71)
    _store_row(dst, r_dst + 8, c_dst, L, c80, c81)
    _store_row(dst, r_dst + 9, c_dst, L, c90, c91)
    _store_row(dst, r_dst + 10, c_dst, L, ca0, ca1)
    _store_row(dst, r_dst + 11, c_dst, L, cb0, cb1)


# Tiles of 1-4 rows over two panels at once: twice the columns, so twice the
# independent sums per weight load and per broadcast. A 1- or 2-row tile over
# one panel has 2-6 FMA chains, too few to cover the FMA latency, and loads a
# weight vector per 1-2 FMAs. Each output's FMAs run in the same order as over
# one panel, so the sums are the same bits.
@njit(**_FLAGS)
def _tile4x4(dst, r_dst, c_dst, a, r, pa, pb):
    """dst[r_dst:r_dst+4, c_dst:c_dst+2NR] += a[r:r+4] @ [pa | pb], two
    two-vector panels (K, NR)."""
    L = pa.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = z
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = z
    a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
    ahead = _rows_ahead(pa)
    for k in range(pa.shape[0]):
        _prefetch_row(pa, k + ahead, L)
        _prefetch_row(pb, k + ahead, L)
        w0, w1, w2, w3 = vload(pa, k, 0), vload(pa, k, L), vload(pb, k, 0), vload(pb, k, L)
        s = vsplat(a0[k])
        c00, c01, c02, c03 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02), vfma(s, w3, c03)
        s = vsplat(a1[k])
        c10, c11, c12, c13 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12), vfma(s, w3, c13)
        s = vsplat(a2[k])
        c20, c21, c22, c23 = vfma(s, w0, c20), vfma(s, w1, c21), vfma(s, w2, c22), vfma(s, w3, c23)
        s = vsplat(a3[k])
        c30, c31, c32, c33 = vfma(s, w0, c30), vfma(s, w1, c31), vfma(s, w2, c32), vfma(s, w3, c33)
    _store_row4(dst, r_dst, c_dst, L, c00, c01, c02, c03)
    _store_row4(dst, r_dst + 1, c_dst, L, c10, c11, c12, c13)
    _store_row4(dst, r_dst + 2, c_dst, L, c20, c21, c22, c23)
    _store_row4(dst, r_dst + 3, c_dst, L, c30, c31, c32, c33)


@njit(**_FLAGS)
def _tile6x4(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile4x4 for 6 rows (24 sums: AVX-512's 32 registers only)."""
    L = pa.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = c20 = c21 = c22 = c23 = z
    c30 = c31 = c32 = c33 = c40 = c41 = c42 = c43 = c50 = c51 = c52 = c53 = z
    a0, a1, a2, a3, a4, a5 = a[r], a[r + 1], a[r + 2], a[r + 3], a[r + 4], a[r + 5]
    ahead = _rows_ahead(pa)
    for k in range(pa.shape[0]):
        _prefetch_row(pa, k + ahead, L)
        _prefetch_row(pb, k + ahead, L)
        w0, w1, w2, w3 = vload(pa, k, 0), vload(pa, k, L), vload(pb, k, 0), vload(pb, k, L)
        s = vsplat(a0[k])
        c00, c01, c02, c03 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02), vfma(s, w3, c03)
        s = vsplat(a1[k])
        c10, c11, c12, c13 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12), vfma(s, w3, c13)
        s = vsplat(a2[k])
        c20, c21, c22, c23 = vfma(s, w0, c20), vfma(s, w1, c21), vfma(s, w2, c22), vfma(s, w3, c23)
        schedule_barrier()
        s = vsplat(a3[k])
        c30, c31, c32, c33 = vfma(s, w0, c30), vfma(s, w1, c31), vfma(s, w2, c32), vfma(s, w3, c33)
        s = vsplat(a4[k])
        c40, c41, c42, c43 = vfma(s, w0, c40), vfma(s, w1, c41), vfma(s, w2, c42), vfma(s, w3, c43)
        s = vsplat(a5[k])
        c50, c51, c52, c53 = vfma(s, w0, c50), vfma(s, w1, c51), vfma(s, w2, c52), vfma(s, w3, c53)
    _store_row4(dst, r_dst, c_dst, L, c00, c01, c02, c03)
    _store_row4(dst, r_dst + 1, c_dst, L, c10, c11, c12, c13)
    _store_row4(dst, r_dst + 2, c_dst, L, c20, c21, c22, c23)
    _store_row4(dst, r_dst + 3, c_dst, L, c30, c31, c32, c33)
    _store_row4(dst, r_dst + 4, c_dst, L, c40, c41, c42, c43)
    _store_row4(dst, r_dst + 5, c_dst, L, c50, c51, c52, c53)


@njit(**_FLAGS)
def _tile5x4(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile4x4 for 5 rows (20 sums)."""
    L = pa.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = c20 = c21 = c22 = c23 = z
    c30 = c31 = c32 = c33 = c40 = c41 = c42 = c43 = z
    a0, a1, a2, a3, a4 = a[r], a[r + 1], a[r + 2], a[r + 3], a[r + 4]
    ahead = _rows_ahead(pa)
    for k in range(pa.shape[0]):
        _prefetch_row(pa, k + ahead, L)
        _prefetch_row(pb, k + ahead, L)
        w0, w1, w2, w3 = vload(pa, k, 0), vload(pa, k, L), vload(pb, k, 0), vload(pb, k, L)
        s = vsplat(a0[k])
        c00, c01, c02, c03 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02), vfma(s, w3, c03)
        s = vsplat(a1[k])
        c10, c11, c12, c13 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12), vfma(s, w3, c13)
        s = vsplat(a2[k])
        c20, c21, c22, c23 = vfma(s, w0, c20), vfma(s, w1, c21), vfma(s, w2, c22), vfma(s, w3, c23)
        s = vsplat(a3[k])
        c30, c31, c32, c33 = vfma(s, w0, c30), vfma(s, w1, c31), vfma(s, w2, c32), vfma(s, w3, c33)
        s = vsplat(a4[k])
        c40, c41, c42, c43 = vfma(s, w0, c40), vfma(s, w1, c41), vfma(s, w2, c42), vfma(s, w3, c43)
    _store_row4(dst, r_dst, c_dst, L, c00, c01, c02, c03)
    _store_row4(dst, r_dst + 1, c_dst, L, c10, c11, c12, c13)
    _store_row4(dst, r_dst + 2, c_dst, L, c20, c21, c22, c23)
    _store_row4(dst, r_dst + 3, c_dst, L, c30, c31, c32, c33)
    _store_row4(dst, r_dst + 4, c_dst, L, c40, c41, c42, c43)


@njit(**_FLAGS)
def _tile3x4(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile4x4 for 3 rows."""
    L = pa.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = c20 = c21 = c22 = c23 = z
    a0, a1, a2 = a[r], a[r + 1], a[r + 2]
    ahead = _rows_ahead(pa)
    for k in range(pa.shape[0]):
        _prefetch_row(pa, k + ahead, L)
        _prefetch_row(pb, k + ahead, L)
        w0, w1, w2, w3 = vload(pa, k, 0), vload(pa, k, L), vload(pb, k, 0), vload(pb, k, L)
        s = vsplat(a0[k])
        c00, c01, c02, c03 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02), vfma(s, w3, c03)
        s = vsplat(a1[k])
        c10, c11, c12, c13 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12), vfma(s, w3, c13)
        s = vsplat(a2[k])
        c20, c21, c22, c23 = vfma(s, w0, c20), vfma(s, w1, c21), vfma(s, w2, c22), vfma(s, w3, c23)
    _store_row4(dst, r_dst, c_dst, L, c00, c01, c02, c03)
    _store_row4(dst, r_dst + 1, c_dst, L, c10, c11, c12, c13)
    _store_row4(dst, r_dst + 2, c_dst, L, c20, c21, c22, c23)


@njit(**_FLAGS)
def _tile2x4(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile4x4 for 2 rows."""
    L = pa.shape[1] // 2
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = z
    a0, a1 = a[r], a[r + 1]
    ahead = _rows_ahead(pa)
    for k in range(pa.shape[0]):
        _prefetch_row(pa, k + ahead, L)
        _prefetch_row(pb, k + ahead, L)
        w0, w1, w2, w3 = vload(pa, k, 0), vload(pa, k, L), vload(pb, k, 0), vload(pb, k, L)
        s = vsplat(a0[k])
        c00, c01, c02, c03 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02), vfma(s, w3, c03)
        s = vsplat(a1[k])
        c10, c11, c12, c13 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12), vfma(s, w3, c13)
    _store_row4(dst, r_dst, c_dst, L, c00, c01, c02, c03)
    _store_row4(dst, r_dst + 1, c_dst, L, c10, c11, c12, c13)


@njit(**_FLAGS)
def _tile1x4(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile4x4 for 1 row."""
    L = pa.shape[1] // 2
    c0 = c1 = c2 = c3 = vsplat(dst.dtype.type(0))
    a0 = a[r]
    ahead = _rows_ahead(pa)
    for k in range(pa.shape[0]):
        _prefetch_row(pa, k + ahead, L)
        _prefetch_row(pb, k + ahead, L)
        s = vsplat(a0[k])
        c0, c1 = vfma(s, vload(pa, k, 0), c0), vfma(s, vload(pa, k, L), c1)
        c2, c3 = vfma(s, vload(pb, k, 0), c2), vfma(s, vload(pb, k, L), c3)
    _store_row4(dst, r_dst, c_dst, L, c0, c1, c2, c3)


@njit(**_FLAGS)
def _tile4x6(dst, r_dst, c_dst, a, r, pa, pb):
    """dst[r_dst:r_dst+4, c_dst:c_dst+2NR] += a[r:r+4] @ [pa | pb], two
    three-vector panels (K, NR)."""
    L = pa.shape[1] // 3
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c03 = c04 = c05 = c10 = c11 = c12 = c13 = c14 = c15 = z
    c20 = c21 = c22 = c23 = c24 = c25 = c30 = c31 = c32 = c33 = c34 = c35 = z
    a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
    for k in range(pa.shape[0]):
        w0, w1, w2 = vload(pa, k, 0), vload(pa, k, L), vload(pa, k, 2 * L)
        w3, w4, w5 = vload(pb, k, 0), vload(pb, k, L), vload(pb, k, 2 * L)
        s = vsplat(a0[k])
        c00, c01, c02 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02)
        c03, c04, c05 = vfma(s, w3, c03), vfma(s, w4, c04), vfma(s, w5, c05)
        s = vsplat(a1[k])
        c10, c11, c12 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12)
        c13, c14, c15 = vfma(s, w3, c13), vfma(s, w4, c14), vfma(s, w5, c15)
        s = vsplat(a2[k])
        c20, c21, c22 = vfma(s, w0, c20), vfma(s, w1, c21), vfma(s, w2, c22)
        c23, c24, c25 = vfma(s, w3, c23), vfma(s, w4, c24), vfma(s, w5, c25)
        s = vsplat(a3[k])
        c30, c31, c32 = vfma(s, w0, c30), vfma(s, w1, c31), vfma(s, w2, c32)
        c33, c34, c35 = vfma(s, w3, c33), vfma(s, w4, c34), vfma(s, w5, c35)
    _store_row6(dst, r_dst, c_dst, L, c00, c01, c02, c03, c04, c05)
    _store_row6(dst, r_dst + 1, c_dst, L, c10, c11, c12, c13, c14, c15)
    _store_row6(dst, r_dst + 2, c_dst, L, c20, c21, c22, c23, c24, c25)
    _store_row6(dst, r_dst + 3, c_dst, L, c30, c31, c32, c33, c34, c35)


@njit(**_FLAGS)
def _tile3x6(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile4x6 for 3 rows."""
    L = pa.shape[1] // 3
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c03 = c04 = c05 = c10 = c11 = c12 = c13 = c14 = c15 = z
    c20 = c21 = c22 = c23 = c24 = c25 = z
    a0, a1, a2 = a[r], a[r + 1], a[r + 2]
    for k in range(pa.shape[0]):
        w0, w1, w2 = vload(pa, k, 0), vload(pa, k, L), vload(pa, k, 2 * L)
        w3, w4, w5 = vload(pb, k, 0), vload(pb, k, L), vload(pb, k, 2 * L)
        s = vsplat(a0[k])
        c00, c01, c02 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02)
        c03, c04, c05 = vfma(s, w3, c03), vfma(s, w4, c04), vfma(s, w5, c05)
        s = vsplat(a1[k])
        c10, c11, c12 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12)
        c13, c14, c15 = vfma(s, w3, c13), vfma(s, w4, c14), vfma(s, w5, c15)
        s = vsplat(a2[k])
        c20, c21, c22 = vfma(s, w0, c20), vfma(s, w1, c21), vfma(s, w2, c22)
        c23, c24, c25 = vfma(s, w3, c23), vfma(s, w4, c24), vfma(s, w5, c25)
    _store_row6(dst, r_dst, c_dst, L, c00, c01, c02, c03, c04, c05)
    _store_row6(dst, r_dst + 1, c_dst, L, c10, c11, c12, c13, c14, c15)
    _store_row6(dst, r_dst + 2, c_dst, L, c20, c21, c22, c23, c24, c25)


@njit(**_FLAGS)
def _tile2x6(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile4x6 for 2 rows."""
    L = pa.shape[1] // 3
    z = vsplat(dst.dtype.type(0))
    c00 = c01 = c02 = c03 = c04 = c05 = c10 = c11 = c12 = c13 = c14 = c15 = z
    a0, a1 = a[r], a[r + 1]
    for k in range(pa.shape[0]):
        w0, w1, w2 = vload(pa, k, 0), vload(pa, k, L), vload(pa, k, 2 * L)
        w3, w4, w5 = vload(pb, k, 0), vload(pb, k, L), vload(pb, k, 2 * L)
        s = vsplat(a0[k])
        c00, c01, c02 = vfma(s, w0, c00), vfma(s, w1, c01), vfma(s, w2, c02)
        c03, c04, c05 = vfma(s, w3, c03), vfma(s, w4, c04), vfma(s, w5, c05)
        s = vsplat(a1[k])
        c10, c11, c12 = vfma(s, w0, c10), vfma(s, w1, c11), vfma(s, w2, c12)
        c13, c14, c15 = vfma(s, w3, c13), vfma(s, w4, c14), vfma(s, w5, c15)
    _store_row6(dst, r_dst, c_dst, L, c00, c01, c02, c03, c04, c05)
    _store_row6(dst, r_dst + 1, c_dst, L, c10, c11, c12, c13, c14, c15)


@njit(**_FLAGS)
def _tile1x6(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile4x6 for 1 row."""
    L = pa.shape[1] // 3
    c0 = c1 = c2 = c3 = c4 = c5 = vsplat(dst.dtype.type(0))
    a0 = a[r]
    for k in range(pa.shape[0]):
        s = vsplat(a0[k])
        c0, c1, c2 = vfma(s, vload(pa, k, 0), c0), vfma(s, vload(pa, k, L), c1), vfma(
            s, vload(pa, k, 2 * L), c2)
        c3, c4, c5 = vfma(s, vload(pb, k, 0), c3), vfma(s, vload(pb, k, L), c4), vfma(
            s, vload(pb, k, 2 * L), c5)
    _store_row6(dst, r_dst, c_dst, L, c0, c1, c2, c3, c4, c5)


@njit(inline="always", **_FLAGS)
def _tile5_twice(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile5 on each of two panels."""
    _tile5(dst, r_dst, c_dst, a, r, pa)
    _tile5(dst, r_dst, c_dst + pa.shape[1], a, r, pb)


@njit(inline="always", **_FLAGS)
def _tile4_twice(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile4 on each of two panels: where 4 x 4 sums do not fit the registers."""
    _tile4(dst, r_dst, c_dst, a, r, pa)
    _tile4(dst, r_dst, c_dst + pa.shape[1], a, r, pb)


@njit(inline="always", **_FLAGS)
def _tile3_twice(dst, r_dst, c_dst, a, r, pa, pb):
    """_tile3 on each of two panels: where 3 x 4 sums do not fit the registers."""
    _tile3(dst, r_dst, c_dst, a, r, pa)
    _tile3(dst, r_dst, c_dst + pa.shape[1], a, r, pb)


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


@njit(inline="always", **_FLAGS)
def _add_first(row, c, width, v):
    """row[c : c + min(width, lanes)] += v's first lanes (none if width <= 0)."""
    lanes = VECTOR_BYTES // row.itemsize
    if width >= lanes:
        vstore1(row, c, vadd(vload1(row, c), v))
    elif width > 0:
        vstore1_first(row, c, vadd(vload1_first(row, c, width), v), width)


@njit(inline="always", **_FLAGS)
def _store_row3_first(row, c, L, width, v0, v1, v2):
    """_store_row3 into one row of dst, only its first ``width`` columns."""
    _add_first(row, c, width, v0)
    _add_first(row, c + L, width - L, v1)
    _add_first(row, c + 2 * L, width - 2 * L, v2)


@njit(inline="always", **_FLAGS)
def _store_row4(dst, r, c, L, v0, v1, v2, v3):
    _store_row(dst, r, c, L, v0, v1)
    _store_row(dst, r, c + 2 * L, L, v2, v3)


@njit(inline="always", **_FLAGS)
def _store_row6(dst, r, c, L, v0, v1, v2, v3, v4, v5):
    _store_row3(dst, r, c, L, v0, v1, v2)
    _store_row3(dst, r, c + 3 * L, L, v3, v4, v5)


@njit(**_FLAGS)
def gemm_panels_acc(out, a, panels, reverse=False):
    """out (R, N) += a (R, K) @ W, W packed by pack_panels into (P, K, NR);
    ``reverse``: the panels last to first (gemm_panels2_acc)."""
    if panels.shape[2] == 3 * (VECTOR_BYTES // panels.itemsize):
        gemm_panels3_acc(out, 0, out.shape[1], a, panels, reverse)
    else:
        gemm_panels2_acc(out, 0, out.shape[1], a, panels, reverse)


# Kernels call the product for the one panel width they are given, so that each
# compiles one set of tiles, not both (a set is ~2 s of a cold first call, more
# in every caller that optimizes it again). They take out whole, with the
# columns to add to, so that a slice of columns (the input projection's, per
# direction) does not make another type of out and another set of tiles.
#
# Numba compiles a function once per argument types, literals included: the
# public names are inlined wrappers that pass the callers' constants (a column
# 0, reverse False or left out) as run-time values, so that every caller
# shares one compiled kernel per dtype (each caller's own was 2-3 s of a cold
# call).
@njit(inline="always", **_FLAGS)
def gemm_panels2_acc(out, col, N, a, panels, reverse=False):
    """out[:, col:col+N] += a (R, K) @ W for two-vector panels of W (K, N).
    ``reverse``: the panels last to first (the same sums: each column's FMAs
    run in the same order either way). A recurrence alternates it step by
    step, so that each step starts on the weights the last one read last,
    still in L2, when W is larger than L2."""
    _panels2_acc(out, np.int64(col), np.int64(N), a, panels, bool(reverse))


@njit(inline="always", **_FLAGS)
def gemm_panels3_acc(out, col, N, a, panels, reverse=False):
    """gemm_panels2_acc for three-vector panels (laid out on AVX-512 only; on
    16 registers its tiles spill, slow but exact)."""
    _panels3_acc(out, np.int64(col), np.int64(N), a, panels, bool(reverse))


@njit(**_FLAGS)
def _panels2_acc(out, col, N, a, panels, reverse):
    _gemm(out, col, N, a, panels, reverse, _MAIN2_ROWS, _MAIN2, None, _FIVES_2, _TILE5_2,
          _TILE4_2, _TILE3_2, _tile2x4, _tile1x4, _TILE6_PAIR, _TILE5_PAIR, _TILE12_2)


@njit(**_FLAGS)
def _panels3_acc(out, col, N, a, panels, reverse):
    _gemm(out, col, N, a, panels, reverse, TILE_ROWS, _tile8x3, _tile8x3_first, False, _tile4x6,
          _tile4x6, _tile3x6, _tile2x6, _tile1x6, None, None, None)


def _fits(rows: int, vectors: int) -> bool:
    """Whether a rows x vectors tile's sums, its weight vectors and a broadcast
    fit the vector registers (32 on AVX-512, 16 on AVX2) without spilling."""
    return rows * vectors + vectors + 1 <= VECTOR_REGISTERS


# Two-vector tiles of 3 and 4 rows over a pair of panels need 17 and 21
# registers: on AVX2 those rows take one panel at a time (measured on Zen 4's
# AVX2 build: 0.65-0.78x for the 3-row tile over two panels; the 1- and 2-row
# ones 1.8-2.3x).
_TILE4_2 = _tile4x4 if _fits(4, 4) else _tile4_twice
_TILE3_2 = _tile3x4 if _fits(3, 4) else _tile3_twice
# The main tile of two-vector panels: 8 rows where the registers hold them
# (AVX-512), else 6 (AVX2; 6 x 2 is BLIS's Haswell shape).
_MAIN2_ROWS, _MAIN2 = (TILE_ROWS, _tile8) if _fits(TILE_ROWS, 2) else (6, _tile6)
# With 6-row main tiles, rows past them go 5 at a time where they can, and
# 6 + 4 rows as 5 + 5. With 8-row ones there is no 5-row tile: the 4-row tile
# stands in for it in the (then empty) loop, so no more code is compiled.
_FIVES_2 = _MAIN2_ROWS == 6
_TILE5_2 = _tile5_twice if _FIVES_2 else _TILE4_2
# Past 8-row main tiles, 5 or 6 rows in one pass over a pair of panels where
# their sums fit (AVX-512): as 4 + 1-2 the pair was read twice, the second
# pass with too few FMA chains (one layer, H = 512, batch 5-7 at 285-333
# against 369 GFLOP/s at batch 8).
_TAIL_PAIRS = _fits(6, 4) and not _FIVES_2  # both tiles or neither
_TILE6_PAIR = _tile6x4 if _TAIL_PAIRS else None
_TILE5_PAIR = _tile5x4 if _TAIL_PAIRS else None
# A last 8-row tile and the 4 rows past it as one 12-row tile where its sums
# fit (AVX-512): 12, 20, 28 rows of a team step (_tile12).
_TILE12_2 = _tile12 if _fits(12, 2) and _MAIN2_ROWS == TILE_ROWS else None

# Panel width, in vectors, of the large-batch layout (packing.PackedLayer's
# panels): three where there are 32 vector registers (AVX-512) to hold the
# 8 x 3 tile; its product, for the layer loop and the input projection.
GEMM_PANEL_VECTORS = 3 if VECTOR_BYTES == 64 else 2
gemm_layout_acc = gemm_panels3_acc if GEMM_PANEL_VECTORS == 3 else gemm_panels2_acc


@njit(inline="always", **_FLAGS)
def _gemm(out, col, N, a, panels, reverse, main_rows, main, main_first, fives, tile5, tile4,
          tile3, tile2, tile1, tile6_pair, tile5_pair, tile12):
    R = a.shape[0]
    P, NR = panels.shape[0], panels.shape[2]
    R8 = R - R % main_rows  # rows in main tiles
    if fives and R8 > 0 and R - R8 == 4:
        R8 -= main_rows
    # 8 + 4 rows as one 12-row tile, over whole panels only (it has no partial-panel form)
    twelve = tile12 is not None and R8 >= main_rows and R - R8 == 4 and N % NR == 0
    R_main = R8 - main_rows if twelve else R8  # rows in the main tiles' loop
    R5 = R8 + (R - R8) // 5 * 5 if fives else R8
    R4 = R5 + (R - R5) // 4 * 4
    rest = R - R4  # 0-3 rows: one more tile, one more pass over each pair of panels
    if tile6_pair is not None and (R - R5 == 5 or R - R5 == 6):  # one pass, not 4 + 1-2
        R4, rest = R5, R - R5
    # Not a literal 0 for the scratch tiles' origin: Numba compiles a function
    # once more for each literal argument it is called with (Literal[int](0)).
    origin = np.int64(0)
    n_pairs = (P + 1) // 2
    for i in range(n_pairs):
        p = 2 * (n_pairs - 1 - i) if reverse else 2 * i
        for q in range(p, min(p + 2, P)):
            n = q * NR
            if n + NR <= N:
                for r in range(0, R_main, main_rows):
                    main(out, r, col + n, a, r, panels[q])
                if twelve:
                    tile12(out, R_main, col + n, a, R_main, panels[q])
            elif main_first is not None:  # the last, partial panel: masked stores
                for r in range(0, R8, main_rows):
                    main_first(out, r, col + n, a, r, panels[q], N - n)
            elif R8 > 0:  # the last, partial panel: through a scratch tile
                tile = np.zeros((main_rows, NR), out.dtype)
                for r in range(0, R8, main_rows):
                    main(tile, origin, origin, a, r, panels[q])
                    _drain(tile, main_rows, out, r, col + n, N - n)
        if R8 == R or twelve:
            continue
        # The 1-7 rows past the main tiles, over panels p and p + 1 at once;
        # an odd last panel is paired with itself, its copy's sums dropped.
        pa, pb = panels[p], panels[min(p + 1, P - 1)]
        n = p * NR
        if n + 2 * NR <= N:
            for r in range(R8, R5, 5):
                tile5(out, r, col + n, a, r, pa, pb)
            for r in range(R5, R4, 4):
                tile4(out, r, col + n, a, r, pa, pb)
            _tile_rest(out, R4, col + n, a, R4, rest, pa, pb, tile3, tile2, tile1, tile6_pair,
                       tile5_pair)
        else:
            tile = np.zeros((6, 2 * NR), out.dtype)
            for r in range(R8, R5, 5):
                tile5(tile, origin, origin, a, r, pa, pb)
                _drain(tile, 5, out, r, col + n, N - n)
            for r in range(R5, R4, 4):
                tile4(tile, origin, origin, a, r, pa, pb)
                _drain(tile, 4, out, r, col + n, N - n)
            if rest > 0:
                _tile_rest(tile, origin, origin, a, R4, rest, pa, pb, tile3, tile2, tile1,
                           tile6_pair, tile5_pair)
                _drain(tile, rest, out, R4, col + n, N - n)


@njit(inline="always", **_FLAGS)
def _tile_rest(dst, r_dst, c_dst, a, r, rows, pa, pb, tile3, tile2, tile1, tile6_pair,
               tile5_pair):
    """dst[r_dst:r_dst+rows, c_dst:c_dst+2NR] += a[r:r+rows] @ [pa | pb], rows 0-3,
    or 5-6 where the pair tiles exist."""
    if tile6_pair is not None and rows == 6:
        tile6_pair(dst, r_dst, c_dst, a, r, pa, pb)
    elif tile5_pair is not None and rows == 5:
        tile5_pair(dst, r_dst, c_dst, a, r, pa, pb)
    elif rows == 3:
        tile3(dst, r_dst, c_dst, a, r, pa, pb)
    elif rows == 2:
        tile2(dst, r_dst, c_dst, a, r, pa, pb)
    elif rows == 1:
        tile1(dst, r_dst, c_dst, a, r, pa, pb)


@njit(inline="always", **_FLAGS)
def _drain(tile, rows, out, r, c, width):
    """out[r:r+rows, c:c+width] += tile[:rows, :width], and those tile entries back to 0.
    Whole vectors where they fit: element by element, a last partial panel's
    8 x 32 drain took longer than its tile (3-vector panels, N = 512: 188
    against 228 GFLOP/s at N = 528)."""
    lanes = VECTOR_BYTES // tile.itemsize
    whole = width - width % lanes
    zero = vsplat(tile.dtype.type(0))
    for q in range(rows):
        row = tile[q]
        for j in range(0, whole, lanes):
            vadd_store(out, r + q, c + j, vload(tile, q, j))
            vstore1(row, j, zero)
        for j in range(whole, width):
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
