"""Dtypes and bounds-checked strided views shared by the file formats."""

from __future__ import annotations

import numpy as np

from .errors import LoadError

BFLOAT16 = "bfloat16"  # NumPy has no bfloat16: read as uint16, upcast to float32


def upcast(array: np.ndarray, dtype) -> np.ndarray:
    """float16 and bfloat16 become float32 (exactly); other dtypes pass through."""
    if dtype == BFLOAT16:
        return (array.astype(np.uint32) << 16).view(np.float32)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def storage_dtype(dtype, byteorder: str = "<") -> np.dtype:
    if dtype == BFLOAT16:
        return np.dtype(byteorder + "u2")
    return np.dtype(dtype).newbyteorder(byteorder) if np.dtype(dtype).itemsize > 1 \
        else np.dtype(dtype)


def checked_view(storage: np.ndarray, offset, size, stride, name: str) -> np.ndarray:
    """A copy of storage[offset + Σ i_k·stride_k] for the index grid ``size``.

    Every value is checked first, so a hostile file can neither read outside the
    storage nor make NumPy allocate more than the storage holds.
    """
    try:
        offset = int(offset)
        size = tuple(int(s) for s in size)
        stride = tuple(int(s) for s in stride)
    except (TypeError, ValueError):
        raise LoadError(f"{name}: malformed offset/size/stride") from None
    if len(size) != len(stride):
        raise LoadError(f"{name}: size {size} and stride {stride} differ in rank")
    if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise LoadError(f"{name}: negative offset, size or stride "
                        f"(offset={offset}, size={size}, stride={stride})")
    numel = int(np.prod(size, dtype=object))
    if numel == 0:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.size:
        raise LoadError(f"{name}: view (offset={offset}, size={size}, stride={stride}) reaches "
                        f"element {last}, but its storage holds {storage.size} elements")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(s * item for s in stride),
                                           writeable=False)
    return np.array(view, copy=True, order="C")
