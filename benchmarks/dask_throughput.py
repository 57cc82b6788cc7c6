"""Sequences per second through numba_lstm.dask.apply against the plain call.

    python benchmarks/dask_throughput.py [--sequences 4096] [--rounds 5]

One LSTM (I=64, H=128, T=100 unless told otherwise) over N sequences:
- in-process: ``module(x)`` on the whole NumPy batch;
- threads: ``apply`` on Dask's local threaded scheduler;
- 1 worker x 2 threads and 2 workers x 1 thread: ``apply`` on a
  dask.distributed LocalCluster on 127.0.0.1, the input persisted on the
  workers first (a real dataset is read there, not shipped from the client).

Only h_n comes back to the client, so the timing is the recurrence, not the
transfer of the output. Rounds interleave the four runners; medians and every
round are printed. Needs the dask extra.
"""

from __future__ import annotations

import argparse
import platform
import time

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import numba_lstm as nl
from numba_lstm.dask import apply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=512, help="sequences per task")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    N, T, I = args.sequences, args.steps, args.input_size
    module = nl.LSTM(I, args.hidden_size)
    x = np.random.default_rng(0).standard_normal((T, N, I)).astype(np.float32)
    dx = da.from_array(x, chunks=(T, args.chunk, I))

    def threaded():
        dask.compute(apply(module, dx)[1][0], scheduler="threads")

    runners = {"in-process": lambda: module(x)[1][0], "threads": threaded}
    clusters = []
    for workers, threads in ((1, 2), (2, 1)):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster, set_as_default=False)
        clusters.append((cluster, client))
        on_workers = client.persist(dx)
        client.gather(client.compute(apply(module, on_workers)[1][0]))  # warm-up, compiles

        def run(client=client, on_workers=on_workers):
            client.gather(client.compute(apply(module, on_workers)[1][0]))

        runners[f"{workers} worker{'s' if workers > 1 else ''} x {threads} thread"
                f"{'s' if threads > 1 else ''}"] = run
    for run in runners.values():
        run()

    seconds = {name: [] for name in runners}
    try:
        for _ in range(args.rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    finally:
        for cluster, client in clusters:
            client.close()
            cluster.close()

    base = np.median(seconds["in-process"])
    print(f"CPU: {platform.processor() or platform.machine()}; N={N} sequences, T={T}, I={I}, "
          f"H={args.hidden_size}, {args.chunk} sequences per task, {args.rounds} rounds")
    print("| runner | median s | sequences/s | vs in-process | all rounds (s) |")
    print("|---|---|---|---|---|")
    for name, times in seconds.items():
        median = np.median(times)
        print(f"| {name} | {median:.3f} | {N / median:,.0f} | {base / median:.2f}x | "
              + " ".join(f"{t:.3f}" for t in times) + " |")


if __name__ == "__main__":
    main()
