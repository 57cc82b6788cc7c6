"""GRU, RNN and their cells through the object API, against the NumPy reference
(no torch needed): layouts, state, streams, pickling, repr and bad input."""

import pickle

import numpy as np
import pytest
from conftest import assert_close

import numba_lstm as nl
from numba_lstm import reference

FAMILIES = [("GRU", {}), ("RNN", {}), ("RNN", {"nonlinearity": "relu"})]
IDS = ["gru", "rnn_tanh", "rnn_relu"]


def _module(family, extra, dtype=np.float32, **kw):
    return getattr(nl, family)(5, 7, 2, bidirectional=True, dtype=dtype, **extra, **kw)


def _reference(module, x, hx=None, lengths=None):
    params = {k: v.astype(np.float64) for k, v in module.state_dict().items()}
    cell = module.family.lower()
    if cell == "rnn":
        cell = "rnn_" + module.nonlinearity
    return reference.recurrent(cell, x.astype(np.float64), params, module.num_layers,
                               module.bidirectional,
                               None if hx is None else hx.astype(np.float64), lengths)


@pytest.mark.parametrize("family,extra", FAMILIES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layouts_state_and_lengths_match_the_reference(family, extra, dtype):
    rng = np.random.default_rng(3)
    module = _module(family, extra, dtype)
    x = rng.standard_normal((6, 3, 5)).astype(dtype)
    hx = rng.standard_normal((4, 3, 7)).astype(dtype)
    lengths = np.array([6, 2, 4])
    out, h_n = module(x, hx, lengths=lengths)
    ref_out, ref_h = _reference(module, x, hx, lengths)
    assert out.shape == (6, 3, 14) and h_n.shape == (4, 3, 7) and out.dtype == dtype
    assert_close(out, ref_out, dtype, "output")
    assert_close(h_n, ref_h, dtype, "h_n")
    # batch-first and unbatched give the same numbers
    bf = getattr(nl, family).from_state_dict(module.state_dict(), batch_first=True, dtype=dtype,
                                             **extra)
    out_bf, h_bf = bf(x.transpose(1, 0, 2), hx, lengths=lengths)
    np.testing.assert_array_equal(out_bf, out.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_bf, h_n)
    out_1, h_1 = module(x[:, 1], hx[:, 1])
    ref_1, ref_h1 = _reference(module, x[:, 1:2], hx[:, 1:2])
    assert out_1.shape == (6, 14) and h_1.shape == (4, 7)
    assert_close(out_1, ref_1[:, 0], dtype, "unbatched output")
    assert_close(h_1, ref_h1[:, 0], dtype, "unbatched h_n")


@pytest.mark.parametrize("family,extra", FAMILIES, ids=IDS)
def test_stream_in_chunks_equals_one_call(family, extra):
    rng = np.random.default_rng(4)
    module = getattr(nl, family)(5, 7, 2, **extra)  # one direction: a stream runs forward
    x = rng.standard_normal((9, 2, 5)).astype(np.float32)
    whole, h_n = module(x)
    stream = module.stream()
    parts = [stream(x[a:b]) for a, b in ((0, 1), (1, 5), (5, 6), (6, 9))]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-6)
    assert isinstance(stream.state, np.ndarray)  # h alone, as GRU's and RNN's hx
    np.testing.assert_allclose(stream.state, h_n, rtol=0, atol=1e-6)
    state = stream.state
    stream.reset()
    stream.state = state  # settable, and a copy: later writes do not reach the stream
    state[:] = 99
    np.testing.assert_allclose(stream.state, h_n, rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="must be one array h_0"):
        stream.state = (h_n, h_n)


@pytest.mark.parametrize("family,extra", FAMILIES, ids=IDS)
def test_pickle_repr_and_state_dict_round_trip(family, extra):
    module = _module(family, extra, np.float64, batch_first=True)
    clone = pickle.loads(pickle.dumps(module))
    x = np.random.default_rng(5).standard_normal((2, 4, 5))
    np.testing.assert_array_equal(clone(x)[0], module(x)[0])
    suffix = ", nonlinearity='relu'" if extra else ""
    assert repr(module) == (f"{family}(5, 7, num_layers=2, batch_first=True, bidirectional=True"
                            f"{suffix}, dtype=float64)")
    sd = module.state_dict()
    assert sd["weight_ih_l0"].shape == ((21 if family == "GRU" else 7), 5)
    again = getattr(nl, family).from_state_dict(sd, batch_first=True, **extra)
    assert again.dtype == np.float64 and again.bidirectional and again.num_layers == 2
    np.testing.assert_array_equal(again(x)[0], module(x)[0])


@pytest.mark.parametrize("name,extra", [("GRUCell", {}), ("RNNCell", {}),
                                        ("RNNCell", {"nonlinearity": "relu"})])
def test_cells_are_one_step_of_their_layer(name, extra):
    rng = np.random.default_rng(6)
    cell = getattr(nl, name)(5, 7, **extra)
    layer = getattr(nl, name[:-4])(5, 7, **extra).load_state_dict(
        {k + "_l0": v for k, v in cell.state_dict().items()})
    x, h = rng.standard_normal((3, 5)), rng.standard_normal((3, 7))
    h1 = cell(x, h)
    assert h1.shape == (3, 7) and h1.dtype == np.float32
    np.testing.assert_allclose(h1, layer(x[None], h[None])[1][0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(cell(x[0], h[0]), h1[0], rtol=0, atol=1e-6)
    assert cell(x[0]).shape == (7,)
    assert repr(cell).startswith(f"{name}(5, 7")
    clone = pickle.loads(pickle.dumps(cell))
    np.testing.assert_array_equal(clone(x, h), h1)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: nl.GRU(3, 4, proj_size=2), ValueError, "only supported for LSTM"),
    (lambda: nl.RNN(3, 4, proj_size=2), ValueError, "only supported for LSTM"),
    (lambda: nl.RNN(3, 4, nonlinearity="sigmoid"), ValueError, "Unknown nonlinearity 'sigmoid'"),
    (lambda: nl.RNNCell(3, 4, nonlinearity="gelu"), ValueError, "Unknown nonlinearity"),
    (lambda: nl.GRU(3, 0), ValueError, "hidden_size must be"),
    (lambda: nl.GRU(3, 4)(np.zeros((2, 1, 3)), (np.zeros((1, 1, 4)),) * 2), TypeError,
     "hx for GRU must be one array h_0"),
    (lambda: nl.GRU(3, 4)(np.zeros((2, 1, 3)), np.zeros((1, 2, 4))), RuntimeError,
     r"Expected hidden size \(1, 1, 4\), got \[1, 2, 4\]"),
    (lambda: nl.RNN(3, 4)(np.zeros((2, 1, 3)), np.zeros((1, 4))), RuntimeError,
     "hx should also be 3-D"),
    (lambda: nl.RNN(3, 4)(np.zeros((2, 1, 2))), RuntimeError,
     "input.size.-1. must be equal to input_size. Expected 3, got 2"),
    (lambda: nl.GRU(3, 4)(np.zeros((2, 1, 1, 3))), ValueError, "GRU: Expected input to be 2D"),
    (lambda: nl.GRU(3, 4)(np.zeros((2, 3)), lengths=[2]), ValueError, "only supported for batched"),
    (lambda: nl.GRU(3, 4)(np.zeros((2, 2, 3)), lengths=[2, 3]), ValueError, r"lie in \[1, 2\]"),
    (lambda: nl.GRUCell(3, 4)(np.zeros((2, 3)), np.zeros((3, 4))), RuntimeError,
     r"must have shape \(2, 4\)"),
    (lambda: nl.GRUCell(3, 4)(np.zeros((2, 3)), (np.zeros((2, 4)),) * 2), TypeError,
     "hx for GRUCell must be one array"),
    (lambda: nl.RNNCell(3, 4)(np.zeros((2, 2, 3))), ValueError, "RNNCell: Expected input to be 1D"),
    (lambda: nl.GRU.from_state_dict(nl.LSTM(3, 4).state_dict()), ValueError,
     r"not a GRU: weight_ih_l0 \(16, 3\), weight_hh_l0 \(16, 4\) disagree"),
    (lambda: nl.LSTM.from_state_dict(nl.GRU(3, 4).state_dict()), ValueError, "not an LSTM"),
    (lambda: nl.RNN.from_state_dict(nl.GRU(3, 4).state_dict()), ValueError, "not an RNN"),
    (lambda: nl.GRUCell.from_state_dict(nl.LSTMCell(3, 4).state_dict()), ValueError,
     "not a GRUCell"),
    (lambda: nl.GRU(3, 4).load_state_dict(nl.RNN(3, 4).state_dict()), ValueError,
     r"size mismatch for weight_ih_l0: expected \(12, 3\), got \(4, 3\)"),
])
def test_bad_input_is_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_family_of_reads_the_shapes():
    assert nl.family_of(nl.GRU(3, 4).state_dict()) == "GRU"
    assert nl.family_of(nl.RNN(3, 4, 2).state_dict()) == "RNN"
    assert nl.family_of(nl.LSTM(3, 4, proj_size=2).state_dict()) == "LSTM"
    assert nl.family_of({"m." + k: v for k, v in nl.LSTM(3, 4).state_dict().items()}, "m.") \
        == "LSTM"
    with pytest.raises(KeyError, match="no LSTM, GRU or RNN weights under prefix 'x.'"):
        nl.family_of(nl.GRU(3, 4).state_dict(), "x.")
    with pytest.raises(ValueError, match="not an LSTM, GRU or RNN"):
        nl.family_of({"weight_ih_l0": np.zeros((10, 3)), "weight_hh_l0": np.zeros((10, 4))})
