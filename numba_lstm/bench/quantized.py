"""``numba-lstm bench --weights int8|bfloat16``: our quantized module against our
float32 one and the peers' quantized LSTMs (GRUs), on the quantized rows, one process,
interleaved rounds. The error of every runner is taken against our float32
module on the same weights and input (the accuracy the issue bounds)."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import asdict

import numba
import numpy as np

from ..cpu.amx import HAS_AMX, HAS_AMX_BF16
from ..cpu.caches import cache_bytes
from .cores import share_read_seconds
from .peers import NumbaLSTM, OnnxRuntime, Torch, Unavailable, _require
from .shapes import BY_ID, Shape, describe
from .timing import interleaved_medians

ROWS = ("S2", "S3", "S6", "S8", "S9")
# Peer time / our quantized time: int8 at 1.5x both quantized peers; at batch 1
# 2x our float32 (S2, S3); S8 3x ONNX Runtime's float32 step; S6 1.6x float32.
TARGETS = {
    **{s: {"torch_qint8": 1.5, "onnxruntime_qint8": 1.5} for s in ROWS},
    "S2": {"torch_qint8": 1.5, "onnxruntime_qint8": 1.5, "numba_lstm_float32": 2.0},
    "S3": {"torch_qint8": 1.5, "onnxruntime_qint8": 1.5, "numba_lstm_float32": 2.0},
    "S6": {"torch_qint8": 1.5, "onnxruntime_qint8": 1.5, "numba_lstm_float32": 1.6},
    "S8": {"torch_qint8": 1.5, "onnxruntime_qint8": 1.5, "onnxruntime": 3.0},
}
OURS = "numba_lstm"
# A shape off the bench's rows (numba-lstm bench --weights W --unseen N), and
# every bfloat16 row, is held to the floor: 1.0x both quantized peers.
FLOOR = {"torch_qint8": 1.0, "onnxruntime_qint8": 1.0}


class NumbaQuantized(NumbaLSTM):
    def __init__(self, shape: Shape, state_dict: dict, x: np.ndarray, weights: str):
        super().__init__(shape, state_dict, x)
        self.lstm = self.lstm.quantize(weights)
        self.stream = self.lstm.stream() if shape.streaming else None
        self.run()
        if self.stream is not None:
            self.stream.reset()


class TorchQInt8(Torch):
    """torch.ao.quantization.quantize_dynamic(qint8): int8 per-tensor weights,
    activations quantized per call (fbgemm)."""

    name = "torch_qint8"

    def __init__(self, shape: Shape, state_dict: dict, x: np.ndarray):
        super().__init__(shape, state_dict, x)
        torch = self.torch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # quantize_dynamic swaps submodules: the LSTM goes in a container.
            self.lstm = torch.ao.quantization.quantize_dynamic(
                torch.nn.Sequential(self.lstm), {type(self.lstm)}, dtype=torch.qint8)[0]


class OnnxRuntimeQInt8(OnnxRuntime):
    """onnxruntime.quantization.quantize_dynamic, per-channel int8 weights:
    LSTM becomes com.microsoft.DynamicQuantizeLSTM."""

    name = "onnxruntime_qint8"

    def __init__(self, shape: Shape, state_dict: dict, x: np.ndarray):
        super().__init__(shape, state_dict, x)
        _require("onnxruntime")
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
            with open(src, "wb") as f:
                f.write(self._model_bytes)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                logging.disable(logging.WARNING)  # its advice to pre-process the model
                try:
                    quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8)
                finally:
                    logging.disable(logging.NOTSET)
            self.session = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])


class TorchBFloat16(Torch):
    """The same nn.LSTM with its weights, input and state in bfloat16 (oneDNN's
    kernels, AMX-BF16 where the CPU has it): reported beside our bfloat16
    module as the like-for-like format, not a target."""

    name = "torch_bf16"

    def __init__(self, shape: Shape, state_dict: dict, x: np.ndarray):
        super().__init__(shape, state_dict, x)
        self.lstm = self.lstm.to(self.torch.bfloat16)
        self.x = self.x.to(self.torch.bfloat16)

    def output(self) -> np.ndarray:
        return self.y.float().numpy()


def _runners(shape: Shape, weights: str, state_dict, x) -> tuple[dict, dict]:
    makers = {OURS: lambda: NumbaQuantized(shape, state_dict, x, weights),
              "numba_lstm_float32": lambda: NumbaLSTM(shape, state_dict, x),
              "torch_qint8": lambda: TorchQInt8(shape, state_dict, x),
              "onnxruntime_qint8": lambda: OnnxRuntimeQInt8(shape, state_dict, x),
              "onnxruntime": lambda: OnnxRuntime(shape, state_dict, x)}
    if weights == "bfloat16":
        makers["torch_bf16"] = lambda: TorchBFloat16(shape, state_dict, x)
    runners, unavailable = {}, {}
    for name, make in makers.items():
        try:
            runners[name] = make()
        except Unavailable as exc:
            unavailable[name] = str(exc)
    return runners, unavailable


def targets_of(shape: Shape, weights: str) -> dict[str, float]:
    """Minimum peer time / our time per runner for ``shape`` in ``weights``: the
    targets above are int8's, so a bfloat16 row, like a shape off the rows, is
    held to the floor."""
    if weights == "int8" and shape.id in BY_ID:
        return TARGETS.get(shape.id, FLOOR)
    return FLOOR


# Bytes a stored weight takes in each format.
WEIGHT_BYTES = {"int8": 1, "bfloat16": 2}
# Whether the format's products can run on AMX tiles here, past the dot
# instruction's rate: then that rate bounds nothing.
ON_TILES = {"int8": HAS_AMX, "bfloat16": HAS_AMX_BF16}


def _direction_w_hh_bytes(shape: Shape, weights: str) -> int:
    """Bytes of one direction's W_hh of one layer, stored in ``weights``."""
    return (shape.recurrent_bytes_per_step(WEIGHT_BYTES[weights])
            // (shape.layers * shape.directions))


def recurrent_read_seconds(shape: Shape, weights: str, share_read=share_read_seconds) -> float:
    """Seconds a call's steps take at the least to read W_hh, stored in
    ``weights``, with every thread reading its share at the plain-read speed
    measured now (``share_read``: cores.share_read_seconds, seconds a pass of
    every thread over a share of that many bytes). Every step reads all of a
    layer's W_hh; the best a call can do is a layer after the other, with each
    direction's split over the threads, one direction after the other, or,
    with as many directions as threads, a direction a thread, whichever reads
    faster. A streaming call is one step of every layer: all of W_hh at once."""
    threads = numba.get_num_threads()
    w_hh = _direction_w_hh_bytes(shape, weights)
    if shape.streaming:
        return share_read(shape.layers * shape.directions * w_hh // threads)
    per_step = shape.directions * share_read(w_hh // threads)
    if shape.directions == threads:
        per_step = min(per_step, share_read(w_hh))
    return shape.layers * shape.steps * per_step


def format_bound(shape: Shape, weights: str, dot: dict | None, l3: dict | None,
                 cached_bytes: int, read_seconds: float | None = None) -> float | None:
    """Seconds no implementation with ``weights`` weights can beat on this
    machine, from rates measured in the run: the largest of (a) the matmuls'
    multiply-adds (Shape.flops; not our first layer's second pass over x) at
    the register-only rate of the format's dot instruction, all threads at
    once (``dot``: cores.dot_rates), (b) the W_hh bytes each step must
    read from past the caches (each direction's W_hh beyond ``cached_bytes``,
    what all the cores' L1 and L2 hold, at every step of every direction,
    the directions one after the other, as the fewest bytes streamed; a
    streaming call, every layer's W_hh beyond it) at the plain L3 read rate
    of all threads at once (``l3``: cores.l3_read_rates), and (c)
    ``read_seconds``, the steps' reads of W_hh
    at the threads' measured plain-read speed for the shares they read
    (recurrent_read_seconds): (b) counts the bytes the caches hold as free, (c)
    what reading them takes. Everything else (the cell, quantizing
    activations, W_ih's reads) is left out, so the bound stays below what any
    kernel takes. (a) is left out where the dot rate is missing (no dot
    instruction: the format then runs a slower path) or where the format's
    products can run on AMX tiles, past it; (b) where no W_hh byte streams or
    the L3 rate is missing; (c) where not measured: None where all are."""
    parts = [] if read_seconds is None else [read_seconds]
    if dot is not None and not ON_TILES[weights]:
        parts.append(shape.flops() / 2 / (dot["all_threads_gmacs"] * 1e9))
    if l3 is not None:
        n = shape.layers * shape.directions
        w_hh = _direction_w_hh_bytes(shape, weights)
        # A layer after the other, a direction after the other (a step of both
        # directions at once would read both W_hh); a streaming call, every layer.
        streamed = (max(0, n * w_hh - cached_bytes) if shape.streaming
                    else shape.steps * n * max(0, w_hh - cached_bytes))
        if streamed > 0:
            parts.append(streamed / (l3["all_threads_gbs"] * 1e9))
    return max(parts) if parts else None


def run_cache_bytes(threads: int) -> int:
    """What the L1 and L2 of ``threads`` cores hold together (format_bound)."""
    return threads * (cache_bytes(1) + cache_bytes(2))


def bench_row(shape: Shape, weights: str, rounds: int, min_seconds: float) -> dict:
    """One shape's runners, interleaved (run() adds its bound)."""
    state_dict, x = shape.state_dict(), shape.inputs()
    runners, unavailable = _runners(shape, weights, state_dict, x)
    for runner in runners.values():
        runner.run()  # from the zero state, as streaming peers start
    reference = runners["numba_lstm_float32"].output()
    errors = {n: float(np.abs(r.output() - reference).max())
              for n, r in runners.items() if n != "numba_lstm_float32"}
    seconds = interleaved_medians({n: r.run for n, r in runners.items()}, rounds, min_seconds)
    ratios = {n: s / seconds[OURS] for n, s in seconds.items() if n != OURS}
    targets = targets_of(shape, weights)
    return {"shape": shape.id, "family": shape.family, "weights": weights, "seconds": seconds,
            "ratios": ratios, "multiply_adds": shape.flops() // 2,
            "described": None if shape.id in BY_ID else describe(asdict(shape)),
            "error_vs_float32": errors, "targets": targets,
            "targets_met": {p: ratios[p] >= t for p, t in targets.items() if p in ratios},
            "unavailable": unavailable}


def run(weights: str, shapes=None, rounds: int = 7, min_seconds: float = 0.05,
        progress=None, probe_seconds: float = 0.2, read_rounds: int = 5) -> dict:
    """The quantized rows, or ``shapes``: bench ids or Shape objects (unseen ones).
    The register-only rate of the format's dot instruction and the threads' L3
    read rate are probed before the rows and after each (cores.dot_rates,
    cores.l3_read_rates, runs of ``probe_seconds``), each taken at its best
    (cores.best_of): the ceiling the rows' rates are read against, and each
    row's format_bound, with the reads of the row's own shares of W_hh measured
    after it (recurrent_read_seconds, the best of ``read_rounds``). A bound our
    own time beats came from probes that all read low; it is dropped
    (``bound_beaten``), not printed as a bound."""
    from . import machine_info
    from .cores import best_of, dot_rates, l3_read_rates

    dots, l3s, rows = [], [], []

    def probe():
        dots.append(dot_rates(weights, seconds=probe_seconds))
        l3s.append(l3_read_rates(seconds=probe_seconds))

    probe()
    for shape in shapes or ROWS:
        shape = BY_ID[shape] if isinstance(shape, str) else shape
        if progress:
            progress(shape.id)
        row = bench_row(shape, weights, rounds, min_seconds)
        row["read_seconds"] = recurrent_read_seconds(
            shape, weights, lambda size: share_read_seconds(size, rounds=read_rounds))
        rows.append((shape, row))
        probe()
    dot, l3 = best_of(dots), best_of(l3s)
    cached = run_cache_bytes(dot["threads"] if dot else 1)
    for shape, row in rows:
        bound = format_bound(shape, weights, dot, l3, cached, row["read_seconds"])
        if bound is not None and row["seconds"][OURS] < bound:
            row["bound_beaten"], bound = bound, None
        row["bound_seconds"] = bound
    return {"machine": machine_info(), "weights": weights, "dot": dot, "l3": l3,
            "cache_bytes": cached, "on_tiles": ON_TILES[weights],
            "results": [row for _, row in rows]}


PEER_COLUMNS = ("numba_lstm_float32", "torch_qint8", "onnxruntime_qint8", "onnxruntime")
_HEADS = {"numba_lstm_float32": "float32", "torch_qint8": "torch qint8",
          "onnxruntime_qint8": "ORT int8", "onnxruntime": "ORT float32",
          "torch_bf16": "torch bf16"}


def format_table(report: dict) -> str:
    w = report["weights"]
    # torch's bfloat16 LSTM sits beside a bfloat16 run, as the same format's peer
    peers = PEER_COLUMNS + (("torch_bf16",) if w == "bfloat16" else ())
    erred = (OURS, "torch_qint8", "onnxruntime_qint8") + peers[len(PEER_COLUMNS):]
    head = (f"| shape | ours ({w}) | ours float32 | "
            + " | ".join(_HEADS[p] for p in peers[1:]) + " | "
            + " | ".join(f"{_HEADS[p]}/ours" for p in peers)
            + f" | error: ours {w} | " + " | ".join(_HEADS[p] for p in erred[1:])
            + " | ours G MAC/s | bound | targets |")
    lines = [head, "|" + "---|" * (5 + 2 * len(peers) + len(erred))]
    dot = report.get("dot")
    # On AMX tiles the products run past the dot instruction's rate: a share of
    # it (S6 bfloat16 "535%" on a Xeon) would say nothing.
    tiles = report.get("on_tiles", False)
    share_of = dot if dot and not tiles else None
    for r in report["results"]:
        s, e, t = r["seconds"], r["error_vs_float32"], r["targets"]
        times = " | ".join(_fmt(s.get(p)) for p in (OURS,) + peers)
        ratios = " | ".join("-" if p not in r["ratios"] else
                            f"{r['ratios'][p]:.2f}×" + (f" (≥{t[p]:g})" if p in t else "")
                            for p in peers)
        errors = " | ".join("-" if p not in e else f"{e[p]:.1e}" for p in erred)
        met, bound = r["targets_met"], r.get("bound_seconds")
        # A peer faster than the format's bound cannot be passed in this format.
        verdict = "met" if met and all(met.values()) else "MISSED " + ", ".join(
            p + (" (bound)" if bound is not None and s[p] < bound else "")
            for p, ok in met.items() if not ok)
        rate = r["multiply_adds"] / s[OURS] / 1e9 if "multiply_adds" in r else None
        if rate is None:  # a report saved before the column existed
            rate_cell = "-"
        elif share_of:
            rate_cell = f"{rate:.0f} ({rate / share_of['all_threads_gmacs']:.0%})"
        else:
            rate_cell = f"{rate:.0f}"
        lines.append(f"| {r['shape']} | {times} | {ratios} | {errors} | {rate_cell} "
                     f"| {_fmt(r.get('bound_seconds'))} | {verdict} |")
    machine = report.get("machine", {})
    notes = [f"CPU: {machine.get('cpu', '?')}, LLVM name {machine.get('llvm_cpu', '?')}; "
             f"kernels built for {machine.get('build', '?')}. Errors: max|Δ| against our "
             "float32 module on the same weights and input. G MAC/s: the matmuls' "
             "multiply-adds a second (a first layer's second pass, over x's low part, not counted)"
             + (f", and their share of the register-only {dot['instruction']} rate "
                f"of {dot['threads']} threads at once." if share_of else
                "; the products run on AMX tiles here, past the dot instruction's rate, "
                "whose share of it is left out." if tiles else ".")]
    if dot:
        notes.append(f"Register-only {dot['instruction']} rate in this run: one thread "
                     f"{dot['one_thread_gmacs']:.0f} G multiply-adds/s, {dot['threads']} "
                     f"threads at once {dot['all_threads_gmacs']:.0f} "
                     f"({dot['all_threads_gmacs'] / dot['one_thread_gmacs']:.2f}×)"
                     + _probes_read(dot, "one_thread_gmacs", "all_threads_gmacs") + ".")
    l3 = report.get("l3")
    if l3:
        notes.append(f"Plain reads from L3 in this run ({l3['buffer_bytes'] >> 20} MB a "
                     f"thread): one thread {l3['one_thread_gbs']:.0f} GB/s, {l3['threads']} "
                     f"threads at once {l3['all_threads_gbs']:.0f}"
                     + _probes_read(l3, "one_thread_gbs", "all_threads_gbs") + ".")
    if any(r.get("bound_seconds") is not None for r in report["results"]):
        parts = ["the matmuls at that instruction rate"] if share_of else []
        parts.append(f"the bytes of a direction's W_hh its every step reads past the cores' "
                     f"L1 and L2 ({report.get('cache_bytes', 0) >> 10} KB in all) at the L3 rate")
        parts.append("the threads' plain reads of all of W_hh every step, each its share "
                     "(a direction split over them, or a direction each where that reads "
                     "faster), timed after each row in zig-zag order")
        notes.append("bound: the time no kernel in this format can beat here, the largest "
                     "of " + ", ".join(parts[:-1]) + " and " + parts[-1]
                     + (" (the products' rate on the tiles is not probed, so they bound "
                        "nothing here)" if tiles else "")
                     + "; a missed peer marked (bound) took less than it.")
    if any(r.get("family") == "GRU" for r in report["results"]):
        notes.append("ORT int8 on a GRU: onnxruntime's quantize_dynamic quantizes no GRU "
                     "operator, so that model runs its GRU in float32 (the error column shows "
                     "it); torch's qint8 GRU is the quantized peer there.")
    notes += [r["described"] for r in report["results"] if r.get("described")]
    for r in report["results"]:
        if r.get("bound_beaten"):
            notes.append(f"{r['shape']}: no bound: ours took less than the "
                         f"{_fmt(r['bound_beaten'])} these rates give, so every probe read "
                         "them low (the host's other work on the cores).")
        for peer, why in r["unavailable"].items():
            notes.append(f"{r['shape']}: {peer} not run: {why}")
    return "\n".join(lines + [""] + notes)


def _probes_read(rates: dict, one: str, every: str) -> str:
    """How many probes the rates are the best of, and their lowest readings."""
    if rates.get("probes", 1) < 2:  # one probe, or a report saved before there were more
        return ""
    low = rates["lowest"]
    return (f"; the best of {rates['probes']} probes, before the rows and after each "
            f"(lowest readings: one thread {low[one]:.0f}, {rates['threads']} threads at once "
            f"{low[every]:.0f})")


def _fmt(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


__all__ = ["ROWS", "TARGETS", "run", "format_table", "targets_of"]
