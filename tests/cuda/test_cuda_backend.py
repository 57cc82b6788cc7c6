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
TOL = {np.float32: 2e-5, np.float64: 1e-10}  # SPEC §2


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


def test_launch_shapes_follow_device_limits():
    from numba_lstm.cuda.launch import Limits, grid_1d, persistent_units

    big = Limits(1024, 48 * 1024, 132, 32, False)
    assert grid_1d(1000, big) == (8, 128)
    # H=256 float32: 4 KB of W_hh per unit -> 12 units per block by shared memory.
    assert persistent_units(1, 256, 1, 4, big) == 2  # 256 units over 132 SMs
    assert persistent_units(1, 1024, 1, 4, big) is None  # 1024 / 3 units > 132 blocks
    assert persistent_units(2048, 16, 1, 4, big) is None  # batch beyond a block
