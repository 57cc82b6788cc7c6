"""nl.LSTM: torch.nn.LSTM's interface and numbers, on NumPy arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cells import LSTM as LSTM_CELL
from ..cells import Cell
from .recurrent import RecurrentConfig, RNNBase, infer_config, recurrent_prefixes

LSTMConfig = RecurrentConfig  # the name this API first had


def lstm_prefixes(state_dict: Mapping[str, Any]) -> list[str]:
    """Every prefix under which ``state_dict`` holds an LSTM, GRU or RNN (``""``
    for a bare one); numba_lstm.modules.recurrent.family_of tells which."""
    return recurrent_prefixes(state_dict)


def infer_lstm_config(state_dict: Mapping[str, Any], prefix: str = "") -> RecurrentConfig:
    """Read sizes, layers, bias, direction and projection from names and shapes."""
    return infer_config(state_dict, prefix, "LSTM")


class LSTM(RNNBase):
    """Multi-layer LSTM over NumPy arrays, as ``torch.nn.LSTM`` at inference.

    ``lstm(input, hx=None, *, lengths=None)`` returns ``output, (h_n, c_n)`` with
    torch's shapes; ``lengths`` gives packed-sequence semantics for right-padded
    batches. ``dropout`` is validated and has no effect (inference).
    """

    family = "LSTM"

    @property
    def _cell(self) -> Cell:
        return LSTM_CELL

    def fast_stepper(self, x, state):
        """cpu.stepper's when x was one step at batch 1 and the stack has a
        one-call kernel (one direction, no projection), else None."""
        if self._device != "cpu" or self._layers.step is None or x.size != self.input_size:
            return None
        backend = self._backend()
        if not backend.stream_step_ready(self._layers):  # cold cache: compiling elsewhere
            return None
        return backend.stepper(self._layers, *state, batched=state[0].ndim == 3)
