"""CPU backend: prepares buffers and calls the jitted kernels. No validation here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from ..cells import GRU, LSTM
from . import scratch
from .aligned import aligned_empty
from .amx import AMX_ROWS
from .caches import l2_bytes, l3_bytes, l3_feeds_each_core_fast
from .cooperative import SERVE, cell_serve, job_kind, stack_job_buffers, stack_team
from .dot_gemm import DOT_NR, rows_on_tiles
from .layer import layer_kernels
from .numpy_path import numpy_forward
from .packing import PackedLayer, PackedStack, pack_layer, pack_stack
from .panel_gemm import TILE_ROWS
from .projection import LINE as PROJECTION_LINE
from .projection import input_projection
from .streaming import StackStepper, TeamStepper, lstm_stream_step
from .team import CTRL_SIZE, Team
from .team_layer import describe_layer_job, dot_kind, layer_serve
from .warm import WARMUP, key_of

__all__ = ["STRATEGIES", "PackedLayer", "PackedStack", "StackStepper", "Strategy", "TeamStepper",
           "forward", "layer_forward", "lstm_stream_step", "pack_layer", "pack_stack", "stepper",
           "stream_step_ready"]

# Below this batch a one-direction LSTM stack without projection goes to the
# team (cpu.cooperative); from it up, splitting the batch across threads wins
# (the panel steps, cpu.layer, with full 8-row tiles).
GEMM_STEPS_MIN_BATCH = 16
# The large-batch kernel projects each step's input itself, saving gx's round
# trip through memory (shape S7: 26 MB written, then read), when a direction's
# W_ih and W_hh stay in a core's L2 or each task has enough rows to reuse every
# weight it reads per step. Measured: S7 (384 KB) 26.0 -> 20.9 ms fused; S6
# (16 rows per thread, 8 MB per step) 196 against 225 ms fused.
FUSED_MAX_BYTES = 512 * 1024
FUSED_MIN_ROWS = 32


# The caller and helper threads that share small-batch layers (cpu.cooperative).
TEAM = Team(SERVE)
# Row tiles per thread of a batch split up to which the team's split by units
# wins where W_hh is past L2 (team_splits_units): measured on a 2 MB L2 Xeon
# at H = 512 and 1024, the team 1.03-1.06x at batch 32-48 (2-3 tiles a
# thread), 0.88-0.94x at 64 (4 tiles); on 1 MB L2 Zen 5, 1.07-1.09x at batch
# 16-48, 0.99x at 64. bfloat16 on AMX tiles (tiles of 32 rows, a pair), the
# Xeon: 1.14x at batch 64, 1.07x at 128, 1.08x at 224 (H = 512).
UNIT_SPLIT_MAX_TILES = 4

# Below this many multiply-adds per step (B * H * 4H), one thread beats the
# team: a step then takes about as long as handing it over (~0.5 µs).
TEAM_MIN_MACS_PER_STEP = 1 << 14
# The same where the steps multiply W_hh on AMX tiles at every row (bfloat16 on
# AMX-BF16): each of the team's threads then pays a call's tile costs for half
# the columns. On the AMX Xeon, one thread against the team at B = 1-2, H =
# 64-192: one thread 1.45-1.57x at 16-37K multiply-adds a step, 1.09x at 74K,
# the team 1.05-1.29x from 100K (docs/performance.md, stop 45).
TEAM_MIN_MACS_PER_STEP_ON_TILES = 3 << 15
# Below GEMM_STEPS_MIN_BATCH, the batch split takes a stack from the team where
# each layer's W_hh, as its steps read it, is at most this share of one core's
# L2 (batch_split_preferred).
BATCH_SPLIT_MAX_L2_SHARE = 6
# ... and, for float weights, where each thread gets at least this many rows
# (half a panel tile: the 4-row tiles' 16 FMA chains; at 2-3 rows the team
# won on Zen 5 and the two tied on the AMX Xeon).
FLOAT_BATCH_SPLIT_MIN_ROWS = TILE_ROWS // 2
# A float layer job's input projection goes by column slices where W_ih, every
# direction's, is this many times the team's L2s together (projection_sliced).
# The AMX Xeon (2 MB L2s, two threads), against blocks of 64 rows: 8-36 MB
# 1.08-1.25x, 4 MB 1.01-1.02x, 2 MB 0.91x.
FLOAT_SLICED_MIN_L2S = 2
# Unit blocks per team thread. More would let the faster core take part of a
# slow one's step, but each block costs a claim, a count, its own cell loop
# and a partly filled last vector; one per thread measured faster at batch 2-16
# and within noise at batch 1 (docs/performance.md, stop 14); the job itself
# takes any number (tests force two).
BLOCKS_PER_THREAD = 1
# From this many rows, a two-direction layer on the dot kernels runs a
# direction a thread (each thread's rows fill a tile of three or more), where
# the L3 feeds each core fast enough that streaming a direction's W_hh from it
# costs less than the team's handover of every step (_directions_on_team_preferred).
DOT_DIRECTION_A_THREAD_MIN_BATCH = 3


# -- the dispatch table ------------------------------------------------------------------
@dataclass(frozen=True)
class Strategy:
    """One way to run a whole stack (``scope="stack"``) or one layer of it.

    can_run(layers or layer, T, B): whether it computes this case at all;
    prefer(...): whether ``forward`` picks it (the first preferred one wins);
    run: the runner. Tests force each one by name and compare with the reference.
    """

    name: str
    scope: str
    can_run: Callable[..., bool]
    prefer: Callable[..., bool]
    run: Callable


def _team_can_run(layers: PackedStack, steps: int, batch: int) -> bool:
    return layers[0].num_directions == 1 and _team_runs_each_direction(layers[0])


def team_allowed() -> bool:
    """Whether a job may take the whole team: Numba's thread count, the user's
    to set (numba.set_num_threads; numba_lstm.dask sets it per worker), allows
    every thread of it. The stack job, a direction on the team and a stream's
    team steps are cut into the team's blocks and take them all, so under a
    smaller count the dispatch prefers the layer strategies, whose tasks
    follow it (two single-thread processes on two cores, S6 int8: 53 ms a
    call on the team, 33 on the layers). A forced strategy still runs."""
    return TEAM.size > 1 and numba.get_num_threads() >= TEAM.size


def _team_runs_each_direction(layer: PackedLayer) -> bool:
    """Whether the team's job could run each direction of ``layer`` as a
    stack of one direction. A GRU stack's job is float32
    (cooperative.CELL_KINDS): on float weights, or on a dot layout (without
    one, the team's batch-1 kernels on stored weights are the LSTM's)."""
    gru32 = layer.cell is GRU and layer.w_hh.dtype == np.float32 and (
        layer.stored is None or layer.dot_layout() is not None)
    return ((layer.cell is LSTM or gru32) and layer.output_size == layer.hidden_size
            and TEAM.size > 1 and _team_blocks_take_the_dot(layer))


def _team_blocks_take_the_dot(layer: PackedLayer) -> bool:
    """Whether the team's unit blocks fill whole dot panels where the layer's
    steps take the dot kernels (int8; bfloat16 with AVX512_BF16): else the
    team would multiply unrounded h where the other paths put it on its grid,
    and a sequence's numbers would depend on its batch size
    (docs/quantization.md)."""
    U = -(-layer.hidden_size // _team_blocks())
    return layer.dot_layout() is None or layer.cell.gates * U % DOT_NR == 0


def _team_blocks() -> int:
    """The unit blocks the team cuts a stack into (packing.PackedStack.team_blocks)."""
    return TEAM.size * BLOCKS_PER_THREAD


def _team_preferred(layers: PackedStack, steps: int, batch: int) -> bool:
    """One step at batch 1 (a module called step by step; a stream's steps
    take ``stepper``) where a stream's would (team_streams). From
    GEMM_STEPS_MIN_BATCH up, splitting the batch (the panel steps) wins unless
    team_splits_units says otherwise. Never where Numba's thread count leaves
    out part of the team (team_allowed)."""
    if steps == 1:
        return batch == 1 and team_streams(layers)  # which asks team_allowed itself
    if not team_allowed():
        return False
    if batch >= GEMM_STEPS_MIN_BATCH:
        return team_splits_units(layers, batch)
    macs = batch * layers[0].w_hh.size
    # Whether the steps take tiles is asked only where it decides: ~0.8 µs a call.
    enough = (macs >= TEAM_MIN_MACS_PER_STEP_ON_TILES
              or macs >= TEAM_MIN_MACS_PER_STEP and not _steps_on_tiles(layers[0]))
    return enough and not batch_split_preferred(layers, batch)


def batch_split_preferred(layers: PackedStack, batch: int) -> bool:
    """Whether splitting the batch (the panel steps, a thread's rows through
    the whole time loop) beats the team's split by units below
    GEMM_STEPS_MIN_BATCH: where every layer's W_hh as its steps read it (a dot
    layout: int8; bfloat16 with AVX512_BF16; else float) is at most 1 /
    BATCH_SPLIT_MAX_L2_SHARE of one core's L2, and each thread gets two rows
    or more on a dot layout, FLOAT_BATCH_SPLIT_MIN_ROWS on float weights. Each
    thread then reads all of W_hh from its L2 every step, the team's threads
    half of it each, but hands h over every step (and, on a dot layout,
    quantizes every row's h twice). Dot layouts, measured on Zen 5 (1 MB L2),
    batch 3-12: 64-144 KB 1.03-1.50x the team (S9: 1.10x in a fast phase of
    the host, 1.37-1.43x in a slow one; an AVX2 build 1.15-1.36x); 200-256 KB
    0.87-1.14x; one row a thread (batch 2) 0.90-0.92x at 128-144 KB (stop
    39). Float weights, LSTM and GRU, one and three layers: on the AMX Xeon
    (2 MB L2) 1.03-1.32x at 48-300 KB from 4 rows a thread (one case of
    thirty 0.96x), 0.91-1.09x at 2 rows, ~1.0x at 400 KB-1 MB; on Zen 5
    1.19-1.60x at 64-144 KB and 1.01x at 256 KB with 4 rows, but 0.68-0.93x
    from 144 KB at 1-2 rows (docs/performance.md, stops 39 and 46)."""
    l2 = l2_bytes()
    if l2 == 0 or -(-batch // TEAM.size) < 2:  # the most rows a thread gets
        return False
    float_rows = batch // TEAM.size >= FLOAT_BATCH_SPLIT_MIN_ROWS  # the fewest a thread gets
    for layer in layers:
        # Once a layer: dot_layout costs ~0.7 µs, and this runs on every call.
        dot = layer.dot_layout()
        if dot is None and not float_rows:
            return False
        w_hh = layer.w_hh if dot is None else dot[0][0]  # as the steps read it
        if w_hh.nbytes * BATCH_SPLIT_MAX_L2_SHARE > l2:
            return False
    return True


def team_splits_units(layers: PackedStack, batch: int) -> bool:
    """Whether the team's split by units beats the batch split at batch >=
    GEMM_STEPS_MIN_BATCH. Past one core's L2, W_hh is streamed from L3 every
    step by each thread of a batch split, whose first row tile over each panel
    waits on L3 (an 8 x 48 tile: 88 against 150 GFLOP/s from L2 on 2 MB L2s);
    the team's threads read half of it each, most of it from their L2s. Each
    further row tile a thread has reuses the panel from L2, so from
    UNIT_SPLIT_MAX_TILES tiles a thread the batch split's wait no longer pays
    for the team's per-step handover (docs/performance.md, stop 20). Where
    every layer's fused step streams its weights from L3 instead
    (_fused_from_l3), the batch split wins (Zen 5, S6: 1.12x). W_hh stays in
    a thread's L2 only with its rows' gx and h beside it, so those count
    too: a bfloat16 H = 512 W_hh is exactly a 2 MB L2, and the team ran its
    S6 1.10x (stop 30). Steps on AMX-BF16 tiles count the pairs of 16-row
    tiles that share each weight tile: a batch split's thread loads every
    weight tile of its group from L3 for its first pair, the team's
    threads load half of them from L2."""
    l2 = l2_bytes()
    return (TEAM.size > 1 and l2 > 0
            and _split_step_bytes(layers[0], -(-batch // TEAM.size)) > l2
            and batch < UNIT_SPLIT_MAX_TILES * unit_split_tile_rows(layers[0]) * TEAM.size
            and not all(_steps_fused_from_l3(layer, batch) for layer in layers))


def unit_split_tile_rows(layer: PackedLayer) -> int:
    """The rows of a row tile in team_splits_units' count: a pair of AMX
    tiles where the layer's steps multiply bfloat16 W_hh on AMX-BF16
    (dot_gemm.rows_on_tiles), else the panel GEMM's tile."""
    return 2 * AMX_ROWS if _steps_on_tiles(layer) else TILE_ROWS


def _steps_on_tiles(layer: PackedLayer) -> bool:
    """Whether the layer's steps multiply W_hh on AMX tiles at every row
    (bfloat16 on AMX-BF16, dot_gemm.rows_on_tiles)."""
    dot = layer.dot_layout()
    hh_w_dot = None if dot is None else dot[0][0]  # (D, P, K2, 4 * DOT_NR)
    return hh_w_dot is not None and rows_on_tiles(hh_w_dot[0])


def _split_step_bytes(layer: PackedLayer, rows: int) -> int:
    """The bytes a step of a batch split reads in a thread with ``rows`` rows:
    W_hh (_hh_bytes_read) and its rows' gx and h, float32."""
    return _hh_bytes_read(layer) + rows * (layer.cell.gates + 1) * layer.hidden_size * 4


def _hh_bytes_read(layer: PackedLayer) -> int:
    """The bytes of W_hh (every direction's) a layer's steps read: an int8
    layer's dot layout where it has one, else the float weights."""
    dot = layer.dot_layout()
    return layer.w_hh.nbytes if dot is None else dot[0][0].nbytes


def projection_sliced(layer: PackedLayer, ih_dot: tuple | None) -> bool:
    """Whether a layer job's input projection goes by column slices
    (projection.input_projection) instead of blocks of 64 rows, each of
    which reads all of W_ih (every direction's) again. Quantized (W_ih in its
    dot layout): where that takes half the L3 or more, so each block reads
    it from memory: on Zen 5 (32 MB L3) 1.02-1.11x at 16-32 MB a layer, and
    0.97-1.02x at 4-8 MB, which L3 holds: there both threads putting every
    chunk's rows on their grid costs what the blocks' reads save (stop 44).
    Float: from FLOAT_SLICED_MIN_L2S times what the team's L2s hold together,
    where each block streams W_ih from L3 and a 1 MB slice stays in L2 for
    256 rows (docs/performance.md, stop 46)."""
    if ih_dot is not None:
        l3 = l3_bytes()
        return l3 > 0 and 2 * ih_dot[0].nbytes >= l3
    l2 = l2_bytes()
    return l2 > 0 and layer.w_ih.nbytes >= FLOAT_SLICED_MIN_L2S * TEAM.size * l2


def _steps_fused_from_l3(layer: PackedLayer, batch: int) -> bool:
    """Whether the layer's steps can and would project x in their product from L3
    (a GRU's cannot: its n gate keeps x's part apart)."""
    return (_fused_can_run(layer, 0, batch)
            and _fused_from_l3(layer, _rows_per_task(layer, batch)))


def _run_team(layers: PackedStack, x, h0, c0, lengths):
    T, B = x.shape[:2]
    kind = job_kind(x.dtype, layers.quantized is not None, layers[0].cell,
                    layers.team_has_pairs(_team_blocks()))
    if layers[0].cell is not LSTM:
        TEAM.register(*cell_serve(layers[0].cell, kind))
    ctrl = TEAM.acquire()
    try:
        if lengths is None:
            return _team_stack(ctrl, kind, layers, x, h0, c0, np.full(B, T, np.int64), T)
        return _team_stack(ctrl, kind, layers, x, h0, c0, lengths, int(lengths.max()))
    finally:
        TEAM.release(ctrl, kind)


def _stream_step_can_run(layers: PackedStack, steps: int, batch: int) -> bool:
    return steps == 1 and batch == 1 and layers.step is not None


def _run_stream_step(layers: PackedStack, x, h0, c0, lengths):
    h0, c0 = _zeros_if_none(layers, x, h0, c0)
    return lstm_stream_step(layers, x, h0, c0)


def _run_layers(layers: PackedStack, x, h0, c0, lengths, layer_strategy: str | None = None):
    T, B = x.shape[:2]
    D = layers[0].num_directions
    h0, c0 = _zeros_if_none(layers, x, h0, c0)
    h_n = np.empty_like(h0)
    c_n = np.empty_like(c0)
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    out = x
    for k, layer in enumerate(layers):
        sl = slice(k * D, (k + 1) * D)  # leading-axis slices of C arrays stay C-contiguous
        out = layer_forward(out, layer, h0[sl], c0[sl], lengths, h_n[sl], c_n[sl], layer_strategy)
    return out, h_n, c_n


def _zeros_if_none(layers: PackedStack, x, h0, c0):
    """h0 (L*D, B, H_out) and c0 (L*D, B, Hc) with Hc = 0 for cells without c."""
    n, B = len(layers) * layers[0].num_directions, x.shape[1]
    if h0 is None:
        h0 = np.zeros((n, B, layers[0].output_size), x.dtype)
    if c0 is None:
        c0 = np.zeros((n, B, layers[0].state_size), x.dtype)
    return h0, c0


def _threads(layer: PackedLayer, B: int) -> int:
    # numba.get_num_threads() costs 1-7 µs (S1's call 1% more for the stack
    # pick's one ask, team_allowed), so the batch-1 path does not ask again.
    # It is the user's numba.set_num_threads() (numba_lstm.dask sets it).
    return 1 if B == 1 and layer.num_directions == 1 else numba.get_num_threads()


def _n_chunks(layer: PackedLayer, B: int, threads: int) -> int:
    """Batch slices per direction: a task per thread, or per thread and
    direction where the directions take turns (_directions_take_turns)."""
    if layer.num_directions > 1 and _directions_take_turns(layer, B, threads):
        return threads
    return max(1, min(B, threads // layer.num_directions))


def _directions_take_turns(layer: PackedLayer, B: int, threads: int) -> bool:
    """Whether every thread takes a batch slice of one direction, then of the
    other (the job's threads claim tasks direction by direction), instead of a
    direction each: where both directions' W_hh cannot stay in the L3 together,
    each step of a direction a thread runs alone reads its W_hh from memory;
    taking turns, the threads read one direction's from L3. From half a tile
    of rows a thread (TILE_ROWS // 2): with 1-2 the tiles load a weight
    vector per 1-2 FMAs. Measured on Zen 5 (32 MB L3), LSTM H = 1024-1536 at
    batch 8-16: 1.14-1.37x; batch 2-4, or W_hh of both directions at 59-75%
    of the L3: 0.90-1.00x (docs/performance.md)."""
    l3 = l3_bytes()
    return (threads > 1 and l3 > 0 and B >= threads * (TILE_ROWS // 2)
            and _hh_bytes_read(layer) >= l3)


def _one_task(layer: PackedLayer, n_chunks: int) -> bool:
    """Whether the layer loop has a single task: on the axpy rows the serial
    loop (a kernel of its own) runs it, not a team job."""
    return layer.num_directions * n_chunks == 1


def _panels_can_run(layer: PackedLayer, T: int, B: int) -> bool:
    return layer.output_size == layer.hidden_size


def _panels_preferred(layer: PackedLayer, T: int, B: int) -> bool:
    # From 2 rows the panel tiles have 4+ independent FMA chains and read W_hh
    # once per tile; a 1-row tile has 2-3, too few to cover the FMA latency, and
    # the axpy kernel streams W_hh faster there (docs/performance.md). An int8
    # layer with the dot layout takes its dot kernels at every batch size: the
    # axpy rows multiply unquantized x and h, so a row alone would not get the
    # numbers it gets in a batch.
    return B > 1 or layer.dot_layout() is not None


def _fused_can_run(layer: PackedLayer, T: int, B: int) -> bool:
    return _panels_can_run(layer, T, B) and layer.cell.summed_gates == layer.cell.gates


def _fused_preferred(layer: PackedLayer, T: int, B: int) -> bool:
    # An int8 layer with the dot layout quantizes x and h on grids of their own:
    # the fused step's operand [x, h] would share one.
    D = layer.num_directions
    if B <= 1 or layer.dot_layout() is not None:
        return False
    rows = _rows_per_task(layer, B)
    return (rows >= FUSED_MIN_ROWS
            or (layer.w_ih.nbytes + layer.w_hh.nbytes) // D <= FUSED_MAX_BYTES
            or _fused_from_l3(layer, rows))


def _rows_per_task(layer: PackedLayer, B: int) -> int:
    return B // _n_chunks(layer, B, _threads(layer, B))


def _fused_from_l3(layer: PackedLayer, rows: int) -> bool:
    """Whether the fused step wins at TILE_ROWS or more rows a task, reading
    [W_ih; W_hh] from L3 every step, against the pre-pass and its gx (S6: 26
    MB a layer, through memory on a 32 MB L3): where L3 holds every
    direction's weights in half of it and feeds each core fast. Measured on
    Zen 5 at batch 16-48, H 256-512: 1.08-1.12x over the pre-pass and the
    team; with 24 MB of weights (H = 1024) 0.68x; on Cascade Lake's mesh, S6
    0.87x (docs/performance.md). rows: a task's rows of the batch."""
    l3 = l3_bytes()
    return (rows >= TILE_ROWS and layer.dot_layout() is None and l3 > 0
            and layer.w_ih.nbytes + layer.w_hh.nbytes <= l3 // 2 and l3_feeds_each_core_fast())


def _directions_on_team_can_run(layer: PackedLayer, T: int, B: int) -> bool:
    # Asked of every two-direction layer the dispatch sees: judged on the layer
    # itself, so that only a layer that takes this path copies its directions.
    return layer.num_directions == 2 and _team_runs_each_direction(layer)


def _directions_on_team_preferred(layer: PackedLayer, T: int, B: int) -> bool:
    """Whether a two-direction layer at a small batch runs its directions one
    after the other on the team, each split by units, instead of a direction
    a thread (the layer loop's tasks): where one direction's W_hh, as the
    steps read it (a quantized layer's stored bytes on its dot kernels),
    fills one core's L2 or passes it: a thread on its own direction then
    reads all of it from L3 every step (a W_hh the size of L2 cannot stay
    there beside the step's gx and h), a thread of the team its share, from
    L2 where the share fits. Measured on the AMX Xeon (2 MB L2), each way in
    processes of its own: float LSTM and GRU at H = 384-512 (shares that fit) 1.0-1.17x
    the panel steps at batch 8-15 and 1.13-2.7x below; shares past L2 (H =
    768-1024) 1.07-1.20x at batch 2-6 and 1.0-1.2x the float rows at batch
    1, but 0.85-1.05x from TILE_ROWS rows, where a thread on its own
    direction runs whole register tiles. Quantized layers on their dot
    kernels: int8 H = 768-1024 and bfloat16 H = 512-1024 1.0-2.2x at batch
    2-15 (bfloat16 H = 512, W_hh exactly the L2: 1.22x at batch 1, 1.09-1.17x
    at 2-4); at batch 1 past 2 L2s too, once the one-row tile read its panels
    in zig-zag as the others do (bfloat16 LSTM H = 768 1.46x, H = 1024 1.03x;
    GRU H = 1024 1.27x, whose batch-1 steps had zig-zagged already). Where
    the L3 feeds each core fast (Zen 5, no AMX), the dot kernels from
    DOT_DIRECTION_A_THREAD_MIN_BATCH rows go the other way: a direction a
    thread 0.96-1.24x the team at batch 3-12 (int8 H = 768-1024, bfloat16 H =
    384-1024, LSTM and GRU, one process alternating; 0.99-1.05x on its AVX2
    build's pairs kernel), even at batch 2 (0.97-1.06x)
    (docs/performance.md, docs/quantization.md). Never where Numba's thread
    count leaves out part of the team (team_allowed)."""
    if not team_allowed():
        return False
    l2 = l2_bytes()
    dot = layer.dot_layout() is not None
    if dot and B >= DOT_DIRECTION_A_THREAD_MIN_BATCH and l3_feeds_each_core_fast():
        return False
    # The bytes the team's steps read at every batch: the stored form on the
    # dot kernels, else float values (without them, batches past 1 read float32).
    w_hh = layer.stored[1][0][0].nbytes if dot else layer.w_hh[0].nbytes
    # A share past L2 streams from L3 as a thread on its own direction does: float
    # panels then win from a register tile's rows (measured both ways, above).
    if not dot and w_hh > TEAM.size * l2 and B >= TILE_ROWS:
        return False
    return B < GEMM_STEPS_MIN_BATCH and 0 < l2 <= w_hh


def _in_reverse(a, lengths, T: int):
    """a (T, B, F) with each sequence's first lengths[b] steps in reverse
    order and its padded steps 0: what the reverse direction reads as its
    input, and, applied to that direction's output, its output in time order."""
    if (lengths == T).all():
        return np.ascontiguousarray(a[::-1])
    t = lengths[None, :] - 1 - np.arange(T)[:, None]  # (T, B) the source step
    out = a[np.maximum(t, 0), np.arange(a.shape[1])[None, :]]
    out[t < 0] = 0
    return out


def _run_directions_on_team(x, layer: PackedLayer, h0, c0, lengths, h_n, c_n):
    T, B = x.shape[:2]
    H = layer.hidden_size
    out = np.empty((T, B, 2 * H), x.dtype)
    for d, stack in enumerate(layer.direction_stacks()):
        x_d = x if d == 0 else _in_reverse(x, lengths, T)
        out_d, h_d, c_d = _run_team(stack, x_d, h0[d:d + 1], c0[d:d + 1], lengths)
        out[:, :, d * H:(d + 1) * H] = out_d if d == 0 else _in_reverse(out_d, lengths, T)
        h_n[d] = h_d[0]
        c_n[d] = c_d[0]
    return out


def _run_panels(x, layer: PackedLayer, h0, c0, lengths, h_n, c_n, fused: bool = False):
    dot = layer.dot_layout()  # (hh, ih) on a dot kernel (int8 or bfloat16), or None
    if fused:
        return _run_layer(x, layer, layer.input_and_hidden_panels(), h0, c0, lengths, h_n, c_n,
                          panels=True, project=False)
    return _run_layer(x, layer, layer.panels()[1], h0, c0, lengths, h_n, c_n, panels=True,
                      project=True, hh_dot=None if dot is None else dot[0],
                      ih_dot=None if dot is None else dot[1])


def _run_fused(x, layer: PackedLayer, h0, c0, lengths, h_n, c_n):
    return _run_panels(x, layer, h0, c0, lengths, h_n, c_n, fused=True)


def _run_axpy(x, layer: PackedLayer, h0, c0, lengths, h_n, c_n):
    no_panels = np.empty((layer.num_directions, 0, 0, 0), layer.w_hh.dtype)
    return _run_layer(x, layer, no_panels, h0, c0, lengths, h_n, c_n, panels=False, project=True)


_NO_DOT = (np.empty((0, 0, 0, 0), np.int8), np.empty((0, 0), np.int32),
           np.empty((0, 0), np.float32))


def _run_layer(x, layer: PackedLayer, w_panels, h0, c0, lengths, h_n, c_n, panels: bool,
               project: bool, hh_dot: tuple | None = None, ih_dot: tuple | None = None):
    """The layer loop's tasks, D directions x n_chunks batch slices. One task
    on the axpy rows runs the serial loop on this thread (gx projected on this
    thread first); otherwise the tasks are one team job (cpu.team_layer), whose
    threads project gx by row blocks and then claim the tasks (only the
    job's compile has the tiles). ``project``: the steps read gx, else each
    projects its own input (w_panels then holds [W_ih; W_hh]^T)."""
    T, B = x.shape[:2]
    D, G = layer.num_directions, layer.w_hh.shape[2]
    dtype = layer.w_hh.dtype
    threads = _threads(layer, B)
    n_chunks = _n_chunks(layer, B, threads)
    out = aligned_empty((T, B, D * layer.output_size), dtype)
    if not panels and _one_task(layer, n_chunks):
        gx = _one_thread_projection(x, layer) if project else np.empty((0, B, D * G), dtype)
        layer_kernels(layer.cell).serial(x, gx, layer.w_hh, w_panels, layer.w_hr,
                                         layer.step_bias, layer.cell_params, h0, c0, lengths,
                                         out, h_n, c_n, n_chunks, panels, hh_dot)
        return out
    kind, loop = layer_serve(layer.cell, dtype, dot_kind(hh_dot), dot_kind(ih_dot))
    TEAM.register(kind, loop)
    gx = scratch.take((T if project else 0, B, D * G), dtype)
    w_ih = layer.panels()[0] if project else np.empty((D, 0, 0, 0), dtype)
    counters = np.zeros(2 * PROJECTION_LINE + D * n_chunks, np.int64)  # projection's, tasks'
    # 2: the projection puts x on h's 8-bit grid (team_layer.describe_layer_job)
    projection = 0 if not project else 2 if layer.input_is_hidden else 1
    job = (x, gx, layer.w_hh, w_panels, layer.w_hr, layer.step_bias, layer.cell_params, h0, c0,
           lengths, out, h_n, c_n, n_chunks, panels, counters[2 * PROJECTION_LINE:],
           *(_NO_DOT if hh_dot is None else hh_dot), projection, w_ih, layer.bias,
           counters[:2 * PROJECTION_LINE], *(_NO_DOT if ih_dot is None else ih_dot),
           project and projection_sliced(layer, ih_dot))
    # The job's threads see raw addresses (team.view): every array must be C-contiguous.
    assert all(a.flags.c_contiguous for a in job if isinstance(a, np.ndarray))
    # One thread allowed (numba.set_num_threads(1)): a control array no helper watches.
    ctrl = TEAM.acquire() if threads > 1 else np.zeros(CTRL_SIZE, np.int64)
    try:
        describe_layer_job(ctrl, kind, *job)
        loop(ctrl, 0, 0)
    finally:
        if threads > 1:
            TEAM.release(ctrl, kind)
        scratch.give(gx)
    return out


def _one_thread_projection(x, layer: PackedLayer):
    """gx (T, B, D*G) = x @ W_ih^T + bias for every step, on this thread, by the
    panel GEMM (cpu.projection): NumPy's BLAS would wake worker threads that
    then spin against the team's and other libraries' (G1 through BLAS: 0.4 to
    15 ms a call in sets where the panels took 0.23-0.25 ms)."""
    T, B, I = x.shape
    DG = layer.w_ih.shape[1]
    gx = aligned_empty((T * B, DG), x.dtype)  # (T*B, D*G)
    # the flags spelled out: left out, they make a compiled kernel of their own
    input_projection(x.reshape(T * B, I), layer.panels()[0], layer.bias, gx, None,
                     np.zeros(2 * PROJECTION_LINE, np.int64), False, False)
    return gx.reshape(T, B, DG)  # explicit sizes: B may be 0


def _always(*args) -> bool:
    return True


def _never(*args) -> bool:
    return False


STRATEGIES = (
    # Whole stacks.
    Strategy("team", "stack", _team_can_run, _team_preferred, _run_team),
    Strategy("stream_step", "stack", _stream_step_can_run, _always, _run_stream_step),
    Strategy("layers", "stack", _always, _always, _run_layers),
    # NumPy on the packed weights: what runs while the compiled strategies are
    # not ready (cpu.warm), never picked for speed.
    Strategy("numpy", "stack", _always, _never, numpy_forward),
    # One layer at a time (the "layers" strategy).
    Strategy("team_directions", "layer", _directions_on_team_can_run,
             _directions_on_team_preferred, _run_directions_on_team),
    Strategy("panels_fused", "layer", _fused_can_run, _fused_preferred, _run_fused),
    Strategy("panels", "layer", _panels_can_run, _panels_preferred, _run_panels),
    Strategy("axpy", "layer", _always, _always, _run_axpy),
)
BY_NAME = {s.name: s for s in STRATEGIES}


def _pick(scope: str, forced: str | None, *case) -> Strategy:
    if forced is not None and BY_NAME[forced].scope == scope:
        strategy = BY_NAME[forced]
        if not strategy.can_run(*case):
            raise ValueError(f"strategy {forced!r} cannot run this case")
        return strategy
    return next(s for s in STRATEGIES
                if s.scope == scope and s.can_run(*case) and s.prefer(*case))


def layer_forward(x, layer: PackedLayer, h0, c0, lengths, h_n, c_n, strategy: str | None = None):
    """One layer over x (T, B, I) C-contiguous of the layer's dtype.

    h0 (D, B, H_out), c0 (D, B, Hc) C-contiguous (Hc = H, or 0 without a cell
    state), lengths (B,) int64; the final states are written into h_n, c_n.
    Returns out (T, B, D*H_out). ``strategy`` forces a layer strategy by name.
    """
    T, B = x.shape[:2]
    return _pick("layer", strategy, layer, T, B).run(x, layer, h0, c0, lengths, h_n, c_n)


def forward(layers: PackedStack, x, h0, c0, lengths, strategy: str | None = None):
    """A stack of layers over x (T, B, I); h0 (L*D, B, H_out), c0 (L*D, B, Hc),
    or None for zeros. lengths (B,) int64, or None for full-length sequences.
    ``strategy`` forces one of STRATEGIES by name (tests).

    Returns output (T, B, D*H_out), h_n (L*D, B, H_out), c_n (L*D, B, Hc).
    """
    T, B = x.shape[:2]
    if strategy is not None and BY_NAME[strategy].scope == "layer":
        return _run_layers(layers, x, h0, c0, lengths, strategy)
    stack = _pick("stack", strategy, layers, T, B)
    if strategy is None:
        known = layers.__dict__.setdefault("_ready", set())  # (stack strategy, B) known ready
        if (stack.name, B) not in known:
            if not WARMUP.ready(_compiled_strategies(stack, layers, T, B)):
                return numpy_forward(layers, x, h0, c0, lengths)  # until compiled (cpu.warm)
            known.add((stack.name, B))
    if stack.name == "layers":
        return _run_layers(layers, x, h0, c0, lengths, strategy)
    return stack.run(layers, x, h0, c0, lengths)


def team_streams(layers: PackedStack) -> bool:
    """Whether a stream's steps go to the team (TeamStepper) rather than one
    thread (StackStepper). A step reads every weight once. Past one core's L2,
    one thread reads them from L3, at what one core can pull from it; the
    team's threads read half each, from their own L2s where the halves fit, else
    from L3 side by side: measured 1.9-4x faster from 3.3 to 12.5 MB of
    weights on 2 MB L2s (docs/performance.md). Within one L2 the team's
    handover costs about what it saves. The bytes are those the one-thread
    step reads: an int8 stack's dot layout, else float32 (a bfloat16 stack's
    one-thread step reads its float32 values; the team, its bfloat16)."""
    l2 = l2_bytes()
    if (layers.step is None or not team_allowed() or l2 == 0
            or not _team_blocks_take_the_dot(layers[0])):
        return False
    dot = layers.quantized_step()
    arrays = layers.step if dot is None else [a for part in dot for a in part]
    return sum(a.nbytes for a in arrays) > l2


def stepper(layers: PackedStack, h, c, batched: bool):
    """A stream's stepper for a stack with a one-call step (layers.step), from
    state (h, c) in the module's hx shape: TeamStepper where team_streams says
    so, else StackStepper."""
    if team_streams(layers):
        return TeamStepper(layers, h, c, batched, TEAM, _team_blocks())
    return StackStepper(layers, h, c, batched)


def stream_step_ready(layers: PackedStack) -> bool:
    """Whether a stream may step through the compiled stepper (``stepper``)
    now; until then its steps run through forward, which answers with NumPy
    while the kernels compile (cpu.warm)."""
    keys = (key_of("stream_step", layers),)
    if team_streams(layers):
        keys += (key_of("team", layers),)
    return WARMUP.ready(keys)


def _compiled_strategies(stack: Strategy, layers: PackedStack, T: int, B: int):
    """cpu.warm's keys of the compiled strategies a call runs: the stack's, or
    each layer's, by precompile's case names (the axpy rows are two kernels)."""
    if stack.name != "layers":
        return (key_of(stack.name, layers),)
    keys = set()
    for layer in layers:
        name = _pick("layer", None, layer, T, B).name
        if name == "axpy" and not _one_task(layer, _n_chunks(layer, B, _threads(layer, B))):
            name = "axpy threaded"  # a kernel of its own (_run_axpy)
        keys.add(key_of(name, layers))
    return keys


def _team_stack(ctrl, kind: int, layers: PackedStack, x, h0, c0, lengths, steps: int):
    """One direction, no projection, small batch: the team shares the input
    projections and every step of every layer (numba_lstm.cpu.cooperative).
    h0, c0 may be None for zeros; steps = lengths.max(). At T=2 (S1's shape)
    the Python here costs about as much as the job (~20 µs each, measured), so
    it allocates as little as it can."""
    T, B, _ = x.shape
    L, H = len(layers), layers[0].hidden_size
    dtype = layers[0].w_hh.dtype
    n_blocks = _team_blocks()
    w_ih0, w_ih_rest, bias, w_hh, bias_h = layers.team_blocks(n_blocks)
    quantized = layers.team_quantized_blocks(n_blocks) + layers.team_quantized_projection(n_blocks)
    G = bias.shape[2]  # gates x U, a block's gate columns
    has_c = layers[0].cell.has_cell_state
    if h0 is not None and not has_c:  # the job's c (L, B, H) is then scratch the cell never reads
        c0 = np.zeros((L, B, H), dtype)
    h_buf, c_n, out, mid, _, claims, done = stack_job_buffers(L, B, H, T, steps, n_blocks,
                                                             TEAM.size, dtype, h0, c0)
    gx = scratch.take((n_blocks, steps * B, G), dtype)
    try:
        stack_team(ctrl, kind, x, w_ih0, w_ih_rest, bias, w_hh, bias_h, *quantized, lengths,
                   gx, h_buf, c_n, out, mid, claims, done, steps, TEAM.size,
                   layers[0].input_is_hidden)
    finally:
        scratch.give(gx)
    if not has_c:
        c_n = np.empty((L, B, 0), dtype)
    return out, np.ascontiguousarray(h_buf[:, steps % 2]), c_n
