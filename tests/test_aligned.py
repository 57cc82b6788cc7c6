"""Arrays on cache lines (numba_lstm.cpu.aligned), and every weight array the CPU
kernels stream starting on one."""

import numpy as np
import pytest
from numba import njit
from test_kernels import random_layer
from test_models import random_layernorm_params

import numba_lstm as nl
from numba_lstm.cpu.aligned import (
    CACHE_LINE,
    aligned_copy,
    aligned_empty,
    aligned_zeros,
    empty_on_lines,
)
from numba_lstm.cpu.packing import pack_stack


def _on_a_line(a: np.ndarray) -> bool:
    return a.ctypes.data % CACHE_LINE == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("shape", [7, (0,), (3, 5), (2, 0, 4), (1, 33, 17)])
def test_aligned_arrays_start_on_a_line_with_the_asked_shape(shape, dtype):
    for _ in range(8):  # NumPy's own allocations land on every 16-byte offset
        empty = aligned_empty(shape, dtype)
        zeros = aligned_zeros(shape, dtype)
        for a in (empty, zeros):
            assert a.shape == ((shape,) if isinstance(shape, int) else shape)
            assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
            assert _on_a_line(a) or a.size == 0
        assert not zeros.any()


@njit
def _jitted_buffers(rows, cols):
    """Buffers as the kernels allocate them, with Numba's own np.empty between
    them (its data lands 0 or 32 bytes past a line, by size)."""
    out = []
    for n in range(1, rows + 1):
        spacer = np.empty(n * 24 + 8, np.uint8)
        a = empty_on_lines(n, cols, np.uint8)
        b = empty_on_lines(n, cols + 3, np.float32)
        c = empty_on_lines(0, cols, np.int16)
        a[...] = n
        b[...] = n
        out.append((spacer.size, a.ctypes.data % CACHE_LINE, b.ctypes.data % CACHE_LINE, a.shape[0],
                    a.shape[1], b.shape[1], c.shape[0], a.sum() == n * n * cols))
    return out


def test_jitted_buffers_start_on_a_line_with_the_asked_shape():
    for _, a_off, b_off, rows, cols, b_cols, c_rows, filled in _jitted_buffers(40, 96):
        assert (a_off, b_off) == (0, 0)
        assert (cols, b_cols, c_rows) == (96, 99, 0) and rows > 0 and filled


def test_aligned_copy_is_an_equal_independent_c_array():
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5).transpose(2, 0, 1)  # not C
    for _ in range(8):
        b = aligned_copy(a)
        assert _on_a_line(b) and b.flags.c_contiguous
        np.testing.assert_array_equal(b, a)
        b[0, 0, 0] = -1
        assert a[0, 0, 0] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L", [1, 3])
def test_every_packed_weight_array_starts_on_a_line(dtype, L):
    rng = np.random.default_rng(0)
    H = 20  # rows of 4H = 80 values: whole lines in either dtype
    stack = pack_stack([random_layer(rng, 12 if k == 0 else H, H, 0, 1, True)
                        for k in range(L)], dtype)
    arrays = list(stack.step) + list(stack.team_blocks(4)) + list(stack.team_blocks(3))
    for layer in stack:
        arrays += [layer.w_ih, layer.bias, layer.w_hh, *layer.panels(),
                   layer.input_and_hidden_panels()]
    bidirectional = pack_stack([random_layer(rng, 12, H, 0, 2, True)], dtype)[0]
    projected = pack_stack([random_layer(rng, 12, H, 8, 1, True)], dtype)[0]
    for layer in (bidirectional, projected):
        arrays += [layer.w_ih, layer.bias, layer.w_hh, layer.w_hr, *layer.panels()]
    assert all(_on_a_line(a) for a in arrays if a.size)


def test_layernorm_lstm_streamed_weights_start_on_a_line():
    params = random_layernorm_params(np.random.default_rng(0), 12, 16, 1)
    for _ in range(8):  # one NumPy allocation in four lands on a line by chance
        (layer,) = nl.LayerNormLSTM.from_state_dict(params, dtype="float32")._layers
        assert all(_on_a_line(a) for a in (layer.w_ih, layer.w_hh, layer.cell_params))
