"""Side-by-side benchmark: numba_lstm against torch and ONNX Runtime (whichever
are installed) on the shapes of docs/performance.md, same weights and inputs, one process.

``numba-lstm bench`` prints the table; ``--json`` the same data for machines.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field

import numpy as np

from .cores import best_of, fma_rates
from .peers import PEERS, Unavailable
from .shapes import BY_ID, SHAPES, Shape, describe, targets_of, unseen_shapes
from .timing import interleaved_medians, matmul_gflops

__all__ = ["SHAPES", "BY_ID", "PEERS", "Shape", "ShapeResult", "run", "format_table",
           "unseen_shapes", "cuda_unavailable"]

OURS = "numba_lstm"
TOLERANCE = 2e-5  # float32's bound against torch (docs/index.md)


@dataclass
class ShapeResult:
    shape: Shape
    seconds: dict[str, float] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def ratio(self, peer: str) -> float | None:
        if peer not in self.seconds or OURS not in self.seconds:
            return None
        return self.seconds[peer] / self.seconds[OURS]

    def gflops(self, peer: str) -> float:
        return self.shape.flops() / self.seconds[peer] / 1e9

    def targets_met(self) -> dict[str, bool]:
        return {peer: ratio >= target for peer, target in targets_of(self.shape).items()
                if (ratio := self.ratio(peer)) is not None}

    def agrees(self) -> bool:
        return all(d <= TOLERANCE for d in self.max_abs_diff.values())


def bench_shape(shape: Shape, peers: list[str], device: str, rounds: int,
                min_seconds: float) -> ShapeResult:
    result = ShapeResult(shape)
    state_dict, x = shape.state_dict(), shape.inputs()
    runners = {}
    for name in [OURS] + [p for p in peers if p != OURS]:
        try:
            runner = PEERS[name](shape, state_dict, x, device)
        except Unavailable as exc:
            result.unavailable[name] = str(exc)
            continue
        runner.run()  # from the zero state, so streaming peers agree on this one
        runners[name] = runner
    if OURS not in runners:
        return result
    ours = runners[OURS].output()
    for name, runner in runners.items():
        if name != OURS:
            result.max_abs_diff[name] = float(np.abs(runner.output() - ours).max())
    result.seconds = interleaved_medians({n: r.run for n, r in runners.items()}, rounds,
                                         min_seconds)
    return result


def run(shape_ids: list[str | Shape] | None = None, peers: list[str] | None = None,
        device: str = "cpu", rounds: int = 7, min_seconds: float = 0.05,
        progress=None) -> dict:
    """Benchmark the shapes; returns a JSON-ready dict (see format_table)."""
    shapes = [BY_ID.get(s, s) for s in shape_ids] if shape_ids else list(SHAPES)
    peers = list(PEERS) if peers is None else peers
    report = {"machine": machine_info(), "device": device, "results": []}
    fmas = []  # the FMA probes, before the shapes and after each (cores.best_of)
    if device == "cpu":
        report["matmul_gflops"] = matmul_gflops()
        fmas.append(fma_rates())
    else:
        report["gpu"] = gpu_name()
    if device == "cpu":
        report["call_overhead_seconds"] = call_overhead()
    for shape in shapes:
        if progress:
            progress(shape.id)
        result = bench_shape(shape, peers, device, rounds, min_seconds)
        report["results"].append(_as_json(result))
        if device == "cpu":
            fmas.append(fma_rates())
    if fmas:
        report["fma"] = best_of(fmas)
    return report


def call_overhead(rounds: int = 7) -> float:
    """Seconds per streaming step of a 2-layer I=H=4 LSTM: the arithmetic is a few
    hundred flops, so this is the object API's validation, dispatch and allocation."""
    import numba_lstm as nl

    stream = nl.LSTM(4, 4, num_layers=2).stream()
    x = np.ones((1, 1, 4), np.float32)
    return interleaved_medians({"tiny": lambda: stream(x)}, rounds, 0.02)["tiny"]


def cuda_unavailable() -> str | None:
    """Why GPU timings cannot be taken here, or None when a real GPU is present."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "NUMBA_ENABLE_CUDASIM=1: the CUDA simulator runs on the CPU; no GPU timings"
    try:
        from numba import cuda
    except ImportError as exc:
        return f"numba's CUDA target cannot be imported ({exc})"
    if not cuda.is_available():
        return "numba.cuda.is_available() is False: no CUDA driver or device"
    return None


def gpu_name() -> str:
    from numba import cuda

    name = getattr(cuda.get_current_device(), "name", "CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)


def machine_info() -> dict:
    import llvmlite.binding as llvm
    import numba

    from numba_lstm.cpu.simd import VECTOR_BYTES

    info = {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "cpu": _cpu_model() or platform.machine(),
            "llvm_cpu": llvm.get_host_cpu_name(),
            # What the kernels were compiled for: NUMBA_CPU_NAME, else the host.
            "build": f"{numba.config.CPU_NAME or 'host'}, {VECTOR_BYTES * 8}-bit vectors",
            "numba_threads": numba.get_num_threads()}
    for name in ("torch", "onnxruntime"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def _cpu_model() -> str | None:
    """'AMD EPYC ... (family 25, model 17)' from /proc/cpuinfo, where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines()
                          if ":" in line)
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" not in fields:
        return None
    return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')})")


def _as_json(result: ShapeResult) -> dict:
    shape = result.shape
    return {
        "shape": asdict(shape),
        "gflop": shape.flops() / 1e9,
        "weight_mb": shape.weight_bytes() / 1e6,
        "seconds": result.seconds,
        "ratios": {p: result.ratio(p) for p in result.seconds if p != OURS},
        "gflops": {p: result.gflops(p) for p in result.seconds},
        "max_abs_diff": result.max_abs_diff,
        "agrees": result.agrees(),
        "targets": targets_of(shape),
        "targets_met": result.targets_met(),
        "unavailable": result.unavailable,
    }


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def format_table(report: dict) -> str:
    """A Markdown table: times, peer/ours ratios (target in brackets), GFLOP/s."""
    if report.get("device", "cpu") != "cpu":
        return format_gpu_table(report)
    rate = report["matmul_gflops"]
    head = ("| shape | numba_lstm | torch | onnxruntime | torch/ours | ort/ours "
            "| ours GFLOP/s | % of matmul | max abs Δ | targets |")
    lines = [head, "|" + "---|" * 10]
    for r in report["results"]:
        s, t = r["seconds"], r["targets"]
        ratios = []
        for peer in ("torch", "onnxruntime"):
            ratio = r["ratios"].get(peer)
            ratios.append("-" if ratio is None else f"{ratio:.2f}× (≥{t.get(peer, 0):g})")
        ours = r["gflops"].get(OURS)
        met = r["targets_met"]
        verdict = "-" if not met else ("met" if all(met.values()) else "MISSED " + ", ".join(
            p for p, ok in met.items() if not ok))
        diff = max(r["max_abs_diff"].values(), default=None)
        lines.append(
            f"| {r['shape']['id']} | {_fmt_time(s.get(OURS))} | {_fmt_time(s.get('torch'))} "
            f"| {_fmt_time(s.get('onnxruntime'))} | {ratios[0]} | {ratios[1]} "
            f"| {'-' if ours is None else f'{ours:.1f}'} "
            f"| {'-' if ours is None else f'{100 * ours / rate:.0f}%'} "
            f"| {'-' if diff is None else f'{diff:.1e}'} | {verdict} |")
    machine = report.get("machine", {})
    notes = [f"CPU: {machine.get('cpu', '?')}, LLVM name {machine.get('llvm_cpu', '?')}; "
             f"kernels built for {machine.get('build', '?')}."] if machine else []
    notes += [describe(r["shape"]) for r in report["results"] if r["shape"]["id"] not in BY_ID]
    notes.append(f"NumPy float32 matmul (1024³) in this run: {rate:.1f} GFLOP/s.")
    if "fma" in report:
        fma = report["fma"]
        notes.append(
            f"Register-only FMA rate in this run: one thread {fma['one_thread_gflops']:.0f} "
            f"GFLOP/s, {fma['threads']} threads at once {fma['all_threads_gflops']:.0f} "
            f"({fma['all_threads_gflops'] / fma['one_thread_gflops']:.2f}×; about 1× when "
            "the host runs the vCPUs on one core's hyperthreads)"
            + (f"; the best of {fma['probes']} probes, before the shapes and after each"
               if fma.get("probes", 1) > 1 else "") + ".")
    if "call_overhead_seconds" in report:
        notes.append("Per-call overhead of the object API (streaming step of a 2-layer "
                     f"I=H=4 LSTM): {report['call_overhead_seconds'] * 1e6:.1f} µs.")
    return "\n".join(lines + [""] + notes + _problems(report))


def format_gpu_table(report: dict) -> str:
    """GPU: whole-call and per-time-step latency against torch (cuDNN), GFLOP/s."""
    lines = ["| shape | numba_lstm | per step | torch (cuDNN) | per step | torch/ours "
             "| ours GFLOP/s | torch GFLOP/s | max abs Δ |", "|" + "---|" * 9]
    for r in report["results"]:
        s, steps = r["seconds"], r["shape"]["steps"]
        ratio = r["ratios"].get("torch")
        diff = max(r["max_abs_diff"].values(), default=None)
        rates = [r["gflops"].get(p) for p in (OURS, "torch")]
        lines.append(
            f"| {r['shape']['id']} | {_fmt_time(s.get(OURS))} "
            f"| {_fmt_time(s[OURS] / steps if OURS in s else None)} "
            f"| {_fmt_time(s.get('torch'))} "
            f"| {_fmt_time(s['torch'] / steps if 'torch' in s else None)} "
            f"| {'-' if ratio is None else f'{ratio:.2f}×'} "
            + " ".join(f"| {'-' if g is None else f'{g:.1f}'}" for g in rates)
            + f" | {'-' if diff is None else f'{diff:.1e}'} |")
    notes = [f"GPU: {report.get('gpu', '?')}; inputs and outputs stay on the device, "
             "every call ends with a device synchronisation."]
    return "\n".join(lines + [""] + notes + _problems(report))


def _problems(report: dict) -> list[str]:
    notes = []
    for r in report["results"]:
        for peer, why in r["unavailable"].items():
            notes.append(f"{r['shape']['id']}: {peer} not run: {why}")
        if not r["agrees"]:
            notes.append(f"{r['shape']['id']}: outputs DISAGREE beyond {TOLERANCE:g}")
    return notes
