"""asv suite: the CUDA backend against torch's cuDNN LSTM over the benchmark shapes.

Each benchmark's setup raises NotImplementedError where there is no GPU (asv
then skips it), so the suite runs unchanged on CPU-only machines and on GPU
ones. Inputs and outputs stay on the device; every call ends with a device
synchronisation, so a time is the whole call, not its launch.
"""

from numba_lstm.bench import cuda_unavailable
from numba_lstm.bench.peers import PEERS, Unavailable
from numba_lstm.bench.shapes import BY_ID, SHAPES

IDS = [s.id for s in SHAPES]


class GPUForward:
    """One call (a whole sequence, or S8's one streaming step) per peer."""

    params = (IDS, ["numba_lstm", "torch"])
    param_names = ["shape", "peer"]
    timeout = 300

    def setup(self, shape_id, peer):
        reason = cuda_unavailable()
        if reason:
            raise NotImplementedError(f"no GPU: {reason}")
        shape = BY_ID[shape_id]
        try:
            self.runner = PEERS[peer](shape, shape.state_dict(), shape.inputs(), "cuda")
        except Unavailable as exc:
            raise NotImplementedError(str(exc)) from None
        self.runner.run()  # JIT compile, cuDNN plan, weights upload outside the timing

    def time_forward(self, shape_id, peer):
        self.runner.run()

    def track_step_latency_us(self, shape_id, peer):
        return _seconds_per_call(self.runner.run) / BY_ID[shape_id].steps * 1e6

    track_step_latency_us.unit = "µs per time step"

    def track_gflops(self, shape_id, peer):
        return BY_ID[shape_id].flops() / _seconds_per_call(self.runner.run) / 1e9

    track_gflops.unit = "GFLOP/s"


def _seconds_per_call(call, number: int = 10) -> float:
    import time

    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number
