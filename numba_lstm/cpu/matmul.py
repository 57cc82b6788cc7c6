"""out += x @ w_t.T for row-major x and w_t: the team's projections.

A register-tiled dot-product kernel: each 4 x 4 tile of out is sixteen
reductions over k that LLVM vectorises (8 loads per 16 FMAs), which needs
``reassoc`` on these sums only; NaN and Inf still propagate. Columns are
the outer loop so that four rows of w_t stay in L1 while every row of x
passes (measured single-threaded, 200x256 @ 256x2048: 4.4 ms against 5.5 ms
rows-outer; BLAS with two threads: 1.9 ms, but its workers keep spinning
afterwards on the core the team's helper needs). At 8 rows it runs 1.5x as
fast as the axpy kernel of numba_lstm.cpu.recurrence (29 against 20 GMAC/s
at 8x256 @ 256x256); at one row and K, N <= 128 it is slower.
"""

from numba import njit

from .recurrence import _FLAGS

_DOT_FLAGS = dict(_FLAGS, fastmath={"contract", "reassoc"})


@njit(**_DOT_FLAGS)
def matmul_nt_acc(out, x, w_t):
    """out (R, G) += x (R, K) @ w_t (G, K).T, for G a multiple of 4."""
    R, K = x.shape
    G = w_t.shape[0]
    zero = out.dtype.type(0)
    R4 = R - R % 4
    for j in range(0, G, 4):
        w0, w1, w2, w3 = w_t[j], w_t[j + 1], w_t[j + 2], w_t[j + 3]
        for r in range(0, R4, 4):
            x0, x1, x2, x3 = x[r], x[r + 1], x[r + 2], x[r + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for k in range(K):
                a0, a1, a2, a3 = x0[k], x1[k], x2[k], x3[k]
                b0, b1, b2, b3 = w0[k], w1[k], w2[k], w3[k]
                s00 += a0 * b0
                s01 += a0 * b1
                s02 += a0 * b2
                s03 += a0 * b3
                s10 += a1 * b0
                s11 += a1 * b1
                s12 += a1 * b2
                s13 += a1 * b3
                s20 += a2 * b0
                s21 += a2 * b1
                s22 += a2 * b2
                s23 += a2 * b3
                s30 += a3 * b0
                s31 += a3 * b1
                s32 += a3 * b2
                s33 += a3 * b3
            _add4(out[r], j, s00, s01, s02, s03)
            _add4(out[r + 1], j, s10, s11, s12, s13)
            _add4(out[r + 2], j, s20, s21, s22, s23)
            _add4(out[r + 3], j, s30, s31, s32, s33)
        for r in range(R4, R):
            xr = x[r]
            s0 = s1 = s2 = s3 = zero
            for k in range(K):
                a = xr[k]
                s0 += a * w0[k]
                s1 += a * w1[k]
                s2 += a * w2[k]
                s3 += a * w3[k]
            _add4(out[r], j, s0, s1, s2, s3)


@njit(inline="always", **_DOT_FLAGS)
def _add4(row, j, s0, s1, s2, s3):
    row[j] += s0
    row[j + 1] += s1
    row[j + 2] += s2
    row[j + 3] += s3
