"""AMX tiles for the dot products of quantized weights (cpu.dot_gemm).

An AMX core holds eight tile registers of up to 16 rows x 64 bytes; tdpbusd
adds a 16 x 64 u8 tile times a 16 x 64 s8 tile (16 rows of k4, each 16
columns x 4 bytes: exactly a panel of the int8 dot layout) into a 16 x 16
int32 tile: 16,384 multiply-adds an instruction, 256 times vpdpbusd's. The
sums are the same exact int32s as vpdpbusd's, so results are bitwise those
of the VNNI kernel. tdpbf16ps does the same for bfloat16 pairs (16 rows of
k2, each 16 columns x 2 bfloat16: a panel of the bfloat16 dot layout) into
float32 sums, 8,192 multiply-adds an instruction; its sums round otherwise
than vdpbf16ps's chains, so where the CPU has it every bfloat16 row takes
the tiles (cpu.dot_gemm).

Numba has no names for these instructions; each is an LLVM intrinsic taking
its tile registers as immediates (literal ints here). A tile instruction
faults unless the tile configuration is loaded (ldtilecfg) on that thread
and the process was granted the tile state (_config.request_amx).

Tests run the same kernel on any CPU with the tile operations emulated
(EMULATED): plain loops over a (9, 16, 64) byte array standing in for the
registers (the ninth holds the rows each tile was configured with), which
the intrinsics ignore.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .._config import AMX_GRANTED
from .recurrence import _FLAGS
from .simd import _has_feature

# Tile instructions compile only for a target with them, which _config leaves
# out where Linux did not grant the tile state.
HAS_AMX = AMX_GRANTED and _has_feature("amx-tile") and _has_feature("amx-int8")
HAS_AMX_BF16 = HAS_AMX and _has_feature("amx-bf16")
AMX_ROWS = 16  # rows of a tile (not panel_gemm's 8-row register tiles)
AMX_ROW_BYTES = 64  # bytes in a row of a tile
_I8, _I64 = ir.IntType(8), ir.IntType(64)


def _call(builder, name, arg_types, args):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), arg_types), name)
    builder.call(fn, args)


def _literal_tiles(*tiles):
    return all(isinstance(t, types.IntegerLiteral) for t in tiles)


@intrinsic
def _tile_config(typingctx, tiles, cfg):
    """ldtilecfg from cfg, 64 bytes (tile_config_bytes)."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[1])(context, builder, args[1]).data
        _call(builder, "llvm.x86.ldtilecfg", [_I8.as_pointer()],
              [builder.bitcast(data, _I8.as_pointer())])
        return context.get_dummy_value()
    return types.none(tiles, cfg), codegen


@intrinsic
def _tile_release(typingctx, tiles):
    def codegen(context, builder, sig, args):
        _call(builder, "llvm.x86.tilerelease", [], [])
        return context.get_dummy_value()
    return types.none(tiles), codegen


@intrinsic
def _tile_zero(typingctx, tiles, t):
    if not _literal_tiles(t):
        return None

    def codegen(context, builder, sig, args):
        _call(builder, "llvm.x86.tilezero", [_I8], [ir.Constant(_I8, t.literal_value)])
        return context.get_dummy_value()
    return types.none(tiles, t), codegen


def _tile_memory(name):
    @intrinsic
    def op(typingctx, tiles, t, arr, offset, stride):
        """Tile t and arr's bytes from byte ``offset``, rows ``stride`` bytes apart."""
        if not _literal_tiles(t):
            return None

        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[2])(context, builder, args[2]).data
            base = builder.gep(builder.bitcast(data, _I8.as_pointer()), [args[3]])
            _call(builder, name, [_I8, _I8.as_pointer(), _I64],
                  [ir.Constant(_I8, t.literal_value), base, args[4]])
            return context.get_dummy_value()
        return types.none(tiles, t, arr, types.int64, types.int64), codegen
    return op


_tile_load = _tile_memory("llvm.x86.tileloadd64")
# tileloaddt1: the same load, hinting that the lines need not stay in L1. For
# weights streamed once a step: the rows' tiles, reloaded for every panel,
# keep L1 (docs/performance.md: 1.2-1.5x a bfloat16 step).
_tile_load_once = _tile_memory("llvm.x86.tileloaddt164")
_tile_store = _tile_memory("llvm.x86.tilestored64")


@intrinsic
def _tile_dot(typingctx, tiles, c, a, b, weights):
    """Tile c += tile a @ tile b, by the stored weights' kind: int8 (weights
    int8) by tdpbusd, c int32, a u8, b s8 rows of k4; bfloat16 pairs (weights
    uint8) by tdpbf16ps, c float32, b rows of k2."""
    if not _literal_tiles(c, a, b):
        return None
    bf16 = weights.dtype == types.uint8

    def codegen(context, builder, sig, args):
        # bfloat16 without AMX-BF16: never reached (dot_gemm), and not an
        # instruction of the target
        if not bf16 or HAS_AMX_BF16:
            _call(builder, "llvm.x86.tdpbf16ps" if bf16 else "llvm.x86.tdpbusd",
                  [_I8, _I8, _I8], [ir.Constant(_I8, v.literal_value) for v in (c, a, b)])
        return context.get_dummy_value()
    return types.none(tiles, c, a, b, weights), codegen


# -- the emulation: the registers are tiles[:8] (8, 16, 64) uint8; tiles[8, 0, t]
# the rows tile t was configured with ------------------------------------------------
@njit(**_FLAGS)
def _emulated_config(tiles, cfg):
    for t in range(8):
        tiles[8, 0, t] = cfg[48 + t]


@njit(**_FLAGS)
def _emulated_release(tiles):
    tiles[:] = 0


@njit(**_FLAGS)
def _emulated_zero(tiles, t):
    tiles[t] = 0


@njit(**_FLAGS)
def _emulated_load(tiles, t, arr, offset, stride):
    data = arr.reshape(-1).view(np.uint8)
    for r in range(tiles[8, 0, t]):
        tiles[t, r] = data[offset + r * stride:offset + r * stride + AMX_ROW_BYTES]


@njit(**_FLAGS)
def _emulated_store(tiles, t, arr, offset, stride):
    data = arr.reshape(-1).view(np.uint8)
    for r in range(tiles[8, 0, t]):
        data[offset + r * stride:offset + r * stride + AMX_ROW_BYTES] = tiles[t, r]


@njit(**_FLAGS)
def _emulated_dpbf16ps(tiles, c, a, b):
    """Each pair's products added in k order, even then odd, each rounded to
    float32 (Intel's definition; the instruction itself rounds otherwise, so
    tests compare it with tolerance, docs/quantization.md)."""
    sums = tiles[c].view(np.float32)  # (16, 16)
    rows = np.empty((AMX_ROWS, AMX_ROW_BYTES // 2), np.uint32)  # (16, 32) a's bfloat16
    rows[:] = tiles[a].view(np.uint16)
    weights = np.empty((AMX_ROWS, AMX_ROW_BYTES // 2), np.uint32)  # (16 k2, 16 x 2) b's
    weights[:] = tiles[b].view(np.uint16)
    shift = np.uint32(16)  # a uint32 shift: an int64 one would widen the arrays
    rows_f, weights_f = (rows << shift).view(np.float32), (weights << shift).view(np.float32)
    for m in range(tiles[8, 0, c]):
        for n in range(AMX_ROW_BYTES // 4):
            total = sums[m, n]
            for k2 in range(AMX_ROWS):
                total += rows_f[m, 2 * k2] * weights_f[k2, 2 * n]
                total += rows_f[m, 2 * k2 + 1] * weights_f[k2, 2 * n + 1]
            sums[m, n] = total


def _emulated_dot(tiles, c, a, b, weights):
    """_tile_dot's emulation: _emulated_dpbf16ps or _emulated_dpbusd by the weights' kind."""


@overload(_emulated_dot, jit_options=_FLAGS)
def _emulated_dot_impl(tiles, c, a, b, weights):
    if weights.dtype == types.uint8:
        return lambda tiles, c, a, b, weights: _emulated_dpbf16ps(tiles, c, a, b)
    return lambda tiles, c, a, b, weights: _emulated_dpbusd(tiles, c, a, b)


@njit(**_FLAGS)
def _emulated_dpbusd(tiles, c, a, b):
    sums = tiles[c].view(np.int32)  # (16, 16)
    weights = tiles[b].view(np.int8)  # (16 k4, 64)
    for m in range(tiles[8, 0, c]):
        for n in range(AMX_ROW_BYTES // 4):
            total = np.int64(sums[m, n])
            for k4 in range(AMX_ROWS):
                for i in range(4):
                    total += np.int64(tiles[a, m, 4 * k4 + i]) * np.int64(weights[k4, 4 * n + i])
            sums[m, n] = np.int32((total + 2**31) % 2**32 - 2**31)  # int32 wraps, as tdpbusd


# The names a tile kernel is written in (dot_gemm), and their emulation.
tile_config, tile_release, tile_zero = _tile_config, _tile_release, _tile_zero
tile_load, tile_store, tile_dot = _tile_load, _tile_store, _tile_dot
tile_load_once = _tile_load_once
EMULATED = dict(tile_config=_emulated_config, tile_release=_emulated_release,
                tile_zero=_emulated_zero, tile_load=_emulated_load,
                tile_load_once=_emulated_load, tile_store=_emulated_store,
                tile_dot=_emulated_dot)
EMULATED_TILES = 9  # the emulation's registers, its configured rows last


@njit(inline="always", **_FLAGS)
def tile_config_bytes(rows):
    """ldtilecfg's 64 bytes: palette 1, eight tiles of 64-byte rows; the
    sums (0-3) and the rows' tiles (4, 5) ``rows`` rows, the weights' (6, 7)
    16 (rows of k4, or k2)."""
    cfg = np.zeros(64, np.uint8)
    cfg[0] = 1
    for t in range(8):
        cfg[16 + 2 * t] = AMX_ROW_BYTES  # bytes per row, little-endian uint16
        cfg[48 + t] = AMX_ROWS if t >= 6 else rows
    return cfg
