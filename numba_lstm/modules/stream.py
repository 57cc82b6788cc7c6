"""Streaming: feed a sequence in chunks, state carried between calls."""

from __future__ import annotations

import numpy as np

from . import _validate as v


class Stream:
    """``y = stream(x_chunk)`` runs one or more steps and keeps the state: h, or
    (h, c) for an LSTM, as the module's hx.

    Chunks have the module's input layout ((T, B, I), (B, T, I) if batch_first,
    or (T, I) unbatched); feeding a sequence in chunks of any sizes gives the
    same result as one call. ``batch_size=None`` takes the first chunk's.
    """

    def __init__(self, module, batch_size: int | None = None):
        self._module = module
        self._batch_size = None if batch_size is None else v.positive_int(batch_size,
                                                                           "batch_size")
        self._state = None
        # After a chunk the module has a fast stepper for (cpu.StackStepper: one
        # step at batch 1), the stepper holds the state instead of _state, until
        # a chunk it does not take or a change of the module's weights.
        self._stepper = None

    @property
    def state(self):
        """The state as the module's hx (h, or (h, c)), or None before the first chunk."""
        if self._stepper is not None:
            return self._stepper.state
        return self._state

    @state.setter
    def state(self, value) -> None:
        self._stepper = None
        if value is None:
            self._state = None
            return
        # A copy, so the caller's later writes do not change the stream.
        self._state = self._module.copy_state(value)

    def reset(self) -> None:
        """Forget the state: the next chunk starts from zeros."""
        self._state = None
        self._stepper = None

    def __call__(self, x_chunk) -> np.ndarray:
        stepper = self._stepper
        if stepper is not None and self._module.stepper_is_current(stepper):
            output = stepper(x_chunk)  # a streaming step's whole per-call cost: nothing else runs
            if output is not None:
                return output
        self._leave_stepper()
        x = self._module._as_array(x_chunk, "input")
        if self._batch_size is not None and x.ndim == 3:
            batch = x.shape[0] if getattr(self._module, "batch_first", False) else x.shape[1]
            if batch != self._batch_size:
                raise ValueError(f"stream was opened for batch_size={self._batch_size}, "
                                 f"got a chunk of shape {v.fmt_shape(x.shape)}")
        output, self._state = self._module(x, self._state)
        self._stepper = self._module.fast_stepper(x, self._state)
        return output

    def _leave_stepper(self) -> None:
        if self._stepper is not None:
            self._state = self._stepper.state
            self._stepper = None
