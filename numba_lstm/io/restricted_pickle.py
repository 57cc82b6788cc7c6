"""An unpickler that builds tensors and containers and nothing else.

Pickle runs whatever callable a file names. This one resolves only an
allow-list (torch's tensor/parameter rebuild functions, storage types, Size,
OrderedDict) to stand-ins of our own, so nothing from torch, or from anywhere
else, is imported or called. Any other global raises LoadError before anything
runs.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools

import numpy as np

from .errors import LoadError
from .tensors import BFLOAT16, checked_view, upcast

STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": BFLOAT16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
    """Stand-in for torch.<X>Storage: it only names a dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class Storage:
    """A flat array of one dtype, read from the file, that tensors view."""

    def __init__(self, data: np.ndarray, dtype, key: str):
        self.data, self.dtype, self.key = data, dtype, key


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, Storage):
        raise LoadError("tensor rebuild without a storage")
    if storage.data is None:  # a dry pass that only collects storage dtypes
        return None
    array = checked_view(storage.data, storage_offset, size, stride, f"storage {storage.key}")
    return upcast(array, storage.dtype)


def _rebuild_parameter(data, *_ignored):
    if data is not None and not isinstance(data, np.ndarray):
        raise LoadError("parameter rebuild without a tensor")
    return data


def _size(*args):
    return tuple(*args)


ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _size,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"}
_SKIP = {"PROTO", "FRAME", "MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"}


def top_level_class(data: bytes) -> tuple[str, str] | None:
    """The (module, name) of the class whose new instance is the pickle's
    top-level object, as ``torch.save(model)`` writes it (the class, no
    arguments, NEWOBJ), read from the first opcodes without running anything.
    None when the pickle starts otherwise: a container, or a function call."""
    ops = []
    try:
        for opcode, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if opcode.name not in _SKIP:
                ops.append((opcode.name, arg))
            if len(ops) == 5:
                break
    except Exception:  # malformed: the unpickler says so
        return None
    names = [name for name, _ in ops]
    if names[:3] == ["GLOBAL", "EMPTY_TUPLE", "NEWOBJ"]:
        module, _, name = str(ops[0][1]).partition(" ")
        return module, name
    # torch's legacy format opens a whole model with the record of its class's
    # source: a persistent id ("module", <class>, file, source).
    if (len(names) >= 3 and names[0] == "MARK" and names[1] in _STRINGS
            and ops[1][1] == "module" and names[2] == "GLOBAL"):
        module, _, name = str(ops[2][1]).partition(" ")
        return module, name
    if (len(names) == 5 and names[0] in _STRINGS and names[1] in _STRINGS
            and names[2:] == ["STACK_GLOBAL", "EMPTY_TUPLE", "NEWOBJ"]):
        return ops[0][1], ops[1][1]
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """``storage_loader(key, storage_type, numel, record)`` returns a Storage."""

    def __init__(self, data: bytes, storage_loader):
        super().__init__(io.BytesIO(data))
        self._storage_loader = storage_loader
        self._storages: dict[str, Storage] = {}
        self._top = top_level_class(data)

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        if module == "torch" and name.endswith("Storage"):
            raise LoadError(f"unsupported tensor dtype: storage type torch.{name}")
        if ((module, name) == self._top or module.startswith("torch.nn.modules")
                or module.startswith("__main__")):
            raise LoadError(f"the file holds a pickled object of class {module}.{name}, not a "
                            "state_dict (nothing from the file was executed); in PyTorch, save "
                            "model.state_dict() instead of the model")
        raise LoadError(f"refusing to load global {module}.{name}: only tensors and plain "
                        "containers are allowed (nothing from the file is executed)")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise LoadError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, StorageType):
            raise LoadError(f"storage {key} has an unknown or unsupported dtype")
        if key not in self._storages:
            self._storages[key] = self._storage_loader(key, storage_type, pid)
        return self._storages[key]


def unpickle(data: bytes, storage_loader):
    try:
        return RestrictedUnpickler(data, storage_loader).load()
    except LoadError:
        raise
    except RecursionError:
        raise LoadError("pickle nests too deeply") from None
    except Exception as exc:  # every malformed pickle: EOFError, UnpicklingError, ...
        raise LoadError(f"corrupt pickle: {type(exc).__name__}: {exc}") from None
