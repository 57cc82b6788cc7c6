"""The main job: the shipped character model and `numba-lstm demo`."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close, needs_torch

from numba_lstm.char_model import CharModel

GOLDEN = Path(__file__).parent / "golden" / "char_lm_logits.npz"
TRAIN = Path(__file__).parents[1] / "docs" / "examples" / "train_char_model.py"


def test_shipped_weights_are_small_safetensors():
    path = CharModel.shipped_path()
    assert path.suffix == ".safetensors" and path.stat().st_size <= 4 * 1024 * 1024


def test_shipped_model_logits_match_torch_golden():
    with np.load(GOLDEN) as f:
        prompt, logits = str(f["prompt"]), f["logits"]
    model = CharModel.shipped()
    assert_close(model.logits(prompt), logits, np.float32, "logits")
    gen = model.generate(prompt, 30, temperature=0.5, seed=1)
    assert_close(gen.prompt_logits, logits, np.float32, "streamed prompt logits")
    assert len(gen.text) == 30 and set(gen.text) <= set(model.vocab)


def test_generation_is_reproducible_and_validated():
    model = CharModel.shipped()
    assert model.generate("for ", 40, seed=3).text == model.generate("for ", 40, seed=3).text
    with pytest.raises(ValueError, match="temperature must be positive, got 0"):
        model.generate("x", 5, temperature=0)
    with pytest.raises(ValueError, match="at least one character"):
        model.generate("", 5)


def run(*args):
    return subprocess.run([sys.executable, "-m", "numba_lstm", *args], capture_output=True,
                          text=True, timeout=300)


def test_demo_command_default_runs():
    result = run("demo", "--length", "60")
    assert result.returncode == 0, result.stderr
    assert "characters/second" in result.stdout
    assert "MISMATCH" not in result.stdout


def test_demo_rejects_bad_arguments():
    result = run("demo", "--temperature", "0")
    assert result.returncode == 2 and "--temperature must be positive" in result.stderr
    result = run("demo", "--weights", "missing.safetensors")
    assert result.returncode == 2 and "cannot read 'missing.safetensors'" in result.stderr


@needs_torch
def test_training_script_smoke(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 40)
    out = tmp_path / "m.safetensors"
    result = subprocess.run([sys.executable, str(TRAIN), "--steps", "3", "--out", str(out),
                             "--corpus", str(corpus)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    demo = run("demo", "--weights", str(out), "--length", "20")
    assert demo.returncode == 0, demo.stderr
    assert "torch check: prompt logits max|Δ|" in demo.stdout and "OK" in demo.stdout
