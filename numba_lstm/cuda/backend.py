"""CUDA backend: the CPU backend's interface (pack_stack, lstm_forward) on a GPU.

NumPy inputs are copied in and results copied back; inputs that expose
``__cuda_array_interface__`` (numba device arrays, CuPy, torch CUDA tensors)
stay on the device and the results are numba device arrays. Launch shapes are
derived from the device's properties (numba_lstm.cuda.launch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import cuda

from ..cpu.packing import pack_stack as pack_host_stack
from . import kernels
from .launch import Limits, grid_1d, persistent_units

# "auto" picks per layer; tests force each path ("persistent", "per_step").
STRATEGY = {"name": "auto"}
_PERSISTENT = {}


@dataclass(frozen=True)
class DeviceLayer:
    """A PackedLayer (numba_lstm.cpu.packing) with its arrays on the device."""

    w_ih: object  # (I, D*4H)
    bias: object  # (D*4H,)
    w_hh: object  # (D, H_out, 4H)
    w_hr: object  # (D, H, H_out) or (D, 0, 0)
    num_directions: int
    hidden_size: int
    output_size: int


def pack_stack(layers: list, dtype) -> list[DeviceLayer]:
    return [DeviceLayer(*(cuda.to_device(a) for a in (k.w_ih, k.bias, k.w_hh, k.w_hr)),
                        k.num_directions, k.hidden_size, k.output_size)
            for k in pack_host_stack(layers, dtype)]


def is_device_array(value) -> bool:
    # The simulator's device arrays have no __cuda_array_interface__.
    return hasattr(value, "__cuda_array_interface__") or type(value).__name__ == "FakeCUDAArray"


def _as_device(value):
    if hasattr(value, "__cuda_array_interface__") and hasattr(cuda, "as_cuda_array"):
        return cuda.as_cuda_array(value)  # CuPy, torch, numba: no copy
    return value


def as_input(value, dtype, what: str):
    """``value`` (any __cuda_array_interface__ object) as a numba device array, no copy."""
    if is_device_array(value):
        array = _as_device(value)
        if array.dtype != dtype:
            raise TypeError(f"{what} on the GPU must already be {dtype} (no hidden copies), "
                            f"got {array.dtype}")
        if not getattr(array, "is_c_contiguous", lambda: True)():
            raise ValueError(f"{what} on the GPU must be C-contiguous, got strides "
                             f"{array.strides} for shape {array.shape}")
        return array
    raise TypeError(f"{what} must expose __cuda_array_interface__, got {type(value).__name__}")


def _persistent_kernel(dtype):
    key = np.dtype(dtype).name
    if key not in _PERSISTENT:
        _PERSISTENT[key] = kernels.make_persistent(numba.from_dtype(np.dtype(dtype)))
    return _PERSISTENT[key]


def lstm_layer_forward(x, layer: DeviceLayer, h0, c0, lengths, limits: Limits):
    """x (T, B, I), h0 (D, B, H_out), c0 (D, B, H), lengths (B,): device arrays.
    Returns device arrays out (T, B, D*H_out), h_n, c_n."""
    T, B, I = x.shape
    D, H, P = layer.num_directions, layer.hidden_size, layer.output_size
    dtype = x.dtype
    gx = cuda.device_array((T * B, D * 4 * H), dtype)
    tile = kernels.TILE
    kernels.matmul_bias[((D * 4 * H + tile - 1) // tile, (T * B + tile - 1) // tile),
                        (tile, tile)](x.reshape(T * B, I), layer.w_ih, layer.bias, gx)
    gx = gx.reshape(T, B, D * 4 * H)
    out = cuda.device_array((T, B, D * P), dtype)
    c = cuda.device_array((D, B, H), dtype)
    c.copy_to_device(c0)
    projected = P != H
    units = None if projected else persistent_units(B, H, D, np.dtype(dtype).itemsize, limits)
    use_persistent = (STRATEGY["name"] == "persistent"
                      or (STRATEGY["name"] == "auto" and units is not None))
    if use_persistent:
        if units is None:
            raise RuntimeError(f"the persistent kernel cannot run this layer (B={B}, H={H}, "
                               f"projection={projected}) on this device")
        h_buf = cuda.device_array((2, D, B, H), dtype)
        h_buf[0].copy_to_device(h0)
        kernel = _persistent_kernel(dtype)
        blocks = D * ((H + units - 1) // units)
        kernel[blocks, units * B, 0, 4 * H * units * np.dtype(dtype).itemsize](
            gx, layer.w_hh, h_buf, c, out, lengths, units)
        return out, h_buf[T % 2], c
    h = cuda.device_array((D, B, P), dtype)
    h.copy_to_device(h0)
    h_next = cuda.device_array((D, B, P), dtype)
    c_next = cuda.device_array((D, B, H), dtype)
    h_cell = cuda.device_array((D, B, H), dtype) if projected else None
    step_grid = grid_1d(D * B * H, limits)
    proj_grid = grid_1d(D * B * P, limits)
    for s in range(T):
        # Without projection the step writes the next h itself.
        cell_out = h_cell if projected else h_next
        kernels.lstm_step[step_grid](gx, s, layer.w_hh, h, c, cell_out, c_next, out, lengths,
                                     not projected)
        if projected:
            kernels.project_step[proj_grid](h_cell, layer.w_hr, s, h, h_next, out, lengths)
        h, h_next = h_next, h
        c, c_next = c_next, c
    return out, h, c


def lstm_forward(layers: list[DeviceLayer], x, h0, c0, lengths):
    """As numba_lstm.cpu.lstm_forward; NumPy in -> NumPy out, device in -> device out."""
    on_device = is_device_array(x)
    limits = Limits.of_current_device()
    x = _as_device(x) if on_device else cuda.to_device(np.ascontiguousarray(x))
    T, B = tuple(x.shape)[:2]
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    lengths = cuda.to_device(np.asarray(lengths, np.int64))
    h0 = cuda.to_device(np.ascontiguousarray(h0))
    c0 = cuda.to_device(np.ascontiguousarray(c0))
    D = layers[0].num_directions
    h_n = cuda.device_array(h0.shape, x.dtype)
    c_n = cuda.device_array(c0.shape, x.dtype)
    out = x
    for k, layer in enumerate(layers):
        sl = slice(k * D, (k + 1) * D)
        out, h_k, c_k = lstm_layer_forward(out, layer, h0[sl], c0[sl], lengths, limits)
        h_n[sl].copy_to_device(h_k)
        c_n[sl].copy_to_device(c_k)
    if on_device:
        return out, h_n, c_n
    return out.copy_to_host(), h_n.copy_to_host(), c_n.copy_to_host()


def pack_layernorm_layer(params, dtype):
    raise RuntimeError("LayerNormLSTM has no CUDA kernels yet; use device='cpu'")


def layernorm_lstm_forward(layers, x, h0, c0, eps):
    raise RuntimeError("LayerNormLSTM has no CUDA kernels yet; use device='cpu'")
