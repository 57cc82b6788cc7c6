"""Batch-1 recurrence shared by threads that need no barrier to start or stop.

At batch 1 a step is one matrix-vector product, a few µs: too short for a
thread-pool launch per step (Numba's workqueue: 200-500 µs per launch here)
and too dependent on the previous step to split in time. Instead every
participating thread calls the same kernel on the same arrays. Each step's
hidden units are cut into blocks; a block is computed by whichever thread
claims it first (an atomic counter per block), once every block of the
previous step is done (an atomic count). A thread tries "its own" block first,
so with every thread present each keeps the same slice of W_hh in its own L2
cache step after step; a helper that starts late or never costs nothing,
because the calling thread claims the blocks nobody else took. No thread ever
waits for another one except on a block that thread is computing.

Kernels trust their arguments; numba_lstm.cpu prepares them.
"""

import numpy as np
from numba import njit

from .atomics import fetch_add, load_acquire
from .recurrence import _FLAGS, _row_matmul_acc, _rows_matmul_acc, cell_update


@njit(inline="always", **_FLAGS)
def _block_step(gx, w_blocks, h_buf, c, out, s, q, acc):
    """Block q's units at step s: gates from h_buf[s % 2], new h into h_buf[(s+1) % 2].

    w_blocks (n_blocks, H, 4U): block q's i, f, g, o columns, contiguous;
    acc (2, 4U): the block's gate pre-activations, in row s % 2 (the row
    _row_matmul_acc pairs with h_buf's).
    """
    H = c.shape[0]
    U = w_blocks.shape[2] // 4
    j0 = q * U
    n = min(U, H - j0)
    r = s % 2
    for g in range(4):
        for u in range(n):
            acc[r, g * U + u] = gx[s, g * H + j0 + u]
    _row_matmul_acc(acc, r, h_buf, w_blocks, q)
    h_next = h_buf[1 - r]
    for u in range(n):
        c[j0 + u], h_new = cell_update(acc[r, u], acc[r, U + u], acc[r, 2 * U + u],
                                       acc[r, 3 * U + u], c[j0 + u])
        h_next[j0 + u] = h_new
        out[s, j0 + u] = h_new


PROJECTION_ROWS = 16  # time steps per projection task


@njit(**_FLAGS)
def lstm_layer_cooperative(x, w_ih, bias, gx, w_blocks, h_buf, c, out, steps, claims, done,
                           first_block):
    """Steps 0..steps-1 of one layer at batch 1, one direction, no projection.

    x (T, I);  w_ih (1, I, 4H) W_ih^T;  bias (4H,);  gx (T, 4H) scratch for
    x @ W_ih^T + b;  w_blocks (n_blocks, H, 4U) W_hh^T by unit block
    (PackedLayer.w_hh_blocks);  h_buf (2, H) ping-pong with h0 in [0], the
    final h in [steps % 2];  c (H,) c0, updated in place;  out (T, H) gets h
    for the steps run;  claims (n_row_tasks + steps * n_blocks,) and done (2,)
    int64, zero before the first caller;  first_block: the block this caller
    tries first. Returns once every task is done.

    First the input projection, PROJECTION_ROWS steps a task (done[1] counts
    them); then the recurrence, block by block (done[0]). The projection is
    shared here rather than left to BLAS: BLAS's worker threads keep spinning
    after a matmul and would take the core a helper needs (measured: S1 went
    from 0.84 to 1.76 ms with a BLAS projection in front).
    """
    n_blocks = w_blocks.shape[0]
    n_rows = (steps + PROJECTION_ROWS - 1) // PROJECTION_ROWS
    for task in range(n_rows):
        if fetch_add(claims, task, 1) == 0:
            r0 = task * PROJECTION_ROWS
            r1 = min(r0 + PROJECTION_ROWS, steps)
            for r in range(r0, r1):
                gx[r, :] = bias
            _rows_matmul_acc(gx[r0:r1], x[r0:r1], w_ih, 0, r1 - r0)
            fetch_add(done, 1, 1)
    while load_acquire(done, 1) < n_rows:
        pass
    acc = np.zeros((2, w_blocks.shape[2]), dtype=gx.dtype)  # (2, 4U) a block's gates
    for s in range(steps):
        while load_acquire(done, 0) < s * n_blocks:
            pass
        for i in range(n_blocks):
            q = (first_block + i) % n_blocks
            if fetch_add(claims, n_rows + s * n_blocks + q, 1) == 0:
                _block_step(gx, w_blocks, h_buf, c, out, s, q, acc)
                fetch_add(done, 0, 1)
    while load_acquire(done, 0) < steps * n_blocks:
        pass
