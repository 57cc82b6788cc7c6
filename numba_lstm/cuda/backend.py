"""CUDA backend: the CPU backend's interface (pack_stack, forward) on a GPU.

NumPy inputs are copied in and results copied back; inputs that expose
``__cuda_array_interface__`` (numba device arrays, CuPy, torch CUDA tensors)
stay on the device and the results are numba device arrays. Launches are
checked against the device's and the compiled kernel's limits
(numba_lstm.cuda.launch) before they are made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import cuda

from ..cells import LSTM, Cell
from .kernels import TILE, kernels_for
from .launch import KernelResources, Limits, grid_1d, matmul_grid, persistent_plan

# "auto" picks per layer; tests force each path ("persistent", "per_step").
STRATEGY = {"name": "auto"}
# Set by numba_lstm.cuda.load_backend when libcudadevrt (the grid barrier) is missing.
PERSISTENT_UNAVAILABLE = {"reason": None}


@dataclass(frozen=True)
class DeviceLayer:
    """One layer, all directions, on the device, in the CPU backend's layout
    (G = cell.gates * H gate columns per direction)."""

    w_ih: object  # (I, D*G) W_ih^T of every direction side by side
    bias: object  # (D*G,) the x side's bias (cells.Cell.split_bias)
    w_hh: object  # (D, H_out + 1, G) W_hh^T, then the h side's bias of the unsummed gates
    w_hr: object  # (D, H, H_out) W_hr^T, or (D, 0, 0)
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
    w_hh = np.concatenate([w_hh, step_bias[:, 1][:, None, :]], axis=1)  # (D, H_out+1, G)
    arrays = (w_ih, step_bias[:, 0].reshape(-1), w_hh, w_hr, cell_params)
    return DeviceLayer(*(cuda.to_device(np.ascontiguousarray(a)) for a in arrays), cell,
                       len(directions), w_hh.shape[2] // cell.gates, w_hh.shape[1] - 1)


def pack_stack(layers: list, dtype, cell: Cell = LSTM, cell_params=None,
               quantized=None) -> list[DeviceLayer]:
    """layers: per layer, one (w_ih, w_hh, b_ih, b_hh, w_hr) tuple per direction;
    cell_params: per layer, its argument of _pack_layer (or None). A quantized
    module's weights arrive as their float32 values in ``layers``, and the GPU
    runs those (``quantized``, the stored form, is not used here)."""
    cell_params = cell_params or [None] * len(layers)
    return [_pack_layer(directions, dtype, cell, p)
            for directions, p in zip(layers, cell_params, strict=True)]


# -- arrays and streams ------------------------------------------------------------------
def is_device_array(value) -> bool:
    # The simulator's device arrays have no __cuda_array_interface__.
    return hasattr(value, "__cuda_array_interface__") or type(value).__name__ == "FakeCUDAArray"


def _is_numba_stream(value) -> bool:
    return type(value).__module__.startswith("numba.") and hasattr(value, "synchronize")


def _default_stream():
    # The legacy default stream is what numba's default stream means; its handle
    # (1) is one the CUDA Array Interface v3 allows, where 0 is forbidden.
    return cuda.legacy_default_stream()


def _stream_from_handle(handle: int):
    if handle in (0, 1):  # 0: the legacy default stream, as torch's default reports it
        return _default_stream()
    if handle == 2:
        return cuda.per_thread_default_stream()
    return cuda.external_stream(handle)


def stream_of(array):
    """The stream the producer of ``array`` queued its work on: a numba device
    array's own stream, else the CUDA Array Interface's ``stream`` (v3), else
    the legacy default stream (v2 producers such as torch 2.13 name none: the
    caller must pass ``stream=`` then, see docs/cuda.md)."""
    own = getattr(array, "stream", 0)
    if _is_numba_stream(own):
        return own
    handle = (getattr(array, "__cuda_array_interface__", None) or {}).get("stream")
    return _default_stream() if handle is None else _stream_from_handle(handle)


def resolve_stream(stream=None, like=None):
    """The numba stream a call's work goes on: ``stream`` if given (a numba
    stream, a torch.cuda.Stream, a CuPy stream, or a raw handle), else the one
    ``like``'s producer declared (stream_of), else the legacy default stream."""
    if stream is None:
        return stream_of(like) if like is not None and is_device_array(like) else \
            _default_stream()
    if _is_numba_stream(stream):
        return stream
    for attribute in ("cuda_stream", "ptr"):  # torch, CuPy
        if isinstance(getattr(stream, attribute, None), int):
            return _stream_from_handle(getattr(stream, attribute))
    if hasattr(stream, "__cuda_stream__"):
        return _stream_from_handle(stream.__cuda_stream__()[1])
    if isinstance(stream, (int, np.integer)) and not isinstance(stream, bool):
        return _stream_from_handle(int(stream))
    raise TypeError("stream must be a numba stream, a torch.cuda.Stream, a CuPy stream or "
                    f"an integer CUDA stream handle, got {type(stream).__name__}")


def _as_device(value):
    if type(value).__name__ in ("DeviceNDArray", "FakeCUDAArray"):
        return value  # already numba's: keep its stream binding
    # No copy, and no wait: the work goes on the stream the caller chose.
    return cuda.as_cuda_array(value, sync=False)


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


def copy(array, stream=None):
    """A new device array holding ``array``'s values, on its stream."""
    stream = resolve_stream(stream, array)
    out = cuda.device_array(array.shape, array.dtype, stream=stream)
    if out.size:
        out.copy_to_device(array, stream=stream)
    return out


def swap_leading_axes(x, stream=None):
    """(T, B, F) <-> (B, T, F) on the device, as a new array on the call's stream."""
    stream = resolve_stream(stream, x)
    T, B, F = x.shape
    out = cuda.device_array((B, T, F), x.dtype, stream=stream)
    if out.size:
        kernels = kernels_for(LSTM, x.dtype)
        kernels.swap_leading_axes[grid_1d(out.size, Limits.of_current_device()) + (stream,)](
            x, out)
    return out


def _to_device(array, stream):
    if is_device_array(array):
        return _as_device(array)
    return cuda.to_device(np.ascontiguousarray(array), stream=stream)


# -- the persistent launch ---------------------------------------------------------------
_PLANS: dict = {}


def _persistent_launch(kernel, args, batch: int, layer: DeviceLayer, itemsize: int,
                       limits: Limits):
    """The launch plan for the persistent kernel with these arguments, or None.

    On a GPU the kernel is compiled for the arguments first: its register count
    caps the block, and the driver's cooperative-grid limit caps the grid."""
    key = (id(kernel), batch, layer.hidden_size, layer.num_directions, itemsize)
    if key not in _PLANS:
        if limits.simulator:
            resources = KernelResources(0, limits.max_threads_per_block)
            cooperative = None
        else:
            compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
            resources = KernelResources(compiled.regs_per_thread,
                                        compiled.max_threads_per_block,
                                        compiled.shared_mem_per_block)

            def cooperative(threads, shared, compiled=compiled):
                return compiled.max_cooperative_grid_blocks(threads, shared)
        _PLANS[key] = persistent_plan(batch, layer.hidden_size, layer.num_directions,
                                      itemsize, layer.cell.gates, limits, resources,
                                      cooperative)
    return _PLANS[key]


# -- the layer and the stack -------------------------------------------------------------
def _run_layer(x, layer: DeviceLayer, state, gx, h_cell, out, lengths, limits: Limits,
               stream) -> int:
    """x (T, B, I) -> out (T, B, D*P), with state[0] (D, B, P + Hc) holding h0, c0.
    gx (T*B, D*G) and h_cell (D, B, H or 0) are scratch. Returns the half of
    ``state`` holding the final state. Everything is queued on ``stream``."""
    T, B, I = x.shape
    D, H, P = layer.num_directions, layer.hidden_size, layer.output_size
    kernels = kernels_for(layer.cell, x.dtype)
    G = gx.shape[1]
    kernels.matmul_bias[matmul_grid(T * B, G, TILE, limits), (TILE, TILE), stream](
        x.reshape(T * B, I), layer.w_ih, layer.bias, gx)
    gx = gx.reshape(T, B, G)
    name = STRATEGY["name"]
    if layer.cell.row is not None:
        if name == "persistent":
            raise RuntimeError(f"the persistent kernel cannot run a {layer.cell.name} cell; "
                               "it runs per step")
        z = cuda.device_array((D, B, G // D), x.dtype, stream=stream)
        gates, rows = grid_1d(D * B * G // D, limits) + (stream,), grid_1d(D * B, limits) + (
            stream,)
        for s in range(T):
            kernels.row_gates[gates](gx, s, layer.w_hh, state, z, lengths)
            kernels.row_cells[rows](gx, s, z, layer.cell_params, state, out, lengths)
        return T % 2
    projected = P != H
    if name != "per_step" and not projected and PERSISTENT_UNAVAILABLE["reason"] is None:
        args = (gx, layer.w_hh, state, out, lengths, 1, 1, True)
        plan = _persistent_launch(kernels.persistent, args, B, layer, x.dtype.itemsize, limits)
        if plan is not None:
            kernels.persistent[plan.blocks, plan.threads, stream, plan.shared_bytes](
                gx, layer.w_hh, state, out, lengths, plan.units, plan.lanes, plan.stage_h)
            return T % 2
    if name == "persistent":
        why = PERSISTENT_UNAVAILABLE["reason"] or (
            "it does not project" if projected else "no block size fits this device")
        raise RuntimeError(f"the persistent kernel cannot run this layer (B={B}, H={H}, "
                           f"directions={D}, projection={projected}): {why}")
    step = grid_1d(D * B * H, limits) + (stream,)
    project = grid_1d(D * B * P, limits) + (stream,)
    for s in range(T):
        kernels.step[step](gx, s, layer.w_hh, state, h_cell, out, lengths)
        if projected:
            kernels.project[project](h_cell, layer.w_hr, s, state, out, lengths)
    return T % 2


def forward(layers: list[DeviceLayer], x, h0, c0, lengths, stream=None):
    """As numba_lstm.cpu.forward; NumPy in -> NumPy out, device in -> device out.

    h0/c0 may be NumPy or device arrays (None: zeros); lengths is NumPy or
    None. The work goes on ``stream`` (resolve_stream: by default the input's
    own). A call allocates its device arrays once, whatever its depth.
    """
    on_device = is_device_array(x)
    stream = resolve_stream(stream, x)
    limits = Limits.of_current_device()
    x = _to_device(x, stream)
    T, B = x.shape[:2]
    dtype = x.dtype
    first = layers[0]
    D, H, P, Hc = first.num_directions, first.hidden_size, first.output_size, first.state_size
    n = len(layers) * D

    def empty(*shape):
        return cuda.device_array(shape, dtype, stream=stream)

    h0 = empty(0, 0, 0) if h0 is None else _to_device(h0, stream)
    c0 = empty(0, 0, 0) if c0 is None or not Hc else _to_device(c0, stream)
    h_n, c_n = empty(n, B, P), empty(n, B, Hc)
    outs = [empty(T, B, D * P) for _ in range(min(len(layers), 2))]
    state = empty(2, D, B, P + Hc)  # ping-pong: [s % 2] read at step s
    kernels = kernels_for(first.cell, dtype)
    if T * B:
        if lengths is None:  # filled on the device: device input makes no host transfer
            full = cuda.device_array(B, np.int64, stream=stream)
            kernels.fill[grid_1d(B, limits) + (stream,)](full, T)
            lengths = full
        else:
            lengths = cuda.to_device(np.ascontiguousarray(lengths, np.int64), stream=stream)
        gx = empty(T * B, D * first.cell.gates * H)
        h_cell = empty(D, B, H if P != H else 0)
    set_state = grid_1d(max(state.size // 2, 1), limits) + (stream,)
    inp = x
    for k, layer in enumerate(layers):
        if state.size:
            kernels.state_in[set_state](h0, c0, k * D, P, state)
        src = 0  # with no steps to run, the final state is the initial one
        if T * B:
            out = outs[k % 2]
            src = _run_layer(inp, layer, state, gx, h_cell, out, lengths, limits, stream)
            inp = out
        if state.size:
            kernels.state_out[set_state](state, src, k * D, h_n, c_n)
    out = outs[(len(layers) - 1) % 2]
    if on_device:
        return out, h_n, c_n
    results = tuple(a.copy_to_host(stream=stream) for a in (out, h_n, c_n))
    stream.synchronize()
    return results
