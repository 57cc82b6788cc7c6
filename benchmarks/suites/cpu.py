"""asv suite: numba_lstm on the CPU over the benchmark shapes (numba_lstm.bench.shapes).

Peers are not timed here (that is `numba-lstm bench`); asv tracks our own
numbers commit by commit: time per call, peak memory, GFLOP/s, and the cost of
import + first call with a cold and with a warm Numba cache.
"""

import os

import numba_lstm as nl
from numba_lstm.bench.quantized import ROWS as QUANTIZED_ROWS
from numba_lstm.bench.shapes import BY_ID, SHAPES

IDS = [s.id for s in SHAPES]
# Time the kernels, compiled here on a cold cache, never the NumPy answers a
# cold process gives while they compile elsewhere (numba_lstm.cpu.warm).
os.environ["NUMBA_LSTM_COLD_START"] = "compile"


def _runner(shape_id: str, dtype: str):
    shape = BY_ID[shape_id]
    lstm = getattr(nl, shape.family).from_state_dict(shape.state_dict(), dtype=dtype)
    x = shape.inputs().astype(dtype)
    if shape.streaming:
        stream = lstm.stream()
        return lambda: stream(x)
    return lambda: lstm(x)


class Forward:
    """One call: a whole sequence, or (S8) one streaming step with the state carried."""

    params = (IDS, ["float32", "float64"])
    param_names = ["shape", "dtype"]
    timeout = 300

    def setup(self, shape_id, dtype):
        from numba_lstm.cpu import TEAM

        self.call = _runner(shape_id, dtype)
        self.call()  # JIT compile / cache load outside the timing
        TEAM.wait_ready()  # and the small-batch team's helpers, which start after a first call

    def time_forward(self, shape_id, dtype):
        self.call()

    def peakmem_forward(self, shape_id, dtype):
        self.call()

    def track_gflops(self, shape_id, dtype):
        import time

        number = 3
        start = time.perf_counter()
        for _ in range(number):
            self.call()
        seconds = (time.perf_counter() - start) / number
        return BY_ID[shape_id].flops() / seconds / 1e9

    track_gflops.unit = "GFLOP/s"


class ForwardQuantized:
    """As Forward, for modules with weights stored as int8 or bfloat16 (the rows of
    `numba-lstm bench --weights`); compute stays float32."""

    params = (list(QUANTIZED_ROWS), ["int8", "bfloat16"])
    param_names = ["shape", "weights"]
    timeout = 300

    def setup(self, shape_id, weights):
        from numba_lstm.cpu import TEAM

        shape = BY_ID[shape_id]
        module = getattr(nl, shape.family).from_state_dict(shape.state_dict()).quantize(weights)
        x = shape.inputs().astype("float32")
        if shape.streaming:
            stream = module.stream()
            self.call = lambda: stream(x)
        else:
            self.call = lambda: module(x)
        self.call()
        TEAM.wait_ready()

    def time_forward(self, shape_id, weights):
        self.call()


class Int8Product:
    """The int8 dot product alone (cpu.dot_gemm.gemm_dot_acc): rows x 512 @ 512 x
    2048, as one thread's share of S6's step (16 rows) and of larger batches.
    On a CPU with AMX its 16-row groups run on tiles, else on vpdpbusd (or
    int16 pairs without VNNI): the same sums, so the kernels compare here.
    track_gops counts a multiply-add as two operations, each activation
    product once (its two bytes take two instructions)."""

    params = ([16, 32, 64],)
    param_names = ["rows"]

    def setup(self, rows):
        import numpy as np
        from numba import njit

        from numba_lstm.cpu.activation_grids import quantize_row16
        from numba_lstm.cpu.dot_gemm import gemm_dot_acc
        from numba_lstm.cpu.packing import _pack_quads

        rng = np.random.default_rng(0)
        K, N = 512, 2048
        w = rng.integers(-127, 128, (K, N)).astype(np.int8)
        x = rng.standard_normal((rows, K)).astype(np.float32)
        lo, hi = np.empty((rows, K), np.uint8), np.empty((rows, K), np.uint8)
        quantize = njit(lambda x, lo, hi: quantize_row16(x, lo, hi))
        scales = np.array([quantize(x[r], lo[r], hi[r]) for r in range(rows)], np.float32)
        product = njit(lambda *a: gemm_dot_acc(*a))
        args = (np.zeros((rows, N), np.float32), lo, hi, scales, _pack_quads(w),
                (128 * w.astype(np.int32).sum(axis=0)).astype(np.int32),
                np.ones(N, np.float32))
        self.call = lambda: product(*args)
        self.call()
        self.ops = 2 * rows * K * N

    def time_product(self, rows):
        self.call()

    def track_gops(self, rows):
        import time

        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.2:
            self.call()
            n += 1
        return self.ops * n / (time.perf_counter() - start) / 1e9

    track_gops.unit = "GOPS"


_FIRST_CALL = """
import os
os.environ["NUMBA_CACHE_DIR"] = {cache_dir!r}
os.environ["NUMBA_LSTM_COLD_START"] = {mode!r}
import time
start = time.perf_counter()
import numpy as np
import numba_lstm as nl
lstm = nl.LSTM(64, 128, num_layers=2)
lstm(np.zeros((10, 2, 64), np.float32))
print(time.perf_counter() - start)
nl.wait_compiled()  # leave no compilation running behind the benchmark
"""


class FirstCall:
    """import numba_lstm + build + first forward, in a fresh interpreter,
    compiling in that process (NUMBA_LSTM_COLD_START=compile).

    cold: an empty Numba cache, so every kernel compiles; warm: the cache a
    previous process filled, as after `pip install` and one run.
    """

    params = ["cold", "warm"]
    param_names = ["cache"]
    number = 1
    repeat = 3
    timeout = 600

    def setup(self, cache):
        import subprocess
        import sys
        import tempfile

        self.cache_dir = tempfile.mkdtemp(prefix="numba_lstm_asv_")
        if cache == "warm":
            subprocess.run([sys.executable, "-c", _FIRST_CALL.format(
                cache_dir=self.cache_dir, mode="compile")], check=True)

    def timeraw_import_and_first_call(self, cache):
        if cache == "cold":
            import tempfile

            return _FIRST_CALL.format(cache_dir=tempfile.mkdtemp(prefix="numba_lstm_asv_"),
                                      mode="compile")
        return _FIRST_CALL.format(cache_dir=self.cache_dir, mode="compile")


def track_cold_first_answer():
    """import + build + first forward on an empty cache, as a user's process
    meets it: answered through NumPy while the kernels compile in the
    background (the script then waits for them, so none runs past it)."""
    import subprocess
    import sys
    import tempfile

    script = _FIRST_CALL.format(cache_dir=tempfile.mkdtemp(prefix="numba_lstm_asv_"),
                                mode="background")
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True)
    return float(result.stdout.split()[0])


track_cold_first_answer.unit = "seconds"


def timeraw_import():
    return "import numba_lstm"
