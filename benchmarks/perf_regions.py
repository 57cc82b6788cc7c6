"""Where a model's time goes inside Numba's compiled code, by perf samples.

perf shows a team job as one symbol (everything is inlined into it) or as raw
addresses. This script runs a model under ``perf record``, and in the same
process writes /tmp/perf-<pid>.map from the dispatchers' entry points and
copies its anonymous executable mappings (the compiled code) to files; it then
disassembles the largest one and prints runs of hot instructions with their
commonest mnemonics (``tdpbusd`` loops, the cell's ``vfmadd`` chains, copy
loops), and the shares of the other mappings (NRT's reference counting lives
in a small one of its own). Linux with ``perf`` and ``objdump`` only; a
development tool, not part of the package.

    python benchmarks/perf_regions.py --weights int8 --batch 32 --steps 100 \\
        --input 256 --hidden 512 --layers 2 --seconds 8
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(args) -> None:
    """Run the model for a while, then map and dump the compiled code."""
    os.environ.setdefault("NUMBA_LSTM_COLD_START", "compile")
    import numpy as np
    from numba.core.registry import CPUDispatcher

    import numba_lstm as nl

    module = nl.LSTM(args.input, args.hidden, args.layers)
    if args.weights != "float32":
        module = module.quantize(args.weights)
    x = np.random.default_rng(0).standard_normal(
        (args.steps, args.batch, args.input)).astype(np.float32)
    module(x)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        module(x)
        calls += 1
    print(f"{(time.perf_counter() - start) / calls * 1e3:.2f} ms a call ({calls} calls)")
    entries = set()
    for obj in gc.get_objects():
        if isinstance(obj, CPUDispatcher):
            for cres in obj.overloads.values():
                address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
                if address:
                    entries.add((address, cres.fndesc.qualname))
    entries = sorted(entries)
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as f:
        for i, (address, name) in enumerate(entries):
            size = entries[i + 1][0] - address if i + 1 < len(entries) else 4096
            f.write(f"{address:x} {min(size, 1 << 20):x} {name}\n")
    out = Path(args.dump)
    for line in open("/proc/self/maps"):
        fields = line.split()
        if "x" in fields[1] and len(fields) == 5:  # executable, no file behind it
            lo, hi = (int(v, 16) for v in fields[0].split("-"))
            (out / f"{lo:x}.bin").write_bytes(ctypes.string_at(lo, hi - lo))


def _regions(asm: str, counts: collections.Counter, total: int, top: int) -> None:
    lines = [(int(m.group(1), 16), m.group(2)) for m in
             re.finditer(r"^\s+([0-9a-f]+):\t[0-9a-f ]+\t(.*)$", asm, re.M)]
    regions, current, cold = [], None, 0
    for address, instruction in lines:
        mnemonic = instruction.split()[0]
        if counts[address]:
            if current is None:
                current = [address, address, 0, collections.Counter()]
            current[1], cold = address, 0
            current[2] += counts[address]
        elif current is not None:
            cold += 1
            if cold > 40:  # 40 cold instructions end a region
                regions.append(current)
                current = None
                continue
        if current is not None:
            current[3][mnemonic] += 1
    if current is not None:
        regions.append(current)
    for lo, hi, samples, mnemonics in sorted(regions, key=lambda r: -r[2])[:top]:
        common = ", ".join(f"{m} {n}" for m, n in mnemonics.most_common(6))
        print(f"{100 * samples / total:5.1f}%  {lo:x}-{hi:x} ({hi - lo} B): {common}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="float32", choices=["float32", "int8", "bfloat16"])
    for name, default in (("batch", 32), ("steps", 100), ("input", 256), ("hidden", 512),
                          ("layers", 2)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump:
        return _child(args)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        child = [sys.executable, __file__, *sys.argv[1:], "--dump", tmp]
        subprocess.run(["perf", "record", "-q", "-o", str(data), *child], check=True)
        ips = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip"], check=True,
                             capture_output=True, text=True).stdout.split()
        counts = collections.Counter(int(ip, 16) for ip in ips)
        total = sum(counts.values())
        dumps = {int(p.stem, 16): p for p in Path(tmp).glob("*.bin")}
        spans = [(lo, lo + p.stat().st_size, p) for lo, p in dumps.items()]
        shares = collections.Counter()
        for address, n in counts.items():
            shares[next((f"{lo:x}" for lo, hi, _ in spans if lo <= address < hi),
                        "outside compiled code")] += n
        print("samples by mapping:", ", ".join(f"{k} {100 * n / total:.1f}%"
                                                 for k, n in shares.most_common(5)))
        lo, _, largest = max(spans, key=lambda s: s[1] - s[0])
        asm = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64",
                              f"--adjust-vma={lo:#x}", str(largest)], check=True,
                             capture_output=True, text=True).stdout
        print(f"hot regions of {lo:x} (the team's job):")
        _regions(asm, counts, total, args.top)


if __name__ == "__main__":
    main()
