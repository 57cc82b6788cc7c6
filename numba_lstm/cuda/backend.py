"""CUDA backend: the CPU backend's interface (pack_stack, forward) on a GPU.

NumPy inputs are copied in and results copied back; inputs that expose
``__cuda_array_interface__`` (numba device arrays, CuPy, torch CUDA tensors)
stay on the device and the results are numba device arrays. Launch shapes are
derived from the device's properties (numba_lstm.cuda.launch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import cuda

from ..cells import LSTM, Cell
from . import kernels
from .launch import Limits, grid_1d, persistent_units

# "auto" picks per layer; tests force each path ("persistent", "per_step").
STRATEGY = {"name": "auto"}


@dataclass(frozen=True)
class DeviceLayer:
    """One layer, all directions, on the device, in the CPU backend's layout
    (G = cell.gates * H gate columns per direction)."""

    w_ih: object  # (I, D*G) W_ih^T of every direction side by side
    bias: object  # (D*G,) the x side's bias (cells.Cell.split_bias)
    w_hh: object  # (D, H_out, G) W_hh^T
    w_hr: object  # (D, H, H_out) W_hr^T, or (D, 0, 0)
    bias_h: object  # (D, G) the h side's bias of the cell's unsummed gates
    cell_params: object  # (D, P, H) the cell's own parameters (LayerNorm's), or (D, 0, 0)
    cell: Cell
    num_directions: int
    hidden_size: int
    output_size: int

    @property
    def state_size(self) -> int:
        return self.hidden_size if self.cell.has_cell_state else 0


def _pack_layer(directions, dtype, cell: Cell, cell_params=None) -> DeviceLayer:
    """directions: one (w_ih, w_hh, b_ih, b_hh, w_hr) per direction, torch layout;
    cell_params: one (P, H) array per direction, or None."""
    w_ih, step_bias, w_hh, w_hr, cell_params = cell.host_layout(directions, dtype, cell_params)
    arrays = (w_ih, step_bias[:, 0].reshape(-1), w_hh, w_hr, step_bias[:, 1], cell_params)
    return DeviceLayer(*(cuda.to_device(np.ascontiguousarray(a)) for a in arrays), cell,
                       len(directions), w_hh.shape[2] // cell.gates, w_hh.shape[1])


def pack_stack(layers: list, dtype, cell: Cell = LSTM, cell_params=None) -> list[DeviceLayer]:
    """layers: per layer, one (w_ih, w_hh, b_ih, b_hh, w_hr) tuple per direction;
    cell_params: per layer, its argument of _pack_layer (or None)."""
    cell_params = cell_params or [None] * len(layers)
    return [_pack_layer(directions, dtype, cell, p)
            for directions, p in zip(layers, cell_params, strict=True)]


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


def layer_forward(x, layer: DeviceLayer, h0, c0, lengths, limits: Limits, stream):
    """x (T, B, I), h0 (D, B, H_out), c0 (D, B, Hc), lengths (B,): device arrays.
    Returns device arrays out (T, B, D*H_out), h_n, c_n. Everything is queued on
    ``stream``; nothing waits for the host."""
    T, B, I = x.shape
    D, H, P = layer.num_directions, layer.hidden_size, layer.output_size
    dtype = x.dtype
    G = D * layer.cell.gates * H
    step_kernel, persistent_kernel = kernels.recurrence_kernels(layer.cell, dtype)
    gx = cuda.device_array((T * B, G), dtype, stream=stream)  # (T*B, D*4H)
    tile = kernels.TILE
    kernels.matmul_bias[((G + tile - 1) // tile, (T * B + tile - 1) // tile), (tile, tile),
                        stream](x.reshape(T * B, I), layer.w_ih, layer.bias, gx)
    gx = gx.reshape(T, B, G)
    out = cuda.device_array((T, B, D * P), dtype, stream=stream)
    Hc = layer.state_size
    c = cuda.device_array((D, B, Hc), dtype, stream=stream)
    if Hc:
        c.copy_to_device(c0, stream=stream)
    if layer.cell.row is not None:
        return _row_cell_layer(gx, layer, h0, c, lengths, out, limits, stream)
    projected = P != H
    units = None if projected else persistent_units(B, H, D, np.dtype(dtype).itemsize, limits,
                                                    layer.cell.gates)
    use_persistent = (STRATEGY["name"] == "persistent"
                      or (STRATEGY["name"] == "auto" and units is not None))
    if use_persistent:
        if units is None:
            raise RuntimeError(f"the persistent kernel cannot run this layer (B={B}, H={H}, "
                               f"projection={projected}) on this device")
        h_buf = cuda.device_array((2, D, B, H), dtype, stream=stream)  # ping-pong h
        h_buf[0].copy_to_device(h0, stream=stream)
        blocks = D * ((H + units - 1) // units)
        smem = layer.cell.gates * H * units * np.dtype(dtype).itemsize
        persistent_kernel[blocks, units * B, stream, smem](
            gx, layer.w_hh, layer.bias_h, h_buf, c, out, lengths, units)
        return out, h_buf[T % 2], c
    h = cuda.device_array((D, B, P), dtype, stream=stream)
    h.copy_to_device(h0, stream=stream)
    h_next = cuda.device_array((D, B, P), dtype, stream=stream)
    c_next = cuda.device_array((D, B, Hc), dtype, stream=stream)
    h_cell = cuda.device_array((D, B, H), dtype, stream=stream) if projected else None
    step = grid_1d(D * B * H, limits) + (stream,)
    proj = grid_1d(D * B * P, limits) + (stream,)
    for s in range(T):
        # Without projection the step writes the next h itself.
        cell_out = h_cell if projected else h_next
        step_kernel[step](gx, s, layer.w_hh, layer.bias_h, h, c, cell_out, c_next, out,
                          lengths, not projected)
        if projected:
            kernels.project_step[proj](h_cell, layer.w_hr, s, h, h_next, out, lengths)
        h, h_next = h_next, h
        c, c_next = c_next, c
    return out, h, c


def _row_cell_layer(gx, layer: DeviceLayer, h0, c, lengths, out, limits: Limits, stream):
    """A cell with a row of its own (numba_lstm.cells: LayerNorm LSTM): per step,
    one launch for the gates and one for the cells. c is updated in place."""
    T, B = gx.shape[:2]
    D, H, G = layer.num_directions, layer.hidden_size, layer.w_hh.shape[2]
    if STRATEGY["name"] == "persistent":
        raise RuntimeError(f"the persistent kernel cannot run a {layer.cell.name} cell; "
                           "it runs per step")
    gates_kernel, rows_kernel = kernels.recurrence_kernels(layer.cell, gx.dtype)
    z = cuda.device_array((D, B, G), gx.dtype, stream=stream)
    h = cuda.device_array((D, B, H), gx.dtype, stream=stream)
    h.copy_to_device(h0, stream=stream)
    h_next = cuda.device_array((D, B, H), gx.dtype, stream=stream)
    gates = grid_1d(D * B * G, limits) + (stream,)
    rows = grid_1d(D * B, limits) + (stream,)
    for s in range(T):
        gates_kernel[gates](gx, s, layer.w_hh, layer.bias_h, h, z, lengths)
        rows_kernel[rows](gx, s, z, layer.cell_params, h, c, h_next, out, lengths)
        h, h_next = h_next, h
    return out, h, c


def forward(layers: list[DeviceLayer], x, h0, c0, lengths):
    """As numba_lstm.cpu.forward; NumPy in -> NumPy out, device in -> device out.

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
    else:
        h0 = _to_device(h0, stream)
    if c0 is None:
        c0 = _filled((n, B, layers[0].state_size), dtype, 0, stream, limits)
    else:
        c0 = _to_device(c0, stream)
    if lengths is None:
        lengths = _filled((B,), np.int64, T, stream, limits)
    else:
        lengths = cuda.to_device(np.ascontiguousarray(lengths, np.int64), stream=stream)
    h_n = cuda.device_array(h0.shape, dtype, stream=stream)
    c_n = cuda.device_array(c0.shape, dtype, stream=stream)
    out = x
    for k, layer in enumerate(layers):
        sl = slice(k * D, (k + 1) * D)
        out, h_k, c_k = layer_forward(out, layer, h0[sl], c0[sl], lengths, limits, stream)
        h_n[sl].copy_to_device(h_k, stream=stream)
        if c_k.size:
            c_n[sl].copy_to_device(c_k, stream=stream)
    if on_device:
        return out, h_n, c_n
    results = tuple(a.copy_to_host(stream=stream) for a in (out, h_n, c_n))
    stream.synchronize()
    return results
