"""The CUDA backend against the NumPy reference, on tiny shapes.

Runs where numba.cuda works: a real GPU, or Numba's simulator
(NUMBA_ENABLE_CUDASIM=1 set before numba is imported; tests/test_cuda.py does
that in a subprocess). Everywhere else the module skips.
"""

import os

import numpy as np
import pytest

cuda_backend = pytest.importorskip("numba_lstm.cuda.backend", reason="numba-cuda not installed")
from numba import cuda  # noqa: E402

if not cuda.is_available():
    pytest.skip("no GPU and NUMBA_ENABLE_CUDASIM is not 1", allow_module_level=True)

import numba_lstm as nl  # noqa: E402
from numba_lstm import reference  # noqa: E402

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
TOL = {np.float32: 2e-5, np.float64: 1e-10}  # max |Δ| bounds, docs/index.md


@pytest.fixture(params=["persistent", "per_step"])
def strategy(request):
    cuda_backend.STRATEGY["name"] = request.param
    yield request.param
    cuda_backend.STRATEGY["name"] = "auto"


def _pair(rng, dtype, T=3, B=2, I=5, H=4, layers=1, bidirectional=False, proj=0):
    cpu = nl.LSTM(I, H, num_layers=layers, bidirectional=bidirectional, proj_size=proj,
                  dtype=dtype)
    sd = {k: rng.standard_normal(v.shape).astype(dtype) * 0.5
          for k, v in cpu.state_dict().items()}
    cpu.load_state_dict(sd)
    gpu = nl.LSTM.from_state_dict(sd, dtype=dtype).to("cuda")
    x = rng.standard_normal((T, B, I)).astype(dtype)
    return cpu, gpu, sd, x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_reference(strategy, dtype, bidirectional):
    if strategy == "persistent" and bidirectional and SIMULATOR:
        pytest.skip("two blocks need a real grid barrier; the simulator runs blocks in turn")
    rng = np.random.default_rng(0)
    _, gpu, sd, x = _pair(rng, dtype, layers=2, bidirectional=bidirectional)
    lengths = np.array([3, 2])
    out, (h_n, c_n) = gpu(x, lengths=lengths)
    ref_out, (ref_h, ref_c) = reference.lstm(
        x.astype(np.float64), {k: v.astype(np.float64) for k, v in sd.items()}, 2,
        bidirectional=bidirectional, lengths=lengths)
    assert isinstance(out, np.ndarray)
    for ours, ref in ((out, ref_out), (h_n, ref_h), (c_n, ref_c)):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL[dtype])
    assert np.all(out[2:, 1] == 0)


def test_projection_runs_per_step_and_matches_cpu():
    cuda_backend.STRATEGY["name"] = "auto"
    rng = np.random.default_rng(1)
    cpu, gpu, _, x = _pair(rng, np.float64, H=5, proj=3)
    ours, (h, c) = gpu(x)
    theirs, (h_cpu, c_cpu) = cpu(x)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(h, h_cpu, rtol=0, atol=1e-10)
    np.testing.assert_allclose(c, c_cpu, rtol=0, atol=1e-10)


def test_persistent_is_refused_with_projection():
    cuda_backend.STRATEGY["name"] = "persistent"
    try:
        rng = np.random.default_rng(2)
        _, gpu, _, x = _pair(rng, np.float32, H=5, proj=3)
        with pytest.raises(RuntimeError, match="persistent kernel cannot run"):
            gpu(x)
    finally:
        cuda_backend.STRATEGY["name"] = "auto"


def test_device_input_stays_on_device(strategy):
    rng = np.random.default_rng(3)
    cpu, gpu, _, x = _pair(rng, np.float32)
    out, (h, c) = gpu(cuda.to_device(x))
    assert all(cuda_backend.is_device_array(a) for a in (out, h, c))
    np.testing.assert_allclose(out.copy_to_host(), cpu(x)[0], rtol=0, atol=2e-5)


def test_device_input_of_wrong_dtype_is_refused():
    rng = np.random.default_rng(4)
    _, gpu, _, x = _pair(rng, np.float32)
    with pytest.raises(TypeError, match="must already be float32"):
        gpu(cuda.to_device(x.astype(np.float64)))


def test_streaming_on_cuda_matches_whole_sequence():
    rng = np.random.default_rng(5)
    _, gpu, _, x = _pair(rng, np.float32, T=4, B=1)
    whole, _ = gpu(x)
    stream = gpu.stream()
    steps = np.concatenate([stream(x[t:t + 1]) for t in range(4)])
    np.testing.assert_allclose(steps, whole, rtol=0, atol=2e-5)


def _reference(sd, x, layers=1, **kw):
    return reference.lstm(x.astype(np.float64), {k: v.astype(np.float64) for k, v in sd.items()},
                          layers, **kw)


def test_batch_first_device_input_is_transposed_on_the_device():
    rng = np.random.default_rng(6)
    _, gpu, sd, x = _pair(rng, np.float32, T=4, B=3)
    gpu.batch_first = True
    out, (h_n, _) = gpu(cuda.to_device(np.ascontiguousarray(x.transpose(1, 0, 2))))
    ref_out, (ref_h, _) = _reference(sd, x)
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out.copy_to_host(), ref_out.transpose(1, 0, 2), rtol=0, atol=2e-5)
    np.testing.assert_allclose(h_n.copy_to_host(), ref_h, rtol=0, atol=2e-5)


def test_unbatched_device_input_and_device_hx():
    rng = np.random.default_rng(7)
    _, gpu, sd, x = _pair(rng, np.float64, T=3, B=1, layers=2)
    h0 = rng.standard_normal((2, 4))
    c0 = rng.standard_normal((2, 4))
    out, (h_n, c_n) = gpu(cuda.to_device(x[:, 0]), (cuda.to_device(h0), cuda.to_device(c0)))
    ref_out, (ref_h, ref_c) = _reference(sd, x, 2, hx=(h0[:, None], c0[:, None]))
    assert (out.shape, h_n.shape, c_n.shape) == ((3, 4), (2, 4), (2, 4))
    for ours, ref in ((out, ref_out[:, 0]), (h_n, ref_h[:, 0]), (c_n, ref_c[:, 0])):
        np.testing.assert_allclose(ours.copy_to_host(), ref, rtol=0, atol=1e-10)


def test_device_hx_with_host_input_gives_host_results():
    rng = np.random.default_rng(8)
    cpu, gpu, _, x = _pair(rng, np.float32)
    hx = (rng.standard_normal((1, 2, 4)).astype(np.float32),
          rng.standard_normal((1, 2, 4)).astype(np.float32))
    out, (h_n, _) = gpu(x, tuple(cuda.to_device(s) for s in hx))
    theirs, (h_cpu, _) = cpu(x, hx)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, theirs, rtol=0, atol=2e-5)
    np.testing.assert_allclose(h_n, h_cpu, rtol=0, atol=2e-5)


@pytest.mark.parametrize("layout", ["time_major", "batch_first", "unbatched"])
@pytest.mark.parametrize("x_kind", ["numpy", "device"])
@pytest.mark.parametrize("hx_kind", [None, "numpy", "device"])
def test_results_live_where_the_input_lives_in_every_layout(layout, x_kind, hx_kind):
    # NumPy input gives NumPy results and device input device results, whatever
    # the layout and wherever hx lives (batch_first once gave device arrays).
    rng = np.random.default_rng(11)
    cpu, _, sd, x = _pair(rng, np.float32, T=3, B=2, layers=2)
    gpu = nl.LSTM.from_state_dict(sd, batch_first=layout == "batch_first").to("cuda")
    cpu.batch_first = layout == "batch_first"
    x = {"time_major": x, "batch_first": np.ascontiguousarray(x.transpose(1, 0, 2)),
         "unbatched": np.ascontiguousarray(x[:, 0])}[layout]
    state_shape = (2, 4) if layout == "unbatched" else (2, 2, 4)
    hx = None
    if hx_kind is not None:
        hx = tuple(rng.standard_normal(state_shape).astype(np.float32) for _ in range(2))
    expected_out, (expected_h, expected_c) = cpu(x, hx)
    if hx_kind == "device":
        hx = tuple(cuda.to_device(s) for s in hx)
    out, (h_n, c_n) = gpu(x if x_kind == "numpy" else cuda.to_device(x), hx)
    for ours, theirs in ((out, expected_out), (h_n, expected_h), (c_n, expected_c)):
        if x_kind == "numpy":
            assert isinstance(ours, np.ndarray), type(ours)
        else:
            assert cuda_backend.is_device_array(ours), type(ours)
            ours = ours.copy_to_host()
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5)


def test_device_hx_of_wrong_shape_names_both_shapes():
    rng = np.random.default_rng(9)
    _, gpu, _, x = _pair(rng, np.float32)
    bad = cuda.to_device(np.zeros((1, 3, 4), np.float32))
    expected = r"Expected hidden\[0\] size \(1, 2, 4\), got \[1, 3, 4\]"
    with pytest.raises(RuntimeError, match=expected):
        gpu(cuda.to_device(x), (bad, bad))


def test_device_lengths_are_refused_like_torch():
    rng = np.random.default_rng(10)
    _, gpu, _, x = _pair(rng, np.float32)
    with pytest.raises(RuntimeError, match="lengths must be a host"):
        gpu(cuda.to_device(x), lengths=cuda.to_device(np.array([3, 2])))


def test_device_input_makes_no_host_transfers(monkeypatch, strategy):
    rng = np.random.default_rng(11)
    cpu, gpu, _, x = _pair(rng, np.float32, layers=2)
    x_dev = cuda.to_device(x)
    hx = tuple(cuda.to_device(np.full((2, 2, 4), 0.5, np.float32)) for _ in range(2))

    def refuse(*args, **kwargs):
        raise AssertionError("a host <-> device transfer during a device-resident call")

    monkeypatch.setattr(cuda, "to_device", refuse)
    monkeypatch.setattr(type(x_dev), "copy_to_host", refuse)
    out, (h_n, c_n) = gpu(x_dev, hx)
    out_zero_state, _ = gpu(x_dev)  # zeros and full lengths are made on the device
    monkeypatch.undo()
    state = np.full((2, 2, 4), 0.5, np.float32)
    np.testing.assert_allclose(out.copy_to_host(), cpu(x, (state, state))[0], rtol=0, atol=2e-5)
    np.testing.assert_allclose(out_zero_state.copy_to_host(), cpu(x)[0], rtol=0, atol=2e-5)


def test_work_goes_on_the_input_arrays_stream():
    rng = np.random.default_rng(12)
    _, gpu, _, x = _pair(rng, np.float32)
    stream = cuda.stream()
    x_dev = cuda.device_array(x.shape, x.dtype, stream=stream)
    x_dev.copy_to_device(x, stream=stream)
    out, (h_n, c_n) = gpu(x_dev)
    assert all(_same_stream(a.stream, stream) for a in (out, h_n, c_n))


def _same_stream(a, b) -> bool:
    # On a GPU a wrapped array gets a new Stream object for the same handle.
    return a is b or (not SIMULATOR and int(a.handle) == int(b.handle))


def test_an_explicit_stream_takes_precedence():
    rng = np.random.default_rng(21)
    cpu, gpu, _, x = _pair(rng, np.float32)
    stream = cuda.stream()
    x_dev = cuda.to_device(x)  # on the default stream
    out, (h_n, c_n) = gpu(x_dev, stream=stream)
    assert all(_same_stream(a.stream, stream) for a in (out, h_n, c_n))
    stream.synchronize()
    np.testing.assert_allclose(out.copy_to_host(), cpu(x)[0], rtol=0, atol=2e-5)


def test_stream_arguments_of_every_kind_resolve():
    class TorchLike:  # torch.cuda.Stream's handle attribute
        cuda_stream = 0

    class CuPyLike:  # cupy.cuda.Stream's
        ptr = 2

    legacy, per_thread = cuda.legacy_default_stream(), cuda.per_thread_default_stream()
    resolve = cuda_backend.resolve_stream
    assert isinstance(resolve(TorchLike()), type(legacy))
    assert isinstance(resolve(CuPyLike()), type(per_thread))
    assert isinstance(resolve(1), type(legacy))
    stream = cuda.stream()
    assert resolve(stream) is stream
    with pytest.raises(TypeError, match="stream must be"):
        resolve("stream 7")
    with pytest.raises(TypeError, match="stream must be"):
        resolve(True)


def test_a_cpu_module_refuses_a_stream():
    with pytest.raises(ValueError, match="device='cuda'"):
        nl.LSTM(3, 4)(np.zeros((2, 1, 3), np.float32), stream=cuda.stream())


@pytest.mark.skipif(SIMULATOR, reason="the simulator's arrays have no __cuda_array_interface__")
def test_outputs_advertise_a_valid_stream_handle():
    _, gpu, _, x = _pair(np.random.default_rng(22), np.float32)
    out, (h_n, c_n) = gpu(cuda.to_device(x))
    for a in (out, h_n, c_n):
        assert a.__cuda_array_interface__["stream"] != 0  # forbidden by interface v3


def test_stream_handles_of_the_cuda_array_interface(monkeypatch):
    seen = []
    monkeypatch.setattr(cuda, "external_stream", lambda handle: seen.append(handle) or "ext")

    class Foreign:  # what CuPy / torch expose: a raw stream handle, 1 or 2 for the defaults
        def __init__(self, handle):
            self.__cuda_array_interface__ = {"stream": handle}

    assert cuda_backend.stream_of(Foreign(0xBEEF)) == "ext" and seen == [0xBEEF]
    for handle in (None, 1, 2):
        assert cuda_backend.stream_of(Foreign(handle)) is not None
    assert seen == [0xBEEF]


def test_streaming_device_chunks_keeps_the_state_on_the_device():
    rng = np.random.default_rng(13)
    _, gpu, _, x = _pair(rng, np.float32, T=4, B=2)
    whole, _ = gpu(x)
    stream = gpu.stream()
    steps = [stream(cuda.to_device(x[t:t + 1])) for t in range(4)]
    assert all(cuda_backend.is_device_array(s) for s in stream.state)
    got = np.concatenate([s.copy_to_host() for s in steps])
    np.testing.assert_allclose(got, whole, rtol=0, atol=2e-5)
    stream.state = tuple(cuda_backend.copy(s) for s in stream.state)  # settable from the GPU
    assert all(cuda_backend.is_device_array(s) for s in stream.state)


def test_gpu_bench_runs_a_shape_and_prints_per_step_latency():
    from numba_lstm import bench

    # The benchmark shapes take minutes in the simulator; tiny ones run the same code.
    tiny = [bench.Shape("tiny", 2, 3, 5, 4, 2, False, "sequence"),
            bench.Shape("tiny-stream", 1, 1, 5, 4, 1, False, "streaming step")]
    report = bench.run(tiny, ["numba_lstm", "torch", "onnxruntime"], device="cuda",
                       rounds=1, min_seconds=0.0)
    assert [r["shape"]["id"] for r in report["results"]] == ["tiny", "tiny-stream"]
    for result in report["results"]:
        assert result["seconds"]["numba_lstm"] > 0
        assert "onnxruntime" in result["unavailable"]
    table = bench.format_table(report)
    assert "| tiny |" in table and "per step" in table and "torch (cuDNN)" in table


@pytest.mark.parametrize("family,extra", [("GRU", {}), ("RNN", {}),
                                          ("RNN", {"nonlinearity": "relu"})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_and_rnn_match_reference(strategy, family, extra, dtype):
    # The same step and persistent kernels, with the GRU / RNN cell bound in.
    rng = np.random.default_rng(1)
    cpu = getattr(nl, family)(5, 4, num_layers=2, dtype=dtype, **extra)
    sd = {k: rng.standard_normal(v.shape).astype(dtype) * 0.5
          for k, v in cpu.state_dict().items()}
    gpu = getattr(nl, family).from_state_dict(sd, dtype=dtype, **extra).to("cuda")
    x = rng.standard_normal((3, 2, 5)).astype(dtype)
    h0 = rng.standard_normal((2, 2, 4)).astype(dtype)
    lengths = np.array([3, 2])
    out, h_n = gpu(x, h0, lengths=lengths)
    cell = family.lower() if family == "GRU" else "rnn_" + extra.get("nonlinearity", "tanh")
    ref_out, ref_h = reference.recurrent(cell, x.astype(np.float64),
                                         {k: v.astype(np.float64) for k, v in sd.items()}, 2,
                                         hx=h0.astype(np.float64), lengths=lengths)
    assert isinstance(out, np.ndarray) and isinstance(h_n, np.ndarray)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=TOL[dtype])
    np.testing.assert_allclose(h_n, ref_h, rtol=0, atol=TOL[dtype])
    assert np.all(out[2:, 1] == 0)


def test_gru_cell_and_stream_on_the_device():
    rng = np.random.default_rng(2)
    gru = nl.GRU(3, 4)
    gpu = nl.GRU.from_state_dict(gru.state_dict()).to("cuda")
    x = rng.standard_normal((5, 1, 3)).astype(np.float32)
    whole, h_n = gru(x)
    stream = gpu.stream()
    parts = [stream(cuda.to_device(x[t:t + 1])) for t in range(5)]
    assert all(hasattr(p, "copy_to_host") for p in parts)  # device in, device out
    np.testing.assert_allclose(np.concatenate([p.copy_to_host() for p in parts]), whole,
                               rtol=0, atol=2e-5)
    np.testing.assert_allclose(stream.state.copy_to_host(), h_n, rtol=0, atol=2e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_lstm_on_the_device_matches_reference(dtype):
    # A cell with a row of its own: the gates kernel, then one thread per row.
    rng = np.random.default_rng(3)
    H, L = 6, 2
    params = {}
    for k in range(L):
        p = f"cells.{k}."
        params[p + "input_lin.weight"] = rng.standard_normal((4 * H, 5 if k == 0 else H)) * 0.5
        params[p + "hidden_lin.weight"] = rng.standard_normal((4 * H, H)) * 0.5
        params[p + "hidden_lin.bias"] = rng.standard_normal(4 * H) * 0.5
        for norm in [f"layer_norm.{n}" for n in range(4)] + ["layer_norm_c"]:
            params[p + norm + ".weight"] = 1 + 0.3 * rng.standard_normal(H)
            params[p + norm + ".bias"] = 0.3 * rng.standard_normal(H)
    gpu = nl.LayerNormLSTM.from_state_dict(params, dtype=dtype).to("cuda")
    x = rng.standard_normal((4, 3, 5)).astype(dtype)
    out, (h_n, c_n) = gpu(x)
    ref_out, (ref_h, ref_c) = reference.layernorm_lstm(x.astype(np.float64), params, L)
    for ours, ref in ((out, ref_out), (h_n, ref_h), (c_n, ref_c)):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("family,B,H", [("LSTM", 1, 8), ("GRU", 3, 5), ("LSTM", 2, 8)])
def test_persistent_lanes_split_the_dot_product(family, B, H):
    from numba_lstm.cuda.launch import KernelResources, Limits, persistent_plan

    limits = Limits.of_current_device()
    plan = persistent_plan(B, H, 1, 4, 4, limits, KernelResources(0, limits.max_threads_per_block))
    assert plan is not None and plan.lanes > 1  # the reduction in shared memory runs
    cuda_backend.STRATEGY["name"] = "persistent"
    try:
        rng = np.random.default_rng(B * 100 + H)
        cls = getattr(nl, family)
        cpu = cls(3, H, num_layers=2)
        sd = {k: rng.standard_normal(v.shape).astype(np.float32) * 0.5
              for k, v in cpu.state_dict().items()}
        cpu.load_state_dict(sd)
        gpu = cls.from_state_dict(sd).to("cuda")
        x = rng.standard_normal((4, B, 3)).astype(np.float32)
        lengths = np.arange(4, 4 - B, -1) if B > 1 else None
        got, want = gpu(x, lengths=lengths), cpu(x, lengths=lengths)
    finally:
        cuda_backend.STRATEGY["name"] = "auto"
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=2e-5)
    for g, w in zip(got[1] if family == "LSTM" else (got[1],),
                    want[1] if family == "LSTM" else (want[1],), strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-5)


@pytest.mark.parametrize("T,B", [(0, 2), (3, 0), (0, 0)])
@pytest.mark.parametrize("on_device", [False, True])
def test_empty_inputs_behave_as_on_the_cpu(T, B, on_device):
    rng = np.random.default_rng(23)
    cpu, gpu, _, _ = _pair(rng, np.float32, layers=2, bidirectional=True)
    x = np.zeros((T, B, 5), np.float32)
    state = rng.standard_normal((4, B, 4)).astype(np.float32)
    for hx in (None, (state, state)):
        want = cpu(x, hx)
        got = gpu(cuda.to_device(x) if on_device else x, hx)
        host = [a.copy_to_host() if on_device else a for a in (got[0], *got[1])]
        for g, w in zip(host, (want[0], *want[1]), strict=True):
            assert g.shape == w.shape
            np.testing.assert_array_equal(g, w)


def test_the_gpu_check_runs_end_to_end(capsys, tmp_path):
    import json

    from numba_lstm.cli import main

    status = main(["check", "--device", "cuda", "--shapes", "tiny", "--json",
                   str(tmp_path / "check.json")])
    text = capsys.readouterr().out
    assert status == 0, text
    for section in ("== device", "== resource probes", "== parity", "== repeatability",
                    "== streams", "== timings", "0 failure(s)"):
        assert section in text
    records = json.loads((tmp_path / "check.json").read_text())["records"]
    strategies = {r["strategy"] for r in records if "strategy" in r}
    assert strategies == {"auto", "persistent", "per_step"}
    assert all(r["vs_float64"] <= 2e-5 for r in records if "vs_float64" in r)


def test_missing_toolkit_libraries_are_named(monkeypatch):
    import numba_lstm.cuda as nl_cuda

    monkeypatch.setattr(nl_cuda, "missing_toolkit",
                        lambda: {"NVVM (libnvvm)": "compiles every kernel"})
    with pytest.raises(RuntimeError, match="NVVM.*pip install 'numba-lstm\\[cuda\\]'"):
        nl_cuda.load_backend()
    monkeypatch.setattr(nl_cuda, "missing_toolkit", lambda: {
        "libcudadevrt.a": "links the persistent kernel's grid barrier"})
    try:
        assert nl_cuda.load_backend() is cuda_backend
        rng = np.random.default_rng(24)
        cpu, gpu, _, x = _pair(rng, np.float32)
        np.testing.assert_allclose(gpu(x)[0], cpu(x)[0], rtol=0, atol=2e-5)  # per step
        cuda_backend.STRATEGY["name"] = "persistent"
        with pytest.raises(RuntimeError, match="libcudadevrt.a"):
            gpu(x)
    finally:
        cuda_backend.STRATEGY["name"] = "auto"
        cuda_backend.PERSISTENT_UNAVAILABLE["reason"] = None
