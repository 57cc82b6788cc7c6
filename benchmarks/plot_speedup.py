"""Plot speed-up per benchmark shape from `numba-lstm bench --json` output.

    numba-lstm bench --json > benchmarks/results/cpu.json
    python benchmarks/plot_speedup.py benchmarks/results/cpu.json docs/img/speedup_cpu.png

Bars: peer time / numba_lstm time (log scale), one pair per shape; ticks mark
the targets of docs/performance.md. Needs matplotlib (the `bench` extra).
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PEERS = {"torch": "#d62728", "onnxruntime": "#1f77b4"}


def main(src: str, dst: str) -> None:
    with open(src) as f:
        report = json.load(f)
    results = report["results"]
    ids = [r["shape"]["id"] for r in results]
    x = np.arange(len(ids))
    width = 0.38
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for k, (peer, colour) in enumerate(PEERS.items()):
        ratios = [r["ratios"].get(peer) or np.nan for r in results]
        offset = (k - 0.5) * width
        ax.bar(x + offset, ratios, width, label=f"{peer} time / numba_lstm time", color=colour)
        for i, r in enumerate(results):
            target = r["targets"].get(peer)
            if target:
                ax.hlines(target, x[i] + offset - width / 2, x[i] + offset + width / 2,
                          colors="black", linewidth=2)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x, ids)
    ax.set_ylabel("speed-up (higher is better)")
    machine = report["machine"]
    ax.set_title(f"numba_lstm vs torch {machine.get('torch')} and ONNX Runtime "
                 f"{machine.get('onnxruntime')}, float32, {machine['numba_threads']} threads "
                 "(black ticks: targets)", fontsize=9)
    # Room above the highest bar or target tick, and the legend where the
    # batch-1 shapes' bars stay low: at the upper right it hid S8's 10x tick.
    ax.set_ylim(top=1.6 * max(ax.get_ylim()[1], *(t for r in results
                                                   for t in r["targets"].values() if t)))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
