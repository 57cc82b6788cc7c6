"""Live parity with torch.nn.LSTM / GRU / RNN and their cells over the whole
matrix of docs/index.md's Correctness section."""

import itertools

import numpy as np
import pytest
from conftest import TOL, assert_close, max_abs_diff, needs_torch, torch

import numba_lstm as nl

pytestmark = needs_torch

AXES = dict(num_layers=(1, 2, 3), bias=(True, False), batch_first=(False, True),
            bidirectional=(False, True), proj_size=(0, 13), batched=(True, False),
            with_hx=(False, True), with_lengths=(False, True), dtype=(np.float32, np.float64))
MATRIX = [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*AXES.values())
          if combo[5] or not combo[7]]  # lengths only with batched input


FAMILIES = (("GRU", {}), ("RNN", {}), ("RNN", dict(nonlinearity="relu")))
FAMILY_MATRIX = [dict(config, family=family, **extra) for config in MATRIX
                 if not config["proj_size"] for family, extra in FAMILIES]


def run_ours(case, config):
    family = config.get("family", "LSTM")
    extra = {"nonlinearity": config["nonlinearity"]} if "nonlinearity" in config else {}
    module = getattr(nl, family).from_state_dict(
        case["params"], batch_first=config.get("batch_first", False), dtype=config["dtype"],
        **extra)
    return module(case["x"], case["hx"], lengths=case["lengths"])


def check(case, config):
    out, state = run_ours(case, config)
    h_n, c_n = state if config.get("family", "LSTM") == "LSTM" else (state, None)
    names = ("output", "h_n", "c_n")
    for name, ours, theirs in zip(names, (out, h_n, c_n), case["expected"], strict=True):
        if theirs is None:
            assert ours is None
            continue
        assert ours.dtype == config["dtype"]
        assert ours.flags.c_contiguous
        assert_close(ours, theirs, config["dtype"], name)


@pytest.mark.parametrize("config", MATRIX, ids=lambda c: "-".join(
    f"{k}={getattr(val, '__name__', val)}" for k, val in c.items()))
def test_matrix(config):
    from torch_cases import make_case

    case = make_case(input_size=37, hidden_size=45, steps=4, batch=3, **config)
    check(case, config)


@pytest.mark.parametrize("config", FAMILY_MATRIX, ids=lambda c: "-".join(
    f"{k}={getattr(val, '__name__', val)}" for k, val in c.items() if k != "proj_size"))
def test_family_matrix(config):
    from torch_cases import make_case

    case = make_case(input_size=37, hidden_size=45, steps=4, batch=3, **config)
    check(case, config)


@pytest.mark.parametrize("family", ["GRU", "RNN"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_family_long_sequences_with_lengths(family, dtype):
    from torch_cases import make_case

    config = dict(num_layers=2, bidirectional=True, with_lengths=True, dtype=dtype, family=family)
    case = make_case(input_size=9, hidden_size=16, steps=1000, batch=2, **config)
    check(case, config)


@pytest.mark.parametrize("steps", [1, 2, 17, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequence_lengths(steps, dtype):
    from torch_cases import make_case

    config = dict(num_layers=2, bidirectional=True, with_lengths=True, dtype=dtype)
    case = make_case(input_size=9, hidden_size=16, steps=steps, batch=2, **config)
    check(case, config)


def test_t1000_float32_large_hidden_drift():
    """The float32 bound must hold over 1000 steps with the fast activations."""
    from torch_cases import make_case

    config = dict(num_layers=1, dtype=np.float32)
    case = make_case(input_size=64, hidden_size=128, steps=1000, batch=1, **config)
    out, _ = run_ours(case, config)
    assert max_abs_diff(out, case["expected"][0]) <= TOL[np.float32]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell(dtype, batched, with_hx, bias):
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(37, 45, bias=bias).to(dtype=getattr(torch, dtype.__name__))
    lead = (3,) if batched else ()
    x = rng.standard_normal(lead + (37,)).astype(dtype)
    hx = tuple(rng.standard_normal(lead + (45,)).astype(dtype) for _ in range(2)) \
        if with_hx else None
    with torch.inference_mode():
        h1, c1 = cell(torch.from_numpy(x), None if hx is None else tuple(map(torch.from_numpy, hx)))
    ours = nl.LSTMCell.from_state_dict(cell.state_dict(), dtype=dtype)
    H1, C1 = ours(x, hx)
    assert_close(H1, h1.numpy(), dtype, "h1")
    assert_close(C1, c1.numpy(), dtype, "c1")


@pytest.mark.parametrize("name,extra", [("GRUCell", {}), ("RNNCell", {}),
                                        ("RNNCell", dict(nonlinearity="relu"))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_and_rnn_cells(name, extra, dtype, batched, with_hx, bias):
    rng = np.random.default_rng(2)
    torch.manual_seed(2)
    cell = getattr(torch.nn, name)(37, 45, bias=bias, **extra).to(
        dtype=getattr(torch, dtype.__name__))
    lead = (3,) if batched else ()
    x = rng.standard_normal(lead + (37,)).astype(dtype)
    hx = rng.standard_normal(lead + (45,)).astype(dtype) if with_hx else None
    with torch.inference_mode():
        h1 = cell(torch.from_numpy(x), None if hx is None else torch.from_numpy(hx))
    ours = getattr(nl, name).from_state_dict(cell.state_dict(), dtype=dtype, **extra)
    H1 = ours(x, hx)
    assert H1.shape == tuple(h1.shape) and H1.dtype == dtype
    assert_close(H1, h1.numpy(), dtype, "h1")


def test_accepts_torch_tensors_and_prefixed_model_state_dict():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(5, 8, num_layers=2, batch_first=True)
            self.fc = torch.nn.Linear(8, 3)

    model = Model()
    x = torch.randn(2, 6, 5)
    with torch.inference_mode():
        expected, _ = model.lstm(x)
    ours = nl.LSTM.from_state_dict(model.state_dict(), prefix="lstm.", batch_first=True)
    out, _ = ours(x)  # a CPU tensor is array-like
    assert_close(out, expected.numpy(), np.float32, "output")
