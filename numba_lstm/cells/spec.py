"""What a recurrent cell is: its shapes and names as data, its math as functions
written once over the primitives of cells._ops, bound per backend by ``bind``."""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import _ops


@dataclass(frozen=True)
class Cell:
    """One recurrent cell type.

    gates:         weight rows per hidden unit (torch's weight_ih is (gates*H, in))
    summed_gates:  the leading gates whose x and h pre-activations (and both
                   biases) are added before the cell sees them; the rest (GRU's n)
                   reach the cell as two parts, h's with b_hh, x's with b_ih
    states:        the state tensors, h first ("h", "c") or ("h",)
    unit:          unit(z, zx, h, c, h_new, u, H, n): the cell on units u..u+n of
                   one row. z (gates*H,) the gates' summed pre-activations, and for
                   unsummed gates the h part; zx (gates*H,) the x part with b_ih;
                   h, c (H,) the state, c updated in place; h_new (H,) written.
                   h may be h_new (each unit reads its h before writing it).
    aliases:       names the unit's math reads, bound to one of the primitives
                   (RNN's ``activation`` -> "tanh" or "relu")
    row:           for a cell that is not unit by unit (LayerNorm LSTM: its
                   normalisation spans the row), row(z, zx, h, c, h_new, p) on
                   a whole row, with the layer's cell parameters p (a 2-D
                   array); the backends then call it instead of looping units
    """

    name: str
    gates: int
    summed_gates: int
    states: tuple[str, ...]
    unit: Callable | None
    aliases: dict[str, str] = field(default_factory=dict)
    row: Callable | None = None

    @property
    def has_cell_state(self) -> bool:
        return len(self.states) > 1

    def split_bias(self, b_ih, b_hh, hidden: int, dtype):
        """(bias_x, bias_h), each (gates*H,): bias_x goes with x @ W_ih^T for every
        step at once; bias_h is b_hh on the unsummed gates (zeros elsewhere),
        added to h @ W_hh^T each step."""
        G, S = self.gates * hidden, self.summed_gates * hidden
        bias_x = np.zeros(G, dtype)
        bias_h = np.zeros(G, dtype)
        if b_ih is not None:
            bias_x += np.asarray(b_ih, dtype)
            bias_x[:S] += np.asarray(b_hh, dtype)[:S]
            bias_h[S:] = np.asarray(b_hh, dtype)[S:]
        return bias_x, bias_h

    def host_layout(self, directions, dtype, cell_params=None) -> tuple:
        """One layer's weights as both backends lay them out, on the host.

        directions: one (w_ih, w_hh, b_ih, b_hh, w_hr) per direction, torch
        layout (biases and w_hr may be None); cell_params: one (P, H) array per
        direction, or None. Returns w_ih (I, D*G), W_ih^T of every direction side
        by side; step_bias (D, 2, G), split_bias's pair per direction; w_hh
        (D, H_out, G) W_hh^T; w_hr (D, H, H_out) W_hr^T or (D, 0, 0); and
        cell_params (D, P, H), or (D, 0, 0).
        """
        D = len(directions)
        hidden = directions[0][1].shape[0] // self.gates
        w_ih = np.concatenate([np.asarray(dw[0], dtype).T for dw in directions], axis=1)
        step_bias = np.stack([self.split_bias(dw[2], dw[3], hidden, dtype) for dw in directions])
        w_hh = np.stack([np.asarray(dw[1], dtype).T for dw in directions])
        if directions[0][4] is None:
            w_hr = np.zeros((D, 0, 0), dtype)
        else:
            w_hr = np.stack([np.asarray(dw[4], dtype).T for dw in directions])
        cell_params = (np.zeros((D, 0, 0), dtype) if cell_params is None
                       else np.asarray(cell_params, dtype))
        return w_ih, step_bias, w_hh, w_hr, cell_params

    def reference_step(self, gx, gh, h, c, p=None):
        """One step in NumPy: gx = x @ W_ih^T + b_ih, gh = h @ W_hh^T + b_hh, each
        (B, gates*H); h (B, H), c (B, H) or None; p the cell's parameters, if
        it has any. Returns (h', c')."""
        H = gh.shape[-1] // self.gates
        S = self.summed_gates * H
        z = np.concatenate([gx[..., :S] + gh[..., :S], gh[..., S:]], axis=-1)
        c_new = None if c is None else c.copy()
        h_new = np.empty_like(h)
        step = _numpy_step(self)
        if self.row is None:
            step(z, gx, h, c_new, h_new, 0, H, H)
        else:
            for b in range(z.shape[0]):  # one row at a time, in plain Python
                step(z[b], gx[b], h[b], c_new[b], h_new[b], p)
        return h_new, c_new


_NUMPY_STEPS: dict[str, Callable] = {}


def _numpy_step(cell: Cell) -> Callable:
    """The cell's unit (or row) bound to NumPy's primitives, made once per cell:
    the reference calls it every step."""
    if cell.name not in _NUMPY_STEPS:
        _NUMPY_STEPS[cell.name] = bind(cell, {}, part="unit" if cell.row is None else "row")
    return _NUMPY_STEPS[cell.name]


def rebind(fn, names: dict, suffix: str = ""):
    """``fn`` with some of its global names bound to other objects: a new function
    object, ``fn`` itself untouched. A suffix makes its qualified name unique,
    which Numba's on-disk cache keys on."""
    env = dict(fn.__globals__)
    env.update(names)
    new = types.FunctionType(fn.__code__, env, fn.__name__ + suffix, fn.__defaults__,
                             fn.__closure__)
    new.__qualname__ = fn.__qualname__ + suffix
    new.__doc__ = fn.__doc__
    return new


def bind(cell: Cell, primitives: dict, jit=None, suffix: str = "", part: str = "unit"):
    """The cell's unit (or, with part="row", its row) with ``primitives`` (names
    of cells._ops) bound, and the functions it calls from its own module bound
    the same way; compiled with ``jit`` if given. With no primitives this is
    the NumPy reference."""
    names = {k: f for k, f in vars(_ops).items() if callable(f)}
    names.update(primitives)
    names.update({alias: names[target] for alias, target in cell.aliases.items()})
    fn = getattr(cell, part)
    module = fn.__globals__
    for helper in module.get("HELPERS", ()):
        helper_fn = rebind(module[helper], names, suffix)
        names[helper] = jit(helper_fn) if jit else helper_fn
    bound = rebind(fn, names, suffix)
    return jit(bound) if jit else bound
