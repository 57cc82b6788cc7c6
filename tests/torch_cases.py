"""Run torch.nn.LSTM, GRU and RNN the way numba_lstm promises to reproduce them.

Shared by the live parity tests and tests/make_golden.py. Imports torch: only
import this module where torch is present.
"""

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def make_case(*, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
              bidirectional=False, proj_size=0, batched=True, with_hx=False,
              with_lengths=False, dtype=np.float32, steps=5, batch=3, seed=0, family="LSTM",
              nonlinearity="tanh"):
    """Build a torch LSTM/GRU/RNN and inputs, run it under inference_mode, return
    NumPy arrays. ``expected`` is (output, h_n, c_n), c_n None but for an LSTM."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    kwargs = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
                  bidirectional=bidirectional)
    if family == "LSTM":
        kwargs["proj_size"] = proj_size
    if family == "RNN":
        kwargs["nonlinearity"] = nonlinearity
    module = getattr(torch.nn, family)(input_size, hidden_size, **kwargs).to(TORCH_DTYPE[dtype])
    D = 2 if bidirectional else 1
    h_out = proj_size or hidden_size
    x_shape = ((batch, steps) if batch_first else (steps, batch)) if batched else (steps,)
    x = rng.standard_normal(x_shape + (input_size,)).astype(dtype)
    lead = (num_layers * D, batch) if batched else (num_layers * D,)
    hx = None
    if with_hx:
        hx = (rng.standard_normal(lead + (h_out,)).astype(dtype),
              rng.standard_normal(lead + (hidden_size,)).astype(dtype))
        if family != "LSTM":
            hx = hx[0]
    lengths = None
    if with_lengths:
        lengths = rng.integers(1, steps + 1, size=batch)
        lengths[rng.integers(batch)] = steps
    with torch.inference_mode():
        if hx is None:
            thx = None
        elif family == "LSTM":
            thx = tuple(torch.from_numpy(a) for a in hx)
        else:
            thx = torch.from_numpy(hx)
        xt = torch.from_numpy(x)
        if lengths is None:
            out, state = module(xt, thx)
        else:
            packed = pack_padded_sequence(xt, torch.from_numpy(lengths), batch_first=batch_first,
                                          enforce_sorted=False)
            out, state = module(packed, thx)
            out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=steps)
    h_n, c_n = state if family == "LSTM" else (state, None)
    params = {k: t.detach().numpy().copy() for k, t in module.state_dict().items()}
    return dict(params=params, x=x, hx=hx, lengths=lengths,
                expected=(out.numpy(), h_n.numpy(), None if c_n is None else c_n.numpy()))
