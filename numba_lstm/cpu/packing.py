"""Weights laid out once, at load time, the way the CPU kernels stream them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PackedLayer:
    """One LSTM layer, all directions, in kernel layout (D = number of directions).

    w_ih (I, D*4H): W_ih^T of every direction side by side, so one matmul
        projects the input for all of them; bias (D*4H,) is b_ih + b_hh.
    w_hh (D, H_out, 4H): W_hh^T.   w_hr (D, H, H_out): W_hr^T, or (D, 0, 0).
    """

    w_ih: np.ndarray
    bias: np.ndarray
    w_hh: np.ndarray
    w_hr: np.ndarray
    # n_blocks -> W_hh^T cut into column blocks, made on first use (w_hh_blocks).
    _blocks: dict = field(default_factory=dict, compare=False, repr=False)

    def w_hh_blocks(self, n_blocks: int) -> np.ndarray:
        """(n_blocks, H_out, 4U) with U = ceil(H / n_blocks): block q holds the
        i, f, g, o columns of hidden units q*U .. q*U+U-1 (zeros past H), so a
        thread computing those units streams one contiguous matrix."""
        blocks = self._blocks.get(n_blocks)
        if blocks is None:
            w = self.w_hh[0]  # (H_out, 4H), direction 0
            K, H = w.shape[0], self.hidden_size
            U = -(-H // n_blocks)
            padded = np.zeros((K, 4, n_blocks * U), w.dtype)
            padded[:, :, :H] = w.reshape(K, 4, H)
            blocks = np.ascontiguousarray(
                padded.reshape(K, 4, n_blocks, U).transpose(2, 0, 1, 3).reshape(n_blocks, K, 4 * U))
            self._blocks[n_blocks] = blocks
        return blocks

    @property
    def num_directions(self) -> int:
        return self.w_hh.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.w_hh.shape[2] // 4

    @property
    def output_size(self) -> int:
        return self.w_hh.shape[1]


def pack_layer(directions, dtype) -> PackedLayer:
    """directions: one (w_ih, w_hh, b_ih, b_hh, w_hr) tuple per direction, torch layout;
    biases and w_hr may be None."""
    w_ih = np.concatenate([np.asarray(dw[0], dtype).T for dw in directions], axis=1)
    bias = np.concatenate([
        np.zeros(dw[1].shape[0], dtype) if dw[2] is None
        else np.asarray(dw[2], dtype) + np.asarray(dw[3], dtype)
        for dw in directions
    ])
    w_hh = np.stack([np.asarray(dw[1], dtype).T for dw in directions])
    if directions[0][4] is None:
        w_hr = np.zeros((len(directions), 0, 0), dtype)
    else:
        w_hr = np.stack([np.asarray(dw[4], dtype).T for dw in directions])
    return PackedLayer(*(np.ascontiguousarray(a) for a in (w_ih, bias, w_hh, w_hr)))


class PackedStack(list):
    """The layers of one LSTM, in order (a list of PackedLayer).

    ``step`` is (w_ih0 (1, I, 4H), w_ih_rest (L-1, H, 4H), bias (L, 4H),
    w_hh (L, H, 4H)) for stacks the one-call streaming kernel can run (one
    direction, no projection), else None. The layers' arrays are views into
    these, so the weights are held once.
    """

    step: tuple | None = None


def pack_stack(layers: list, dtype) -> PackedStack:
    """layers: per layer, the ``directions`` argument of pack_layer."""
    packed = [pack_layer(directions, dtype) for directions in layers]
    stack = PackedStack(packed)
    if packed[0].num_directions != 1 or packed[0].w_hr.shape[1] != 0:
        return stack
    w_ih0 = packed[0].w_ih[None]
    w_ih_rest = np.ascontiguousarray(np.stack([k.w_ih for k in packed[1:]])
                                     if len(packed) > 1 else
                                     np.zeros((0,) + packed[0].w_hh.shape[1:], dtype))
    bias = np.stack([k.bias for k in packed])
    w_hh = np.concatenate([k.w_hh for k in packed])
    stack[:] = [PackedLayer(w_ih0[0] if n == 0 else w_ih_rest[n - 1], bias[n], w_hh[n:n + 1],
                            packed[n].w_hr) for n in range(len(packed))]
    stack.step = (w_ih0, w_ih_rest, bias, w_hh)
    return stack
