"""Torch-generated golden vectors: parity with torch where torch is not installed."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import numba_lstm as nl
from numba_lstm import reference

FILES = sorted(p for p in (Path(__file__).parent / "golden").glob("*.npz")
               if p.stem != "char_lm_logits")


def load(path):
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    config = json.loads(str(data.pop("config")))
    params = {k[len("param:"):]: data.pop(k) for k in list(data) if k.startswith("param:")}
    return config, params, data


def test_golden_files_present():
    assert len(FILES) >= 16, "tests/golden is incomplete: run tests/make_golden.py"
    families = {load(path)[0].get("family", "LSTM") for path in FILES}
    assert families == {"LSTM", "GRU", "RNN"}


def _hx(config, data):
    if "h0" not in data:
        return None
    return (data["h0"], data["c0"]) if config.get("family", "LSTM") == "LSTM" else data["h0"]


def _states(config, state):
    return state if config.get("family", "LSTM") == "LSTM" else (state,)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_module_matches_torch_golden(path):
    config, params, data = load(path)
    dtype = np.dtype(config.get("dtype", "float32")).type
    family = config.get("family", "LSTM")
    extra = {"nonlinearity": config["nonlinearity"]} if "nonlinearity" in config else {}
    module = getattr(nl, family).from_state_dict(
        params, batch_first=config.get("batch_first", False), **extra)
    assert module.dtype == dtype
    out, state = module(data["x"], _hx(config, data), lengths=data.get("lengths"))
    assert_close(out, data["output"], dtype, "output")
    for name, ours in zip(("h_n", "c_n"), _states(config, state), strict=False):
        assert_close(ours, data[name], dtype, name)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_reference_matches_torch_golden(path):
    config, params, data = load(path)
    dtype = np.dtype(config.get("dtype", "float32")).type
    x = data["x"]
    if not config.get("batched", True):
        x = x[:, None]
    elif config.get("batch_first"):
        x = x.transpose(1, 0, 2)
    hx = _hx(config, data)
    lstm = config.get("family", "LSTM") == "LSTM"
    if hx is not None and not config.get("batched", True):
        hx = tuple(a[:, None] for a in hx) if lstm else hx[:, None]
    args = (x, params, config.get("num_layers", 1), config.get("bidirectional", False), hx,
            data.get("lengths"))
    if lstm:  # the hand-written LSTM, independent of numba_lstm.cells
        out, state = reference.lstm(*args)
    else:
        out, state = reference.recurrent(
            config["family"].lower().replace("rnn", "rnn_" + config.get("nonlinearity", "tanh")),
            *args)
    states = _states(config, state)
    if not config.get("batched", True):
        out, states = out[:, 0], tuple(s[:, 0] for s in states)
    elif config.get("batch_first"):
        out = out.transpose(1, 0, 2)
    assert_close(out, data["output"], dtype, "output")
    for name, ours in zip(("h_n", "c_n"), states, strict=False):
        assert_close(ours, data[name], dtype, name)
