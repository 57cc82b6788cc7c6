"""Launch decisions from the device's and the compiled kernel's limits.

Pure arithmetic over two dataclasses, so the CPU tests can feed a real card's
numbers (tests/cuda/test_launch.py) and the GPU check can print what it chose.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What the device allows (cuDeviceGetAttribute's names, lower case)."""

    max_threads_per_block: int
    max_shared_per_block: int  # bytes, without opt-in
    multiprocessors: int
    warp_size: int
    simulator: bool = False
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    max_regs_per_sm: int = 65536
    max_shared_per_sm: int = 228 * 1024
    reserved_shared_per_block: int = 1024
    max_grid_x: int = 2**31 - 1
    max_grid_y: int = 65535

    @classmethod
    def of_current_device(cls) -> Limits:
        from numba import cuda

        device = cuda.get_current_device()
        if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
            # The simulator's device has none of the attributes, and a cooperative
            # grid there is one block: sizes small enough for tiny test shapes.
            return cls(max_threads_per_block=256, max_shared_per_block=48 * 1024,
                       multiprocessors=1, warp_size=32, simulator=True, max_blocks_per_sm=1)
        a = device
        return cls(
            max_threads_per_block=a.MAX_THREADS_PER_BLOCK,
            max_shared_per_block=a.MAX_SHARED_MEMORY_PER_BLOCK,
            multiprocessors=a.MULTIPROCESSOR_COUNT,
            warp_size=a.WARP_SIZE,
            max_threads_per_sm=a.MAX_THREADS_PER_MULTI_PROCESSOR,
            max_blocks_per_sm=getattr(a, "MAX_BLOCKS_PER_MULTIPROCESSOR", 16),
            max_regs_per_sm=a.MAX_REGISTERS_PER_MULTIPROCESSOR,
            max_shared_per_sm=a.MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
            reserved_shared_per_block=getattr(a, "RESERVED_SHARED_MEMORY_PER_BLOCK", 0),
            max_grid_x=a.MAX_GRID_DIM_X,
            max_grid_y=a.MAX_GRID_DIM_Y,
        )


@dataclass(frozen=True)
class KernelResources:
    """What one compiled kernel needs: its registers cap the block size below
    the device's 1024 (cuFuncGetAttribute's MAX_THREADS_PER_BLOCK)."""

    regs_per_thread: int
    max_threads_per_block: int
    static_shared: int = 0

    @classmethod
    def from_registers(cls, regs_per_thread: int, limits: Limits,
                       static_shared: int = 0) -> KernelResources:
        """The block cap the driver would report for a kernel of that register count."""
        per_warp = _round_up(regs_per_thread * limits.warp_size, 256)
        warps = min(limits.max_regs_per_sm // per_warp,
                    limits.max_threads_per_block // limits.warp_size)
        return cls(regs_per_thread, warps * limits.warp_size, static_shared)


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def resident_blocks_per_sm(threads: int, shared: int, limits: Limits,
                           kernel: KernelResources) -> int:
    """Blocks of one kernel an SM holds at once: the least of the block, thread,
    register and shared-memory limits (the occupancy calculator's arithmetic)."""
    warps = -(-threads // limits.warp_size)
    by_threads = limits.max_threads_per_sm // (warps * limits.warp_size)
    regs_per_warp = _round_up(kernel.regs_per_thread * limits.warp_size, 256)
    by_regs = (limits.max_regs_per_sm // (regs_per_warp * warps)
               if kernel.regs_per_thread else limits.max_blocks_per_sm)
    block_shared = shared + kernel.static_shared + limits.reserved_shared_per_block
    by_shared = limits.max_shared_per_sm // block_shared if block_shared else by_threads
    return min(limits.max_blocks_per_sm, by_threads, by_regs, by_shared)


def grid_1d(n_threads: int, limits: Limits) -> tuple[int, int]:
    """(blocks, threads per block) covering n_threads >= 1: 4 warps a block, fewer
    if small. Kernels index with a grid-stride loop past max_grid_x blocks."""
    block = min(4 * limits.warp_size, limits.max_threads_per_block)
    if n_threads < block:
        block = max(limits.warp_size if not limits.simulator else 1, n_threads)
    return min(-(-n_threads // block), limits.max_grid_x), block


def matmul_grid(rows: int, cols: int, tile: int, limits: Limits) -> tuple[int, int]:
    """The tiled matmul's grid: row tiles on x, whose limit is 2^31-1 (y's is
    65535, which would cap T*B at about a million rows), column tiles on y."""
    row_tiles, col_tiles = -(-rows // tile), -(-cols // tile)
    if col_tiles > limits.max_grid_y:
        raise ValueError(f"{cols} gate columns need {col_tiles} column tiles; the device "
                         f"allows {limits.max_grid_y}")
    return min(row_tiles, limits.max_grid_x), col_tiles


@dataclass(frozen=True)
class PersistentPlan:
    """One persistent launch: each block owns ``units`` hidden units of one
    direction for every batch row; ``lanes`` threads split each (unit, row)'s
    dot product over k and reduce in shared memory."""

    units: int
    lanes: int
    threads: int
    blocks: int
    shared_bytes: int
    stage_h: bool  # h of the block's direction is copied to shared memory each step

    @property
    def launch(self) -> tuple[int, int, int]:
        return self.blocks, self.threads, self.shared_bytes


def unit_stride(hidden: int, gates: int) -> int:
    """Elements between two units' weight slices in shared memory: odd, so that
    threads of a warp on different units fall in different banks."""
    return gates * hidden | 1


def lanes_for(batch: int, hidden: int, warp_size: int) -> int:
    """Threads per (unit, row): a warp's worth of threads per unit across the
    batch rows, a power of two no larger than H (B=1: the whole warp)."""
    lanes = 1
    while lanes * 2 <= min(warp_size // max(batch, 1), hidden):
        lanes *= 2
    return lanes


def persistent_plan(batch: int, hidden: int, directions: int, itemsize: int, gates: int,
                    limits: Limits, kernel: KernelResources,
                    cooperative_blocks=None) -> PersistentPlan | None:
    """The persistent launch for one layer, or None if no block size lets every
    block be resident at once (which its grid barrier needs).

    cooperative_blocks(threads, shared_bytes), where given, is the driver's
    own answer (cuOccupancyMaxActiveBlocksPerMultiprocessor times the SMs) and
    caps ours. Among the launches that fit, the one that gives the busiest SM
    the fewest units wins, then the one with fewer blocks to synchronise.
    """
    if batch < 1 or hidden < 1:
        return None
    lanes = lanes_for(batch, hidden, limits.warp_size)
    max_threads = min(kernel.max_threads_per_block, limits.max_threads_per_block)
    best, best_score = None, None
    for units in range(1, hidden + 1):
        threads = units * batch * lanes
        if threads > max_threads:
            break
        blocks = directions * -(-hidden // units)
        for stage_h in (True, False):
            elements = units * unit_stride(hidden, gates)
            elements += batch * hidden if stage_h else 0
            elements += threads * gates if lanes > 1 else 0
            shared = elements * itemsize
            if shared + kernel.static_shared > limits.max_shared_per_block:
                continue
            capacity = resident_blocks_per_sm(threads, shared, limits, kernel)
            capacity *= limits.multiprocessors
            if cooperative_blocks is not None:
                capacity = min(capacity, cooperative_blocks(threads, shared))
            if blocks > capacity:
                continue
            score = (-(-blocks // limits.multiprocessors) * units, blocks, not stage_h)
            if best_score is None or score < best_score:
                best = PersistentPlan(units, lanes, threads, blocks, shared, stage_h)
                best_score = score
            break  # staging h fitted: no need to try without
    return best
