"""A SIMD vector as a Numba value, for register-tiled kernels (cpu.panel_gemm).

LLVM's auto-vectoriser uses 256-bit vectors on AVX-512 CPUs ("prefer-256-bit"
tuning), and it will not keep a tile of output sums in registers across a loop
over k. Kernels written with these explicit vectors get both: one ``Vec`` is
one register (zmm on AVX-512), and a tile of them stays in registers.

``Vec(dtype)`` holds VECTOR_BYTES // itemsize lanes. Only the operations the
GEMM micro-kernel and the cell update need: loads and stores of a row
segment, broadcast, arithmetic, fused multiply-add, and the clamp and
saturation of the rational tanh (cpu.activations). The FMA is exact IEEE fma, so
NaN and Inf propagate as in a scalar loop.
"""

import operator

import llvmlite.binding as llvm
from llvmlite import ir
from llvmlite.ir.types import _BaseFloatType
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from .._config import target_features


def _has_feature(name: str) -> bool:
    """Whether the CPU Numba compiles for has ``name`` (an LLVM feature, e.g.
    "avx512vnni"; _config.target_features), so a kernel choice follows the
    compile target."""
    return "+" + name in target_features()


# Bytes per vector register: 64 with AVX-512, else 32 (AVX/AVX2; a named
# portable target without features is not assumed to have AVX-512; on
# narrower CPUs LLVM splits the vector, still correct).
VECTOR_BYTES = 64 if _has_feature("avx512f") else 32
# Vector registers the compiler can allocate: 32 zmm with AVX-512, 16 ymm with AVX2.
VECTOR_REGISTERS = 32 if VECTOR_BYTES == 64 else 16


# AVX512-VNNI's vpdpbusd: 64 int8 multiply-adds an instruction (cpu.row_step).
HAS_VNNI = VECTOR_BYTES == 64 and _has_feature("avx512vnni")
# AVX512_BF16's vdpbf16ps: 32 bfloat16 multiply-adds an instruction, twice a
# float32 FMA's (dot_gemm).
HAS_BF16 = VECTOR_BYTES == 64 and _has_feature("avx512bf16")


class Vec(types.Type):
    """A SIMD register of ``dtype`` lanes."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vec({dtype} x {self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        lane = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(lane, fe_type.lanes))


def _vector_pointer(context, builder, sig, args):
    """Pointer to arr[index] as a pointer to a vector (args: arr, then one index
    per axis, then any others)."""
    arr_type = sig.args[0]
    arr = context.make_array(arr_type)(context, builder, args[0])
    n = arr_type.ndim
    index = [context.cast(builder, v, t, types.intp)
             for v, t in zip(args[1:1 + n], sig.args[1:1 + n], strict=True)]
    ptr = cgutils.get_item_pointer(context, builder, arr_type, arr, index, wraparound=False)
    vec = context.get_value_type(Vec(arr_type.dtype))
    return builder.bitcast(ptr, vec.as_pointer()), arr_type.dtype.bitwidth // 8


def _load(context, builder, sig, args):
    ptr, align = _vector_pointer(context, builder, sig, args)
    return builder.load(ptr, align=align)


@intrinsic
def vload(typingctx, arr, i, j):
    """arr[i, j : j + lanes] as a Vec (arr 2-D, its last axis contiguous)."""
    return Vec(arr.dtype)(arr, i, j), _load


@intrinsic
def vload1(typingctx, arr, j):
    """arr[j : j + lanes] as a Vec (arr 1-D, contiguous)."""
    return Vec(arr.dtype)(arr, j), _load


F32 = Vec(types.float32)


@intrinsic
def vload_widened(typingctx, arr, i, j):
    """arr[i, j : j + lanes] of a reduced-precision weight (int8, or bfloat16 bits
    in uint16) as a float32 Vec: the widening load of quantized kernels. int8
    converts exactly (the scale is applied to the sums after); bfloat16 is the
    upper half of a float32, so its bits shift into place. One vpmovsxbd +
    vcvtdq2ps, or vpmovzxwd + vpslld, per vector on x86."""
    if arr.dtype not in (types.int8, types.uint16):
        return None

    def codegen(context, builder, sig, args):
        arr_type = sig.args[0]
        arr_value = context.make_array(arr_type)(context, builder, args[0])
        index = [context.cast(builder, v, t, types.intp)
                 for v, t in zip(args[1:], sig.args[1:], strict=True)]
        ptr = cgutils.get_item_pointer(context, builder, arr_type, arr_value, index,
                                       wraparound=False)
        lanes = F32.lanes
        narrow = ir.VectorType(ir.IntType(arr_type.dtype.bitwidth), lanes)
        value = builder.load(builder.bitcast(ptr, narrow.as_pointer()),
                             align=arr_type.dtype.bitwidth // 8)
        wide = ir.VectorType(ir.IntType(32), lanes)
        floats = ir.VectorType(ir.FloatType(), lanes)
        if arr_type.dtype == types.int8:
            return builder.sitofp(builder.sext(value, wide), floats)
        shifted = builder.shl(builder.zext(value, wide), ir.Constant(wide, [16] * lanes))
        return builder.bitcast(shifted, floats)
    return F32(arr, i, j), codegen


def _bf16_halves(builder, v):
    """The even and the odd bfloat16 of each 32-bit lane of v, as float32 Vecs
    (exactly: a bfloat16 is a float32's upper half)."""
    n = v.type.count
    words = ir.VectorType(ir.IntType(32), n)
    floats = ir.VectorType(ir.FloatType(), n)
    even = builder.bitcast(builder.shl(v, ir.Constant(words, [16] * n)), floats)
    odd = builder.bitcast(builder.and_(v, ir.Constant(words, [-65536] * n)), floats)
    return even, odd


@intrinsic
def vload_bf16_halves(typingctx, arr, i, j):
    """arr[i, j : j + 2 * lanes] (bfloat16 bits in uint16, the two vectors'
    columns interleaved: first, second, first, ...) as two float32 Vecs: each
    32-bit lane's low half shifted up, its high half masked. Two instructions
    for two vectors, where widening each costs two (vpmovzxwd + vpslld)."""
    if arr.dtype != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig, args, 2)
        words = ir.VectorType(ir.IntType(32), F32.lanes)
        value = builder.load(builder.bitcast(ptr, words.as_pointer()), align=2)
        return context.make_tuple(builder, sig.return_type, list(_bf16_halves(builder, value)))
    return types.UniTuple(F32, 2)(arr, i, j), codegen


I32 = Vec(types.int32)


def _element_pointer(context, builder, sig, args, n: int):
    arr_type = sig.args[0]
    arr = context.make_array(arr_type)(context, builder, args[0])
    index = [context.cast(builder, v, t, types.intp)
             for v, t in zip(args[1:1 + n], sig.args[1:1 + n], strict=True)]
    return cgutils.get_item_pointer(context, builder, arr_type, arr, index, wraparound=False)


@intrinsic
def vload_quads(typingctx, arr, i, j):
    """arr[i, j : j + 4 * lanes] (int8, or uint8 holding bfloat16 pairs) as an
    int32 Vec: four bytes a lane, the operand layout of vpdpbusd and vdpbf16ps."""
    if arr.dtype not in (types.int8, types.uint8):
        return None

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.IntType(32), I32.lanes)
        ptr = _element_pointer(context, builder, sig, args, 2)
        return builder.load(builder.bitcast(ptr, vec.as_pointer()), align=1)
    return I32(arr, i, j), codegen


@intrinsic
def vsplat_quad(typingctx, arr, j):
    """The four bytes arr[j : j + 4] (uint8) in every int32 lane."""
    if arr.dtype != types.uint8:
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig, args, 1)
        word = builder.load(builder.bitcast(ptr, ir.IntType(32).as_pointer()), align=1)
        vec = ir.VectorType(ir.IntType(32), I32.lanes)
        undef = ir.Constant(vec, ir.Undefined)
        first = builder.insert_element(undef, word, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(first, undef, ir.Constant(vec, [0] * I32.lanes))
    return I32(arr, j), codegen


def _dpbusd_emulated(builder, acc, a, b):
    """acc + the sum of four (unsigned byte of a) x (signed byte of b) per lane,
    in plain LLVM IR: correct on any CPU, and what vpdpbusd computes (its
    int32 sum wraps, which the kernels' ranges never reach)."""
    n = acc.type.count
    quads = ir.VectorType(ir.IntType(8), 4 * n)
    wide = ir.VectorType(ir.IntType(32), 4 * n)
    products = builder.mul(builder.zext(builder.bitcast(a, quads), wide),
                           builder.sext(builder.bitcast(b, quads), wide))
    for r in range(4):
        lane = ir.Constant(ir.VectorType(ir.IntType(32), n), [4 * i + r for i in range(n)])
        acc = builder.add(acc, builder.shuffle_vector(products, products, lane))
    return acc


@intrinsic
def vdpbusd(typingctx, acc, a, b):
    """vpdpbusd where the CPU has AVX512-VNNI (HAS_VNNI), else its emulation."""
    def codegen(context, builder, sig, args):
        if not HAS_VNNI:
            return _dpbusd_emulated(builder, *args)
        vec = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec] * 3),
            f"llvm.x86.avx512.vpdpbusd.{vec.count * 32}")
        return builder.call(fn, args)
    return acc(acc, a, b), codegen


@intrinsic
def vdpbusd_emulated(typingctx, acc, a, b):
    """vdpbusd's arithmetic in plain IR on every CPU (tests force it)."""
    def codegen(context, builder, sig, args):
        return _dpbusd_emulated(builder, *args)
    return acc(acc, a, b), codegen


class _BFloat(_BaseFloatType):
    """LLVM's bfloat, which llvmlite does not spell: the operand type of the
    AVX512_BF16 intrinsics."""

    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self):
        return "bfloat"


_BFloat._create_instance()


def _dpbf16_emulated(builder, acc, a, b):
    """acc + the odd pair's product, then + the even pair's, each rounded to
    float32: vdpbf16ps's arithmetic (Intel's definition; Zen 5's instruction
    gives these bits, measured) in plain IR. A product of two bfloat16 is exact
    in float32, so each step is one rounding. Subnormals are kept, where the
    instruction flushes them."""
    a_even, a_odd = _bf16_halves(builder, a)
    b_even, b_odd = _bf16_halves(builder, b)
    acc = builder.fadd(acc, builder.fmul(a_odd, b_odd))
    return builder.fadd(acc, builder.fmul(a_even, b_even))


@intrinsic
def vdpbf16(typingctx, acc, a, b):
    """vdpbf16ps where the CPU has AVX512_BF16 (HAS_BF16), else its emulation:
    acc (float32) + the products of a's and b's bfloat16 pairs (int32 Vecs of
    two bfloat16 each), the odd one first."""
    def codegen(context, builder, sig, args):
        if not HAS_BF16:
            return _dpbf16_emulated(builder, *args)
        acc, a, b = args
        pairs = ir.VectorType(_BFloat(), 2 * acc.type.count)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(acc.type, [acc.type, pairs, pairs]),
            f"llvm.x86.avx512bf16.dpbf16ps.{acc.type.count * 32}")
        return builder.call(fn, [acc, builder.bitcast(a, pairs), builder.bitcast(b, pairs)])
    return acc(acc, a, b), codegen


@intrinsic
def vdpbf16_emulated(typingctx, acc, a, b):
    """vdpbf16's arithmetic in plain IR on every CPU (tests force it)."""
    def codegen(context, builder, sig, args):
        return _dpbf16_emulated(builder, *args)
    return acc(acc, a, b), codegen


@intrinsic
def vsplat_row16(typingctx, lo, hi, j):
    """The int16 values of four k, whose bytes quantize_row16 put in lo[j : j + 4]
    and hi[j : j + 4] (uint8, hi offset by 128), in every 64-bit lane of an
    int32 Vec: the activation operand of vmadd_low and vmadd_high."""
    if lo.dtype != types.uint8 or hi.dtype != types.uint8:
        return None

    def codegen(context, builder, sig, args):
        quad = ir.VectorType(ir.IntType(8), 4)
        int16 = ir.VectorType(ir.IntType(16), 4)
        halves = []
        for arr, arr_type in ((args[0], sig.args[0]), (args[1], sig.args[1])):
            ptr = _element_pointer(context, builder, sig.replace(args=(arr_type, sig.args[2])),
                                   (arr, args[2]), 1)
            bytes_ = builder.load(builder.bitcast(ptr, quad.as_pointer()), align=1)
            halves.append(builder.zext(bytes_, int16))
        # (hi << 8 | lo) is v + 32768 modulo 2^16: flipping the top bit gives v.
        word = builder.or_(builder.shl(halves[1], ir.Constant(int16, [8] * 4)), halves[0])
        value = builder.xor(word, ir.Constant(int16, [-32768] * 4))
        return _splat64(builder, builder.bitcast(value, ir.IntType(64)))
    return I32(lo, hi, j), codegen


def _splat64(builder, word):
    """The i64 ``word`` (four int16 values) in every 64-bit lane, as an int32 Vec."""
    n = I32.lanes // 2
    undef = ir.Constant(ir.VectorType(ir.IntType(64), n), ir.Undefined)
    first = builder.insert_element(undef, word, ir.Constant(ir.IntType(32), 0))
    splat = builder.shuffle_vector(first, undef,
                                   ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))
    return builder.bitcast(splat, ir.VectorType(ir.IntType(32), I32.lanes))


@intrinsic
def vsplat_pairs16(typingctx, arr, i, j):
    """arr[i, j : j + 4] (int16: a row's values, made once) in every 64-bit
    lane of an int32 Vec: vsplat_row16's operand in one load and broadcast,
    for tiles that reuse a row at every panel."""
    if arr.dtype != types.int16:
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig, args, 2)
        word = builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=2)
        return _splat64(builder, word)
    return I32(arr, i, j), codegen


def _madd(builder, acc, a, q, half: int):
    """acc + (int16 pairs of a) . (half `half` of q's bytes, sign-extended to
    int16), pair by pair: LLVM selects vpmaddwd for the multiply and the add of
    each lane's even and odd product, exact in int32."""
    n = acc.type.count
    pairs = ir.VectorType(ir.IntType(32), 2 * n)
    quads = builder.bitcast(q, ir.VectorType(ir.IntType(8), 4 * n))
    part = builder.shuffle_vector(quads, quads, ir.Constant(
        ir.VectorType(ir.IntType(32), 2 * n), [half * 2 * n + i for i in range(2 * n)]))
    products = builder.mul(builder.sext(part, pairs),
                           builder.sext(builder.bitcast(a, ir.VectorType(ir.IntType(16), 2 * n)),
                                        pairs))
    return builder.add(acc, _pair_sums(builder, products, products, n))


def _pair_sums(builder, a, b, n: int):
    """n lanes: lane i the sum of lanes 2i and 2i + 1 of a then b."""
    lanes = ir.VectorType(ir.IntType(32), n)
    even = builder.shuffle_vector(a, b, ir.Constant(lanes, [2 * i for i in range(n)]))
    odd = builder.shuffle_vector(a, b, ir.Constant(lanes, [2 * i + 1 for i in range(n)]))
    if isinstance(a.type.element, ir.FloatType):
        return builder.fadd(even, odd)
    return builder.add(even, odd)


@intrinsic
def vmadd_low(typingctx, acc, a, q):
    """acc + the first half of an int32 Vec of quads q (int8, the dot layout's
    four k of a column side by side) dotted pairwise with a (vsplat_row16):
    lanes 2c and 2c + 1 hold column c's sums of k 0-1 and k 2-3."""
    def codegen(context, builder, sig, args):
        return _madd(builder, *args, 0)
    return acc(acc, a, q), codegen


@intrinsic
def vmadd_high(typingctx, acc, a, q):
    """vmadd_low for the second half of q's columns."""
    def codegen(context, builder, sig, args):
        return _madd(builder, *args, 1)
    return acc(acc, a, q), codegen


@intrinsic
def vsum_pairs(typingctx, low, high):
    """Per column, the sum of its two lanes of vmadd_low's and then
    vmadd_high's sums (as float32 Vecs, where the int32 total could
    overflow): a Vec of the quads' columns in order."""
    def codegen(context, builder, sig, args):
        return _pair_sums(builder, args[0], args[1], args[0].type.count)
    return low(low, high), codegen


@intrinsic
def vsubi(typingctx, a, b):
    """a - b for int32 Vecs."""
    def codegen(context, builder, sig, args):
        return builder.sub(*args)
    return a(a, b), codegen


@intrinsic
def vfloat(typingctx, v):
    """An int32 Vec converted to float32, lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], ir.VectorType(ir.FloatType(), I32.lanes))
    return F32(v), codegen


def _first_lanes(builder, lanes: int, count):
    """<lanes x i1>: true in lanes 0 .. count-1."""
    index = ir.VectorType(ir.IntType(64), lanes)
    count = builder.sext(count, ir.IntType(64)) if count.type.width < 64 else count
    first = builder.insert_element(ir.Constant(index, ir.Undefined), count,
                                   ir.Constant(ir.IntType(32), 0))
    limit = builder.shuffle_vector(first, ir.Constant(index, ir.Undefined),
                                   ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
    return builder.icmp_signed("<", ir.Constant(index, list(range(lanes))), limit)


def _masked_load(vec_type):
    """Codegen of a masked load of a Vec of vec_type at the array element the
    index arguments name, its first n lanes (n the last argument), zeros after."""
    def codegen(context, builder, sig, args):
        ptr, align = _vector_pointer(context, builder, sig, args)
        vec = context.get_value_type(vec_type)
        load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [ptr.type, ir.IntType(32),
                                                  ir.VectorType(ir.IntType(1), vec.count), vec]),
            _masked_name("load", vec))
        return builder.call(load, [ptr, ir.Constant(ir.IntType(32), align),
                                   _first_lanes(builder, vec.count, args[-1]),
                                   ir.Constant(vec, None)])
    return codegen


def _store_masked(builder, value, ptr, align: int, mask):
    """llvm.masked.store of the vector ``value`` at ``ptr``, the lanes ``mask`` sets."""
    store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [value.type, ptr.type, ir.IntType(32),
                                                        mask.type]),
        _masked_name("store", value.type))
    builder.call(store, [value, ptr, ir.Constant(ir.IntType(32), align), mask])


def _masked_name(op: str, vec) -> str:
    # The pointer part of the mangled name: "p0" where pointers are opaque (LLVM
    # 17 on, as llvmlite 0.50 uses), "p0v16f32" where they are typed (older).
    vec_name = f"v{vec.count}{vec.element.intrinsic_name}"
    pointer = "p0" if llvm.llvm_version_info[0] >= 17 else "p0" + vec_name
    return f"llvm.masked.{op}.{vec_name}.{pointer}"


@intrinsic
def vload1_first(typingctx, arr, j, n):
    """arr[j : j + n] in a Vec's first n lanes (n < lanes), zeros after: a
    masked load, so nothing past arr[j + n - 1] is touched."""
    vec_type = Vec(arr.dtype)
    return vec_type(arr, j, n), _masked_load(vec_type)


@intrinsic
def vstore1_first(typingctx, arr, j, v, n):
    """arr[j : j + n] = v's first n lanes (n < lanes): a masked store."""
    def codegen(context, builder, sig, args):
        ptr, align = _vector_pointer(context, builder, sig, args)
        _store_masked(builder, args[2], ptr, align,
                      _first_lanes(builder, args[2].type.count, args[3]))
        return context.get_dummy_value()
    return types.none(arr, j, v, n), codegen


@intrinsic
def vload_first(typingctx, arr, i, j, n):
    """arr[i, j : j + n] in a Vec's first n lanes (n < lanes), zeros after: a
    masked load of a 2-D row's tail (vload1_first's for a row of a block)."""
    vec_type = Vec(arr.dtype)
    return vec_type(arr, i, j, n), _masked_load(vec_type)


@intrinsic
def vabs_bits_max(typingctx, acc, x):
    """max(acc, the int32 bits of x without their sign) lane by lane (acc int32,
    x float32): |x|'s order for finite values, with Inf above them and NaN
    above Inf."""
    if not (isinstance(acc, Vec) and isinstance(x, Vec) and acc.dtype == types.int32
            and x.dtype == types.float32):
        return None

    def codegen(context, builder, sig, args):
        acc, x = args
        mask = ir.Constant(acc.type, [0x7FFFFFFF] * acc.type.count)
        bits = builder.and_(builder.bitcast(x, acc.type), mask)
        return builder.select(builder.icmp_signed(">", bits, acc), bits, acc)
    return acc(acc, x), codegen


@intrinsic
def vmax_lane(typingctx, v):
    """The largest lane of an int32 Vec."""
    def codegen(context, builder, sig, args):
        vec = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec.element, [vec]),
            f"llvm.vector.reduce.smax.v{vec.count}i32")
        return builder.call(fn, args)
    return types.int32(v), codegen


@intrinsic
def vint(typingctx, x):
    """A float32 Vec as int32 lane by lane, toward zero (as np.int32 of a float32)."""
    def codegen(context, builder, sig, args):
        return builder.fptosi(args[0], ir.VectorType(ir.IntType(32), I32.lanes))
    return I32(x), codegen


@intrinsic
def vmuli(typingctx, a, b):
    """a * b for int32 Vecs (wrapping)."""
    def codegen(context, builder, sig, args):
        return builder.mul(*args)
    return a(a, b), codegen


def _int16_bytes(builder, v):
    """v's int32 lanes (int16 values) as vpdpbusd's two bytes: v & 255 and (v >> 8) + 128."""
    byte = ir.VectorType(ir.IntType(8), v.type.count)
    high = builder.add(builder.ashr(v, ir.Constant(v.type, [8] * v.type.count)),
                       ir.Constant(v.type, [128] * v.type.count))
    return builder.trunc(v, byte), builder.trunc(high, byte)


def _bytes_at(context, builder, sig, args, v):
    """(pointer, bytes) for lo[i, j:] and hi[i, j:] (args: lo, hi, i, j, ...):
    the int32 Vec v's int16 values as vpdpbusd's two bytes (_int16_bytes)."""
    index = [context.cast(builder, args[k], sig.args[k], types.intp) for k in (2, 3)]
    for arr_type, arr, part in zip(sig.args[:2], args[:2], _int16_bytes(builder, v),
                                   strict=True):
        ptr = cgutils.get_item_pointer(context, builder, arr_type,
                                       context.make_array(arr_type)(context, builder, arr),
                                       index, wraparound=False)
        yield builder.bitcast(ptr, part.type.as_pointer()), part


@intrinsic
def vstore_int16_bytes(typingctx, lo, hi, i, j, v):
    """lo[i, j + l] = v[l] & 255 and hi[i, j + l] = (v[l] >> 8) + 128 for every
    lane l of the int32 Vec v (uint8 arrays): an int16 value's bytes as
    vpdpbusd reads them (activation_grids.quantize_row16)."""
    def codegen(context, builder, sig, args):
        for ptr, part in _bytes_at(context, builder, sig, args, args[4]):
            builder.store(part, ptr, align=1)
        return context.get_dummy_value()
    return types.none(lo, hi, i, j, v), codegen


@intrinsic
def vstore_int16_bytes_first(typingctx, lo, hi, i, j, v, n):
    """vstore_int16_bytes for lanes l < n alone (masked stores: n < lanes)."""
    def codegen(context, builder, sig, args):
        mask = _first_lanes(builder, args[4].type.count, args[5])
        for ptr, part in _bytes_at(context, builder, sig, args, args[4]):
            _store_masked(builder, part, ptr, 1, mask)
        return context.get_dummy_value()
    return types.none(lo, hi, i, j, v, n), codegen


@intrinsic
def vstore(typingctx, arr, i, j, v):
    """arr[i, j : j + lanes] = v (arr 2-D, its last axis contiguous)."""
    def codegen(context, builder, sig, args):
        ptr, align = _vector_pointer(context, builder, sig, args)
        builder.store(args[3], ptr, align=align)
        return context.get_dummy_value()
    return types.none(arr, i, j, v), codegen


@intrinsic
def vselect(typingctx, cond, a, b):
    """a where cond else b, whole Vecs: a branch-free choice."""
    if not isinstance(a, Vec) or a != b:
        return None

    def codegen(context, builder, sig, args):
        flag = context.cast(builder, args[0], sig.args[0], types.boolean)
        return builder.select(flag, args[1], args[2])
    return a(cond, a, b), codegen


@intrinsic
def vstore1(typingctx, arr, j, v):
    """arr[j : j + lanes] = v."""
    def codegen(context, builder, sig, args):
        ptr, align = _vector_pointer(context, builder, sig, args)
        builder.store(args[2], ptr, align=align)
        return context.get_dummy_value()
    return types.none(arr, j, v), codegen


@intrinsic
def schedule_barrier(typingctx):
    """An empty asm statement that clobbers memory: no instruction, but the
    compiler moves no load or store across it. A tile with more sums than
    registers to spare (12 rows x 2 vectors) otherwise has its rows'
    broadcasts hoisted to the top of the k step, and spills its sums."""
    def codegen(context, builder, sig, args):
        asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), "", "~{memory}",
                           side_effect=True)
        builder.call(asm, [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def prefetch(typingctx, arr, i, j):
    """Ask for the cache line of arr[i, j] in L1 ahead of its use (x86
    prefetcht0); a hint only: it never faults, so i may run past the array."""
    def codegen(context, builder, sig, args):
        ptr, _ = _vector_pointer(context, builder, sig, args)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        signature = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, signature, "llvm.prefetch.p0")
        # read, keep in every cache level, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.none(arr, i, j), codegen


@intrinsic
def float32_bits(typingctx, x):
    """The int32 bits of the float32 ``x``: no int32 view of its array needed."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose bits are the int32 ``bits``."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def vadd_store(typingctx, arr, i, j, v):
    """arr[i, j : j + lanes] += v."""
    def codegen(context, builder, sig, args):
        ptr, align = _vector_pointer(context, builder, sig, args)
        builder.store(builder.fadd(builder.load(ptr, align=align), args[3]), ptr, align=align)
        return context.get_dummy_value()
    return types.none(arr, i, j, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """A Vec with x in every lane."""
    vec_type = Vec(x)

    def codegen(context, builder, sig, args):
        vec = context.get_value_type(vec_type)
        undef = ir.Constant(vec, ir.Undefined)
        first = builder.insert_element(undef, args[0], ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), vec_type.lanes), [0] * vec_type.lanes)
        return builder.shuffle_vector(first, undef, zeros)
    return vec_type(x), codegen


def _fma_codegen(context, builder, sig, args):
    ty = args[0].type
    if isinstance(ty, ir.VectorType):
        name = f"llvm.fma.v{ty.count}{ty.element.intrinsic_name}"
    else:
        name = f"llvm.fma.{ty.intrinsic_name}"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3), name)
    return builder.call(fma, args)


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c lane by lane, one rounding (llvm.fma)."""
    return a(a, b, c), _fma_codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c for float scalars, one rounding (llvm.fma). Kernels write their
    multiply-adds with it instead of letting LLVM contract ``a * b + c``: where
    LLVM contracts depends on how a function was inlined and optimised, and a
    parallel kernel's body is optimised twice (once alone, as the fresh process
    runs it, once inside the library that the on-disk cache stores), so
    contraction made a cached kernel differ in the last bit from a fresh one."""
    if not (isinstance(a, (types.Float, Vec)) and a == b == c):
        return None
    return a(a, b, c), _fma_codegen


def _binary(op):
    @intrinsic
    def vop(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(*args)
        return a(a, b), codegen
    return vop


vadd = _binary("fadd")
vsub = _binary("fsub")
vmul = _binary("fmul")
vdiv = _binary("fdiv")


# Arithmetic operators on Vecs, so that a cell's math (numba_lstm.cells) is one
# text for scalars and vectors.
def _vec_operator(op, vop):
    @overload(op)
    def _impl(a, b):
        if isinstance(a, Vec) and a == b:
            return lambda a, b: vop(a, b)


_vec_operator(operator.add, vadd)
_vec_operator(operator.sub, vsub)
_vec_operator(operator.mul, vmul)


@intrinsic
def vrelu(typingctx, x):
    """max(x, 0) lane by lane; NaN stays NaN (as torch.relu)."""
    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered("<", args[0], zero), zero, args[0])
    return x(x), codegen


@intrinsic
def vclamp(typingctx, x, bound):
    """x limited to [-bound, bound] lane by lane; NaN stays NaN (ordered
    comparisons, not min/max, which would return the bound)."""
    def codegen(context, builder, sig, args):
        x, bound = args
        below = builder.fneg(bound)
        x = builder.select(builder.fcmp_ordered(">", x, bound), bound, x)
        return builder.select(builder.fcmp_ordered("<", x, below), below, x)
    return x(x, bound), codegen


@intrinsic
def vsaturate(typingctx, r, x, bound):
    """r, but exactly 1 where x > bound and -1 where x < -bound (NaN stays)."""
    def codegen(context, builder, sig, args):
        r, x, bound = args
        ones = ir.Constant(r.type, [1.0] * r.type.count)
        minus = ir.Constant(r.type, [-1.0] * r.type.count)
        below = builder.fneg(bound)
        r = builder.select(builder.fcmp_ordered(">", x, bound), ones, r)
        return builder.select(builder.fcmp_ordered("<", x, below), minus, r)
    return r(r, x, bound), codegen
