"""``numba-lstm check --device cuda``: one unattended run that says whether the
CUDA backend is right and how fast it is on the GPU at hand.

Sections: the device and versions; resource probes (registers, block caps,
cooperative grid limits, each against the plan the dispatch makes); parity
of every path against the float64 NumPy reference and torch's CUDA LSTM with
TF32 off; bitwise repeatability of the persistent kernel; streams from numba,
torch and CuPy; timings against cuDNN and the host cost of a launch. Under
NUMBA_ENABLE_CUDASIM=1 it runs the same code on tiny shapes and skips what the
simulator cannot show (registers, timings). Exit status 1 if anything failed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

TOL32 = 2e-5  # float32 max|Δ| against the float64 reference, T <= 1000 (docs/index.md)


@dataclass(frozen=True)
class Case:
    name: str
    T: int
    B: int
    H: int
    I: int = 64
    family: str = "LSTM"
    layers: int = 1
    bidirectional: bool = False
    proj: int = 0
    ragged: bool = False
    batch_first: bool = False


FULL = [
    Case("B1 H256 T1000", 1000, 1, 256),
    Case("B1 H512 T1000", 1000, 1, 512),
    Case("bidir B1 H256", 1000, 1, 256, bidirectional=True),
    Case("bidir B64 H256", 1000, 64, 256, bidirectional=True),
    Case("B1 H1024 T1000", 1000, 1, 1024),
    Case("proj B8 H256 P128", 200, 8, 256, proj=128),
    Case("2 layers B16 H256", 200, 16, 256, layers=2),
    Case("ragged B32 H128", 300, 32, 128, ragged=True),
    Case("GRU B1 H512", 1000, 1, 512, family="GRU"),
    Case("T=0 B4 H64", 0, 4, 64),
    Case("B=0 T10 H64", 10, 0, 64),
    Case("batch_first NumPy B8 H128", 100, 8, 128, batch_first=True),
]
TINY = [  # the simulator runs every thread of a block as a Python thread
    Case("B1 H4 T3", 3, 1, 4, I=3),
    Case("bidir B2 H3", 3, 2, 3, I=2, bidirectional=True),
    Case("proj B2 H4 P2", 3, 2, 4, I=2, proj=2),
    Case("2 layers ragged B3 H3", 3, 3, 3, I=2, layers=2, ragged=True),
    Case("GRU B1 H4", 3, 1, 4, I=2, family="GRU"),
    Case("T=0 B2 H3", 0, 2, 3, I=2),
    Case("B=0 T3 H3", 3, 0, 3, I=2),
    Case("batch_first NumPy B2 H3", 3, 2, 3, I=2, batch_first=True),
]
TIMED = [
    Case("B1 H256 T1000", 1000, 1, 256),
    Case("B1 H512 T1000", 1000, 1, 512),
    Case("B1 H1024 T1000", 1000, 1, 1024),
    Case("B64 H512 T1000", 1000, 64, 512),
    Case("bidir B1 H512 T1000", 1000, 1, 512, bidirectional=True),
]


class Report:
    def __init__(self, emit=print):
        self.emit, self.failures, self.records = emit, 0, []

    def section(self, title: str) -> None:
        self.emit(f"\n== {title}")

    def line(self, text: str, ok: bool | None = None, **record) -> None:
        mark = "" if ok is None else ("PASS " if ok else "FAIL ")
        self.failures += ok is False
        self.emit(f"  {mark}{text}")
        if record:
            self.records.append(dict(record, ok=ok))


def _state_dict(case: Case, rng) -> dict:
    import numba_lstm as nl

    module = getattr(nl, case.family)(case.I, case.H, num_layers=case.layers,
                                      bidirectional=case.bidirectional,
                                      **({"proj_size": case.proj} if case.proj else {}))
    bound = 1 / np.sqrt(case.H)  # torch's initialisation
    return {k: rng.uniform(-bound, bound, v.shape).astype(np.float32)
            for k, v in module.state_dict().items()}


def _inputs(case: Case, rng):
    x = rng.standard_normal((case.T, case.B, case.I)).astype(np.float32)
    lengths = None
    if case.ragged and case.B:
        lengths = np.maximum(1, case.T - rng.integers(0, case.T, case.B))
        lengths[0] = case.T
    return x, lengths


def _reference(case: Case, sd, x, lengths):
    from numba_lstm import reference

    out, state = reference.recurrent(
        case.family.lower(), x.astype(np.float64), {k: v.astype(np.float64) for k, v in sd.items()},
        case.layers, case.bidirectional, lengths=lengths)
    return (out, *(state if isinstance(state, tuple) else (state,)))


def _host(values) -> list[np.ndarray]:
    return [v.copy_to_host() if hasattr(v, "copy_to_host") else np.asarray(v) for v in values]


def _run(module, case: Case, x, lengths, strategy: str):
    from . import backend

    backend.STRATEGY["name"] = strategy
    try:
        x_in = np.ascontiguousarray(np.swapaxes(x, 0, 1)) if case.batch_first else x
        if not case.batch_first:
            from numba import cuda

            x_in = cuda.to_device(x)  # device in, device out
        out, state = module(x_in, lengths=lengths)
    finally:
        backend.STRATEGY["name"] = "auto"
    values = _host((out, *(state if isinstance(state, tuple) else (state,))))
    if case.batch_first:
        values[0] = np.swapaxes(values[0], 0, 1)
    return values


def _torch_cuda():
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def _torch_values(torch, case: Case, sd, x, lengths):
    net = getattr(torch.nn, case.family)(case.I, case.H, case.layers,
                                         bidirectional=case.bidirectional,
                                         **({"proj_size": case.proj} if case.proj else {}))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    net = net.cuda().eval()
    with torch.inference_mode():
        xt = torch.from_numpy(x).cuda()
        if lengths is not None:
            packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(lengths),
                                                             enforce_sorted=False)
            out, state = net(packed)
            out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=case.T)[0]
        else:
            out, state = net(xt)
    state = state if isinstance(state, tuple) else (state,)
    return [t.cpu().numpy() for t in (out, *state)]


def _max_diff(a: list, b: list) -> float:
    return max((float(np.abs(p - q).max()) if p.size else 0.0) for p, q in zip(a, b, strict=True))


# -- sections -----------------------------------------------------------------------------
def header(report: Report, simulator: bool) -> None:
    import numba
    from numba import cuda

    from . import missing_toolkit

    report.section("device")
    device = cuda.get_current_device()
    name = getattr(device, "name", "CUDA simulator")
    name = name.decode() if isinstance(name, bytes) else str(name)
    cc = getattr(device, "compute_capability", None)
    try:
        from numba.cuda.cudadrv.driver import driver
        driver_version = ".".join(map(str, driver.get_version()))
    except Exception:  # the simulator has no driver
        driver_version = "none (simulator)"
    cuda_version = importlib.metadata.version("numba-cuda")
    report.line(f"{name}, compute capability {cc}, driver {driver_version}, "
                f"numba-cuda {cuda_version}, numba {numba.__version__}",
                device=name, cc=cc, driver=driver_version, numba_cuda=cuda_version)
    missing = missing_toolkit()
    report.line("toolkit libraries: " + (", ".join(f"{k} missing ({v})" for k, v in
                                                   missing.items()) or "all found"),
                ok=not missing)
    if simulator:
        report.line("NUMBA_ENABLE_CUDASIM=1: the simulator; tiny shapes, no timings")


def resources(report: Report, cases: list[Case], simulator: bool) -> None:
    from numba import cuda

    from ..cells import CELLS
    from . import backend
    from .kernels import kernels_for
    from .launch import Limits

    report.section("resource probes: the persistent plan against the compiled kernel")
    limits = Limits.of_current_device()
    report.line(f"limits: {asdict(limits)}")
    for case in cases:
        if case.proj or not case.T or not case.B:
            continue
        cell = CELLS[case.family.lower()]
        kernels = kernels_for(cell, np.float32)
        D = 2 if case.bidirectional else 1
        G = D * cell.gates * case.H
        # One step's arrays: the plan depends on B, H and D, not on T.
        args = (cuda.device_array((1, case.B, G), np.float32),
                cuda.device_array((D, case.H + 1, G // D), np.float32),
                cuda.device_array((2, D, case.B, case.H * (1 + cell.has_cell_state)), np.float32),
                cuda.device_array((1, case.B, D * case.H), np.float32),
                cuda.device_array(case.B, np.int64), 1, 1, True)
        layer = backend.DeviceLayer(None, None, args[1], None, None, cell, D, case.H, case.H)
        plan = backend._persistent_launch(kernels.persistent, args, case.B, layer, 4, limits)
        if simulator:
            probe = "registers: n/a in the simulator"
        else:
            compiled = kernels.persistent.compile(tuple(kernels.persistent.typeof_pyval(a)
                                                        for a in args))
            probe = (f"{compiled.regs_per_thread} registers, block cap "
                     f"{compiled.max_threads_per_block}")
            if plan is not None:
                cap = compiled.max_cooperative_grid_blocks(plan.threads, plan.shared_bytes)
                probe += f", cooperative grid cap {cap} for the plan's block"
                report.line(f"{case.name}: plan {plan}; {probe}",
                            ok=plan.blocks <= cap and plan.threads
                            <= compiled.max_threads_per_block, case=case.name,
                            plan=asdict(plan), cooperative_cap=cap)
                continue
        report.line(f"{case.name}: plan {plan}; {probe}", case=case.name,
                    plan=None if plan is None else asdict(plan))


def parity(report: Report, cases: list[Case]) -> None:
    import numba_lstm as nl

    torch = _torch_cuda()
    report.section("parity: max|Δ| against the float64 NumPy reference"
                   + (" and torch CUDA (TF32 off)" if torch else "; torch CUDA absent"))
    for k, case in enumerate(cases):
        rng = np.random.default_rng(k)
        sd = _state_dict(case, rng)
        x, lengths = _inputs(case, rng)
        module = getattr(nl, case.family).from_state_dict(sd, batch_first=case.batch_first)
        module = module.to("cuda")
        ref = _reference(case, sd, x, lengths)
        theirs = _torch_values(torch, case, sd, x, lengths) if torch and case.T * case.B \
            else None
        for strategy in ("auto", "persistent", "per_step"):
            try:
                ours = _run(module, case, x, lengths, strategy)
            except RuntimeError as refused:
                if strategy == "persistent":
                    report.line(f"{case.name} [persistent]: refused ({refused})")
                    continue
                raise
            diff = _max_diff(ours, ref)
            text = f"{case.name} [{strategy}]: {diff:.2e} vs float64"
            record = dict(case=case.name, strategy=strategy, vs_float64=diff)
            if theirs is not None:
                record["vs_torch"] = _max_diff(ours, theirs)
                record["torch_vs_float64"] = _max_diff(theirs, ref)
                text += (f", {record['vs_torch']:.2e} vs torch (torch vs float64 "
                         f"{record['torch_vs_float64']:.2e})")
            shapes_ok = all(o.shape == r.shape for o, r in zip(ours, ref, strict=True))
            report.line(text, ok=shapes_ok and diff <= TOL32, **record)


def repeatability(report: Report, case: Case, runs: int = 20) -> None:
    import numba_lstm as nl

    report.section(f"repeatability: {runs} persistent runs of {case.name}, bitwise")
    rng = np.random.default_rng(99)
    sd = _state_dict(case, rng)
    x, _ = _inputs(case, rng)
    module = nl.LSTM.from_state_dict(sd).to("cuda")
    try:
        first = _run(module, case, x, None, "persistent")
    except RuntimeError as refused:
        report.line(f"persistent refused: {refused}", ok=False)
        return
    same = sum(all(np.array_equal(a, b) for a, b in zip(first, _run(
        module, case, x, None, "persistent"), strict=True)) for _ in range(runs - 1))
    report.line(f"{same + 1}/{runs} identical", ok=same == runs - 1, identical=same + 1)


def streams(report: Report, case: Case, simulator: bool) -> None:
    from numba import cuda

    import numba_lstm as nl

    report.section("streams: the same result on the caller's stream")
    rng = np.random.default_rng(7)
    sd = _state_dict(case, rng)
    x, _ = _inputs(case, rng)
    module = nl.LSTM.from_state_dict(sd).to("cuda")
    want = module(x)[0]
    stream = cuda.stream()
    x_dev = cuda.to_device(x, stream=stream)
    out = module(x_dev, stream=stream)[0]
    stream.synchronize()
    report.line("numba stream", ok=np.array_equal(out.copy_to_host(), want))
    torch = None if simulator else _torch_cuda()
    if torch is None:
        report.line("torch: skipped (no torch CUDA" + (", simulator)" if simulator else ")"))
    else:
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            xt = torch.from_numpy(x).cuda(non_blocking=True)
            out = module(xt, stream=torch.cuda.current_stream())[0]
            got = torch.as_tensor(out, device="cuda").cpu().numpy()
        report.line("torch side stream, stream=torch.cuda.current_stream()",
                    ok=np.array_equal(got, want))
    if simulator or importlib.util.find_spec("cupy") is None:
        report.line("CuPy: skipped (" + ("simulator)" if simulator else "not installed)"))
    else:
        import cupy

        with cupy.cuda.Stream(non_blocking=True) as side:
            xc = cupy.asarray(x)
            out = module(xc, stream=side)[0]
            got = cupy.asnumpy(cupy.asarray(out))
        report.line("CuPy stream", ok=np.array_equal(got, want))


def _median_seconds(fn, sync, rounds: int = 7) -> float:
    fn()
    sync()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def timings(report: Report, cases: list[Case]) -> None:
    from numba import cuda

    import numba_lstm as nl

    from ..cells import LSTM
    from .kernels import kernels_for

    torch = _torch_cuda()
    report.section("timings: median of 7 after warm-up, inputs and outputs on the device")
    for case in cases:
        rng = np.random.default_rng(3)
        sd = _state_dict(case, rng)
        x, _ = _inputs(case, rng)
        module = nl.LSTM.from_state_dict(sd).to("cuda")
        x_dev = cuda.to_device(x)
        ours = _median_seconds(lambda m=module, x=x_dev: m(x), cuda.synchronize)
        text = f"{case.name}: ours {ours * 1e3:.2f} ms ({ours / case.T * 1e6:.1f} µs/step)"
        record = dict(case=case.name, ours_s=ours)
        if torch is not None:
            net = torch.nn.LSTM(case.I, case.H, bidirectional=case.bidirectional).cuda().eval()
            net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
            xt = torch.from_numpy(x).cuda()

            def cudnn(net=net, xt=xt):
                with torch.inference_mode():
                    net(xt)
            theirs = _median_seconds(cudnn, torch.cuda.synchronize)
            text += f", cuDNN {theirs * 1e3:.2f} ms, cuDNN/ours {theirs / ours:.2f}x"
            record["cudnn_s"] = theirs
        report.line(text, **record)
    # The host's cost of one launch: enqueue many without waiting for them.
    kernels = kernels_for(LSTM, np.float32)
    T, B, H = 2, 1, 32
    lengths = cuda.device_array(B, np.int64)
    kernels.fill[1, 32](lengths, T)
    step_args = (cuda.device_array((T, B, 4 * H), np.float32), 0,
                 cuda.device_array((1, H + 1, 4 * H), np.float32),
                 cuda.device_array((2, 1, B, 2 * H), np.float32),
                 cuda.device_array((1, B, 0), np.float32),
                 cuda.device_array((T, B, H), np.float32), lengths)
    for kernel, args in ((kernels.fill, (lengths, T)), (kernels.step, step_args)):
        arrays = sum(hasattr(a, "shape") for a in args)
        kernel[1, 32](*args)
        cuda.synchronize()
        start = time.perf_counter()
        for _ in range(1000):
            kernel[1, 32](*args)
        host = (time.perf_counter() - start) / 1000
        cuda.synchronize()
        report.line(f"host time per launch, {arrays} array argument(s): {host * 1e6:.1f} µs",
                    launch_arrays=arrays, host_s=host)


def run(full: bool | None = None, json_path: str | None = None, emit=print) -> int:
    """Run every section; ``full`` defaults to real shapes on a GPU, tiny ones
    in the simulator. Returns the exit status (1 if any line failed)."""
    from . import load_backend

    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    full = not simulator if full is None else full
    load_backend()
    report = Report(emit)
    cases = FULL if full else TINY
    started = time.perf_counter()
    header(report, simulator)
    resources(report, cases, simulator)
    parity(report, cases)
    repeatability(report, cases[1] if full else cases[0], 20 if full else 5)
    streams(report, cases[0], simulator)
    if simulator:
        report.section("timings: skipped (the simulator's times mean nothing)")
    else:
        timings(report, TIMED)
    report.section(f"{report.failures} failure(s) in {time.perf_counter() - started:.0f} s")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"failures": report.failures, "records": report.records}, f, indent=1,
                      default=str)
    return 1 if report.failures else 0
