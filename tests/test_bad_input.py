"""Bad input: torch's exception types, messages naming expected and actual."""

import numpy as np
import pytest

import numba_lstm as nl


@pytest.fixture(scope="module")
def lstm():
    return nl.LSTM(4, 6, num_layers=2)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(hidden_size=0), ValueError, "hidden_size must be greater than zero"),
    (dict(hidden_size=2.5), TypeError, "hidden_size should be of type int, got: float"),
    (dict(num_layers=0), ValueError, "num_layers must be greater than zero"),
    (dict(num_layers="2"), TypeError, "num_layers should be of type int, got: str"),
    (dict(input_size=-1), ValueError, "input_size must be greater than zero"),
    (dict(proj_size=-1), ValueError, "proj_size must be non-negative"),
    (dict(proj_size=6), ValueError, "proj_size has to be smaller than hidden_size"),
    (dict(dropout=1.5), ValueError, r"dropout should be a number in range \[0, 1\]"),
    (dict(dropout="0.1"), ValueError, "dropout should be a number"),
    (dict(dropout=True), ValueError, "dropout should be a number"),
    (dict(dtype="float16"), TypeError, "dtype must be 'float32' or 'float64', got 'float16'"),
    (dict(dtype="banana"), TypeError, "dtype must be"),
    (dict(dtype=None), TypeError, "dtype must be"),
    (dict(device="tpu"), ValueError, "device must be 'cpu' or 'cuda', got 'tpu'"),
])
def test_constructor_validation(kwargs, exc, match):
    args = dict(input_size=4, hidden_size=6) | kwargs
    with pytest.raises(exc, match=match):
        nl.LSTM(**args)


def test_dropout_warns_on_single_layer_like_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        nl.LSTM(4, 6, dropout=0.5)


@pytest.mark.parametrize("shape,exc,match", [
    ((2, 3, 4, 4), ValueError, "Expected input to be 2D or 3D, got 4D input instead"),
    ((4,), ValueError, "Expected input to be 2D or 3D, got 1D input instead"),
    ((), ValueError, "Expected input to be 2D or 3D, got 0D input instead"),
    ((5, 3, 7), RuntimeError, r"input.size\(-1\) must be equal to input_size. Expected 4, got 7"),
    ((5, 7), RuntimeError, "Expected 4, got 7"),
])
def test_input_shape_errors(lstm, shape, exc, match):
    with pytest.raises(exc, match=match):
        lstm(np.zeros(shape, np.float32))


@pytest.mark.parametrize("value,match", [
    (np.array([["a", "b", "c", "d"]]), "real numeric array, got dtype <U1"),
    (np.zeros((2, 1, 4), bool), "got dtype bool"),
    (np.zeros((2, 1, 4), complex), "got dtype complex128"),
    (object(), "got dtype object"),
])
def test_non_numeric_input_is_type_error(lstm, value, match):
    with pytest.raises(TypeError, match=match):
        lstm(value)


@pytest.mark.parametrize("hx,exc,match", [
    ((np.zeros((2, 3, 6)), np.zeros((2, 3, 6), np.float32)[:1]), RuntimeError,
     r"Expected hidden\[1\] size \(2, 3, 6\), got \[1, 3, 6\]"),
    ((np.zeros((2, 4, 6)), np.zeros((2, 3, 6))), RuntimeError,
     r"Expected hidden\[0\] size \(2, 3, 6\), got \[2, 4, 6\]"),
    ((np.zeros((2, 6)), np.zeros((2, 6))), RuntimeError,
     r"For batched 3-D input, hx and cx should also be 3-D but got \(2-D, 2-D\) tensors"),
    (np.zeros((2, 3, 6)), TypeError, r"hx must be a tuple \(h_0, c_0\), got ndarray"),
    ((np.zeros((2, 3, 6)),), TypeError, "hx must be a tuple"),
])
def test_hx_errors(lstm, hx, exc, match):
    with pytest.raises(exc, match=match):
        lstm(np.zeros((5, 3, 4)), hx)


def test_unbatched_hx_must_be_2d(lstm):
    with pytest.raises(RuntimeError, match=r"For unbatched 2-D input, hx and cx should also be "
                                           r"2-D but got \(3-D, 3-D\) tensors"):
        lstm(np.zeros((5, 4)), (np.zeros((2, 1, 6)), np.zeros((2, 1, 6))))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(2, 6\), got \[3, 6\]"):
        lstm(np.zeros((5, 4)), (np.zeros((3, 6)), np.zeros((2, 6))))


@pytest.mark.parametrize("lengths,exc,match", [
    ([5, 5], ValueError, r"lengths must have shape \(batch,\) = \(3,\), got \(2,\)"),
    ([[5, 5, 5]], ValueError, r"got \(1, 3\)"),
    ([5, 0, 2], ValueError, r"lengths must lie in \[1, 5\].*got \[0\]"),
    ([5, 6, 2], ValueError, r"lengths must lie in \[1, 5\].*got \[6\]"),
    ([5, -1, 9], ValueError, r"got \[-1, 9\]"),
    ([5.5, 1, 2], TypeError, "lengths must be an integer array, got dtype float64"),
    (["a", "b", "c"], TypeError, "lengths must be an integer array"),
])
def test_lengths_errors(lstm, lengths, exc, match):
    with pytest.raises(exc, match=match):
        lstm(np.zeros((5, 3, 4)), lengths=lengths)


def test_lengths_with_unbatched_input(lstm):
    with pytest.raises(ValueError, match=r"lengths is only supported for batched 3-D input, "
                                         r"got unbatched input of shape \(5, 4\)"):
        lstm(np.zeros((5, 4)), lengths=[5])


def test_integral_float_lengths_accepted(lstm):
    a = lstm(np.ones((5, 3, 4)), lengths=np.array([5.0, 2.0, 1.0]))[0]
    b = lstm(np.ones((5, 3, 4)), lengths=[5, 2, 1])[0]
    np.testing.assert_array_equal(a, b)


def test_load_state_dict_lists_every_missing_and_unexpected(lstm):
    sd = lstm.state_dict()
    del sd["weight_ih_l0"], sd["bias_hh_l1"]
    sd["weight_ih_l2"] = np.zeros((24, 6))
    sd["junk"] = 1
    with pytest.raises(KeyError) as info:
        lstm.load_state_dict(sd)
    msg = str(info.value)
    for name in ("weight_ih_l0", "bias_hh_l1", "weight_ih_l2", "junk"):
        assert name in msg


def test_load_state_dict_lists_every_shape_mismatch(lstm):
    sd = lstm.state_dict()
    sd["weight_hh_l0"] = np.zeros((24, 5))
    sd["bias_ih_l1"] = np.zeros(23)
    with pytest.raises(ValueError) as info:
        lstm.load_state_dict(sd)
    msg = str(info.value)
    assert "weight_hh_l0: expected (24, 6), got (24, 5)" in msg
    assert "bias_ih_l1: expected (24,), got (23,)" in msg
    with pytest.raises(ValueError, match="weight_hh_l0"):
        lstm.load_state_dict(sd, strict=False)


def test_load_state_dict_lists_missing_unexpected_and_mismatched_at_once(lstm):
    # One pass for the user who converts a checkpoint: torch reports all three kinds.
    before = lstm.state_dict()
    sd = lstm.state_dict()
    del sd["bias_hh_l1"]
    sd["junk"] = np.zeros(3)
    sd["weight_hh_l0"] = np.zeros((24, 5))
    with pytest.raises(nl.StateDictError) as info:
        lstm.load_state_dict(sd)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    msg = str(info.value)
    assert msg.startswith("Error(s) in loading state_dict for LSTM:")
    assert "missing keys: bias_hh_l1" in msg and "unexpected keys: junk" in msg
    assert "size mismatch for weight_hh_l0: expected (24, 6), got (24, 5)" in msg
    # Nothing was loaded: the module still holds its old weights.
    for name, value in lstm.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_load_state_dict_rejects_non_mapping_and_non_numeric(lstm):
    with pytest.raises(TypeError, match="state_dict must be a mapping, got list"):
        lstm.load_state_dict([1, 2])
    sd = lstm.state_dict()
    sd["weight_hh_l0"] = np.full((24, 6), "x")
    with pytest.raises(TypeError, match=r"state_dict\['weight_hh_l0'\] must be a real numeric"):
        lstm.load_state_dict(sd)


def test_from_state_dict_unknown_prefix_names_the_found_ones():
    sd = {"enc." + k: val for k, val in nl.LSTM(3, 4).state_dict().items()}
    with pytest.raises(KeyError, match=r"no LSTM weights under prefix 'lstm\.'.*\['enc\.'\]"):
        nl.LSTM.from_state_dict(sd, prefix="lstm.")


def test_from_state_dict_bad_shapes():
    with pytest.raises(ValueError, match=r"not an LSTM: weight_ih_l0 \(5, 3\), "
                                         r"weight_hh_l0 \(5, 1\) disagree"):
        nl.LSTM.from_state_dict({"weight_ih_l0": np.zeros((5, 3)),
                                 "weight_hh_l0": np.zeros((5, 1))})


@pytest.mark.parametrize("shape,hx,exc,match", [
    ((2, 3, 5), None, ValueError, "LSTMCell: Expected input to be 1D or 2D, got 3D input instead"),
    ((2, 4), None, RuntimeError, "input has inconsistent input_size: got 4 expected 5"),
    ((2, 5), ((3, 6), (2, 6)), RuntimeError,
     r"hx\[0\] \(hidden0\) must have shape \(2, 6\) for input of shape \(2, 5\), got \(3, 6\)"),
    ((5,), ((1, 6), (6,)), RuntimeError, r"hx\[0\] \(hidden0\) must have shape \(6,\)"),
    ((2, 5), ((2, 6), (2, 7)), RuntimeError, r"hx\[1\] \(hidden1\) must have shape \(2, 6\)"),
])
def test_cell_errors(shape, hx, exc, match):
    cell = nl.LSTMCell(5, 6)
    if hx is not None:
        hx = tuple(np.zeros(s) for s in hx)
    with pytest.raises(exc, match=match):
        cell(np.zeros(shape), hx)


def test_cuda_device_without_backend_is_a_clear_error():
    # Which message depends on whether numba-cuda is installed; both say what to do.
    missing = "device=.cuda. (needs the numba-cuda package|but numba.cuda finds no usable GPU)"
    with pytest.raises(RuntimeError, match=missing):
        nl.LSTM(3, 4, device="cuda")
