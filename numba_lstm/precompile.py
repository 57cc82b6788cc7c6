"""``numba_lstm.compile``: fill Numba's on-disk cache with every kernel that
chosen configurations can reach, so that later processes load instead of
compiling (a Dockerfile's RUN step, a post-install hook; docs/deploy.md)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np

FAMILIES = ("lstm", "gru", "rnn", "layernorm")
DTYPES = ("float32", "float64")
WEIGHTS = ("float32", "int8", "bfloat16")  # how weight matrices are stored

# A case per dispatch strategy: (T, B, directions, projection), as small as
# reaches it; the kernels' signatures depend on neither the sizes nor the
# number of directions, so one direction serves every family (but
# team_directions, which only a two-direction layer can run).
_CASES = {"team": (3, 2, 1, 0), "team_directions": (3, 2, 2, 0), "stream_step": (1, 1, 1, 0),
          "panels_fused": (3, 4, 1, 0),
          "panels": (3, 4, 1, 0), "axpy": (3, 1, 1, 0), "axpy threaded": (3, 2, 1, 0),
          "axpy projection": (3, 2, 1, 2)}
# The strategies a quantized layer on the dot kernels can be given (cpu.STRATEGIES'
# prefer): its layouts only exist from packing.first_dot_hidden up, so these
# cases run a second, larger module.
_DOT_STRATEGIES = ("team", "team_directions", "stream_step", "panels")


def _modules(family: str, dtype: str, directions: int, proj: int, hidden: int = 16):
    import numba_lstm as nl

    bidirectional = directions == 2
    if family == "lstm":
        return [nl.LSTM(3, hidden, 2, bidirectional=bidirectional, proj_size=proj, dtype=dtype)]
    if family == "gru":
        return [nl.GRU(3, hidden, 2, bidirectional=bidirectional, dtype=dtype)]
    if family == "rnn":
        return [nl.RNN(3, hidden, 2, nonlinearity=n, bidirectional=bidirectional, dtype=dtype)
                for n in ("tanh", "relu")]
    if family == "layernorm":
        return [] if bidirectional else [nl.LayerNormLSTM(3, hidden, 2, dtype=dtype)]
    raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")


def _run_case(module, strategy: str, T: int, B: int) -> bool:
    """One forced call of ``strategy``; False if it cannot run this module."""
    from numba_lstm import cpu

    name = strategy.split()[0]
    layers = module._layers
    entry = cpu.BY_NAME[name]
    if not entry.can_run(layers if entry.scope == "stack" else layers[0], T, B):
        return False
    x = np.zeros((T, B, 3), module.dtype)
    lengths = np.full(B, T, np.int64) if B > 1 else None
    cpu.forward(layers, x, None, None, lengths, name)
    if name == "stream_step":  # a stream's later steps: the stepper's own entry
        stream = module.stream()
        stream(x[:, 0])
        stream(x[:, 0])
        # The team's stepper, for stacks past one core's L2.
        h = np.zeros((len(layers), 1, layers[0].hidden_size), module.dtype)
        cpu.TeamStepper(layers, h, h, True, cpu.TEAM, cpu.TEAM.size)(x)
    return True


def compile(dtypes: Iterable[str] = ("float32",), families: Iterable[str] = FAMILIES, *,
            weights: Iterable[str] = ("float32",), cache_dir: str | os.PathLike | None = None,
            progress: Callable[[str], None] | None = None,
            strategies: Iterable[str] | None = None) -> list[dict]:
    """Compile (or load) every CPU kernel the given dtypes and families reach,
    strategy by strategy, into Numba's on-disk cache. ``weights`` other than
    float32 add the quantized modules (float32, module.quantize) of the
    families that have them: their team job is a kernel of its own. Returns one
    record per (family, dtype, weights, strategy) run: the seconds it took, and
    whether a module it ran had the dot layouts (``dot``).

    ``cache_dir`` sets NUMBA_CACHE_DIR, which Numba reads when it is imported:
    it must come before anything imports numba (the CLI's ``--cache-dir`` does
    it first thing); afterwards a different directory is a RuntimeError.
    ``strategies`` (the case names above) limits the cases to those; each
    configuration's cases, once compiled, are marked ready for later
    processes (cpu.warm).
    """
    if cache_dir is not None:
        _use_cache_dir(str(cache_dir))
    from numba_lstm import cpu
    from numba_lstm._config import CACHE
    from numba_lstm.cpu.packing import first_dot_hidden
    from numba_lstm.cpu.warm import mark_ready

    wanted = None if strategies is None else set(strategies)
    # (dtype, how the weights are stored): float modules store their dtype
    configurations = [(dtype, dtype) for dtype in dtypes] + [
        ("float32", w) for w in weights if w != "float32"]
    records = []
    for family in families:
        for dtype, stored in configurations:
            quantized = stored != dtype
            if quantized and family == "layernorm":
                continue  # no quantized form
            compiled = set()
            for strategy, (T, B, D, proj) in _CASES.items():
                if proj and family != "lstm" or wanted is not None and strategy not in wanted:
                    continue
                modules = _modules(family, dtype, D, proj)
                if quantized and strategy in _DOT_STRATEGIES:
                    # The dot kernels where the CPU takes them (the 16 above
                    # then reads float32 values or widens).
                    modules += _modules(family, dtype, D, proj, hidden=first_dot_hidden(stored))
                if quantized:
                    modules = [m.quantize(stored) for m in modules]
                start = time.perf_counter()
                ran = [_run_case(m, strategy, T, B) for m in modules]
                if any(ran):
                    compiled.add(strategy)
                    seconds = time.perf_counter() - start
                    dot = any(r and m._layers[0].dot_layout() is not None
                              for m, r in zip(modules, ran, strict=True))
                    records.append(dict(family=family, dtype=dtype, weights=stored,
                                        strategy=strategy, seconds=seconds, dot=dot))
                    if progress:
                        progress(f"{family:<9} {dtype:<7} {stored:<8} {strategy:<16} "
                                 f"{seconds:6.2f} s")
            if compiled & {"team", "team_directions"}:  # before its marker: the helpers'
                # entry point is a kernel too
                cpu.TEAM.wait_ready()
            for strategy in compiled if CACHE else ():
                mark_ready((strategy, family, dtype, stored))
    return records


def wait_compiled(timeout: float | None = None) -> bool:
    """Wait until the kernels this process is having compiled in the background
    are in the cache (a cold cache's first calls answer with NumPy meanwhile:
    docs/deploy.md); True if none is left. For timing, or to get the
    kernels' bits from here on."""
    if "numba_lstm.cpu" not in sys.modules:
        return True  # no kernel asked for yet
    from numba_lstm.cpu.warm import WARMUP

    return WARMUP.wait(timeout)


def _use_cache_dir(cache_dir: str) -> None:
    if "numba" in sys.modules:
        import numba

        if os.path.abspath(numba.config.CACHE_DIR or "") != os.path.abspath(cache_dir):
            raise RuntimeError(f"cache_dir={cache_dir!r} must be set before numba is imported "
                               f"(numba already uses {numba.config.CACHE_DIR or 'the source tree'}"
                               "); set NUMBA_CACHE_DIR or use `numba-lstm compile --cache-dir`")
        return
    os.environ["NUMBA_CACHE_DIR"] = cache_dir
