"""The scratch pool (cpu.scratch): large buffers kept between calls, each
lent to one caller at a time; small arrays are plain np.empty."""

import threading

import numpy as np

from numba_lstm.cpu import scratch


def test_a_given_buffer_is_lent_again_and_never_to_two_at_once():
    scratch.release()
    a = scratch.take((100, 32, 2048), np.float32)  # 26 MB
    assert a.shape == (100, 32, 2048) and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.ctypes.data % 64 == 0
    b = scratch.take((100, 32, 2048), np.float32)  # a is out: a buffer of its own
    assert not np.shares_memory(a, b)
    a_address = a.ctypes.data
    scratch.give(a)
    c = scratch.take((50, 32, 2048), np.float32)  # smaller: a's buffer serves it
    assert c.ctypes.data == a_address
    scratch.give(b)
    scratch.give(c)
    scratch.give(c)  # twice: the second is ignored, not kept twice
    # two kept buffers of different sizes: the smaller that fits is taken
    d, e = scratch.take((100, 32, 2048), np.float32), scratch.take((100, 32, 2048), np.float32)
    assert not np.shares_memory(d, e)
    scratch.give(d)
    scratch.give(e)
    scratch.release()


def test_the_smallest_kept_buffer_that_fits_is_taken():
    scratch.release()
    small, large = scratch.take((1 << 20,), np.float32), scratch.take((1 << 22,), np.float32)
    small_at, large_at = small.ctypes.data, large.ctypes.data
    scratch.give(large)
    scratch.give(small)
    middle = scratch.take((1 << 21,), np.float64)  # 16 MB: only the large one fits
    assert middle.ctypes.data == large_at
    assert scratch.take((1 << 19,), np.float32).ctypes.data == small_at
    scratch.release()


def test_small_arrays_and_foreign_arrays_are_not_pooled():
    scratch.release()
    small = scratch.take((4, 8), np.float64)
    assert small.shape == (4, 8) and small.dtype == np.float64
    scratch.give(small)
    foreign = np.empty((1 << 21,), np.float32)
    scratch.give(foreign)  # not the pool's: left alone
    assert scratch.take((1 << 21,), np.float32).ctypes.data != foreign.ctypes.data
    scratch.release()


def test_threads_taking_at_once_get_separate_buffers():
    scratch.release()
    seen, lock = [], threading.Lock()

    def work(i):
        for _ in range(20):
            a = scratch.take((1 << 19,), np.float32)  # 2 MB
            a[:] = i
            with lock:
                seen.append(bool((a == i).all()))
            scratch.give(a)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 80 and all(seen)
    scratch.release()
