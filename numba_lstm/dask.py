"""Scale-out: a recurrent module over a dask array, one task per batch chunk.

Sequences are independent, so the batch axis is the one to split; time and
features must be whole in each task (a recurrence cannot start mid-sequence).
The module enters the graph once, as one key that every task depends on, so
a distributed worker receives its weights once rather than with every task.
Dask itself is the ``dask`` extra: importing numba_lstm never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def apply(module, x, *, lengths=None) -> tuple[Any, Any]:
    """``module(x, lengths=lengths)`` over a dask array, lazily.

    x: a ``dask.array.Array`` in the module's layout, (T, B, I), or (B, T, I)
    for a batch-first module, chunked along any axes. lengths: None, or a
    NumPy or dask integer array of shape (B,). Returns what the module returns,
    ``(output, (h_n, c_n))`` for LSTMs and ``(output, h_n)`` for GRUs and RNNs,
    as dask arrays chunked along the batch
    like x.
    """
    import dask.array as da
    from dask import delayed

    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask.array.Array, got {type(x).__name__}; "
                        "for a NumPy array call the module itself")
    if x.ndim != 3:
        raise ValueError(f"x must be batched 3-D input, got {x.ndim}-D of shape {x.shape}")
    if any(np.isnan(n) for n in x.shape):
        raise ValueError(f"x has unknown chunk sizes {x.chunks}; call x.compute_chunk_sizes()")
    if x.shape[2] != module.input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. "
                           f"Expected {module.input_size}, got {x.shape[2]}")
    batch_axis = 0 if getattr(module, "batch_first", False) else 1
    time_axis = 1 - batch_axis
    x = x.rechunk({time_axis: -1, 2: -1})
    batch_chunks = x.chunks[batch_axis]
    B, T = x.shape[batch_axis], x.shape[time_axis]
    length_blocks = [None] * len(batch_chunks)
    if lengths is not None:
        if not isinstance(lengths, da.Array):
            lengths = da.from_array(np.asarray(lengths), chunks=-1)
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape (batch,) = ({B},), "
                             f"got {tuple(lengths.shape)}")
        length_blocks = list(lengths.rechunk((batch_chunks,)).to_delayed().ravel())

    shared = delayed(module, pure=True)  # one key: the weights travel once per worker
    x_blocks = x.to_delayed().ravel()
    out_width = module._output_width()
    state_widths = module._state_widths()
    n_states = module._state_rows()
    outputs, states = [], [[] for _ in state_widths]
    for block, block_lengths, b in zip(x_blocks, length_blocks, batch_chunks, strict=True):
        result = delayed(_run_block, pure=True, nout=1 + len(state_widths))(
            shared, block, block_lengths)
        out_shape = (b, T, out_width) if batch_axis == 0 else (T, b, out_width)
        outputs.append(da.from_delayed(result[0], out_shape, module.dtype))
        for k, width in enumerate(state_widths):
            states[k].append(da.from_delayed(result[1 + k], (n_states, b, width), module.dtype))
    output = da.concatenate(outputs, axis=batch_axis)
    state = tuple(da.concatenate(parts, axis=1) for parts in states)
    return output, (state if len(state) > 1 else state[0])


def _run_block(module, x, lengths):
    """One batch chunk in a worker: its own thread budget, the module's call."""
    _use_worker_threads()
    kwargs = {} if lengths is None else {"lengths": lengths}
    output, state = module(x, **kwargs)
    return (output, *state) if isinstance(state, tuple) else (output, state)


def _use_worker_threads() -> None:
    """On a dask.distributed worker, as many Numba threads as the worker has
    task threads: several single-threaded workers on one machine would
    otherwise each start a thread per core and oversubscribe it."""
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return  # not in a distributed worker: Numba's default stands
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
