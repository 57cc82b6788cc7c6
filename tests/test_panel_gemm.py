"""The register-tiled GEMM (numba_lstm.cpu.panel_gemm, cpu.simd) and the kernels
built on it (cpu.projection, cpu.layer's panel steps) against NumPy and the reference."""

import os
import platform
import threading

import numba
import numpy as np
import pytest
from conftest import assert_close
from numba import njit
from test_kernels import check_layer

from numba_lstm.cpu.packing import GEMM_PANEL_VECTORS
from numba_lstm.cpu.panel_gemm import (
    TILE_ROWS,
    _tile8,
    _tile8x3,
    chunk_start,
    gemm_panels2_acc,
    gemm_panels3_acc,
    gemm_panels_acc,
    pack_panels,
    panel_width,
)
from numba_lstm.cpu.projection import LINE, input_projection
from numba_lstm.cpu.simd import VECTOR_BYTES

# The callers' ways of passing a product's scalars: literal constants, a
# reverse left out, run-time values.
_literal_calls = njit(lambda out, a, panels: (gemm_panels2_acc(out, 0, out.shape[1], a, panels),
                                              gemm_panels2_acc(out, 0, 2, a, panels, False)))
_runtime_call = njit(lambda out, col, n, a, panels, reverse: gemm_panels2_acc(
    out, col, n, a, panels, reverse))


def test_every_caller_shares_one_compiled_panel_kernel():
    # Numba compiles a function once per argument types, literals included:
    # each way of calling was another 2-3 s of a cold first call.
    from numba_lstm.cpu.panel_gemm import _panels2_acc

    rng = np.random.default_rng(3)
    a, w = rng.standard_normal((3, 5)), rng.standard_normal((5, 9))
    panels = pack_panels(w, 2)
    before = set(_panels2_acc.signatures)
    out = np.zeros((3, 9))
    _literal_calls(out, a, panels)
    _runtime_call(out, 0, 9, a, panels, True)
    expected = a @ w
    expected[:, :2] *= 3
    expected[:, 2:] *= 2
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert len(set(_panels2_acc.signatures) - before) <= 1, _panels2_acc.signatures


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vectors", [2, 3])
def test_pack_panels_layout(dtype, vectors):
    NR = panel_width(dtype, vectors)
    assert NR == vectors * VECTOR_BYTES // np.dtype(dtype).itemsize
    w = np.arange(5 * (NR + 3), dtype=dtype).reshape(5, NR + 3)
    panels = pack_panels(w, vectors)
    assert panels.shape == (2, 5, NR) and panels.flags.c_contiguous
    np.testing.assert_array_equal(panels[0], w[:, :NR])
    np.testing.assert_array_equal(panels[1, :, :3], w[:, NR:])
    assert not panels[1, :, 3:].any()  # zero padding past column N


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vectors", [2, 3])
@pytest.mark.parametrize("R,K,N", [
    (1, 1, 1),      # one leftover row, one partial panel
    (8, 5, 32),     # one full tile
    (13, 37, 180),  # a tile + 5 leftover rows, partial last panel
    (24, 64, 64),   # whole tiles, whole panels
    (17, 130, 100),
    (16, 9, 96),    # whole tiles, whole panels of either width
    (2, 7, 40),     # one 2-row tile
    (3, 7, 40),     # one 3-row tile
    (7, 11, 100),   # 4 + 3 rows, partial last panel
    (14, 5, 64),    # an 8-row, a 4-row and a 2-row tile
    (11, 21, 70),   # 8 + 3 rows (4 + 3 + 4 on AVX2), partial last panel
    (3, 4, 16),     # 3 rows, one partial panel only
    # Rows 1-7 past the 8-row tiles take panels in pairs: an odd last panel,
    # whole or partial, pairs with itself; a pair whose second panel is partial
    # goes through the scratch tile.
    (4, 6, 96),     # float32 two-vector: 3 whole panels (odd); three-vector: one whole pair
    (6, 9, 150),    # 6 rows in one pass (AVX-512's two-vector pairs), else 4 + 2;
                    # an odd partial last panel, or a partial pair
    (1, 40, 300),
    (2, 33, 200),
    (5, 19, 130),   # 5 rows in one pass, or 4 + 1
    (13, 11, 96),   # 8 + 5 (three whole two-vector panels: an odd one)
    (14, 7, 150),   # 8 + 6, through the scratch tile for the partial pair
    (12, 17, 250),  # 8 + 4 rows (a partial last panel)
    (12, 17, 96),   # whole two-vector panels: one 12-row tile (AVX-512), or 6 + 6
    (20, 9, 64),    # 8 + 12, or 18 + 2
    (15, 8, 170),   # 8 + 4 + 3 rows
    # With 16 registers (AVX2) the main tile has 6 rows, and rows past it go
    # 5 at a time where they can: 6 + 4 rows as 5 + 5.
    (10, 9, 150),   # 8 + 2, or 5 + 5 through the scratch tile
    (22, 13, 70),   # 16 + 4 + 2, or 12 + 5 + 5
    (23, 6, 48),    # 16 + 4 + 3, or 18 + 5
    (9, 14, 40),    # 8 + 1, or 6 + 3
])
def test_gemm_panels_acc_matches_numpy(dtype, vectors, R, K, N):
    rng = np.random.default_rng(R * K + N)
    a = rng.standard_normal((R, K)).astype(dtype)
    w = rng.standard_normal((K, N)).astype(dtype)
    out = rng.standard_normal((R, N)).astype(dtype)
    expected = out.astype(np.float64) + a.astype(np.float64) @ w.astype(np.float64)
    backwards = out.copy()
    gemm_panels_acc(out, a, pack_panels(w, vectors))
    # Sums of K products, each rounded once: a few ulps of sqrt(K)-sized values.
    np.testing.assert_allclose(out, expected, rtol=0, atol=K * np.finfo(dtype).eps * 8)
    # Panels last to first (a recurrence's odd steps): the same sums, bit for bit.
    gemm_panels_acc(backwards, a, pack_panels(w, vectors), True)
    np.testing.assert_array_equal(backwards, out)


@pytest.mark.parametrize("vectors", [2, 3])
@pytest.mark.parametrize("N", [64, 96, 100])
def test_a_row_gets_the_same_bits_from_every_tile(vectors, N):
    # A row's sums run k in order whichever tile holds it (8 rows, 12, the
    # 1-6-row tiles over panel pairs), so a sequence's numbers do not depend
    # on how many rows share its step.
    rng = np.random.default_rng(N + vectors)
    K = 29
    w = rng.standard_normal((K, N)).astype(np.float32)
    panels = pack_panels(w, vectors)
    a = rng.standard_normal((30, K)).astype(np.float32)
    base = rng.standard_normal((30, N)).astype(np.float32)
    alone = base.copy()
    for r in range(30):
        gemm_panels_acc(alone[r:r + 1], a[r:r + 1], panels)
    for R in (4, 8, 12, 13, 20, 28, 30):
        out = base[:R].copy()
        gemm_panels_acc(out, a[:R], panels)
        np.testing.assert_array_equal(out, alone[:R], err_msg=f"{R} rows")


@pytest.mark.parametrize("vectors", [2, 3])
def test_gemm_panels_acc_propagates_nan_and_inf(vectors):
    a = np.zeros((9, 4))
    a[2, 1], a[8, 3] = np.nan, np.inf
    out = np.zeros((9, 3))
    gemm_panels_acc(out, a, pack_panels(np.ones((4, 3)), vectors))
    assert np.isnan(out[2]).all() and np.isposinf(out[8]).all()
    assert not out[[0, 1, 3, 4, 5, 6, 7]].any()


@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 19, 64, 257])
@pytest.mark.parametrize("n_chunks", [1, 2, 3])
def test_chunk_start_covers_rows_in_tile_multiples(n, n_chunks):
    bounds = [chunk_start(c, n_chunks, n) for c in range(n_chunks + 1)]
    assert bounds[0] == 0 and bounds[-1] == n
    assert all(lo <= hi for lo, hi in zip(bounds[:-1], bounds[1:], strict=True))
    if n >= TILE_ROWS * n_chunks:  # then only the last chunk has leftover rows
        assert all(b % TILE_ROWS == 0 for b in bounds[:-1])
        assert all(hi - lo >= TILE_ROWS for lo, hi in zip(bounds[:-1], bounds[1:], strict=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("callers", [1, 2])
@pytest.mark.parametrize("D", [1, 2])
def test_input_projection_matches_numpy(dtype, callers, D):
    # 150 rows: 2 blocks + a partial one; 52 columns per direction: a partial
    # panel that must not spill into the next direction's columns. Two
    # threads calling it on the same counters share the blocks, as a team
    # job's threads do.
    rng = np.random.default_rng(callers + D)
    x = rng.standard_normal((150, 11)).astype(dtype)
    w = rng.standard_normal((11, D * 52)).astype(dtype)
    bias = rng.standard_normal(D * 52).astype(dtype)
    gx = np.full((150, D * 52), np.nan, dtype)
    panels = np.stack([pack_panels(w[:, d * 52:(d + 1) * 52], GEMM_PANEL_VECTORS)
                       for d in range(D)])
    counters = np.zeros(2 * LINE, np.int64)
    threads = [threading.Thread(target=input_projection,
                                args=(x, panels, bias, gx, None, counters))  # float weights
               for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counters[LINE] == 3  # blocks done, each once
    assert_close(gx, x.astype(np.float64) @ w + bias, dtype, "gx")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("B,H", [(16, 8), (27, 45), (40, 16)])
def test_large_batch_layer_matches_reference(dtype, D, fused, B, H):
    # The panel steps (cpu.layer): full 8-row tiles, leftover rows (27 = 8 + 8
    # + 11 in two chunks), and 4H = 180 a partial last panel; the input is
    # projected inside the step loop (fused) or beforehand.
    check_layer(np.random.default_rng(B + H + D), 7, B, 13, H, 0, D, True, dtype, True,
                "panels_fused" if fused else "panels")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vectors", [2, 3])
@pytest.mark.parametrize("N", [5, 28, 40, 100, 120, 150])
def test_a_partial_last_panel_writes_only_its_columns(dtype, vectors, N):
    # The columns past N of out's rows (another slice's, e.g. the other
    # direction's gates) are left alone: the partial panel's 8-row tiles
    # store by masks (three-vector panels) or through a scratch tile.
    rng = np.random.default_rng(N)
    R, K, extra = 19, 11, 37
    a = rng.standard_normal((R, K)).astype(dtype)
    w = rng.standard_normal((K, N)).astype(dtype)
    # -0.0 past N: adding the zero-padded columns' +0.0 sums would turn it to +0.0.
    out = np.full((R, N + extra), -0.0, dtype)
    expected = a.astype(np.float64) @ w.astype(np.float64)
    gemm = gemm_panels3_acc if vectors == 3 else gemm_panels2_acc
    gemm(out, 0, N, a, pack_panels(w, vectors))
    np.testing.assert_allclose(out[:, :N], expected, rtol=0, atol=K * np.finfo(dtype).eps * 8)
    assert np.all(np.signbit(out[:, N:]))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
@pytest.mark.skipif(numba.config.CPU_NAME not in (None, "host") and not numba.config.CPU_FEATURES,
                    reason="a named portable CPU target: its vector width is not the host's")
@pytest.mark.parametrize("tile,vectors", [(_tile8, 2), (_tile8x3, 3)])
def test_micro_kernel_is_packed_fmas_on_full_vectors(tile, vectors):
    """The point of cpu.simd: the tile's FMAs are full-width vector FMAs (zmm on
    AVX-512), not the 256-bit code LLVM's vectoriser picks there, nor scalar.
    Register allocation (spills or none) is the host LLVM's choice and is
    reported by docs/performance.md's measurements, not asserted here."""
    register = "zmm" if VECTOR_BYTES == 64 else "ymm"
    tile8 = njit(nogil=True, error_model="numpy")(tile.py_func)  # cached code has no asm
    NR = panel_width(np.float32, vectors)
    out = np.zeros((8, NR), np.float32)
    tile8(out, 0, 0, np.ones((8, 3), np.float32), 0, np.ones((3, NR), np.float32))
    asm = tile8.inspect_asm(tile8.signatures[0])
    # The kernel alone: the CPython wrapper that follows it has vector code of its own.
    kernel = asm.split("_ZN7cpython", 1)[0]
    fmas = [line for line in kernel.splitlines() if "vfmadd" in line]
    assert len(fmas) >= 8 * vectors and all(register in line for line in fmas), fmas[:4]
    assert np.all(out == 3)


_AVX2_FEATURES = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,"
                  "+movbe,+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")

_AVX2_CHECK = """
import numpy as np
from numba_lstm.cpu.panel_gemm import _MAIN2_ROWS, gemm_panels_acc, pack_panels
from numba_lstm.cpu.simd import VECTOR_BYTES
assert (VECTOR_BYTES, _MAIN2_ROWS) == (32, 6), (VECTOR_BYTES, _MAIN2_ROWS)
rng = np.random.default_rng(0)
for R in range(1, 25):
    for K, N in ((7, 40), (19, 130)):  # 40, 130: partial last panel, odd or paired
        a = rng.standard_normal((R, K)).astype(np.float32)
        w = rng.standard_normal((K, N)).astype(np.float32)
        out = rng.standard_normal((R, N)).astype(np.float32)
        expected = out.astype(np.float64) + a.astype(np.float64) @ w.astype(np.float64)
        gemm_panels_acc(out, a, pack_panels(w, 2))
        err = np.abs(out - expected).max()
        assert err <= K * np.finfo(np.float32).eps * 8, (R, K, N, err)

# The int8 dot kernels on int16 pairs (AVX2's micro-kernel): one row of x
# (row_dot_acc, the batch-1 product) and 2-7 rows (gemm_dot_acc: two-row
# tiles, an odd row alone) on their
# int16 grids times int8 W, against the same integers in int64; K = 1024,
# the longest the pairs' int32 sums hold, with both operands at their extremes.
from numba_lstm.cpu.activation_grids import quantize_row16, quantize_rows
from numba_lstm.cpu.dot_gemm import DOT_MAX_K, DOT_NR, PAIRS, gemm_dot_acc
from numba_lstm.cpu.dot_gemm import row_dot_acc
from numba_lstm.cpu.packing import _pack_quads
from numba import njit
assert PAIRS and DOT_MAX_K == 1024
quantize = njit(lambda x, lo, hi: quantize_row16(x, lo, hi))
product = njit(lambda out, lo, hi, s, w, offset, scale: gemm_dot_acc(out, lo, hi, s, w, offset,
                                                                      scale))
based = njit(lambda out, lo, hi, s, w, offset, scale, base: gemm_dot_acc(
    out, lo, hi, s, w, offset, scale, False, False, base))
for R, K in [(1, 37), (1, 1024), (2, 37), (3, 37), (3, 1024), (4, 37), (5, 37), (6, 37), (7, 37)]:
    N = 3 * DOT_NR
    x = rng.standard_normal((R, K)).astype(np.float32)
    w = rng.integers(-127, 128, (K, N)).astype(np.int8)
    if K == DOT_MAX_K:
        x[0] = 1.0
        w[:, 0] = 127
    scale = rng.uniform(0.5, 2, N).astype(np.float32)
    K4 = -(-K // 4) * 4
    lo, hi = np.empty((R, K4), np.uint8), np.empty((R, K4), np.uint8)
    s = np.array([quantize(x[r], lo[r], hi[r]) for r in range(R)], np.float32)
    out = np.zeros((R, N), np.float32)
    offset = (128 * w.astype(np.int32).sum(axis=0)).astype(np.int32)
    if R == 1:
        row_dot_acc(out[0], _pack_quads(w), offset, scale, s[0], lo[0], hi[0])
    else:
        assert product(out, lo, hi, s, _pack_quads(w), offset, scale)
        # out = base + x @ W, base read by the tiles' epilogue or copied for a
        # row alone: the bits of adding the product to base
        for base in (rng.standard_normal((R, N)).astype(np.float32),
                     rng.standard_normal((1, N)).astype(np.float32)):
            on_base = np.full((R, N), np.nan, np.float32)
            assert based(on_base, lo, hi, s, _pack_quads(w), offset, scale, base)
            np.testing.assert_array_equal(on_base, base + out)
    v = (hi.astype(np.int64) - 128) * 256 + lo
    expected = (v[:, :K] @ w.astype(np.int64)) * s[:, None].astype(np.float64) * scale
    err = np.abs(out - expected).max() / np.abs(expected).max()
    assert err <= 3e-7, (R, K, err)
# A block's rows quantized in 8-lane vectors (quantize_rows): each row's own bytes.
block = njit(lambda x, lo, hi, s, w: quantize_rows(x, lo, hi, s, (w,), False))
x = rng.standard_normal((3, 37)).astype(np.float32)
lo, hi, s = np.empty((3, 44), np.uint8), np.empty((3, 44), np.uint8), np.empty(3, np.float32)
assert block(x, lo, hi, s, np.zeros((1, 1, 1, 1), np.int8)) == 0
for r in range(3):
    lo1, hi1 = np.empty(44, np.uint8), np.empty(44, np.uint8)
    assert quantize(x[r], lo1, hi1) == s[r]
    assert (lo1 == lo[r]).all() and (hi1 == hi[r]).all()
print("ok")
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 target")
def test_avx2_kernels_match_numpy(tmp_path):
    """The 16-register tiles (6-row main tile, 5-row tails) and the int8 dot's
    int16-pairs kernel on every AVX2 host, AVX-512 ones included: compiled for
    an AVX2 target in a process of its own."""
    import subprocess
    import sys

    import llvmlite.binding as llvm

    if "+avx2" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("the host has no AVX2")
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=_AVX2_FEATURES,
               NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", _AVX2_CHECK], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
