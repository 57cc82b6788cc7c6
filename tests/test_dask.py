"""numba_lstm.dask.apply against the module's own call: the local threaded
scheduler and a two-process dask.distributed cluster on 127.0.0.1."""

import pickle

import numpy as np
import pytest
from conftest import assert_close
from test_models import random_layernorm_params

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import numba_lstm as nl  # noqa: E402
from numba_lstm.dask import apply  # noqa: E402


def _lstm(rng, **kw):
    m = nl.LSTM(5, 6, 2, **kw)
    return m.load_state_dict({k: rng.uniform(-0.5, 0.5, v.shape) for k, v in
                              m.state_dict().items()})


def _check(module, x, lengths, result, dtype=np.float32):
    output, state = dask.compute(*result, scheduler="threads")
    kwargs = {} if lengths is None else {"lengths": np.asarray(lengths)}
    expected_output, expected_state = module(x, **kwargs)
    assert_close(output, expected_output, dtype, "output")
    if not isinstance(expected_state, tuple):  # GRU, RNN: h alone
        state, expected_state = (state,), (expected_state,)
    for ours, theirs in zip(state, expected_state, strict=True):
        assert_close(ours, theirs, dtype, "state")


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths_kind", [None, "numpy", "dask"])
def test_matches_the_module_on_the_threaded_scheduler(batch_first, lengths_kind):
    rng = np.random.default_rng(0)
    module = _lstm(rng, bidirectional=True, batch_first=batch_first)
    x = rng.standard_normal((7, 10, 5)).astype(np.float32)  # (T, B, I)
    if batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    batch_axis = 0 if batch_first else 1
    # Chunked along time and features too: apply makes those whole.
    chunks = {batch_axis: 3, 1 - batch_axis: 2, 2: 2}
    dx = da.from_array(x, chunks=tuple(chunks[a] for a in range(3)))
    lengths = None
    if lengths_kind is not None:
        lengths = rng.integers(1, 8, 10)
        if lengths_kind == "dask":
            lengths = da.from_array(lengths, chunks=4)  # chunks unlike x's: realigned
    output, (h_n, c_n) = apply(module, dx, lengths=lengths)
    assert output.chunks[batch_axis] == (3, 3, 3, 1) and h_n.chunks[1] == (3, 3, 3, 1)
    assert output.shape == ((10, 7, 12) if batch_first else (7, 10, 12))
    assert (h_n.shape, c_n.shape) == ((4, 10, 6), (4, 10, 6))
    _check(module, x, None if lengths is None else np.asarray(lengths), (output, (h_n, c_n)))


@pytest.mark.parametrize("family,extra", [("GRU", {}), ("RNN", {"nonlinearity": "relu"})])
def test_gru_and_rnn_return_h_alone(family, extra):
    rng = np.random.default_rng(2)
    module = getattr(nl, family)(5, 6, 2, bidirectional=True, batch_first=True, **extra)
    x = rng.standard_normal((10, 7, 5)).astype(np.float32)  # (B, T, I)
    lengths = rng.integers(1, 8, 10)
    output, h_n = apply(module, da.from_array(x, chunks=(4, 3, 5)), lengths=lengths)
    assert output.chunks[0] == (4, 4, 2) and h_n.shape == (4, 10, 6)
    assert h_n.chunks[1] == (4, 4, 2)
    _check(module, x, lengths, (output, h_n))


def test_layernorm_lstm_and_float64():
    rng = np.random.default_rng(1)
    module = nl.LayerNormLSTM.from_state_dict(random_layernorm_params(rng, 5, 6, 2))
    assert module.dtype == np.float64
    x = rng.standard_normal((4, 9, 5))
    _check(module, x, None, apply(module, da.from_array(x, chunks=(4, 4, 5))), np.float64)


def test_the_module_is_one_key_of_the_graph():
    # 16 chunks, and the weights are in one key that the 16 tasks depend on:
    # no other entry of the graph, sent on its own, carries them.
    module = nl.LSTM(64, 128)
    x = da.from_array(np.zeros((3, 64, 64), np.float32), chunks=(3, 4, 64))
    output, _ = apply(module, x)
    graph = dict(output.__dask_graph__())
    holding = [k for k, v in graph.items() if v is module or getattr(v, "value", None) is module]
    assert len(holding) == 1, holding
    weights = sum(a.nbytes for a in module.state_dict().values())
    sizes = {k: len(pickle.dumps(v)) for k, v in graph.items() if k not in holding}
    assert len(sizes) > 16 and max(sizes.values()) < weights / 10, max(sizes.values())


@pytest.mark.parametrize("x,lengths,error,match", [
    (np.zeros((2, 3, 5)), None, TypeError, "x must be a dask.array.Array, got ndarray"),
    ("2d", None, ValueError, r"x must be batched 3-D input, got 2-D"),
    ("3d", np.ones(4, int), ValueError, r"lengths must have shape \(batch,\) = \(3,\), got \(4,\)"),
    ("3d", "dask", ValueError, r"lengths must have shape \(batch,\) = \(3,\), got \(2,\)"),
    ("features", None, RuntimeError, "Expected 5, got 4"),
])
def test_bad_input(x, lengths, error, match):
    module = nl.LSTM(5, 6)
    x = {"2d": da.zeros((2, 5), chunks=1), "3d": da.zeros((2, 3, 5), chunks=1),
         "features": da.zeros((2, 3, 4), chunks=1)}.get(x, x) if isinstance(x, str) else x
    if isinstance(lengths, str):
        lengths = da.ones(2, chunks=1, dtype=int)
    with pytest.raises(error, match=match):
        apply(module, x, lengths=lengths)


def _worker_numba_threads():
    import numba

    from numba_lstm.dask import _use_worker_threads

    _use_worker_threads()
    return numba.get_num_threads()


def test_distributed_cluster_of_two_processes():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(3)
    module = _lstm(rng, bidirectional=True)
    gru = nl.GRU(5, 6, bidirectional=True, batch_first=True)
    x = rng.standard_normal((6, 11, 5)).astype(np.float32)
    lengths = rng.integers(1, 7, 11)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        result = apply(module, da.from_array(x, chunks=(6, 3, 5)),
                       lengths=da.from_array(lengths, chunks=5))
        output, h_n, c_n = client.gather(client.compute([result[0], *result[1]]))
        # The GRU batch-first, its input chunked along time too: apply makes time whole.
        x_bf = np.ascontiguousarray(x.transpose(1, 0, 2))
        gru_output, gru_h = client.gather(client.compute(
            list(apply(gru, da.from_array(x_bf, chunks=(4, 2, 5)), lengths=lengths))))
        # Each task runs with as many Numba threads as its worker has (1 here).
        workers = list(client.scheduler_info()["workers"])
        threads = client.gather([client.submit(_worker_numba_threads, workers=[w], pure=False)
                                 for w in workers])
        assert threads == [1, 1]
    expected_output, (expected_h, expected_c) = module(x, lengths=lengths)
    assert_close(output, expected_output, np.float32, "output")
    assert_close(h_n, expected_h, np.float32, "h_n")
    assert_close(c_n, expected_c, np.float32, "c_n")
    expected_output, expected_h = gru(x_bf, lengths=lengths)
    assert_close(gru_output, expected_output, np.float32, "GRU output")
    assert_close(gru_h, expected_h, np.float32, "GRU h_n")


def test_whole_char_model_as_in_the_docs():
    # docs/scale-out.md's pipeline: Embedding and Linear per block, the LSTM by apply.
    from numba_lstm.char_model import CharModel

    model = CharModel.shipped()
    T = 12
    lines = ["def main():", "import numpy", "return x + 1", "class Foo:", "pass"]
    ids = np.stack([np.resize(model.encode(line), T) for line in lines], axis=1)  # (T, B)
    tokens = da.from_array(ids, chunks=(T, 2))
    E = model.embedding.state_dict()["weight"].shape[1]
    embedded = tokens.map_blocks(model.embedding, new_axis=2,
                                 chunks=tokens.chunks + ((E,),), dtype=np.float32)
    output, _ = apply(model.lstm, embedded)
    logits = output.map_blocks(model.fc, chunks=output.chunks[:2] + ((len(model.vocab),),),
                               dtype=np.float32)
    expected = model.fc(model.lstm(model.embedding(ids))[0])
    assert_close(logits.compute(scheduler="threads"), expected, np.float32, "logits")
