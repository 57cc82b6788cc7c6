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


def stream_of(array):
    """The stream the producer of ``array`` queued its work on (CUDA Array Interface v3).

    Our copies and launches go on that stream, so they run after the producer's
    writes with no host-side synchronisation, and the caller's own later work
    on that stream sees our results.
    """
    own = getattr(array, "stream", 0)
    if not isinstance(own, int):  # a numba device array bound to a stream
        return own
    handle = (getattr(array, "__cuda_array_interface__", None) or {}).get("stream")
    if handle in (None, 0):
        return cuda.default_stream()
    if handle == 1:
        return cuda.legacy_default_stream()
    if handle == 2:
        return cuda.per_thread_default_stream()
    return cuda.external_stream(handle)


def _as_device(value):
    if hasattr(value, "__cuda_array_interface__") and hasattr(cuda, "as_cuda_array"):
        # No copy, and no wait: everything we do goes on the producer's stream.
        return cuda.as_cuda_array(value, sync=False)
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


def copy(array):
    """A new device array holding ``array``'s values, on its stream."""
    stream = stream_of(array)
    out = cuda.device_array(array.shape, array.dtype, stream=stream)
    out.copy_to_device(array, stream=stream)
    return out


def swap_leading_axes(x):
    """(T, B, F) <-> (B, T, F) on the device, as a new array on x's stream."""
    stream = stream_of(x)
    T, B, F = x.shape
    out = cuda.device_array((B, T, F), x.dtype, stream=stream)
    if out.size:
        kernels.swap_leading_axes[grid_1d(out.size, Limits.of_current_device()) + (stream,)](
            x, out)
    return out


def _filled(shape, dtype, value, stream, limits: Limits):
    out = cuda.device_array(shape, dtype, stream=stream)
    if out.size:
        kernels.fill[grid_1d(out.size, limits) + (stream,)](out.reshape(out.size), value)
    return out


def _to_device(array, stream):
    if is_device_array(array):
        return _as_device(array)
    return cuda.to_device(np.ascontiguousarray(array), stream=stream)


def _persistent_kernel(dtype):
    key = np.dtype(dtype).name
    if key not in _PERSISTENT:
        _PERSISTENT[key] = kernels.make_persistent(numba.from_dtype(np.dtype(dtype)))
    return _PERSISTENT[key]


def lstm_layer_forward(x, layer: DeviceLayer, h0, c0, lengths, limits: Limits, stream):
    """x (T, B, I), h0 (D, B, H_out), c0 (D, B, H), lengths (B,): device arrays.
    Returns device arrays out (T, B, D*H_out), h_n, c_n. Everything is queued on
    ``stream``; nothing waits for the host."""
    T, B, I = x.shape
    D, H, P = layer.num_directions, layer.hidden_size, layer.output_size
    dtype = x.dtype
    G = D * 4 * H
    gx = cuda.device_array((T * B, G), dtype, stream=stream)  # (T*B, D*4H)
    tile = kernels.TILE
    kernels.matmul_bias[((G + tile - 1) // tile, (T * B + tile - 1) // tile), (tile, tile),
                        stream](x.reshape(T * B, I), layer.w_ih, layer.bias, gx)
    gx = gx.reshape(T, B, G)
    out = cuda.device_array((T, B, D * P), dtype, stream=stream)
    c = cuda.device_array((D, B, H), dtype, stream=stream)
    c.copy_to_device(c0, stream=stream)
    projected = P != H
    units = None if projected else persistent_units(B, H, D, np.dtype(dtype).itemsize, limits)
    use_persistent = (STRATEGY["name"] == "persistent"
                      or (STRATEGY["name"] == "auto" and units is not None))
    if use_persistent:
        if units is None:
            raise RuntimeError(f"the persistent kernel cannot run this layer (B={B}, H={H}, "
                               f"projection={projected}) on this device")
        h_buf = cuda.device_array((2, D, B, H), dtype, stream=stream)  # ping-pong h
        h_buf[0].copy_to_device(h0, stream=stream)
        kernel = _persistent_kernel(dtype)
        blocks = D * ((H + units - 1) // units)
        kernel[blocks, units * B, stream, 4 * H * units * np.dtype(dtype).itemsize](
            gx, layer.w_hh, h_buf, c, out, lengths, units)
        return out, h_buf[T % 2], c
    h = cuda.device_array((D, B, P), dtype, stream=stream)
    h.copy_to_device(h0, stream=stream)
    h_next = cuda.device_array((D, B, P), dtype, stream=stream)
    c_next = cuda.device_array((D, B, H), dtype, stream=stream)
    h_cell = cuda.device_array((D, B, H), dtype, stream=stream) if projected else None
    step = grid_1d(D * B * H, limits) + (stream,)
    proj = grid_1d(D * B * P, limits) + (stream,)
    for s in range(T):
        # Without projection the step writes the next h itself.
        cell_out = h_cell if projected else h_next
        kernels.lstm_step[step](gx, s, layer.w_hh, h, c, cell_out, c_next, out, lengths,
                                not projected)
        if projected:
            kernels.project_step[proj](h_cell, layer.w_hr, s, h, h_next, out, lengths)
        h, h_next = h_next, h
        c, c_next = c_next, c
    return out, h, c


def lstm_forward(layers: list[DeviceLayer], x, h0, c0, lengths):
    """As numba_lstm.cpu.lstm_forward; NumPy in -> NumPy out, device in -> device out.

    h0/c0 may be NumPy or device arrays (None: zeros made on the device);
    lengths is NumPy or None. Device input's work goes on its own stream.
    """
    on_device = is_device_array(x)
    stream = stream_of(x) if on_device else cuda.default_stream()
    limits = Limits.of_current_device()
    x = _to_device(x, stream)
    T, B = x.shape[:2]
    dtype = x.dtype
    D = layers[0].num_directions
    n = len(layers) * D
    if h0 is None:
        h0 = _filled((n, B, layers[0].output_size), dtype, 0, stream, limits)
        c0 = _filled((n, B, layers[0].hidden_size), dtype, 0, stream, limits)
    else:
        h0, c0 = _to_device(h0, stream), _to_device(c0, stream)
    if lengths is None:
        lengths = _filled((B,), np.int64, T, stream, limits)
    else:
        lengths = cuda.to_device(np.ascontiguousarray(lengths, np.int64), stream=stream)
    h_n = cuda.device_array(h0.shape, dtype, stream=stream)
    c_n = cuda.device_array(c0.shape, dtype, stream=stream)
    out = x
    for k, layer in enumerate(layers):
        sl = slice(k * D, (k + 1) * D)
        out, h_k, c_k = lstm_layer_forward(out, layer, h0[sl], c0[sl], lengths, limits, stream)
        h_n[sl].copy_to_device(h_k, stream=stream)
        c_n[sl].copy_to_device(c_k, stream=stream)
    if on_device:
        return out, h_n, c_n
    results = tuple(a.copy_to_host(stream=stream) for a in (out, h_n, c_n))
    stream.synchronize()
    return results


def pack_layernorm_layer(params, dtype):
    raise RuntimeError("LayerNormLSTM has no CUDA kernels yet; use device='cpu'")


def layernorm_lstm_forward(layers, x, h0, c0, eps):
    raise RuntimeError("LayerNormLSTM has no CUDA kernels yet; use device='cpu'")
