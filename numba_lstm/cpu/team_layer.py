"""The layer loop's tasks (cpu.layer) as team jobs (cpu.team): one job per
layer call, its input projection included, instead of Numba thread launches.

A launch on Numba's workqueue wakes sleeping workers and then the caller:
81-145 µs for an empty two-task launch on these VMs, which a small
bidirectional stack pays once per layer per call. The team's helpers spin
between jobs, so a layer's tasks (direction x batch slice, each the whole
time loop) start at once; each task is claimed by whichever thread gets to
it first, the caller included, so a late or absent helper only means the
caller runs more tasks. A layer that needs gx projects it first, by row
blocks claimed the same way (cpu.projection), every thread waiting until all
blocks are done.

A job kind per (cell, dtype, W_hh and W_ih in a dot layout, int8's or
bfloat16's, or not):
each is a serve loop compiled with its cell's task (LayerKernels.task), and
its number is fixed by the cell's place in cells.CELLS, since a cached loop
carries its kind as a constant.
"""

import numpy as np
from numba import njit

from ..cells import CELLS, Cell, rebind
from .atomics import fetch_add
from .layer import layer_kernels
from .projection import LINE, input_projection
from .recurrence import _FLAGS
from .team import DESC, KIND, serve, view

# Descriptor of a layer job in ctrl[DESC:], after its kind: sizes, then addresses.
(_T, _B, _I, _TG, _D, _H_OUT, _G, _P, _K, _NR, _HR, _HR_OUT, _CP, _CP_H, _HC, _CHUNKS,
 _PANELS, _P_DOT, _K4, _W_DOT_ROW) = range(DESC + 1, DESC + 21)
(_X, _GX, _W_ROWS, _W_PANELS, _W_HR, _BIAS, _CELL_PARAMS, _H0, _C0, _LENGTHS, _OUT, _H_N,
 _C_N, _CLAIMS, _W_DOT, _DOT_OFFSET, _DOT_SCALE) = range(DESC + 21, DESC + 38)
# The input projection's: sizes, then addresses.
(_PROJECT, _P_IH, _NR_IH, _P_IH_DOT, _K4_IH, _W_IH_DOT_ROW) = range(DESC + 38, DESC + 44)
(_W_IH, _PROJ_BIAS, _PROJ_COUNTERS, _IH_DOT, _IH_OFFSET, _IH_SCALE) = range(DESC + 44, DESC + 50)
_SLICED = DESC + 50  # the projection by column slices (projection.input_projection)

# Kinds of the stack jobs (cpu.cooperative) are below this.
FIRST_KIND = 16


# A dot layout's kind: none, int8's, bfloat16's (the pairs, uint8).
NO_DOT, INT8_DOT, BF16_DOT = 0, 1, 2


def dot_kind(dot: tuple | None) -> int:
    """NO_DOT, INT8_DOT or BF16_DOT for a layer's (w_dot, offset, scale), or None."""
    if dot is None:
        return NO_DOT
    return BF16_DOT if dot[0].dtype == np.uint8 else INT8_DOT


def layer_job_kind(cell: Cell, dtype, hh_dot: int, ih_dot: int) -> int:
    return (FIRST_KIND + 18 * list(CELLS).index(cell.name) + 9 * (np.dtype(dtype) == np.float64)
            + 3 * ih_dot + hh_dot)


@njit(**_FLAGS)
def describe_layer_job(ctrl, kind, x, gx, w_rows, w_panels, w_hr, bias, cell_params, h0, c0,
                       lengths, out, h_n, c_n, n_chunks, panels, claims, w_dot, dot_offset,
                       dot_scale, project, w_ih, proj_bias, proj_counters, ih_dot, ih_offset,
                       ih_scale, sliced):
    """Write a layer job's descriptor: cpu.layer._layer's arguments, every
    array C-contiguous, the dot layout's three arrays empty when absent; with
    ``project`` 1 or 2, the job first fills gx (T, B, D*G) = x @ W_ih^T +
    proj_bias (cpu.projection: w_ih (D, P, I, NR) panels, ih_dot/ih_offset/
    ih_scale W_ih^T's dot layout or empty, proj_counters its block counters;
    2: x is a hidden state, quantized on h's 8-bit grid for the dot;
    ``sliced``: by column slices, input_projection's)."""
    ctrl[KIND] = kind
    ctrl[_T], ctrl[_B], ctrl[_I] = x.shape
    ctrl[_TG] = gx.shape[0]
    ctrl[_D], ctrl[_H_OUT], ctrl[_G] = w_rows.shape
    ctrl[_P], ctrl[_K], ctrl[_NR] = w_panels.shape[1:]
    ctrl[_HR], ctrl[_HR_OUT] = w_hr.shape[1:]
    ctrl[_CP], ctrl[_CP_H] = cell_params.shape[1:]
    ctrl[_HC] = c0.shape[2]
    ctrl[_CHUNKS], ctrl[_PANELS], ctrl[_PROJECT] = n_chunks, panels, project
    ctrl[_SLICED] = sliced
    ctrl[_P_DOT], ctrl[_K4], ctrl[_W_DOT_ROW] = w_dot.shape[1:]
    ctrl[_P_IH], ctrl[_NR_IH] = w_ih.shape[1], w_ih.shape[3]
    ctrl[_P_IH_DOT], ctrl[_K4_IH], ctrl[_W_IH_DOT_ROW] = ih_dot.shape[1:]
    for slot, address in ((_X, x.ctypes.data), (_GX, gx.ctypes.data),
                          (_W_ROWS, w_rows.ctypes.data), (_W_PANELS, w_panels.ctypes.data),
                          (_W_HR, w_hr.ctypes.data), (_BIAS, bias.ctypes.data),
                          (_CELL_PARAMS, cell_params.ctypes.data), (_H0, h0.ctypes.data),
                          (_C0, c0.ctypes.data), (_LENGTHS, lengths.ctypes.data),
                          (_OUT, out.ctypes.data), (_H_N, h_n.ctypes.data),
                          (_C_N, c_n.ctypes.data), (_CLAIMS, claims.ctypes.data),
                          (_W_DOT, w_dot.ctypes.data), (_DOT_OFFSET, dot_offset.ctypes.data),
                          (_DOT_SCALE, dot_scale.ctypes.data), (_W_IH, w_ih.ctypes.data),
                          (_PROJ_BIAS, proj_bias.ctypes.data),
                          (_PROJ_COUNTERS, proj_counters.ctypes.data),
                          (_IH_DOT, ih_dot.ctypes.data), (_IH_OFFSET, ih_offset.ctypes.data),
                          (_IH_SCALE, ih_scale.ctypes.data)):
        ctrl[slot] = address


@njit(inline="always", **_FLAGS)
def _dot_layout(ctrl, sizes, addresses, dot_dtype):
    """(w_dot (D, P, K4, row), offset (D, G) int32, scale (D, G)) from the
    descriptor: their sizes from slot ``sizes`` on, addresses from ``addresses`` on."""
    D, G = ctrl[_D], ctrl[_G]
    return (view(ctrl, addresses, (D, ctrl[sizes], ctrl[sizes + 1], ctrl[sizes + 2]), dot_dtype),
            view(ctrl, addresses + 1, (D, G), np.int32),
            view(ctrl, addresses + 2, (D, G), np.float32))


@njit(inline="always", **_FLAGS)
def _hh_int8_dot(ctrl):
    return _dot_layout(ctrl, _P_DOT, _W_DOT, np.int8)


@njit(inline="always", **_FLAGS)
def _ih_int8_dot(ctrl):
    return _dot_layout(ctrl, _P_IH_DOT, _IH_DOT, np.int8)


@njit(inline="always", **_FLAGS)
def _hh_bf16_dot(ctrl):
    return _dot_layout(ctrl, _P_DOT, _W_DOT, np.uint8)


@njit(inline="always", **_FLAGS)
def _ih_bf16_dot(ctrl):
    return _dot_layout(ctrl, _P_IH_DOT, _IH_DOT, np.uint8)


@njit(inline="always", **_FLAGS)
def _no_dot_layout(ctrl):
    return None


# Bound per job kind by layer_serve(); these placeholders are never called.
DTYPE = np.float32
KIND_NUMBER = 0


def hh_dot_of(ctrl):
    raise NotImplementedError


ih_dot_of = hh_dot_of


def layer_task(*args):
    raise NotImplementedError


def _join_layer(ctrl, tid):
    """Project gx if the job asks, then claim and run the layer's tasks,
    thread tid's own first (task tid)."""
    T, B, D, H_out, G = ctrl[_T], ctrl[_B], ctrl[_D], ctrl[_H_OUT], ctrl[_G]
    n_chunks = ctrl[_CHUNKS]
    x = view(ctrl, _X, (T, B, ctrl[_I]), DTYPE)
    gx = view(ctrl, _GX, (ctrl[_TG], B, D * G), DTYPE)
    w_rows = view(ctrl, _W_ROWS, (D, H_out, G), DTYPE)
    w_panels = view(ctrl, _W_PANELS, (D, ctrl[_P], ctrl[_K], ctrl[_NR]), DTYPE)
    w_hr = view(ctrl, _W_HR, (D, ctrl[_HR], ctrl[_HR_OUT]), DTYPE)
    bias = view(ctrl, _BIAS, (D, 2, G), DTYPE)
    cell_params = view(ctrl, _CELL_PARAMS, (D, ctrl[_CP], ctrl[_CP_H]), DTYPE)
    h0 = view(ctrl, _H0, (D, B, H_out), DTYPE)
    c0 = view(ctrl, _C0, (D, B, ctrl[_HC]), DTYPE)
    lengths = view(ctrl, _LENGTHS, (B,), np.int64)
    out = view(ctrl, _OUT, (T, B, D * H_out), DTYPE)
    h_n = view(ctrl, _H_N, (D, B, H_out), DTYPE)
    c_n = view(ctrl, _C_N, (D, B, ctrl[_HC]), DTYPE)
    if ctrl[_PROJECT]:  # gx (T, B, D*G) then
        input_projection(x.reshape((T * B, ctrl[_I])),
                         view(ctrl, _W_IH, (D, ctrl[_P_IH], ctrl[_I], ctrl[_NR_IH]), DTYPE),
                         view(ctrl, _PROJ_BIAS, (D * G,), DTYPE), gx.reshape((T * B, D * G)),
                         ih_dot_of(ctrl), view(ctrl, _PROJ_COUNTERS, (2 * LINE,), np.int64),
                         ctrl[_PROJECT] == 2, ctrl[_SLICED] != 0)
    n_tasks = D * n_chunks
    claims = view(ctrl, _CLAIMS, (n_tasks,), np.int64)
    hh_dot = hh_dot_of(ctrl)
    panels = ctrl[_PANELS] != 0
    for i in range(n_tasks):
        task = (tid + i) % n_tasks
        if fetch_add(claims, task, 1) == 0:
            layer_task(task, x, gx, w_rows, w_panels, w_hr, bias, cell_params, h0, c0, lengths,
                       out, h_n, c_n, n_chunks, panels, hh_dot)


def _serve_layer(ctrl, spin_limit, tid):
    return serve(ctrl, spin_limit, tid, KIND_NUMBER, join_layer)


def join_layer(ctrl, tid):
    raise NotImplementedError


_SERVE: dict[tuple, tuple[int, object]] = {}  # (kind, loop) by cell, dtype, layouts


_HH_DOT_OF = {NO_DOT: _no_dot_layout, INT8_DOT: _hh_int8_dot, BF16_DOT: _hh_bf16_dot}
_IH_DOT_OF = {NO_DOT: _no_dot_layout, INT8_DOT: _ih_int8_dot, BF16_DOT: _ih_bf16_dot}
_DOT_TAG = {NO_DOT: "", INT8_DOT: "_dot", BF16_DOT: "_bf16_dot"}


def layer_serve(cell: Cell, dtype, hh_dot: int, ih_dot: int) -> tuple[int, object]:
    """(kind, serve loop) of the layer jobs of ``cell`` in ``dtype``, with W_hh
    and W_ih in a dot layout (dot_kind) or not; made on first use."""
    key = (cell.name, np.dtype(dtype), hh_dot, ih_dot)  # per layer call: no list scan
    if key not in _SERVE:
        kind = layer_job_kind(cell, dtype, hh_dot, ih_dot)
        # The int8 tags as before, so that their cached loops keep their names.
        tag = (f"__{cell.name}_{np.dtype(dtype).name}"
               f"{'_hh' + _DOT_TAG[hh_dot] if hh_dot else ''}"
               f"{'_ih' + _DOT_TAG[ih_dot] if ih_dot else ''}")
        names = dict(DTYPE=np.dtype(dtype).type, KIND_NUMBER=kind,
                     layer_task=layer_kernels(cell).task,
                     hh_dot_of=_HH_DOT_OF[hh_dot], ih_dot_of=_IH_DOT_OF[ih_dot])
        join = njit(inline="always", **_FLAGS)(rebind(_join_layer, names, tag))
        _SERVE[key] = kind, njit(**_FLAGS)(rebind(_serve_layer, dict(names, join_layer=join),
                                                   tag))
    return _SERVE[key]
