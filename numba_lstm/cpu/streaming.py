"""One step at batch 1 per call: the whole stack in one kernel call (benchmark shape S8).

A streaming call has a few hundred ns of arithmetic at small H, so its cost is
Python's: frames, allocations and the dispatcher's ~0.1 µs per array argument.
StackStepper keeps everything but the input check out of the call. At larger
H a step is bound by reading every weight once; TeamStepper shares it with the
team (cpu.cooperative), each core reading its share of the weights from its
own L2, when they fit there.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..cells import LSTM
from .activation_grids import quantize_row
from .aligned import aligned_empty
from .cooperative import SERVE, describe_stack_job, job_kind, stack_job_buffers
from .dot_gemm import row_dot_acc
from .layer import row_function
from .packing import PackedStack
from .recurrence import _FLAGS, _row_matmul_acc, copy_row
from .row_step import row_block_step_dot
from .team import CTRL_SIZE, DESC, Team

lstm_row = row_function(LSTM)


@njit(**_FLAGS)
def lstm_stack_step(x, w_ih0, w_ih_rest, bias, w_hh, state, new_state, out):
    """One time step of a whole stack at batch 1, one direction, no projection.

    x (1, 1, I);  w_ih0 (1, I, 4H) layer 0's W_ih^T;  w_ih_rest (L-1, H, 4H)
    the other layers';  bias (L, 4H);  w_hh (L, H, 4H);  state -> new_state
    (2, L, 1, H), h then c;  out (1, 1, H) <- the last layer's h. Streaming
    calls this once per step: one dispatch for all layers instead of a matmul,
    a kernel and three arrays per layer (measured: 61 -> 13 µs per call for a
    tiny 2-layer model), and h and c in one array because each array argument
    costs the dispatcher ~0.1 µs.
    """
    L = w_hh.shape[0]
    G = w_hh.shape[2]
    x_row = x[0]  # (1, I)
    h0, c0, h_n, c_n = state[0], state[1], new_state[0], new_state[1]  # (L, 1, H)
    gates = np.empty((1, G), dtype=x.dtype)  # (1, 4H)
    # Row and direction 0 as int64, not the literal 0: Numba compiles a kernel
    # once more for each literal argument (Literal[int](0)) it is called with.
    first = np.int64(0)
    for layer in range(L):
        copy_row(bias[layer], gates[0])
        if layer == 0:
            _row_matmul_acc(gates, first, x_row, w_ih0, first)
        else:
            _row_matmul_acc(gates, first, h_n[layer - 1], w_ih_rest, layer - 1)
        _row_matmul_acc(gates, first, h0[layer], w_hh, layer)
        copy_row(c0[layer, 0], c_n[layer, 0])
        # The LSTM row reads no parameters: gates stands in for them.
        lstm_row(gates[0], gates[0], h0[layer, 0], c_n[layer, 0], h_n[layer, 0], gates)
    copy_row(h_n[L - 1, 0], out[0, 0])


@njit(**_FLAGS)
def lstm_stack_step_dot(x, ih0, ih_rest, bias, hh, state, new_state, out, lo, hi, gates):
    """lstm_stack_step for an int8 or bfloat16 stack on the dot kernels
    (cpu.row_step): each layer's input row and h quantized per row (int8: x to
    int16, h and the hidden states above the first layer to 8 bits;
    bfloat16: rounded), both products by vpdpbusd or vdpbf16ps, the cell
    fused into the W_hh product. ih0, ih_rest, hh: the
    (w_dot, offset, scale) of PackedStack.quantized_step; lo, hi (4 * K4,)
    uint8 scratch for the widest input; gates (4H,). A streaming step reads
    every weight once, so the int8 layout's quarter of the bytes is the gain
    (S8's 3.4 MB of float32 weights come from L3; its 0.85 MB of int8 fit one
    core's L2). Returns False, new_state and out partly written, if an input
    or h is not finite (int16 cannot carry it): the caller then runs the float
    kernel, which propagates NaN as torch does."""
    L = hh[0].shape[0]
    h0, c0, h_n, c_n = state[0], state[1], new_state[0], new_state[1]  # (L, 1, H)
    for layer in range(L):
        copy_row(bias[layer], gates)
        src = x[0, 0] if layer == 0 else h_n[layer - 1, 0]
        # x on int16's grid; a layer's input above it, the h below, on h's 8
        # bits (bfloat16: x as hi + lo, the h below as hi alone)
        s_x = quantize_row(src, lo, hi, hh[0], layer > 0)
        if s_x < 0:
            return False
        if layer == 0:
            row_dot_acc(gates, ih0[0], ih0[1], ih0[2], s_x, lo, hi)
        else:
            row_dot_acc(gates, ih_rest[0][layer - 1], ih_rest[1][layer - 1],
                        ih_rest[2][layer - 1], s_x, lo, hi)
        copy_row(c0[layer, 0], c_n[layer, 0])
        if not row_block_step_dot(gates, hh[0][layer], hh[1][layer], hh[2][layer], h0[layer, 0],
                                  lo, hi, c_n[layer, 0], h_n[layer, 0], h_n[layer, 0], False):
            return False
    copy_row(h_n[L - 1, 0], out[0, 0])
    return True


def _dot_scratch(layers: PackedStack, dot: tuple, dtype):
    """lo, hi and gates for lstm_stack_step_dot on ``dot`` (quantized_step)."""
    k_bytes = 4 * max(dot[0][0].shape[1], dot[2][0].shape[2])  # a row's bytes, widest input
    return (aligned_empty(k_bytes, np.uint8), aligned_empty(k_bytes, np.uint8),
            np.empty(4 * layers[0].hidden_size, dtype))


def _step(layers: PackedStack, dot, scratch, x, state, new_state, out) -> None:
    """One step into new_state and out: the int8 dot kernel where the stack has
    it (dot, from layers.quantized_step()) and the input and state are finite,
    else the float kernel on the stack's float32 values."""
    if dot is not None and lstm_stack_step_dot(x, *dot[:2], layers.step[2], dot[2], state,
                                               new_state, out, *scratch):
        return
    lstm_stack_step(x, *layers.step, state, new_state, out)


def lstm_stream_step(layers: PackedStack, x, h0, c0):
    """One step of a stack with a one-call kernel (layers.step): x (1, 1, I),
    h0, c0 (L, 1, H). Returns new arrays out (1, 1, H), h_n, c_n (L, 1, H)."""
    state = np.stack((h0, c0))  # (2, L, 1, H)
    new_state = np.empty_like(state)
    out = np.empty((1, 1, h0.shape[2]), h0.dtype)
    dot = layers.quantized_step()
    scratch = _dot_scratch(layers, dot, h0.dtype) if dot is not None else None
    _step(layers, dot, scratch, x, state, new_state, out)
    return out, new_state[0], new_state[1]


class StackStepper:
    """``out = stepper(x)``: one step of a stack (layers.step is not None) from the
    state it holds, or None, touching nothing, unless x is a C-contiguous array of
    exactly the shape and dtype the stepper was made for. The caller then takes
    the checked path, starting from ``stepper.state``.

    The state is double-buffered: each call reads one (2, L, 1, H) buffer and
    writes the other, so only the output is allocated. ``state`` therefore
    returns copies.
    """

    __slots__ = ("layers", "_weights", "_batched", "_x_shape", "_dtype", "_out_shape", "_state",
                 "_spare", "_state_shape", "_dot", "_scratch")

    def __init__(self, layers: PackedStack, h, c, batched: bool):
        """h (L, 1, H) if batched else (L, H), and c alike, as the module's hx."""
        self.layers = layers  # the caller's check that its weights are still these
        self._weights = layers.step
        L, H, I = len(layers), layers[0].hidden_size, layers.step[0].shape[1]
        self._dtype = layers[0].w_hh.dtype
        self._batched = batched
        self._x_shape = (1, 1, I) if batched else (1, I)
        self._out_shape = (1, 1, H)
        self._state_shape = h.shape
        self._state = np.stack((h, c)).reshape((2, L, 1, H))
        self._spare = np.empty_like(self._state)
        self._dot = layers.quantized_step()
        self._scratch = (_dot_scratch(layers, self._dot, self._dtype)
                         if self._dot is not None else None)

    def __call__(self, x) -> np.ndarray | None:
        if (type(x) is not np.ndarray or x.shape != self._x_shape or x.dtype != self._dtype
                or not x.flags.c_contiguous):
            return None
        out = np.empty(self._out_shape, self._dtype)  # (1, 1, H)
        if self._dot is not None:
            _step(self.layers, self._dot, self._scratch, x if self._batched else x[None],
                  self._state, self._spare, out)
            if not self._batched:
                out = out[0]
        elif self._batched:
            lstm_stack_step(x, *self._weights, self._state, self._spare, out)
        else:
            # As 3-D views, so that one compiled kernel serves both layouts and
            # lstm_stream_step: a second one would compile mid-stream (~1 s cold).
            lstm_stack_step(x[None], *self._weights, self._state, self._spare, out)
            out = out[0]
        self._state, self._spare = self._spare, self._state
        return out

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """(h, c), copies, in the shape the stepper was made with."""
        return tuple(self._state[k].reshape(self._state_shape).copy() for k in (0, 1))


@njit(**_FLAGS)
def _post_team_step(ctrl, template, x, x_in, h_buf, counters, carried):
    """Put the stepper's one-step job on ctrl: its descriptor (ctrl is shared
    with other jobs), x (1, 1, I) copied into the job's input, the last step's
    h (h_buf[:, 1]) moved to where the job reads h0 (h_buf[:, 0]) if
    ``carried``, and the task counters zeroed."""
    ctrl[DESC:] = template[DESC:]
    x_in[...] = x
    if carried:
        h_buf[:, 0] = h_buf[:, 1]
    counters[:] = 0


class TeamStepper:
    """StackStepper's interface, each step a one-step stack job of the team
    (cpu.cooperative): every thread computes its own unit blocks of every
    layer, so each core reads only its blocks' weights, which stay in its L2
    from call to call; a quantized stack's in their stored format, as its
    sequences' batch-1 steps. The job's arrays are the stepper's own, so its
    descriptor is written once and copied onto the team's ctrl per call.
    """

    __slots__ = ("layers", "_team", "_kind", "_template", "_batched", "_x_shape", "_dtype",
                 "_state_shape", "_x_in", "_h_buf", "_c", "_out", "_counters", "_carried",
                 "_job")

    def __init__(self, layers: PackedStack, h, c, batched: bool, team: Team, n_blocks: int):
        """h (L, 1, H) if batched else (L, H), and c alike, as the module's hx."""
        self.layers = layers
        L, H, I = len(layers), layers[0].hidden_size, layers.step[0].shape[1]
        dtype = self._dtype = layers[0].w_hh.dtype
        self._team = team
        self._kind = job_kind(dtype, layers.quantized is not None,
                              pairs=layers.team_has_pairs(n_blocks))
        self._batched = batched
        self._x_shape = (1, 1, I) if batched else (1, I)
        self._state_shape = h.shape
        w_ih0, w_ih_rest, bias, w_hh, bias_h = layers.team_blocks(n_blocks)
        self._x_in = np.empty((1, 1, I), dtype)  # (T=1, B=1, I)
        # h_buf: the job's ping-pong, h0 in [:, 0]; c updated in place.
        self._h_buf, self._c, self._out, mid, self._counters, claims, done = stack_job_buffers(
            L, 1, H, 1, 1, n_blocks, team.size, dtype, h.reshape(L, 1, H), c.reshape(L, 1, H))
        self._carried = False
        # The stored weights' blocks ((L, 0, ...) for a float stack), as _team_stack's.
        quantized = layers.team_quantized_blocks(n_blocks) + layers.team_quantized_projection(
            n_blocks)
        lengths = np.ones(1, np.int64)
        gx = np.empty((n_blocks, 1, bias.shape[2]), dtype)  # (nb, steps * B, 4U)
        self._template = np.zeros(CTRL_SIZE, np.int64)
        describe_stack_job(self._template, self._kind, self._x_in, w_ih0, w_ih_rest, bias, w_hh,
                           bias_h, *quantized, lengths, gx, self._h_buf, self._c, self._out, mid,
                           claims, done, 1, team.size)
        # The job's threads see these by address: the stepper holds every one.
        self._job = (w_ih0, w_ih_rest, bias, w_hh, bias_h, quantized, lengths, gx, mid)

    def __call__(self, x) -> np.ndarray | None:
        if (type(x) is not np.ndarray or x.shape != self._x_shape or x.dtype != self._dtype
                or not x.flags.c_contiguous):
            return None
        ctrl = self._team.acquire()
        try:
            _post_team_step(ctrl, self._template, x if self._batched else x[None], self._x_in,
                            self._h_buf, self._counters, self._carried)
            SERVE[self._kind](ctrl, 0, 0)
        finally:
            self._team.release(ctrl, self._kind)
        self._carried = True
        out = self._out.copy()
        return out if self._batched else out[0]

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """(h, c), copies, in the shape the stepper was made with."""
        h = self._h_buf[:, 1 if self._carried else 0]
        return tuple(a.reshape(self._state_shape).copy() for a in (h, self._c))
