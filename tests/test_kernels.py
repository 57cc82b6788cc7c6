"""CPU kernels against the NumPy reference: no torch needed."""

import functools

import numpy as np
import pytest
from conftest import TOL, assert_close
from hypothesis import given
from hypothesis import strategies as st
from numba import from_dtype, njit

import numba_lstm.cpu as cpu
from numba_lstm import reference
from numba_lstm.cells import CELLS, LSTM, bind
from numba_lstm.cpu import (
    StackStepper,
    TeamStepper,
    layer_forward,
    lstm_stream_step,
    pack_layer,
    pack_stack,
)
from numba_lstm.cpu.activations import sigmoid, sigmoid32_vec, tanh, tanh32_vec
from numba_lstm.cpu.cooperative import SERVE
from numba_lstm.cpu.layer import _SCALAR, layer_kernels, row_function
from numba_lstm.cpu.simd import VECTOR_BYTES, vload1, vstore1
from numba_lstm.cpu.streaming import lstm_stack_step
from numba_lstm.cpu.team_layer import layer_serve


@njit
def _apply(fn_id, x, out):
    for i in range(x.size):
        out[i] = tanh(x[i]) if fn_id == 0 else sigmoid(x[i])


@pytest.mark.parametrize("dtype,bound", [(np.float32, 4e-7), (np.float64, 1e-15)])
def test_activations_error_bound(dtype, bound):
    x = np.concatenate([np.linspace(-20, 20, 400_001), [0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30]])
    x = x.astype(dtype)
    out = np.empty_like(x)
    for fn_id, exact in ((0, np.tanh), (1, reference.sigmoid)):
        _apply(fn_id, x, out)
        err = np.abs(out.astype(np.float64) - exact(x.astype(np.float64)))
        assert err.max() <= bound, (fn_id, err.max(), x[err.argmax()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_propagate_nan_and_saturate_at_inf(dtype):
    x = np.array([np.nan, np.inf, -np.inf], dtype)
    out = np.empty_like(x)
    _apply(0, x, out)
    np.testing.assert_array_equal(out, [np.nan, 1, -1])
    _apply(1, x, out)
    np.testing.assert_array_equal(out, [np.nan, 1, 0])


@njit
def _apply_vec(fn_id, x, out):
    lanes = VECTOR_BYTES // 4
    for i in range(0, x.size, lanes):
        v = vload1(x, i)
        vstore1(out, i, tanh32_vec(v) if fn_id == 0 else sigmoid32_vec(v))


def test_vector_activations_match_the_scalar_ones():
    """The float32 cell update's full-width vector tanh/sigmoid (cpu.simd): same
    error bound, same exact saturation, NaN kept."""
    x = np.concatenate([np.linspace(-20, 20, 400_000),
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 9.02, -9.02, 1e30, -1e30]])
    x = np.resize(x, -(-x.size // 16) * 16).astype(np.float32)
    for fn_id, exact in ((0, np.tanh), (1, reference.sigmoid)):
        vec, scalar = np.empty_like(x), np.empty_like(x)
        _apply_vec(fn_id, x, vec)
        _apply(fn_id, x, scalar)
        finite = np.isfinite(x)
        err = np.abs(vec[finite].astype(np.float64) - exact(x[finite].astype(np.float64)))
        assert err.max() <= 4e-7
        np.testing.assert_array_equal(vec[~finite], scalar[~finite])  # NaN, +-1, 0
        saturated = np.abs(x) > (9.01 if fn_id == 0 else 18.02)
        np.testing.assert_array_equal(vec[saturated & finite], scalar[saturated & finite])


def _scalar_row(cell):
    """The cell one unit at a time through its scalar float32 form (the float64
    path's code): what the vector row must reproduce bit for bit."""
    return _scalar_row_of(cell.name)


@functools.cache  # compiled once per cell, not once per case
def _scalar_row_of(name):
    cell = CELLS[name]
    unit = bind(cell, _SCALAR, njit(inline="always"), "__test_scalar")

    @njit
    def row(z, zx, h, c, h_new):
        H = z.shape[0] // cell_gates
        for u in range(h_new.shape[0]):
            unit(z, zx, h, c, h_new, u, H, 1)

    cell_gates = cell.gates
    return row


UNIT_CELLS = [name for name, cell in CELLS.items() if cell.unit is not None]


@pytest.mark.parametrize("cell", [CELLS[name] for name in UNIT_CELLS], ids=UNIT_CELLS)
@pytest.mark.parametrize("n", [1, 5, 15, 16, 40, 45, 64])
def test_float32_rows_match_the_scalar_cell(cell, n):
    # Whole vectors, and the masked last vector for the units past them: the
    # same bits as the scalar cell (the same FMAs in the same order), and
    # nothing written past unit n (a neighbouring block's units in the team).
    # The gates' stride (U = n + 3) exceeds the units computed, as in the team.
    rng = np.random.default_rng(n)
    U = n + 3
    z = (rng.standard_normal(cell.gates * U) * 4).astype(np.float32)
    z[:3] = [np.nan, np.inf, -np.inf]
    zx = (rng.standard_normal(cell.gates * U) * 4).astype(np.float32)
    h0 = rng.standard_normal(n).astype(np.float32)
    c0 = (rng.standard_normal(n) * 2).astype(np.float32)
    out = []
    for run in (_vector_row_for(cell), _scalar_row(cell)):
        c = np.full(n + 20, 7.0, np.float32)
        h = np.full(n + 20, 7.0, np.float32)
        c[:n], h[:n] = c0, h0
        run(z, zx, h[:n], c[:n], h[:n])
        assert np.all(c[n:] == 7.0) and np.all(h[n:] == 7.0)
        out.append((c[:n], h[:n]))
    for vector, scalar in zip(out[0], out[1], strict=True):
        np.testing.assert_array_equal(vector, scalar)


def _vector_row_for(cell):
    return _vector_row_of(cell.name)


@functools.cache
def _vector_row_of(name):
    row = row_function(CELLS[name])

    @njit
    def run(z, zx, h, c, h_new):
        row(z, zx, h, c, h_new, z[:0].reshape((0, 0)))  # unit cells read no parameters

    return run


def random_layer(rng, I, H, proj, D, bias, scale=0.5):
    H_out = proj or H
    return [(rng.standard_normal((4 * H, I)) * scale, rng.standard_normal((4 * H, H_out)) * scale,
             rng.standard_normal(4 * H) if bias else None,
             rng.standard_normal(4 * H) if bias else None,
             rng.standard_normal((H_out, H)) * 0.5 if proj else None) for _ in range(D)]


def check_layer(rng, T, B, I, H, proj, D, bias, dtype, with_lengths, strategy=None):
    """layer_forward vs reference.lstm_direction (in float64) for one layer."""
    directions = random_layer(rng, I, H, proj, D, bias)
    layer = pack_layer(directions, dtype)
    H_out = proj or H
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((D, B, H_out)).astype(dtype)
    c0 = rng.standard_normal((D, B, H)).astype(dtype)
    lengths = rng.integers(1, T + 1, B) if with_lengths else np.full(B, T)
    h_n, c_n = np.empty_like(h0), np.empty_like(c0)
    out = layer_forward(x, layer, h0, c0, lengths.astype(np.int64), h_n, c_n, strategy)
    as64 = [tuple(None if a is None else np.asarray(a, dtype).astype(np.float64) for a in dw)
            for dw in directions]
    for d in range(D):
        ref_out, ref_h, ref_c = reference.lstm_direction(
            x.astype(np.float64), h0[d].astype(np.float64), c0[d].astype(np.float64), as64[d],
            lengths=lengths if with_lengths else None, reverse=d == 1)
        assert_close(out[..., d * H_out:(d + 1) * H_out], ref_out, dtype, f"out dir {d}")
        assert_close(h_n[d], ref_h, dtype, f"h_n dir {d}")
        assert_close(c_n[d], ref_c, dtype, f"c_n dir {d}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("proj", [0, 3])
@pytest.mark.parametrize("B", [1, 2, 5, 9, 19])
def test_layer_matches_reference(dtype, D, proj, B):
    # Each CPU strategy: B=1 serial, B=2..9 threaded (B=9: a 4-row block plus a
    # remainder row per thread), B=19 the panel-GEMM kernel (the fused one if proj).
    # K = 9 exercises both the unrolled part and the remainder of the matmuls.
    check_layer(np.random.default_rng(B + 10 * D), 6, B, 7, 9, proj, D, True, dtype, B > 1)


@given(T=st.integers(1, 12), B=st.integers(1, 20), I=st.integers(1, 11), H=st.integers(1, 11),
       proj=st.integers(0, 10), D=st.integers(1, 2), bias=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), with_lengths=st.booleans(),
       seed=st.integers(0, 2**31))
def test_layer_property(T, B, I, H, proj, D, bias, dtype, with_lengths, seed):
    proj = proj if proj < H else 0
    check_layer(np.random.default_rng(seed), T, B, I, H, proj, D, bias, dtype, with_lengths)


def test_padded_positions_are_zero_and_state_frozen():
    rng = np.random.default_rng(3)
    layer = pack_layer(random_layer(rng, 3, 4, 0, 2, True), np.float64)
    x = rng.standard_normal((5, 2, 3))
    lengths = np.array([5, 2], np.int64)
    h_n, c_n = np.empty((2, 2, 4)), np.empty((2, 2, 4))
    out = layer_forward(x, layer, np.zeros((2, 2, 4)), np.zeros((2, 2, 4)), lengths, h_n, c_n)
    assert np.all(out[2:, 1] == 0)
    np.testing.assert_array_equal(h_n[0, 1], out[1, 1, :4])  # forward: last valid step
    np.testing.assert_array_equal(h_n[1, 1], out[0, 1, 4:])  # reverse: ends at t = 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L", [1, 3])
def test_stack_step_matches_reference(dtype, L):
    # The one-call streaming kernel, through both of its callers: lstm_stream_step
    # (a module's T = 1, B = 1 call) and StackStepper (Stream's fast path), 2-D and
    # 3-D. I = 7 and H = 9 exercise the matmuls' unrolled part and remainder.
    rng = np.random.default_rng(L)
    I, H, T = 7, 9, 4
    layers = [random_layer(rng, I if k == 0 else H, H, 0, 1, True) for k in range(L)]
    params = {f"{name}_l{k}": w for k, (dw,) in enumerate(layers)
              for name, w in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), dw[:4],
                                 strict=True)}
    stack = pack_stack(layers, dtype)
    x = rng.standard_normal((T, 1, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((L, 1, H)).astype(dtype) for _ in range(2))
    ref_out, (ref_h, ref_c) = reference.lstm(x.astype(np.float64), params, L,
                                             hx=(h0.astype(np.float64), c0.astype(np.float64)))
    out, h_n, c_n = lstm_stream_step(stack, x[:1], h0, c0)
    assert_close(out, ref_out[:1], dtype, "lstm_stream_step out")
    # TeamStepper with 2 and 3 unit blocks (H = 9: a partly filled last block).
    steppers = {"StackStepper": lambda *state: StackStepper(stack, *state),
                **{f"TeamStepper, {n} blocks": lambda *state, n=n: TeamStepper(
                    stack, *state, cpu.TEAM, n) for n in (2, 3)}}
    for name, make in steppers.items():
        for batched in (True, False):
            shape = (L, 1, H) if batched else (L, H)
            stepper = make(h0.reshape(shape), c0.reshape(shape), batched)
            h, c = stepper.state  # before any step: the state it was made with
            np.testing.assert_array_equal(h.reshape(L, 1, H), h0)
            np.testing.assert_array_equal(c.reshape(L, 1, H), c0)
            outs = [stepper(x[t:t + 1] if batched else x[t]) for t in range(T)]
            assert all(o.shape == ((1, 1, H) if batched else (1, H)) for o in outs)
            what = f"{name}, batched={batched}"
            assert_close(np.stack(outs).reshape(T, 1, H), ref_out, dtype, f"out, {what}")
            h, c = stepper.state
            assert h.shape == c.shape == shape
            assert_close(h.reshape(L, 1, H), ref_h, dtype, f"h_n, {what}")
            assert_close(c.reshape(L, 1, H), ref_c, dtype, f"c_n, {what}")
    # One compiled kernel per dtype for every caller: a second one compiled
    # mid-stream (an unbatched stream after its first, full-path step).
    assert sum(sig[0].dtype == from_dtype(dtype) for sig in lstm_stack_step.signatures) == 1


@pytest.mark.parametrize("kind", ["StackStepper", "TeamStepper"])
def test_stack_stepper_declines_what_it_was_not_made_for(kind):
    # Anything but a C-contiguous array of the exact shape and dtype returns None
    # and leaves the state alone, so that the caller's checked path takes over.
    rng = np.random.default_rng(0)
    stack = pack_stack([random_layer(rng, 3, 4, 0, 1, True)], np.float32)
    zeros = np.zeros((1, 1, 4), np.float32)
    if kind == "StackStepper":
        stepper = StackStepper(stack, zeros, zeros, batched=True)
    else:
        stepper = TeamStepper(stack, zeros, zeros, True, cpu.TEAM, 2)
    good = np.ones((1, 1, 3), np.float32)
    for bad in (good.astype(np.float64), good[0], np.ones((2, 1, 3), np.float32),
                np.ones((1, 1, 6), np.float32)[..., ::2], good.tolist(), None):
        assert stepper(bad) is None
    np.testing.assert_array_equal(stepper.state[0], zeros)
    state = stepper.state
    assert stepper(good) is not None and stepper(good) is not None
    np.testing.assert_array_equal(state[0], zeros)  # copies, not the double buffer


def test_tolerance_table_is_spec():
    assert TOL == {np.float32: 2e-5, np.float64: 1e-10}


def test_every_compiled_loop_has_its_own_cache_entry():
    """A shared on-disk cache entry made the serial kernel load the threaded code;
    the cells' loops share one text, so each needs a name of its own too, and
    each team job kind a number of its own (a cached loop holds it)."""
    kernels = [layer_kernels(cell) for cell in CELLS.values()]
    serves = {layer_serve(cell, dtype, hh_dot, ih_dot) for cell in CELLS.values()
              for dtype in (np.float32, np.float64) for hh_dot in (False, True)
              for ih_dot in (False, True)}
    loops = [k for ks in kernels for k in (ks.task, ks.serial)] + [s for _, s in serves]
    names = {k._cache._cache_file._index_name for k in loops}
    assert len(names) == len(loops)
    kinds = [kind for kind, _ in serves]
    assert len(set(kinds)) == len(kinds) and min(kinds) > max(SERVE)  # the stack jobs' kinds
    for ks in kernels:
        assert ks.serial.py_func.__code__ is not ks.task.py_func.__code__  # the loop, the task
        assert ks.task.py_func.__globals__["WITH_PANELS"]
        assert not ks.serial.py_func.__globals__["layer_task"].py_func.__globals__["WITH_PANELS"]


def _random_stack(rng, cell, I, H, L, D, bias, proj):
    """Torch-layout weights for pack_stack, and the same as torch-named params."""
    G, H_out = cell.gates * H, proj or H
    # relu is unbounded: weights past torch's init (±1/sqrt(H)) grow h step by
    # step until float32's rounding of h alone exceeds the tolerance.
    scale = 0.5 if cell.name != "rnn_relu" else 0.5 / np.sqrt(H)
    layers, params = [], {}
    for k in range(L):
        directions = []
        for d in range(D):
            in_k = I if k == 0 else D * H_out
            dw = (rng.standard_normal((G, in_k)) * scale,
                  rng.standard_normal((G, H_out)) * scale,
                  rng.standard_normal(G) if bias else None,
                  rng.standard_normal(G) if bias else None,
                  rng.standard_normal((H_out, H)) * 0.5 if proj else None)
            directions.append(dw)
            suffix = f"_l{k}" + ("_reverse" if d else "")
            for name, w in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"), dw,
                               strict=True):
                if w is not None:
                    params[name + suffix] = w
        layers.append(directions)
    return layers, params


# A case each strategy can run: (T, B, D, projection); LSTM-only ones say so.
_STRATEGY_CASES = {"team": (6, 3, 1, 0), "team_directions": (6, 3, 2, 0),
                   "stream_step": (1, 1, 1, 0), "layers": (5, 4, 2, 3),
                   "panels_fused": (5, 19, 2, 0), "panels": (5, 11, 2, 0), "axpy": (5, 5, 2, 3),
                   "numpy": (5, 4, 2, 3)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", list(CELLS), ids=list(CELLS))
@pytest.mark.parametrize("strategy", [s.name for s in cpu.STRATEGIES])
def test_every_strategy_runs_every_cell_as_the_reference(strategy, cell, dtype):
    # The dispatch table, forced entry by entry: each strategy that can run a
    # cell matches the reference (2 layers, lengths, a given state; H = 21 is a
    # float32 vector and a masked tail); one that cannot refuses.
    cell = CELLS[cell]
    T, B, D, proj = _STRATEGY_CASES[strategy]
    proj = proj if cell is LSTM else 0  # a projection is an LSTM's alone
    rng = np.random.default_rng(len(strategy) + cell.gates)
    I, H, L = 6, 21, 2
    layers, params = _random_stack(rng, cell, I, H, L, D, True, proj)
    cell_params = None
    if cell.row is not None:  # the LayerNorm cell: norms' weights, biases, eps (11, H)
        cell_params = [[np.concatenate([1 + 0.3 * rng.standard_normal((5, H)),
                                        0.3 * rng.standard_normal((5, H)),
                                        np.full((1, H), 1e-5)]) for _ in range(D)]
                       for _ in range(L)]
    stack = pack_stack(layers, dtype, cell, cell_params)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, proj or H)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype) if cell.has_cell_state else None
    lengths = rng.integers(1, T + 1, B).astype(np.int64) if B > 1 else None
    if not cpu.BY_NAME[strategy].can_run(stack if cpu.BY_NAME[strategy].scope == "stack"
                                         else stack[0], T, B):
        # the team needs two threads
        assert cell is not LSTM or strategy in ("team", "team_directions")
        with pytest.raises(ValueError, match="cannot run"):
            cpu.forward(stack, x, h0, c0, lengths, strategy)
        return
    out, h_n, c_n = cpu.forward(stack, x, h0, c0, lengths, strategy)
    hx = (h0, c0) if cell.has_cell_state else h0
    as64 = {k: v.astype(dtype).astype(np.float64) for k, v in params.items()}
    ref_out, ref_state = reference.recurrent(
        cell, x.astype(np.float64), as64, L, D == 2,
        tuple(s.astype(np.float64) for s in hx) if cell.has_cell_state else hx.astype(np.float64),
        lengths, cell_params and [[np.asarray(p, dtype).astype(np.float64) for p in layer]
                                  for layer in cell_params])
    assert_close(out, ref_out, dtype, "out")
    if cell.has_cell_state:
        assert_close(h_n, ref_state[0], dtype, "h_n")
        assert_close(c_n, ref_state[1], dtype, "c_n")
    else:
        assert_close(h_n, ref_state, dtype, "h_n")
        assert c_n.shape == (L * D, B, 0)
