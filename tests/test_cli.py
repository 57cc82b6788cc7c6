"""The numba-lstm command, run as a user runs it: in a subprocess."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "numba_lstm", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_info_lists_tensors_and_configs():
    result = cli("info", FIXTURES / "model_zip.pt")
    assert result.returncode == 0, result.stderr
    assert "lstm.weight_hh_l0  float32  (20, 5)" in result.stdout
    assert "LSTM under prefix 'lstm.': input_size=3, hidden_size=5, num_layers=1" in result.stdout


def test_run_matches_the_library(tmp_path):
    import numba_lstm as nl

    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    lengths = np.array([4, 2])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "len.npy", lengths)
    result = cli("run", FIXTURES / "model_legacy.pt", "--prefix", "lstm.", "--batch-first",
                 "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
                 "--lengths", tmp_path / "len.npy")
    assert result.returncode == 0, result.stderr
    lstm = nl.LSTM.from_state_dict(nl.load(FIXTURES / "model_legacy.pt"), prefix="lstm.",
                                   batch_first=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), lstm(x, lengths=lengths)[0])


@pytest.mark.parametrize("args,message", [
    (["info", "missing.pt"], "cannot read 'missing.pt'"),
    (["run", FIXTURES / "model_zip.pt", "--input", "x.npy", "--output", "y.npy"],
     "no LSTM weights under prefix ''"),
    (["run", FIXTURES / "model_zip.pt", "--prefix", "enc.", "--input", "x.npy", "--output", "y"],
     "LSTM prefixes found: ['lstm.']"),
    (["run", FIXTURES / "lstm_zip.pt", "--input", "{tmp}/missing.npy", "--output", "y.npy"],
     "cannot read input"),
    (["run", FIXTURES / "lstm_zip.pt", "--input", "{tmp}/bad.npy", "--output", "{tmp}/y.npy"],
     "input.size(-1) must be equal to input_size. Expected 3, got 7"),
])
def test_failures_exit_nonzero_with_a_message(tmp_path, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 7), np.float32))
    args = [str(a).format(tmp=tmp_path) for a in args]
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
