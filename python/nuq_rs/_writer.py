"""Writing nuq-rs files incrementally and atomically.

Every tensor's size follows from its shape and options, so the byte layout is
fixed before any tensor is quantized: tensors are written at their offsets as
they come, and the header (whose statistics are known only at the end) is
rewritten last into space reserved for its widest possible form. The file is
built under a temporary name in the destination folder and renamed over the
destination only when complete; on any error the temporary file is removed.
Tensors may be written from several threads at once (each to its own range).
The data is flushed to disk behind the writes (``fdatasync`` in a background
thread every :data:`FLUSH_BYTES`), so that the ``fsync`` before the rename has
little left to wait for.
"""

from __future__ import annotations

import os
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _arrays, _format
from ._format import CODES, Slot
from ._options import QuantConfig
from ._tensor import QuantizedTensor

#: Bytes written between two background flushes.
FLUSH_BYTES = 32 << 20


@dataclass(frozen=True)
class Planned:
    """A tensor to be written: quantized (``config`` set, ``dtype`` its original
    dtype name) or kept (``config`` None, ``dtype`` a safetensors code)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    config: QuantConfig | None = None


def check_destination(path: Path, overwrite: bool) -> None:
    """Fail early (before any work) on a destination that cannot be written."""
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, expected a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (use --force / overwrite=True)")


class FileWriter:
    """Writes the planned tensors, in any order, then :meth:`commit`\\ s.

    Use as a context manager: leaving the block by an exception removes the
    temporary file and leaves the destination untouched.
    """

    def __init__(self, path: Path | str, plan: list[Planned], *, overwrite: bool = False) -> None:
        self.path = Path(path)
        check_destination(self.path, overwrite)
        self._overwrite = overwrite
        self._entries: dict[str, dict[str, Any]] = {}
        slots: dict[str, Slot] = {}
        for p in plan:
            new = self._plan_one(p)
            clash = set(new) & set(slots) | ({"__metadata__"} & set(new))
            if clash:
                raise ValueError(f"tensor names collide in the file: {sorted(clash)}")
            slots.update(new)
        self._slots, self._data_bytes = _format.assign_offsets(slots)
        # placeholders as wide as any checksum, replaced as each tensor is written
        self._checksums = dict.fromkeys(self._slots, "0" * 8)
        self._pending = set(self._entries)
        self._width = 0
        self._width = len(self._header()) - 8  # placeholders are as wide as any value
        self._lock = threading.Lock()
        self._unflushed = 0
        self._flusher: ThreadPoolExecutor | None = None
        self._flushing: Future[None] | None = None
        self._tmp = self.path.parent / f".{self.path.name}.{secrets.token_hex(4)}.tmp"
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.ftruncate(self._fd, 8 + self._width + self._data_bytes)
        except BaseException:
            self.abort()
            raise

    def _plan_one(self, p: Planned) -> dict[str, Slot]:
        if p.config is None:
            self._entries[p.name] = {"name": p.name, "kind": "kept"}
            return {p.name: Slot(p.dtype, p.shape)}
        self._entries[p.name] = _format.quantized_entry(p.name, p.shape, p.dtype, p.config)
        implied = _format.implied_codebook(p.config)
        return _format.quantized_slots(p.name, p.shape, p.config, implied)

    def _header(self) -> bytes:
        entries = list(self._entries.values())
        return _format.encode_header(self._slots, entries, self._checksums, self._width)

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is not None:
            self.abort()

    def _write_at(self, offset: int, data: memoryview) -> None:
        """Write all of ``data`` at ``offset`` (``pwrite`` may write less)."""
        while len(data):
            n = os.pwrite(self._fd, data, offset)
            data, offset = data[n:], offset + n

    def _write_slot(self, key: str, array: np.ndarray) -> None:
        slot = self._slots[key]
        data = memoryview(np.ascontiguousarray(array)).cast("B")
        if len(data) != slot.nbytes:
            raise ValueError(f"tensor {key!r}: {len(data)} bytes, the layout expects {slot.nbytes}")
        self._checksums[key] = _format.checksum(data)
        self._write_at(8 + self._width + slot.begin, data)
        self._flush_behind(len(data))

    def _flush_behind(self, written: int) -> None:
        """Start an ``fdatasync`` of what is written so far once enough is unflushed
        and none is running."""
        with self._lock:
            self._unflushed += written
            if self._unflushed < FLUSH_BYTES or (self._flushing and not self._flushing.done()):
                return
            self._unflushed = 0
            if self._flusher is None:
                self._flusher = ThreadPoolExecutor(1, thread_name_prefix="nuq-rs-flush")
            self._flushing = self._flusher.submit(os.fdatasync, self._fd)

    def _stop_flushing(self) -> None:
        """Wait for the background flush (its error, if any, is the final fsync's too)."""
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)
            self._flusher = None

    def _take(self, name: str) -> dict[str, Any]:
        if name not in self._pending:
            raise KeyError(f"tensor {name!r} is not planned or was already written")
        self._pending.discard(name)
        return self._entries[name]

    def write_quantized(self, name: str, q: QuantizedTensor) -> None:
        entry = self._take(name)
        if entry["kind"] != "quantized" or list(q.shape) != entry["shape"]:
            raise ValueError(f"tensor {name!r} does not match its planned layout")
        scale = q.scale
        if _format.f16_scales(q.config):
            scale = scale.astype(np.float16)  # fp16 values already
        parts = [("packed", q.packed), ("loc", q.loc)]
        if entry["codebook"] == "stored":
            parts.append(("levels", q.levels))
        for part, array in parts:
            self._write_slot(f"{name}.{part}", array)
        self._write_slot(f"{name}.scale", scale)
        entry["family"] = q.family
        entry.update({k: float(getattr(q, k)) for k in _format.STAT_FIELDS})

    def write_kept(self, name: str, data: Any) -> None:
        """``data``: the tensor's raw little-endian bytes (any buffer)."""
        self._take(name)
        self._write_slot(name, np.frombuffer(data, dtype=np.uint8))

    def commit(self) -> None:
        """Write the final header, flush, and rename over the destination."""
        try:
            if self._pending:
                raise ValueError(f"tensors never written: {sorted(self._pending)}")
            header = self._header()
            if len(header) != 8 + self._width:
                raise ValueError(f"header grew beyond its reserved {self._width} bytes")
            self._write_at(0, memoryview(header))
            self._stop_flushing()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            if self.path.exists() and not self._overwrite:
                raise FileExistsError(f"{self.path}: appeared while writing; not replaced")
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and remove the temporary file (idempotent)."""
        self._stop_flushing()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tmp.unlink(missing_ok=True)


def kept_bytes(name: str, x: Any) -> tuple[str, tuple[int, ...], np.ndarray]:
    """(safetensors dtype code, shape, raw bytes) of a tensor stored as it is."""
    if _arrays.is_torch_tensor(x):
        import torch

        t = x.detach().cpu().contiguous().reshape(-1)
        dtype = str(t.dtype).removeprefix("torch.")
        data = t.view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
    elif isinstance(x, np.ndarray):
        dtype = x.dtype.name
        data = np.ascontiguousarray(x).reshape(-1).view(np.uint8)
    else:
        raise TypeError(f"tensor {name!r}: cannot save a {type(x).__name__}")
    if dtype not in CODES:
        raise TypeError(f"tensor {name!r}: dtype {dtype} cannot be saved in safetensors")
    return CODES[dtype], tuple(x.shape), data
