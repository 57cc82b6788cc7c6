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


def test_info_names_the_family_from_the_shapes(tmp_path):
    import numba_lstm as nl

    # torch.nn.GRU(4, 8): 24 = 3 x 8 rows, which an LSTM would read as 4 x 6.
    files = {"gru": {"enc." + k: val for k, val in nl.GRU(4, 8).state_dict().items()},
             "rnn": nl.RNN(4, 8, 2, bidirectional=True).state_dict(),
             "proj": nl.LSTM(4, 8, proj_size=3).state_dict()}
    for name, sd in files.items():
        nl.save(tmp_path / f"{name}.safetensors", sd)
    result = cli("info", tmp_path / "gru.safetensors")
    assert result.returncode == 0, result.stderr
    assert ("GRU under prefix 'enc.': input_size=4, hidden_size=8, num_layers=1, bias=True, "
            "bidirectional=False\n" in result.stdout)
    result = cli("info", tmp_path / "rnn.safetensors")
    assert ("RNN under prefix '': input_size=4, hidden_size=8, num_layers=2, bias=True, "
            "bidirectional=True" in result.stdout)
    assert "--nonlinearity" in result.stdout
    result = cli("info", tmp_path / "proj.safetensors")
    assert "LSTM under prefix '': input_size=4, hidden_size=8" in result.stdout
    assert "proj_size=3" in result.stdout


def test_info_refuses_shapes_that_fit_no_family(tmp_path):
    import numba_lstm as nl

    rng = np.random.default_rng(0)
    # 20 rows over 8 columns: 2.5 x hidden, no family's gate count.
    odd = {"weight_ih_l0": rng.standard_normal((20, 4)).astype(np.float32),
           "weight_hh_l0": rng.standard_normal((20, 8)).astype(np.float32)}
    # An LSTM whose second layer does not fit the first: layer 0 alone looks fine.
    lstm = nl.LSTM(4, 6, 2).state_dict()
    lstm["weight_hh_l1"] = np.zeros((24, 5), np.float32)
    # A GRU with an LSTM's projection weight.
    gru = nl.GRU(4, 8).state_dict()
    gru["weight_hr_l0"] = np.zeros((3, 8), np.float32)
    for name, sd in (("odd", odd), ("lstm", lstm), ("gru", gru)):
        nl.save(tmp_path / f"{name}.safetensors", sd)
    result = cli("info", tmp_path / "odd.safetensors")
    assert result.returncode == 0, result.stderr
    assert "hidden_size=" not in result.stdout
    assert ("under prefix '': no LSTM, GRU or RNN that can be loaded: not an LSTM, GRU or RNN: "
            "weight_ih_l0 (20, 4), weight_hh_l0 (20, 8)" in result.stdout)
    result = cli("info", tmp_path / "lstm.safetensors")
    assert "hidden_size=" not in result.stdout
    assert "size mismatch for weight_hh_l1: expected (24, 6), got (24, 5)" in result.stdout
    result = cli("info", tmp_path / "gru.safetensors")
    assert "hidden_size=" not in result.stdout
    assert "not an LSTM:" in result.stdout


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
    # Exact: a process that compiled the kernels and one that loaded them from
    # the cache compute the same bits (docs/index.md, Correctness).
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), lstm(x, lengths=lengths)[0])


@pytest.mark.parametrize("family,extra", [("GRU", []), ("RNN", ["--nonlinearity", "relu"])])
def test_run_runs_whichever_family_the_file_holds(tmp_path, family, extra):
    import numba_lstm as nl

    kwargs = {"nonlinearity": "relu"} if extra else {}
    module = getattr(nl, family)(3, 5, 2, bidirectional=True, **kwargs)
    nl.save(tmp_path / "w.safetensors", {"rnn." + k: v for k, v in module.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = cli("run", tmp_path / "w.safetensors", "--prefix", "rnn.", *extra,
                 "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{module!r}: input (4, 2, 3) -> output (4, 2, 10)")
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), module(x)[0])


@pytest.mark.parametrize("args,message", [
    (["info", "missing.pt"], "cannot read 'missing.pt'"),
    (["run", FIXTURES / "model_zip.pt", "--input", "x.npy", "--output", "y.npy"],
     "no LSTM, GRU or RNN weights under prefix ''"),
    (["run", FIXTURES / "model_zip.pt", "--prefix", "enc.", "--input", "x.npy", "--output", "y"],
     "prefixes with recurrent weights: ['lstm.']"),
    (["run", FIXTURES / "lstm_zip.pt", "--input", "{tmp}/missing.npy", "--output", "y.npy"],
     "cannot read input"),
    (["run", FIXTURES / "lstm_zip.pt", "--input", "{tmp}/bad.npy", "--output", "{tmp}/y.npy"],
     "input.size(-1) must be equal to input_size. Expected 3, got 7"),
    (["bench", "--unseen", "3", "--shapes", "S1"],
     "--unseen picks the shapes itself: it takes no --shapes"),
    (["bench", "--unseen", "0"], "--unseen expects a count of shapes of at least 1, got 0"),
    (["bench", "--family", "gru"],
     "--family picks --unseen's shapes; the bench's own shapes name theirs"),
    (["bench", "--unseen", "2", "--family", "lstm,rnn"],
     "--family: unknown ['rnn']; choose from lstm, gru"),
])
def test_failures_exit_nonzero_with_a_message(tmp_path, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 7), np.float32))
    args = [str(a).format(tmp=tmp_path) for a in args]
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_and_code_cite_only_what_users_have():
    # Users get the package and docs/, never the team's design contract: the
    # bench's help lists the shapes itself, and no module points elsewhere.
    result = cli("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "SPEC" not in result.stdout
    assert "S9 B=4 T=300 I=40 H=160 L=1" in " ".join(result.stdout.split())
    package = Path(__file__).parents[1] / "numba_lstm"
    citing = [str(p.relative_to(package)) for p in package.rglob("*.py") if "SPEC" in p.read_text()]
    assert not citing, citing


def test_gpu_check_without_a_gpu_says_so():
    import importlib.util

    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda not installed (the cuda extra)")
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a GPU is here: the check would run")
    result = cli("check", "--device", "cuda")
    assert result.returncode == 2
    assert "run it on a GPU machine, or with NUMBA_ENABLE_CUDASIM=1" in result.stderr
