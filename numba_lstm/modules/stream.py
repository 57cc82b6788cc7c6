"""Streaming: feed a sequence in chunks, state carried between calls."""

from __future__ import annotations

import numpy as np

from . import _validate as v


class Stream:
    """``y = stream(x_chunk)`` runs one or more steps and keeps (h, c).

    Chunks have the module's input layout ((T, B, I), (B, T, I) if batch_first,
    or (T, I) unbatched); feeding a sequence in chunks of any sizes gives the
    same result as one call. ``batch_size=None`` takes the first chunk's.
    """

    def __init__(self, module, batch_size: int | None = None):
        self._module = module
        self._batch_size = None if batch_size is None else v.positive_int(batch_size,
                                                                           "batch_size")
        self._state = None
        self._trusted = False  # _state is what the module returned, unchanged

    @property
    def state(self):
        """(h, c) as the module's hx/(h_n, c_n), or None before the first chunk."""
        return self._state

    @state.setter
    def state(self, value) -> None:
        self._trusted = False
        if value is None:
            self._state = None
            return
        module = self._module
        parts = (module._as_array(s, f"state[{k}]")
                 for k, s in enumerate(v.check_hx_pair(value, "state")))
        # Copies, so the caller's later writes do not change the stream.
        self._state = tuple(module._backend().copy(s) if module._on_device(s) else s.copy()
                            for s in parts)

    def reset(self) -> None:
        """Forget the state: the next chunk starts from zeros."""
        self._state = None
        self._trusted = False

    def __call__(self, x_chunk) -> np.ndarray:
        if self._trusted and self._batch_size in (None, 1):
            # One step at batch 1 from the module's own state: nothing to
            # recheck (SPEC S8's per-call overhead).
            step = getattr(self._module, "_stream_step", None)
            result = step(x_chunk, self._state) if step is not None else None
            if result is not None:
                output, self._state = result
                return output
        x = self._module._as_array(x_chunk, "input")
        if self._batch_size is not None and x.ndim == 3:
            batch = x.shape[0] if getattr(self._module, "batch_first", False) else x.shape[1]
            if batch != self._batch_size:
                raise ValueError(f"stream was opened for batch_size={self._batch_size}, "
                                 f"got a chunk of shape {v.fmt_shape(x.shape)}")
        output, self._state = self._module(x, self._state)
        self._trusted = True
        return output
