"""How much arithmetic the machine's threads have together, measured in the run:
float32 FMAs, and the quantized kernels' dot instructions (vpdpbusd for int8,
vdpbf16ps for bfloat16) where the CPU has them; and how fast they read from L3
together.

A cloud VM's vCPUs are threads on the host. Its scheduler may run two of them on
one physical core's hyperthreads, which then share that core's FMA units, and it
moves them: measured on the 2-vCPU build machine, one thread alone 127-146
GFLOP/s, and the two together 152 (76 + 76) at one moment and ~270 at another,
a minute later. NumPy's matmul rate and every compute-bound shape follow. The
bench reports both rates so that a run can be read against what it had.
"""

from __future__ import annotations

import time

import numba
import numpy as np
from numba import njit, prange

from .._config import CACHE, configure_threading
from ..cpu.aligned import aligned_empty
from ..cpu.caches import l2_bytes, l3_bytes
from ..cpu.dot_gemm import dot_zero, vdot
from ..cpu.simd import (
    HAS_BF16,
    HAS_VNNI,
    VECTOR_BYTES,
    vadd,
    vfma,
    vload1,
    vload_quads,
    vsplat,
    vsplat_quad,
    vstore1,
)

configure_threading()  # this module's prange loops: workers that sleep, not spin
_LANES = VECTOR_BYTES // 4
_CHAINS = 12  # independent FMA chains: more than latency (4) x FMA ports (2)


@njit(cache=CACHE, nogil=True)
def _fma_chains(n, out):
    """n rounds of 12 independent float32 vector FMAs, all in registers; the
    sums go to out (lanes,) so that the loop is not optimised away."""
    a = vsplat(np.float32(0.9999999))
    b = vsplat(np.float32(1e-7))
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = vsplat(np.float32(0))
    for _ in range(n):
        c0, c1, c2, c3 = vfma(a, c0, b), vfma(a, c1, b), vfma(a, c2, b), vfma(a, c3, b)
        c4, c5, c6, c7 = vfma(a, c4, b), vfma(a, c5, b), vfma(a, c6, b), vfma(a, c7, b)
        c8, c9, c10, c11 = vfma(a, c8, b), vfma(a, c9, b), vfma(a, c10, b), vfma(a, c11, b)
    total = vadd(vadd(vadd(c0, c1), vadd(c2, c3)), vadd(vadd(c4, c5), vadd(c6, c7)))
    vstore1(out, 0, vadd(total, vadd(vadd(c8, c9), vadd(c10, c11))))


@njit(cache=CACHE, parallel=True)
def _fma_chains_each(n, out):
    """_fma_chains on every row of out (threads, lanes) at once, one per thread."""
    for t in prange(out.shape[0]):
        _fma_chains(n, out[t])


# Dot-instruction chains: vdpbf16ps's latency needs more than 12 (one Zen 5
# thread: 243 G multiply-adds/s at 12 chains, 263 at 16-24; vpdpbusd 527 at 12-24).
_DOT_CHAINS = 16


@njit(cache=CACHE, nogil=True)
def _dot_chains(n, w, b, out):
    """n rounds of 16 independent dot-instruction chains, all in registers:
    vpdpbusd where w is int8, vdpbf16ps where it holds bfloat16 pairs
    (uint8), each lane adding w's four bytes a lane against b's (uint8, 4);
    chain i's sums go to out[i] (16, lanes), int32 or float32."""
    q = vload_quads(w, 0, 0)
    a = vsplat_quad(b, 0)
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = dot_zero(w)
    c8 = c9 = c10 = c11 = c12 = c13 = c14 = c15 = dot_zero(w)
    for _ in range(n):
        c0, c1, c2, c3 = vdot(c0, a, q), vdot(c1, a, q), vdot(c2, a, q), vdot(c3, a, q)
        c4, c5, c6, c7 = vdot(c4, a, q), vdot(c5, a, q), vdot(c6, a, q), vdot(c7, a, q)
        c8, c9, c10, c11 = vdot(c8, a, q), vdot(c9, a, q), vdot(c10, a, q), vdot(c11, a, q)
        c12, c13, c14, c15 = vdot(c12, a, q), vdot(c13, a, q), vdot(c14, a, q), vdot(c15, a, q)
    for i, c in enumerate((c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14,
                           c15)):
        vstore1(out[i], 0, c)


@njit(cache=CACHE, parallel=True)
def _dot_chains_each(n, w, b, out):
    """_dot_chains on every out[t] (threads, 16, lanes) at once, one per thread."""
    for t in prange(out.shape[0]):
        _dot_chains(n, w, b, out[t])


# Each dot instruction's operands (w's bytes, a row's splat), the sums' dtype, and
# the multiply-adds a lane does an instruction, which with operands of 1 is also
# what each lane adds a round. int8: bytes of 1; bfloat16: pairs of 1.0 (0x3f80).
DOT_OPERANDS = {
    "int8": (np.ones((1, VECTOR_BYTES), np.int8), np.ones(4, np.uint8), np.int32, 4),
    "bfloat16": (np.tile(np.array([0x80, 0x3F], np.uint8), (1, VECTOR_BYTES // 2)),
                 np.array([0x80, 0x3F, 0x80, 0x3F], np.uint8), np.float32, 2),
}
DOT_INSTRUCTIONS = {"int8": ("vpdpbusd", HAS_VNNI), "bfloat16": ("vdpbf16ps", HAS_BF16)}


def _best_rates(one_thread, every_thread, threads: int, work_per_round: int, seconds: float,
                rounds: int, first_n: int = 1 << 16) -> tuple[float, float]:
    """(one thread, every thread at once), 1e9 x work_per_round a second: the
    best of ``rounds`` runs, each ~``seconds`` long."""
    def rate(run, n, copies):
        start = time.perf_counter()
        run(n)
        return copies * n * work_per_round / (time.perf_counter() - start) / 1e9

    one_thread(1)  # compile or load both before timing
    every_thread(1)
    n = first_n
    while rate(one_thread, n, 1) * 1e9 * seconds > n * work_per_round * 2:
        n *= 2  # until one run lasts about `seconds`
    one = max(rate(one_thread, n, 1) for _ in range(rounds))
    together = max(rate(every_thread, n, threads) for _ in range(rounds))
    return one, together


def best_of(probes: list[dict | None]) -> dict | None:
    """One report from probes of one kind taken through a run (fma_rates,
    dot_rates, l3_read_rates): each rate the highest any probe read, since a
    probe that shares its cores with the host's other work reads low, never
    high (int8 seed 43 on Zen 5: two threads at once 360 against one
    thread's 545 G multiply-adds/s in the probe before the rows). With
    ``probes``, how many there were, and ``lowest``, each rate's lowest
    reading. None where there is no probe (no such instruction or cache)."""
    probes = [p for p in probes if p is not None]
    if not probes:
        return None
    best = dict(probes[0])
    rates = [key for key in best if key.endswith(("_gflops", "_gmacs", "_gbs"))]
    for key in rates:
        best[key] = max(p[key] for p in probes)
    best["probes"] = len(probes)
    best["lowest"] = {key: min(p[key] for p in probes) for key in rates}
    return best


def fma_rates(seconds: float = 0.2, rounds: int = 3) -> dict[str, float | int]:
    """GFLOP/s of register-only float32 FMAs: one thread, and all of Numba's
    threads running at once (best of ``rounds``, each ~``seconds`` long)."""
    threads = numba.get_num_threads()
    out = np.zeros((threads, _LANES), np.float32)
    one, together = _best_rates(lambda k: _fma_chains(k, out[0]),
                                lambda k: _fma_chains_each(k, out), threads,
                                _CHAINS * _LANES * 2, seconds, rounds)
    return {"threads": threads, "one_thread_gflops": one, "all_threads_gflops": together}


def dot_rates(weights: str, seconds: float = 0.2, rounds: int = 3) -> dict | None:
    """G multiply-adds/s of the register-only dot instruction the ``weights``
    format's kernels run (int8: vpdpbusd, bfloat16: vdpbf16ps): one thread,
    and all of Numba's threads at once; None where the CPU has no such
    instruction (the kernels then run int16 pairs or float32 FMAs)."""
    instruction, present = DOT_INSTRUCTIONS[weights]
    if not present:
        return None
    w, b, sums, per_lane = DOT_OPERANDS[weights]
    threads = numba.get_num_threads()
    out = np.zeros((threads, _DOT_CHAINS, _LANES), sums)
    one, together = _best_rates(lambda k: _dot_chains(k, w, b, out[0]),
                                lambda k: _dot_chains_each(k, w, b, out), threads,
                                _DOT_CHAINS * _LANES * per_lane, seconds, rounds)
    return {"instruction": instruction, "threads": threads, "one_thread_gmacs": one,
            "all_threads_gmacs": together}


@njit(cache=CACHE, nogil=True)
def _passes(n, buf, out, zigzag):
    """n passes of vector loads over buf (1-D float32, a whole number of
    8-vector blocks) into eight sums, so that only the reads bound the loop;
    their total goes to out (lanes,). ``zigzag``: every odd pass from the
    buffer's end to its start, so that where the buffer passes L2 what a pass
    read last the next reads first, while it is still there (the team's
    steps read W_hh so)."""
    lanes = _LANES
    zero = vsplat(np.float32(0))
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
    blocks = buf.shape[0] // (8 * lanes)
    for p in range(n):
        backwards = zigzag and p % 2 == 1
        for b in range(blocks):
            j = (blocks - 1 - b if backwards else b) * 8 * lanes
            a0, a1 = vadd(a0, vload1(buf, j)), vadd(a1, vload1(buf, j + lanes))
            a2, a3 = vadd(a2, vload1(buf, j + 2 * lanes)), vadd(a3, vload1(buf, j + 3 * lanes))
            a4, a5 = vadd(a4, vload1(buf, j + 4 * lanes)), vadd(a5, vload1(buf, j + 5 * lanes))
            a6, a7 = vadd(a6, vload1(buf, j + 6 * lanes)), vadd(a7, vload1(buf, j + 7 * lanes))
    vstore1(out, 0, vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(vadd(a4, a5), vadd(a6, a7))))


@njit(cache=CACHE, parallel=True)
def _passes_each(n, bufs, out, zigzag):
    """_passes on every bufs[t] (threads, size) at once, one per thread."""
    for t in prange(bufs.shape[0]):
        _passes(n, bufs[t], out[t], zigzag)


def share_read_seconds(share_bytes: int, rounds: int = 5, pass_bytes: int = 1 << 29) -> float:
    """Seconds a pass of every Numba thread at once reading its own buffer of
    ``share_bytes`` (whole 8-vector blocks, at least one), pass after pass in
    zig-zag order: what reading a thread's share of a step's weights takes
    where every step reads all of them. The best of ``rounds`` runs of about
    ``pass_bytes`` in all, after a first pass that brings the buffers in.

    Zig-zag is the fastest order measured for a share past L2 (the AMX Xeon,
    2 MB L2s, two threads: 2.36 MB 37.6 against 69.7 µs a pass in one order;
    cldemote and prefetchnta on the part past L2 were slower still,
    docs/performance.md), and the same as one order within L2."""
    threads = numba.get_num_threads()
    block = 8 * VECTOR_BYTES
    size = max(block, share_bytes // block * block)
    bufs = aligned_empty((threads, size // 4), np.float32)
    bufs[...] = 1
    out = np.zeros((threads, _LANES), np.float32)
    n = max(2, pass_bytes // (threads * size)) // 2 * 2  # even: every run ends where it began
    _passes_each(1, bufs, out, True)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        _passes_each(n, bufs, out, True)
        best = min(best, (time.perf_counter() - start) / n)
    return best


def l3_buffer_bytes(threads: int) -> int:
    """Each thread's buffer for l3_read_rates: four of its L2s, so that the
    reads come from past L2, but all threads' buffers in half the L3, so that
    they do not come from memory; 0 where the caches are unknown."""
    l2, l3 = l2_bytes(), l3_bytes()
    if l2 == 0 or l3 == 0:
        return 0
    block = 8 * VECTOR_BYTES
    return min(4 * l2, l3 // (2 * threads)) // block * block


def l3_read_rates(seconds: float = 0.2, rounds: int = 3) -> dict | None:
    """GB/s of plain reads from L3: one thread over its own buffer, and all of
    Numba's threads at once, each over its own (l3_buffer_bytes; best of
    ``rounds``, each ~``seconds`` long); None where the caches are unknown
    or one thread's buffer would not pass its L2."""
    threads = numba.get_num_threads()
    size = l3_buffer_bytes(threads)
    if size <= l2_bytes():
        return None
    bufs = np.ones((threads, size // 4), np.float32)
    out = np.zeros((threads, _LANES), np.float32)
    one, together = _best_rates(lambda k: _passes(k, bufs[0], out[0], False),
                                lambda k: _passes_each(k, bufs, out, False), threads, size,
                                seconds, rounds, first_n=1)
    return {"threads": threads, "buffer_bytes": size, "one_thread_gbs": one,
            "all_threads_gbs": together}
