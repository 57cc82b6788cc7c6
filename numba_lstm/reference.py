"""Pure-NumPy LSTM, GRU and RNN: the readable oracle every kernel is tested against.

No Numba, no tricks: one time step at a time, torch's gate order (i, f, g, o),
torch's parameter names and shapes. It computes in the dtype of its inputs, so
passing float64 arrays gives a high-precision answer for float32 kernels.

    i = σ(W_ii x + b_ii + W_hi h + b_hi)
    f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)
    o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')            (then h' = W_hr h' when proj_size > 0)

The LSTM is written out here by hand; GRU and RNN run their cells' math
(numba_lstm.cells, the same text the kernels compile) on NumPy arrays, in
``recurrent``, the layer loop any cell runs through. All of it is checked
against torch (tests/test_parity_torch.py, tests/golden).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .cells import CELLS, Cell


def sigmoid(x: np.ndarray) -> np.ndarray:
    # 0.5 * (1 + tanh(x / 2)) is σ exactly and never overflows, unlike 1 / (1 + exp(-x)).
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """One LSTM step. x (B, I), h (B, H_out), c (B, H) -> (h', c')."""
    gates = x @ w_ih.T + h @ w_hh.T  # (B, 4H)
    if b_ih is not None:
        gates = gates + b_ih + b_hh
    i, f, g, o = np.split(gates, 4, axis=-1)
    c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h_new = sigmoid(o) * np.tanh(c_new)
    if w_hr is not None:
        h_new = h_new @ w_hr.T  # (B, H_out)
    return h_new, c_new


def lstm_direction(x, h0, c0, weights, lengths=None, reverse=False):
    """Run one direction of one layer over time-major x (T, B, I).

    ``lengths`` (B,) marks right-padded sequences: steps at t >= lengths[b] leave
    the state of sequence b untouched and output zeros, so the reverse direction
    effectively starts at each sequence's last valid element.
    Returns output (T, B, H_out), h_T (B, H_out), c_T (B, H).
    """
    T, B = x.shape[:2]
    h, c = h0, c0
    out = np.zeros((T, B, h0.shape[-1]), dtype=np.result_type(x, h0))
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        h_new, c_new = lstm_cell(x[t], h, c, *weights)
        if lengths is None:
            h, c = h_new, c_new
            out[t] = h_new
        else:
            valid = (t < lengths)[:, None]  # (B, 1)
            h = np.where(valid, h_new, h)
            c = np.where(valid, c_new, c)
            out[t] = np.where(valid, h_new, 0)
    return out, h, c


def layer_weights(params: Mapping[str, np.ndarray], layer: int, reverse: bool = False):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer/direction from torch-named params."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return tuple(
        params.get(name + suffix)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
    )


def lstm(x, params, num_layers=1, bidirectional=False, hx=None, lengths=None):
    """Multi-layer (bi)directional LSTM over time-major x (T, B, I), as torch.nn.LSTM.

    ``params`` maps torch names to arrays; ``hx`` is (h0 (D*L, B, H_out), c0 (D*L, B, H)).
    Returns output (T, B, D*H_out), (h_n (D*L, B, H_out), c_n (D*L, B, H)).
    """
    num_dirs = 2 if bidirectional else 1
    w_hh0 = params["weight_hh_l0"]
    hidden = w_hh0.shape[0] // 4
    h_out = w_hh0.shape[1]
    T, B = x.shape[:2]
    if hx is None:
        h0 = np.zeros((num_layers * num_dirs, B, h_out), dtype=x.dtype)
        c0 = np.zeros((num_layers * num_dirs, B, hidden), dtype=x.dtype)
    else:
        h0, c0 = hx
    h_n, c_n = [], []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for d in range(num_dirs):
            k = layer * num_dirs + d
            out, h, c = lstm_direction(
                layer_input, h0[k], c0[k], layer_weights(params, layer, d == 1),
                lengths=lengths, reverse=d == 1,
            )
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_input = np.concatenate(outputs, axis=-1)
    return layer_input, (np.stack(h_n), np.stack(c_n))


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis (biased variance), as torch.nn.LayerNorm."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def layernorm_lstm_cell(x, h, c, params, k, eps=1e-5):
    """One step of cell k of the labml.ai annotated LSTM with layer_norm=True.

    Each gate pre-activation is layer-normalised; c is stored un-normalised and
    h = σ(o) ⊙ tanh(LN_c(c)).
    """
    p = {name[len(f"cells.{k}."):]: v for name, v in params.items()
         if name.startswith(f"cells.{k}.")}
    ifgo = h @ p["hidden_lin.weight"].T + p["hidden_lin.bias"] + x @ p["input_lin.weight"].T
    i, f, g, o = (layer_norm(z, p[f"layer_norm.{n}.weight"], p[f"layer_norm.{n}.bias"], eps)
                  for n, z in enumerate(np.split(ifgo, 4, axis=-1)))
    c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h_new = sigmoid(o) * np.tanh(layer_norm(c_new, p["layer_norm_c.weight"],
                                            p["layer_norm_c.bias"], eps))
    return h_new, c_new


def layernorm_lstm(x, params, num_layers, hx=None, eps=1e-5):
    """The labml.ai LayerNorm LSTM over time-major x (T, B, I).

    Returns output (T, B, H) (the last layer's h), (h_n (L, B, H), c_n (L, B, H)).
    """
    hidden = params["cells.0.hidden_lin.weight"].shape[1]
    T, B = x.shape[:2]
    if hx is None:
        h = [np.zeros((B, hidden), x.dtype) for _ in range(num_layers)]
        c = [np.zeros((B, hidden), x.dtype) for _ in range(num_layers)]
    else:
        h, c = list(hx[0]), list(hx[1])
    out = []
    for t in range(T):
        inp = x[t]
        for k in range(num_layers):
            h[k], c[k] = layernorm_lstm_cell(inp, h[k], c[k], params, k, eps)
            inp = h[k]
        out.append(h[-1])
    return np.stack(out), (np.stack(h), np.stack(c))


def cell_step(cell: Cell, x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, p=None):
    """One step of any cell: x (B, I), h (B, H_out), c (B, H) or None -> (h', c');
    p the cell's own parameters, if it has any."""
    gx = x @ w_ih.T  # (B, gates*H)
    gh = h @ w_hh.T
    if b_ih is not None:
        gx = gx + b_ih
        gh = gh + b_hh
    # With a projection (LSTM only) h is H_out wide, and the LSTM cell never reads it.
    h_in = h if w_hr is None else np.zeros((h.shape[0], w_hh.shape[0] // cell.gates), h.dtype)
    h_new, c_new = cell.reference_step(gx, gh, h_in, c, p)
    if w_hr is not None:
        h_new = h_new @ w_hr.T  # (B, H_out)
    return h_new, c_new


def recurrent(cell: Cell | str, x, params, num_layers=1, bidirectional=False, hx=None,
              lengths=None, cell_params=None):
    """Multi-layer (bi)directional network of ``cell`` over time-major x (T, B, I),
    as torch.nn.LSTM / GRU / RNN. ``hx`` is h0 (D*L, B, H_out), or (h0, c0) for an
    LSTM. cell_params: per layer, per direction, the cell's own parameters (a
    LayerNorm LSTM's), if it has any. Returns output (T, B, D*H_out) and h_n, or
    (h_n, c_n) for an LSTM."""
    cell = CELLS[cell] if isinstance(cell, str) else cell
    D = 2 if bidirectional else 1
    w_hh0 = params["weight_hh_l0"]
    hidden, h_out = w_hh0.shape[0] // cell.gates, w_hh0.shape[1]
    T, B = x.shape[:2]
    if hx is None:
        h0 = np.zeros((num_layers * D, B, h_out), x.dtype)
        c0 = np.zeros((num_layers * D, B, hidden), x.dtype) if cell.has_cell_state else None
    else:
        h0, c0 = hx if cell.has_cell_state else (hx, None)
    h_n, c_n = [], []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for d in range(D):
            k = layer * D + d
            h, c = h0[k], None if c0 is None else c0[k]
            out = np.zeros((T, B, h_out), np.result_type(x, h0))
            for t in (range(T - 1, -1, -1) if d == 1 else range(T)):
                h_new, c_new = cell_step(cell, layer_input[t], h, c,
                                         *layer_weights(params, layer, d == 1),
                                         p=None if cell_params is None else cell_params[layer][d])
                valid = np.ones((B, 1), bool) if lengths is None else (t < lengths)[:, None]
                h = np.where(valid, h_new, h)
                c = None if c is None else np.where(valid, c_new, c)
                out[t] = np.where(valid, h_new, 0)
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_input = np.concatenate(outputs, axis=-1)
    if cell.has_cell_state:
        return layer_input, (np.stack(h_n), np.stack(c_n))
    return layer_input, np.stack(h_n)


def gru(x, params, num_layers=1, bidirectional=False, hx=None, lengths=None):
    """As torch.nn.GRU: returns output (T, B, D*H), h_n (D*L, B, H)."""
    return recurrent("gru", x, params, num_layers, bidirectional, hx, lengths)


def rnn(x, params, num_layers=1, bidirectional=False, hx=None, lengths=None,
        nonlinearity="tanh"):
    """As torch.nn.RNN: returns output (T, B, D*H), h_n (D*L, B, H)."""
    return recurrent("rnn_" + nonlinearity, x, params, num_layers, bidirectional, hx, lengths)
