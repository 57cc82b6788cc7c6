"""The small-batch kernel the team's threads share (numba_lstm.cpu.cooperative,
numba_lstm.cpu.team).

Whoever claims a block computes it, so the result must be the reference's
whether a helper joins, joins late, or never comes; a thread that arrives
after the work is done must touch nothing.
"""

import multiprocessing
import threading
import time

import numba
import numpy as np
import pytest
from conftest import assert_close
from numba import njit
from test_kernels import random_layer

import numba_lstm as nl
import numba_lstm.cpu as cpu
from numba_lstm import reference
from numba_lstm.cells import GRU, LSTM
from numba_lstm.cpu.atomics import fetch_add, load_acquire
from numba_lstm.cpu.cooperative import (
    _block_step,
    claim_count,
    count_block,
    done_size,
    h_in_out,
    recurrence_claims_start,
    stack_job,
    step_claim,
    steps_done,
)
from numba_lstm.cpu.dot_gemm import DOT_NR
from numba_lstm.cpu.layer import row_function
from numba_lstm.cpu.packing import pack_stack
from numba_lstm.cpu.panel_gemm import gemm_panels_acc
from numba_lstm.cpu.row_step import row_block_step
from numba_lstm.cpu.team import CTRL_SIZE, DESC, KIND, MIN_SPIN_US, Team, serve


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


def _stack(rng, L, I, H, dtype, bias=True, scale=0.5):
    """A random stack of L layers, packed, and its parameters in float64."""
    layers = [random_layer(rng, I if k == 0 else H, H, 0, 1, bias, scale) for k in range(L)]
    as64 = [tuple(None if a is None else np.asarray(a, dtype).astype(np.float64) for a in dw)
            for [dw] in layers]
    return pack_stack(layers, dtype), as64


def _reference(params, x, h0, c0, lengths):
    """reference.lstm_direction layer by layer, in float64: out, h_n, c_n."""
    out, h_n, c_n = x.astype(np.float64), [], []
    for k, p in enumerate(params):
        out, h, c = reference.lstm_direction(out, h0[k].astype(np.float64),
                                             c0[k].astype(np.float64), p, lengths=lengths)
        h_n.append(h)
        c_n.append(c)
    return out, np.stack(h_n), np.stack(c_n)


# Where _job's list holds stack_job's outputs and counters.
H_BUF, C, OUT, CLAIMS, DONE, STEPS = 10, 11, 12, 14, 15, 16


def _job(rng, L, T, B, I, H, n_blocks, dtype, lengths, scale=0.5):
    """stack_job's arguments (without tid, n_threads, x_is_hidden) and the reference result."""
    stack, params = _stack(rng, L, I, H, dtype, scale=scale)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((L, B, H)).astype(dtype)
    c = rng.standard_normal((L, B, H)).astype(dtype)
    expected = _reference(params, x, h0, c, lengths)
    steps = int(lengths.max())
    h_buf = np.zeros((L, 2, B, H), dtype)
    h_buf[:, 0] = h0
    w_ih0, w_ih_rest, bias, w_hh, bias_h = stack.team_blocks(n_blocks)
    out, mid = np.zeros((T, B, H), dtype), np.zeros((T, B, H), dtype)
    args = [x, w_ih0, w_ih_rest, bias, w_hh, bias_h, None, None, lengths,  # a float stack
            np.empty((n_blocks, steps * B, bias.shape[2]), dtype), h_buf, c, out, mid,
            np.zeros(L * claim_count(steps, B, n_blocks), np.int64),
            np.zeros((L, done_size(2)), np.int64), steps]
    return args, expected


def _check(args, expected, dtype):
    ref_out, ref_h, ref_c = expected
    h_buf, c, out, steps = args[H_BUF], args[C], args[OUT], args[STEPS]
    assert_close(out[:steps], ref_out[:steps], dtype, "out")
    assert_close(h_buf[:, steps % 2], ref_h, dtype, "h_n")
    assert_close(c, ref_c, dtype, "c_n")


@pytest.mark.parametrize("n_blocks", [1, 2, 3, 4])
@pytest.mark.parametrize("B", [1, 5, 11])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_a_lone_caller_computes_every_block(n_blocks, B, L):
    # H=10 over 3 blocks: units 4+4+2, the last block zero-padded; over 4: 3+3+3+1.
    # 90 steps x 5 rows: several projection row chunks and a partial one; 11 rows:
    # an 8-row tile of the panel GEMM and leftover rows.
    rng = np.random.default_rng(n_blocks + 10 * B + 100 * L)
    lengths = rng.integers(1, 91, B) if B > 1 else np.array([87])
    args, expected = _job(rng, L, 90, B, 6, 10, n_blocks, np.float64, lengths.astype(np.int64))
    stack_job(*args, 0, 2, False)
    _check(args, expected, np.float64)
    for b, n in enumerate(lengths):
        assert np.all(args[OUT][n:args[STEPS], b] == 0)


def test_a_block_of_w_ih_past_l2_is_projected_in_larger_tasks():
    # I = 256, H = 512 in float64 over two blocks: each block's W_ih is 2 MB, so
    # the projection goes by 256-row tasks; 9 steps x 32 rows make one of them
    # and a short one.
    from numba_lstm.cpu.cooperative import BLOCK_W_PAST_L2_BYTES, PROJECTION_ROWS_PAST_L2

    rng = np.random.default_rng(23)
    T, B = 9, 32
    args, expected = _job(rng, 1, T, B, 256, 512, 2, np.float64, np.full(B, T, np.int64))
    assert args[1][0].nbytes >= BLOCK_W_PAST_L2_BYTES
    assert PROJECTION_ROWS_PAST_L2 < T * B < 2 * PROJECTION_ROWS_PAST_L2
    stack_job(*args, 0, 2, False)
    _check(args, expected, np.float64)


def test_a_late_thread_changes_nothing():
    rng = np.random.default_rng(7)
    args, expected = _job(rng, 2, 12, 2, 4, 8, 2, np.float64, np.array([12, 9]))
    stack_job(*args, 0, 2, False)
    data = [a for a in args[:CLAIMS] if isinstance(a, np.ndarray)]
    snapshot = [a.copy() for a in data]
    stack_job(*args, 1, 2, False)  # a helper arriving after the work is done
    assert all(np.array_equal(a, b) for a, b in zip(data, snapshot, strict=True))
    _check(args, expected, np.float64)


@pytest.mark.parametrize("T", [1, 6])
@pytest.mark.parametrize("L", [2, 3])
def test_a_caller_arriving_after_a_helper_did_everything_changes_nothing(T, L):
    # Every row runs every step, so the steps' h live in out; with three layers
    # the last one writes the same out as the first. The caller (tid 0) once
    # copied the final h from out after its layer, reading the top layer's h
    # when it ran late (seen in CI for a three-layer one-step stream).
    rng = np.random.default_rng(T + 10 * L)
    args, expected = _job(rng, L, T, 2, 4, 8, 3, np.float64, np.full(2, T, np.int64))
    assert h_in_out(args[8], T)
    stack_job(*args, 1, 2, False)  # the helper computes every task
    data = [a for a in args[:CLAIMS] if isinstance(a, np.ndarray)]
    snapshot = [a.copy() for a in data]
    stack_job(*args, 0, 2, False)
    assert all(np.array_equal(a, b) for a, b in zip(data, snapshot, strict=True))
    _check(args, expected, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_sharing_one_job_match_the_reference(dtype):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        args, expected = _job(rng, 2, 150, 3, 6, 16, 4, dtype, np.array([150, 7, 99]))
        helper = threading.Thread(target=stack_job, args=(*args, 1, 2, False))
        helper.start()
        stack_job(*args, 0, 2, False)
        helper.join()
        _check(args, expected, dtype)


lstm_row = row_function(LSTM)


@njit
def _general_block_step(gx_row, w_q, h_prev, c, h):
    """The batch-1 block step through the general path: panel GEMM, then the LSTM row."""
    acc = gx_row.copy().reshape((1, gx_row.shape[0]))
    gemm_panels_acc(acc, h_prev.reshape((1, h_prev.shape[0])), w_q)
    lstm_row(acc[0], acc[0], h, c, h, acc)  # the LSTM row reads no parameters


@njit
def _row_block_step(gx_row, w_q, h_prev, c, h, out_row, reverse=False):
    return row_block_step(gx_row, w_q, None, h_prev, c, h, out_row, reverse)


@pytest.mark.parametrize("H,n_blocks", [(64, 2), (128, 2), (128, 4), (40, 1), (256, 2)])
def test_the_batch_1_block_step_matches_the_general_path_bit_for_bit(H, n_blocks):
    # Units per block: 32, 64, 32, 40 (not whole panels: the general path's) and
    # 128 (four groups of units, so that reverse changes the order).
    rng = np.random.default_rng(H + n_blocks)
    stack, _ = _stack(rng, 1, 8, H, np.float32)
    w_hh = stack.team_blocks(n_blocks)[3][0]  # (nb, P, H, NR)
    U = H // n_blocks
    gx_row = (rng.standard_normal(4 * U) * 3).astype(np.float32)
    gx_row[:2] = [np.nan, np.inf]
    h_prev = rng.standard_normal(H).astype(np.float32)
    c0 = rng.standard_normal(U).astype(np.float32)
    expected_c, expected_h = c0.copy(), np.empty(U, np.float32)
    _general_block_step(gx_row, w_hh[n_blocks - 1], h_prev, expected_c, expected_h)
    for reverse in (False, True):  # the units' groups in either order: the same numbers
        c, h, out_row = c0.copy(), np.zeros(U, np.float32), np.zeros(U, np.float32)
        fused = _row_block_step(gx_row, w_hh[n_blocks - 1], h_prev, c, h, out_row, reverse)
        assert fused == (U % w_hh.shape[3] == 0)
        if fused:
            np.testing.assert_array_equal(c, expected_c)
            np.testing.assert_array_equal(h, expected_h)
            np.testing.assert_array_equal(out_row, expected_h)
        else:  # declined: nothing touched
            np.testing.assert_array_equal(c, c0)
            assert not h.any() and not out_row.any()


def test_the_batch_1_block_step_declines_float64():
    rng = np.random.default_rng(3)
    stack, _ = _stack(rng, 1, 8, 64, np.float64)
    w_hh = stack.team_blocks(2)[3][0]
    c = np.ones(32)
    assert not _row_block_step(np.ones(128), w_hh[0], np.ones(64), c, np.zeros(32),
                               np.zeros(32))
    assert (c == 1).all()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("H,n_blocks", [(64, 2), (128, 4)])
def test_batch_1_jobs_with_whole_panel_blocks_match_the_reference(H, n_blocks, threads):
    # Weights at torch's initial scale: at 0.5 a 128-unit float32 layer is
    # chaotic enough to drift 7e-3 from float64 over 50 steps on any path.
    rng = np.random.default_rng(H + threads)
    args, expected = _job(rng, 2, 50, 1, 6, H, n_blocks, np.float32, np.array([50]),
                          scale=H ** -0.5)
    helpers = [threading.Thread(target=stack_job, args=(*args, 1, 2, False))
               for _ in range(threads - 1)]
    for helper in helpers:
        helper.start()
    stack_job(*args, 0, 2, False)
    for helper in helpers:
        helper.join()
    _check(args, expected, np.float32)


def _compile_here(kernel, *args):
    """Compile a stand-in helper for args on the test's thread: a typing error
    inside its thread would leave the caller's stack_job waiting for a block
    nobody counts, a hang instead of a failure."""
    kernel.compile(tuple(numba.typeof(a) for a in args))


@njit(nogil=True)
def _late_block(args, step, block):
    """A stand-in for a descheduled helper (thread 1 of 2): compute one claimed
    block, then count it."""
    (x, w_ih0, w_ih_rest, bias, w_hh, bias_h, hh_quantized, ih_quantized, lengths, gx, h_buf, c,
     out, mid, claims, done, steps) = args
    no_bytes = np.empty((c.shape[1], 0), np.uint8)
    _block_step(gx, w_hh[0], bias_h[0], None, lengths, h_buf[0], c[0], out, step, steps, block,
                no_bytes, no_bytes, np.empty(c.shape[1], np.float32),
                np.empty((0, gx.shape[2]), gx.dtype), h_in_out(lengths, steps))
    count_block(done[0], 1)


@pytest.mark.parametrize("lengths", [[60, 45], [60, 60]])
def test_a_block_held_by_a_stalled_thread_is_waited_for(lengths):
    # Step 1's block 1 is claimed by a thread that then stalls for 30 ms; the
    # caller must wait for it (then, past STALL_SPINS, take the next steps
    # alone) and still give the reference's numbers; with h in h_buf, and
    # with h in out (every row running every step).
    rng = np.random.default_rng(11)
    args, expected = _job(rng, 1, 60, 2, 6, 12, 2, np.float64, np.array(lengths))
    start = recurrence_claims_start(60, 2, 2)
    args[CLAIMS][start + step_claim(1, 1, 60)] = 1  # block 1 of step 1: the stalled thread's

    def stalled():
        time.sleep(0.03)
        _late_block(tuple(args), 1, 1)

    _compile_here(_late_block, tuple(args), 1, 1)
    thread = threading.Thread(target=stalled)
    thread.start()
    stack_job(*args, 0, 2, False)
    thread.join()
    _check(args, expected, np.float64)


@njit(nogil=True)
def _block_after(args, step, block):
    """A stand-in helper's next block: wait for the step before it, compute it."""
    done = args[DONE]
    while steps_done(done[0], 2) < step * 2:  # 2 blocks a step
        pass
    _late_block(args, step, block)


def test_blocks_a_helper_claimed_first_are_not_recomputed_after_a_stall():
    # As above, and the stalled thread has also claimed block 0 of step 3, which
    # falls within the steps the caller claims after the stall. The caller must
    # leave that block to it: computed twice, c is updated twice and `done`
    # over-counted (a bug that gave wrong numbers about once in 50 calls under load).
    rng = np.random.default_rng(12)
    args, expected = _job(rng, 1, 60, 2, 6, 12, 2, np.float64, np.array([60, 45]))
    start = recurrence_claims_start(60, 2, 2)
    args[CLAIMS][start + step_claim(1, 1, 60)] = 1  # step 1, block 1
    args[CLAIMS][start + step_claim(0, 3, 60)] = 1  # step 3, block 0

    def stalled():
        time.sleep(0.03)
        _late_block(tuple(args), 1, 1)
        _block_after(tuple(args), 3, 0)

    _compile_here(_late_block, tuple(args), 1, 1)
    _compile_here(_block_after, tuple(args), 3, 0)
    thread = threading.Thread(target=stalled)
    thread.start()
    stack_job(*args, 0, 2, False)
    thread.join()
    assert steps_done(args[DONE][0], 2) == 60 * 2  # every block counted once
    _check(args, expected, np.float64)


@pytest.mark.parametrize("per_thread", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 2, 7, 15])
@pytest.mark.parametrize("L,T", [(1, 70), (3, 40), (2, 2)])
def test_stack_through_the_team_matches_the_reference(monkeypatch, per_thread, dtype, B, L, T):
    # H=45 over 2 blocks (23+22 units) or 4 (12+12+12+9); T=70: two projection
    # row chunks at B=1.
    monkeypatch.setattr(cpu, "BLOCKS_PER_THREAD", per_thread)
    rng = np.random.default_rng(B + 10 * L)
    stack, params = _stack(rng, L, 37, 45, dtype, bias=B % 2 == 1)
    x = rng.standard_normal((T, B, 37)).astype(dtype)
    h0, c0 = (rng.standard_normal((L, B, 45)).astype(dtype) for _ in range(2))
    lengths = rng.integers(1, T + 1, B).astype(np.int64) if B > 1 else None
    if B == 2:  # no initial state: the team allocates zeros itself
        h0, c0 = np.zeros_like(h0), np.zeros_like(c0)
        out, h_n, c_n = cpu.forward(stack, x, None, None, lengths, "team")
    else:
        out, h_n, c_n = cpu.forward(stack, x, h0, c0, lengths, "team")
    assert list(stack.__dict__["_team_blocks"]) == [cpu.TEAM.size * per_thread]
    ref_out, ref_h, ref_c = _reference(params, x, h0, c0, lengths)
    assert_close(out, ref_out, dtype, "out")
    assert_close(h_n, ref_h, dtype, "h_n")
    assert_close(c_n, ref_c, dtype, "c_n")


@pytest.mark.parametrize("per_thread", [1, 2])
@pytest.mark.parametrize("B", [1, 2, 7, 17])
@pytest.mark.parametrize("L,T", [(1, 70), (3, 20)])
def test_a_gru_stack_through_the_team_matches_the_reference(monkeypatch, per_thread, B, L, T):
    # A GRU's n gate keeps its x and h parts apart: each block sums h's products
    # into a row of its own, b_hn added, and the cell reads the x part from gx.
    # H = 45 over 2 or 4 blocks (masked vector tails); batch 17: an 8-row tile.
    # Weights as torch initialises them.
    monkeypatch.setattr(cpu, "BLOCKS_PER_THREAD", per_thread)
    rng = np.random.default_rng(B + 10 * L)
    gru = nl.GRU(37, 45, L)
    x = rng.standard_normal((T, B, 37)).astype(np.float32)
    h0 = rng.standard_normal((L, B, 45)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B).astype(np.int64) if B > 1 else None
    if B == 2:  # no initial state: zeros
        h0 = np.zeros_like(h0)
        out, h_n, c_n = cpu.forward(gru._layers, x, None, None, lengths, "team")
    else:
        out, h_n, c_n = cpu.forward(gru._layers, x, h0, None, lengths, "team")
    assert c_n.shape == (L, B, 0)
    as64 = {k: np.asarray(v, np.float64) for k, v in gru.state_dict().items()}
    assert not np.all(as64["bias_hh_l0"][-45:] == 0)  # b_hn is in play
    ref_out, ref_h = reference.recurrent(GRU, x.astype(np.float64), as64, L, False,
                                         h0.astype(np.float64), lengths)
    assert_close(out, ref_out, np.float32, "out")
    assert_close(h_n, ref_h, np.float32, "h_n")


def test_the_team_takes_float32_gru_stacks_only():
    # Other cells' jobs are compiled for float32, on float weights or on a dot
    # layout (without one, the team's batch-1 kernels on stored weights are the
    # LSTM's); none for float64.
    def team_can_run(module):
        return cpu.BY_NAME["team"].can_run(module._layers, 9, 2)

    assert team_can_run(nl.GRU(8, 64)) == (cpu.TEAM.size > 1)
    assert not team_can_run(nl.GRU(8, 64, dtype="float64"))
    first = cpu.packing.first_dot_hidden("bfloat16")  # below it, bfloat16 keeps float values
    for weights, H in (("int8", 64), ("bfloat16", first - DOT_NR), ("bfloat16", first)):
        q = nl.GRU(8, H).quantize(weights)
        has_dot = q._layers[0].dot_layout() is not None
        assert has_dot == (weights == "int8" and cpu.packing.DOT_BY_DEFAULT
                           or H == first and cpu.packing.BF16_DOT_BY_DEFAULT)
        assert team_can_run(q) == (cpu.TEAM.size > 1 and has_dot)
    assert not team_can_run(nl.GRU(8, 64, bidirectional=True))
    assert not team_can_run(nl.RNN(8, 64))


def test_team_path_is_taken_for_large_enough_layers(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu, "stack_team", lambda *a: calls.append(a) or
                        cpu.cooperative.stack_team(*a))
    rng = np.random.default_rng(0)
    lstm = nl.LSTM(8, 64, num_layers=2)
    x = rng.standard_normal((5, 1, 8)).astype(np.float32)
    lstm(x)
    assert len(calls) == 1  # 1 x 64 x 256 multiply-adds per step, both layers in one job
    lstm(x[:, :, :], lengths=np.array([3]))
    assert len(calls) == 2
    stream = lstm.stream()
    stream(x[:2])
    assert len(calls) == 3  # a chunk of two steps
    stream(x[:1])
    nl.LSTM(8, 16)(x)
    nl.LSTM(8, 64, bidirectional=True)(x)
    nl.LSTM(8, 64, proj_size=4)(x)
    nl.LSTM(8, 64)(np.ones((5, 16, 8), np.float32))
    assert len(calls) == 3  # one step, too small, two directions, a projection, batch 16


@pytest.mark.skipif(cpu.TEAM.size < 2, reason="one thread: no helpers")
def test_helpers_start_after_the_first_team_job():
    def helpers():
        return [t for t in threading.enumerate() if t.name.startswith("numba_lstm-team-")]

    lstm = nl.LSTM(8, 64)
    x = np.ones((4, 1, 8), np.float32)
    first = lstm(x)[0]
    assert len(helpers()) == cpu.TEAM.size - 1
    np.testing.assert_array_equal(lstm(x)[0], first)  # alone or shared: the same numbers


_COUNT_KIND = 99
_JOINED, _WAIT_SPINS = DESC + 8, DESC + 16


@njit(nogil=True)
def _join_count(ctrl, tid):
    """A job that only counts the helpers joining it; its caller waits up to
    ctrl[_WAIT_SPINS] loads for the first."""
    if tid > 0:
        fetch_add(ctrl, _JOINED, 1)
        return
    for _ in range(ctrl[_WAIT_SPINS]):
        if load_acquire(ctrl, _JOINED) > 0:
            return


@njit(nogil=True)
def _serve_count(ctrl, spin_limit, tid):
    return serve(ctrl, spin_limit, tid, _COUNT_KIND, _join_count)


def _run_count_job(ctrl, wait_spins):
    ctrl[KIND], ctrl[_JOINED], ctrl[_WAIT_SPINS] = _COUNT_KIND, 0, wait_spins
    _serve_count(ctrl, 0, 0)
    return ctrl[_JOINED]


@pytest.mark.skipif(cpu.TEAM.size < 2, reason="one thread: no helpers")
def test_a_helper_whose_spin_ends_after_acquire_still_joins_the_job():
    # acquire() wakes only helpers that are asleep. One whose spin runs out
    # between acquire() and the job's opening (a caller's Python before its
    # job, here a sleep) must not go to sleep then: nothing would wake it for
    # that job, which would run on the caller alone (two-direction calls did,
    # one direction in three).
    team = Team({_COUNT_KIND: _serve_count}, spin_us=MIN_SPIN_US)
    _run_count_job(np.zeros(CTRL_SIZE, np.int64), 0)  # compiled here, not in a helper
    team.release(team.acquire(), _COUNT_KIND)  # the first job starts the helpers
    assert team.wait_ready()
    for _ in range(3):
        time.sleep(0.02)  # every helper's spin has run out: asleep
        ctrl = team.acquire()
        try:
            time.sleep(0.02)  # and has run out again, after the wake
            assert _run_count_job(ctrl, 1 << 26) > 0  # ~1-5 s of loads at most
        finally:
            team.release(ctrl, _COUNT_KIND)


def _outputs_in_threads(calls):
    """Each module call's output, every call on a Python thread of its own, all at once."""
    results = [None] * len(calls)

    def run(i):
        results[i] = calls[i]()[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_calls_share_or_skip_the_team():
    # One call at a time holds the team; the others run alone on a private ctrl.
    rng = np.random.default_rng(1)
    lstm = nl.LSTM(16, 96, num_layers=2, dtype="float64")
    inputs = [rng.standard_normal((40, 2, 16)) for _ in range(6)]
    serial = [lstm(x)[0] for x in inputs]
    calls = [lambda x=x: lstm(x) for x in inputs]
    for got, want in zip(_outputs_in_threads(calls), serial, strict=True):
        assert_close(got, want, np.float64, "threaded")


def test_jobs_of_both_dtypes_in_turn():
    # Each dtype has its own helper loop; a helper meeting the other dtype's job
    # switches loops. The numbers must not depend on which loop ran.
    rng = np.random.default_rng(3)
    modules = [nl.LSTM(16, 64, dtype=dtype) for dtype in ("float32", "float64", "float32")]
    x = rng.standard_normal((20, 1, 16))
    first = [m(x)[0] for m in modules]
    for _ in range(3):
        for m, want in zip(modules, first, strict=True):
            np.testing.assert_array_equal(m(x)[0], want)


def test_layer_jobs_and_stack_jobs_in_turn_and_at_once():
    # Layer jobs (cpu.team_layer: a GRU, a bidirectional LSTM, each projecting
    # its input in the job) and a stack job share the helpers, which switch
    # loops by job kind. From several Python threads at once, one call holds
    # the team and the others run alone; a task's numbers are the same either way.
    rng = np.random.default_rng(4)
    modules = [nl.GRU(12, 40), nl.LSTM(12, 40, bidirectional=True), nl.LSTM(12, 64)]
    x = rng.standard_normal((15, 3, 12)).astype(np.float32)
    first = [m(x)[0] for m in modules]
    for _ in range(2):
        for m, want in zip(modules, first, strict=True):
            np.testing.assert_array_equal(m(x)[0], want)
    got = _outputs_in_threads([lambda m=m: m(x) for m in modules * 3])
    for out, want in zip(got, first * 3, strict=True):
        np.testing.assert_array_equal(out, want)


def test_one_numba_thread_runs_a_layer_job_on_the_caller_alone():
    # numba.set_num_threads(1) (numba_lstm.dask sets it per worker): the
    # layer's tasks run on the calling thread, through the same compiled job.
    rng = np.random.default_rng(6)
    lstm = nl.LSTM(12, 40, bidirectional=True)
    x = rng.standard_normal((15, 3, 12)).astype(np.float32)
    want = lstm(x)[0]
    numba.set_num_threads(1)
    try:
        got = lstm(x)[0]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(cpu.TEAM.size < 2, reason="a team of one thread")
def test_one_numba_thread_keeps_stack_jobs_and_streams_off_the_team(monkeypatch):
    # A stack job is cut into the team's blocks and takes every thread of it:
    # under numba.set_num_threads(1), two single-thread workers on two cores
    # would share each core among four threads. The layer strategies run
    # instead, on the calling thread (their float32 sums in another order).
    rng = np.random.default_rng(7)
    lstm = nl.LSTM(12, 64)
    x = rng.standard_normal((15, 3, 12)).astype(np.float32)
    monkeypatch.setattr(cpu, "l2_bytes", lambda: 1024)  # its weights "past L2": streams team up
    assert cpu._pick("stack", None, lstm._layers, 15, 3).name == "team"
    assert cpu.team_streams(lstm._layers)
    want = lstm(x)[0]
    numba.set_num_threads(1)
    try:
        assert not cpu.team_allowed()
        assert cpu._pick("stack", None, lstm._layers, 15, 3).name == "layers"
        assert not cpu.team_streams(lstm._layers)
        got = lstm(x)[0]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert cpu.team_allowed()
    assert_close(got, want, np.float32, "the layers on one thread against the team")


def _child_forward(lstm, x, queue):
    queue.put(lstm(x)[0])


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_team_restarts_after_fork():
    rng = np.random.default_rng(2)
    lstm = nl.LSTM(16, 96)
    x = rng.standard_normal((30, 1, 16)).astype(np.float32)
    expected = lstm(x)[0]  # the parent's helpers are running now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_forward, args=(lstm, x, queue))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, expected)


@njit(nogil=True)
def _burn(stop):
    """A CPU hog without the GIL: keeps the OS descheduling the team's threads."""
    n = 0
    while load_acquire(stop, 0) == 0:
        n += 1
    return n


@pytest.mark.skipif(cpu.TEAM.size < 2, reason="one thread: no helpers")
def test_repeated_calls_under_a_cpu_hog_give_identical_numbers():
    # With a third busy thread on the team's cores, helpers get descheduled
    # mid-block and the caller's stall fallback runs. Whoever computes a block,
    # every call must give the same numbers. Before the claim fix, this shape
    # gave wrong results about once in 50 calls under a hog.
    rng = np.random.default_rng(5)
    lstm = nl.LSTM(37, 45, dtype="float64")
    x = rng.standard_normal((70, 15, 37))
    want = lstm(x)[0]
    cpu.TEAM.wait_ready()
    stop = np.zeros(1, np.int64)
    hog = threading.Thread(target=_burn, args=(stop,))
    hog.start()
    try:
        wrong = sum(not np.array_equal(lstm(x)[0], want) for _ in range(400))
    finally:
        stop[0] = 1
        hog.join()
    assert wrong == 0
