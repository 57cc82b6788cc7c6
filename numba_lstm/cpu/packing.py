"""Weights laid out once, at load time, the way the CPU kernels stream them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..cells import LSTM, Cell
from .aligned import aligned_copy
from .amx import AMX_ROWS, HAS_AMX_BF16
from .dot_gemm import BF16_DOT_BY_DEFAULT, DOT_BY_DEFAULT, DOT_NR, dot_fits
from .panel_gemm import GEMM_PANEL_VECTORS, pack_panels

# The hidden size from which a format's dot kernels win by default. Putting a
# row of h on its grid costs O(H) a row a step, a fixed overhead the products'
# saving (O(H^2): four multiply-adds a lane for int8, two for bfloat16, against
# FMA's one) repays only from some H up, and later for bfloat16. Both costs
# are per vector, so the crossing does not move with the vector width.
# Measured on Zen 5 (batch 1-16, against the same module on float32 values):
# at H = 32 bfloat16's lose (0.81-1.05x) and int8's are mixed (0.89-1.40x;
# 0.60-0.99x at stop 25); at 64 int8 wins on the layer loops (bidirectional,
# 1.29-1.47x) and is even on the team (0.72-1.15x, stop 25), and bfloat16,
# since the small row tiles of stops 26-42, wins 1.02-1.48x (LSTM) and
# 1.03-1.29x (GRU) but at batch 2 of one direction (0.91-0.95x; at stop 25
# it lost on the team, 0.68-0.95x) (docs/quantization.md).
DOT_MIN_HIDDEN = {"int8": 64, "bfloat16": 64}


def dot_default(weights: str | None, hidden: int, dot: bool | None = None) -> bool:
    """Whether a layer of stored ``weights`` and hidden size ``hidden`` takes
    the dot layouts: where dot_hidden(hidden) allows them, ``dot`` where a
    caller forces it; by default, int8 on every CPU (vpdpbusd with
    AVX512-VNNI, int16 pairs elsewhere) and bfloat16 where the CPU has
    AVX512_BF16 (dot_gemm), from DOT_MIN_HIDDEN up. A
    property of the module, never of a call's batch, so that every path gives
    a row the same numbers."""
    if weights not in ("int8", "bfloat16") or not dot_hidden(hidden):
        return False
    if dot is not None:
        return dot
    cpu_has = DOT_BY_DEFAULT if weights == "int8" else BF16_DOT_BY_DEFAULT
    return cpu_has and hidden >= DOT_MIN_HIDDEN[weights]


def dot_hidden(H: int) -> bool:
    """Whether quantized layers of hidden size H can have the dot layouts (one of
    dot_default's conditions): H a multiple of DOT_NR, as the one-call streaming step's
    fused cell needs, so that every path a layer's rows can take puts them on
    the same activation grids (docs/quantization.md); and within dot_fits."""
    return H % DOT_NR == 0 and dot_fits(H)


def first_dot_hidden(weights: str) -> int:
    """The smallest hidden size whose quantized layers take the dot layouts by
    default where the CPU has the format's instruction."""
    return -(-max(DOT_MIN_HIDDEN[weights], 1) // DOT_NR) * DOT_NR


@dataclass(frozen=True)
class PackedLayer:
    """One recurrent layer, all directions, in kernel layout (D directions, G =
    cell.gates * H gate columns per direction).

    w_ih (I, D*G): W_ih^T of every direction side by side, so one matmul
        projects the input for all of them; bias (D*G,) the x side's bias
        (cells.Cell.split_bias: b_ih, plus b_hh on the summed gates).
    w_hh (D, H_out, G): W_hh^T.   w_hr (D, H, H_out): W_hr^T, or (D, 0, 0).
    step_bias (D, 2, G): per direction the x side's bias and the h side's
        (b_hh on the gates the cell keeps apart, zeros elsewhere).
    cell_params (D, P, H): the cell's own parameters (a LayerNorm LSTM's), or
        (D, 0, 0).
    """

    w_ih: np.ndarray
    bias: np.ndarray
    w_hh: np.ndarray
    w_hr: np.ndarray
    step_bias: np.ndarray
    cell_params: np.ndarray
    cell: Cell = LSTM
    # A quantized module's stored weights as the kernels read them: (format,
    # per direction (W_hh^T (H_out, G), each column's scale (G,)), per
    # direction W_ih^T and its scales alike, or None); None for a float layer.
    stored: tuple | None = None
    # Whether the input is the hidden state of the layer below (every layer but
    # a stack's first): the int8 dot kernels put it on h's 8-bit grid.
    input_is_hidden: bool = False

    def dot_layout(self, dot: bool | None = None) -> tuple | None:
        """(hh, ih) for the large-batch steps and input projection on a dot
        kernel (cpu.layer, cpu.projection), made on first use: each
        (w_dot (D, P, K4, 4 * DOT_NR), offset (D, G) int32, scale (D, G)),
        every direction's stored W^T in dot_gemm's layout (int8 quads, or
        bfloat16 pairs in uint8), ih None without a stored W_ih or one too
        long for the dot's sums. None unless a quantized layer that
        dot_default(format, H, ``dot``) takes, with H_out within dot_fits."""
        H_out, G = self.w_hh.shape[1:]
        if (self.stored is None or not dot_default(self.stored[0], self.hidden_size, dot)
                or not dot_fits(H_out)):
            return None
        if "_dot_layout" not in self.__dict__:
            _, hh, ih = self.stored  # per direction
            fits = ih is not None and dot_fits(self.w_ih.shape[0])
            self.__dict__["_dot_layout"] = (_stacked_dot_layout(hh),
                                            _stacked_dot_layout(ih) if fits else None)
        return self.__dict__["_dot_layout"]

    def panels(self) -> tuple[np.ndarray, np.ndarray]:
        """(w_ih (D, P, I, NR), w_hh (D, P', H_out, NR)): each direction's W_ih^T
        and W_hh^T packed for cpu.panel_gemm, made on first use (only the
        threaded and large-batch paths need them), on cache lines (cpu.aligned)."""
        return (self._panels_per_direction("_w_ih_panels", self._w_ih_of),
                self._panels_per_direction("_w_hh_panels", lambda d: self.w_hh[d]))

    def input_and_hidden_panels(self) -> np.ndarray:
        """(D, P, I + H_out, NR): each direction's [W_ih; W_hh]^T packed for
        cpu.panel_gemm, made on first use, for a step that projects its own
        input: its operand is [x, h] side by side (cpu.layer)."""
        return self._panels_per_direction(
            "_input_and_hidden_panels", lambda d: np.concatenate([self._w_ih_of(d), self.w_hh[d]]))

    def _w_ih_of(self, d: int) -> np.ndarray:
        """Direction d's W_ih^T (I, G), a view."""
        G = self.w_hh.shape[2]
        return self.w_ih[:, d * G:(d + 1) * G]

    def _panels_per_direction(self, key: str, weights_of) -> np.ndarray:
        """weights_of(d) (K, 4H) of every direction d packed by pack_panels,
        stacked (D, P, K, NR) on a cache line; made once, kept under key."""
        if key not in self.__dict__:
            self.__dict__[key] = aligned_copy(np.stack([
                pack_panels(weights_of(d), GEMM_PANEL_VECTORS)
                for d in range(self.num_directions)]))
        return self.__dict__[key]

    @property
    def num_directions(self) -> int:
        return self.w_hh.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.w_hh.shape[2] // self.cell.gates

    @property
    def state_size(self) -> int:
        """Width of the cell state c: H, or 0 for cells whose state is h alone."""
        return self.hidden_size if self.cell.has_cell_state else 0

    @property
    def output_size(self) -> int:
        return self.w_hh.shape[1]

    def direction_stacks(self) -> tuple[PackedStack, ...]:
        """Each direction of this layer as a stack of one layer and one
        direction (what the team's job runs: cpu.cooperative), made on first
        use; the arrays are copies, so each direction's are contiguous. A
        quantized layer's stacks carry that direction's stored weights, and
        whether the input is the layer below's h (its grid, not x's)."""
        if "_direction_stacks" not in self.__dict__:
            self.__dict__["_direction_stacks"] = tuple(
                self._direction_stack(d) for d in range(self.num_directions))
        return self.__dict__["_direction_stacks"]

    def _direction_stack(self, d: int) -> PackedStack:
        G = self.w_hh.shape[2]
        stored = None
        if self.stored is not None:
            weights, hh, ih = self.stored
            stored = (weights, [hh[d]], None if ih is None else [ih[d]])
        stack = PackedStack([PackedLayer(*(
            aligned_copy(a) for a in (self._w_ih_of(d), self.bias[d * G:(d + 1) * G],
                                      self.w_hh[d:d + 1], self.w_hr[d:d + 1],
                                      self.step_bias[d:d + 1], self.cell_params[d:d + 1])),
            self.cell, stored, self.input_is_hidden)])
        if stored is not None:  # what the team's job reads (PackedStack.quantized)
            stack.quantized = stored
        return stack


def pack_layer(directions, dtype, cell: Cell = LSTM, cell_params=None) -> PackedLayer:
    """directions: one (w_ih, w_hh, b_ih, b_hh, w_hr) tuple per direction, torch layout;
    biases and w_hr may be None. cell_params: one (P, H) array per direction, or None."""
    w_ih, step_bias, w_hh, w_hr, cell_params = cell.host_layout(directions, dtype, cell_params)
    bias = step_bias[:, 0].reshape(-1)  # (D*G,)
    return PackedLayer(*(aligned_copy(a) for a in (w_ih, bias, w_hh, w_hr, step_bias,
                                                   cell_params)), cell)


class PackedStack(list):
    """The layers of one recurrent network, in order (a list of PackedLayer).

    ``step`` is (w_ih0 (1, I, 4H), w_ih_rest (L-1, H, 4H), bias (L, 4H),
    w_hh (L, H, 4H)) for stacks the one-call streaming kernel can run (LSTM,
    one direction, no projection), else None. The layers' arrays are views into
    these, so the weights are held once.
    """

    step: tuple | None = None
    # (format, per layer (W_hh^T (H, G) as stored, per-column scale (G,)), per
    # layer W_ih^T and its scales alike, or None) for a quantized stack of one
    # direction without projection (what the team's job and an LSTM's streaming
    # step read; numba_lstm.quantization), else None.
    quantized: tuple | None = None

    def team_blocks(self, n_blocks: int) -> tuple[np.ndarray, ...]:
        """The weights cut by hidden units for numba_lstm.cpu.cooperative
        (one direction, no projection), made on first use:

        w_ih0 (n_blocks, P_x, I, NR_x) and w_ih_rest (L-1, n_blocks, P_x, H,
        NR_x): each block's W_ih^T columns of layer 0 and of the others, in the
        large-batch GEMM's panels (the projections have T*B rows); bias
        (L, n_blocks, GU) the x side's (b_ih, plus b_hh on summed gates);
        w_hh (L, n_blocks, P, H, NR) each block's W_hh^T in two-vector panels
        (cpu.row_step's layout at batch 1); bias_h (L, n_blocks, GU) b_hh on
        the unsummed gates (GRU's n), or (L, n_blocks, 0) for cells with none.
        U = ceil(H / n_blocks); block q holds each gate's columns of units
        q*U .. q*U+U-1 (zeros past H), gate by gate, so a thread computing
        those units streams contiguous matrices. Each array starts on a cache
        line (cpu.aligned).
        """
        cache = self.__dict__.setdefault("_team_blocks", {})
        if n_blocks not in cache:
            H = self[0].hidden_size
            U = -(-H // n_blocks)
            cell = self[0].cell

            def cut(w):  # (K, gates*H) -> (n_blocks, K, gates*U)
                return _cut_units(w, n_blocks, U, cell.gates)

            def cut_panels(w, vectors=2):  # (K, gates*H) -> (n_blocks, P, K, NR)
                return np.stack([pack_panels(block, vectors) for block in cut(w)])

            w_ih = [cut_panels(layer.w_ih, GEMM_PANEL_VECTORS) for layer in self]
            bias_h = np.stack([cut(layer.step_bias[0, 1][None])[:, 0] for layer in self])
            if cell.summed_gates == cell.gates:
                bias_h = bias_h[:, :, :0]
            cache[n_blocks] = tuple(aligned_copy(a) for a in (
                w_ih[0],
                np.stack(w_ih[1:]) if len(self) > 1 else np.zeros((0,) + w_ih[0].shape[:2]
                                                                   + (H,) + w_ih[0].shape[3:],
                                                                   w_ih[0].dtype),
                np.stack([cut(layer.bias[None])[:, 0] for layer in self]),
                np.stack([cut_panels(layer.w_hh[0]) for layer in self]),
                bias_h))
        return cache[n_blocks]

    def team_quantized_blocks(self, n_blocks: int) -> tuple[np.ndarray, ...]:
        """(w_i8, w_bf16, scale, w_dot, offset) for numba_lstm.cpu.cooperative:

        w_i8 or w_bf16 (L, n_blocks, P, H, NR): the stored W_hh^T cut and packed
        as team_blocks' w_hh (bfloat16 rows interleaved: interleave_bf16), as
        int8 or bfloat16 bits (cpu.row_step's widening kernel), the other
        (L, 0, 0, 0, 0); scale (L, n_blocks, GU): each column's scale (ones for
        bfloat16). Where dot_default(format, H), a
        quantized stack also gets w_dot (L, n_blocks, P, K4, 4 * DOT_NR), the
        dot kernel's layout (four consecutive int8 k of a column side by side,
        or two bfloat16), and offset (L, n_blocks, GU) int32, 128 x each
        column's weight sum (0 for bfloat16).
        Absent parts are (L, 0, ...); all are for a float stack.
        """
        cache = self.__dict__.setdefault("_team_quantized", {})
        if n_blocks not in cache:
            cache[n_blocks] = self._quantized_blocks(n_blocks)
        return cache[n_blocks]

    def team_has_pairs(self, n_blocks: int) -> bool:
        """Whether team_quantized_blocks' dot layout holds bfloat16 pairs (its
        job is then cooperative.BF16_DOT_FLOAT32's)."""
        return (self.quantized is not None
                and self.team_quantized_blocks(n_blocks)[3].dtype == np.uint8)

    def team_quantized_projection(self, n_blocks: int, dot: bool | None = None
                                  ) -> tuple[np.ndarray, ...]:
        """(ih0, ih_rest, offset, scale) for the team's quantized input projections
        (cpu.cooperative), made on first use: each block's stored W_ih^T in
        the dot layout, layer 0's (n_blocks, P, K4, 4 * DOT_NR) and the other
        layers' (L-1, n_blocks, P, K4, ...), each column's offset (128 x its
        weight sum) and scale (L, n_blocks, GU), GU = gates x U. Each array has
        0 blocks unless a quantized stack with its stored W_ih, GU a multiple of DOT_NR,
        every K within dot_fits and dot_default(format, H, ``dot``)."""
        cache = self.__dict__.setdefault("_team_quantized_projection", {})
        key = (n_blocks, dot)
        if key not in cache:
            q, L, H = self.quantized, len(self), self[0].hidden_size
            U, gates = -(-H // n_blocks), self[0].cell.gates
            if (q is None or not dot_default(q[0], H, dot) or len(q) < 3 or q[2] is None
                    or gates * U % DOT_NR
                    or not all(dot_fits(w.shape[0]) for w, _ in q[2])):
                empty = np.zeros((0, 0, 0, 0), np.int8)
                cache[key] = (empty, np.zeros((max(L - 1, 0), 0, 0, 0, 0), np.int8),
                              np.zeros((L, 0, 0), np.int32), np.zeros((L, 0, 0), np.float32))
            else:
                dots, offsets, scales = [], [], []
                for w, scale in q[2]:  # per layer: W_ih^T (K, G) int8, (G,)
                    blocks = _cut_units(w, n_blocks, U, gates)  # (n_blocks, K, gates*U)
                    quads, offset = _dot_blocks(blocks)
                    dots.append(quads)
                    offsets.append(offset)
                    scales.append(_cut_units(scale[None], n_blocks, U, gates)[:, 0])
                rest = (np.stack(dots[1:]) if L > 1 else
                        np.zeros((0, n_blocks, dots[0].shape[1], -(-H // _k_per_lane(w)),
                                  4 * DOT_NR), dots[0].dtype))
                cache[key] = (aligned_copy(dots[0]), aligned_copy(rest),
                              aligned_copy(np.stack(offsets).astype(np.int32)),
                              aligned_copy(np.stack(scales).astype(np.float32)))
        return cache[key]

    def quantized_step(self, dot: bool | None = None) -> tuple | None:
        """The dot kernel's weights for the one-call streaming step
        (cpu.streaming.lstm_stack_step_dot), made on first use: (ih0, ih_rest,
        hh), each (w_dot, offset, scale) as dot_gemm's kernels read them:
        layer 0's W_ih^T (P, K4, 4 * DOT_NR), the other layers' (L-1, ...) and
        every layer's W_hh^T (L, ...), with (.., 4H) int32 offsets and float32
        scales. None unless a quantized stack with its stored W_ih that
        ``step`` runs, every K within dot_fits and
        dot_default(format, H, ``dot``)."""
        q = self.quantized
        if (q is None or not dot_default(q[0], self[0].hidden_size, dot) or len(q) < 3
                or q[2] is None or self.step is None
                or not all(dot_fits(w.shape[0]) for w, _ in [*q[1], *q[2]])):
            return None
        cache = self.__dict__.setdefault("_quantized_step", {})
        if not cache:  # per layer
            hh = _stacked_dot_layout(q[1])
            # The layers above the first read (H, 4H) like W_hh: with one layer,
            # empty arrays of that shape, so that the kernel's types are one.
            ih_rest = (_stacked_dot_layout(q[2][1:]) if len(q[2]) > 1
                       else tuple(a[:0] for a in hh))
            cache["step"] = (tuple(a[0] for a in _stacked_dot_layout(q[2][:1])), ih_rest, hh)
        return cache["step"]

    def _quantized_blocks(self, n_blocks: int) -> tuple[np.ndarray, ...]:
        L = len(self)
        i8 = np.zeros((L, 0, 0, 0, 0), np.int8)
        bf16 = np.zeros((L, 0, 0, 0, 0), np.uint16)
        no_offset = np.zeros((L, 0, 0), np.int32)
        if self.quantized is None:
            return i8, bf16, np.zeros((L, 0, 0), np.float32), i8, no_offset
        H = self[0].hidden_size
        U, gates = -(-H // n_blocks), self[0].cell.gates
        w_q, scales, w_dot, offsets = [], [], [], []
        for w, scale in self.quantized[1]:
            blocks = _cut_units(w, n_blocks, U, gates)  # (n_blocks, H, gates*U)
            panels = np.stack([pack_panels(b, widened_to=np.float32) for b in blocks])
            w_q.append(interleave_bf16(panels) if w.dtype == np.uint16 else panels)
            scales.append(_cut_units(scale[None], n_blocks, U, gates)[:, 0])
            if dot_default(self.quantized[0], H):
                quads, offset = _dot_blocks(blocks)
                w_dot.append(quads)
                offsets.append(offset)
        w_q = aligned_copy(np.stack(w_q))
        int8 = w_q.dtype == np.int8
        return (w_q if int8 else i8, bf16 if int8 else w_q,
                aligned_copy(np.stack(scales).astype(np.float32)),
                aligned_copy(np.stack(w_dot)) if w_dot else i8,
                aligned_copy(np.stack(offsets).astype(np.int32)) if offsets else no_offset)


def interleave_bf16(panels: np.ndarray) -> np.ndarray:
    """bfloat16 two-vector panels (..., NR) with each row's two vectors'
    columns interleaved: column c of the first at 2c, of the second at 2c + 1,
    so that one load gives both as the low and high halves of 32-bit lanes
    (simd.vload_bf16_halves)."""
    L = panels.shape[-1] // 2
    halves = panels.reshape(*panels.shape[:-1], 2, L)
    return np.ascontiguousarray(np.swapaxes(halves, -1, -2)).reshape(panels.shape)


def _dot_blocks(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 blocks (n, K, N) -> the dot kernels' layout (n, P, K4, 4 * DOT_NR)
    and each column's offset (n, N) int32: 128 x its weight sum, which the
    kernels subtract for the high activation byte's +128. bfloat16 blocks
    (uint16 bits) -> (n, P, K2, 4 * DOT_NR) uint8 pairs, and zero offsets."""
    if blocks.dtype == np.uint16:
        return (np.stack([_pack_pairs(b) for b in _k_filling_tiles(blocks)]),
                np.zeros(blocks.shape[::2], np.int32))
    return (np.stack([_pack_quads(b) for b in blocks]),
            128 * blocks.astype(np.int32).sum(axis=1, dtype=np.int32))


def _k_filling_tiles(blocks: np.ndarray) -> np.ndarray:
    """bfloat16 blocks (n, K, N) with zero rows past K up to a multiple of an
    AMX-BF16 tile's 32 k where the CPU has AMX-BF16, so that every product
    takes the tiles (dot_gemm.every_row_on_tiles), an input projection of
    any I included; the rows' activations are zero there too
    (activation_grids pads them)."""
    K, fill = blocks.shape[1], 2 * AMX_ROWS
    if not HAS_AMX_BF16 or K % fill == 0:
        return blocks
    return np.pad(blocks, ((0, 0), (0, -K % fill), (0, 0)))


def _k_per_lane(w: np.ndarray) -> int:
    """k a 32-bit lane of the dot layout holds: 4 int8, or 2 bfloat16."""
    return 2 if w.dtype == np.uint16 else 4


def _pack_pairs(w: np.ndarray) -> np.ndarray:
    """bfloat16 bits W (K, N) uint16 -> (P, K2, 4 * DOT_NR) uint8: panel p's row
    k2 holds, column by column, w[2*k2, column] then w[2*k2+1, column] (the
    even k in each 32-bit lane's low half, as vdpbf16ps pairs them); zeros
    past K and N."""
    K, N = w.shape
    K2, P = -(-K // 2), -(-N // DOT_NR)
    padded = np.zeros((2 * K2, P * DOT_NR), np.uint16)
    padded[:K, :N] = w
    pairs = padded.reshape(K2, 2, P, DOT_NR).transpose(2, 0, 3, 1).astype("<u2")
    return np.ascontiguousarray(pairs).view(np.uint8).reshape(P, K2, 4 * DOT_NR)


def _stacked_dot_layout(pairs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[(int8 W^T (K, N), each column's scale (N,))] -> (w_dot (n, P, K4,
    4 * DOT_NR), offset (n, N) int32, scale (n, N) float32), on cache lines:
    n matrices (layers, or directions) stacked as the dot kernels read them."""
    quads, offset = _dot_blocks(np.stack([w for w, _ in pairs]))
    return (aligned_copy(quads), aligned_copy(offset),
            aligned_copy(np.stack([scale for _, scale in pairs]).astype(np.float32)))


def _pack_quads(w: np.ndarray) -> np.ndarray:
    """int8 W (K, N) -> (P, K4, 4 * DOT_NR): panel p's row k4 holds, column by
    column, w[4*k4 .. 4*k4+3, column]; zeros past K and N."""
    K, N = w.shape
    K4, P = -(-K // 4), -(-N // DOT_NR)
    padded = np.zeros((4 * K4, P * DOT_NR), np.int8)
    padded[:K, :N] = w
    return np.ascontiguousarray(
        padded.reshape(K4, 4, P, DOT_NR).transpose(2, 0, 3, 1).reshape(P, K4, 4 * DOT_NR))


def _cut_units(w: np.ndarray, n_blocks: int, U: int, gates: int = 4) -> np.ndarray:
    """(K, gates*H) -> (n_blocks, K, gates*U): block q holds each gate's columns
    of units q*U .. q*U+U-1, gate by gate, zeros past H."""
    H = w.shape[1] // gates
    padded = np.zeros((w.shape[0], gates, n_blocks * U), w.dtype)
    padded[:, :, :H] = w.reshape(w.shape[0], gates, H)
    return padded.reshape(w.shape[0], gates, n_blocks, U).transpose(2, 0, 1, 3).reshape(
        n_blocks, w.shape[0], gates * U)


def pack_stack(layers: list, dtype, cell: Cell = LSTM, cell_params=None,
               quantized=None) -> PackedStack:
    """layers: per layer, the ``directions`` argument of pack_layer; cell_params:
    per layer, its argument of that name (or None). quantized: (format, per
    layer per direction the stored W_hh (numba_lstm.quantization.store)[, the
    stored W_ih alike]) of a quantized module, whose float32 values ``layers``
    holds; the team's batch-1 steps and the streaming step read the stored
    form."""
    cell_params = cell_params or [None] * len(layers)
    packed = [replace(pack_layer(directions, dtype, cell, p), input_is_hidden=n > 0)
              for n, (directions, p) in enumerate(zip(layers, cell_params, strict=True))]
    if quantized is not None:
        weights, stored_hh, *stored_ih = quantized
        packed = [replace(layer, stored=(
            weights, [_transposed(weights, s) for s in stored_hh[n]],
            [_transposed(weights, s) for s in stored_ih[0][n]] if stored_ih else None))
            for n, layer in enumerate(packed)]
    stack = PackedStack(packed)
    if packed[0].num_directions != 1 or packed[0].w_hr.shape[1] != 0:
        return stack
    if quantized is not None:  # what the team's job reads (LSTM or GRU): the layers' W^T
        weights, _, ih = packed[0].stored
        stack.quantized = (weights, [layer.stored[1][0] for layer in packed],
                           None if ih is None else [layer.stored[2][0] for layer in packed])
    if cell is not LSTM:
        return stack
    w_ih0 = packed[0].w_ih[None]
    w_ih_rest = aligned_copy(np.stack([k.w_ih for k in packed[1:]]) if len(packed) > 1 else
                             np.zeros((0,) + packed[0].w_hh.shape[1:], dtype))
    bias = aligned_copy(np.stack([k.bias for k in packed]))
    w_hh = aligned_copy(np.concatenate([k.w_hh for k in packed]))
    stack[:] = [PackedLayer(w_ih0[0] if n == 0 else w_ih_rest[n - 1], bias[n], w_hh[n:n + 1],
                            packed[n].w_hr, packed[n].step_bias, packed[n].cell_params,
                            stored=packed[n].stored, input_is_hidden=n > 0)
                for n in range(len(packed))]
    stack.step = (w_ih0, w_ih_rest, bias, w_hh)
    return stack


def _transposed(weights: str, stored: tuple) -> tuple[np.ndarray, np.ndarray]:
    """A stored W_hh (4H, H) or W_ih (4H, I) as the kernels read it: W^T (K, 4H),
    and each column's scale (4H,) (ones for bfloat16)."""
    w = np.ascontiguousarray(stored[0].T)
    scale = stored[1] if weights == "int8" else np.ones(w.shape[1], np.float32)
    return w, np.asarray(scale, np.float32)
