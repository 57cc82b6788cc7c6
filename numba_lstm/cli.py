"""The `numba-lstm` command (or `python -m numba_lstm`): its subcommands."""

from __future__ import annotations

import argparse
import os
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


def _cache_dir_first(argv: list[str]) -> None:
    """`compile --cache-dir DIR` sets NUMBA_CACHE_DIR before anything imports
    Numba, which reads it once, at import."""
    if not argv or argv[0] != "compile":
        return
    for k, arg in enumerate(argv):
        if arg == "--cache-dir" and k + 1 < len(argv):
            os.environ["NUMBA_CACHE_DIR"] = os.path.abspath(argv[k + 1])
        elif arg.startswith("--cache-dir="):
            os.environ["NUMBA_CACHE_DIR"] = os.path.abspath(arg.split("=", 1)[1])


class CLIError(Exception):
    """A user-facing failure: printed as `numba-lstm: error: ...`, exit status 2."""


def _load_weights(path: str) -> dict:
    import numba_lstm as nl

    try:
        return nl.load(path)
    except (nl.LoadError, TypeError) as exc:
        raise CLIError(str(exc)) from None


def _load_array(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read {what} {path!r}: {exc}") from None


def cmd_info(args) -> int:
    """Tensors in a weights file and the LSTM / GRU / RNN configurations in it."""
    import numba_lstm as nl

    state_dict = _load_weights(args.file)
    print(f"{args.file}: {len(state_dict)} tensors")
    width = max((len(k) for k in state_dict), default=0)
    for name, array in state_dict.items():
        print(f"  {name:<{width}}  {str(array.dtype):<8} {tuple(array.shape)}")
    prefixes = nl.lstm_prefixes(state_dict)
    if not prefixes:
        print("no LSTM, GRU or RNN found (no '*weight_ih_l0' tensor)")
    for prefix in prefixes:
        # Loaded as `run` would load it, so that every layer's shapes are checked
        # against the configuration before it is printed.
        try:
            family = nl.family_of(state_dict, prefix)
            config = nl.infer_config(state_dict, prefix, family)
            getattr(nl, family).from_state_dict(state_dict, prefix=prefix)
        except (KeyError, ValueError) as exc:
            reason = str(exc).strip('"')
            print(f"under prefix {prefix!r}: no LSTM, GRU or RNN that can be loaded: {reason}")
            continue
        fields = {k: val for k, val in vars(config).items()
                  if k != "proj_size" or family == "LSTM"}
        print(f"{family} under prefix {prefix!r}: "
              + ", ".join(f"{k}={val}" for k, val in fields.items()))
        if family == "RNN":
            print("  (a state_dict does not say tanh or relu: run takes --nonlinearity, "
                  "tanh by default)")
    return 0


def cmd_run(args) -> int:
    """Run the LSTM, GRU or RNN in a weights file over an input .npy, write the output .npy."""
    import numba_lstm as nl

    state_dict = _load_weights(args.file)
    try:
        family = nl.family_of(state_dict, args.prefix)
        extra = {"nonlinearity": args.nonlinearity} if family == "RNN" else {}
        module = getattr(nl, family).from_state_dict(state_dict, prefix=args.prefix,
                                                     batch_first=args.batch_first, **extra)
    except (KeyError, ValueError) as exc:
        raise CLIError(str(exc).strip('"')) from None
    x = _load_array(args.input, "input")
    lengths = None if args.lengths is None else _load_array(args.lengths, "lengths")
    try:
        output, _ = module(x, lengths=lengths)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CLIError(f"{module!r} cannot run on input {args.input} of shape {x.shape}: "
                       f"{exc}") from None
    np.save(args.output, output)
    print(f"{module!r}: input {x.shape} -> output {output.shape} written to {args.output}")
    return 0


def cmd_demo(args) -> int:
    """Generate text with the shipped character model, streaming one step at a time."""
    import importlib.util

    from numba_lstm.char_model import CharModel

    if args.temperature <= 0:
        raise CLIError(f"--temperature must be positive, got {args.temperature}")
    if not args.prompt:
        raise CLIError("--prompt must not be empty")
    t0 = time.perf_counter()
    state_dict = _load_weights(args.weights or str(CharModel.shipped_path()))
    model = CharModel(state_dict)
    print(f"model: Embedding{model.embedding.state_dict()['weight'].shape} -> {model.lstm!r} "
          f"-> {model.fc!r}; loaded in {time.perf_counter() - t0:.2f} s")
    gen = model.generate(args.prompt, args.length, args.temperature, args.seed)
    print("-" * 72)
    print(args.prompt + gen.text)
    print("-" * 72)
    print(f"{args.length} characters in {gen.seconds:.3f} s: "
          f"{args.length / gen.seconds:,.0f} characters/second (one streaming step each)")
    if importlib.util.find_spec("torch") is not None:
        from numba_lstm._torch_check import torch_logits

        theirs = torch_logits(state_dict, model.encode(args.prompt))
        diff = float(np.abs(theirs - gen.prompt_logits).max())
        print(f"torch check: prompt logits max|Δ| = {diff:.2e} "
              f"({'OK' if diff <= 2e-5 else 'MISMATCH'}, tolerance 2e-5)")
        if diff > 2e-5:
            return 1
    return 0


def cmd_bench(args) -> int:
    """numba_lstm vs torch vs ONNX Runtime on the benchmark shapes, in this process."""
    import json

    from numba_lstm import bench

    # Time the kernels: on a cold cache, compile them here rather than answer
    # through NumPy while they compile (cpu.warm).
    os.environ["NUMBA_LSTM_COLD_START"] = "compile"

    shapes = args.shapes.split(",") if args.shapes else None
    unknown = [s for s in shapes or [] if s not in bench.BY_ID]
    if unknown:
        raise CLIError(f"unknown shape(s) {unknown}; choose from {list(bench.BY_ID)}")
    if args.unseen is not None:
        if shapes:
            raise CLIError("--unseen picks the shapes itself: it takes no --shapes")
        if args.unseen < 1:
            raise CLIError(f"--unseen expects a count of shapes of at least 1, got {args.unseen}")
        shapes = bench.unseen_shapes(args.unseen, args.seed, _families(args.family))
    elif args.family is not None:
        raise CLIError("--family picks --unseen's shapes; the bench's own shapes name theirs")
    peers = args.peers.split(",") if args.peers else None
    unknown = [p for p in peers or [] if p not in bench.PEERS]
    if unknown:
        raise CLIError(f"unknown peer(s) {unknown}; choose from {list(bench.PEERS)}")
    if args.weights != "float32":
        return _bench_quantized(args, shapes)
    if args.device == "cuda":
        reason = bench.cuda_unavailable()
        if reason:
            print(f"numba-lstm bench --device cuda: no GPU here ({reason}); nothing measured")
            return 0
    progress = None if args.json else (lambda s: print(f"  {s} ...", file=sys.stderr))
    report = bench.run(shapes, peers, args.device, args.rounds, args.min_time, progress)
    print(json.dumps(report, indent=1) if args.json else bench.format_table(report))
    return 0


def _families(value: str | None) -> tuple[str, ...]:
    """--family's networks for --unseen, LSTM and GRU unless told."""
    if value is None:
        return ("LSTM", "GRU")
    return tuple(v.upper() for v in _choices(value, ("lstm", "gru"), "--family"))


def _bench_quantized(args, shapes) -> int:
    import json

    from numba_lstm.bench import quantized

    if args.device != "cpu":
        raise CLIError("--weights: quantized modules are benchmarked on the CPU")
    if args.peers:
        raise CLIError("--weights runs its own peers (torch's and ONNX Runtime's quantized "
                       "LSTMs, and both float32 modules); --peers does not apply")
    progress = None if args.json else (lambda s: print(f"  {s} ...", file=sys.stderr))
    report = quantized.run(args.weights, shapes, args.rounds, args.min_time, progress)
    print(json.dumps(report, indent=1) if args.json else quantized.format_table(report))
    return 0


def cmd_compile(args) -> int:
    """Fill Numba's on-disk cache with every kernel the chosen configurations reach."""
    from numba_lstm.precompile import DTYPES, FAMILIES, WEIGHTS, compile

    dtypes, families = _choices(args.dtype, DTYPES, "--dtype"), \
        _choices(args.family, FAMILIES, "--family")
    weights = _choices(args.weights, WEIGHTS, "--weights")
    import numba

    where = numba.config.CACHE_DIR or "next to the installed sources (__pycache__)"
    print(f"compiling into {where}: dtypes {', '.join(dtypes)}; "
          f"weights {', '.join(weights)}; families {', '.join(families)}")
    t0 = time.perf_counter()
    records = compile(dtypes, families, weights=weights, progress=print)
    print(f"{len(records)} paths in {time.perf_counter() - t0:.1f} s; a new process now "
          "loads them from the cache")
    return 0


def cmd_check(args) -> int:
    """Correctness, resources, streams and speed of a device backend, in one run."""
    if args.device == "cuda":
        from numba_lstm.bench import cuda_unavailable

        reason = cuda_unavailable()
        if reason and not reason.startswith("NUMBA_ENABLE_CUDASIM"):
            raise CLIError(f"check --device cuda: {reason}; run it on a GPU machine, or "
                           "with NUMBA_ENABLE_CUDASIM=1 for the simulator")
        from numba_lstm.cuda.check import run

        full = {"full": True, "tiny": False}.get(args.shapes)
        return run(full, args.json)
    raise CLIError(f"check --device {args.device}: only cuda has a check")


def _choices(value: str, allowed: tuple, flag: str) -> list[str]:
    chosen = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        raise CLIError(f"{flag}: unknown {unknown or value!r}; choose from {', '.join(allowed)}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    from numba_lstm.bench.shapes import SHAPES

    parser = argparse.ArgumentParser(prog="numba-lstm", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="generate text with the shipped model (default)")
    demo.add_argument("--prompt", default="def ")
    demo.add_argument("--length", type=int, default=400)
    demo.add_argument("--temperature", type=float, default=0.7)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--weights", help="another char model (.safetensors) to use instead")
    demo.set_defaults(func=cmd_demo)
    ex = sub.add_parser("example", help="random-weight LSTM: shapes, parity with the reference")
    ex.add_argument("--input-size", type=int, default=64)
    ex.add_argument("--hidden-size", type=int, default=128)
    ex.add_argument("--layers", type=int, default=2)
    ex.add_argument("--steps", type=int, default=100)
    ex.add_argument("--batch", type=int, default=4)
    ex.add_argument("--repeat", type=int, default=20)
    ex.add_argument("--seed", type=int, default=0)
    ex.set_defaults(func=cmd_example)
    info = sub.add_parser("info", help="tensors and inferred LSTM/GRU/RNN configs of a file")
    info.add_argument("file")
    info.set_defaults(func=cmd_info)
    run = sub.add_parser("run", help="run the LSTM, GRU or RNN in a weights file over a .npy")
    run.add_argument("file")
    run.add_argument("--input", required=True, help="input array (.npy), (T, B, I) or (T, I)")
    run.add_argument("--output", required=True, help="where to write the output (.npy)")
    run.add_argument("--prefix", default="", help="the network's prefix in the file, e.g. 'lstm.'")
    run.add_argument("--nonlinearity", choices=("tanh", "relu"), default="tanh",
                     help="an RNN's (a state_dict does not record it)")
    run.add_argument("--batch-first", action="store_true", help="input is (B, T, I)")
    run.add_argument("--lengths", help="(B,) integer .npy of sequence lengths")
    run.set_defaults(func=cmd_run)
    bench = sub.add_parser("bench", help="time numba_lstm against torch and ONNX Runtime")
    bench.add_argument("--shapes", help="comma-separated shape ids (default: all): " + "; ".join(
        f"{s.id} B={s.batch} T={s.steps} I={s.input_size} H={s.hidden_size} L={s.layers}"
        + (" bidirectional" if s.bidirectional else "") + (f" {s.family}" if s.family != "LSTM"
                                                            else "") for s in SHAPES))
    bench.add_argument("--peers", help="comma-separated peers (default: all installed)")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument("--rounds", type=int, default=7, help="samples per runner (median)")
    bench.add_argument("--min-time", type=float, default=0.05,
                       help="seconds per sample (calls are repeated to fill it)")
    bench.add_argument("--weights", choices=("float32", "int8", "bfloat16"), default="float32",
                       help="quantized: our quantized module against our float32 one and the "
                       "peers' quantized LSTMs on the quantized rows (S2, S3, S6, S8, S9)")
    bench.add_argument("--unseen", type=int, metavar="N",
                       help="instead of the bench's shapes, N random ones of the floor's regime "
                       "(batch 1-16, H 64-1024, T 64-1000, 1-4 layers, either direction, "
                       "LSTM or GRU), each held to the floor (1.0x each peer)")
    bench.add_argument("--seed", type=int, default=0, help="--unseen's shapes (default 0)")
    bench.add_argument("--family", help="--unseen's networks, comma-separated: lstm,gru "
                       "(default both)")
    bench.add_argument("--json", action="store_true", help="print JSON instead of the table")
    bench.set_defaults(func=cmd_bench)
    check = sub.add_parser("check", help="GPU check: parity, launch limits, streams, timings")
    check.add_argument("--device", choices=("cuda",), default="cuda")
    check.add_argument("--shapes", choices=("full", "tiny"),
                       help="full on a GPU, tiny in the simulator (the default for each)")
    check.add_argument("--json", help="also write every result to this JSON file")
    check.set_defaults(func=cmd_check)
    comp = sub.add_parser("compile", help="fill Numba's cache with every kernel (deployment)")
    comp.add_argument("--dtype", default="float32", help="comma-separated: float32,float64")
    comp.add_argument("--family", default="lstm,gru,rnn,layernorm",
                      help="comma-separated: lstm,gru,rnn,layernorm")
    comp.add_argument("--weights", default="float32",
                      help="comma-separated stored weight formats: float32,int8,bfloat16")
    comp.add_argument("--cache-dir", help="the cache directory (sets NUMBA_CACHE_DIR for this "
                      "run; later processes need NUMBA_CACHE_DIR set to it too)")
    comp.set_defaults(func=cmd_compile)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _cache_dir_first(argv)
    parser = build_parser()
    args = parser.parse_args(argv or ["demo"])
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"numba-lstm: error: {exc}", file=sys.stderr)
        return 2
