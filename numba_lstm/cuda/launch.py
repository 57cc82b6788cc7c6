"""Launch shapes from the device's properties, never hard-coded for one card."""

from __future__ import annotations

import os
from dataclasses import dataclass

from numba import cuda


@dataclass(frozen=True)
class Limits:
    max_threads_per_block: int
    max_shared_per_block: int  # bytes
    multiprocessors: int
    warp_size: int
    simulator: bool

    @classmethod
    def of_current_device(cls) -> Limits:
        device = cuda.get_current_device()
        simulator = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
        # The simulator's device has none of these attributes; its values are
        # chosen so the tests exercise the same decisions on tiny shapes.
        return cls(
            max_threads_per_block=getattr(device, "MAX_THREADS_PER_BLOCK", 256),
            max_shared_per_block=getattr(device, "MAX_SHARED_MEMORY_PER_BLOCK", 48 * 1024),
            multiprocessors=getattr(device, "MULTIPROCESSOR_COUNT", 1),
            warp_size=getattr(device, "WARP_SIZE", 32),
            simulator=simulator,
        )


def grid_1d(n_threads: int, limits: Limits) -> tuple[int, int]:
    """(blocks, threads per block) covering n_threads: 4 warps a block, fewer if small."""
    block = min(4 * limits.warp_size, limits.max_threads_per_block)
    if n_threads < block:
        block = max(limits.warp_size if not limits.simulator else 1, n_threads)
    return (n_threads + block - 1) // block, block


def persistent_units(batch: int, hidden: int, directions: int, itemsize: int,
                     limits: Limits, gates: int = 4) -> int | None:
    """Hidden units per block for the persistent kernel, or None if it cannot run.

    A block holds units*gates*H weights in shared memory and runs units*batch
    threads; every block must be resident at once for the grid barrier, so the
    grid may not exceed one block per multiprocessor (always co-resident).
    """
    by_shared = limits.max_shared_per_block // (gates * hidden * itemsize)
    by_threads = limits.max_threads_per_block // batch
    units = min(hidden, by_shared, by_threads)
    if units < 1:
        return None
    # Spread the units over the multiprocessors before making blocks bigger.
    per_sm = -(-hidden * directions // limits.multiprocessors)
    units = max(1, min(units, per_sm))
    blocks = directions * -(-hidden // units)
    if blocks > limits.multiprocessors:
        return None
    return units
