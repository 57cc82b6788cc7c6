"""How much arithmetic the machine's threads have together, measured in the run.

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
from ..cpu.simd import VECTOR_BYTES, vadd, vfma, vsplat, vstore1

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


def fma_rates(seconds: float = 0.2, rounds: int = 3) -> dict[str, float | int]:
    """GFLOP/s of register-only float32 FMAs: one thread, and all of Numba's
    threads running at once (best of ``rounds``, each ~``seconds`` long)."""
    threads = numba.get_num_threads()
    out = np.zeros((threads, _LANES), np.float32)
    flops_per_round = _CHAINS * _LANES * 2

    def rate(run, n, copies):
        start = time.perf_counter()
        run(n)
        return copies * n * flops_per_round / (time.perf_counter() - start) / 1e9

    def one_thread(k):
        _fma_chains(k, out[0])

    def every_thread(k):
        _fma_chains_each(k, out)

    one_thread(1)  # compile or load both before timing
    every_thread(1)
    n = 1 << 16
    while rate(one_thread, n, 1) * 1e9 * seconds > n * flops_per_round * 2:
        n *= 2  # until one run lasts about `seconds`
    one = max(rate(one_thread, n, 1) for _ in range(rounds))
    together = max(rate(every_thread, n, threads) for _ in range(rounds))
    return {"threads": threads, "one_thread_gflops": one, "all_threads_gflops": together}
