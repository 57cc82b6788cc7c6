"""Command line: `numba-lstm [demo|example]` (also `python -m numba_lstm`)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def cmd_example(args) -> int:
    """A random-weight LSTM over random input: shapes, parity with the reference, time."""
    import numba_lstm as nl
    from numba_lstm import reference

    rng = np.random.default_rng(args.seed)
    lstm = nl.LSTM(args.input_size, args.hidden_size, num_layers=args.layers)
    x = rng.standard_normal((args.steps, args.batch, args.input_size)).astype(np.float32)
    t0 = time.perf_counter()
    out, (h_n, c_n) = lstm(x)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        lstm(x)
        times.append(time.perf_counter() - t0)
    params64 = {k: v.astype(np.float64) for k, v in lstm.state_dict().items()}
    ref_out, _ = reference.lstm(x.astype(np.float64), params64, args.layers)
    print(f"model   {lstm!r}")
    print(f"input   {x.shape} float32  ->  output {out.shape}, h_n {h_n.shape}, c_n {c_n.shape}")
    print(f"parity  max|Δ| vs NumPy reference (float64) = {np.abs(out - ref_out).max():.2e}")
    print(f"time    first call {first * 1e3:.1f} ms (includes compilation or cache load), "
          f"then median {np.median(times) * 1e3:.3f} ms per call")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="numba-lstm", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    ex = sub.add_parser("example", help="random-weight LSTM: shapes, parity, time (default)")
    ex.add_argument("--input-size", type=int, default=64)
    ex.add_argument("--hidden-size", type=int, default=128)
    ex.add_argument("--layers", type=int, default=2)
    ex.add_argument("--steps", type=int, default=100)
    ex.add_argument("--batch", type=int, default=4)
    ex.add_argument("--repeat", type=int, default=20)
    ex.add_argument("--seed", type=int, default=0)
    ex.set_defaults(func=cmd_example)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv or ["example"])
    return args.func(args)
