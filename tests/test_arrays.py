"""Whatever array comes in, the numbers and the caller's arrays are right."""

import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import assert_close

import numba_lstm as nl
from numba_lstm import reference


@pytest.fixture(scope="module")
def lstm():
    return nl.LSTM(6, 5, num_layers=2, bidirectional=True, proj_size=3, dtype="float64")


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((7, 4, 6))


def expected(lstm, x, hx=None, lengths=None):
    return reference.lstm(np.asarray(x, np.float64), lstm.state_dict(), lstm.num_layers,
                          lstm.bidirectional, hx, lengths)


LAYOUTS = {
    "fortran": lambda a: np.asfortranarray(a),
    "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
    "negative_stride": lambda a: a[::-1].copy()[::-1],
    "read_only": lambda a: _read_only(a.copy()),
    "big_endian": lambda a: a.astype(">f8"),
    "float32_input": lambda a: a.astype(np.float32),
    "int_input": lambda a: np.round(a * 3).astype(np.int16),
    "nested_list": lambda a: a.tolist(),
}


def _read_only(a):
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("layout", LAYOUTS)
def test_any_layout_gives_the_same_numbers(lstm, x, layout):
    data = LAYOUTS[layout](x)
    as_array = np.asarray(data)
    before = as_array.copy()
    out, (h_n, c_n) = lstm(data)
    ref_out, (ref_h, ref_c) = expected(lstm, as_array.astype(np.float64))
    assert_close(out, ref_out, np.float64, layout)
    assert_close(h_n, ref_h, np.float64, layout)
    for arr in (out, h_n, c_n):
        assert arr.dtype == np.float64 and arr.flags.c_contiguous and arr.flags.writeable
    np.testing.assert_array_equal(as_array, before)


def test_inputs_never_modified_and_outputs_not_aliased(lstm, x):
    h0 = np.random.default_rng(1).standard_normal((4, 4, 3))
    c0 = np.random.default_rng(2).standard_normal((4, 4, 5))
    copies = [a.copy() for a in (x, h0, c0)]
    out, (h_n, c_n) = lstm(x, (h0, c0), lengths=[7, 1, 3, 7])
    for original, copy in zip((x, h0, c0), copies, strict=True):
        np.testing.assert_array_equal(original, copy)
    for arr in (out, h_n, c_n):
        assert not any(np.shares_memory(arr, a) for a in (x, h0, c0))


def test_batch_first_output_is_contiguous_copy():
    lstm = nl.LSTM(3, 4, batch_first=True, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    out, _ = lstm(x)
    ref_out, _ = expected(lstm, x.transpose(1, 0, 2))
    assert out.flags.c_contiguous
    assert_close(out, ref_out.transpose(1, 0, 2), np.float64, "batch_first")


def test_nan_and_inf_propagate_like_torch_reference():
    lstm = nl.LSTM(2, 3, dtype="float64")
    x = np.zeros((3, 1, 2))
    x[1, 0, 0] = np.nan
    out, _ = lstm(x)
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()
    x[1, 0, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as torch: NaN out, no warning
        out, _ = lstm(x)
    ref_out, _ = expected(lstm, x)
    np.testing.assert_allclose(out, ref_out, atol=1e-12)


def test_pickle_round_trip_gives_same_results(lstm, x):
    clone = pickle.loads(pickle.dumps(lstm))
    assert repr(clone) == repr(lstm)
    np.testing.assert_array_equal(clone(x)[0], lstm(x)[0])
    assert "_layers" not in pickle.loads(pickle.dumps(lstm)).__getstate__()


def test_concurrent_calls_match_serial(lstm):
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((5, 3, 6)) for _ in range(16)]
    serial = [lstm(a)[0] for a in inputs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda a: lstm(a)[0], inputs))
    for s, t in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(s, t)


def test_repr_reads_like_torch():
    assert repr(nl.LSTM(10, 20, num_layers=2)) == "LSTM(10, 20, num_layers=2)"
    assert repr(nl.LSTM(10, 20, proj_size=5, bias=False, batch_first=True,
                        bidirectional=True, dtype="float64")) == \
        "LSTM(10, 20, proj_size=5, bias=False, batch_first=True, bidirectional=True, dtype=float64)"
    assert repr(nl.LSTMCell(3, 4)) == "LSTMCell(3, 4)"


def test_state_dict_round_trip_and_dtype_conversion():
    lstm = nl.LSTM(4, 6, num_layers=2, bidirectional=True)
    sd = lstm.state_dict()
    assert sd["weight_ih_l1_reverse"].shape == (24, 12) and sd["weight_hh_l0"].dtype == np.float32
    sd["weight_ih_l0"][:] = 0  # a copy: the module is untouched
    assert np.any(lstm.state_dict()["weight_ih_l0"] != 0)
    clone = nl.LSTM.from_state_dict(lstm.state_dict())
    x = np.ones((3, 2, 4), np.float32)
    np.testing.assert_array_equal(clone(x)[0], lstm(x)[0])
    assert nl.LSTM.from_state_dict(lstm.state_dict(), dtype="float64")(x)[0].dtype == np.float64
    lstm.to(dtype="float64")
    assert lstm(x)[0].dtype == np.float64


def test_load_state_dict_non_strict_keeps_others():
    lstm = nl.LSTM(3, 4)
    before = lstm.state_dict()
    lstm.load_state_dict({"bias_ih_l0": np.zeros(16), "other": 1}, strict=False)
    after = lstm.state_dict()
    assert np.all(after["bias_ih_l0"] == 0)
    np.testing.assert_array_equal(after["weight_hh_l0"], before["weight_hh_l0"])


def test_zero_batch_and_unbatched_shapes():
    lstm = nl.LSTM(3, 4, num_layers=2, dtype="float64")
    out, (h_n, c_n) = lstm(np.zeros((5, 0, 3)))
    assert out.shape == (5, 0, 4) and h_n.shape == (2, 0, 4)
    out, (h_n, c_n) = lstm(np.zeros((5, 3)))
    assert out.shape == (5, 4) and h_n.shape == (2, 4) and c_n.shape == (2, 4)
