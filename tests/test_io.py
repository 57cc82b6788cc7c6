"""nl.load / nl.save: every format, bit for bit, and hostile or broken files."""

import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_torch, torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numba_lstm as nl
from numba_lstm.io import LoadError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("kind", ["zip", "legacy"])
@pytest.mark.parametrize("stem", ["lstm", "model", "shared", "dtypes"])
def test_committed_fixtures_bit_for_bit(stem, kind, expected):
    loaded = nl.load(FIXTURES / f"{stem}_{kind}.pt")
    want = {k.split("/", 1)[1]: v for k, v in expected.items() if k.startswith(stem + "/")}
    assert sorted(loaded) == sorted(want)
    for name, value in want.items():
        assert loaded[name].dtype == value.dtype, name
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_from_file_object_and_prefixed_model_end_to_end():
    with open(FIXTURES / "model_zip.pt", "rb") as f:
        sd = nl.load(f)
    lstm = nl.LSTM.from_state_dict(sd, prefix="lstm.", batch_first=True)
    assert repr(lstm) == "LSTM(3, 5, batch_first=True)"
    out, _ = lstm(np.ones((2, 4, 3), np.float32))
    assert out.shape == (2, 4, 5)


@pytest.mark.parametrize("suffix", ["safetensors", "npz"])
def test_save_load_round_trip_exact(tmp_path, suffix):
    rng = np.random.default_rng(0)
    sd = {"a.weight": rng.standard_normal((3, 4)), "b": rng.standard_normal(5).astype(np.float32),
          "i": np.arange(6, dtype=np.int64).reshape(2, 3), "flag": np.array([True, False]),
          "h": np.arange(4, dtype=np.float16), "empty": np.zeros((0, 3), np.float32),
          "scalar": np.float64(2.5), "from_list": [[1.0, 2.0]]}
    path = tmp_path / f"w.{suffix}"
    nl.save(path, sd)
    back = nl.load(path)
    assert sorted(back) == sorted(sd)
    for k, v in sd.items():
        v = np.asarray(v)
        if v.dtype == np.float16:
            v = v.astype(np.float32)  # every format upcasts on load (documented)
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v)


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"writes .safetensors or .npz, got '.*w.pt'"):
        nl.save(tmp_path / "w.pt", {"a": np.zeros(1)})


# -- hand-made pickles: torch's opcodes without torch ----------------------------------
def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(s):
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_int(i):
    return b"J" + struct.pack("<i", i)


def op_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def tensor_pickle(entries, storage_numel=12, storage="FloatStorage"):
    """{name: (offset, size, stride)} viewing one storage '0', as torch pickles it."""
    body = b"\x80\x02}" + b"("
    for name, (offset, size, stride) in entries.items():
        pid = op_tuple(op_str("storage"), op_global("torch", storage), op_str("0"),
                       op_str("cpu"), op_int(storage_numel)) + b"Q"
        args = b"(" + pid + op_int(offset) + op_tuple(*map(op_int, size)) + \
            op_tuple(*map(op_int, stride)) + b"\x89" + b")" + b"t"
        body += op_str(name) + op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
    return body + b"u."


def torch_zip(pkl, records, prefix="archive"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, raw in records.items():
            z.writestr(f"{prefix}/data/{key}", raw)
    return buf.getvalue()


def test_hand_made_archive_loads_views_of_one_storage():
    data = np.arange(12, dtype=np.float32)
    pkl = tensor_pickle({"a": (0, (3, 4), (4, 1)), "at": (0, (4, 3), (1, 4)), "b": (5, (3,), (2,))})
    sd = nl.load(io.BytesIO(torch_zip(pkl, {"0": data.tobytes()}, prefix="any_name")))
    np.testing.assert_array_equal(sd["a"], data.reshape(3, 4))
    np.testing.assert_array_equal(sd["at"], data.reshape(3, 4).T)
    np.testing.assert_array_equal(sd["b"], [5, 7, 9])
    assert all(a.flags.c_contiguous and a.flags.writeable for a in sd.values())


@pytest.mark.parametrize("entry,match", [
    ((10, (3,), (1,)), r"reaches element 12, but its storage holds 12"),
    ((0, (4, 4), (4, 1)), "reaches element 15"),
    ((0, (2,), (100,)), "reaches element 100"),
    ((-1, (2,), (1,)), "negative offset"),
    ((0, (2,), (-1,)), "negative"),
    ((0, (3, 2), (1,)), "differ in rank"),
    ((0, (2**31 - 1, 2**31 - 1), (1, 1)), "reaches element"),
])
def test_views_outside_their_storage_are_refused(entry, match):
    pkl = tensor_pickle({"x": entry})
    with pytest.raises(LoadError, match=match):
        nl.load(io.BytesIO(torch_zip(pkl, {"0": np.zeros(12, np.float32).tobytes()})))


def test_storage_shorter_than_declared():
    pkl = tensor_pickle({"x": (0, (3,), (1,))}, storage_numel=12)
    with pytest.raises(LoadError, match="declares 12 elements of 4 bytes but holds 8 bytes"):
        nl.load(io.BytesIO(torch_zip(pkl, {"0": b"\0" * 8})))


def test_missing_storage_record_and_unknown_dtype():
    pkl = tensor_pickle({"x": (0, (3,), (1,))})
    with pytest.raises(LoadError, match="no record archive/data/0"):
        nl.load(io.BytesIO(torch_zip(pkl, {})))
    pkl = tensor_pickle({"x": (0, (3,), (1,))}, storage="ComplexFloatStorage")
    with pytest.raises(LoadError, match="unsupported tensor dtype"):
        nl.load(io.BytesIO(torch_zip(pkl, {"0": b"\0" * 96})))


class _RunsCode:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("make", [
    lambda marker: _RunsCode(os.system, f"touch {marker}"),
    lambda marker: _RunsCode(eval, f"open({str(marker)!r}, 'w')"),
    lambda marker: {"w": _RunsCode(exec, f"open({str(marker)!r}, 'w')")},
    lambda marker: _RunsCode(subprocess.call, ["touch", str(marker)]),
])
@pytest.mark.parametrize("wrap", ["raw", "zip"])
def test_code_in_pickles_never_runs(tmp_path, make, wrap):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(make(marker), protocol=2)
    data = payload if wrap == "raw" else torch_zip(payload, {})
    with pytest.raises(LoadError, match="refusing to load global"):
        nl.load(io.BytesIO(data))
    assert not marker.exists()


def _user_package(root: Path, marker: Path) -> str:
    """An importable package whose model class records any import in ``marker``."""
    package = root / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\n"
        "class Model:\n    def __init__(self):\n        self.hidden_size = 8\n")
    return "userpkg.model"


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("wrap", ["raw", "zip"])
def test_whole_model_of_an_importable_class_gets_the_state_dict_hint(tmp_path, monkeypatch,
                                                                     protocol, wrap):
    # torch.save(model) for a class in the user's own package, not __main__.
    marker = tmp_path / "imported"
    name = _user_package(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        payload = pickle.dumps(__import__(name, fromlist=["Model"]).Model(), protocol=protocol)
    finally:
        for module in ("userpkg", name):
            sys.modules.pop(module, None)
    marker.unlink()
    data = payload if wrap == "raw" else torch_zip(payload, {})
    with pytest.raises(LoadError, match=r"pickled object of class userpkg\.model\.Model, not a "
                                        r"state_dict.*save model\.state_dict\(\) instead"):
        nl.load(io.BytesIO(data))
    assert not marker.exists() and name not in sys.modules  # nothing was imported


def test_reduce_on_allowed_names_with_wrong_arguments():
    pkl = b"\x80\x02" + op_global("torch._utils", "_rebuild_tensor_v2") + \
        op_tuple(op_str("not a storage"), op_int(0), op_tuple(), op_tuple(), b"\x89") + b"R."
    with pytest.raises(LoadError, match="tensor rebuild without a storage"):
        nl.load(io.BytesIO(torch_zip(pkl, {})))


@pytest.mark.parametrize("data,match", [
    (b"", "unrecognised file"),
    (b"hello world, not weights", "unrecognised file"),
    (b"PK\x03\x04garbage", "corrupt archive"),
    (pickle.dumps(1) + pickle.dumps(1001) + pickle.dumps({}), "bad magic number"),
    (b"\x80\x02", "corrupt legacy file"),
])
def test_garbage(data, match):
    with pytest.raises(LoadError, match=match):
        nl.load(io.BytesIO(data))


def test_not_a_dict_and_file_errors(tmp_path):
    with pytest.raises(LoadError, match="cannot read"):
        nl.load(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="path or a binary file"):
        nl.load(42)
    with pytest.raises(TypeError, match="binary mode"):
        nl.load(io.StringIO("text"))
    pkl = b"\x80\x02]."  # an empty list
    with pytest.raises(LoadError, match="holds a list, not a dict of tensors"):
        nl.load(io.BytesIO(torch_zip(pkl, {})))


def test_zip_member_declaring_huge_size_is_refused():
    raw = bytearray(torch_zip(tensor_pickle({}), {}))
    # Patch the central directory's uncompressed size of the first member to 4 GiB - 1.
    cd = raw.find(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(LoadError, match="declares 4294967295 bytes"):
        nl.load(io.BytesIO(bytes(raw)))


# -- safetensors -----------------------------------------------------------------------
def st_file(header, buffer=b""):
    text = header if isinstance(header, bytes) else __import__("json").dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + buffer


@pytest.mark.parametrize("data,match", [
    (struct.pack("<Q", 2**40) + b"{}", "over the 104857600 limit"),
    (struct.pack("<Q", 100) + b"{}", "header declares 100 bytes, only 2 follow"),
    (st_file(b"{not json"), "invalid safetensors header"),
    (st_file({"a": {"dtype": "F32", "shape": [2]}}), "needs dtype, shape, data_offsets"),
    (st_file({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
     "unknown dtype 'C64'"),
    (st_file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
     "bad shape"),
    (st_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
     "needs 12 bytes, offsets give 8"),
    (st_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
     "outside the 4-byte buffer"),
    (st_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
     "overlaps the previous tensor"),
    (st_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
     "leaves a hole"),
    (st_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8),
     "4 bytes no tensor uses"),
])
def test_malformed_safetensors(data, match):
    with pytest.raises(LoadError, match=match):
        nl.load(io.BytesIO(data))


def test_safetensors_header_must_be_an_object():
    from numba_lstm.io import safetensors

    with pytest.raises(LoadError, match="not a JSON object"):
        safetensors.load(st_file(b"[1, 2]"))


def test_safetensors_bf16_and_metadata():
    bits = np.array([0x3F80, 0xC000, 0x7F80], np.uint16)  # 1.0, -2.0, inf
    data = st_file({"__metadata__": {"format": "pt"},
                    "w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}, bits.tobytes())
    np.testing.assert_array_equal(nl.load(io.BytesIO(data))["w"], [1.0, -2.0, np.inf])


# -- fuzz ------------------------------------------------------------------------------
def _valid_files(tmp_dir):
    sd = nl.load(FIXTURES / "lstm_zip.pt")
    nl.save(tmp_dir / "s.safetensors", sd)
    nl.save(tmp_dir / "s.npz", sd)
    paths = [FIXTURES / "lstm_zip.pt", FIXTURES / "lstm_legacy.pt", FIXTURES / "dtypes_legacy.pt",
             tmp_dir / "s.safetensors", tmp_dir / "s.npz"]
    return [p.read_bytes() for p in paths]


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    return _valid_files(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=600, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 4), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                               max_size=6),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_fuzz_mutations_only_load_error_or_arrays(valid_files, which, flips, cut):
    data = bytearray(valid_files[which])
    for where, byte in flips:
        data[min(int(where * len(data)), len(data) - 1)] = byte
    if cut is not None:
        data = data[: int(cut * len(data))]
    try:
        result = nl.load(io.BytesIO(bytes(data)))
    except LoadError:
        return
    assert isinstance(result, dict)
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in result.items())


def test_load_works_with_torch_unimportable():
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np, numba_lstm as nl
sd = nl.load({str(FIXTURES / 'model_legacy.pt')!r})
sd.update(nl.load({str(FIXTURES / 'lstm_zip.pt')!r}))
lstm = nl.LSTM.from_state_dict(sd, prefix="lstm.")
out, _ = lstm(np.ones((3, 1, 3), np.float32))
assert "torch" not in sys.modules
print("ok", out.shape)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ok (3, 1, 5)" in result.stdout


# -- live torch --------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("legacy", [False, True])
def test_live_torch_files_whole_model_and_torchscript(tmp_path, legacy):
    kw = dict(_use_new_zipfile_serialization=False) if legacy else {}
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    lstm = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True)
    lstm.flatten_parameters()
    sd = {**{"lstm." + k: v for k, v in lstm.state_dict().items()}, **model.state_dict()}
    sd["half"] = torch.randn(4, 5).half()[:, 1::2]
    sd["bf"] = torch.randn(3, 3).bfloat16().t()
    torch.save(sd, tmp_path / "sd.pt", **kw)
    loaded = nl.load(tmp_path / "sd.pt")
    for k, v in sd.items():
        np.testing.assert_array_equal(loaded[k], v.float().numpy() if v.dtype in
                                      (torch.float16, torch.bfloat16) else v.numpy())
    torch.save(model, tmp_path / "model.pt", **kw)
    with pytest.raises(LoadError, match=r"save model.state_dict\(\) instead"):
        nl.load(tmp_path / "model.pt")
    # A model class in the user's own importable package, not __main__.
    (tmp_path / "usernet.py").write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.lstm = torch.nn.LSTM(3, 4)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        torch.save(__import__("usernet").Net(), tmp_path / "user_model.pt", **kw)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("usernet", None)
    with pytest.raises(LoadError, match=r"class usernet\.Net, not a state_dict.*"
                                        r"save model.state_dict\(\) instead"):
        nl.load(tmp_path / "user_model.pt")
    torch.save({"model": lstm.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt", **kw)
    assert sorted(nl.load(tmp_path / "ckpt.pt")) == sorted("model." + k for k in
                                                          lstm.state_dict())


@needs_torch
def test_torchscript_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    with pytest.raises(LoadError, match="TorchScript archive"):
        nl.load(tmp_path / "ts.pt")
