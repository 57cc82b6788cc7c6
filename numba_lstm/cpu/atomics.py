"""Atomic int64 operations on array elements, and spin-wait hints, for jitted code.

Numba has no CPU atomics; these emit LLVM's atomic instructions directly. A
plain load in a spin loop may legally be hoisted out of the loop by the
optimiser and would never see another thread's store; an acquire load cannot.
"""

import platform
import sys

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
_POSIX = sys.platform != "win32"


def _element_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, data, [index],
                                    wraparound=False)


@intrinsic
def load_acquire(typingctx, array, index):
    """array[index], ordered before every later load and store of this thread."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(array, types.intp), codegen


@intrinsic
def fetch_add(typingctx, array, index, value):
    """array[index] += value atomically (sequentially consistent); returns the old value."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        amount = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, amount, "seq_cst")

    return types.int64(array, types.intp, types.int64), codegen


def _call_void(builder, name, return_type=None):
    """Emit a call of the argument-less function ``name``."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(return_type or ir.VoidType(), []), name)
    builder.call(fn, [])


@intrinsic
def spin_pause(typingctx):
    """x86 PAUSE inside a spin loop (eases the memory-order flush when the awaited
    store lands and saves power); nothing on other CPUs."""

    def codegen(context, builder, signature, args):
        if _X86:
            _call_void(builder, "llvm.x86.sse2.pause")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def yield_cpu(typingctx):
    """sched_yield(): let any other runnable thread have this core now (a BLAS
    worker, say); returns at once when there is none. A PAUSE where POSIX's
    sched_yield is missing. Declared as an external symbol, which the linker
    resolves in the C library, so that code calling it can be cached."""

    def codegen(context, builder, signature, args):
        if _POSIX:
            _call_void(builder, "sched_yield", ir.IntType(32))
        elif _X86:
            _call_void(builder, "llvm.x86.sse2.pause")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def address_as_voidptr(typingctx, address):
    """An int64 address (from ``array.ctypes.data``) as a pointer for numba.carray."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.inttoptr(value, ir.IntType(8).as_pointer())

    return types.voidptr(address), codegen


@njit(inline="always", nogil=True)
def wait_until(array, index, count):
    """Spin until array[index] >= count (a counter other threads fetch_add to).
    Waits here are sub-µs; PAUSE alone costs ~50 ns on recent Intel cores."""
    while load_acquire(array, index) < count:
        pass
