"""PyTorch's own files: the zip format (torch >= 1.6) and the legacy one."""

from __future__ import annotations

import io
import pickletools
import struct
import zipfile

import numpy as np

from .errors import LoadError
from .restricted_pickle import Storage, StorageType, unpickle
from .tensors import storage_dtype

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _storage(raw: bytes, storage_type: StorageType, key: str, numel, byteorder: str) -> Storage:
    dtype = storage_dtype(storage_type.dtype, byteorder)
    try:
        numel = int(numel)
    except (TypeError, ValueError):
        raise LoadError(f"storage {key}: malformed element count {numel!r:.40}") from None
    if numel < 0 or numel * dtype.itemsize > len(raw):
        raise LoadError(f"storage {key}: declares {numel} elements of {dtype.itemsize} bytes "
                        f"but holds {len(raw)} bytes")
    data = np.frombuffer(raw, dtype=dtype, count=numel)
    return Storage(data, storage_type.dtype, key)


def check_zip_sizes(archive: zipfile.ZipFile, file_size: int) -> None:
    """Refuse members that would decompress far beyond what the file could hold."""
    limit = max(100 * file_size, 1 << 20)
    for info in archive.infolist():
        if info.file_size > limit:
            raise LoadError(f"zip member {info.filename} declares {info.file_size} bytes, "
                            f"more than this {file_size}-byte archive can hold")


def load_zip(data: bytes, archive: zipfile.ZipFile) -> object:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise LoadError("this is a TorchScript archive (torch.jit.save); numba_lstm loads "
                        "state_dicts: in PyTorch, torch.save(model.state_dict(), path)")
    if len(pickles) != 1:
        raise LoadError(f"not a PyTorch archive: expected one <dir>/data.pkl, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "<"
    if prefix + "byteorder" in names:
        order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise LoadError(f"unknown byteorder record {order!r:.20}")
        byteorder = "<" if order == "little" else ">"

    def load_storage(key: str, storage_type: StorageType, pid: tuple) -> Storage:
        name = f"{prefix}data/{key}"
        if name not in names:
            raise LoadError(f"archive has no record {name} for storage {key}")
        return _storage(archive.read(name), storage_type, key, pid[4], byteorder)

    return unpickle(archive.read(pickles[0]), load_storage)


def _pickle_end(data: bytes, start: int) -> int:
    """Offset just past the pickle starting at ``start``, found without running it."""
    stream = io.BytesIO(data)
    stream.seek(start)
    try:
        for opcode, _arg, pos in pickletools.genops(stream):
            if opcode.name == "STOP":
                return pos + 1
    except Exception as exc:
        raise LoadError(f"corrupt legacy file: {type(exc).__name__}: {exc}") from None
    raise LoadError("corrupt legacy file: a pickle has no end")


def _no_storage(key, storage_type, pid):
    raise LoadError("unexpected storage reference in a legacy header pickle")


def load_legacy(data: bytes) -> object:
    """torch.save(..., _use_new_zipfile_serialization=False): pickles, then raw storages."""
    pos, header = 0, []
    for _ in range(3):  # magic number, protocol version, sys_info
        end = _pickle_end(data, pos)
        header.append(unpickle(data[pos:end], _no_storage))
        pos = end
    magic, _protocol, sys_info = header
    if magic != LEGACY_MAGIC:
        raise LoadError("not a PyTorch file: bad magic number")
    if not isinstance(sys_info, dict):
        raise LoadError("corrupt legacy file: malformed sys_info")
    byteorder = "<" if sys_info.get("little_endian", True) else ">"
    main_start, main_end = pos, _pickle_end(data, pos)
    keys_end = _pickle_end(data, main_end)
    keys = unpickle(data[main_end:keys_end], _no_storage)
    if not isinstance(keys, list):
        raise LoadError("corrupt legacy file: malformed storage key list")
    # A record's byte length depends on its dtype, which only the main pickle
    # names: a dry pass over it (no data, nothing built) collects them.
    dtypes: dict[str, object] = {}

    def note_dtype(key, storage_type, pid):
        dtypes.setdefault(key, storage_type.dtype)
        return Storage(None, storage_type.dtype, key)

    unpickle(data[main_start:main_end], note_dtype)
    records, pos = {}, keys_end
    for key in map(str, keys):  # each record: int64 element count, then the elements
        if key not in dtypes:
            raise LoadError(f"storage {key} is listed but no tensor uses it")
        if pos + 8 > len(data):
            raise LoadError(f"truncated legacy file: storage {key} is missing")
        (count,) = struct.unpack_from(byteorder + "q", data, pos)
        itemsize = storage_dtype(dtypes[key]).itemsize
        if count < 0 or pos + 8 + count * itemsize > len(data):
            raise LoadError(f"truncated legacy file: storage {key} declares {count} elements "
                            "but the file ends first")
        records[key] = data[pos + 8: pos + 8 + count * itemsize]
        pos += 8 + count * itemsize

    def load_storage(key: str, storage_type: StorageType, pid: tuple) -> Storage:
        if key not in records:
            raise LoadError(f"storage {key} has no data in the file")
        storage = _storage(records[key], storage_type, key, pid[4], byteorder)
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # very old files: (view_key, offset, size) into the storage
            try:
                _view_key, offset, size = view
                offset, size = int(offset), int(size)
            except (TypeError, ValueError):
                raise LoadError(f"storage {key}: malformed view metadata") from None
            if offset < 0 or size < 0 or offset + size > storage.data.size:
                raise LoadError(f"storage {key}: view [{offset}, {offset + size}) out of range")
            storage = Storage(storage.data[offset:offset + size], storage.dtype, key)
        return storage

    return unpickle(data[main_start:main_end], load_storage)
