"""The CUDA launch decisions (numba_lstm.cuda.launch) on the CPU, with the
limits of real cards: pure arithmetic, no GPU or simulator needed."""

import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda not installed (the cuda extra)")

from numba_lstm.cuda.launch import (  # noqa: E402
    KernelResources,
    Limits,
    grid_1d,
    lanes_for,
    matmul_grid,
    persistent_plan,
    resident_blocks_per_sm,
    unit_stride,
)

# cuDeviceGetAttribute's values for an H100 SXM (sm_90) and an RTX 4090 (sm_89).
H100 = Limits(max_threads_per_block=1024, max_shared_per_block=48 * 1024, multiprocessors=132,
              warp_size=32, max_threads_per_sm=2048, max_blocks_per_sm=32,
              max_regs_per_sm=65536, max_shared_per_sm=228 * 1024,
              reserved_shared_per_block=1024)
RTX4090 = Limits(max_threads_per_block=1024, max_shared_per_block=48 * 1024, multiprocessors=128,
                 warp_size=32, max_threads_per_sm=1536, max_blocks_per_sm=24,
                 max_regs_per_sm=65536, max_shared_per_sm=100 * 1024,
                 reserved_shared_per_block=1024)
DEVICES = {"H100": H100, "RTX4090": RTX4090}


def test_registers_cap_the_block_as_the_driver_reports():
    # 98 registers a thread (the persistent kernel before this design): 3328 a warp
    # after rounding to 256, 19 warps in 64K registers.
    assert KernelResources.from_registers(98, H100).max_threads_per_block == 608
    assert KernelResources.from_registers(32, H100).max_threads_per_block == 1024
    assert KernelResources.from_registers(255, H100).max_threads_per_block == 256


def test_resident_blocks_follow_the_occupancy_arithmetic():
    small = KernelResources(32, 1024)
    assert resident_blocks_per_sm(256, 0, H100, small) == 8  # threads: 2048 / 256
    assert resident_blocks_per_sm(256, 0, H100, KernelResources(64, 1024)) == 4  # registers
    assert resident_blocks_per_sm(64, 48 * 1024, H100, small) == 4  # 228 KB / 49 KB
    assert resident_blocks_per_sm(32, 0, H100, small) == 32  # the block limit
    assert resident_blocks_per_sm(64, 48 * 1024, RTX4090, small) == 2  # 100 KB / 49 KB


def _fits(plan, batch, hidden, directions, itemsize, gates, limits, kernel):
    """The plan against the limits, recomputed from its own numbers."""
    assert plan.threads == plan.units * batch * plan.lanes
    assert plan.threads <= kernel.max_threads_per_block
    assert plan.blocks == directions * -(-hidden // plan.units)
    elements = plan.units * unit_stride(hidden, gates)
    elements += batch * hidden if plan.stage_h else 0
    elements += plan.threads * gates if plan.lanes > 1 else 0
    assert plan.shared_bytes == elements * itemsize <= limits.max_shared_per_block
    per_sm = resident_blocks_per_sm(plan.threads, plan.shared_bytes, limits, kernel)
    assert plan.blocks <= per_sm * limits.multiprocessors


# The shapes the old rule (blocks <= SMs, 1024 threads) sent to a launch that
# fails with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES at 98 registers a thread.
OLD_FAILURES = [(256, 512, 1), (512, 256, 1), (256, 256, 2), (640, 128, 1), (1024, 64, 1)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch,hidden,directions", OLD_FAILURES + [
    (1, 256, 1), (1, 512, 1), (1, 1024, 1), (1, 512, 2), (64, 256, 2), (8, 200, 1),
    (1, 2048, 1)])
@pytest.mark.parametrize("regs", [40, 98])
def test_every_plan_fits_the_device_or_there_is_none(device, batch, hidden, directions, regs):
    limits = DEVICES[device]
    kernel = KernelResources.from_registers(regs, limits)
    plan = persistent_plan(batch, hidden, directions, 4, 4, limits, kernel)
    if plan is not None:
        _fits(plan, batch, hidden, directions, 4, 4, limits, kernel)


def test_batch_one_gives_each_unit_a_warp_and_large_h_fits_by_occupancy():
    kernel = KernelResources.from_registers(64, H100)
    plan = persistent_plan(1, 512, 1, 4, 4, H100, kernel)
    assert plan.lanes == 32 and plan.stage_h
    # H=1024: 16 KB of W_hh a unit, two units a block under the 48 KB default, so
    # 512 blocks: more than the 132 SMs, resident four or five to an SM.
    plan = persistent_plan(1, 1024, 1, 4, 4, H100, kernel)
    assert plan is not None and plan.units == 2 and plan.blocks == 512
    # Bidirectional H=512 at B=1 needs more blocks than SMs, and fits.
    plan = persistent_plan(1, 512, 2, 4, 4, H100, kernel)
    assert plan is not None and plan.blocks > H100.multiprocessors


def test_the_old_out_of_resources_shapes_are_refused_at_98_registers():
    kernel = KernelResources.from_registers(98, H100)
    # B=640, H=128: even one unit a block is 640 threads > 608.
    assert persistent_plan(640, 128, 1, 4, 4, H100, kernel) is None
    # B=256, H=512: one unit a block is 512 blocks of 256 threads; 98 registers
    # leave two such blocks an SM, 264 on the card.
    assert persistent_plan(256, 512, 1, 4, 4, H100, kernel) is None


def test_the_drivers_cooperative_limit_caps_the_grid():
    kernel = KernelResources.from_registers(64, H100)
    assert persistent_plan(1, 512, 1, 4, 4, H100, kernel, lambda threads, shared: 1) is None
    plan = persistent_plan(1, 16, 1, 4, 4, H100, kernel, lambda threads, shared: 1)
    assert plan.blocks == 1 and plan.units == 16


def test_lanes_fill_a_warp_across_the_batch():
    assert [lanes_for(b, 512, 32) for b in (1, 2, 3, 4, 16, 32, 200)] == [32, 16, 8, 8, 2, 1, 1]
    assert lanes_for(1, 4, 32) == 4  # no more lanes than terms in the dot product


def test_grids_stay_within_the_dimension_limits():
    # T*B = 2,000,000 rows: 125,000 row tiles, past y's 65,535, so rows go on x.
    assert matmul_grid(2_000_000, 2048, 16, H100) == (125_000, 128)
    assert grid_1d(10**12, H100)[0] == H100.max_grid_x  # kernels loop past the grid
    assert grid_1d(1, H100) == (1, 32)
    with pytest.raises(ValueError, match="column tiles"):
        matmul_grid(1, 16 * 70_000, 16, H100)
