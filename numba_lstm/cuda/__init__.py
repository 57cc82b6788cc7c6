"""CUDA backend (numba.cuda from the numba-cuda package): device="cuda".

Imported only when a module asks for device="cuda"; nothing else in
numba_lstm needs CUDA, a driver or numba-cuda.
"""

from __future__ import annotations

import importlib.util


def load_backend():
    """The backend module, or a RuntimeError saying what is missing."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise RuntimeError("device='cuda' needs the numba-cuda package: "
                           "pip install 'numba-lstm[cuda]' (or pip install numba-cuda)")
    from numba import cuda

    if not cuda.is_available():
        raise RuntimeError("device='cuda' but numba.cuda finds no usable GPU/driver; set "
                           "NUMBA_ENABLE_CUDASIM=1 (before importing numba) for the simulator")
    from . import backend as module

    return module
