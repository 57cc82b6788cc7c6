"""Weights files, read without torch and without running anything from them.

``load(path_or_file)`` -> dict[str, np.ndarray]; the format is recognised by
content, not suffix: PyTorch zip (torch >= 1.6), PyTorch legacy, safetensors,
npz. ``save(path, state_dict)`` writes .safetensors or .npz by suffix.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from . import safetensors
from .errors import LoadError
from .tensors import upcast
from .torch_format import check_zip_sizes, load_legacy, load_zip

__all__ = ["LoadError", "load", "save"]


def _read(source) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                return f.read()
        except OSError as exc:
            raise LoadError(f"cannot read {os.fspath(source)!r}: {exc.strerror}") from exc
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("nl.load needs a path or a file opened in binary mode")
        return bytes(data)
    raise TypeError(f"nl.load needs a path or a binary file, got {type(source).__name__}")


def _flatten(obj, prefix: str, out: dict) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, np.ndarray):
            out[name] = value
        elif isinstance(value, Mapping):  # a checkpoint: {"model": state_dict, ...}
            _flatten(value, name + ".", out)


def _load_zip(data: bytes) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        check_zip_sizes(archive, len(data))
        names = archive.namelist()
        if names and all(n.endswith(".npy") for n in names):
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {k: upcast(npz[k], npz[k].dtype) for k in npz.files}
        return load_zip(data, archive)
    except LoadError:
        raise
    except Exception as exc:  # BadZipFile, CRC errors, truncated members, bad .npy ...
        raise LoadError(f"corrupt archive: {type(exc).__name__}: {exc}") from None


def load(source: str | os.PathLike | BinaryIO) -> dict[str, np.ndarray]:
    """Read a state_dict from a .pt/.pth (zip or legacy), .safetensors or .npz file.

    float16 and bfloat16 tensors are upcast to float32 (exactly); other dtypes
    are kept. Nested dicts (checkpoints) are flattened with dotted names and
    non-tensor values dropped. Anything malformed or unsafe raises LoadError.
    """
    data = _read(source)
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        result = _load_zip(data)
    elif data[:1] == b"\x80":
        result = load_legacy(data)
    elif safetensors.looks_like(data):
        return safetensors.load(data)
    else:
        raise LoadError("unrecognised file: not a PyTorch, safetensors or npz file")
    if not isinstance(result, Mapping):
        raise LoadError(f"the file holds a {type(result).__name__}, not a dict of tensors")
    out: dict[str, np.ndarray] = {}
    _flatten(result, "", out)
    return out


def save(path: str | os.PathLike, state_dict: Mapping[str, Any]) -> None:
    """Write ``state_dict`` (anything np.asarray accepts) as .safetensors or .npz."""
    arrays = {str(k): np.asarray(v) for k, v in state_dict.items()}
    suffix = os.fspath(path).rsplit(".", 1)[-1].lower()
    if suffix == "safetensors":
        safetensors.save(path, arrays)
    elif suffix == "npz":
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        raise ValueError(f"nl.save writes .safetensors or .npz, got {os.fspath(path)!r}")
