"""CUDA backend (numba.cuda from the numba-cuda package): device="cuda".

Imported only when a module asks for device="cuda"; nothing else in
numba_lstm needs CUDA, a driver or numba-cuda.
"""

from __future__ import annotations

import importlib.util
import os

INSTALL = ("pip install 'numba-lstm[cuda]' (CUDA 12 toolkit libraries) or "
           "'numba-lstm[cuda13]' (CUDA 13, drivers 580 and newer)")


def missing_toolkit() -> dict[str, str]:
    """What numba-cuda needs from the CUDA toolkit and cannot find: name -> what
    it is for. Empty in the simulator, which compiles nothing."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return {}
    from numba.cuda.cudadrv import libs, nvvm

    missing = {}
    if not nvvm.is_available():
        missing["NVVM (libnvvm)"] = "compiles every kernel"
    try:
        cudadevrt = libs.get_cudalib("cudadevrt", static=True)
    except Exception:  # cuda-pathfinder raises its own errors when it finds nothing
        cudadevrt = ""
    if not os.path.isfile(cudadevrt):
        missing["libcudadevrt.a"] = "links the persistent kernel's grid barrier"
    return missing


def load_backend():
    """The backend module, or a RuntimeError saying what is missing."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise RuntimeError(f"device='cuda' needs the numba-cuda package: {INSTALL}")
    from numba import cuda

    if not cuda.is_available():
        raise RuntimeError("device='cuda' but numba.cuda finds no usable GPU/driver; set "
                           "NUMBA_ENABLE_CUDASIM=1 (before importing numba) for the simulator")
    missing = missing_toolkit()
    if "NVVM (libnvvm)" in missing:
        raise RuntimeError("device='cuda' found a GPU but not the CUDA toolkit's NVVM "
                           f"compiler, which compiles every kernel: {INSTALL}")
    from . import backend as module

    if missing:
        # Without the device runtime only the per-step kernels can run; "auto"
        # uses them, and forcing the persistent path says why it cannot.
        module.PERSISTENT_UNAVAILABLE["reason"] = (
            f"libcudadevrt.a, which {missing['libcudadevrt.a']}, was not found; {INSTALL}")
    return module
