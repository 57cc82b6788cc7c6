"""Whole models: Linear, Embedding, LayerNormLSTM, streaming, the seed model styles."""

import numpy as np
import pytest
from conftest import assert_close, needs_torch, torch

import numba_lstm as nl
import numba_lstm.cpu as cpu
from numba_lstm import reference
from numba_lstm.cpu import StackStepper, TeamStepper
from numba_lstm.cpu.amx import HAS_AMX_BF16
from numba_lstm.cpu.caches import cache_bytes, cpu_vendor


# -- streaming (no torch) ----------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_stream_in_random_chunks_equals_one_call(batch_first, seed):
    rng = np.random.default_rng(seed)
    lstm = nl.LSTM(5, 7, num_layers=2, proj_size=3, batch_first=batch_first, dtype="float64")
    T = 23
    x = rng.standard_normal((2, T, 5) if batch_first else (T, 2, 5))
    full, (h_n, c_n) = lstm(x)
    stream = lstm.stream(batch_size=2)
    cuts = np.sort(rng.choice(np.arange(1, T), size=rng.integers(1, 8), replace=False))
    axis = 1 if batch_first else 0
    pieces = [stream(chunk) for chunk in np.split(x, cuts, axis=axis)]
    np.testing.assert_allclose(np.concatenate(pieces, axis=axis), full, rtol=0, atol=1e-12)
    np.testing.assert_allclose(stream.state[0], h_n, rtol=0, atol=1e-12)
    np.testing.assert_allclose(stream.state[1], c_n, rtol=0, atol=1e-12)


def test_stream_reset_state_setter_and_batch_check():
    lstm = nl.LSTM(3, 4, dtype="float64")
    x = np.random.default_rng(0).standard_normal((6, 3))  # unbatched stream
    stream = lstm.stream()
    first = stream(x)
    assert stream.state[0].shape == (1, 4)
    stream.reset()
    assert stream.state is None
    np.testing.assert_array_equal(stream(x), first)
    h0, c0 = np.ones((1, 4)), np.full((1, 4), 0.5)
    stream.state = (h0, c0)
    np.testing.assert_allclose(stream(x), lstm(x, (h0, c0))[0], atol=1e-12)
    batched = lstm.stream(batch_size=2)
    with pytest.raises(ValueError, match=r"opened for batch_size=2, got a chunk of shape"):
        batched(np.zeros((1, 3, 3)))
    with pytest.raises(TypeError, match="state must be a tuple"):
        stream.state = np.zeros(3)


@pytest.mark.parametrize("layout", ["time_major", "batch_first", "unbatched"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stream_one_step_at_a_time_equals_one_call(layout, dtype, monkeypatch):
    # Single steps at batch 1 after the first take Stream's fast path (the
    # module's own state, no rechecks): same numbers, fresh arrays each call,
    # and a bad chunk still gets the full checks' error.
    rng = np.random.default_rng(5)
    lstm = nl.LSTM(6, 9, num_layers=3, batch_first=layout == "batch_first", dtype=dtype)
    shape = {"time_major": (1, 1, 6), "batch_first": (1, 1, 6), "unbatched": (1, 6)}[layout]
    x = rng.standard_normal((12,) + shape[1:]).astype(dtype)
    whole = {"time_major": (12, 1, 6), "batch_first": (1, 12, 6), "unbatched": (12, 6)}[layout]
    full, (h_n, c_n) = lstm(x.reshape(whole))
    stream = lstm.stream()
    fast_steps = []
    step = StackStepper.__call__
    monkeypatch.setattr(StackStepper, "__call__",
                        lambda self, x: fast_steps.append(step(self, x)) or fast_steps[-1])
    pieces = [stream(x[t:t + 1].reshape(shape)) for t in range(12)]
    assert len(fast_steps) == 11 and all(r is not None for r in fast_steps)
    assert all(p.shape == shape[:-1] + (9,) for p in pieces)
    pieces[0][...] = 7  # outputs are not views of the carried state
    tol = 2e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(np.concatenate(pieces[1:]).reshape(-1, 9),
                               full.reshape(-1, 9)[1:], rtol=0, atol=tol)
    np.testing.assert_allclose(stream.state[0], h_n, rtol=0, atol=tol)
    np.testing.assert_allclose(stream.state[1], c_n, rtol=0, atol=tol)
    with pytest.raises(RuntimeError, match="Expected 6, got 5"):
        stream(np.zeros(shape[:-1] + (5,), dtype))
    before = stream.state
    wide = stream(x[:1].reshape(shape).astype(np.float16))  # converted by the full path
    assert wide.dtype == np.dtype(dtype) and stream.state is not before
    stream.reset()  # then from zeros again, not from a forgotten state
    np.testing.assert_allclose(stream(x[:1].reshape(shape)),
                               full.reshape(-1, 9)[:1].reshape(shape[:-1] + (9,)), rtol=0, atol=tol)


@pytest.mark.parametrize("weights", ["float32", "int8", "bfloat16"])
@pytest.mark.parametrize("layout", ["time_major", "unbatched"])
def test_a_stream_steps_on_the_team_once_its_weights_pass_one_cores_l2(layout, weights,
                                                                      monkeypatch):
    # The stepper is chosen by the bytes a one-thread step reads against the L2
    # size read from the host (faked here): one thread up to one L2, the team
    # past it. Both give the one-call numbers, a quantized stack's too (the
    # team reads its stored weights, the one-call path here their float32
    # values: the same products up to rounding).
    rng = np.random.default_rng(11)
    lstm = nl.LSTM(5, 8, num_layers=2)
    if weights != "float32":
        lstm = lstm.quantize(weights)
    dot = lstm._layers.quantized_step()
    arrays = lstm._layers.step if dot is None else [a for part in dot for a in part]
    read = sum(a.nbytes for a in arrays)
    shape = (1, 1, 5) if layout == "time_major" else (1, 5)
    x = rng.standard_normal((7, 1, 5)).astype(np.float32)
    full, (h_n, c_n) = lstm(x)
    team = TeamStepper if cpu.TEAM.size > 1 else StackStepper  # NUMBA_NUM_THREADS=1: no team
    for l2, expected in ((read, StackStepper), (read - 1, team), (0, StackStepper)):
        monkeypatch.setattr(cpu, "l2_bytes", lambda l2=l2: l2)
        stream = lstm.stream()
        pieces = [stream(x[t:t + 1].reshape(shape)) for t in range(7)]
        assert type(stream._stepper) is expected, (l2, read)
        assert_close(np.stack(pieces).reshape(7, 1, 8), full, np.float32, f"out, l2={l2}")
        assert_close(stream.state[0].reshape(h_n.shape), h_n, np.float32, f"h_n, l2={l2}")
        assert_close(stream.state[1].reshape(c_n.shape), c_n, np.float32, f"c_n, l2={l2}")
        # A module called step by step, hx passed back in, follows the same rule.
        strategy = cpu._pick("stack", None, lstm._layers, 1, 1).name
        assert strategy == ("team" if expected is TeamStepper else "stream_step")
        state, steps = None, []
        for t in range(7):
            out, state = lstm(x[t:t + 1], state)
            steps.append(out)
        assert_close(np.concatenate(steps), full, np.float32, f"{strategy}, l2={l2}")


@pytest.mark.prefilled  # the quantized team and layer jobs: ~65 s of compile, cold
@pytest.mark.parametrize("weights", ["float32", "int8", "bfloat16"])
def test_large_batches_split_units_on_the_team_once_w_hh_passes_one_cores_l2(weights,
                                                                             monkeypatch,
                                                                             dot_at_any_size):
    # From batch 16 a stack's batch is split across threads, unless W_hh, as
    # the steps read it, with a thread's rows' gx and h beside it, is past one
    # core's L2 (faked here) and the batch leaves each thread fewer than
    # UNIT_SPLIT_MAX_TILES row tiles (pairs of AMX tiles where bfloat16 steps
    # take them): then the team splits the units. Either way the numbers are
    # the batch split's.
    rng = np.random.default_rng(12)
    lstm = nl.LSTM(6, 32, num_layers=2)  # H = 32: int8 gets its dot layout where it can
    if weights != "float32":
        lstm = lstm.quantize(weights)
    layer = lstm._layers[0]
    dot = layer.dot_layout()
    read = layer.w_hh.nbytes if dot is None else dot[0][0].nbytes
    bound = cpu.UNIT_SPLIT_MAX_TILES * cpu.unit_split_tile_rows(layer) * cpu.TEAM.size
    if weights == "bfloat16" and HAS_AMX_BF16:
        assert bound == cpu.UNIT_SPLIT_MAX_TILES * 32 * cpu.TEAM.size
    team = "team" if cpu.TEAM.size > 1 else "layers"  # NUMBA_NUM_THREADS=1: no team
    monkeypatch.setattr(cpu, "l3_feeds_each_core_fast", lambda: False)  # no fused steps from L3
    def split(B):  # the bytes a batch-split thread's step reads: W_hh, its rows' gx and h
        rows = -(-B // cpu.TEAM.size)
        return read + rows * (layer.cell.gates + 1) * layer.hidden_size * 4

    assert cpu._split_step_bytes(layer, -(-16 // cpu.TEAM.size)) == split(16)
    for l2, B, expected in ((split(16), 16, "layers"), (split(16) - 1, 16, team),
                            (read, 16, team), (0, 16, "layers"),
                            (split(bound - 1) - 1, bound - 1, team),
                            (split(bound) - 1, bound, "layers")):
        monkeypatch.setattr(cpu, "l2_bytes", lambda l2=l2: l2)
        assert cpu._pick("stack", None, lstm._layers, 9, B).name == expected, (l2, B)
        x = rng.standard_normal((9, B, 6)).astype(np.float32)
        lengths = rng.integers(1, 10, B) if B % 2 else None  # rows past their end too
        out, (h_n, c_n) = lstm(x, lengths=lengths)
        ref = cpu.forward(lstm._layers, x, None, None, lengths, strategy="layers")
        for got, want, name in zip((out, h_n, c_n), ref, ("out", "h_n", "c_n"), strict=True):
            assert_close(got, want, np.float32, f"{name}, l2={l2}, B={B}")


@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_directions_take_turns_where_their_w_hh_cannot_share_the_l3(weights, monkeypatch,
                                                                    dot_at_any_size):
    # A bidirectional layer whose W_hh (as its steps read it) is at least the
    # L3 (faked) gives every thread a batch slice of each direction in turn,
    # from TILE_ROWS // 2 rows a thread; the numbers are a direction a task's.
    rng = np.random.default_rng(14)
    lstm = nl.LSTM(6, 32, bidirectional=True)  # int8: its dot layout where it can
    if weights != "float32":
        lstm = lstm.quantize(weights)
    layer = lstm._layers[0]
    dot = layer.dot_layout()
    read = layer.w_hh.nbytes if dot is None else dot[0][0].nbytes
    rows = cpu.TILE_ROWS // 2
    for l3, B, threads, turns in ((read, 2 * rows, 2, True), (read + 1, 2 * rows, 2, False),
                                  (read, 2 * rows - 1, 2, False), (0, 2 * rows, 2, False),
                                  (read, 3 * rows, 3, True), (read, 2 * rows, 1, False)):
        monkeypatch.setattr(cpu, "l3_bytes", lambda l3=l3: l3)
        expected = threads if turns else max(1, min(B, threads // 2))
        assert cpu._n_chunks(layer, B, threads) == expected, (l3, B, threads)
    monkeypatch.setattr(cpu, "l3_bytes", lambda: read)
    B = cpu.TEAM.size * rows
    x = rng.standard_normal((7, B, 6)).astype(np.float32)
    lengths = rng.integers(1, 8, B)
    out, (h_n, c_n) = lstm(x, lengths=lengths)
    monkeypatch.setattr(cpu, "_directions_take_turns", lambda *args: False)
    ref = lstm(x, lengths=lengths)
    np.testing.assert_array_equal(out, ref[0])
    np.testing.assert_array_equal(h_n, ref[1][0])
    np.testing.assert_array_equal(c_n, ref[1][1])
    if weights == "float32":
        hx = np.zeros((2, B, 32))
        want, (want_h, want_c) = reference.lstm(x.astype(np.float64), {
            k: np.asarray(v, np.float64) for k, v in lstm.state_dict().items()}, 1, True,
            (hx, hx), lengths)
        assert_close(out, want, np.float32, "out")
        assert_close(c_n, want_c, np.float32, "c_n")


@pytest.mark.parametrize("cls", [nl.LSTM, nl.GRU])
def test_small_batches_run_each_direction_on_the_team_where_its_w_hh_passes_l2(cls,
                                                                            monkeypatch):
    # Below batch 16, a two-direction layer whose one direction's W_hh fills
    # one core's L2 or passes it (faked here) runs its directions one after
    # the other on the team, split by units, the reverse one on each sequence reversed
    # within its length; where a thread's share passes L2 too, only below a
    # register tile's rows. The numbers are the reference's, lengths and hx
    # too.
    rng = np.random.default_rng(15)
    module = cls(6, 32, num_layers=2, bidirectional=True)
    layer = module._layers[0]
    w = layer.w_hh[0].nbytes
    team = cpu.TEAM.size > 1
    share = -(-w // cpu.TEAM.size)  # a thread's part of one direction's W_hh
    for l2, B, on_team in ((w - 1, 3, team), (w - 1, 1, team), (w - 1, cpu.TILE_ROWS, team),
                           (w - 1, 15, team), (w, 3, team), (w + 1, 3, False), (0, 3, False),
                           (w - 1, 16, False),
                           (share - 1, 3, team), (share - 1, 1, team),
                           (share - 1, cpu.TILE_ROWS - 1, team),
                           (share - 1, cpu.TILE_ROWS, False)):
        monkeypatch.setattr(cpu, "l2_bytes", lambda l2=l2: l2)
        picked = cpu._pick("layer", None, layer, 9, B).name
        assert (picked == "team_directions") == on_team, (l2, B, picked)
    monkeypatch.setattr(cpu, "l2_bytes", lambda: w - 1)
    B = 5
    x = rng.standard_normal((9, B, 6)).astype(np.float32)
    lengths = np.array([9, 4, 1, 7, 9])
    h0 = rng.standard_normal((4, B, 32)).astype(np.float32)
    c0 = rng.standard_normal((4, B, 32)).astype(np.float32)
    hx = (h0, c0) if cls is nl.LSTM else h0
    out, state = module(x, hx, lengths=lengths)
    as64 = {k: np.asarray(v, np.float64) for k, v in module.state_dict().items()}
    hx64 = (h0.astype(np.float64), c0.astype(np.float64)) if cls is nl.LSTM else h0.astype(
        np.float64)
    cell = {nl.LSTM: "lstm", nl.GRU: "gru"}[cls]
    want, want_state = reference.recurrent(cell, x.astype(np.float64), as64, 2, True, hx64,
                                           lengths)
    assert_close(out, want, np.float32, "out")
    states = (state, want_state) if cls is nl.LSTM else ((state,), (want_state,))
    for got, ref, name in zip(*states, ("h_n", "c_n")[:len(states[0])], strict=True):
        assert_close(got, ref, np.float32, name)


@pytest.mark.skipif(cpu.TEAM.size < 2, reason="one thread: no team")
@pytest.mark.parametrize("cls", [nl.LSTM, nl.GRU])
def test_small_float_stacks_split_the_batch_from_four_rows_a_thread(cls, monkeypatch):
    # Below batch 16, a float stack whose every W_hh is at most
    # 1 / BATCH_SPLIT_MAX_L2_SHARE of one core's L2 (faked here) splits the
    # batch across threads where each thread gets FLOAT_BATCH_SPLIT_MIN_ROWS
    # rows or more; otherwise the team splits the units. The numbers are the
    # reference's either way, hx and lengths too.
    rng = np.random.default_rng(23)
    I, H, T = 7, 64, 11
    module = cls(I, H, num_layers=2)
    fits = cpu.BATCH_SPLIT_MAX_L2_SHARE * module._layers[0].w_hh.nbytes
    rows = cpu.FLOAT_BATCH_SPLIT_MIN_ROWS * cpu.TEAM.size  # the least batch that gives them
    if rows >= cpu.GEMM_STEPS_MIN_BATCH:
        pytest.skip("too many threads for that many rows a thread below batch 16")
    as64 = {k: np.asarray(v, np.float64) for k, v in module.state_dict().items()}
    cell = {nl.LSTM: "lstm", nl.GRU: "gru"}[cls]
    for l2, B, expected in ((fits, rows, "layers"), (fits, 15, "layers"),
                            (fits - 1, rows, "team"), (fits, rows - 1, "team"),
                            (0, rows, "team")):
        monkeypatch.setattr(cpu, "l2_bytes", lambda l2=l2: l2)
        assert cpu._pick("stack", None, module._layers, T, B).name == expected, (l2, B)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        h0 = rng.standard_normal((2, B, H)).astype(np.float32)
        lengths = rng.integers(1, T + 1, B)
        hx = (h0, np.zeros_like(h0)) if cls is nl.LSTM else h0
        out, _ = module(x, hx, lengths=lengths)
        hx64 = tuple(a.astype(np.float64) for a in hx) if cls is nl.LSTM else h0.astype(
            np.float64)
        want, _ = reference.recurrent(cell, x.astype(np.float64), as64, 2, False, hx64,
                                      lengths)
        assert_close(out, want, np.float32, f"{expected}, B={B}")


def test_a_float_projection_goes_by_column_slices_from_twice_the_teams_l2s(monkeypatch):
    # A float layer job's input projection goes by (row chunk, direction,
    # column slice) where W_ih, every direction's, is FLOAT_SLICED_MIN_L2S
    # times the team's L2s together (faked here), else by blocks of rows.
    # Forced on 280 rows (two chunks of 256) and W_ih of 2 MB a direction (two
    # 1 MB slices, with AVX-512's panels the second partial): the blocks' bits,
    # and the path ran.
    rng = np.random.default_rng(24)
    I, H, T, B = 512, 256, 70, 4
    lstm = nl.LSTM(I, H, num_layers=2, bidirectional=True)
    layer = lstm._layers[0]
    least = cpu.FLOAT_SLICED_MIN_L2S * cpu.TEAM.size  # L2s' worth of W_ih
    for l2, sliced in ((layer.w_ih.nbytes // least, True), (layer.w_ih.nbytes // least + 1, False),
                       (0, False)):
        monkeypatch.setattr(cpu, "l2_bytes", lambda l2=l2: l2)
        assert cpu.projection_sliced(layer, None) == sliced, l2
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.full(B, T, np.int64)
    monkeypatch.setattr(cpu, "projection_sliced", lambda layer, ih_dot: False)
    blocks = cpu.forward(lstm._layers, x, None, None, lengths, "panels")
    asked = []
    monkeypatch.setattr(cpu, "projection_sliced", lambda layer, ih_dot: asked.append(layer) or True)
    sliced = cpu.forward(lstm._layers, x, None, None, lengths, "panels")
    assert asked == list(lstm._layers)  # both layers' projections
    for got, want in zip(sliced, blocks, strict=True):
        np.testing.assert_array_equal(got, want)
    want, _ = reference.lstm(x.astype(np.float64), {
        k: np.asarray(v, np.float64) for k, v in lstm.state_dict().items()}, 2, True)
    assert_close(sliced[0], want, np.float32, "out")


@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_fused_steps_read_weights_from_l3_where_it_holds_them_and_feeds_cores_fast(
        weights, monkeypatch, dot_at_any_size):
    # From TILE_ROWS rows a task, a layer whose [W_ih; W_hh] take at most half of
    # the L3 (faked here) projects each step in its product on a CPU whose L3
    # feeds each core fast (faked), and the batch split then takes the stack
    # from the team; an int8 layer keeps its dot kernels. The numbers are the
    # forced strategies'.
    rng = np.random.default_rng(13)
    lstm = nl.LSTM(32, 32, num_layers=2)  # the same size a layer; int8's dot layout
    if weights != "float32":
        lstm = lstm.quantize(weights)
    layers = lstm._layers
    need = max(2 * (layer.w_ih.nbytes + layer.w_hh.nbytes) for layer in layers)
    B = cpu.TILE_ROWS * cpu.TEAM.size  # TILE_ROWS rows a thread
    monkeypatch.setattr(cpu, "l2_bytes", lambda: 1)  # W_hh past L2: the team's unit split
    monkeypatch.setattr(cpu, "FUSED_MAX_BYTES", 0)  # weights never count as fitting L2
    fused = layers[0].dot_layout() is None  # float32, or int8 on its float32 values
    for l3, fast, expected in ((need, True, fused), (need - 1, True, False),
                               (need, False, False), (0, True, False)):
        monkeypatch.setattr(cpu, "l3_bytes", lambda l3=l3: l3)
        monkeypatch.setattr(cpu, "l3_feeds_each_core_fast", lambda fast=fast: fast)
        assert (cpu._pick("layer", None, layers[0], 9, B).name == "panels_fused") == expected
        if cpu.TEAM.size > 1:
            stack = cpu._pick("stack", None, layers, 9, B).name
            assert stack == ("layers" if expected else "team"), (l3, fast)
    x = rng.standard_normal((9, B, 32)).astype(np.float32)
    out, (h_n, c_n) = lstm(x)  # the last case's choice
    for strategy in ("panels_fused", "panels") if fused else ("panels",):
        ref = cpu.forward(layers, x, None, None, None, strategy=strategy)
        for got, want, name in zip((out, h_n, c_n), ref, ("out", "h_n", "c_n"), strict=True):
            assert_close(got, want, np.float32, f"{name}, {strategy}")


def test_the_cpu_vendor_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n")
    assert cpu_vendor(info) == "AuthenticAMD"
    info.write_text("processor\t: 0\n")
    cpu_vendor.cache_clear()
    assert cpu_vendor(info) == ""
    assert cpu_vendor(tmp_path / "missing") == ""
    cpu_vendor.cache_clear()


def test_cache_sizes_are_read_from_sysfs(tmp_path):
    for index, (level, kind, size) in enumerate(((1, "Data", "48K"), (1, "Instruction", "32K"),
                                                 (2, "Unified", "2048K"), (3, "Unified", "1M"))):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{value}\n")
    assert cache_bytes(1, tmp_path) == 48 << 10
    assert cache_bytes(2, tmp_path) == 2 << 20
    assert cache_bytes(3, tmp_path) == 1 << 20
    assert cache_bytes(4, tmp_path) == 0  # not there: the cautious branch
    assert cache_bytes(2, tmp_path / "missing") == 0


def test_stream_fast_path_state_reads_and_weight_changes():
    # The fast path double-buffers its state: a state read is a snapshot that
    # later steps leave alone, and reading it does not leave the fast path.
    # New weights (load_state_dict) take effect at the next step.
    rng = np.random.default_rng(8)
    lstm = nl.LSTM(3, 5, num_layers=2)
    x = rng.standard_normal((6, 1, 3)).astype(np.float32)
    stream = lstm.stream()
    for t in range(3):
        stream(x[t:t + 1])
    snapshot = stream.state
    kept = [s.copy() for s in snapshot]
    snapshot[0][...] = 100  # the caller's writes do not reach the stream either
    stream(x[3:4])
    assert stream.state[0].shape == (2, 1, 5)
    assert stream._stepper is not None
    np.testing.assert_array_equal(snapshot[1], kept[1])
    before = stream.state
    other = {k: v * 0.5 for k, v in lstm.state_dict().items()}
    lstm.load_state_dict(other)
    expected, (h_n, _) = lstm(x[4:5], before)
    np.testing.assert_array_equal(stream(x[4:5]), expected)
    np.testing.assert_array_equal(stream.state[0], h_n)


def test_embedding_and_linear_errors():
    emb = nl.Embedding(10, 4)
    np.testing.assert_array_equal(emb(np.array([[1, 9]])), emb.state_dict()["weight"][[[1, 9]]])
    with pytest.raises(IndexError, match="index 10 is out of range for a vocabulary of size 10"):
        emb([3, 10])
    with pytest.raises(IndexError, match="index -1 is out of range"):
        emb([-1])
    with pytest.raises(TypeError, match="indices must be integers, got dtype float64"):
        emb([1.0])
    lin = nl.Linear(4, 3)
    assert lin(np.ones((2, 5, 4))).shape == (2, 5, 3)
    with pytest.raises(RuntimeError, match=r"input must have shape \(..., 4\), got \(2, 5\)"):
        lin(np.ones((2, 5)))
    assert repr(lin) == "Linear(in_features=4, out_features=3, bias=True)"


def random_layernorm_params(rng, I, H, L, dtype=np.float64):
    params = {}
    for k in range(L):
        p = f"cells.{k}."
        params[p + "input_lin.weight"] = rng.standard_normal((4 * H, I if k == 0 else H)) * 0.4
        params[p + "hidden_lin.weight"] = rng.standard_normal((4 * H, H)) * 0.4
        params[p + "hidden_lin.bias"] = rng.standard_normal(4 * H) * 0.1
        for norm in [f"layer_norm.{n}" for n in range(4)] + ["layer_norm_c"]:
            params[p + norm + ".weight"] = 1 + 0.1 * rng.standard_normal(H)
            params[p + norm + ".bias"] = 0.1 * rng.standard_normal(H)
    return {k: v.astype(dtype) for k, v in params.items()}


@pytest.mark.parametrize("batch", [1, 3])  # 1: the serial kernel, 3: the threaded one
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_lstm_kernel_matches_reference(dtype, batch):
    rng = np.random.default_rng(0)
    params = random_layernorm_params(rng, 5, 6, 2, dtype)
    model = nl.LayerNormLSTM.from_state_dict(params)
    assert model.dtype == dtype and repr(model).startswith("LayerNormLSTM(5, 6, num_layers=2")
    x = rng.standard_normal((9, batch, 5)).astype(dtype)
    hx = tuple(rng.standard_normal((2, batch, 6)).astype(dtype) for _ in range(2))
    out, (h_n, c_n) = model(x, hx)
    as64 = {k: v.astype(np.float64) for k, v in params.items()}
    ref_out, (ref_h, ref_c) = reference.layernorm_lstm(x.astype(np.float64), as64, 2,
                                                       tuple(a.astype(np.float64) for a in hx))
    assert_close(out, ref_out, dtype, "output")
    assert_close(h_n, ref_h, dtype, "h_n")
    assert_close(c_n, ref_c, dtype, "c_n")
    stream = model.stream()
    np.testing.assert_allclose(np.concatenate([stream(x[:4]), stream(x[4:])]), model(x)[0],
                               atol=1e-6 if dtype == np.float32 else 1e-12)


# -- the seed model styles against torch ---------------------------------------------------
class LabmlLSTMCell(torch.nn.Module if torch else object):
    """labml.ai's annotated LSTM cell with layer_norm=True, re-created from its equations."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_lin = torch.nn.Linear(hidden_size, 4 * hidden_size)
        self.input_lin = torch.nn.Linear(input_size, 4 * hidden_size, bias=False)
        self.layer_norm = torch.nn.ModuleList([torch.nn.LayerNorm(hidden_size) for _ in range(4)])
        self.layer_norm_c = torch.nn.LayerNorm(hidden_size)

    def forward(self, x, h, c):
        ifgo = (self.hidden_lin(h) + self.input_lin(x)).chunk(4, dim=-1)
        i, f, g, o = [self.layer_norm[n](ifgo[n]) for n in range(4)]
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(self.layer_norm_c(c_next)), c_next


class LabmlLSTM(torch.nn.Module if torch else object):
    def __init__(self, input_size, hidden_size, n_layers):
        super().__init__()
        self.n_layers, self.hidden_size = n_layers, hidden_size
        self.cells = torch.nn.ModuleList(
            [LabmlLSTMCell(input_size, hidden_size)]
            + [LabmlLSTMCell(hidden_size, hidden_size) for _ in range(n_layers - 1)])

    def forward(self, x):
        h = [x.new_zeros(x.shape[1], self.hidden_size) for _ in range(self.n_layers)]
        c = [x.new_zeros(x.shape[1], self.hidden_size) for _ in range(self.n_layers)]
        out = []
        for t in range(x.shape[0]):
            inp = x[t]
            for k in range(self.n_layers):
                h[k], c[k] = self.cells[k](inp, h[k], c[k])
                inp = h[k]
            out.append(h[-1])
        return torch.stack(out), (torch.stack(h), torch.stack(c))


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_labml_layernorm_lstm_parity(dtype):
    torch.manual_seed(0)
    model = LabmlLSTM(6, 8, 3).to(getattr(torch, dtype.__name__))
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(12, 2, 6, dtype=getattr(torch, dtype.__name__))
    with torch.inference_mode():
        out, (h, c) = model(x)
    ours = nl.LayerNormLSTM.from_state_dict(model.state_dict())
    O, (Hn, Cn) = ours(x.numpy())
    assert_close(O, out.numpy(), dtype, "output")
    assert_close(Hn, h.numpy(), dtype, "h_n")
    assert_close(Cn, c.numpy(), dtype, "c_n")


@needs_torch
def test_lstm_model_last_step_style():
    """LSTM + Linear on the last step (batch-first), as the seed LSTMModel."""
    torch.manual_seed(1)
    lstm, fc = torch.nn.LSTM(4, 16, num_layers=2, batch_first=True), torch.nn.Linear(16, 1)
    x = torch.randn(5, 30, 4)
    with torch.inference_mode():
        expected = fc(lstm(x)[0][:, -1, :])
    sd = {**{"lstm." + k: v for k, v in lstm.state_dict().items()},
          **{"fc." + k: v for k, v in fc.state_dict().items()}}
    ours_lstm = nl.LSTM.from_state_dict(sd, prefix="lstm.", batch_first=True)
    ours_fc = nl.Linear.from_state_dict(sd, prefix="fc.")
    assert_close(ours_fc(ours_lstm(x.numpy())[0][:, -1, :]), expected.numpy(), np.float32, "y")


@needs_torch
@pytest.mark.parametrize("seed", range(3))
def test_char_model_style_streamed_in_random_chunks(seed):
    """Embedding -> LSTM -> Linear on every step, d2l style, streamed in random chunks."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    emb, lstm, fc = torch.nn.Embedding(11, 6), torch.nn.LSTM(6, 10, 2), torch.nn.Linear(10, 11)
    tokens = rng.integers(0, 11, size=(17, 3))
    with torch.inference_mode():
        expected = fc(lstm(emb(torch.from_numpy(tokens)))[0]).numpy()
    e = nl.Embedding.from_state_dict(emb.state_dict())
    m = nl.LSTM.from_state_dict(lstm.state_dict())
    f = nl.Linear.from_state_dict(fc.state_dict())
    assert_close(f(m(e(tokens))[0]), expected, np.float32, "full")
    stream = m.stream()
    cuts = np.sort(rng.choice(np.arange(1, 17), size=4, replace=False))
    logits = np.concatenate([f(stream(e(chunk))) for chunk in np.split(tokens, cuts)])
    assert_close(logits, expected, np.float32, "streamed")
