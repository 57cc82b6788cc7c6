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
    assert len(FILES) >= 9, "tests/golden is incomplete: run tests/make_golden.py"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_module_matches_torch_golden(path):
    config, params, data = load(path)
    dtype = np.dtype(config.get("dtype", "float32")).type
    lstm = nl.LSTM.from_state_dict(params, batch_first=config.get("batch_first", False))
    assert lstm.dtype == dtype
    hx = (data["h0"], data["c0"]) if "h0" in data else None
    out, (h_n, c_n) = lstm(data["x"], hx, lengths=data.get("lengths"))
    assert_close(out, data["output"], dtype, "output")
    assert_close(h_n, data["h_n"], dtype, "h_n")
    assert_close(c_n, data["c_n"], dtype, "c_n")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_reference_matches_torch_golden(path):
    config, params, data = load(path)
    dtype = np.dtype(config.get("dtype", "float32")).type
    x = data["x"]
    if not config.get("batched", True):
        x = x[:, None]
    elif config.get("batch_first"):
        x = x.transpose(1, 0, 2)
    hx = None
    if "h0" in data:
        hx = (data["h0"], data["c0"])
        if not config.get("batched", True):
            hx = tuple(a[:, None] for a in hx)
    out, (h_n, c_n) = reference.lstm(
        x, params, config.get("num_layers", 1), config.get("bidirectional", False), hx,
        data.get("lengths"))
    if not config.get("batched", True):
        out, h_n, c_n = out[:, 0], h_n[:, 0], c_n[:, 0]
    elif config.get("batch_first"):
        out = out.transpose(1, 0, 2)
    assert_close(out, data["output"], dtype, "output")
    assert_close(h_n, data["h_n"], dtype, "h_n")
    assert_close(c_n, data["c_n"], dtype, "c_n")
