"""float32 kernels compute in float32: every kernel of every cell compiled to
sm_90 PTX (cuda.compile_ptx: NVVM and NVRTC, no GPU) has no double-precision
instruction. A float64 constant or literal in a kernel types the arithmetic
around it as double, which costs 2x on data-centre GPUs and up to 64x on
consumer ones."""

import os

import numpy as np
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda not installed (the cuda extra)")
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("the simulator compiles nothing", allow_module_level=True)


def _toolkit_or_skip():
    try:
        from numba.cuda.cudadrv import nvrtc, nvvm

        if not nvvm.is_available():
            raise RuntimeError("no NVVM")
        nvrtc.get_supported_ccs()  # raises where libnvrtc is missing
    except Exception as error:  # what each missing library raises differs by version
        pytest.skip(f"CUDA toolkit libraries missing ({type(error).__name__}): install "
                    "numba-cuda[cu12] or [cu13]")


# The LayerNorm row accumulates its mean and variance in float64 on purpose
# (cells/layernorm_lstm.py), as the CPU does: O(H) a row beside the O(H^2) matmul.
DELIBERATE = {("layernorm_lstm", "row_cells")}


# The kernels that do not involve the cell are compiled once, with the LSTM's.
CELL_KERNELS = {"step", "persistent", "row_gates", "row_cells"}


@pytest.mark.parametrize("cell_name", ["lstm", "gru", "rnn_relu", "layernorm_lstm"])
def test_float32_kernels_have_no_double_precision_arithmetic(cell_name):
    _toolkit_or_skip()
    from numba_lstm.cells import CELLS
    from numba_lstm.cuda import probe

    kernels = probe.ptx(CELLS[cell_name], np.float32,
                        names=None if cell_name == "lstm" else CELL_KERNELS)
    if cell_name == "lstm":
        assert {"matmul_bias", "state_in", "state_out", "project", "step"} <= set(kernels)
    for name, text in kernels.items():
        doubles = probe.float64_instructions(text)
        if (cell_name, name) in DELIBERATE:
            assert doubles  # the exemption is still needed, or it should go
            continue
        assert not doubles, f"{cell_name}.{name}: {doubles[:5]}"
        if name in ("matmul_bias", "step", "persistent"):
            assert "fma.rn.f32" in text, f"{cell_name}.{name} has no float32 FMA"


def test_the_check_finds_double_precision_where_there_is_some():
    _toolkit_or_skip()
    from numba import cuda, types

    from numba_lstm.cuda import probe

    def scaled(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = a[i] * 0.1  # a float64 literal: the product is double
    text = cuda.compile_ptx(scaled, (types.Array(types.float32, 1, "C"),), cc=(9, 0))[0]
    assert probe.float64_instructions(text)
