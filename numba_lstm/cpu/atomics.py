"""Atomic int64 operations on array elements, for jitted code.

Numba has no CPU atomics; these emit LLVM's atomic instructions directly. A
plain load in a spin loop may legally be hoisted out of the loop by the
optimiser and would never see another thread's store; an acquire load cannot.
"""

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


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
