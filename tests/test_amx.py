"""The dot products on AMX tiles (cpu.amx, dot_gemm's tile kernel): the
kernel with its tile operations emulated on every CPU, the instructions where
the host has them; int8 against the exact integers and the VNNI rows,
bfloat16 against NumPy and, on the instruction, against its emulation within
float32 rounding."""

import numpy as np
import pytest
from numba import njit

from numba_lstm import quantization as quant
from numba_lstm._config import without_amx
from numba_lstm.cpu.activation_grids import quantize_row8, quantize_row16, quantize_row_bf16
from numba_lstm.cpu.amx import HAS_AMX, HAS_AMX_BF16
from numba_lstm.cpu.dot_gemm import (
    DOT_NR,
    PAIRS,
    emulated_tiles_dot_acc,
    every_row_on_tiles,
    gemm_dot_acc,
    row_dot_acc,
    rows_on_tiles,
    tile_rows,
)
from numba_lstm.cpu.packing import _pack_pairs, _pack_quads

quantize = njit(lambda x, lo, hi: quantize_row16(x, lo, hi))
quantize8 = njit(lambda x, lo, hi: quantize_row8(x, lo, hi))
product = njit(lambda out, lo, hi, s, w, offset, scale: gemm_dot_acc(out, lo, hi, s, w, offset,
                                                                      scale))
high_product = njit(lambda out, lo, hi, s, w, offset, scale: gemm_dot_acc(
    out, lo, hi, s, w, offset, scale, False, True))


# Tests calling gemm_dot_acc reach the kernel tests/prefill.py's child
# compiles (~25 s cold for both formats): run last, they load it.
prefilled = pytest.mark.prefilled


def _operands(rng, R, K, N):
    x = rng.standard_normal((R, K)).astype(np.float32)
    w = rng.integers(-127, 128, (K, N)).astype(np.int8)
    w[:, 0] = 127  # a column at the extreme, with a row of x at its own
    x[0] = 1.0
    K4 = -(-K // 4) * 4
    lo, hi = np.empty((R, K4), np.uint8), np.empty((R, K4), np.uint8)
    s = np.array([quantize(x[r], lo[r], hi[r]) for r in range(R)], np.float32)
    offset = (128 * w.astype(np.int32).sum(axis=0)).astype(np.int32)
    scale = rng.uniform(0.5, 2, N).astype(np.float32)
    return lo, hi, s, _pack_quads(w), offset, scale, w


@pytest.mark.parametrize("R, K", [(16, 64), (35, 128), (48, 512), (20, 40), (28, 128)])
def test_the_emulated_tile_kernel_computes_the_integers(R, K):
    rng = np.random.default_rng(R + K)
    N = 3 * DOT_NR
    lo, hi, s, w_dot, offset, scale, w = _operands(rng, R, K, N)
    out = np.full((R, N), 0.25, np.float32)
    R16 = emulated_tiles_dot_acc(out, lo, hi, s, w_dot, offset, scale)
    # Where K fills whole 64-byte tile rows: whole 16-row tiles, and a last
    # tile of fewer rows where they are half a tile or more; none otherwise.
    whole = R - R % 16
    assert R16 == ((R if R % 16 >= 8 else whole) if K % 64 == 0 else 0) == tile_rows(R, w_dot)
    v = (hi.astype(np.int64) - 128) * 256 + lo
    expected = 0.25 + (v[:, :K] @ w.astype(np.int64)) * s[:, None].astype(np.float64) * scale
    err = np.abs(out[:R16] - expected[:R16]).max(initial=0) / np.abs(expected).max()
    assert err <= 3e-7, err
    assert np.all(out[R16:] == np.float32(0.25))  # rows past the tiles left to the caller
    # The panels last to first (odd recurrent steps): the same sums.
    backwards = np.full((R, N), 0.25, np.float32)
    emulated_tiles_dot_acc(backwards, lo, hi, s, w_dot, offset, scale, reverse=True)
    np.testing.assert_array_equal(backwards, out)


@prefilled
@pytest.mark.skipif(PAIRS, reason="the tiles' sums are vpdpbusd's; this CPU's dot is int16 pairs")
def test_tile_rows_are_bitwise_the_rows_one_at_a_time():
    # A sequence's numbers must not depend on its batch: 16-row tiles against
    # the same rows through the one-row kernel.
    rng = np.random.default_rng(5)
    R, K, N = 35, 256, 2 * DOT_NR
    lo, hi, s, w_dot, offset, scale, _ = _operands(rng, R, K, N)
    tiles = np.zeros((R, N), np.float32)
    R16 = emulated_tiles_dot_acc(tiles, lo, hi, s, w_dot, offset, scale)
    assert R16 == 32
    for r in range(R16):
        one = np.zeros((1, N), np.float32)
        assert product(one, lo[r:r + 1], hi[r:r + 1], s[r:r + 1], w_dot, offset, scale)
        np.testing.assert_array_equal(tiles[r], one[0])
    # 28 rows: a last tile of 12 rows (the instructions where the host has
    # AMX, vpdpbusd elsewhere) against the rows one at a time.
    many = np.zeros((28, N), np.float32)
    assert product(many, lo[:28], hi[:28], s[:28], w_dot, offset, scale)
    for r in range(28):
        one = np.zeros((1, N), np.float32)
        assert product(one, lo[r:r + 1], hi[r:r + 1], s[r:r + 1], w_dot, offset, scale)
        np.testing.assert_array_equal(many[r], one[0])
    # Rows on h's 8-bit grid (lo all 0): the tiles of the high bytes alone give
    # the bits of both bytes' tiles.
    x = rng.uniform(-1, 1, (R, K)).astype(np.float32)
    s8 = np.array([quantize8(x[r], lo[r], hi[r]) for r in range(R)], np.float32)
    both, high = np.zeros((R, N), np.float32), np.zeros((R, N), np.float32)
    emulated_tiles_dot_acc(both, lo, hi, s8, w_dot, offset, scale)
    emulated_tiles_dot_acc(high, lo, hi, s8, w_dot, offset, scale, high_only=True)
    assert np.abs(both[:R16]).min() > 0
    np.testing.assert_array_equal(high, both)


based_product = njit(lambda out, lo, hi, s, w, offset, scale, high, base: gemm_dot_acc(
    out, lo, hi, s, w, offset, scale, False, high, base))


@prefilled
@pytest.mark.parametrize("kind", ["int8", "bfloat16"])
@pytest.mark.parametrize("R, K, panels", [(1, 128, 3), (5, 128, 3), (20, 128, 3), (35, 128, 3),
                                          (1, 1024, 6), (9, 1024, 6), (11, 1024, 6)])
def test_a_base_gives_the_bits_of_copying_it_into_out_first(kind, R, K, panels):
    # out = base + x @ W (a step's gx rows, a projection's bias: every tile's
    # epilogue reads them, a row computed alone gets them copied first): the
    # bits of copying base into out and adding, whichever kernels the rows
    # take. K = 1024 cuts six panels into groups (dot_gemm.panel_group) and
    # leaves rows to the one-row kernels, group by group.
    rng = np.random.default_rng(R)
    N = panels * DOT_NR
    lo, hi, s, w_dot, offset, scale = _kind_operands(rng, kind, R, K, N, False)
    for base in (rng.standard_normal((R, N)).astype(np.float32),
                 rng.standard_normal((1, N)).astype(np.float32)):  # one row for every row
        for high in (False, True):
            expected = np.broadcast_to(base, (R, N)).copy()
            assert based_product(expected, lo, hi, s, w_dot, offset, scale, high, expected)
            out = np.full((R, N), np.nan, np.float32)
            assert based_product(out, lo, hi, s, w_dot, offset, scale, high, base)
            np.testing.assert_array_equal(out, expected)
            assert not np.array_equal(out, np.broadcast_to(base, (R, N)))
            # the emulated tile kernel (every CPU) reads base as it would read out
            copied = np.broadcast_to(base, (R, N)).copy()
            R16 = emulated_tiles_dot_acc(copied, lo, hi, s, w_dot, offset, scale,
                                         high_only=high)
            emulated = np.full((R, N), np.nan, np.float32)
            assert emulated_tiles_dot_acc(emulated, lo, hi, s, w_dot, offset, scale,
                                          high_only=high, base=base) == R16
            np.testing.assert_array_equal(emulated[:R16], copied[:R16])
            if kind == "int8" and not PAIRS:  # exact int32 sums, turned into gates alike
                np.testing.assert_array_equal(emulated[:R16], expected[:R16])


@pytest.mark.parametrize("kind, high_only", [("int8", True), ("bfloat16", True),
                                             ("bfloat16", False)])
@pytest.mark.parametrize("R", [32, 35, 64, 80])
def test_two_row_tiles_a_weight_tile_give_the_bits_of_one(kind, high_only, R):
    # Rows with one sum a column (high parts; bfloat16's lo and hi, summed
    # together) two row tiles at a time against one at a time, both emulated
    # (every CPU): the same sums in the same order, so the same bits; a last
    # odd or partial row tile goes alone.
    rng = np.random.default_rng(R)
    K, N = 128, 3 * DOT_NR
    lo, hi, s, w_dot, offset, scale = _kind_operands(rng, kind, R, K, N, high_only)
    assert high_only or np.any(lo)
    for reverse in (False, True):
        one, two = np.zeros((R, N), np.float32), np.zeros((R, N), np.float32)
        R16 = emulated_tiles_dot_acc(one, lo, hi, s, w_dot, offset, scale, reverse, high_only,
                                     pairs=False)
        assert emulated_tiles_dot_acc(two, lo, hi, s, w_dot, offset, scale, reverse, high_only,
                                      pairs=True) == R16 >= 32
        assert np.abs(one[:R16]).min() > 0
        np.testing.assert_array_equal(two, one)


@pytest.mark.parametrize("kind, high_only", [("int8", True), ("int8", False),
                                             ("bfloat16", True), ("bfloat16", False)])
def test_panel_groups_give_the_bits_of_one_pass(kind, high_only):
    # Every row tile over a group of panels before the next group (W past L2)
    # against the whole of W a row tile, emulated: each sum in the same order.
    rng = np.random.default_rng(7)
    R, K, N = 35, 128, 3 * DOT_NR
    lo, hi, s, w_dot, offset, scale = _kind_operands(rng, kind, R, K, N, high_only)
    for reverse in (False, True):
        whole, grouped = np.zeros((R, N), np.float32), np.zeros((R, N), np.float32)
        R16 = emulated_tiles_dot_acc(whole, lo, hi, s, w_dot, offset, scale, reverse, high_only)
        assert R16 > 16 and np.abs(whole[:R16]).min() > 0
        assert emulated_tiles_dot_acc(grouped, lo, hi, s, w_dot, offset, scale, reverse,
                                      high_only, one_panel_groups=True) == R16
        np.testing.assert_array_equal(grouped, whole)


@pytest.mark.skipif(not HAS_AMX, reason="the CPU has no AMX (or Linux did not grant it)")
@pytest.mark.parametrize("kind, high_only", [("int8", True), ("bfloat16", True),
                                             ("bfloat16", False)])
def test_two_row_tiles_on_the_instructions_give_a_row_its_own_bits(kind, high_only):
    # 40 rows with one sum a column (high parts; bfloat16's lo and hi) go two
    # row tiles at a time, then a partial one, on weights past L2; each row's
    # numbers are those it gets alone (batch invariance).
    if kind == "bfloat16" and not HAS_AMX_BF16:
        pytest.skip("the CPU has no AMX-BF16 (or Linux did not grant it)")
    rng = np.random.default_rng(2)
    R, N = 40, 64 * DOT_NR
    K = 1024 if kind == "int8" else 512  # 1024 x 2048 int8, 512 x 2048 bfloat16: 2 MB
    lo, hi, s, w_dot, offset, scale = _kind_operands(rng, kind, R, K, N, high_only)
    assert w_dot.nbytes >= 2 << 20
    run = high_product if high_only else product
    many = np.zeros((R, N), np.float32)
    assert run(many, lo, hi, s, w_dot, offset, scale)
    for r in (0, 17, 31, 32, 39):
        one = np.zeros((1, N), np.float32)
        assert run(one, lo[r:r + 1], hi[r:r + 1], s[r:r + 1], w_dot, offset, scale)
        np.testing.assert_array_equal(many[r], one[0])


@prefilled
@pytest.mark.skipif(not HAS_AMX, reason="the CPU has no AMX (or Linux did not grant it)")
@pytest.mark.parametrize("R, K", [(16, 64), (35, 128), (64, 512)])
def test_the_tile_instructions_match_their_emulation(R, K):
    rng = np.random.default_rng(R * K)
    N = 4 * DOT_NR
    lo, hi, s, w_dot, offset, scale, _ = _operands(rng, R, K, N)
    emulated = np.zeros((R, N), np.float32)
    R16 = emulated_tiles_dot_acc(emulated, lo, hi, s, w_dot, offset, scale)
    out = np.zeros((R, N), np.float32)
    assert product(out, lo, hi, s, w_dot, offset, scale)  # tiles for rows < R16
    np.testing.assert_array_equal(out[:R16], emulated[:R16])
    # h's 8-bit rows: the tiles of their high bytes alone, as the recurrence runs them.
    s8 = np.array([quantize8(x, lo[r], hi[r]) for r, x in
                   enumerate(rng.uniform(-1, 1, (R, K)).astype(np.float32))], np.float32)
    emulated[:], out[:] = 0, 0
    emulated_tiles_dot_acc(emulated, lo, hi, s8, w_dot, offset, scale)
    assert high_product(out, lo, hi, s8, w_dot, offset, scale)
    np.testing.assert_array_equal(out[:R16], emulated[:R16])


quantize_bf16 = njit(lambda x, lo, hi, split: quantize_row_bf16(x, lo, hi, split))


def _bf16_operands(rng, R, K, N, split):
    """Rows of x rounded to bfloat16 (two parts with split) and bfloat16 W
    in the pairs layout; the values each stands for (float64)."""
    x = rng.standard_normal((R, K)).astype(np.float32)
    bits = quant.bfloat16_bits((rng.standard_normal((K, N)) * 0.1).astype(np.float32))
    lo, hi = np.empty((R, 2 * K), np.uint8), np.empty((R, 2 * K), np.uint8)
    s = np.array([quantize_bf16(x[r], lo[r], hi[r], split) for r in range(R)], np.float32)
    value = lambda b: quant.bfloat16_values(b.view(np.uint16)).astype(np.float64)  # noqa: E731
    return lo, hi, s, _pack_pairs(bits), value(hi) + value(lo), value(bits)


def _kind_operands(rng, kind, R, K, N, eight_bit):
    """(lo, hi, s, w_dot, offset, scale) for int8 or bfloat16 weights: rows on
    h's grid (8 bits; bfloat16 without lo) with ``eight_bit``, else on x's."""
    if kind == "bfloat16":
        lo, hi, s, w_dot, _, _ = _bf16_operands(rng, R, K, N, not eight_bit)
        return lo, hi, s, w_dot, np.zeros(N, np.int32), np.ones(N, np.float32)
    lo, hi, s, w_dot, offset, scale, _ = _operands(rng, R, K, N)
    if eight_bit:
        x = rng.uniform(-1, 1, (R, K)).astype(np.float32)
        s = np.array([quantize8(x[r], lo[r], hi[r]) for r in range(R)], np.float32)
    return lo, hi, s, w_dot, offset, scale


@pytest.mark.parametrize("R, K", [(1, 64), (5, 64), (16, 128), (35, 512), (20, 40)])
@pytest.mark.parametrize("split", [False, True])
def test_the_emulated_bfloat16_tile_kernel_matches_numpy(R, K, split):
    # Every row on tiles where K fills them (K2 a multiple of 16): whole tiles,
    # then one of fewer rows; none where K does not.
    rng = np.random.default_rng(R + K)
    N = 3 * DOT_NR
    lo, hi, s, w_dot, x, w = _bf16_operands(rng, R, K, N, split)
    zeros, ones = np.zeros(N, np.int32), np.ones(N, np.float32)
    out = np.full((R, N), 0.25, np.float32)
    taken = emulated_tiles_dot_acc(out, lo, hi, s, w_dot, zeros, ones, high_only=not split)
    assert taken == (R if K % 32 == 0 else 0)
    if taken == 0:
        assert np.all(out == np.float32(0.25))
        return
    np.testing.assert_allclose(out, 0.25 + x @ w, rtol=0, atol=1e-5)
    backwards = np.full((R, N), 0.25, np.float32)
    emulated_tiles_dot_acc(backwards, lo, hi, s, w_dot, zeros, ones, reverse=True,
                           high_only=not split)
    np.testing.assert_array_equal(backwards, out)


@pytest.mark.parametrize("K", [40, 64, 96, 512])
def test_the_dispatch_tables_tile_test_is_the_kernels(K):
    # rows_on_tiles (Python, the dispatch table) answers as every_row_on_tiles
    # (jitted, the kernels) for bfloat16 pairs and int8 quads, on every CPU.
    rng = np.random.default_rng(K)
    pairs = _pack_pairs(rng.integers(0, 1 << 16, (K, 2 * DOT_NR)).astype(np.uint16))
    quads = _pack_quads(rng.integers(-127, 128, (K, 2 * DOT_NR)).astype(np.int8))
    for w_dot in (pairs, quads):
        assert rows_on_tiles(w_dot) == every_row_on_tiles(w_dot)
    assert rows_on_tiles(pairs) == (HAS_AMX_BF16 and K % 32 == 0)
    assert not rows_on_tiles(quads)


@prefilled
@pytest.mark.skipif(not HAS_AMX_BF16, reason="the CPU has no AMX-BF16 (or Linux did not grant it)")
@pytest.mark.parametrize("R, K", [(1, 64), (21, 512)])
def test_the_bfloat16_tile_instruction_matches_its_emulation_within_rounding(R, K):
    # tdpbf16ps rounds its running sums otherwise than one float32 add at a
    # time (measured: the bits differ in ~40% of sums), so the instruction is
    # held to the emulation by the rounding bound of K float32 adds.
    rng = np.random.default_rng(R * K)
    N = 2 * DOT_NR
    for split in (False, True):
        lo, hi, s, w_dot, x, w = _bf16_operands(rng, R, K, N, split)
        assert every_row_on_tiles(w_dot)
        zeros, ones = np.zeros(N, np.int32), np.ones(N, np.float32)
        emulated, out = np.zeros((R, N), np.float32), np.zeros((R, N), np.float32)
        emulated_tiles_dot_acc(emulated, lo, hi, s, w_dot, zeros, ones, high_only=not split)
        assert product(out, lo, hi, s, w_dot, zeros, ones)
        bound = 2 * (K + 2) * 2.0 ** -24 * (np.abs(x) @ np.abs(w))
        assert (np.abs(out - emulated) <= bound).all()
        assert np.abs(out - x @ w).max() <= 1e-5


def test_amx_is_left_out_of_the_compile_target_without_the_grant():
    features = ["+avx512f", "+amx-tile", "+amx-int8", "-amx-fp16", "+amx-bf16", "+sse2"]
    assert without_amx(features) == "+avx512f,-amx-tile,-amx-int8,-amx-fp16,-amx-bf16,+sse2"


# The callers' ways of passing the same operands: whole C rows with the flags
# left out (literal defaults), column slices ('A' layout) with run-time flags
# and a base.
_literal_call = njit(lambda out, lo, hi, s, w, offset, scale: gemm_dot_acc(
    out, lo, hi, s, w, offset, scale, False, False))
_sliced_call = njit(lambda out, lo, hi, s, w, offset, scale, flag, base: gemm_dot_acc(
    out[:, 1:], lo, hi, s, w, offset, scale, flag, flag, base[:, 1:]))


def _product_the_callers_ways(seed):
    """gemm_dot_acc on three int8 rows as its callers call it (literal flags
    into a C out; run-time flags into a column slice, with a base), the two
    results checked equal: the operands and the rows."""
    operands = _operands(np.random.default_rng(seed), 3, 64, DOT_NR)[:6]
    rows = np.zeros((3, DOT_NR), np.float32)
    assert _literal_call(rows, *operands)
    wide = np.zeros((3, DOT_NR + 1), np.float32)
    assert _sliced_call(wide, *operands, False, wide.copy())
    np.testing.assert_array_equal(wide[:, 1:], rows)
    return operands, rows


@prefilled
def test_every_caller_shares_one_compiled_dot_kernel():
    # Numba compiles a function once per argument types, layouts and literals
    # included: each way of calling was another ~12 s of a cold first call.
    from numba_lstm.cpu.dot_gemm import _gemm_dot_acc32

    before = set(_gemm_dot_acc32.signatures)
    _product_the_callers_ways(7)
    assert len(set(_gemm_dot_acc32.signatures) - before) <= 1, _gemm_dot_acc32.signatures


# The one-row product's callers: the streaming step's whole C row, and
# gemm_dot_acc's rows past its tiles and groups of four (three rows: each
# alone, or a pair and one).
_whole_row_call = njit(lambda out, lo, hi, s, w, offset, scale: row_dot_acc(
    out, w, offset, scale, s[0], lo[0], hi[0]))


@prefilled
def test_every_caller_shares_one_compiled_row_kernel():
    from numba_lstm.cpu.dot_gemm import _gemm_dot_acc32

    before = set(row_dot_acc.signatures)
    operands, rows = _product_the_callers_ways(8)
    one = np.zeros(DOT_NR, np.float32)
    _whole_row_call(one, *operands)
    np.testing.assert_array_equal(one, rows[0])
    assert np.abs(one).max() > 0
    # where the batch kernel came from the disk cache, its row calls are
    # inside it; compiled here, they and the streaming step's share one kernel
    assert len(set(row_dot_acc.signatures) - before) <= 1, row_dot_acc.signatures
    assert all(sig[0].layout == "C" for sig in row_dot_acc.signatures), row_dot_acc.signatures
    assert _gemm_dot_acc32.signatures  # the batch kernel this test meant to reach
