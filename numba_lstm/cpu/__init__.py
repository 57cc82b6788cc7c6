"""CPU backend: prepares buffers and calls the jitted kernels. No validation here."""

from __future__ import annotations

import threading

import numba
import numpy as np

from .._config import configure_threading
from .aligned import aligned_copy, aligned_zeros
from .cooperative import SERVE, claim_count, done_size, lstm_stack_team
from .gemm_steps import lstm_layer_gemm_steps
from .layernorm import layernorm_lstm_layer, layernorm_lstm_layer_serial
from .packing import PackedLayer, PackedStack, pack_layer, pack_stack
from .projection import input_projection
from .recurrence import lstm_layer, lstm_layer_serial
from .streaming import StackStepper, lstm_stream_step
from .team import Team

__all__ = ["PackedLayer", "PackedStack", "StackStepper", "pack_layer", "pack_stack",
           "lstm_layer_forward", "lstm_forward", "lstm_stream_step"]

configure_threading()

# Numba's fallback "workqueue" threading layer aborts the process when two
# Python threads enter parallel kernels at once; serialise them (they use every
# core already, so little is lost) so that one module is safe to share.
_KERNEL_LOCK = threading.Lock()


# Below this batch a one-direction stack without projection goes to the team
# (cpu.cooperative); from it up, splitting the batch across threads wins
# (the panel-GEMM steps, cpu.gemm_steps, with full 8-row tiles).
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

# Below this many multiply-adds per step (B * H * 4H), one thread beats the
# team: a step then takes about as long as handing it over (~0.5 µs).
TEAM_MIN_MACS_PER_STEP = 1 << 14
# Unit blocks per team thread: more than one, so that when one core runs slow
# (a shared VM's cores do, by 1.5-2x for seconds) the other claims its blocks;
# one up to SINGLE_BLOCK_MAX_MACS a step, where a block's own costs (claim,
# count, wait, cell loop) outweigh that. Measured, one layer, T=100, 15
# interleaved rounds, time with two blocks over time with one: B=1 H=64 1.51,
# H=128 1.07, H=192 1.14, H=256 1.02, H=384 0.97; B=4 H=128 1.08; B=8 H=256 1.02.
BLOCKS_PER_THREAD = 2
SINGLE_BLOCK_MAX_MACS = 1 << 18


def _team_can_run(layer: PackedLayer, steps: int, batch: int) -> bool:
    """One streaming step (steps == 1) stays on one thread: its weights are read
    once, so it is bound by the machine's L3 bandwidth, which a second core does
    not add to here, and the team's per-call setup then costs more than it saves
    (measured, 2 layers: H=256 97-160 µs per job against 145 µs for the one-call
    kernel; H=192 177 against 145 µs). From GEMM_STEPS_MIN_BATCH up, splitting
    the batch (cpu.gemm_steps) wins."""
    return (layer.num_directions == 1 and layer.output_size == layer.hidden_size
            and steps > 1 and batch < GEMM_STEPS_MIN_BATCH and TEAM.size > 1
            and batch * layer.w_hh.size >= TEAM_MIN_MACS_PER_STEP)


def _launch(parallel_kernel, serial_kernel, n_tasks: int, *args) -> None:
    """Run a kernel whose last argument splits it into tasks.

    A single task (one direction at batch 1: streaming, latency) runs the
    serial compile: a parallel launch there is pure overhead, a thread wake-up
    and join per call (measured ~418 -> ~155 us per 2-layer streaming step).
    """
    if n_tasks == 1:
        serial_kernel(*args)
        return
    with _KERNEL_LOCK:
        parallel_kernel(*args)


def lstm_layer_forward(x, layer: PackedLayer, h0, c0, lengths, h_n, c_n):
    """One layer over x (T, B, I) C-contiguous of the layer's dtype.

    h0 (D, B, H_out), c0 (D, B, H) C-contiguous, lengths (B,) int64; the final
    states are written into h_n (D, B, H_out), c_n (D, B, H).
    Returns out (T, B, D*H_out).

    Three strategies, by shape: from batch 2 without projection, the
    panel-GEMM steps threaded over direction x batch slice (they project x
    themselves when the weights fit in cache); otherwise the axpy kernel,
    threaded the same way, or on one thread for one direction at batch 1.
    """
    T, B, I = x.shape
    D, H, H_out = layer.num_directions, layer.hidden_size, layer.output_size
    out = np.empty((T, B, D * H_out), layer.w_hh.dtype)
    # numba.get_num_threads() costs ~7 µs, so the batch-1 path does not ask.
    threads = 1 if B == 1 and D == 1 else numba.get_num_threads()
    n_chunks = max(1, min(B, threads // D))
    # From 2 rows the panel tiles have 4+ independent FMA chains and read W_hh
    # once per tile; a 1-row tile has 2-3, too few to cover the FMA latency, and
    # the axpy kernel streams W_hh faster there (docs/performance.md).
    panel_steps = H_out == H and B > 1
    fused = panel_steps and (B // n_chunks >= FUSED_MIN_ROWS
                             or (layer.w_ih.nbytes + layer.w_hh.nbytes) // D <= FUSED_MAX_BYTES)
    if fused:
        w_step = layer.input_and_hidden_panels()
        gx = np.empty((0, B, D * 4 * H), layer.w_hh.dtype)
    elif D * n_chunks > 1 or panel_steps:
        w_ih, w_step = layer.panels()
        gx = np.empty((T * B, D * 4 * H), layer.w_hh.dtype)
        with _KERNEL_LOCK:
            input_projection(x.reshape(T * B, I), w_ih, layer.bias, gx, threads)
        gx = gx.reshape(T, B, D * 4 * H)
    else:
        gx = np.matmul(x.reshape(T * B, I), layer.w_ih)  # (T*B, D*4H), BLAS
        gx += layer.bias
        gx = gx.reshape(T, B, D * 4 * H)
    if panel_steps:
        with _KERNEL_LOCK:
            lstm_layer_gemm_steps(x, gx, w_step, layer.bias, h0, c0, lengths, out, h_n, c_n,
                                  n_chunks)
    else:
        _launch(lstm_layer, lstm_layer_serial, D * n_chunks, gx, layer.w_hh, layer.w_hr,
                h0, c0, lengths, out, h_n, c_n, n_chunks)
    return out


def _team_stack(ctrl, layers: PackedStack, x, h0, c0, lengths, steps: int):
    """One direction, no projection, small batch: the team shares the input
    projections and every step of every layer (numba_lstm.cpu.cooperative).
    h0, c0 may be None for zeros; steps = lengths.max(). At T=2 (S1's shape)
    the Python here costs about as much as the job (~20 µs each, measured), so
    it allocates as little as it can."""
    T, B, _ = x.shape
    L, H = len(layers), layers[0].hidden_size
    dtype = layers[0].w_hh.dtype
    per_thread = 1 if B * layers[0].w_hh.size <= SINGLE_BLOCK_MAX_MACS else BLOCKS_PER_THREAD
    w_ih0, w_ih_rest, bias, w_hh = layers.team_blocks(TEAM.size * per_thread)
    n_blocks, G = bias.shape[1:]  # G = 4U, a block's gate columns
    if h0 is None:  # zeros
        h_buf = np.zeros((L, 2, B, H), dtype)  # (L, 2, B, H) ping-pong per layer
        c_n = np.zeros((L, B, H), dtype)  # updated in place
    else:
        h_buf = np.empty((L, 2, B, H), dtype)
        h_buf[:, 0] = h0
        c_n = c0.copy()
    out = np.empty((T, B, H), dtype)
    if steps < T:
        out[steps:] = 0
    mid = np.empty_like(out) if L > 1 else out  # (T, B, H) the layers in between
    # The counters are laid out by cache line (cooperative.LINE) and the claims
    # fill whole lines, so one allocation on a line serves both.
    n_claims = L * claim_count(steps, B, n_blocks)
    counters = aligned_zeros(n_claims + L * done_size(TEAM.size), np.int64)
    lstm_stack_team(ctrl, x, w_ih0, w_ih_rest, bias, w_hh, lengths,
                    np.empty((n_blocks, steps * B, G), dtype), h_buf, c_n, out, mid,
                    counters[:n_claims], counters[n_claims:].reshape(L, -1), steps, TEAM.size)
    return out, np.ascontiguousarray(h_buf[:, steps % 2]), c_n


def lstm_forward(layers: PackedStack, x, h0, c0, lengths):
    """A stack of layers over x (T, B, I); h0 (L*D, B, H_out), c0 (L*D, B, H), or
    both None for zeros.
    lengths (B,) int64, or None for full-length sequences.

    Returns output (T, B, D*H_out), h_n (L*D, B, H_out), c_n (L*D, B, H).
    """
    T, B = x.shape[:2]
    if _team_can_run(layers[0], T, B):
        ctrl = TEAM.acquire()
        try:
            if lengths is None:
                return _team_stack(ctrl, layers, x, h0, c0, np.full(B, T, np.int64), T)
            return _team_stack(ctrl, layers, x, h0, c0, lengths, int(lengths.max()))
        finally:
            TEAM.release(ctrl, x.itemsize)
    D = layers[0].num_directions
    n = len(layers) * D
    if h0 is None:
        h0 = np.zeros((n, B, layers[0].output_size), x.dtype)
        c0 = np.zeros((n, B, layers[0].hidden_size), x.dtype)
    if T == 1 and B == 1 and layers.step is not None:
        return lstm_stream_step(layers, x, h0, c0)
    h_n = np.empty_like(h0)
    c_n = np.empty_like(c0)
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    out = x
    for k, layer in enumerate(layers):
        sl = slice(k * D, (k + 1) * D)  # leading-axis slices of C arrays stay C-contiguous
        out = lstm_layer_forward(out, layer, h0[sl], c0[sl], lengths, h_n[sl], c_n[sl])
    return out, h_n, c_n


def pack_layernorm_layer(params: dict, dtype) -> dict:
    """One labml LayerNorm LSTM cell's parameters (names without the cells.{k}. prefix)."""
    norms = [f"layer_norm.{n}" for n in range(4)] + ["layer_norm_c"]
    return {
        "w_in": aligned_copy(np.asarray(params["input_lin.weight"], dtype).T),
        "bias": np.ascontiguousarray(params["hidden_lin.bias"], dtype),
        "w_hh": aligned_copy(np.asarray(params["hidden_lin.weight"], dtype).T[None]),
        "ln_w": np.ascontiguousarray(np.stack([params[n + ".weight"] for n in norms]), dtype),
        "ln_b": np.ascontiguousarray(np.stack([params[n + ".bias"] for n in norms]), dtype),
    }


def layernorm_lstm_forward(layers: list[dict], x, h0, c0, eps: float):
    """x (T, B, I); h0, c0 (L, B, H). Returns output (T, B, H), h_n, c_n (L, B, H)."""
    T, B, _ = x.shape
    h_n, c_n = np.empty_like(h0), np.empty_like(c0)
    out = x
    n_chunks = max(1, min(B, numba.get_num_threads()))
    for k, layer in enumerate(layers):
        gx = np.matmul(out.reshape(T * B, -1), layer["w_in"])  # (T*B, 4H)
        gx += layer["bias"]
        out = np.empty((T, B, h0.shape[2]), h0.dtype)
        _launch(layernorm_lstm_layer, layernorm_lstm_layer_serial, n_chunks,
                gx.reshape(T, B, -1), layer["w_hh"], layer["ln_w"], layer["ln_b"], h0[k], c0[k],
                out, h_n[k], c_n[k], eps, n_chunks)
    return out, h_n, c_n
