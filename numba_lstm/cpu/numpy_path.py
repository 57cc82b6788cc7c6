"""A whole stack in NumPy on the packed weights: nothing to compile.

The strategy a process runs while its compiled kernels are not ready yet
(cpu.warm): a cold cache would otherwise make the first call wait 15-25 s for
Numba. One step at a time, every direction and layer, with the cells' own
NumPy form (cells.Cell.reference_step), so any cell, projection, lengths and
quantized weights (their float32 values, which the packed layers hold) run
here as in the kernels, to the same tolerances.
"""

from __future__ import annotations

import numpy as np

from .packing import PackedLayer, PackedStack


def numpy_forward(layers: PackedStack, x, h0, c0, lengths):
    """forward's contract: x (T, B, I); h0 (L*D, B, H_out), c0 (L*D, B, Hc) or
    None for zeros; lengths (B,) int64 or None. Returns output (T, B, D*H_out),
    h_n (L*D, B, H_out), c_n (L*D, B, Hc)."""
    T, B = x.shape[:2]
    first = layers[0]
    D, dtype = first.num_directions, first.w_hh.dtype
    n = len(layers) * D
    h0 = np.zeros((n, B, first.output_size), dtype) if h0 is None else h0
    c0 = np.zeros((n, B, first.state_size), dtype) if c0 is None else c0
    # (T, B, 1): which rows still run at each step
    valid = (np.ones((T, B), bool) if lengths is None
             else np.arange(T)[:, None] < np.asarray(lengths)[None, :])[..., None]
    h_n, c_n = np.empty_like(h0), np.empty_like(c0)
    out = x
    for k, layer in enumerate(layers):
        outputs = []
        for d in range(D):
            i = k * D + d
            y, h_n[i], c_n[i] = _direction(out, layer, d, h0[i], c0[i], valid)
            outputs.append(y)
        out = outputs[0] if D == 1 else np.concatenate(outputs, axis=-1)
    return np.ascontiguousarray(out), h_n, c_n


def _direction(x, layer: PackedLayer, d: int, h, c, valid):
    """Direction d of one layer over x (T, B, I): output (T, B, H_out), h_T, c_T."""
    T, B, I = x.shape
    cell = layer.cell
    G = layer.w_hh.shape[2]
    w_hr = layer.w_hr[d] if layer.w_hr.shape[1] else None  # (H, H_out) W_hr^T
    p = layer.cell_params[d] if layer.cell_params.shape[1] else None
    # (T, B, G) x @ W_ih^T + the x side's bias, every step at once
    gx = (x.reshape(T * B, I) @ layer.w_ih[:, d * G:(d + 1) * G]).reshape(T, B, G)
    gx += layer.step_bias[d, 0]
    c = c if cell.has_cell_state else None
    out = np.zeros((T, B, layer.output_size), layer.w_hh.dtype)
    # With a projection the LSTM cell reads no h (it is H_out wide, not H): zeros
    # of the cell's width stand in, every step.
    h_unread = None if w_hr is None else np.zeros((B, layer.hidden_size), h.dtype)
    for t in range(T - 1, -1, -1) if d == 1 else range(T):
        gh = h @ layer.w_hh[d] + layer.step_bias[d, 1]  # (B, G)
        h_new, c_new = cell.reference_step(gx[t], gh, h if w_hr is None else h_unread, c, p)
        if w_hr is not None:
            h_new = h_new @ w_hr
        h = np.where(valid[t], h_new, h)
        c = None if c is None else np.where(valid[t], c_new, c)
        out[t] = np.where(valid[t], h_new, 0)
    return out, h, np.zeros((B, 0), out.dtype) if c is None else c
