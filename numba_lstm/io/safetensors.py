"""safetensors, from its specification: u64 little-endian header length N, N
bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
{str: str}}, then the byte buffer the offsets index (contiguous, no overlap)."""

from __future__ import annotations

import json
import struct

import numpy as np

from .errors import LoadError
from .tensors import BFLOAT16, storage_dtype, upcast

MAX_HEADER = 100 * 1024 * 1024  # as the reference implementation
DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": BFLOAT16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
CODES = {np.dtype(v).str[1:]: k for k, v in DTYPES.items() if v != BFLOAT16}


def looks_like(data: bytes) -> bool:
    return len(data) >= 9 and data[8:9] == b"{"


def load(data: bytes) -> dict[str, np.ndarray]:
    if len(data) < 8:
        raise LoadError("truncated safetensors file: no header length")
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > MAX_HEADER:
        raise LoadError(f"safetensors header declares {n} bytes, over the {MAX_HEADER} limit")
    if 8 + n > len(data):
        raise LoadError(f"truncated safetensors file: header declares {n} bytes, "
                        f"only {len(data) - 8} follow")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise LoadError(f"invalid safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise LoadError("invalid safetensors header: not a JSON object")
    header.pop("__metadata__", None)
    buffer = memoryview(data)[8 + n:]
    spans, out = [], {}
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise LoadError(f"safetensors entry {name!r}: needs dtype, shape, data_offsets") \
                from None
        if code not in DTYPES:
            raise LoadError(f"safetensors entry {name!r}: unknown dtype {code!r:.20}")
        if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
            raise LoadError(f"safetensors entry {name!r}: bad shape {shape!r:.60}")
        if not (type(begin) is int and type(end) is int and 0 <= begin <= end <= len(buffer)):
            raise LoadError(f"safetensors entry {name!r}: offsets [{begin!r:.20}, {end!r:.20}] "
                            f"outside the {len(buffer)}-byte buffer")
        dtype = storage_dtype(DTYPES[code])
        numel = int(np.prod(shape, dtype=object))
        if numel * dtype.itemsize != end - begin:
            raise LoadError(f"safetensors entry {name!r}: shape {shape} of {code} needs "
                            f"{numel * dtype.itemsize} bytes, offsets give {end - begin}")
        spans.append((begin, end, name))
        array = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(tuple(shape))
        array = upcast(array, DTYPES[code])
        out[name] = array.astype(array.dtype.newbyteorder("="), copy=True)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else "leaves a hole"
            raise LoadError(f"safetensors entry {name!r} at byte {begin} {kind}")
        position = end
    if position != len(buffer):
        raise LoadError(f"safetensors buffer has {len(buffer) - position} bytes no tensor uses")
    return out


def save(path, tensors: dict[str, np.ndarray]) -> None:
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")  # not ascontiguousarray: keeps 0-d
        code = CODES.get(array.dtype.str[1:])
        if code is None:
            raise TypeError(f"{name}: dtype {array.dtype} cannot be stored in safetensors")
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the buffer starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)
