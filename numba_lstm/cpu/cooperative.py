"""Small-batch recurrence shared by the team's threads (numba_lstm.cpu.team).

At small batch a step is a matrix-vector product of a few µs: too short for a
thread-pool launch per step, and too dependent on the previous step to split
in time. Instead the caller and the helpers run the same job on the same
arrays: a whole stack of layers, one after the other. Each layer's hidden
units are cut into blocks, with the block's W_ih and W_hh columns laid out
contiguously (packing.team_blocks), so a thread that keeps computing the same
blocks keeps their weights in its own L2 step after step. A task (a block of
one step, or of the input projection) is computed by whichever thread claims
it first (an atomic counter per task) once the tasks it depends on are done;
each thread tries its own blocks first. No thread waits for another except on
a task that thread is computing, so a helper that is late or absent costs
nothing, and one that runs slow (a shared VM's cores do) gets fewer blocks.

Kernels trust their arguments; numba_lstm.cpu prepares them.
"""

import numpy as np
from numba import njit

from ..cells import LSTM, Cell, rebind
from .activation_grids import float_rows_acc, quantize_rows
from .aligned import aligned_empty, aligned_zeros, empty_on_lines
from .atomics import fetch_add, load_acquire, wait_until
from .dot_gemm import DOT_NR, dot_acc, dot_k_bytes
from .layer import row_function
from .panel_gemm import gemm_layout_acc, gemm_panels2_acc
from .recurrence import _FLAGS, copy_row, keep_alive, unowned
from .row_step import row_block_step
from .simd import prefetch
from .team import DESC, KIND, serve, view
from .team_quantized import (
    dot_blocks,
    dot_bytes,
    layer_projection,
    layer_recurrence,
    quantized_row_step,
    recurrence_dot,
)

# The cell, bound per cell by cell_serve() (the LSTM's here). Cells whose gates
# are all summed add h's products to gx's rows in place; the others (GRU) sum
# into a scratch row, the x part of their unsummed gates staying in gx for the
# cell. The batch-1 register kernels (cpu.row_step) are the LSTM's.
cell_row = row_function(LSTM)
GATES = SUMMED = 4
LSTM_ROWS = True

PROJECTION_ROWS = 64  # (time step, batch row) pairs per input-projection task
# What quantizing one value of x for a dot projection costs, in the output
# columns whose two-byte (or two-part bfloat16) multiply-adds take as long:
# 54-112 ns a row of 256 against 218 G multiply-adds/s (Zen 5). It prices a
# projection by row chunks, each quantized once for every block, against one
# by (block, row chunk), each quantizing its rows again (_by_blocks).
QUANTIZE_COLUMNS = 64
# The smallest L2 among the CPUs we run on (Zen 2 and 3; a quarter of the
# Xeons'): a projection whose W_ih is this large goes by block (_by_blocks).
# Below it, on Zen 5, by block measured 0.93-0.96x (bfloat16 S9, int8 B=12
# H=128: each row quantized again per block costs more than it saves).
PROJECTION_W_BYTES = 512 * 1024
# Where one block's W_ih is past a 2 MB L2, every task reads it from L3: such
# projections take tasks of PROJECTION_ROWS_PAST_L2 rows, four times fewer
# passes over it (bfloat16 H = 1024: each 4 MB block; float32 I = 2048, H =
# 1024, 192 rows: 1.10x a layer).
PROJECTION_ROWS_PAST_L2 = 4 * PROJECTION_ROWS
BLOCK_W_PAST_L2_BYTES = 2 * 1024 * 1024
# Per layer, done[layer] counts finished tasks, each counter on its own cache
# line: projection tasks in [0], and the recurrence blocks thread t computed in
# [LINE * (1 + t)]. One counter per thread, written by that thread only, so that
# finishing a block costs no transfer of a line the other thread also writes
# (a shared counter and shared claim lines cost ~2 µs a step on these VMs).
LINE = 8  # int64 per 64-byte cache line
# A wait this long (~30-150 µs of loads) means the other thread was descheduled
# mid-block, not merely slower; the caller then runs SOLO_STEPS steps alone.
# For blocks of more multiply-adds than STALL_MACS (S4's: ~10 µs), the wait
# grows with them: a slower thread's block of 200 µs (B = 32, H = 512) is not
# a stall; and so it does for blocks of more weight bytes than STALL_BYTES
# (S4's again), which at small batch take their time reading them (a 3 MB
# bfloat16 block past L2: ~60 µs a step, where its multiply-adds say ~10).
STALL_SPINS = 1 << 15
STALL_MACS = 8 * 256 * 512
STALL_BYTES = 256 * 512 * 4
SOLO_STEPS = 32
# From this batch a float block step asks for its gate rows before the
# product (S6 1.03x at stop 20; 1.01x at stop 33, 6 alternating pairs); below
# it, where a step's rows are few and its product short, the same prefetch
# measured 0.97-0.98x (S4, S9). A step on the dot layout does without: with
# its rows on cache lines it measured 0.97x (bfloat16 S6 and I = H = 1024).
PREFETCH_GATES_MIN_BATCH = 16
# How long (~2-4 µs of loads) a thread that has finished its own blocks waits
# for another thread's before taking them itself.
STEAL_SPINS = 1 << 11


@njit(**_FLAGS)
def projection_tasks(steps, batch, n_blocks):
    """A layer's input-projection tasks: (block, row chunk) pairs."""
    return n_blocks * ((steps * batch + PROJECTION_ROWS - 1) // PROJECTION_ROWS)


@njit(**_FLAGS)
def claim_count(steps, batch, n_blocks):
    """Claims of one layer: the projection tasks', then the (step, block) tasks'
    block by block (step_claim), each block's on cache lines of its own."""
    return recurrence_claims_start(steps, batch, n_blocks) + n_blocks * _lines(steps)


@njit(inline="always", **_FLAGS)
def _lines(n):
    """n rounded up to whole cache lines of int64."""
    return (n + LINE - 1) // LINE * LINE


@njit(**_FLAGS)
def recurrence_claims_start(steps, batch, n_blocks):
    """Where a layer's (step, block) claims start, after the projection's."""
    return _lines(projection_tasks(steps, batch, n_blocks))


@njit(inline="always", **_FLAGS)
def step_claim(q, s, steps):
    """Index of block q's claim at step s in a layer's recurrence claims: block
    by block, so that a thread claiming its own blocks touches only lines the
    other threads leave alone."""
    return q * _lines(steps) + s


def done_size(n_threads: int) -> int:
    """Length of a layer's row of done counters."""
    return LINE * (1 + n_threads)


@njit(inline="always", **_FLAGS)
def steps_done(done, n_threads):
    """Recurrence blocks of a layer finished so far, by every thread."""
    total = 0
    for t in range(n_threads):
        total += load_acquire(done, LINE * (1 + t))
    return total


@njit(inline="always", **_FLAGS)
def count_block(done, tid):
    """One more recurrence block finished by thread tid."""
    fetch_add(done, LINE * (1 + tid), 1)


@njit(inline="always", **_FLAGS)
def _block_bytes(dot, w):
    """Bytes of one unit block's weights as its kernels read them: the dot
    layout's where ``dot`` has one, else the float panels' of w (nb, ...)."""
    return dot_bytes(dot) // w.shape[0] if dot_blocks(dot) > 0 else w[0].size * w.itemsize


@njit(inline="always", **_FLAGS)
def _by_blocks(n_rows, nb, columns, n_threads, eight_bit, w_bytes):
    """Whether a quantized projection goes by (block, row chunk) tasks: where a
    row chunk's task would stream W_ih's every block (w_bytes in all) past
    PROJECTION_W_BYTES, which a thread's tasks on one block keep in its L2
    (bfloat16 S6 on the AMX Xeon: 2 MB a task; 1.13x); or where row chunks
    would leave one thread more rows than the others by more than quantizing
    every row once per block costs (S3: 200 rows, 128 and 72 on two threads;
    a short sequence's one chunk on one thread). In units of a block's
    products of one row, a chunk task costs nb + r a row, a block task 1 +
    r, r = QUANTIZE_COLUMNS / columns (doubled for 8-bit rows, whose
    products take one pass instead of two)."""
    if w_bytes >= PROJECTION_W_BYTES:
        return True
    n_chunks = (n_rows + PROJECTION_ROWS - 1) // PROJECTION_ROWS
    most_rows = min(n_rows, (n_chunks + n_threads - 1) // n_threads * PROJECTION_ROWS)
    r = QUANTIZE_COLUMNS * (2 if eight_bit else 1) / columns
    # block tasks: nb times the rows, shared out evenly (a task is a chunk at most)
    block_rows = max(nb * n_rows / n_threads, min(n_rows, PROJECTION_ROWS))
    return block_rows * (1 + r) < most_rows * (nb + r)


@njit(inline="always", **_FLAGS)
def _project(rows, w_ih, dot, bias, gx, claims, done, tid, n_threads, eight_bit):
    """gx[q, r] = bias[q] + rows[r] @ W_ih^T[:, block q]; w_ih (nb, P, K, NR),
    each block's columns in panels, by (block q, row chunk) tasks. With the
    int8 dot layout (dot = (w_dot (nb, P, K4, 4 * DOT_NR), offset, scale (nb,
    4U)), nb > 0: packing.team_quantized_projection; None for a float stack),
    by row chunk: each row is quantized to int16 once (activation_grids.quantize_row16;
    to 8 bits, h's grid, with ``eight_bit``: rows are the layer below's h) for
    every block, or by (block, chunk) where too few chunks would leave the
    threads unevenly loaded (_by_blocks: the same bytes, the same bits); a row
    that is not finite takes the float panels alone."""
    nb = w_ih.shape[0]
    n_rows = gx.shape[1]
    quantized = dot_blocks(dot) > 0
    w_bytes = dot_bytes(dot)  # every block's W_ih in the dot layout
    chunk = (PROJECTION_ROWS_PAST_L2 if _block_bytes(dot, w_ih) >= BLOCK_W_PAST_L2_BYTES
             else PROJECTION_ROWS)
    n_chunks = (n_rows + chunk - 1) // chunk
    by_block = not quantized or _by_blocks(n_rows, nb, gx.shape[2], n_threads, eight_bit,
                                           w_bytes)
    n_tasks = nb * n_chunks if by_block else n_chunks
    k_bytes = dot_k_bytes(dot)
    lo_mem = empty_on_lines(chunk, k_bytes, np.uint8)
    hi_mem = empty_on_lines(chunk, k_bytes, np.uint8)
    s_rows_mem = np.empty(chunk, np.float32)
    lo, hi, s_rows = unowned(lo_mem), unowned(hi_mem), unowned(s_rows_mem)
    for i in range(n_tasks):
        task = (tid * n_tasks // n_threads + i) % n_tasks
        if fetch_add(claims, task, 1) == 0:
            q_first, q_end = (task // n_chunks, task // n_chunks + 1) if by_block else (0, nb)
            r0 = (task % n_chunks) * chunk
            r1 = min(r0 + chunk, n_rows)
            not_finite = quantize_rows(rows[r0:r1], lo[:r1 - r0], hi[:r1 - r0],
                                       s_rows[:r1 - r0], dot, eight_bit) if quantized else -1
            for q in range(q_first, q_end):
                # (rows, GU) = bias + (rows, K) @ (K, GU): int8 or bfloat16 x the rows'
                # grid (the bias read by the kernel's epilogue), else float
                if not (not_finite >= 0 and dot_acc(gx[q, r0:r1], lo[:r1 - r0], hi[:r1 - r0],
                                                    s_rows[:r1 - r0], dot, q, False, eight_bit,
                                                    bias[q:q + 1])):
                    for r in range(r0, r1):
                        copy_row(bias[q], gx[q, r])
                    gemm_layout_acc(gx[q, r0:r1], 0, gx.shape[2], rows[r0:r1], w_ih[q])
                elif not_finite > 0:  # those rows' float products, theirs alone
                    float_rows_acc(gx[q, r0:r1], 0, gx.shape[2], rows[r0:r1], w_ih[q], False,
                                   s_rows[:r1 - r0], gemm_layout_acc)
            fetch_add(done, 0, 1)
    wait_until(done, 0, n_tasks)
    keep_alive(lo_mem, hi_mem, s_rows_mem)


@njit(inline="always", **_FLAGS)
def h_in_out(lengths, steps):
    """Whether the steps' h live in out itself (each step reading out[s - 1]):
    when every row runs every step; a copy of h into out per step cost S4's
    step 5-8%. Otherwise h ping-pongs in h_buf and rows past their length
    output 0."""
    for b in range(lengths.shape[0]):
        if lengths[b] < steps:
            return False
    return True


@njit(inline="always", **_FLAGS)
def _block_step(gx, w_hh, bias_h, quantized, lengths, h_buf, c, out, s, steps, q, lo, hi, s_rows,
                sums, in_place):
    """Block q's units at step s for every batch row: gates from h_buf[s % 2],
    the new h into h_buf[(s + 1) % 2] and out[s]. Rows past their length carry
    their state over and output 0. ``in_place`` (every row runs every step):
    out holds the steps' h, h0 in h_buf[0] (_recur); the new h goes to out[s]
    alone, but the last step's goes to h_buf[steps % 2] too, where the caller
    reads the final state: written by the block itself, since a copy after the
    layer raced the layer two above, which writes the same out (a thread
    descheduled before its copy read that layer's h). gx (nb, steps*B, GU):
    the projections, to which block q's rows of step s add h's products in
    place (each is read once), or, for a cell with unsummed gates, which are
    copied into sums (B, GU) with bias_h (nb, GU) first. w_hh (nb, P, H, NR):
    each block's W_hh^T in panels; a quantized stack's steps read
    ``quantized`` instead: (w_i8, w_bf16, scale, w_dot, offset) of one layer
    (packing.team_quantized_blocks; None for a float stack), the int8 dot
    layout where it exists (at batch > 1 only it: the widening kernels are
    batch-1 ones); lo, hi (B, 4 * K4) and s_rows (B,) are its scratch."""
    B, H = c.shape
    U = gx.shape[2] // GATES
    j0 = q * U
    units = slice(j0, min(j0 + U, H))
    h_prev = (h_buf[0] if s == 0 else out[s - 1]) if in_place else h_buf[s % 2]
    h_in_out_only = in_place and s < steps - 1
    h_next = out[s] if h_in_out_only else h_buf[1 - s % 2]
    if LSTM_ROWS and B == 1 and s < lengths[0]:  # LSTM_ROWS: a constant per compile
        reverse = s % 2 == 1
        if quantized_row_step(quantized, q, gx[q, s], h_prev[0], lo[0], hi[0], c[0, units],
                              h_next[0, units], out[s, 0, units], reverse):
            return
        if row_block_step(gx[q, s], w_hh[q], None, h_prev[0], c[0, units], h_next[0, units],
                          out[s, 0, units], reverse):
            return
    # Half of h_prev's lines were written by the other thread last step: asked
    # for all at once, their transfers overlap instead of stalling the first
    # panel's k loop one line at a time (S4, S9: 1.02-1.05x).
    for b in range(B):
        for k in range(0, H, 64 // h_prev.itemsize):
            prefetch(h_prev, b, k)
    rows = gx[q, s * B:(s + 1) * B]  # (B, GU)
    dot = recurrence_dot(quantized)
    # Those rows were written by the projection long ago (L3 or memory): asked
    # for now, they do not stall each panel's stores one line at a time.
    if B >= PREFETCH_GATES_MIN_BATCH and dot_blocks(dot) == 0:
        for b in range(B):
            for j in range(0, rows.shape[1], 64 // rows.itemsize):
                prefetch(rows, b, j)
    if GATES == SUMMED:  # a constant per compile
        acc = rows  # the block's gates summed in gx's own rows (each read once): no copy
    else:
        acc = sums
        S = SUMMED * U
        for b in range(B):
            copy_row(rows[b, :S], acc[b, :S])
            copy_row(bias_h[q, S:], acc[b, S:])
    # (B, GU) += (B, H) @ (H, GU): int8 x h's 8-bit grid (bfloat16 x h's) where the
    # dot layout covers whole panels and every h is finite, else float32
    reverse = s % 2 == 1
    not_finite = (quantize_rows(h_prev, lo, hi, s_rows, dot, True)
                  if dot_blocks(dot) > 0 and acc.shape[1] % DOT_NR == 0 else -1)
    if not (not_finite >= 0 and dot_acc(acc, lo, hi, s_rows, dot, q, reverse, True)):
        gemm_panels2_acc(acc, 0, acc.shape[1], h_prev, w_hh[q], reverse)
    elif not_finite > 0:  # those rows' float products, theirs alone
        float_rows_acc(acc, 0, acc.shape[1], h_prev, w_hh[q], reverse, s_rows, gemm_panels2_acc)
    for b in range(B):
        if s < lengths[b]:
            # The cells here read no parameters: acc stands in for them.
            cell_row(acc[b], rows[b], h_prev[b, units], c[b, units], h_next[b, units], acc)
            if not h_in_out_only:
                copy_row(h_next[b, units], out[s, b, units])
        else:
            copy_row(h_prev[b, units], h_next[b, units])
            out[s, b, units] = 0


@njit(inline="always", **_FLAGS)
def _wait_for_steps(done, n_threads, count, spin_limit):
    """Spin until count recurrence blocks are done (True), or for spin_limit
    iterations (False)."""
    for _ in range(spin_limit):
        if steps_done(done, n_threads) >= count:
            return True
    return False


@njit(inline="always", **_FLAGS)
def _recur(gx, w_hh, bias_h, quantized, lengths, h_buf, c, out, claims, done, steps, tid,
           n_threads):
    """Steps 0..steps-1 by (step, block) tasks; a step's blocks start once every
    block of the previous step is done.

    Each thread owns a run of blocks and claims those first: on its own claim
    lines, so the claims cost no line transfers. It takes another thread's
    block only if that block is still unclaimed once the thread has waited
    STEAL_SPINS for it; having won one, it takes the others' blocks at once
    until it loses a claim (a helper that has not joined yet, or has left, is
    not waited for step after step). Each thread starts that way, eager.

    A block, once claimed, can only be waited for: when the host deschedules the
    thread computing it (a shared VM's cores are, for milliseconds at a time),
    the others stall. So when the caller (tid 0) has waited for a step far
    longer than a block takes, it claims every block of the next SOLO_STEPS
    steps it can: at most one such stall per SOLO_STEPS steps. It computes only
    the blocks whose claim it won. A helper may already have claimed some: once
    the caller's wait ends, the helper can finish step s and claim step s+1
    before the caller's claims land (a first version assumed it could not,
    recomputed such blocks, updating c twice and over-counting `done`; it gave
    wrong numbers about once in 50 calls with a CPU hog running).
    """
    nb = w_hh.shape[0]
    in_place = h_in_out(lengths, steps)
    dot = recurrence_dot(quantized)
    k_bytes = dot_k_bytes(dot)  # a dot kernel's h bytes, or 0
    B = c.shape[0]
    lo_mem, hi_mem = empty_on_lines(B, k_bytes, np.uint8), empty_on_lines(B, k_bytes, np.uint8)
    s_rows_mem = np.empty(B, np.float32)
    sums_mem = empty_on_lines(B if GATES != SUMMED else 0, gx.shape[2], gx.dtype)
    won_mem = np.zeros(SOLO_STEPS * nb, np.bool_)
    lo, hi, s_rows = unowned(lo_mem), unowned(hi_mem), unowned(s_rows_mem)
    sums = unowned(sums_mem)  # (B, GU)
    won = unowned(won_mem)  # the pre-claims this thread won
    block_macs = B * gx.shape[2] * h_buf.shape[2]  # (B, H) @ (H, GU)
    stall_spins = STALL_SPINS * max(1, block_macs // STALL_MACS,
                                    _block_bytes(dot, w_hh) // STALL_BYTES)
    own_lo, own_hi = tid * nb // n_threads, (tid + 1) * nb // n_threads
    n_own = own_hi - own_lo
    eager = True
    solo_from = solo_end = 0  # steps this thread has pre-claimed
    for s in range(steps):
        spins = 0
        while steps_done(done, n_threads) < s * nb:
            spins += 1  # waits here are sub-µs; PAUSE alone costs ~50 ns on recent Intel
        if tid == 0 and spins > stall_spins and s >= solo_end:
            solo_from, solo_end = s + 1, min(s + 1 + SOLO_STEPS, steps)
            for later in range(solo_from, solo_end):
                for q in range(nb):
                    won[(later - solo_from) * nb + q] = (
                        fetch_add(claims, step_claim(q, later, steps), 1) == 0)
        pre_claimed = solo_from <= s < solo_end
        for i in range(nb):
            # Odd steps take the own blocks last to first: the weights read last
            # are read first, while still in L2 (S3: 2 MB a thread a step, 1 MB
            # of L2; measured 78-157 against 151-191 µs a step, two threads).
            q = own_hi - 1 - i if i < n_own and s % 2 == 1 else (own_lo + i) % nb
            foreign = not own_lo <= q < own_hi
            if pre_claimed:
                mine = won[(s - solo_from) * nb + q]
            else:
                if foreign and not eager and _wait_for_steps(done, n_threads, (s + 1) * nb,
                                                             STEAL_SPINS):
                    break  # its owner finished it: the step is done
                mine = fetch_add(claims, step_claim(q, s, steps), 1) == 0
                if foreign:
                    eager = mine
            if mine:
                _block_step(gx, w_hh, bias_h, quantized, lengths, h_buf, c, out, s, steps, q, lo,
                            hi, s_rows, sums, in_place)
                count_block(done, tid)
    _wait_for_steps(done, n_threads, steps * nb, 1 << 62)
    keep_alive(lo_mem, hi_mem, s_rows_mem, sums_mem, won_mem)


@njit(**_FLAGS)
def stack_job(x, w_ih0, w_ih_rest, bias, w_hh, bias_h, hh_quantized, ih_quantized, lengths, gx,
              h_buf, c, out, mid, claims, done, steps, tid, n_threads, x_is_hidden):
    """Steps 0..steps-1 of a stack of L layers, one direction, no projection;
    the share of thread tid of n_threads.

    x (T, B, I);  by unit block (packing.team_blocks): w_ih0 (nb, P_x, I, NR_x)
    and w_ih_rest (L-1, nb, P_x, H, NR_x) W_ih^T of layer 0 and of the others
    in the large-batch GEMM's panels (cpu.panel_gemm), bias (L, nb, GU) the x
    side's, w_hh (L, nb, P, H, NR) W_hh^T in panels, bias_h (L, nb, GU) the h
    side's of unsummed gates, or (L, nb, 0) (packing.team_blocks);
    hh_quantized: None for a float stack, else (w_i8, w_bf16, scale, w_dot,
    offset) (packing.team_quantized_blocks): w_i8 or w_bf16 (L, nb, P, H, NR)
    and scale (L, nb, 4U) the stored W_hh^T, read at batch 1, w_dot (L, nb, P,
    K4, 4 * DOT_NR) and offset (L, nb, 4U) its int8 dot layout, each (L, 0,
    ...) where absent;  ih_quantized: None, or (ih_dot0 (nb, P, K4, 4 *
    DOT_NR), ih_dot_rest (L-1, nb, ...), ih_offset, ih_scale (L, nb, 4U)): an
    int8 stack's W_ih^T for the projections
    (packing.team_quantized_projection), with 0 blocks where absent;  lengths
    (B,) int64;  gx (nb, steps*B, GU) scratch;  h_buf (L, 2, B, H) ping-pong,
    h0 in [l, 0], the final h in [l, steps % 2]; c (L, B, H) c0, updated in
    place;  out and mid (T, B, H): the last layer writes out, the one below it
    mid, and so on alternately; rows 0..steps-1 are written;  claims (L *
    claim_count,) and done (L, done_size(n_threads)) int64, zero before the
    first thread (for a cell without c, c is scratch it never reads);
    x_is_hidden: x is the h of a layer below (a two-direction layer's
    direction run as a stack), so a quantized projection puts it on h's
    grid, as the layer loop does, not on x's.

    Returns once every task is done.
    """
    L = w_hh.shape[0]
    B = x.shape[1]
    n_projection = recurrence_claims_start(steps, B, gx.shape[0])
    per_layer = claim_count(steps, B, gx.shape[0])
    for layer in range(L):
        dst = out if (L - 1 - layer) % 2 == 0 else mid
        src = mid if (L - 1 - layer) % 2 == 0 else out
        layer_claims = claims[layer * per_layer:(layer + 1) * per_layer]
        dot = layer_projection(ih_quantized, layer)
        if layer == 0:
            _project(x.reshape((x.shape[0] * B, x.shape[2]))[:steps * B], w_ih0, dot, bias[0],
                     gx, layer_claims, done[0], tid, n_threads, x_is_hidden)
        else:  # the input is the layer below's h: its 8-bit grid
            _project(src.reshape((src.shape[0] * B, src.shape[2]))[:steps * B],
                     w_ih_rest[layer - 1], dot, bias[layer], gx, layer_claims, done[layer], tid,
                     n_threads, True)
        _recur(gx, w_hh[layer], bias_h[layer], layer_recurrence(hh_quantized, layer), lengths,
               h_buf[layer], c[layer], dst, layer_claims[n_projection:], done[layer], steps, tid,
               n_threads)


# Job kinds, one compiled serve loop each, so that a process compiles only the
# kinds it runs: a float32 stack's job has none of the int8 and bfloat16
# kernels a quantized one's has (team_quantized).
# A bfloat16 stack with the dot layout (vdpbf16ps) has a kind of its own: its
# dot arrays are bfloat16 pairs (uint8), int8's are int8.
FLOAT32, FLOAT64, QUANTIZED_FLOAT32, BF16_DOT_FLOAT32 = 1, 2, 3, 5
# Other cells' stacks: float32, on float weights or on a dot layout (int8's or
# bfloat16's), a kind each by (cell, the LSTM's kind it mirrors); no float64
# (one more cold compile of a whole job would cost the test suite ~30 s).
CELL_KINDS = {("gru", FLOAT32): 4, ("gru", QUANTIZED_FLOAT32): 6, ("gru", BF16_DOT_FLOAT32): 7}


def job_kind(dtype: np.dtype, quantized: bool, cell: Cell = LSTM, pairs: bool = False) -> int:
    """The kind of a stack job: a quantized stack computing in float64 runs on
    its float weights (the kernels on stored weights are float32 ones).
    ``pairs``: the stack's dot layout holds bfloat16 pairs (team_quantized_blocks)."""
    if dtype == np.float64:
        kind = FLOAT64
    elif quantized:
        kind = BF16_DOT_FLOAT32 if pairs else QUANTIZED_FLOAT32
    else:
        kind = FLOAT32
    return kind if cell is LSTM else CELL_KINDS[cell.name, kind]


# Descriptor of a stack job in ctrl[DESC:]: sizes, then array addresses.
(_T, _B, _I, _H, _L, _NB, _G, _P, _NR, _STEPS, _THREADS, _NB_I8, _NB_BF16,
 _NB_SCALE, _NB_DOT, _P_DOT, _K4, _W_DOT_ROW, _NB_IH, _P_IH, _K4_I, _K4_H, _P_X,
 _NR_X) = range(DESC + 1, DESC + 25)
(_X, _W_IH0, _W_IH_REST, _BIAS, _W_HH, _W_I8, _W_BF16, _SCALE, _W_DOT, _OFFSET, _IH_DOT0,
 _IH_DOT_REST, _IH_OFFSET, _IH_SCALE, _LENGTHS, _GX, _H_BUF, _C, _OUT, _MID, _CLAIMS,
 _DONE) = range(DESC + 25, DESC + 47)
_G_H, _BIAS_H, _X_IS_HIDDEN = DESC + 47, DESC + 48, DESC + 49


@njit(inline="always", **_FLAGS)
def _no_quantized_weights(ctrl):
    return None, None


@njit(inline="always", **_FLAGS)
def _quantized_weights(ctrl):
    return _quantized_weights_of(ctrl, np.int8)


@njit(inline="always", **_FLAGS)
def _bf16_dot_weights(ctrl):
    return _quantized_weights_of(ctrl, np.uint8)


@njit(inline="always", **_FLAGS)
def _quantized_weights_of(ctrl, dot_dtype):
    """stack_job's hh_quantized and ih_quantized, from the descriptor; the dot
    layouts' arrays of dot_dtype."""
    H, L, G, P, NR = ctrl[_H], ctrl[_L], ctrl[_G], ctrl[_P], ctrl[_NR]
    hh = (view(ctrl, _W_I8, (L, ctrl[_NB_I8], P, H, NR), np.int8),
          view(ctrl, _W_BF16, (L, ctrl[_NB_BF16], P, H, NR), np.uint16),
          view(ctrl, _SCALE, (L, ctrl[_NB_SCALE], G), np.float32),
          view(ctrl, _W_DOT, (L, ctrl[_NB_DOT], ctrl[_P_DOT], ctrl[_K4], ctrl[_W_DOT_ROW]),
                dot_dtype),
          view(ctrl, _OFFSET, (L, ctrl[_NB_DOT], G if ctrl[_NB_DOT] else 0), np.int32))
    ih = (view(ctrl, _IH_DOT0, (ctrl[_NB_IH], ctrl[_P_IH], ctrl[_K4_I], ctrl[_W_DOT_ROW]),
                dot_dtype),
          view(ctrl, _IH_DOT_REST, (max(L - 1, 0), ctrl[_NB_IH], ctrl[_P_IH], ctrl[_K4_H],
                                     ctrl[_W_DOT_ROW]), dot_dtype),
          view(ctrl, _IH_OFFSET, (L, ctrl[_NB_IH], G if ctrl[_NB_IH] else 0), np.int32),
          view(ctrl, _IH_SCALE, (L, ctrl[_NB_IH], G if ctrl[_NB_IH] else 0), np.float32))
    return hh, ih


@njit(inline="always", **_FLAGS)
def _join_stack_job(ctrl, dtype, quantized_weights, tid):
    T, B, I, H, L = ctrl[_T], ctrl[_B], ctrl[_I], ctrl[_H], ctrl[_L]
    nb, G, P, NR, steps = ctrl[_NB], ctrl[_G], ctrl[_P], ctrl[_NR], ctrl[_STEPS]
    n_claims = L * claim_count(steps, B, nb)
    hh, ih = quantized_weights(ctrl)
    P_x, NR_x = ctrl[_P_X], ctrl[_NR_X]
    stack_job(view(ctrl, _X, (T, B, I), dtype), view(ctrl, _W_IH0, (nb, P_x, I, NR_x), dtype),
              view(ctrl, _W_IH_REST, (max(L - 1, 0), nb, P_x, H, NR_x), dtype),
              view(ctrl, _BIAS, (L, nb, G), dtype), view(ctrl, _W_HH, (L, nb, P, H, NR), dtype),
              view(ctrl, _BIAS_H, (L, nb, ctrl[_G_H]), dtype), hh, ih,
              view(ctrl, _LENGTHS, (B,), np.int64),
              view(ctrl, _GX, (nb, steps * B, G), dtype),
              view(ctrl, _H_BUF, (L, 2, B, H), dtype), view(ctrl, _C, (L, B, H), dtype),
              view(ctrl, _OUT, (T, B, H), dtype), view(ctrl, _MID, (T, B, H), dtype),
              view(ctrl, _CLAIMS, (n_claims,), np.int64),
              view(ctrl, _DONE, (L, LINE * (1 + ctrl[_THREADS])), np.int64), steps, tid,
              ctrl[_THREADS], ctrl[_X_IS_HIDDEN] != 0)


@njit(**_FLAGS)
def describe_stack_job(ctrl, kind, x, w_ih0, w_ih_rest, bias, w_hh, bias_h, w_i8, w_bf16, scale,
                       w_dot, offset, ih_dot0, ih_dot_rest, ih_offset, ih_scale, lengths, gx,
                       h_buf, c, out, mid, claims, done, steps, n_threads, x_is_hidden=False):
    """Write a stack job's descriptor (kind, sizes, array addresses) on ctrl."""
    T, B, I = x.shape
    ctrl[KIND] = kind
    ctrl[_T], ctrl[_B], ctrl[_I], ctrl[_H], ctrl[_L] = T, B, I, c.shape[2], c.shape[0]
    ctrl[_NB], ctrl[_G], ctrl[_STEPS] = gx.shape[0], gx.shape[2], steps
    ctrl[_P], ctrl[_NR] = w_hh.shape[2], w_hh.shape[4]
    ctrl[_P_X], ctrl[_NR_X] = w_ih0.shape[1], w_ih0.shape[3]
    ctrl[_THREADS] = n_threads
    ctrl[_G_H] = bias_h.shape[2]
    ctrl[_X_IS_HIDDEN] = x_is_hidden
    ctrl[_NB_I8], ctrl[_NB_BF16], ctrl[_NB_SCALE] = w_i8.shape[1], w_bf16.shape[1], scale.shape[1]
    ctrl[_NB_DOT], ctrl[_P_DOT], ctrl[_K4], ctrl[_W_DOT_ROW] = w_dot.shape[1:]
    ctrl[_NB_IH], ctrl[_P_IH], ctrl[_K4_I] = ih_dot0.shape[:3]
    ctrl[_K4_H] = ih_dot_rest.shape[3]
    if ih_dot0.shape[0] > 0:
        ctrl[_W_DOT_ROW] = ih_dot0.shape[3]
    for slot, address in ((_X, x.ctypes.data), (_W_IH0, w_ih0.ctypes.data),
                          (_W_IH_REST, w_ih_rest.ctypes.data), (_BIAS, bias.ctypes.data),
                          (_W_HH, w_hh.ctypes.data), (_BIAS_H, bias_h.ctypes.data),
                          (_W_I8, w_i8.ctypes.data),
                          (_W_BF16, w_bf16.ctypes.data), (_SCALE, scale.ctypes.data),
                          (_W_DOT, w_dot.ctypes.data), (_OFFSET, offset.ctypes.data),
                          (_IH_DOT0, ih_dot0.ctypes.data), (_IH_DOT_REST, ih_dot_rest.ctypes.data),
                          (_IH_OFFSET, ih_offset.ctypes.data), (_IH_SCALE, ih_scale.ctypes.data),
                          (_LENGTHS, lengths.ctypes.data),
                          (_GX, gx.ctypes.data), (_H_BUF, h_buf.ctypes.data),
                          (_C, c.ctypes.data), (_OUT, out.ctypes.data), (_MID, mid.ctypes.data),
                          (_CLAIMS, claims.ctypes.data), (_DONE, done.ctypes.data)):
        ctrl[slot] = address


def stack_job_buffers(L, B, H, T, steps, n_blocks, n_threads, dtype, h0=None, c0=None):
    """A stack job's state, output and counters, each on a cache line: every
    thread writes its units of the same rows of h, c and out at every step,
    and on a line of their own the rows' halves share no line where a block's
    units fill whole lines (np.empty aligns to 16 bytes, which left one line
    a row written by both cores).

    Returns h_buf (L, 2, B, H) with h0 (L, B, H) in [:, 0], c (L, B, H) = c0
    (both zeros where None), out and mid (T, B, H) (mid is out for one layer;
    out's rows from ``steps`` on zeroed), and the counters: one zeroed
    allocation (the claims fill whole lines) and its claims and done views.
    """
    if h0 is None:
        h_buf, c = aligned_zeros((L, 2, B, H), dtype), aligned_zeros((L, B, H), dtype)
    else:
        h_buf, c = aligned_empty((L, 2, B, H), dtype), aligned_empty((L, B, H), dtype)
        h_buf[:, 0] = h0
        c[...] = c0
    out = aligned_empty((T, B, H), dtype)
    if steps < T:
        out[steps:] = 0
    mid = aligned_empty((T, B, H), dtype) if L > 1 else out
    n_claims = L * claim_count(steps, B, n_blocks)
    counters = aligned_zeros(n_claims + L * done_size(n_threads), np.int64)
    return h_buf, c, out, mid, counters, counters[:n_claims], counters[n_claims:].reshape(L, -1)


def stack_team(ctrl, kind, x, w_ih0, w_ih_rest, bias, w_hh, bias_h, w_i8, w_bf16, scale, w_dot,
               offset, ih_dot0, ih_dot_rest, ih_offset, ih_scale, lengths, gx, h_buf, c, out,
               mid, claims, done, steps, n_threads, x_is_hidden=False):
    """The caller's side of a stack job of ``kind`` (job_kind; the arrays as
    stack_job's, the quantized ones (L, 0, ...) for a float stack): describe
    it on ctrl, then run it as thread 0 through the same compiled loop as the
    helpers (SERVE[kind]), which opens it, does thread 0's share and closes
    it. One compiled copy of the job, not two, so a cold cache compiles it
    once. The caller holds the arrays until this returns."""
    describe_stack_job(ctrl, kind, x, w_ih0, w_ih_rest, bias, w_hh, bias_h, w_i8, w_bf16, scale,
                       w_dot, offset, ih_dot0, ih_dot_rest, ih_offset, ih_scale, lengths, gx,
                       h_buf, c, out, mid, claims, done, steps, n_threads, x_is_hidden)
    SERVE[kind](ctrl, 0, 0)


@njit(inline="always", **_FLAGS)
def _join_float32(ctrl, tid):
    _join_stack_job(ctrl, np.float32, _no_quantized_weights, tid)


@njit(inline="always", **_FLAGS)
def _join_float64(ctrl, tid):
    _join_stack_job(ctrl, np.float64, _no_quantized_weights, tid)


@njit(inline="always", **_FLAGS)
def _join_quantized_float32(ctrl, tid):
    _join_stack_job(ctrl, np.float32, _quantized_weights, tid)


@njit(inline="always", **_FLAGS)
def _join_bf16_dot_float32(ctrl, tid):
    _join_stack_job(ctrl, np.float32, _bf16_dot_weights, tid)


# A helper's loop (team.Team), one per job kind (each is a whole stack_job:
# 25-40 s with a cold cache): team.serve. With tid 0, the caller's run of the
# job described on ctrl (stack_team).
@njit(**_FLAGS)
def serve_float32(ctrl, spin_limit, tid):
    return serve(ctrl, spin_limit, tid, FLOAT32, _join_float32)


@njit(**_FLAGS)
def serve_float64(ctrl, spin_limit, tid):
    return serve(ctrl, spin_limit, tid, FLOAT64, _join_float64)


@njit(**_FLAGS)
def serve_quantized_float32(ctrl, spin_limit, tid):
    return serve(ctrl, spin_limit, tid, QUANTIZED_FLOAT32, _join_quantized_float32)


@njit(**_FLAGS)
def serve_bf16_dot_float32(ctrl, spin_limit, tid):
    return serve(ctrl, spin_limit, tid, BF16_DOT_FLOAT32, _join_bf16_dot_float32)


SERVE = {FLOAT32: serve_float32, FLOAT64: serve_float64,
         QUANTIZED_FLOAT32: serve_quantized_float32,
         BF16_DOT_FLOAT32: serve_bf16_dot_float32}  # by job kind; cell_serve adds


def cell_serve(cell: Cell, kind: int) -> tuple[int, object]:
    """(kind, serve loop) of a stack job of ``cell`` whose job_kind is ``kind``
    (CELL_KINDS): the LSTM's job on the same weights with the cell bound in,
    compiled under names of its own (the on-disk cache is keyed by name); made
    on first use and added to SERVE."""
    if kind not in SERVE:
        lstm_kind = next(k for (_, k), v in CELL_KINDS.items() if v == kind)
        lstm_join, kind_name, lstm_serve = _LSTM_JOBS[lstm_kind]
        # The float32 GRU's names as before, so that its cached loop keeps them.
        tag = f"__{cell.name}" + ("" if lstm_kind == FLOAT32 else f"_{lstm_kind}")
        inline = njit(inline="always", **_FLAGS)
        cell_names = dict(cell_row=row_function(cell), GATES=cell.gates,
                          SUMMED=cell.summed_gates, LSTM_ROWS=False)
        block_step = inline(rebind(_block_step.py_func, cell_names, tag))
        recur = inline(rebind(_recur.py_func, dict(cell_names, _block_step=block_step), tag))
        job = njit(**_FLAGS)(rebind(stack_job.py_func, dict(_recur=recur), tag))
        join = inline(rebind(_join_stack_job.py_func, dict(stack_job=job), tag))
        join_weights = inline(rebind(lstm_join.py_func, dict(_join_stack_job=join), tag))
        SERVE[kind] = njit(**_FLAGS)(rebind(lstm_serve.py_func, {
            lstm_join.py_func.__name__: join_weights, kind_name: kind}, tag))
    return kind, SERVE[kind]


# The LSTM job a cell's job is made from, by that job's kind: its join, the name
# of its kind's constant (which the serve loop passes on) and the serve loop.
_LSTM_JOBS = {FLOAT32: (_join_float32, "FLOAT32", serve_float32),
              QUANTIZED_FLOAT32: (_join_quantized_float32, "QUANTIZED_FLOAT32",
                                  serve_quantized_float32),
              BF16_DOT_FLOAT32: (_join_bf16_dot_float32, "BF16_DOT_FLOAT32",
                                 serve_bf16_dot_float32)}
