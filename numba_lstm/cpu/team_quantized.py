"""The team's reduced-precision weights (cpu.cooperative), or None for a float stack.

A float stack's job gets None where a quantized one gets its int8 or bfloat16
arrays, and every accessor here has a None overload that compiles to a
constant. So the float job, compiled as a serve loop of its own, carries none
of the int8 and bfloat16 kernels, and a float model's cold first call does not
compile them (docs/performance.md, "Cold first call").

Per layer, ``recurrence`` is (w_i8, w_bf16, scale, w_dot, offset) as
packing.team_quantized_blocks cuts them, and a ``dot`` is (w_dot, offset,
scale): the int8 dot layout of W^T by unit block, its columns' offsets and
scales (packing.team_quantized_projection for W_ih).
"""

from numba import types
from numba.extending import overload

from .recurrence import _FLAGS
from .row_step import row_block_step, row_block_step_dot

_INLINE = dict(inline="always", jit_options=_FLAGS)


def layer_recurrence(hh, layer):
    """One layer's (w_i8, w_bf16, scale, w_dot, offset) of hh, or None."""


@overload(layer_recurrence, **_INLINE)
def _layer_recurrence(hh, layer):
    if isinstance(hh, types.NoneType):
        return lambda hh, layer: None
    return lambda hh, layer: (hh[0][layer], hh[1][layer], hh[2][layer], hh[3][layer],
                              hh[4][layer])


def layer_projection(ih, layer):
    """One layer's input-projection dot of ih (ih0, ih_rest, offset, scale), or None."""


@overload(layer_projection, **_INLINE)
def _layer_projection(ih, layer):
    if isinstance(ih, types.NoneType):
        return lambda ih, layer: None
    return lambda ih, layer: (ih[0] if layer == 0 else ih[1][layer - 1], ih[2][layer],
                              ih[3][layer])


def recurrence_dot(recurrence):
    """The dot of one layer's recurrence weights, or None."""


@overload(recurrence_dot, **_INLINE)
def _recurrence_dot(recurrence):
    if isinstance(recurrence, types.NoneType):
        return lambda recurrence: None
    return lambda recurrence: (recurrence[3], recurrence[4], recurrence[2])


def dot_blocks(dot):
    """Unit blocks a dot holds (0 where the CPU or the shape has no dot layout)."""


@overload(dot_blocks, **_INLINE)
def _dot_blocks(dot):
    if isinstance(dot, types.NoneType):
        return lambda dot: 0
    return lambda dot: dot[0].shape[0]


def dot_bytes(dot):
    """Bytes of a dot's weights, every block's (0 where there is none)."""


@overload(dot_bytes, **_INLINE)
def _dot_bytes(dot):
    if isinstance(dot, types.NoneType):
        return lambda dot: 0
    return lambda dot: dot[0].size * dot[0].itemsize


def quantized_row_step(recurrence, q, gx_row, h_prev, lo, hi, c, h_next, out_row, reverse):
    """Block q's batch-1 step on the stored weights: a dot kernel where it
    has the layout and h_prev is finite, else the widening one (row_step); False,
    doing nothing, where neither can run it or the stack is a float one."""


# Not inlined: an inlined overload's body is typed again where it lands, which
# compiled its three row kernels twice (~4 s of a cold first call).
@overload(quantized_row_step, jit_options=_FLAGS)
def _quantized_row_step(recurrence, q, gx_row, h_prev, lo, hi, c, h_next, out_row, reverse):
    if isinstance(recurrence, types.NoneType):
        return lambda recurrence, q, gx_row, h_prev, lo, hi, c, h_next, out_row, reverse: False

    def impl(recurrence, q, gx_row, h_prev, lo, hi, c, h_next, out_row, reverse):
        w_i8, w_bf16, scale, w_dot, offset = recurrence
        if w_dot.shape[0] > 0 and row_block_step_dot(gx_row, w_dot[q], offset[q], scale[q],
                                                     h_prev, lo, hi, c, h_next, out_row, reverse):
            return True
        if w_i8.shape[0] > 0:
            return row_block_step(gx_row, w_i8[q], scale[q], h_prev, c, h_next, out_row, reverse)
        if w_bf16.shape[0] > 0:
            return row_block_step(gx_row, w_bf16[q], scale[q], h_prev, c, h_next, out_row,
                                  reverse)
        return False
    return impl
