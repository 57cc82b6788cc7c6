"""Deployment: `numba-lstm compile` fills a cache that a new process loads
instead of compiling, and a read-only install still runs (docs/deploy.md)."""

import json
import os
import shutil
import site as site_module
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from background import in_background, result

import numba_lstm as nl

# Runs LayerNorm LSTM paths a deployment meets (batch 1, a threaded batch,
# the panel steps) and reports the layer kernels' cache statistics from Numba's
# dispatchers, and the background compilations started (cpu.warm). (The
# one-cell family keeps this test's cold compile short.)
PROBE = """
import json
import numpy as np
import numba_lstm as nl
from numba_lstm.cpu import layer, team_layer, warm
rng = np.random.default_rng(0)
for B in (1, 2, 6):
    nl.LayerNormLSTM(5, 8, 2)(rng.standard_normal((4, B, 5)).astype(np.float32))
kernels = ([k.serial for k in layer._KERNELS.values()]
           + [loop for _, loop in team_layer._SERVE.values()])
print(json.dumps({"hits": sum(sum(d.stats.cache_hits.values()) for d in kernels),
                  "misses": sum(sum(d.stats.cache_misses.values()) for d in kernels),
                  "warm_ups": len(warm.WARMUP._running)}))
"""


def _compile_then_probe():
    """`numba-lstm compile` into an empty cache, then PROBE on that cache."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        compiled = subprocess.run([sys.executable, "-m", "numba_lstm", "compile", "--cache-dir",
                                   str(cache), "--family", "layernorm"], capture_output=True,
                                  text=True, timeout=900)
        probe = None
        if compiled.returncode == 0:
            probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True,
                                   text=True, timeout=300,
                                   env=dict(os.environ, NUMBA_CACHE_DIR=str(cache),
                                            NUMBA_LSTM_COLD_START="background"))
    return str(cache), compiled, probe


@in_background(_compile_then_probe)
def test_compile_fills_a_cache_that_a_new_process_loads():
    cache, compiled, probe = result(_compile_then_probe)
    assert compiled.returncode == 0, compiled.stderr
    assert f"compiling into {cache}" in compiled.stdout
    lines = [line.split() for line in compiled.stdout.splitlines()]
    for strategy in ("panels", "axpy", "axpy threaded"):  # family, dtype, weights, strategy
        assert any(line[:3] == ["layernorm", "float32", "float32"]
                   and " ".join(line[3:-2]) == strategy for line in lines), compiled.stdout
    # As a deployment runs: compile marked the strategies ready, so the first
    # calls load the kernels (none answers through NumPy, none warms up).
    assert probe.returncode == 0, probe.stderr
    stats = json.loads(probe.stdout)
    assert stats["misses"] == 0 and stats["hits"] >= 2, stats  # the serial loop and the team's
    assert stats["warm_ups"] == 0, stats


def test_compile_refuses_what_it_does_not_know():
    result = subprocess.run([sys.executable, "-m", "numba_lstm", "compile", "--family", "lstn"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--family: unknown ['lstn']; choose from lstm, gru, rnn, layernorm" in result.stderr


RUN_READ_ONLY = """
import json, warnings
import numpy as np
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numba_lstm as nl
    import numba
    gru = nl.GRU(3, 4)
    gru.load_state_dict({k: np.full(v.shape, 0.1, np.float32) for k, v in gru.state_dict().items()})
    out, h_n = gru(np.ones((5, 1, 3), np.float32))
print(json.dumps({"file": nl.__file__, "out": out.tolist(), "cache_dir": numba.config.CACHE_DIR,
                  "warnings": [str(w.message) for w in caught]}))
"""


def _read_only_runner():
    """A command prefix that makes paths read-only for one process, or None:
    as root (who writes through permissions) a private read-only bind mount,
    else plain permissions."""
    if sys.platform != "linux":
        return None
    if os.geteuid() != 0:
        return "chmod"
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "true"],
            capture_output=True).returncode != 0:
        return None
    return "mount"


def _read_only_job(tmp_writable: bool):
    """A job running RUN_READ_ONLY from a read-only copy of the package (with
    TMPDIR writable, or nothing writable at all); it returns why it cannot,
    or the child's result with the paths it used and whether a cache index
    file appeared under TMPDIR."""
    def job():
        how = _read_only_runner()
        if how is None:
            return {"skip": "cannot make a directory read-only for one process here"}
        if not tmp_writable and how == "chmod":
            return {"skip": "only a private read-only mount makes /tmp read-only for one process"}
        with tempfile.TemporaryDirectory() as work:
            ran = _run_read_only(Path(work), tmp_writable, how)
            ran["cached"] = any(Path(ran["tmp"]).rglob("*.nbi"))
        return ran
    job.__name__ = f"read_only_install_tmp_writable_{tmp_writable}"
    return job


def _run_read_only(tmp_path: Path, tmp_writable: bool, how: str) -> dict:
    site, home, tmp = tmp_path / "site", tmp_path / "home", tmp_path / "tmp"
    shutil.copytree(Path(nl.__file__).parent, site / "numba_lstm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    home.mkdir()
    tmp.mkdir()
    # Python's tempfile falls back from TMPDIR to /tmp, /var/tmp and the cwd:
    # with nothing writable, all of those must be read-only.
    read_only = [site, home] + ([] if tmp_writable else [tmp, Path("/var/tmp"), Path("/tmp")])
    # -S and an explicit path: no .pth files, so an editable install's import
    # hook cannot send `import numba_lstm` back to the checkout.
    path = os.pathsep.join([str(site), *site_module.getsitepackages()])
    env = dict(os.environ, PYTHONPATH=path, HOME=str(home),
               XDG_CACHE_HOME=str(home / ".cache"), TMPDIR=str(tmp), SCRIPT=RUN_READ_ONLY)
    env.pop("NUMBA_CACHE_DIR", None)
    if how == "mount":
        mounts = " && ".join(f"mount --bind {p} {p} && mount -o remount,ro,bind {p}"
                             for p in read_only if p.exists())
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f'{mounts} && exec {sys.executable} -S -c "$SCRIPT"']
    else:
        for p in read_only:
            subprocess.run(["chmod", "-R", "a-w", str(p)], check=True)
        command = [sys.executable, "-S", "-c", RUN_READ_ONLY]
    try:
        ran = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                             cwd=tmp_path)  # not the checkout: -c puts the cwd on the path
    finally:
        if how == "chmod":
            for p in read_only:
                subprocess.run(["chmod", "-R", "u+w", str(p)], check=False)
    return {"returncode": ran.returncode, "stdout": ran.stdout, "stderr": ran.stderr,
            "site": str(site), "tmp": str(tmp)}


_READ_ONLY = {flag: _read_only_job(flag) for flag in (True, False)}


@in_background(_READ_ONLY[True])
def test_a_read_only_install_still_runs_with_a_writable_tmp():
    _check_read_only_run(result(_READ_ONLY[True]), tmp_writable=True)


@in_background(_READ_ONLY[False])
def test_a_read_only_install_still_runs_with_nothing_writable():
    _check_read_only_run(result(_READ_ONLY[False]), tmp_writable=False)


def _check_read_only_run(ran: dict, tmp_writable: bool):
    if "skip" in ran:
        pytest.skip(ran["skip"])
    site, tmp = ran["site"], Path(ran["tmp"])
    assert ran["returncode"] == 0, ran["stderr"]
    report = json.loads(ran["stdout"].splitlines()[-1])
    assert report["file"].startswith(site)  # the read-only copy ran, not the checkout
    expected, _ = nl.GRU.from_state_dict(
        {k: np.full(v.shape, 0.1, np.float32) for k, v in nl.GRU(3, 4).state_dict().items()})(
        np.ones((5, 1, 3), np.float32))
    np.testing.assert_allclose(report["out"], expected, rtol=0, atol=2e-5)
    uncached = [w for w in report["warnings"] if "run uncached" in w]
    if tmp_writable:
        assert report["cache_dir"] == str(tmp / f"numba_lstm-cache-{os.getuid()}")
        assert ran["cached"] and not uncached
    else:
        assert len(uncached) == 1, report["warnings"]
