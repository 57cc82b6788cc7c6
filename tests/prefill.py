"""The suite's costliest compiles, done first by a child process on the second
core, into the cache the suite loads from.

A cold suite compiles in this process, on one core, for most of its run; the
heaviest of it is a few job kinds each tens of seconds long (the quantized
team and layer jobs, the float64 team stepper), reached by a handful of tests
half-way through. A child running ``numba_lstm.compile`` for them from the
start puts them in Numba's on-disk cache before those tests ask, and they
load in a fraction of a second. A test that gets there first compiles as it
would have; the child only ever saves work, and its failure is not the
suite's (the tests that need those kernels report it). A test that reaches
them before the child is done (timed: test_models' large-batch dispatch test
at 251 s, the child's bfloat16 layer job done at 318) is marked
``prefilled`` and runs after the suite's other tests (conftest.py), else it
compiles them a second time beside the child (65 s).
"""

import atexit
import os
import subprocess
import sys
from pathlib import Path

import numba_lstm

# The test files whose kernels these are: the child runs when one is collected.
MODULES = ("test_bench.py", "test_kernels.py", "test_models.py", "test_quantize.py")
# (families, dtypes, weights, strategies) of each numba_lstm.compile call, in
# the order the suite reaches them.
CALLS = (
    (("lstm",), (), ("int8",), ("stream_step",)),  # test_bench's quantized S8
    (("lstm",), ("float64",), (), ("stream_step",)),  # test_kernels' steppers
    # test_models, test_quantize
    (("lstm",), (), ("int8", "bfloat16"), ("team", "stream_step", "panels")),
    # test_quantize's GRU cases, among the suite's last tests: ~60 s the suite
    # compiled on one core while the second had nothing left to do
    (("gru",), (), ("int8", "bfloat16"), ("team", "panels")),
)
SCRIPT = "import numba_lstm as nl\n" + "".join(
    f"nl.compile({dtypes!r}, {families!r}, weights={weights!r}, strategies={strategies!r})\n"
    for families, dtypes, weights, strategies in CALLS)


def run() -> None:
    """Run the child to its end (at most 15 minutes)."""
    # The package this process imported, whichever sys.path entry it came from.
    root = str(Path(numba_lstm.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    child = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(child.kill)  # a session that stops early leaves no child behind
    try:
        child.wait(timeout=900)
    except subprocess.TimeoutExpired:
        child.kill()
