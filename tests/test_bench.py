"""The bench's own measurements (numba_lstm.bench): the FMA-rate probe and the
table's notes. The timings themselves are never asserted (speed is shown by
benchmarks, never by timed tests)."""

from types import SimpleNamespace

import numpy as np
import pytest

from numba_lstm.bench import BY_ID, format_table, unseen_shapes
from numba_lstm.bench.cores import (
    _DOT_CHAINS,
    _LANES,
    DOT_OPERANDS,
    _dot_chains,
    _dot_chains_each,
    _fma_chains,
    _fma_chains_each,
    _passes,
    _passes_each,
    dot_rates,
    fma_rates,
    l3_buffer_bytes,
    l3_read_rates,
)
from numba_lstm.bench.shapes import (
    FLOOR,
    UNSEEN_BATCHES,
    UNSEEN_HIDDEN,
    UNSEEN_INPUTS,
    UNSEEN_MAX_FLOPS,
    UNSEEN_STEPS,
    targets_of,
)


def test_fma_chains_compute_the_recurrence():
    # c <- a*c + b from 0: after n rounds each of the 12 chains holds
    # b * (1 - a^n) / (1 - a); out is their sum.
    out = np.zeros(_LANES, np.float32)
    _fma_chains(1, out)
    np.testing.assert_allclose(out, 12 * np.float32(1e-7), rtol=1e-6)
    _fma_chains(3, out)
    a, b = np.float32(0.9999999), np.float32(1e-7)
    np.testing.assert_allclose(out, 12 * (b + a * (b + a * b)), rtol=1e-6)
    rows = np.zeros((3, _LANES), np.float32)
    _fma_chains_each(2, rows)
    assert np.all(rows == rows[0]) and rows[0, 0] > 0


def test_fma_rates_count_every_threads_flops(monkeypatch):
    rates = fma_rates(seconds=0.005, rounds=1)
    assert rates["threads"] >= 1
    assert rates["one_thread_gflops"] > 0 and rates["all_threads_gflops"] > 0
    # How the two rates relate on the host is timing (a benchmark's business); on
    # a clock where every timed run lasts one second, all threads at once do
    # exactly `threads` times one thread's flops.
    from numba_lstm.bench import cores

    ticks = iter(range(1000))
    monkeypatch.setattr(cores, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    rates = fma_rates(seconds=0.005, rounds=2)
    assert rates["all_threads_gflops"] == rates["threads"] * rates["one_thread_gflops"] > 0


@pytest.mark.parametrize("weights", ["int8", "bfloat16"])
def test_dot_chains_add_their_products(weights):
    # Operands of 1: each round adds a lane's multiply-adds (4 for int8's bytes,
    # 2 for bfloat16's pairs) to each of the 16 chains, emulated where the CPU
    # lacks the instruction.
    w, b, sums, per_lane = DOT_OPERANDS[weights]
    out = np.zeros((_DOT_CHAINS, _LANES), sums)
    _dot_chains(3, w, b, out)
    assert np.all(out == 3 * per_lane)
    rows = np.zeros((2, _DOT_CHAINS, _LANES), sums)
    _dot_chains_each(5, w, b, rows)
    assert np.all(rows == 5 * per_lane)


@pytest.mark.parametrize("weights,flag", [("int8", "HAS_VNNI"), ("bfloat16", "HAS_BF16")])
def test_dot_rates_name_the_instruction_or_say_there_is_none(weights, flag, monkeypatch):
    from numba_lstm.bench import cores

    name, present = cores.DOT_INSTRUCTIONS[weights]
    rates = dot_rates(weights, seconds=0.005, rounds=1)
    assert (rates is None) == (not present) == (not getattr(cores, flag))
    monkeypatch.setitem(cores.DOT_INSTRUCTIONS, weights, (name, True))
    ticks = iter(range(1000))
    monkeypatch.setattr(cores, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    rates = dot_rates(weights, seconds=0.005, rounds=2)
    # every timed run lasts one tick: the rates count the work alone
    assert rates["instruction"] == name
    assert rates["all_threads_gmacs"] == rates["threads"] * rates["one_thread_gmacs"] > 0


def _report(**extra):
    result = {"shape": {"id": "S1"}, "seconds": {"numba_lstm": 1e-3, "torch": 2e-3},
              "ratios": {"torch": 2.0}, "gflops": {"numba_lstm": 20.0, "torch": 10.0},
              "max_abs_diff": {"torch": 1e-7}, "agrees": True, "targets": {"torch": 2.0},
              "targets_met": {"torch": True}, "unavailable": {}}
    return {"device": "cpu", "matmul_gflops": 100.0, "results": [result], **extra}


@pytest.mark.parametrize("with_fma", [True, False])
def test_table_notes_the_fma_rates_when_measured(with_fma):
    extra = {"fma": {"threads": 2, "one_thread_gflops": 140.0, "all_threads_gflops": 150.0}}
    table = format_table(_report(**(extra if with_fma else {})))
    assert "| S1 | 1.00 ms | 2.00 ms | - | 2.00× (≥2) |" in table
    line = [x for x in table.splitlines() if x.startswith("Register-only FMA")]
    if with_fma:
        assert line == ["Register-only FMA rate in this run: one thread 140 GFLOP/s, 2 threads "
                        "at once 150 (1.07×; about 1× when the host runs the vCPUs on one "
                        "core's hyperthreads)."]
    else:
        assert line == []


def test_the_quantized_bench_times_and_checks_every_runner_it_can():
    from numba_lstm.bench import quantized

    report = quantized.run("int8", ["S8"], rounds=1, min_seconds=0.001, probe_seconds=0.005)
    row = report["results"][0]
    assert row["multiply_adds"] == BY_ID["S8"].flops() // 2
    assert {"numba_lstm", "numba_lstm_float32"} <= set(row["seconds"])
    assert row["targets"] == quantized.TARGETS["S8"] and row["described"] is None
    assert set(row["ratios"]) == set(row["seconds"]) - {"numba_lstm"}
    assert 0 < row["error_vs_float32"]["numba_lstm"] <= 5e-3
    for peer in ("torch_qint8", "onnxruntime_qint8"):
        assert peer in row["seconds"] or peer in row["unavailable"]
    table = quantized.format_table(report)
    assert table.splitlines()[2].startswith("| S8 | ")
    assert "Errors: max|Δ| against our float32 module" in table


@pytest.mark.parametrize("with_dot", [True, False])
def test_the_quantized_table_reads_our_rate_against_the_instruction(with_dot):
    from numba_lstm.bench import quantized

    row = {"shape": "S6", "seconds": {"numba_lstm": 0.02}, "ratios": {}, "targets": {},
           "targets_met": {}, "error_vs_float32": {}, "unavailable": {},
           "multiply_adds": 12_000_000_000, "described": None}
    dot = {"instruction": "vpdpbusd", "threads": 2, "one_thread_gmacs": 500.0,
           "all_threads_gmacs": 1000.0}
    table = quantized.format_table({"weights": "int8", "results": [row],
                                    "dot": dot if with_dot else None})
    cells = table.splitlines()[2].split(" | ")
    # 12e9 multiply-adds in 20 ms: 600 G a second, 60% of the two threads' 1000
    assert cells[-3] == ("600 (60%)" if with_dot else "600")
    assert cells[-2] == "-"  # no bound in this row
    del row["multiply_adds"]  # a report saved before the column: its table still prints
    assert quantized.format_table({"weights": "int8", "results": [row]}).splitlines()[2].split(
        " | ")[-3] == "-"
    notes = [x for x in table.splitlines() if x.startswith("Register-only vpdpbusd")]
    assert notes == (["Register-only vpdpbusd rate in this run: one thread 500 G "
                      "multiply-adds/s, 2 threads at once 1000 (2.00×)."] if with_dot else [])
    # Where the format's products run on AMX tiles, the instruction's rate
    # bounds nothing: the rate alone, no share of it, and a note that says why.
    tiles = quantized.format_table({"weights": "int8", "results": [dict(row, multiply_adds=12e9)],
                                    "dot": dot if with_dot else None, "on_tiles": True})
    assert tiles.splitlines()[2].split(" | ")[-3] == "600"
    assert "run on AMX tiles here" in tiles and "bound: the time" not in tiles
    # a row bound there by its streamed W_hh alone says so
    bound = quantized.format_table({"weights": "int8", "results": [dict(row, bound_seconds=0.01)],
                                    "dot": dot if with_dot else None, "on_tiles": True})
    assert bound.splitlines()[2].split(" | ")[-2] == "10.00 ms"
    assert ("bound: the time no kernel in this format can beat here, the largest of the bytes "
            "of a direction's W_hh its every step reads past the cores' L1 and L2 (0 KB in all) "
            "at the L3 rate and the threads' plain reads of all of W_hh every step" in bound)
    assert "(the products' rate on the tiles is not probed" in bound


def test_bfloat16_rows_are_held_to_the_floor_and_int8_rows_to_their_targets():
    from numba_lstm.bench import quantized

    for shape in quantized.ROWS:
        assert quantized.targets_of(BY_ID[shape], "int8") == quantized.TARGETS[shape]
        assert quantized.targets_of(BY_ID[shape], "bfloat16") == quantized.FLOOR
    assert quantized.TARGETS["S2"]["onnxruntime_qint8"] == 1.5
    assert quantized.FLOOR == {"torch_qint8": 1.0, "onnxruntime_qint8": 1.0}


@pytest.mark.parametrize("family", ["LSTM", "GRU"])
def test_the_quantized_bench_holds_an_unseen_shape_to_the_floor(family):
    from numba_lstm.bench import quantized
    from numba_lstm.bench.shapes import Shape

    shape = Shape("U0", 2, 3, 8, 16, 1, False, "unseen, seed 0", family)
    report = quantized.run("bfloat16", [shape], rounds=1, min_seconds=0.001,
                           probe_seconds=0.005)
    row = report["results"][0]
    assert row["shape"] == "U0" and row["targets"] == quantized.FLOOR
    assert row["family"] == family
    assert 0 < row["error_vs_float32"]["numba_lstm"] <= 2.5e-3
    table = quantized.format_table(report)
    assert table.splitlines()[2].startswith("| U0 | ")
    assert f"U0: {family} B=2 T=3 I=8 H=16 L=1 (unseen, seed 0)." in table
    # ONNX Runtime quantizes no GRU: its "int8" model of one is the float32 GRU, as
    # the table's note says (were that to change, the note would be wrong)
    assert ("quantizes no GRU" in table) == (family == "GRU")
    if family == "GRU" and "onnxruntime_qint8" in row["seconds"]:
        assert row["error_vs_float32"]["onnxruntime_qint8"] < 1e-5
    # torch's bfloat16 LSTM beside a bfloat16 run: timed, its error taken, no target
    head, rule, line = table.splitlines()[:3]
    assert head.count("|") == rule.count("|") == line.count("|")
    assert "| torch bf16 |" in head and "torch_bf16" not in row["targets"]
    if "torch_bf16" in row["seconds"]:
        assert 0 < row["error_vs_float32"]["torch_bf16"] <= 2e-2
    else:
        assert "torch_bf16" in row["unavailable"]


def test_unseen_shapes_are_the_floors_regime_and_the_same_for_a_seed():
    shapes = unseen_shapes(40, seed=3)
    assert shapes == unseen_shapes(40, seed=3) != unseen_shapes(40, seed=4)
    assert [s.id for s in shapes] == [f"U{i}" for i in range(40)]
    assert not set(s.id for s in shapes) & set(BY_ID)  # never a bench shape's id
    for s in shapes:
        assert s.batch in UNSEEN_BATCHES and s.hidden_size in UNSEEN_HIDDEN
        assert s.input_size in UNSEEN_INPUTS and 1 <= s.layers <= 4
        assert s.family in ("LSTM", "GRU")
        # T is one of the regime's, halved (not below 64) only while a call is too long
        assert s.steps >= 64 and any(s.steps * 2 ** k in UNSEEN_STEPS for k in range(5))
        assert s.flops() <= UNSEEN_MAX_FLOPS or s.steps < 128
        assert targets_of(s) == FLOOR
    assert {s.bidirectional for s in shapes} == {False, True}
    assert {s.family for s in unseen_shapes(20, seed=3, families=("LSTM",))} == {"LSTM"}
    assert targets_of(BY_ID["S1"]) == {"torch": 1.5, "onnxruntime": 1.3}


def test_the_table_spells_out_shapes_it_names_by_id_alone():
    shape = unseen_shapes(1, seed=5)[0]
    result = {"shape": {"id": shape.id, "batch": shape.batch, "steps": shape.steps,
                        "input_size": shape.input_size, "hidden_size": shape.hidden_size,
                        "layers": shape.layers, "bidirectional": shape.bidirectional,
                        "note": shape.note, "family": shape.family},
              "seconds": {"numba_lstm": 1e-3, "torch": 0.5e-3}, "ratios": {"torch": 0.5},
              "gflops": {"numba_lstm": 1.0}, "max_abs_diff": {"torch": 1e-7},
              "targets": FLOOR, "targets_met": {"torch": False}, "unavailable": {},
              "agrees": True}
    table = format_table({"matmul_gflops": 100.0, "results": [result]})
    assert f"| {shape.id} |" in table and "MISSED torch" in table
    assert f"{shape.id}: {shape.family} B={shape.batch} T={shape.steps}" in table


def test_read_passes_load_every_vector_of_the_buffer():
    # A buffer of ones: each pass adds one to a lane for every vector it loads.
    buf = np.ones(8 * _LANES * 5, np.float32)
    out = np.zeros(_LANES, np.float32)
    _passes(3, buf, out, False)
    assert np.all(out == 3 * 8 * 5)
    bufs = np.ones((2, 8 * _LANES * 2), np.float32)
    rows = np.zeros((2, _LANES), np.float32)
    _passes_each(4, bufs, rows, False)
    assert np.all(rows == 4 * 8 * 2)


def test_zigzag_passes_load_every_vector_of_the_buffer_each_pass():
    # a buffer numbering its vectors: each pass adds each vector once, whichever way it runs
    buf = np.repeat(np.arange(8 * 5, dtype=np.float32), _LANES)
    out = np.zeros(_LANES, np.float32)
    for passes in (1, 2, 3):
        _passes(passes, buf, out, True)
        assert np.all(out == passes * sum(range(8 * 5)))
    bufs = np.ones((2, 8 * _LANES * 2), np.float32)
    rows = np.zeros((2, _LANES), np.float32)
    _passes_each(4, bufs, rows, True)
    assert np.all(rows == 4 * 8 * 2)


def test_share_read_seconds_times_a_pass_of_every_threads_share():
    from numba_lstm.bench.cores import share_read_seconds

    # 64 KB a thread: a few microseconds a pass on any CPU this runs on, never nothing
    assert 0 < share_read_seconds(64 << 10, rounds=1, pass_bytes=1 << 22) < 1e-2


def test_the_read_bound_takes_the_faster_way_to_share_w_hh(monkeypatch):
    from numba_lstm.bench import quantized
    from numba_lstm.bench.shapes import Shape

    monkeypatch.setattr(quantized.numba, "get_num_threads", lambda: 2)
    asked = []

    def past_a_megabyte_slower(size):  # 1 ns a byte, 4 ns past 1 MB
        asked.append(size)
        return (min(size, 1 << 20) + 4 * max(0, size - (1 << 20))) * 1e-9

    # H = 512, bfloat16: a direction's W_hh is 2 MB, a thread's share 1 MB
    one = Shape("U", 1, 100, 64, 512, 3, False, "")
    assert quantized.recurrent_read_seconds(one, "bfloat16", past_a_megabyte_slower) == (
        3 * 100 * (1 << 20) * 1e-9)
    assert asked == [1 << 20]
    # two directions: each split in turn (2 x 1 MB) beats a direction a thread (2 MB)
    two = Shape("U", 1, 100, 64, 512, 1, True, "")
    assert quantized.recurrent_read_seconds(two, "bfloat16", past_a_megabyte_slower) == (
        100 * 2 * (1 << 20) * 1e-9)
    # where a thread's own direction reads faster than two shares (a step's
    # handover aside, nothing in a split costs less), that way bounds it
    assert quantized.recurrent_read_seconds(two, "bfloat16", lambda size: 1.0) == 100 * 1.0
    # a streaming call is one step of every layer: all of W_hh, shared
    stream = Shape("U", 1, 1, 64, 512, 2, False, "")
    asked.clear()
    quantized.recurrent_read_seconds(stream, "int8", past_a_megabyte_slower)
    assert asked == [2 * (1 << 20) // 2]


def test_l3_read_rates_need_a_buffer_past_l2_and_count_every_threads_bytes(monkeypatch):
    from numba_lstm.bench import cores

    monkeypatch.setattr(cores, "l3_bytes", lambda: 0)
    assert l3_buffer_bytes(2) == 0 and l3_read_rates(seconds=0.001, rounds=1) is None
    # 1 MB L2s under a 32 MB L3: four L2s a thread, within half the L3 in all
    monkeypatch.setattr(cores, "l2_bytes", lambda: 1 << 20)
    monkeypatch.setattr(cores, "l3_bytes", lambda: 32 << 20)
    assert l3_buffer_bytes(2) == 4 << 20 and l3_buffer_bytes(8) == 2 << 20
    monkeypatch.setattr(cores, "l3_bytes", lambda: 4 << 20)  # half of it within one L2
    assert l3_read_rates(seconds=0.001, rounds=1) is None
    monkeypatch.setattr(cores, "l2_bytes", lambda: 64 << 10)
    monkeypatch.setattr(cores, "l3_bytes", lambda: 2 << 20)
    ticks = iter(range(1000))
    monkeypatch.setattr(cores, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    rates = l3_read_rates(seconds=0.001, rounds=2)
    assert rates["buffer_bytes"] == l3_buffer_bytes(rates["threads"]) > 64 << 10
    # every timed run lasts one tick: the rates count the bytes alone
    assert rates["all_threads_gbs"] == rates["threads"] * rates["one_thread_gbs"] > 0


def test_the_format_bound_is_the_larger_of_the_products_and_the_streamed_w_hh(monkeypatch):
    from numba_lstm.bench import quantized
    from numba_lstm.bench.shapes import Shape

    monkeypatch.setattr(quantized, "ON_TILES", {"int8": False, "bfloat16": False})

    dot = {"instruction": "vdpbf16ps", "threads": 2, "one_thread_gmacs": 250.0,
           "all_threads_gmacs": 500.0}
    l3 = {"threads": 2, "buffer_bytes": 4 << 20, "one_thread_gbs": 100.0,
          "all_threads_gbs": 200.0}
    # B=1, T=100, I=64, H=512, two layers: W_hh 2048 x 512 a layer, 2 MB in bfloat16
    shape = Shape("U", 1, 100, 64, 512, 2, False, "")
    macs = 100 * 2048 * ((64 + 512) + (512 + 512))
    assert shape.flops() == 2 * macs
    products = macs / 500e9
    assert quantized.format_bound(shape, "bfloat16", dot, None, 1 << 20) == products
    # 1 MB of each layer's 2 MB past the caches, every step: 200 MB at 200 GB/s
    streamed = 100 * 2 * (1 << 20) / 200e9
    assert streamed > products
    assert quantized.format_bound(shape, "bfloat16", dot, l3, 1 << 20) == streamed
    # int8's W_hh is 1 MB a layer: all of it fits, the products bound it
    assert quantized.format_bound(shape, "int8", dot, l3, 1 << 20) == products
    # without a dot instruction the bytes still bound any kernel; without either rate, nothing
    assert quantized.format_bound(shape, "bfloat16", None, l3, 1 << 20) == streamed
    assert quantized.format_bound(shape, "bfloat16", None, None, 1 << 20) is None
    # AMX tiles multiply past the dot instruction's rate: no bound from it, but
    # the streamed bytes bound the steps all the same
    monkeypatch.setattr(quantized, "ON_TILES", {"int8": True, "bfloat16": True})
    assert quantized.format_bound(shape, "int8", dot, l3, 1 << 20) is None
    assert quantized.format_bound(shape, "bfloat16", dot, l3, 1 << 20) == streamed
    assert quantized.format_bound(shape, "bfloat16", dot, None, 1 << 20) is None
    # two directions: one after the other, each direction's 2 MB a step has 1 MB past
    # the caches (not 3 of both at once)
    both = Shape("U", 1, 100, 64, 512, 1, True, "")
    assert quantized.format_bound(both, "bfloat16", None, l3, 1 << 20) == (
        100 * 2 * (1 << 20) / 200e9)
    # a streaming call reads both layers' W_hh, 4 MB: 3 MB past the caches a call
    stream = Shape("U", 1, 1, 64, 512, 2, False, "")
    assert quantized.format_bound(stream, "bfloat16", None, l3, 1 << 20) == 3 * (1 << 20) / 200e9
    # the measured reads of W_hh, where they take longer than everything else
    assert quantized.format_bound(shape, "bfloat16", dot, l3, 1 << 20, 2 * streamed) == (
        2 * streamed)
    assert quantized.format_bound(shape, "bfloat16", dot, l3, 1 << 20, streamed / 2) == streamed
    assert quantized.format_bound(shape, "int8", dot, None, 1 << 20, 1e-3) == 1e-3


def test_the_quantized_table_marks_a_peer_faster_than_the_bound():
    from numba_lstm.bench import quantized

    row = {"shape": "S6", "seconds": {"numba_lstm": 0.03, "torch_qint8": 0.02,
                                      "onnxruntime_qint8": 0.025},
           "ratios": {"torch_qint8": 2 / 3, "onnxruntime_qint8": 25 / 30},
           "targets": dict(quantized.FLOOR),
           "targets_met": {"torch_qint8": False, "onnxruntime_qint8": False},
           "error_vs_float32": {}, "unavailable": {}, "multiply_adds": 12_000_000_000,
           "described": None, "bound_seconds": 0.024}
    table = quantized.format_table({"weights": "bfloat16", "results": [row], "dot": None})
    cells = table.splitlines()[2].split(" | ")
    assert cells[-2] == "24.00 ms"
    # torch's 20 ms is below the 24 ms bound, ONNX Runtime's 25 ms is not
    assert cells[-1] == "MISSED torch_qint8 (bound), onnxruntime_qint8 |"


def test_the_probes_of_a_run_give_each_rate_at_its_highest_reading():
    from numba_lstm.bench.cores import best_of

    # a probe the host disturbed reads low (two threads below one), never high
    first = {"instruction": "vpdpbusd", "threads": 2, "one_thread_gmacs": 545.0,
             "all_threads_gmacs": 360.0}
    later = dict(first, one_thread_gmacs=540.0, all_threads_gmacs=1080.0)
    assert best_of([first, None, later]) == dict(
        first, all_threads_gmacs=1080.0, probes=2,
        lowest={"one_thread_gmacs": 540.0, "all_threads_gmacs": 360.0})
    l3 = {"threads": 2, "buffer_bytes": 4 << 20, "one_thread_gbs": 96.0, "all_threads_gbs": 67.0}
    assert best_of([l3])["all_threads_gbs"] == 67.0 and best_of([l3])["probes"] == 1
    assert best_of([None, None]) is None and best_of([]) is None


def test_the_quantized_bench_bounds_each_row_by_the_best_probe_and_drops_a_beaten_bound(
        monkeypatch):
    from numba_lstm.bench import cores, quantized
    from numba_lstm.bench.shapes import Shape

    monkeypatch.setattr(quantized, "ON_TILES", {"int8": False, "bfloat16": False})
    readings = iter([100.0, 500.0, 200.0])  # two threads at once, probe by probe
    monkeypatch.setattr(cores, "dot_rates", lambda weights, seconds: {
        "instruction": "vpdpbusd", "threads": 2, "one_thread_gmacs": 250.0,
        "all_threads_gmacs": next(readings)})
    monkeypatch.setattr(cores, "l3_read_rates", lambda seconds: None)
    kept, beaten = Shape("U0", 4, 100, 64, 256, 1, False, ""), Shape("U1", 8, 100, 64, 256, 1,
                                                                       False, "")
    at_best = {s.id: s.flops() / 2 / 500e9 for s in (kept, beaten)}
    # U0 takes twice its bound at the best rate (but less than the first probe's
    # bound, five times it); U1 takes half of its bound: no kernel could
    ours = {"U0": 2 * at_best["U0"], "U1": at_best["U1"] / 2}

    def row(shape, weights, rounds, min_seconds):
        return {"shape": shape.id, "seconds": {"numba_lstm": ours[shape.id], "torch_qint8": 1.0},
                "ratios": {"torch_qint8": 1.0 / ours[shape.id]}, "targets": {},
                "targets_met": {}, "error_vs_float32": {}, "unavailable": {},
                "multiply_adds": shape.flops() // 2, "described": None}

    monkeypatch.setattr(quantized, "bench_row", row)
    report = quantized.run("int8", [kept, beaten], probe_seconds=0.001)
    assert next(readings, None) is None  # probed before the rows and after each
    dot = report["dot"]
    assert dot["all_threads_gmacs"] == 500.0 and dot["probes"] == 3
    assert dot["lowest"]["all_threads_gmacs"] == 100.0
    first, second = report["results"]
    assert first["bound_seconds"] == at_best["U0"] and "bound_beaten" not in first
    assert second["bound_seconds"] is None and second["bound_beaten"] == at_best["U1"]
    notes = quantized.format_table(report).splitlines()
    assert any(n.startswith("Register-only vpdpbusd rate in this run:") and
               ("the best of 3 probes, before the rows and after each (lowest readings: one "
                "thread 250, 2 threads at once 100)")
               in n for n in notes)
    assert any(n.startswith("U1: no bound: ours took less than the") for n in notes)
    assert not any(n.startswith("U0: no bound") for n in notes)


def test_the_bench_keeps_the_best_of_its_fma_probes(monkeypatch):
    import numba_lstm.bench as bench

    readings = iter([90.0, 150.0, 120.0])  # two threads at once, probe by probe
    monkeypatch.setattr(bench, "fma_rates", lambda: {
        "threads": 2, "one_thread_gflops": 80.0, "all_threads_gflops": next(readings)})
    monkeypatch.setattr(bench, "matmul_gflops", lambda: 100.0)
    monkeypatch.setattr(bench, "call_overhead", lambda: 1e-5)
    monkeypatch.setattr(bench, "bench_shape", lambda shape, *args: shape)
    monkeypatch.setattr(bench, "_as_json", lambda shape: {"id": shape.id})
    report = bench.run(["S1", "S8"], peers=[])
    assert next(readings, None) is None  # probed before the shapes and after each
    fma = report["fma"]
    assert fma["all_threads_gflops"] == 150.0 and fma["one_thread_gflops"] == 80.0
    assert fma["probes"] == 3 and fma["lowest"]["all_threads_gflops"] == 90.0
    line = [x for x in format_table(_report(fma=fma)).splitlines()
            if x.startswith("Register-only FMA")]
    assert line == ["Register-only FMA rate in this run: one thread 80 GFLOP/s, 2 threads at "
                    "once 150 (1.88×; about 1× when the host runs the vCPUs on one core's "
                    "hyperthreads); the best of 3 probes, before the shapes and after each."]
