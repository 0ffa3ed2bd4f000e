"""Reading input checkpoints one tensor at a time.

A :class:`Checkpoint` lists its tensors (name, safetensors dtype code, shape)
before any data is read, then hands out one tensor at a time, so that a
checkpoint larger than the memory can be quantized in bounded memory.
safetensors headers are parsed and validated by the safetensors library
(:func:`._format.read_header`); the data is memory-mapped here, so that tensors
are zero-copy NumPy views (bfloat16 included, as uint16 bits, which the
library's NumPy reader refuses), and every tensor's pages are dropped from the
process once used (``madvise``), so the resident size stays that of one tensor,
not of the file.
"""

from __future__ import annotations

import mmap
import pickle
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ._format import CODES, FormatError, Header, Slot, parse_json, read_header

INDEX_FILE = "model.safetensors.index.json"
#: Suffixes read with torch.load; anything else is read as safetensors.
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

_NUMPY = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",  # raw bits; the core widens them
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
    "F8_E4M3": "u1",
    "F8_E5M2": "u1",
}


class SafetensorsFile:
    """A memory-mapped safetensors file with checked offsets."""

    def __init__(self, path: Path | str) -> None:
        self.header: Header = read_header(path)
        self.path = self.header.path
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    @property
    def slots(self) -> dict[str, Slot]:
        return self.header.slots

    def names(self) -> list[str]:
        """Tensor names in the order of their data (sequential reads)."""
        return sorted(self.slots, key=lambda k: self.slots[k].begin)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the mapping."""
        s = self.slots[name]
        return np.frombuffer(self._map, np.uint8, s.end - s.begin, self.header.data_start + s.begin)

    def array(self, name: str) -> np.ndarray:
        """The tensor as a NumPy array (bfloat16 as uint16 bits), a view when aligned."""
        s = self.slots[name]
        dtype = np.dtype(_NUMPY[s.dtype])
        raw = self.raw(name)
        if (self.header.data_start + s.begin) % dtype.itemsize:
            raw = raw.copy()
        return raw.view(dtype).reshape(s.shape)

    def release(self, name: str) -> None:
        """Drop the tensor's pages from this process (they stay in the page cache)."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        s = self.slots[name]
        start = self.header.data_start + s.begin
        aligned = start - start % mmap.PAGESIZE
        if s.end > s.begin:
            self._map.madvise(mmap.MADV_DONTNEED, aligned, start + s.end - s.begin - aligned)


class Checkpoint:
    """Tensors of a .safetensors file, a sharded folder or a .pt/.bin state dict."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._files: dict[str, SafetensorsFile] = {}
        self._tensors: dict[str, Any] | None = None
        self.specs: dict[str, tuple[str, tuple[int, ...]]] = {}
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self._open_folder()
        elif self.path.suffix in TORCH_SUFFIXES:
            self._open_torch()
        else:
            self._add_file(SafetensorsFile(self.path), None)

    def _add_file(self, f: SafetensorsFile, names: list[str] | None) -> None:
        if f.header.metadata.get("format") == "nuq-rs":
            raise FormatError(f"{f.path}: is already quantized by nuq-rs (a nuq-rs file)")
        for name in f.names() if names is None else names:
            if name not in f.slots:
                raise FormatError(f"{f.path}: tensor {name!r} of the index is missing")
            self._files[name] = f
            self.specs[name] = (f.slots[name].dtype, f.slots[name].shape)

    def _open_folder(self) -> None:
        index = self.path / INDEX_FILE
        if not index.exists():
            single = self.path / "model.safetensors"
            if single.exists():
                self._add_file(SafetensorsFile(single), None)
                return
            raise FileNotFoundError(f"{self.path}: no {INDEX_FILE} or model.safetensors")
        try:
            weight_map = parse_json(index.read_text())["weight_map"]
            shards: dict[str, list[str]] = {}
            for name, shard in weight_map.items():
                if not isinstance(shard, str):
                    raise TypeError(f"shard {shard!r} of tensor {name!r} is not a file name")
                shards.setdefault(shard, []).append(name)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise FormatError(f"{index}: not a valid index ({e!r})") from None
        for shard, names in shards.items():
            self._add_file(SafetensorsFile(self._shard_path(index, shard)), names)

    def _shard_path(self, index: Path, shard: str) -> Path:
        """A shard named by the index: a file inside the folder, never outside it.

        Checked by name, not by resolving links, so that folders whose shards are
        links to elsewhere (the Hugging Face cache) still read."""
        name = PurePosixPath(shard)
        if not shard or name.is_absolute() or ".." in name.parts or "\\" in shard:
            raise FormatError(f"{index}: shard {shard!r} is outside the folder {self.path}")
        path = self.path / name
        if not path.is_file():
            raise FormatError(f"{index}: shard {shard!r} is missing from {self.path}")
        return path

    def _open_torch(self) -> None:
        self._tensors = load_torch(self.path)
        for name, t in self._tensors.items():
            dtype = str(t.dtype).removeprefix("torch.")
            if dtype not in CODES:
                raise FormatError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype}")
            self.specs[name] = (CODES[dtype], tuple(t.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of all tensors."""
        return sum(Slot(c, s).nbytes for c, s in self.specs.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def array(self, name: str) -> np.ndarray:
        """A floating tensor as NumPy (bfloat16 as uint16 bits)."""
        if name in self._files:
            return self._files[name].array(name)
        t = self._tensors[name].detach()
        if self.specs[name][0] == "BF16":
            import torch

            return t.contiguous().view(torch.int16).numpy().view(np.uint16)
        return t.contiguous().numpy()

    def raw(self, name: str) -> np.ndarray:
        """The tensor's little-endian bytes."""
        if name in self._files:
            return self._files[name].raw(name)
        import torch

        t = self._tensors[name].detach().contiguous().reshape(-1)
        return t.view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)

    def release(self, name: str) -> None:
        if name in self._files:
            self._files[name].release(name)


def load_torch(path: Path) -> dict[str, Any]:
    """A .pt/.bin state dict through ``torch.load(weights_only=True)``: tensors only,
    never unpickling code."""
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise FormatError(
                f"{path}: refused: it holds Python objects beyond tensors, which "
                "torch.load(weights_only=True) will not unpickle (they could run code). "
                "Save model.state_dict() instead, or convert it to safetensors where you "
                "trust the file"
            ) from None
        raise FormatError(f"{path}: not a PyTorch checkpoint ({e})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise FormatError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    is_dict = isinstance(obj, dict)
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)] if is_dict else []
    if not is_dict or bad:
        what = f"non-tensor entries {bad[:5]}" if bad else f"a {type(obj).__name__}"
        raise FormatError(f"{path}: expected a state dict of tensors, found {what}")
    return obj
