"""Reduced-precision weights: module.quantize("int8" | "bfloat16")."""

import functools
import pickle

import numpy as np
import pytest
from conftest import needs_torch, torch

import numba_lstm as nl
from numba_lstm import quantization as quant
from numba_lstm import reference
from numba_lstm.bench.shapes import BY_ID, SHAPES
from numba_lstm.cpu.amx import HAS_AMX_BF16

FORMATS = ("int8", "bfloat16")
BOUND = {"int8": 5e-3, "bfloat16": 2.5e-3}  # max|Δ| against the float32 module


def _module(family, rng, I=5, H=6, **kw):
    cls = getattr(nl, family)
    module = cls(I, H, **kw)
    bound = H ** -0.5
    module.load_state_dict({k: rng.uniform(-bound, bound, v.shape).astype(np.float32)
                            for k, v in module.state_dict().items()})
    return module


def _dequantized(q) -> dict:
    """The oracle's weights: each stored matrix expanded with NumPy alone."""
    sd = q.state_dict()
    out = {}
    for name, value in sd.items():
        if name.endswith(quant.SCALE_SUFFIX):
            continue
        if value.dtype == np.int8:
            out[name] = value.astype(np.float64) * sd[name + quant.SCALE_SUFFIX][:, None]
        elif value.dtype == np.uint16:
            out[name] = (value.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            out[name] = value.astype(np.float64)
    return out


def test_formats_round_and_scale_as_documented():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]], np.float32)
    q, scale = quant.int8_rows(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    np.testing.assert_array_equal(q[0], [64, -127, 32])
    np.testing.assert_array_equal(scale, np.float32([1 / 127, 0, 3 / 127]))
    np.testing.assert_array_equal(quant.int8_values(q, scale)[1], 0)
    # bfloat16: round to nearest even on the 16 dropped bits.
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-9, -2.5, np.inf], np.float32)
    got = quant.bfloat16_values(quant.bfloat16_bits(x))
    np.testing.assert_array_equal(got, np.float32([1.0, 1.0, 1 + 2**-7, -2.5, np.inf]))
    assert np.isnan(quant.bfloat16_values(quant.bfloat16_bits(np.float32([np.nan])))).all()


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("family,kw", [
    ("LSTM", dict(num_layers=2, bidirectional=True)), ("LSTM", dict(proj_size=3)),
    ("GRU", dict(num_layers=2)), ("RNN", dict(bidirectional=True)),
    ("RNN", dict(nonlinearity="relu"))])
def test_every_path_matches_the_dequantized_reference(weights, family, kw):
    rng = np.random.default_rng(1)
    module = _module(family, rng, **kw)
    before = module.state_dict()
    q = module.quantize(weights)
    assert type(q) is type(module) and q.weights == weights and module.weights == "float32"
    for name, value in module.state_dict().items():  # the source is untouched
        np.testing.assert_array_equal(value, before[name])
    x = rng.standard_normal((7, 3, 5)).astype(np.float32)
    lengths = np.array([7, 4, 1])
    D = 2 if kw.get("bidirectional") else 1
    rows = D * kw.get("num_layers", 1)
    h0 = rng.standard_normal((rows, 3, kw.get("proj_size") or 6)).astype(np.float32)
    hx = (h0, rng.standard_normal((rows, 3, 6)).astype(np.float32)) if family == "LSTM" else h0
    out, state = q(x, hx, lengths=lengths)
    cell = family.lower() if family != "RNN" else "rnn_" + kw.get("nonlinearity", "tanh")
    want_out, want_state = reference.recurrent(
        cell, x.astype(np.float64), _dequantized(q), kw.get("num_layers", 1), D > 1,
        hx=tuple(h.astype(np.float64) for h in hx) if family == "LSTM"
        else hx.astype(np.float64), lengths=lengths)
    np.testing.assert_allclose(out, want_out, rtol=0, atol=2e-5)
    for got, want in zip(state if family == "LSTM" else (state,),
                         want_state if family == "LSTM" else (want_state,), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    # Streaming (one direction: the reverse one needs the future) and pickling
    # run the same weights.
    if D == 1:
        stream = q.stream()
        steps = np.concatenate([stream(x[t:t + 1, :1]) for t in range(7)])
        np.testing.assert_allclose(steps, q(x[:, :1])[0], rtol=0, atol=2e-6)
    again = pickle.loads(pickle.dumps(q))
    assert again.weights == weights
    np.testing.assert_array_equal(again(x)[0], q(x)[0])
    assert f"weights={weights!r}" in repr(q)


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("family", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_and_linear_quantize(weights, family):
    rng = np.random.default_rng(2)
    cell = _module(family, rng)
    q = cell.quantize(weights)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    sd = _dequantized(q)
    h = np.zeros((4, 6))
    c = np.zeros((4, 6))
    name = {"LSTMCell": "lstm", "GRUCell": "gru", "RNNCell": "rnn_tanh"}[family]
    want = reference.cell_step(nl.cells.CELLS[name], x.astype(np.float64), h,
                               c if family == "LSTMCell" else None, sd["weight_ih"],
                               sd["weight_hh"], sd["bias_ih"], sd["bias_hh"])
    got = q(x)
    got = got if family == "LSTMCell" else (got,)
    for g, w in zip(got, want, strict=False):
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-6)
    linear = nl.Linear(5, 3)
    ql = linear.quantize(weights)
    w = quant.values(weights, quant.store(weights, linear.state_dict()["weight"]))
    np.testing.assert_allclose(ql(x), x @ w.T + linear.state_dict()["bias"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("ext", ["safetensors", "npz"])
def test_files_restore_the_quantized_module_exactly(weights, ext, tmp_path):
    shape = BY_ID["S4"]
    module = nl.LSTM.from_state_dict(shape.state_dict())
    q = module.quantize(weights)
    nl.save(tmp_path / f"q.{ext}", q.state_dict())
    nl.save(tmp_path / f"f.{ext}", module.state_dict())
    restored = nl.LSTM.from_state_dict(nl.load(tmp_path / f"q.{ext}"))
    assert restored.weights == weights
    for name, value in q.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[name], value)
    x = shape.inputs()[:20]
    np.testing.assert_array_equal(restored(x)[0], q(x)[0])
    ratio = (tmp_path / f"q.{ext}").stat().st_size / (tmp_path / f"f.{ext}").stat().st_size
    assert ratio <= {"int8": 0.3, "bfloat16": 0.55}[weights], ratio


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("family", ["LSTM", "GRUCell", "Linear"])
def test_a_pickled_quantized_module_carries_its_stored_weights_alone(weights, family):
    # What multiprocessing and Dask ship: the stored matrices, not their float32
    # values beside them (a pickled int8 LSTM was 1.25x the float one's pickle).
    rng = np.random.default_rng(5)
    if family == "Linear":
        module, x = nl.Linear(64, 96), rng.standard_normal((3, 64)).astype(np.float32)
    else:
        module = getattr(nl, family)(64, 96, **({"num_layers": 2} if family == "LSTM" else {}))
        x = rng.standard_normal((9, 3, 64) if family == "LSTM" else (3, 64)).astype(np.float32)
    q = module.quantize(weights)
    blob = pickle.dumps(q)
    ratio = len(blob) / len(pickle.dumps(module))
    assert ratio <= {"int8": 0.3, "bfloat16": 0.55}[weights], ratio
    again = pickle.loads(blob)
    assert again.weights == weights and list(again.state_dict()) == list(q.state_dict())
    for name, value in q.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value)
    for got, want in zip(_arrays(again(x)), _arrays(q(x)), strict=True):
        np.testing.assert_array_equal(got, want)


def _arrays(result) -> list:
    """A module's result (an array, or tuples of them) as a flat list."""
    if isinstance(result, tuple):
        return [a for part in result for a in _arrays(part)]
    return [result]


@pytest.mark.parametrize("weights", FORMATS)
def test_a_sequence_does_not_depend_on_its_batch(weights):
    rng = np.random.default_rng(3)
    q = nl.LSTM.from_state_dict(BY_ID["S9"].state_dict()).quantize(weights)
    x = rng.standard_normal((50, 8, 40)).astype(np.float32)
    together = q(x)[0]
    for b in (0, 5):
        alone = q(x[:, b:b + 1])[0][:, 0]
        np.testing.assert_allclose(alone, together[:, b], rtol=0, atol=1e-6)
    x[:, 1:] *= 100  # the other rows' magnitudes change nothing for row 0
    np.testing.assert_allclose(q(x)[0][:, 0], together[:, 0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("weights", FORMATS)
def test_a_sequence_does_not_depend_on_its_batch_at_large_batch(weights):
    # Batch 35 splits across threads; with I and H multiples of 64 an int8
    # layer's rows go 16 at a time through AMX tiles where the CPU has them,
    # the rest through vpdpbusd rows: the same sums either way.
    rng = np.random.default_rng(4)
    q = nl.LSTM(64, 128, num_layers=2).quantize(weights)
    x = rng.standard_normal((20, 35, 64)).astype(np.float32)
    together = q(x)[0]
    for b in (0, 17, 34):
        alone = q(x[:, b:b + 1])[0][:, 0]
        np.testing.assert_allclose(alone, together[:, b], rtol=0, atol=1e-6)


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("B,kw", [(5, {}), (20, {}), (20, dict(bidirectional=True))])
def test_a_row_that_is_not_finite_leaves_the_other_rows_alone(weights, bad, B, kw,
                                                              dot_streaming):
    # A NaN or Inf in one sequence's x (then in its h, step after step) takes
    # that row's products in float; the other rows keep their grids, so their
    # numbers are those of the batch without it, bitwise. Before, the whole
    # block or task fell back to float and every other sequence moved by up
    # to 7e-4. Batch 5: the team (its projection and steps); 20: the panel
    # steps and the projection pass; both layers (the second's x is the
    # first's h). On the host's dot micro-kernel, or the pairs and the
    # vdpbf16ps emulation where it has none.
    rng = np.random.default_rng(31)
    q = nl.LSTM(24, 64, num_layers=2, **kw).quantize(weights)
    x = rng.standard_normal((12, B, 24)).astype(np.float32)
    clean = q(x)[0]
    x[4, 2, 7] = bad
    got = q(x)[0]
    np.testing.assert_array_equal(np.delete(got, 2, axis=1), np.delete(clean, 2, axis=1))
    if not kw:  # one direction: that row's steps before it are its own too
        np.testing.assert_array_equal(got[:4, 2], clean[:4, 2])
    if bad != bad:  # NaN: the row is NaN from then on, as in float32
        assert np.isnan(got[4:, 2, :64]).all()


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("family,kw", [("GRU", {}), ("LSTM", dict(bidirectional=True)),
                                       ("GRU", dict(num_layers=2, bidirectional=True))])
def test_a_sequence_does_not_depend_on_its_batch_in_other_layers(weights, family, kw,
                                                                 dot_at_any_size):
    # Bidirectional layers, each direction's W_hh within L2 (so not on the
    # team): batch 8 on the panel steps, batch 1 on the axpy rows, or on the
    # panel steps' dot kernels for int8 with vpdpbusd (each row of x and h on
    # its own grid: the axpy rows would multiply them unrounded, 1e-3 apart
    # with h on 8 bits). A GRU of one direction runs on the team where its
    # layers have a dot layout.
    rng = np.random.default_rng(3)
    q = getattr(nl, family)(40, 64, **kw).quantize(weights)
    x = rng.standard_normal((50, 8, 40)).astype(np.float32)
    together = q(x)[0]
    for b in (0, 5):
        alone = q(x[:, b:b + 1])[0][:, 0]
        np.testing.assert_allclose(alone, together[:, b], rtol=0, atol=1e-6)


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("H", [16, 40, 64])
def test_a_quantized_row_gets_the_same_numbers_on_every_path(H, weights, monkeypatch,
                                                             dot_at_any_size):
    # Batch 1 (the team or the layers), 8 (the team's batch steps), 24 (the
    # panel steps) and a stream of steps: one set of activation grids, or none
    # (H not a multiple of the dot panel: float32 values everywhere). With h on
    # 8 bits a row on a grid and the same row unrounded are ~1e-4 apart; in
    # bfloat16 too, and its float32 sums must add in one order on every path.
    # bfloat16's dot layouts are built on any CPU (vdpbf16ps emulated without
    # AVX512_BF16); int8's where the dispatch takes them.
    from numba_lstm.cpu import packing

    monkeypatch.setattr(packing, "BF16_DOT_BY_DEFAULT", True)
    rng = np.random.default_rng(H)
    q = nl.LSTM(12, H, num_layers=2).quantize(weights)
    x = rng.standard_normal((20, 24, 12)).astype(np.float32)
    want = q(x)[0][:, 0]
    for B in (1, 8):
        np.testing.assert_allclose(q(x[:, :B])[0][:, 0], want, rtol=0, atol=1e-6)
    stream = q.stream()
    steps = np.stack([stream(x[t:t + 1, :1]) for t in range(20)])[:, 0, 0]
    np.testing.assert_allclose(steps, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("weights", FORMATS)
def test_small_layers_keep_float_products_below_the_dot_minimum(weights, monkeypatch):
    # Putting h on its grid costs a row O(H) a step, which the dot's cheaper
    # products repay only from packing.DOT_MIN_HIDDEN: below it a quantized
    # stack has no dot layout on any path (the choice is the module's, never a
    # call's batch), from it it has them on every path (the CPU's flags faked).
    from numba_lstm.cpu import packing
    from numba_lstm.cpu.dot_gemm import DOT_NR

    monkeypatch.setattr(packing, "DOT_BY_DEFAULT", True)
    monkeypatch.setattr(packing, "BF16_DOT_BY_DEFAULT", True)
    first = packing.first_dot_hidden(weights)
    assert first % DOT_NR == 0 and first >= packing.DOT_MIN_HIDDEN[weights] > first - DOT_NR
    for H, dot in ((first - DOT_NR, False), (first, True)):
        q = nl.LSTM(8, H, num_layers=2).quantize(weights)
        assert all((layer.dot_layout() is not None) == dot for layer in q._layers), H
        assert (q._layers.quantized_step() is not None) == dot, H
        assert (q._layers.team_quantized_blocks(2)[3].size > 0) == dot, H
        assert (q._layers.team_quantized_projection(2)[0].size > 0) == dot, H
    assert packing.dot_default(weights, first - DOT_NR, dot=True)  # a caller may force it


def test_int8_takes_the_dot_layouts_on_every_cpu():
    # A model's int8 products are exact integer sums at every batch size or at
    # none (batch invariance), so the choice cannot follow the batch: int8
    # takes the dot layouts on every CPU (vpdpbusd with AVX512-VNNI, int16
    # pairs elsewhere), bfloat16 only where the CPU has vdpbf16ps.
    from numba_lstm.cpu import packing, simd

    H = packing.first_dot_hidden("int8")
    q = nl.LSTM(8, H, num_layers=2).quantize("int8")
    assert all(layer.dot_layout() is not None for layer in q._layers)
    assert q._layers.quantized_step() is not None
    H = packing.first_dot_hidden("bfloat16")
    q = nl.LSTM(8, H).quantize("bfloat16")
    assert (q._layers[0].dot_layout() is not None) == simd.HAS_BF16


def test_the_team_takes_an_int8_stack_only_where_its_blocks_fill_dot_panels(monkeypatch,
                                                                           dot_at_any_size):
    from numba_lstm import cpu
    from numba_lstm.cpu.dot_gemm import DOT_NR

    q = nl.LSTM(8, 2 * DOT_NR, num_layers=2).quantize("int8")
    layer = q._layers[0]

    class Threads:
        size = 2

    monkeypatch.setattr(cpu, "TEAM", Threads)
    monkeypatch.setattr(cpu, "BLOCKS_PER_THREAD", 1)
    assert cpu._team_blocks_take_the_dot(layer)  # U = DOT_NR: four whole panels
    Threads.size = 3  # U = ceil(2 DOT_NR / 3): 4U not a multiple of DOT_NR
    has_dot = layer.dot_layout() is not None
    assert cpu._team_blocks_take_the_dot(layer) == (not has_dot)
    assert cpu._team_can_run(q._layers, 10, 4) == (not has_dot)
    Threads.size = 4  # U = DOT_NR / 2: 4U = 2 DOT_NR
    assert cpu._team_blocks_take_the_dot(layer)
    float_layer = nl.LSTM(8, 2 * DOT_NR)._layers[0]
    Threads.size = 3
    assert cpu._team_blocks_take_the_dot(float_layer)


def test_bad_choices_say_what_is_allowed():
    module = nl.LSTM(3, 4)
    with pytest.raises(ValueError, match="'int8', 'bfloat16'"):
        module.quantize("fp8")
    q = module.quantize("int8")
    with pytest.raises(ValueError, match="already quantized"):
        q.quantize("bfloat16")
    with pytest.raises(ValueError, match="computes in float32"):
        q.to(dtype="float64")
    with pytest.raises(TypeError, match="no quantized form"):
        nl.Embedding(5, 3).quantize("int8")
    with pytest.raises(nl.StateDictError, match="stores float32 weights, the state_dict int8"):
        nl.LSTM(3, 4).load_state_dict(q.state_dict())
    with pytest.raises(nl.StateDictError, match="stores int8 weights, the state_dict float32"):
        q.load_state_dict(module.state_dict())
    mixed = dict(q.state_dict(), weight_hh_l0=module.state_dict()["weight_hh_l0"])
    del mixed["weight_hh_l0_scale"]
    with pytest.raises(ValueError, match="mixes weight formats"):
        nl.LSTM.from_state_dict(mixed)
    broken = q.state_dict()
    broken["weight_ih_l0_scale"] = broken["weight_ih_l0_scale"][:2]
    with pytest.raises(nl.StateDictError, match="weight_ih_l0_scale: expected float"):
        nl.LSTM.from_state_dict(broken)


# -- accuracy against the float module and torch's dynamic int8 -----------------------------
QUANTIZED_ROWS = ("S2", "S3", "S6", "S8", "S9")


def _errors(shape_id):
    shape = BY_ID[shape_id]
    sd, x = shape.state_dict(), shape.inputs()
    if shape.streaming:  # S8: a run of steps, each its own call, state carried
        x = np.random.default_rng(1).standard_normal((50, 1, shape.input_size)).astype(
            np.float32)
    module = nl.LSTM.from_state_dict(sd)
    want = module(x)[0]
    return sd, x, want, {w: float(np.abs(module.quantize(w)(x)[0] - want).max())
                         for w in FORMATS}


# S5 (I=256 inputs ~ N(0, 1), 1.6 million outputs) lands at 5.8e-3 with int8:
# per-row int8 rounding errors of the 256-wide W_ih, at the tail of that many
# outputs (docs/quantization.md). torch's qint8 is at 3.0e-2 there.
S5_INT8 = pytest.param("S5", "int8", marks=pytest.mark.xfail(
    strict=True, reason="per-row int8 W_ih error at S5 exceeds 5e-3 (5.9e-3 measured)"))


@pytest.mark.parametrize("shape_id,weights", [
    S5_INT8 if (s.id, w) == ("S5", "int8") else (s.id, w)
    for s in SHAPES for w in FORMATS])
def test_error_against_the_float_module_is_within_bounds(shape_id, weights):
    shape = BY_ID[shape_id]
    sd, x = shape.state_dict(), shape.inputs()
    if shape.streaming:
        x = np.random.default_rng(1).standard_normal((50, 1, shape.input_size)).astype(
            np.float32)
    module = getattr(nl, shape.family).from_state_dict(sd)
    error = float(np.abs(module.quantize(weights)(x)[0] - module(x)[0]).max())
    assert error <= BOUND[weights], error


@needs_torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("shape_id", QUANTIZED_ROWS)
def test_int8_error_is_at_most_half_of_torchs_dynamic_qint8(shape_id):
    shape = BY_ID[shape_id]
    sd, x, want, errors = _errors(shape_id)
    net = torch.nn.LSTM(shape.input_size, shape.hidden_size, shape.layers)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    # quantize_dynamic swaps submodules, so the LSTM goes in a container.
    qnet = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(net), {torch.nn.LSTM},
                                                  dtype=torch.qint8)[0]
    assert type(qnet) is not torch.nn.LSTM
    with torch.inference_mode():
        theirs = qnet(torch.from_numpy(x))[0].numpy()
    torch_error = float(np.abs(theirs - want).max())
    assert errors["int8"] <= 0.5 * torch_error, (errors["int8"], torch_error)


# -- the kernels that read the stored weights ----------------------------------------------
@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("layers", [1, 2])
def test_the_batch_1_team_reads_the_stored_weights(weights, layers, dot_at_any_size,
                                                   team_at_float_sizes):
    from numba_lstm import cpu

    if cpu.TEAM.size < 2:
        pytest.skip("the team needs two threads")
    rng = np.random.default_rng(4)
    module = _module("LSTM", rng, I=7, H=64, num_layers=layers)
    q = module.quantize(weights)
    x = rng.standard_normal((30, 1, 7)).astype(np.float32)
    first = q(x)[0]
    # Poison the float32 W_hh the other paths read: the batch-1 steps must not need
    # it. Where a dot kernel runs (int8 on AVX512-VNNI, bfloat16 on AVX512_BF16),
    # zero the widening kernel's copy too: the dot layout alone must give the numbers.
    for blocks in q._layers.__dict__["_team_blocks"].values():
        blocks[3][:] = np.nan
    dot = False
    for blocks in q._layers.__dict__["_team_quantized"].values():
        if blocks[3].size:
            blocks[0 if weights == "int8" else 1][:] = 0
            dot = True
    out, (h_n, c_n) = q(x)
    np.testing.assert_array_equal(out, first)
    if dot:  # x and h on their grids (the oracle below)
        want = _stream_oracle(_dequantized(q), x[:, 0], layers, 64, weights)
        np.testing.assert_allclose(out[:, 0], want, rtol=0, atol=2e-5)
        np.testing.assert_array_equal(h_n[-1], out[-1])
        return
    want_out, (want_h, want_c) = reference.recurrent("lstm", x.astype(np.float64),
                                                     _dequantized(q), layers)
    for got, want in ((out, want_out), (h_n, want_h), (c_n, want_c)):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("weights", FORMATS)
def test_the_widened_block_step_matches_the_float_one_on_the_same_values(weights):
    from numba import njit

    from numba_lstm.cpu.packing import pack_stack
    from numba_lstm.cpu.row_step import row_block_step

    @njit
    def widened(gx, w, scale, h, c, h_new, out):
        return row_block_step(gx, w, scale, h, c, h_new, out, False)

    @njit
    def plain(gx, w, h, c, h_new, out):
        return row_block_step(gx, w, None, h, c, h_new, out, False)

    rng = np.random.default_rng(5)
    H, n_blocks = 128, 2
    w_hh = rng.uniform(-0.1, 0.1, (4 * H, H)).astype(np.float32)
    stored = quant.store(weights, w_hh)
    values = quant.values(weights, stored)
    layer = (np.zeros((4 * H, 3), np.float32), values, None, None, None)
    stack = pack_stack([[layer]], np.float32, quantized=(weights, [[stored]]))
    w_i8, w_bf16, scale = stack.team_quantized_blocks(n_blocks)[:3]
    w_q = (w_i8 if weights == "int8" else w_bf16)[0, 1]
    w_f = stack.team_blocks(n_blocks)[3][0, 1]
    U = H // n_blocks
    gx = rng.standard_normal(4 * U).astype(np.float32)
    h = rng.standard_normal(H).astype(np.float32)
    c0 = rng.standard_normal(U).astype(np.float32)
    results = []
    for run in (lambda c, hn, o: widened(gx, w_q, scale[0, 1], h, c, hn, o),
                lambda c, hn, o: plain(gx, w_f, h, c, hn, o)):
        c, h_new, out = c0.copy(), np.zeros(U, np.float32), np.zeros(U, np.float32)
        assert run(c, h_new, out)
        np.testing.assert_array_equal(h_new, out)
        results.append((c, h_new))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)


# -- the int8 dot kernel (vpdpbusd on AVX512-VNNI, emulated elsewhere) ---------------------
def test_dpbusd_and_its_emulation_compute_the_same_sums():
    from numba import njit

    from numba_lstm.cpu.simd import (
        HAS_VNNI,
        I32,
        vdpbusd,
        vdpbusd_emulated,
        vload_quads,
        vsplat_quad,
        vstore1,
    )

    @njit
    def run(w, a, out, emulated):
        acc = vload_quads(w, 0, 0)  # any start: the sums add to it
        q, b = vload_quads(w, 1, 0), vsplat_quad(a, 0)
        vstore1(out, 0, vdpbusd_emulated(acc, b, q) if emulated else vdpbusd(acc, b, q))

    rng = np.random.default_rng(6)
    lanes = I32.lanes
    w = rng.integers(-128, 128, (2, 4 * lanes), dtype=np.int8)
    a = rng.integers(0, 256, 4, dtype=np.uint8)
    start = w[0].view(np.int32).astype(np.int64)
    want = start + (w[1].reshape(lanes, 4).astype(np.int64) * a.astype(np.int64)).sum(axis=1)
    for emulated in (True, False):
        if not emulated and not HAS_VNNI:
            continue  # the instruction needs AVX512-VNNI; the emulation runs anywhere
        out = np.zeros(lanes, np.int32)
        run(w, a, out, emulated)
        np.testing.assert_array_equal(out, want)


@functools.cache
def _row_quantizers():
    """Jitted quantize_rows and quantize_row, eight_bit an argument: compiled
    once per dot type (int8, bfloat16 pairs), not once per grid."""
    from numba import njit

    from numba_lstm.cpu import activation_grids

    return (njit(lambda x, lo, hi, s, dot, eight_bit:
                 activation_grids.quantize_rows(x, lo, hi, s, dot, eight_bit)),
            njit(lambda h, lo, hi, w_dot, eight_bit:
                 activation_grids.quantize_row(h, lo, hi, w_dot, eight_bit)))


@pytest.mark.parametrize("n", [5, 16, 37, 160])
@pytest.mark.parametrize("grid", ["int16", "int8", "bfloat16 split", "bfloat16"])
def test_a_block_of_rows_gets_each_rows_own_bytes(grid, n):
    # quantize_rows reads a block in place (no row views; int8's grids in
    # explicit vectors, the last one masked), quantize_row one row at a time
    # (batch 1, compiled loops): a row's bytes and scale must not depend on
    # which ran. n: a tail alone, whole vectors, both.
    bf16 = grid.startswith("bfloat16")
    eight_bit = grid in ("int8", "bfloat16")
    w_dot = np.zeros((1, 1, 1, 1), np.uint8 if bf16 else np.int8)
    dot = (w_dot, np.zeros((1, 1), np.int32), np.zeros((1, 1), np.float32))
    rows, row = _row_quantizers()

    def block(x, lo, hi, s):
        return rows(x, lo, hi, s, dot, eight_bit)

    def one(h, lo, hi):
        return row(h, lo, hi, w_dot[0], eight_bit)

    rng = np.random.default_rng(11)
    x = (rng.standard_normal((6, n)) * rng.uniform(0.01, 3, (6, 1))).astype(np.float32)
    x[2] = 0
    width = (-(-n // 4) * 4 + 4) * (2 if bf16 else 1)  # padded; a bfloat16 takes two bytes
    lo, hi = np.full((6, width), 7, np.uint8), np.full((6, width), 7, np.uint8)
    s = np.zeros(6, np.float32)
    assert block(x, lo, hi, s) == 0  # every row finite
    for r in range(6):
        lo1, hi1 = np.full(width, 9, np.uint8), np.full(width, 9, np.uint8)
        assert one(x[r], lo1, hi1) == s[r]
        np.testing.assert_array_equal(lo1, lo[r])
        np.testing.assert_array_equal(hi1, hi[r])
    # Rows that are not finite: counted, scale -1, the bytes of a zero row (the
    # padding's: each kernel multiplies them to 0) while the caller takes their
    # float products; the rows after them still quantized.
    before_lo, before_hi, before_s = lo.copy(), hi.copy(), s.copy()
    x[1, n // 2], x[4, n - 1] = np.nan, -np.inf
    assert block(x, lo, hi, s) == 2
    assert s[1] == s[4] == -1
    zero_hi = 0 if bf16 else 128  # int8's high byte is offset by 128
    for r in (1, 4):
        assert (lo[r] == 0).all() and (hi[r] == zero_hi).all()
    keep = [0, 2, 3, 5]
    np.testing.assert_array_equal(lo[keep], before_lo[keep])
    np.testing.assert_array_equal(hi[keep], before_hi[keep])
    np.testing.assert_array_equal(s[keep], before_s[keep])


@pytest.mark.parametrize("bits", [16, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_go_to_int16_bytes_on_a_per_row_grid(bits, dtype):
    # quantize_row16 (x) and quantize_row8 (h, and the layers' inputs above the
    # first): v = step * round(levels * h / max|h|), split into vpdpbusd's bytes.
    from numba import njit

    from numba_lstm.cpu import activation_grids

    levels, step = {16: (32767, 1), 8: (127, 256)}[bits]
    grid = activation_grids.quantize_row16 if bits == 16 else activation_grids.quantize_row8
    quantize = njit(lambda h, lo, hi: grid(h, lo, hi))
    rng = np.random.default_rng(7)
    h = rng.uniform(-0.9, 0.9, 37).astype(dtype)
    lo, hi = np.empty(40, np.uint8), np.empty(40, np.uint8)
    s = quantize(h, lo, hi)
    assert s == dtype(np.abs(h).max() / dtype(levels * step))
    v = (hi.astype(np.int32) - 128) * 256 + lo
    assert (v % step == 0).all() and np.abs(v).max() == levels * step
    assert np.abs(v[:37] * np.float64(s) - h).max() <= s * step * 0.5 * (1 + 1e-6)
    assert (v[37:] == 0).all()
    if bits == 8:
        assert (lo == 0).all()  # the sums of the high bytes are the whole product
    assert quantize(np.zeros(4, dtype), lo[:4], hi[:4]) == 0
    assert ((hi[:4].astype(np.int32) - 128) * 256 + lo[:4] == 0).all()
    for bad in (np.nan, np.inf):
        assert quantize(np.array([0.5, bad], dtype), lo[:2], hi[:2]) == -1
        assert quantize(np.array([0.5, bad, 0.25], dtype), lo[:3], hi[:3]) == -1  # not last


@functools.cache
def _tile_and_rows(weights):
    """A jitted run(x, w_dot, offset, scale, lo, hi, s_rows, fast, slow, reverse,
    split): each row of x put on its grid (int8: h's 8 bits; bfloat16: one
    part, or two with split), then fast += the rows through gemm_dot_acc's
    tiles and slow += them a row at a time (row_dot_acc). Compiled once for
    every R and direction (a test-local function compiled once per case)."""
    from numba import njit

    from numba_lstm.cpu import activation_grids, dot_gemm

    if weights == "int8":
        @njit
        def run(x, w_dot, offset, scale, lo, hi, s_rows, fast, slow, reverse, split):
            for r in range(x.shape[0]):
                s_rows[r] = activation_grids.quantize_row8(x[r], lo[r], hi[r])
            dot_gemm.gemm_dot_acc(fast, lo, hi, s_rows, w_dot, offset, scale, reverse, True)
            for r in range(x.shape[0]):
                dot_gemm.row_dot_acc(slow[r], w_dot, offset, scale, s_rows[r], lo[r], hi[r])
    else:
        @njit
        def run(x, w_dot, offset, scale, lo, hi, s_rows, fast, slow, reverse, split):
            for r in range(x.shape[0]):
                s_rows[r] = activation_grids.quantize_row_bf16(x[r], lo[r], hi[r], split)
            dot_gemm.gemm_dot_acc(fast, lo, hi, s_rows, w_dot, offset, scale, reverse,
                                  not split)
            for r in range(x.shape[0]):
                dot_gemm.row_dot_acc(slow[r], w_dot, offset, scale, s_rows[r], lo[r], hi[r])
    return run


@pytest.mark.parametrize("R", [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 14, 15, 20])
@pytest.mark.parametrize("reverse", [False, True])
def test_the_high_byte_kernel_gives_the_two_byte_kernels_bits(R, reverse):
    # gemm_dot_acc's high_only (8, 6, 4, then 3 rows at a time, the rest as before) on
    # rows quantize_row8 made, against the same rows through the two-byte
    # kernels (row_dot_acc a row at a time), on the host's micro-kernel.
    from numba_lstm.cpu import dot_gemm
    from numba_lstm.cpu.packing import _pack_quads

    run = _tile_and_rows("int8")
    rng = np.random.default_rng(R)
    # K4's padding, three panels; then six panels of K = 1030: more than one
    # group of panels (dot_gemm.panel_group), the last one partial.
    for K, P in ((70, 3), (1030, 6)):
        N = P * dot_gemm.DOT_NR
        q, scale = quant.int8_rows(rng.uniform(-0.1, 0.1, (N, K)).astype(np.float32))
        w_t = np.ascontiguousarray(q.T)
        w_dot = _pack_quads(w_t)
        assert (P > dot_gemm.panel_group(w_dot)) == (K > 70)
        x = rng.uniform(-1, 1, (R, K)).astype(np.float32)
        K4 = -(-K // 4) * 4
        lo, hi = np.empty((R, K4), np.uint8), np.empty((R, K4), np.uint8)
        start = rng.standard_normal((R, N)).astype(np.float32)
        fast, slow = start.copy(), start.copy()
        run(x, w_dot, (128 * w_t.astype(np.int32).sum(axis=0)).astype(np.int32), scale,
            lo, hi, np.empty(R, np.float32), fast, slow, reverse, False)
        np.testing.assert_array_equal(fast, slow)
        grid = np.stack([_int8_grid(row) for row in x])
        want = start + grid @ quant.int8_values(q, scale).T.astype(np.float64)
        np.testing.assert_allclose(fast, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernel", ["bytes", "pairs"])
def test_both_dot_micro_kernels_sum_every_column_exactly(kernel):
    # Every dot kernel is written in dot_row, dot_quads and dot_sum; the host
    # compiles one set (vpdpbusd's bytes with AVX512-VNNI, else int16 pairs).
    # Both sets here, on any CPU (vpdpbusd emulated where it is missing): one
    # panel's columns against int64 sums, with scales of 1: dot_sum rounds the
    # exact integer to float32 (once for vpdpbusd's sums, combined in one FMA;
    # the pairs add their two half-sums in float32, at most two ulps).
    from numba import njit

    from numba_lstm.cpu import dot_gemm
    from numba_lstm.cpu.packing import _pack_quads
    from numba_lstm.cpu.simd import vdpbusd_emulated, vload_quads, vsplat, vstore1

    row, quads, total = {"bytes": (dot_gemm._row_bytes, dot_gemm._quads_bytes,
                                   dot_gemm._sum_bytes),
                         "pairs": (dot_gemm._row_pairs, dot_gemm._quads_pairs,
                                   dot_gemm._sum_pairs)}[kernel]
    if kernel == "bytes" and not dot_gemm.HAS_VNNI:
        from numba_lstm.cells import rebind

        quads = njit(inline="always")(rebind(quads.py_func, {"vdpbusd": vdpbusd_emulated},
                                             "__emulated"))
    L, NR = dot_gemm.DOT_LANES, dot_gemm.DOT_NR

    @njit
    def panel_sums(w_dot, lo, hi, offset, ones, out):
        zero = vsplat(np.int32(0))
        l0 = h0 = l1 = h1 = zero
        for k in range(w_dot.shape[1]):
            a, b = row(lo, hi, k)
            l0, h0, l1, h1 = quads(a, b, vload_quads(w_dot[0], k, 0),
                                   vload_quads(w_dot[0], k, 4 * L), l0, h0, l1, h1)
        vstore1(out, 0, total(l0, h0, offset, ones, np.float32(1), 0))
        vstore1(out, L, total(l1, h1, offset, ones, np.float32(1), L))

    rng = np.random.default_rng(9)
    K = 24
    w = rng.integers(-127, 128, (K, NR), dtype=np.int8)
    w[:, 0] = 127  # the extremes of both operands
    v = rng.integers(-32767, 32768, K)
    v[:4] = (32767, -32767, 0, -1)
    lo, hi = (v & 255).astype(np.uint8), ((v >> 8) + 128).astype(np.uint8)
    offset = (128 * w.astype(np.int32).sum(axis=0)).astype(np.int32)
    out = np.zeros(NR, np.float32)
    panel_sums(_pack_quads(w), lo, hi, offset, np.ones(NR, np.float32), out)
    exact = v.astype(np.int64) @ w.astype(np.int64)
    np.testing.assert_allclose(out, exact, rtol=2.4e-7, atol=0)
    if kernel == "bytes":
        np.testing.assert_array_equal(out, exact.astype(np.float32))


@pytest.mark.parametrize("weights", FORMATS)
def test_the_dot_block_step_matches_its_numpy_oracle(weights):
    # On the host's micro-kernel (the tests above check each against exact sums).
    from numba import njit

    from numba_lstm.cpu import row_step
    from numba_lstm.cpu.packing import _pack_pairs, _pack_quads

    step = row_step._row_block_step_dot32

    @njit
    def run(gx, w_dot, offset, scale, h, lo, hi, c, h_new, out, reverse):
        s_h = row_step.quantize_row(h, lo, hi, w_dot, True)  # the grid the step puts h on
        step(gx, w_dot, offset, scale, s_h, lo, hi, c, h_new, out, reverse)

    rng = np.random.default_rng(8)
    H, U = 70, 2 * row_step.DOT_NR  # K not a multiple of 4: the padding is exercised
    w = rng.uniform(-0.1, 0.1, (4 * U, H)).astype(np.float32)
    if weights == "int8":
        q, scale = quant.int8_rows(w)
        w_t = np.ascontiguousarray(q.T)  # (H, 4U)
        w_dot, offset = _pack_quads(w_t), (128 * w_t.astype(np.int32).sum(axis=0))
        values, h_grid = quant.int8_values(q, scale), _int8_grid
    else:
        bits = quant.bfloat16_bits(w)
        w_dot, offset = _pack_pairs(np.ascontiguousarray(bits.T)), np.zeros(4 * U)
        scale, values, h_grid = np.ones(4 * U, np.float32), quant.bfloat16_values(bits), _bf16
    gx = rng.standard_normal(4 * U).astype(np.float32)
    h = rng.uniform(-1, 1, H).astype(np.float32)
    c0 = rng.standard_normal(U).astype(np.float32)
    k_bytes = 4 * w_dot.shape[1]
    lo, hi = np.empty(k_bytes, np.uint8), np.empty(k_bytes, np.uint8)
    c, h_new, out = c0.copy(), np.zeros(U, np.float32), np.zeros(U, np.float32)
    run(gx, w_dot, offset.astype(np.int32), scale, h, lo, hi, c, h_new, out, False)
    # panels last to first (a recurrence's odd steps, AMX's one-row tile too): the same bits
    backwards = c0.copy(), np.zeros(U, np.float32), np.zeros(U, np.float32)
    run(gx, w_dot, offset.astype(np.int32), scale, h, lo, hi, *backwards, True)
    for got, want in zip(backwards, (c, h_new, out), strict=True):
        np.testing.assert_array_equal(got, want)
    # The oracle: h on the same grid, the dequantized weights, float64.
    z = gx + h_grid(h) @ values.T.astype(np.float64)
    i, f, g, o = (z[k * U:(k + 1) * U] for k in range(4))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    want_c = sig(f) * c0 + sig(i) * np.tanh(g)
    want_h = sig(o) * np.tanh(want_c)
    np.testing.assert_allclose(c, want_c, rtol=0, atol=2e-6)
    np.testing.assert_allclose(h_new, want_h, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(out, h_new)


# -- the bfloat16 dot kernel (vdpbf16ps on AVX512_BF16, emulated elsewhere) --------------
def _bf16_pairs(rng, shape, scale):
    """bfloat16 bits (uint16) of N(0, scale) values, and those values."""
    bits = quant.bfloat16_bits((rng.standard_normal(shape) * scale).astype(np.float32))
    return bits, quant.bfloat16_values(bits)


def test_dpbf16_and_its_emulation_compute_the_same_sums():
    # Each float32 lane plus its odd pair's product, rounded, then the even
    # pair's, rounded: vdpbf16ps's definition, which the emulation follows.
    from numba import njit

    from numba_lstm.cpu.simd import F32, HAS_BF16, vdpbf16, vdpbf16_emulated, vload1, vstore1

    @njit
    def run(acc, a, b, out, emulated):
        x, y = vload1(a.view(np.int32), 0), vload1(b.view(np.int32), 0)
        start = vload1(acc, 0)
        vstore1(out, 0, vdpbf16_emulated(start, x, y) if emulated else vdpbf16(start, x, y))

    rng = np.random.default_rng(21)
    lanes = F32.lanes
    for scale in (1e-3, 1.0, 1e3):
        acc = (rng.standard_normal(lanes) * scale).astype(np.float32)
        a_bits, a = _bf16_pairs(rng, 2 * lanes, 1.0)
        b_bits, b = _bf16_pairs(rng, 2 * lanes, scale)
        want = (acc + a[1::2] * b[1::2]).astype(np.float32)  # products exact in float32
        want = (want + a[0::2] * b[0::2]).astype(np.float32)
        for emulated in (True, False):
            if not emulated and not HAS_BF16:
                continue  # the instruction needs AVX512_BF16; the emulation runs anywhere
            out = np.zeros(lanes, np.float32)
            run(acc, a_bits, b_bits, out, emulated)
            np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("split", [False, True])
def test_rows_go_to_bfloat16_pairs(split):
    # quantize_row_bf16: hi the row's bfloat16 (nearest even, as quantize
    # stores weights), lo with ``split`` (x) what that left, rounded again; h's
    # lo stays 0.
    from numba import njit

    from numba_lstm.cpu import activation_grids

    quantize = njit(lambda h, lo, hi, split: activation_grids.quantize_row_bf16(h, lo, hi, split))
    rng = np.random.default_rng(22)
    h = (rng.standard_normal(37) * 3).astype(np.float32)
    lo, hi = np.full(80, 7, np.uint8), np.full(80, 7, np.uint8)  # 40 bfloat16, 3 of padding
    assert quantize(h, lo, hi, split) == 1
    hi16, lo16 = hi.view(np.uint16), lo.view(np.uint16)
    np.testing.assert_array_equal(hi16[:37], quant.bfloat16_bits(h))
    rest = h - quant.bfloat16_values(hi16[:37])
    np.testing.assert_array_equal(lo16[:37], quant.bfloat16_bits(rest) if split else 0)
    assert (hi16[37:] == 0).all() and (lo16[37:] == 0).all()
    if split:  # 16 bits of each value
        total = quant.bfloat16_values(hi16[:37]).astype(np.float64) + quant.bfloat16_values(
            lo16[:37])
        assert (np.abs(total - h) <= np.abs(h) * 2.0 ** -16).all()
    for bad in (np.nan, np.inf):
        assert quantize(np.array([0.5, bad, 0.25], np.float32), lo[:6], hi[:6], split) == -1


@pytest.mark.parametrize("R", [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 14, 15, 20])
@pytest.mark.parametrize("reverse", [False, True])
def test_the_bfloat16_kernels_give_a_row_the_same_bits_alone_or_in_a_tile(R, reverse):
    # Batch invariance rests on this: a column's sum is its hi chain over k
    # from 0, then its lo chain, then out + (hi + lo), in every kernel. The
    # many-row tiles (8, 6, 4, then 3 rows, on hi alone; 4 rows on hi and lo) against
    # one row at a time (row_dot_acc), bitwise; then against NumPy. Where the
    # CPU has AMX-BF16 and K fills whole tiles (K = 512), every row takes the
    # tiles: many rows a tile against one-row tiles.
    from numba_lstm.cpu import dot_gemm
    from numba_lstm.cpu.packing import _pack_pairs

    run = _tile_and_rows("bfloat16")
    rng = np.random.default_rng(R)
    # Three panels; then six of K = 1030: more than one group of panels
    # (dot_gemm.panel_group), the last one partial; then K = 512.
    for K, P in ((70, 3), (1030, 6), (512, 2)):
        N = P * dot_gemm.DOT_NR
        bits, w = _bf16_pairs(rng, (K, N), 0.1)
        w_dot = _pack_pairs(bits)
        assert (P > dot_gemm.panel_group(w_dot)) == (K == 1030)
        assert dot_gemm.every_row_on_tiles(w_dot) == (K == 512 and HAS_AMX_BF16)
        x = rng.standard_normal((R, K)).astype(np.float32)
        for split, grid in ((False, _bf16), (True, _bf16_split)):
            lo, hi = np.empty((R, 2 * K), np.uint8), np.empty((R, 2 * K), np.uint8)
            start = rng.standard_normal((R, N)).astype(np.float32)
            fast, slow = start.copy(), start.copy()
            run(x, w_dot, np.zeros(N, np.int32), np.ones(N, np.float32), lo, hi,
                np.empty(R, np.float32), fast, slow, reverse, split)
            np.testing.assert_array_equal(fast, slow)
            want = start + np.stack([grid(row) for row in x]) @ w.astype(np.float64)
            np.testing.assert_allclose(fast, want, rtol=0, atol=1e-5)


# -- the int8 streaming step (one call per step, the dot kernel for both products) ---------
def _int16_grid(v):
    """v on quantize_row16's grid (float64): what the dot kernel multiplies."""
    s = np.abs(v).max() / 32767
    return np.rint(v / s) * s if s > 0 else v


def _int8_grid(v):
    """v on quantize_row8's grid (float64), the steps rounded in float32 as the
    kernel rounds them: one step of this grid moves a gate by ~1e-3."""
    v = np.asarray(v, np.float32)
    amax = np.abs(v).max()
    if amax == 0:
        return v.astype(np.float64)
    steps = np.rint(v * (np.float32(127) / amax))  # float32 throughout
    return steps.astype(np.float64) * (float(amax) / 127)


def _bf16(v):
    """v rounded to bfloat16, nearest even (float64): h, and the inputs of the
    layers above the first, on the bfloat16 dot kernels."""
    return quant.bfloat16_values(quant.bfloat16_bits(np.asarray(v, np.float32))).astype(
        np.float64)


def _bf16_split(v):
    """v as the bfloat16 kernels take x: its bfloat16, plus the rest rounded again."""
    v = np.asarray(v, np.float32)
    hi = _bf16(v)
    return hi + _bf16(v - hi.astype(np.float32))


# A dot kernel's (x's grid, h's grid) by the stored format.
GRIDS = {"int8": (_int16_grid, _int8_grid), "bfloat16": (_bf16_split, _bf16)}


def _stream_oracle(params, xs, L, H, weights="int8"):
    """NumPy steps of an int8 LSTM stack on the dot kernel's terms: x on the
    int16 grid, h and the inputs of the layers above the first (the h below)
    on the 8-bit one (bfloat16: GRIDS' roundings), the dequantized weights,
    float64."""
    x_grid, h_grid = GRIDS[weights]
    h, c = np.zeros((L, H)), np.zeros((L, H))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    outs = []
    for x in xs:
        below = x.astype(np.float64)
        for k in range(L):
            z = (params[f"bias_ih_l{k}"] + params[f"bias_hh_l{k}"]
                 + (h_grid if k else x_grid)(below) @ params[f"weight_ih_l{k}"].T
                 + h_grid(h[k]) @ params[f"weight_hh_l{k}"].T)
            i, f, g, o = (z[j * H:(j + 1) * H] for j in range(4))
            c[k] = sig(f) * c[k] + sig(i) * np.tanh(g)
            h[k] = below = sig(o) * np.tanh(c[k])
        outs.append(below.copy())
    return np.array(outs)


@pytest.fixture
def dot_streaming(monkeypatch, dot_at_any_size):
    """The dot kernels' layouts built on any CPU and at any size, int8's and
    bfloat16's, so that they run on its micro-kernel (dot_gemm.PAIRS or
    vpdpbusd; vdpbf16ps or its emulation), including where the dispatch alone
    prefers the float panels."""
    from numba_lstm.cpu import packing

    monkeypatch.setattr(packing, "DOT_BY_DEFAULT", True)
    monkeypatch.setattr(packing, "BF16_DOT_BY_DEFAULT", True)


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("L", [1, 3])
def test_streaming_step_on_the_dot_kernel_matches_its_numpy_oracle(dot_streaming, L, weights):
    from numba_lstm.cpu.row_step import DOT_NR

    rng = np.random.default_rng(11 + L)
    I, H = 13, DOT_NR  # I not a multiple of 4: the padding is read
    q = _module("LSTM", rng, I, H, num_layers=L).quantize(weights)
    assert q._layers.quantized_step() is not None
    xs = rng.standard_normal((9, 1, 1, I)).astype(np.float32)
    stream = q.stream()
    got = np.array([stream(x)[0, 0] for x in xs])
    want = _stream_oracle(_dequantized(q), xs[:, 0, 0], L, H, weights)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    # The state it carries is the oracle's too: the next chunk continues from it.
    h_n, c_n = stream.state
    assert h_n.shape == c_n.shape == (L, 1, H)
    np.testing.assert_allclose(h_n[-1, 0], want[-1], rtol=0, atol=2e-5)


@pytest.mark.parametrize("weights", FORMATS)
def test_streaming_step_falls_back_to_the_float_kernel_on_nan(dot_streaming, weights):
    from numba_lstm.cpu.row_step import DOT_NR

    rng = np.random.default_rng(12)
    q = _module("LSTM", rng, 8, DOT_NR, num_layers=2).quantize(weights)
    stream = q.stream()
    x = rng.standard_normal((1, 1, 8)).astype(np.float32)
    assert np.isfinite(stream(x)).all()
    x[0, 0, 3] = np.nan
    assert np.isnan(stream(x)).all()  # NaN propagates, as in torch and the float path
    assert np.isnan(stream(np.ones_like(x))).all()  # and stays in the state


def test_int8_streaming_step_without_the_dot_layout_runs_the_float_values():
    # H not a multiple of the dot kernel's panel: the stepper runs the float32
    # values of the int8 weights, exactly as the dequantized float module does.
    rng = np.random.default_rng(13)
    q = _module("LSTM", rng, 5, 6, num_layers=2).quantize("int8")
    assert q._layers.quantized_step(dot=True) is None
    f = nl.LSTM(5, 6, num_layers=2)
    f.load_state_dict({k: v.astype(np.float32) for k, v in _dequantized(q).items()})
    xs = rng.standard_normal((4, 1, 1, 5)).astype(np.float32)
    sq, sf = q.stream(), f.stream()
    for x in xs:
        np.testing.assert_allclose(sq(x), sf(x), rtol=0, atol=1e-6)


@pytest.fixture
def team_at_float_sizes(monkeypatch):
    """The team takes a stack on AMX tiles from the float stacks' size of step
    (TEAM_MIN_MACS_PER_STEP), so that the small stacks of the team's tests
    reach it on an AMX-BF16 host too."""
    monkeypatch.setattr(nl.cpu, "TEAM_MIN_MACS_PER_STEP_ON_TILES", nl.cpu.TEAM_MIN_MACS_PER_STEP)


def _team_hidden_size(dot_nr):
    """The smallest H whose blocks fill whole dot panels and whose steps the team
    takes at batch 1 (H = 64 either way on AVX-512, 32 columns a panel, and AVX2, 16)."""
    unit = nl.cpu.TEAM.size * dot_nr
    H = unit
    while 4 * H * H < nl.cpu.TEAM_MIN_MACS_PER_STEP:
        H += unit
    return H


@pytest.mark.skipif(nl.cpu.TEAM.size < 2, reason="one thread: no team")
@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("L", [1, 2])
def test_team_at_batch_1_on_the_dot_kernels_matches_its_numpy_oracle(dot_streaming, L, weights,
                                                                     team_at_float_sizes):
    # The team's input projection (row chunks through gemm_dot_acc, 8 and 4
    # rows a tile plus the rest: T=70) and its W_hh step, int8 x x's int16 and
    # h's 8 bits, or bfloat16 x x's two bfloat16 and h's one.
    from numba_lstm.cpu.row_step import DOT_NR

    rng = np.random.default_rng(14 + L)
    I, H, T = 13, _team_hidden_size(DOT_NR), 70
    q = _module("LSTM", rng, I, H, num_layers=L).quantize(weights)
    assert nl.cpu._team_preferred(q._layers, T, 1)
    n_blocks = nl.cpu.TEAM.size * nl.cpu.BLOCKS_PER_THREAD
    assert q._layers.team_quantized_projection(n_blocks)[0].shape[0] == n_blocks
    x = rng.standard_normal((T, 1, I)).astype(np.float32)
    out, _ = q(x)
    want = _stream_oracle(_dequantized(q), x[:, 0], L, H, weights)
    np.testing.assert_allclose(out[:, 0], want, rtol=0, atol=2e-5)
    x[40, 0, 2] = np.nan  # a row chunk with a NaN takes the float panels
    out, _ = q(x)
    assert np.isnan(out[40:]).all() and np.isfinite(out[:40]).all()


@pytest.mark.skipif(nl.cpu.TEAM.size < 2, reason="one thread: no team")
@pytest.mark.parametrize("weights", FORMATS)
def test_team_at_batch_3_on_the_dot_kernels_matches_its_numpy_oracle(dot_streaming,
                                                                     monkeypatch, weights,
                                                                     team_at_float_sizes):
    # Batch > 1: each block step quantizes every row's h on its own grid and
    # runs gemm_dot_acc (3 rows: the 1-row rest); a row's numbers are those it
    # gets alone, so the oracle runs row by row. (Layouts this small take the
    # batch split by default: the team here as on larger ones.)
    from numba_lstm.cpu.row_step import DOT_NR

    monkeypatch.setattr(nl.cpu, "batch_split_preferred", lambda layers, batch: False)
    rng = np.random.default_rng(16)
    I, H, T, B = 9, _team_hidden_size(DOT_NR), 30, 3
    q = _module("LSTM", rng, I, H, num_layers=2).quantize(weights)
    assert nl.cpu._team_preferred(q._layers, T, B)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    out, _ = q(x)
    params = _dequantized(q)
    for b in range(B):
        want = _stream_oracle(params, x[:, b], 2, H, weights)
        np.testing.assert_allclose(out[:, b], want, rtol=0, atol=2e-5)
    alone, _ = q(x[:, 1:2])
    np.testing.assert_allclose(alone[:, 0], out[:, 1], rtol=0, atol=1e-6)
    # The dot kernels ran: without their layouts the same weights give other bits.
    from numba_lstm.cpu import packing

    monkeypatch.setattr(packing, "DOT_BY_DEFAULT", False)
    monkeypatch.setattr(packing, "BF16_DOT_BY_DEFAULT", False)
    widened = _module("LSTM", np.random.default_rng(16), I, H, num_layers=2).quantize(weights)
    assert not np.array_equal(widened(x)[0], out)


@pytest.mark.skipif(nl.cpu.TEAM.size < 2, reason="one thread: no team")
@pytest.mark.parametrize("weights", FORMATS)
def test_small_dot_layouts_split_the_batch_below_16_with_the_teams_bits(dot_streaming,
                                                                       monkeypatch, weights,
                                                                       team_at_float_sizes):
    # Below batch 16 a stack whose every W_hh dot layout is at most a sixth of
    # one core's L2 takes the batch split where a thread gets two rows or
    # more; a larger one, one row a thread, or float weights stay on the team.
    # Both give a row the same bits.
    from numba_lstm import cpu
    from numba_lstm.cpu.row_step import DOT_NR

    n = cpu.TEAM.size
    two_rows = 2 * n - 1  # the smallest batch that gives a thread two rows
    if two_rows >= cpu.GEMM_STEPS_MIN_BATCH:
        pytest.skip("too many threads for two rows a thread below batch 16")
    rng = np.random.default_rng(19)
    I, H, T = 9, _team_hidden_size(DOT_NR), 20
    q = _module("LSTM", rng, I, H, num_layers=2).quantize(weights)
    read = q._layers[0].dot_layout()[0][0].nbytes
    fits = cpu.BATCH_SPLIT_MAX_L2_SHARE * read
    for l2, B, expected in ((fits, two_rows, "layers"), (fits - 1, two_rows, "team"),
                            (fits, n, "team"), (0, two_rows, "team"), (fits, 15, "layers")):
        monkeypatch.setattr(cpu, "l2_bytes", lambda l2=l2: l2)
        assert cpu._pick("stack", None, q._layers, T, B).name == expected, (l2, B)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        out, (h_n, c_n) = q(x)
        team = cpu.forward(q._layers, x, None, None, None, "team")
        for got, want in zip((out, h_n, c_n), team, strict=True):
            np.testing.assert_array_equal(got, want)
    float_module = _module("LSTM", rng, I, H, num_layers=2)
    assert cpu._pick("stack", None, float_module._layers, T, two_rows).name == "team"


@pytest.mark.skipif(nl.cpu.TEAM.size < 2, reason="one thread: no team")
@pytest.mark.parametrize("weights", FORMATS)
def test_stacks_on_amx_tiles_take_the_team_from_more_multiply_adds_a_step(dot_streaming,
                                                                         monkeypatch, weights):
    # Where the steps multiply W_hh on AMX tiles at every row (faked here
    # both ways), the team takes a stack from TEAM_MIN_MACS_PER_STEP_ON_TILES
    # multiply-adds a step, B * 4H * H; elsewhere from TEAM_MIN_MACS_PER_STEP.
    from numba_lstm import cpu
    from numba_lstm.cpu.row_step import DOT_NR

    assert cpu.TEAM_MIN_MACS_PER_STEP_ON_TILES > cpu.TEAM_MIN_MACS_PER_STEP
    monkeypatch.setattr(cpu, "batch_split_preferred", lambda layers, batch: False)
    H = _team_hidden_size(DOT_NR)
    q = _module("LSTM", np.random.default_rng(21), 9, H, num_layers=2).quantize(weights)
    macs = q._layers[0].w_hh.size  # a step's at batch 1
    assert macs >= cpu.TEAM_MIN_MACS_PER_STEP
    on_tiles = -(-cpu.TEAM_MIN_MACS_PER_STEP_ON_TILES // macs)  # the least batch there
    assert on_tiles < cpu.GEMM_STEPS_MIN_BATCH
    for tiles, B, expected in ((False, 1, "team"), (True, 1, "layers"),
                               (True, on_tiles - 1, "layers"), (True, on_tiles, "team")):
        monkeypatch.setattr(cpu, "_steps_on_tiles", lambda layer, tiles=tiles: tiles)
        assert cpu._pick("stack", None, q._layers, 20, B).name == expected, (tiles, B)


@pytest.mark.skipif(nl.cpu.TEAM.size < 2, reason="one thread: no team")
@pytest.mark.parametrize("weights", FORMATS)
def test_a_quantized_gru_on_the_team_gives_the_layer_loops_bits(dot_streaming, monkeypatch,
                                                                weights, team_at_float_sizes):
    # The team's quantized job with the GRU cell bound in: h's products summed
    # into a scratch row with b_hn, the same dot kernels and grids as the
    # layer loop's, so the same bits at batch 1 and 3 (I = 13: K4's padding);
    # a row that is not finite moves no other row.
    from numba_lstm import cpu
    from numba_lstm.cpu.row_step import DOT_NR

    monkeypatch.setattr(cpu, "batch_split_preferred", lambda layers, batch: False)
    rng = np.random.default_rng(18)
    I, H, T = 13, 2 * _team_hidden_size(DOT_NR), 40  # 3H x H past TEAM_MIN_MACS_PER_STEP
    q = _module("GRU", rng, I, H, num_layers=2).quantize(weights)
    for B in (1, 3):
        assert cpu._team_can_run(q._layers, T, B) and cpu._team_preferred(q._layers, T, B)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        team = _team_gives_the_layer_loops_bits(q._layers, x)
    x[7, 1, 3] = np.nan
    bad = cpu.forward(q._layers, x, None, None, np.full(B, T, np.int64), "team")[0]
    assert np.isnan(bad[7:, 1]).all()
    np.testing.assert_array_equal(np.delete(bad, 1, axis=1), np.delete(team[0], 1, axis=1))


@pytest.mark.skipif(nl.cpu.TEAM.size < 2, reason="one thread: no team")
@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("family", ["LSTM", "GRU"])
def test_quantized_two_direction_layers_on_the_team_give_the_layer_loops_bits(
        family, weights, dot_streaming, monkeypatch):
    # Where one direction's stored W_hh fills one core's L2 or passes it
    # (faked here), the team's share of it fitting or not, each
    # direction runs on the team as a stack of its own; where the L3 feeds
    # each core fast (faked both ways), only below three rows. The second
    # layer's input is the first's h: on h's grid, as the layer loop puts it
    # (on x's, rows moved by 1e-4 with the batch size), so the bits are the
    # layer loop's, lengths and hx too.
    from numba_lstm import cpu
    from numba_lstm.cpu.row_step import DOT_NR

    rng = np.random.default_rng(20)
    I, H, T = 13, cpu.TEAM.size * DOT_NR, 9
    q = _module(family, rng, I, H, num_layers=2, bidirectional=True).quantize(weights)
    layer = q._layers[1]
    w = layer.stored[1][0][0].nbytes
    share = -(-w // cpu.TEAM.size)
    assert cpu.DOT_DIRECTION_A_THREAD_MIN_BATCH == 3
    for fast, l2, B, on_team in ((False, w - 1, 3, True), (False, w - 1, 1, True),
                                 (False, w, 3, True), (False, w + 1, 3, False),
                                 (False, share - 1, 3, True),
                                 (False, share - 1, 1, True), (False, w - 1, 15, True),
                                 (True, w - 1, 3, False), (True, w - 1, 15, False),
                                 (True, w - 1, 2, True), (True, w - 1, 1, True),
                                 (True, share - 1, 2, True), (True, share - 1, 1, True)):
        monkeypatch.setattr(cpu, "l2_bytes", lambda l2=l2: l2)
        monkeypatch.setattr(cpu, "l3_feeds_each_core_fast", lambda fast=fast: fast)
        picked = cpu._pick("layer", None, layer, T, B).name
        assert (picked == "team_directions") == on_team, (fast, l2, B, picked)
    monkeypatch.setattr(cpu, "l3_feeds_each_core_fast", lambda: False)
    for B, lengths in ((1, None), (3, np.array([9, 4, 7]))):
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        h0 = rng.standard_normal((4, B, H)).astype(np.float32)
        hx = (h0, rng.standard_normal((4, B, H)).astype(np.float32)) if family == "LSTM" else h0
        monkeypatch.setattr(cpu, "l2_bytes", lambda: w - 1)
        team = _arrays(q(x, hx, lengths=lengths))
        monkeypatch.setattr(cpu, "l2_bytes", lambda: 0)
        for got, want in zip(team, _arrays(q(x, hx, lengths=lengths)), strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(nl.cpu.TEAM.size < 2, reason="one thread: no team")
@pytest.mark.parametrize("weights, I", [("int8", 2048), ("bfloat16", 1024)])
def test_the_team_projects_w_ih_past_l2_in_larger_tasks_with_the_same_bits(weights, I):
    # A unit block's W_ih of 2 MB: the projection's tasks take 256 rows (here
    # 288: two of them, the second short), each row the same bytes and sums,
    # so the team gives the layer loop's bits.
    from numba_lstm import cpu
    from numba_lstm.cpu.cooperative import BLOCK_W_PAST_L2_BYTES, PROJECTION_ROWS_PAST_L2

    rng = np.random.default_rng(19)
    H, T, B = 512, 9, 32
    q = _module("LSTM", rng, I, H, num_layers=1).quantize(weights)
    ih = q._layers.team_quantized_projection(cpu._team_blocks())[0]
    if ih.shape[0] == 0:
        pytest.skip("no dot layout for this W_ih on this CPU (K past the pairs' limit, or no BF16)")
    assert ih.nbytes // ih.shape[0] >= BLOCK_W_PAST_L2_BYTES
    assert PROJECTION_ROWS_PAST_L2 < T * B < 2 * PROJECTION_ROWS_PAST_L2
    _team_gives_the_layer_loops_bits(q._layers, rng.standard_normal((T, B, I)).astype(np.float32))


def _team_gives_the_layer_loops_bits(layers, x):
    """The team's outputs for x (every row its full length), asserted equal,
    bit for bit, to the layer loop's."""
    from numba_lstm import cpu

    lengths = np.full(x.shape[1], x.shape[0], np.int64)
    team = cpu.forward(layers, x, None, None, lengths, "team")
    for got, want in zip(team, cpu.forward(layers, x, None, None, lengths, "layers"),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    return team


@pytest.mark.skipif(nl.cpu.TEAM.size < 2, reason="one thread: no team")
def test_compile_runs_the_quantized_team_job():
    # A quantized stack's team job is a kernel of its own (the float job carries
    # none of the int8 and bfloat16 kernels), so `compile --weights` must run it.
    from numba_lstm.cpu import cooperative

    records = nl.compile(("float32",), ("lstm", "layernorm"), weights=("int8", "bfloat16"))
    ran = {(r["family"], r["weights"], r["strategy"]) for r in records}
    for weights in ("float32", "int8", "bfloat16"):
        assert {("lstm", weights, "team"), ("lstm", weights, "stream_step")} <= ran
    assert ("layernorm", "float32", "panels") in ran
    assert not any(f == "layernorm" and w != "float32" for f, w, _ in ran)
    assert cooperative.serve_quantized_float32.signatures
    # Where the CPU takes the dot layouts, compile ran them too: they exist only
    # from a hidden size of one dot panel up.
    from numba_lstm.cpu.packing import dot_default, first_dot_hidden

    dot = {(r["weights"], r["strategy"]) for r in records if r["family"] == "lstm" and r["dot"]}
    for weights in ("int8", "bfloat16"):
        if dot_default(weights, first_dot_hidden(weights)):
            assert {(weights, s) for s in ("team", "stream_step", "panels")} <= dot, weights


def _rows_on_grid(m, grid):
    return np.stack([grid(row) for row in m])


def _layers_oracle(cell, params, x, L, D, weights="int8", kernel_out=None):
    """NumPy layers of an int8 stack on the dot kernel's terms (torch's names,
    any cell): every row of each step's input and h on a grid of its own (x's
    int16, h's and the layers above the first's inputs 8 bits; bfloat16:
    GRIDS' roundings), the dequantized weights, float64. Returns the output
    (T, B, D*H). With ``kernel_out`` (L = 1), each step starts from the
    kernel's h before it (its output's row) and the oracle's own c."""
    x_grid, h_grid = GRIDS[weights]
    below = x.astype(np.float64)
    T = x.shape[0]
    for k in range(L):
        outs = []
        for d, suffix in enumerate(("", "_reverse")[:D]):
            p = {name: params[f"{name}_l{k}{suffix}"]
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            H = p["weight_hh"].shape[1]
            h = np.zeros((x.shape[1], H))
            c = np.zeros_like(h) if cell.has_cell_state else None
            out = np.empty((T,) + h.shape)
            for t in (range(T - 1, -1, -1) if d else range(T)):
                gx = (_rows_on_grid(below[t], h_grid if k else x_grid)
                      @ p["weight_ih"].T + p["bias_ih"])
                gh = _rows_on_grid(h, h_grid) @ p["weight_hh"].T + p["bias_hh"]
                out[t], c = cell.reference_step(gx, gh, h, c)
                h = out[t] if kernel_out is None else kernel_out[t, :, d * H:(d + 1) * H]
            outs.append(out)
        below = np.concatenate(outs, axis=2)
    return below


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("family,kw", [("LSTM", {}), ("GRU", {}),
                                       ("LSTM", dict(bidirectional=True))])
def test_panel_steps_on_the_dot_kernel_match_their_numpy_oracle(dot_streaming, family, kw,
                                                                weights):
    # Batch >= 16 (the panel steps): the input projection quantizes each row of
    # x (int16; 8 bits above the first layer), and each step each row of h (8
    # bits), both multiplied by gemm_dot_acc
    # (17 rows: four 4-row tiles and the 1-row rest); I=13: K4's padding.
    # bfloat16 rounds each h to 8 significant bits: a float64 oracle's h and the
    # kernel's, 1e-7 apart, round apart now and then, a gate ~1e-4 apart from
    # then on. So for bfloat16 the oracle takes each step from the kernel's own
    # h (its output), one layer (the team's and the stream's oracles cover the
    # layers above on bfloat16).
    from numba_lstm import cells
    from numba_lstm.cpu.dot_gemm import DOT_NR

    rng = np.random.default_rng(17)
    I, H, T, B = 13, DOT_NR, 12, 17
    L = 2 if weights == "int8" else 1
    q = _module(family, rng, I, H, num_layers=L, **kw).quantize(weights)
    assert all(layer.dot_layout() is not None for layer in q._layers)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    out, _ = q(x)
    cell = cells.LSTM if family == "LSTM" else cells.GRU
    D = 2 if kw else 1
    want = _layers_oracle(cell, _dequantized(q), x, L, D, weights,
                          None if weights == "int8" else out)
    np.testing.assert_allclose(out, want, rtol=0, atol=2e-5)
    x[5, 3, 0] = np.nan  # a row not finite: its blocks and steps take the float panels
    out, _ = q(x)
    assert np.isnan(out[5:, 3, :H]).all() and np.isfinite(np.delete(out, 3, axis=1)).all()
    if D == 2:  # the reverse direction meets it at t = 5 too
        assert np.isnan(out[:6, 3, H:]).all()



@pytest.mark.parametrize("weights", FORMATS)
def test_a_projection_by_column_slices_gives_the_blocks_bits(monkeypatch, weights):
    # Where W_ih passes half the L3 (cpu.projection_sliced), a layer job's
    # quantized projection goes by (row chunk, direction, column slice). Forced
    # here on 280 rows (two chunks of 256) and W_ih of 1 MB a direction (with
    # AVX-512's panels two slices, the second partial), with a row that is not
    # finite (its float products slice by slice): the blocks' bits, and the
    # path ran.
    from numba_lstm import cpu

    rng = np.random.default_rng(23)
    I, H, T, B = (1024 if weights == "int8" else 512), 256, 70, 4
    q = _module("LSTM", rng, I, H, num_layers=2, bidirectional=True).quantize(weights)
    if any(layer.dot_layout() is None for layer in q._layers):
        pytest.skip("no dot layout for these layers on this CPU")
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    x[5, 1, 3] = np.nan
    lengths = np.full(B, T, np.int64)
    blocks = cpu.forward(q._layers, x, None, None, lengths, "panels")
    asked = []
    monkeypatch.setattr(cpu, "projection_sliced", lambda layer, ih_dot: asked.append(
        ih_dot is not None) or ih_dot is not None)
    sliced = cpu.forward(q._layers, x, None, None, lengths, "panels")
    assert asked == [True, True]  # both layers' projections
    assert np.isnan(blocks[0][:, 1]).any() and np.isfinite(np.delete(blocks[0], 1, axis=1)).all()
    for got, want in zip(sliced, blocks, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_team_projects_few_rows_by_block():
    # The team's quantized projection goes by (block, row chunk) where row
    # chunks would load one thread more than quantizing each row again per
    # block costs: the cases measured (docs/performance.md, stop 27), two
    # threads and two blocks, W_ih small; and wherever W_ih is past the
    # smallest L2 (stop 32). Either way a row gets the same bytes and sums.
    from numba_lstm.cpu.cooperative import PROJECTION_W_BYTES, _by_blocks

    by_blocks = _by_blocks.py_func
    small = 64 * 1024
    assert by_blocks(200, 2, 1024, 2, False, small)  # S3: chunks would be 128 and 72 rows
    assert by_blocks(64, 2, 1024, 2, False, small)  # one chunk: one thread
    assert not by_blocks(128, 2, 1024, 2, False, small)  # two chunks, one a thread already
    assert not by_blocks(1200, 2, 320, 2, False, small)  # S9: 640 and 560 rows; I = 40
    assert not by_blocks(2400, 2, 256, 2, False, small)  # B = 12, T = 200, H = 128
    assert not by_blocks(1000, 2, 512, 2, True, small)  # S2's second layer, int8
    assert by_blocks(3200, 2, 1024, 2, True, 2 << 20)  # S6's upper layer, bfloat16
    assert by_blocks(1000, 2, 512, 2, True, PROJECTION_W_BYTES)
    assert not by_blocks(1000, 2, 512, 2, True, PROJECTION_W_BYTES - 1)
