"""The batch-1 kernel that threads share without barriers (numba_lstm.cpu.cooperative).

Whoever claims a block computes it, so the result must be the reference's
whether the helper thread joins, joins late, or never comes; and a call that
finds every block claimed must touch nothing.
"""

import threading

import numpy as np
import pytest
from conftest import assert_close
from numba import njit
from test_kernels import check_layer, random_layer

import numba_lstm.cpu as cpu
from numba_lstm import reference
from numba_lstm.cpu.atomics import fetch_add, load_acquire
from numba_lstm.cpu.cooperative import PROJECTION_ROWS, lstm_layer_cooperative
from numba_lstm.cpu.packing import pack_layer


@njit(nogil=True)
def _add_many(counter, n):
    for _ in range(n):
        fetch_add(counter, 0, 1)
    return load_acquire(counter, 0)


def test_fetch_add_loses_no_update_between_threads():
    counter = np.zeros(1, np.int64)
    threads = [threading.Thread(target=_add_many, args=(counter, 200_000)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter[0] == 600_000
    assert _add_many(counter, 0) == 600_000


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_layer_forward_takes_the_cooperative_path(monkeypatch, dtype, with_lengths):
    monkeypatch.setattr(cpu, "COOPERATIVE_MIN_WEIGHT_BYTES", 0)
    calls = []
    monkeypatch.setattr(cpu, "lstm_layer_cooperative",
                        lambda *a: calls.append(a[-1]) or lstm_layer_cooperative(*a))
    rng = np.random.default_rng(int(with_lengths))
    check_layer(rng, 37, 1, 5, 9, 0, 1, True, dtype, with_lengths)  # 37 steps: 3 row tasks
    assert 0 in calls  # the caller's own call (1 too when the helper joined)


def _kernel_args(rng, T, I, H, n_blocks, dtype, steps):
    directions = random_layer(rng, I, H, 0, 1, True)
    layer = pack_layer(directions, dtype)
    x = rng.standard_normal((T, I)).astype(dtype)
    h_buf = np.zeros((2, H), dtype)
    h_buf[0] = rng.standard_normal(H)
    c = rng.standard_normal(H).astype(dtype)
    expected = reference.lstm_direction(
        x[:, None].astype(np.float64), h_buf[:1].astype(np.float64), c[None].astype(np.float64),
        tuple(None if a is None else np.asarray(a, dtype).astype(np.float64)
              for a in directions[0]),
        lengths=np.array([steps]))
    out = np.zeros((T, H), dtype)
    claims = np.zeros(-(-steps // PROJECTION_ROWS) + steps * n_blocks, np.int64)
    args = (x, layer.w_ih[None], layer.bias, np.empty((T, 4 * H), dtype),
            layer.w_hh_blocks(n_blocks), h_buf, c, out, steps, claims, np.zeros(2, np.int64))
    return args, expected


def _check(args, expected, dtype):
    ref_out, ref_h, ref_c = expected
    _, _, _, _, _, h_buf, c, out, steps, _, _ = args
    assert_close(out, ref_out[:, 0], dtype, "out")
    assert_close(h_buf[steps % 2], ref_h[0], dtype, "h_n")
    assert_close(c, ref_c[0], dtype, "c_n")


@pytest.mark.parametrize("n_blocks", [1, 2, 3])
def test_a_lone_caller_computes_every_block(n_blocks):
    # H=10 over 3 blocks: units 4+4+2, the last block zero-padded.
    args, expected = _kernel_args(np.random.default_rng(n_blocks), 20, 6, 10, n_blocks,
                                  np.float64, steps=17)
    lstm_layer_cooperative(*args, n_blocks - 1)
    _check(args, expected, np.float64)
    assert np.all(args[7][17:] == 0)


def test_a_late_caller_changes_nothing():
    args, expected = _kernel_args(np.random.default_rng(7), 12, 4, 8, 2, np.float64, steps=12)
    lstm_layer_cooperative(*args, 0)
    data = [a for a in args if isinstance(a, np.ndarray)][:-2]  # all but claims, done
    snapshot = [a.copy() for a in data]
    lstm_layer_cooperative(*args, 1)  # a helper arriving after the work is done
    assert all(np.array_equal(a, b) for a, b in zip(data, snapshot, strict=True))
    _check(args, expected, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_sharing_one_call_match_the_reference(dtype):
    for seed in range(5):
        args, expected = _kernel_args(np.random.default_rng(seed), 40, 6, 16, 2, dtype, 40)
        helper = threading.Thread(target=lstm_layer_cooperative, args=args + (1,))
        helper.start()
        lstm_layer_cooperative(*args, 0)
        helper.join()
        _check(args, expected, dtype)
