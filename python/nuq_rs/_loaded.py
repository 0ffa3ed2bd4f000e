"""Reading nuq-rs files: :func:`load` and :class:`LoadedStateDict`."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from string import hexdigits as HEXDIGITS
from typing import Any

import numpy as np

from . import _format
from ._checkpoint import SafetensorsFile
from ._format import (
    CHECKSUM_KEY,
    CHECKSUMS_SINCE,
    CODEBOOKS,
    DTYPES,
    FORMAT_NAME,
    FORMAT_VERSION,
    FormatError,
)
from ._nuq_rs import implied_codebook
from ._options import QuantConfig
from ._report import Report, report_row
from ._tensor import QuantizedTensor

_QUANTIZED_FIELDS = {
    "shape": list,
    "dtype": str,
    "bits": int,
    "granularity": str,
    "family": str,
    **dict.fromkeys(_format.STAT_FIELDS, (int, float)),
}


def load(path: Path | str, *, verify: bool = True) -> LoadedStateDict:
    """Open a file written by :meth:`QuantizedStateDict.save` (memory-mapped;
    tensors are read and decoded only when asked for).

    Each tensor's bytes are checked against the CRC32C that the file stores for
    them the first time the tensor is accessed (``loaded[name]``, ``items()``,
    ``dequantize()``), and damaged data raises :class:`FormatError` naming the
    file and the tensor. ``verify=False`` skips the check (files of format
    versions 1 to 3 have no checksums and are never verified).

    >>> import torch, nuq_rs, tempfile, os
    >>> model = torch.nn.Linear(64, 32)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.nuq.safetensors")
    >>> nuq_rs.quantize_state_dict(model.state_dict(), bits=4).save(path)
    >>> loaded = nuq_rs.load(path)
    >>> loaded.quantized_names
    ['weight']
    >>> model.load_state_dict(loaded.dequantize())
    <All keys matched successfully>
    """
    f = SafetensorsFile(path)
    entries = _entries(f)
    return LoadedStateDict(f, entries, _checksums(f) if verify else None)


def _version(f: SafetensorsFile) -> int:
    meta = f.header.metadata
    if meta.get("format") != FORMAT_NAME:
        raise FormatError(
            f"{f.path}: not a nuq-rs file (a safetensors file without format={FORMAT_NAME!r} "
            "metadata); quantize it with `nuq-rs quantize`"
        )
    version = meta.get("format_version", "")
    if not (version.isascii() and version.isdigit()):
        raise FormatError(f"{f.path}: bad format_version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise FormatError(
            f"{f.path}: written in nuq-rs file format version {version}; this nuq-rs reads "
            f"versions up to {FORMAT_VERSION}: upgrade nuq-rs"
        )
    return int(version)


def _checksums(f: SafetensorsFile) -> dict[str, str] | None:
    """The stored CRC32C of every tensor (None for versions without them)."""
    if _version(f) < CHECKSUMS_SINCE:
        return None
    try:
        sums = _format.parse_json(f.header.metadata[CHECKSUM_KEY])
        ok = isinstance(sums, dict) and all(
            isinstance(v, str) and len(v) == 8 and all(c in HEXDIGITS for c in v)
            for v in sums.values()
        )
    except (KeyError, ValueError):
        ok = False
    if not ok:
        raise FormatError(f"{f.path}: missing or corrupted {CHECKSUM_KEY!r} checksums metadata")
    if set(sums) != set(f.slots):
        missing = sorted(set(f.slots) - set(sums))[:5]
        extra = sorted(set(sums) - set(f.slots))[:5]
        raise FormatError(
            f"{f.path}: the checksums do not match the tensors (no checksum for {missing}, "
            f"checksums of absent tensors {extra})"
        )
    return sums


def _entries(f: SafetensorsFile) -> dict[str, dict[str, Any]]:
    """The checked per-tensor metadata, in state-dict order."""
    meta = f.header.metadata
    _version(f)
    try:
        listed = _format.parse_json(meta["tensors"])
        entries = {e["name"]: e for e in listed}
        if not all(isinstance(name, str) for name in entries):
            raise TypeError("tensor names must be strings")
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{f.path}: missing or corrupted 'tensors' metadata ({e!r})") from None
    if len(entries) != len(listed):
        names = [e["name"] for e in listed]
        twice = sorted({n for n in names if names.count(n) > 1})[:5]
        raise FormatError(f"{f.path}: the metadata lists tensors more than once: {twice}")
    expected: dict[str, _format.Slot | None] = {}
    for name, e in entries.items():
        expected.update(_expected_slots(f.path, name, e))
    for key, slot in expected.items():
        got = f.slots.get(key)
        if got is None:
            raise FormatError(f"{f.path}: tensor {key!r} is missing")
        if slot is not None and (got.dtype, got.shape) != (slot.dtype, slot.shape):
            raise FormatError(
                f"{f.path}: tensor {key!r} is {got.dtype} {list(got.shape)}, the metadata "
                f"implies {slot.dtype} {list(slot.shape)} (inconsistent lengths)"
            )
    extra = sorted(set(f.slots) - set(expected))
    if extra:
        raise FormatError(f"{f.path}: tensors not described by the metadata: {extra[:5]}")
    return entries


def _expected_slots(path: Path, name: str, e: Any) -> dict[str, _format.Slot | None]:
    """The tensors an entry needs (None: a kept tensor, any dtype and shape)."""
    if not isinstance(e, dict) or e.get("kind") not in ("quantized", "kept"):
        raise FormatError(f"{path}: bad metadata entry for tensor {name!r}")
    if e["kind"] == "kept":
        return {name: None}
    missing = [k for k, t in _QUANTIZED_FIELDS.items() if not isinstance(e.get(k), t)]
    if missing:
        raise FormatError(f"{path}: metadata of tensor {name!r} lacks or mistypes {missing}")
    try:
        config = _config(e)
        bad = _format.shape_error(e["shape"])
        if bad:
            raise ValueError(bad)
        if config.group_size is not None and config.group_size > _format.MAX_SIZE:
            raise ValueError(f"group_size {config.group_size} overflows int64")
        if not (e["sse"] >= 0 and e["energy"] >= 0):
            raise ValueError(f"negative or NaN sse {e['sse']!r} or energy {e['energy']!r}")
        if e["dtype"] not in ("float32", "float16", "bfloat16", "float64"):
            raise ValueError(f"bad dtype {e['dtype']!r}")
        codebook = e.get("codebook", "stored")  # version 1 stored every codebook
        if codebook not in CODEBOOKS or codebook == "implied" and config.group_size is None:
            raise ValueError(f"bad codebook {codebook!r} for granularity {config.granularity!r}")
    except (TypeError, ValueError) as err:
        raise FormatError(f"{path}: metadata of tensor {name!r}: {err}") from None
    return _format.quantized_slots(name, tuple(e["shape"]), config, codebook == "implied")


def _config(e: dict[str, Any]) -> QuantConfig:
    g = e.get("granularity")
    # Versions 1 and 2 wrote Lloyd–Max codebooks only.
    kind = e.get("codebook_kind", "lloyd-max")
    return QuantConfig(
        e["bits"], g, e.get("group_size") if g == "group" else None, e["family"], kind
    )


class LoadedStateDict(Mapping[str, Any]):
    """Name -> :class:`QuantizedTensor` (quantized) or tensor (kept) of a nuq-rs
    file, in the saved order. Tensors are views of the memory-mapped file, built
    when accessed."""

    def __init__(
        self,
        file: SafetensorsFile,
        entries: dict[str, dict[str, Any]],
        checksums: dict[str, str] | None = None,
    ) -> None:
        self._file = file
        self._entries = entries
        self._torch = importlib.util.find_spec("torch") is not None
        self._checksums = checksums
        # names whose bytes are still to be checked against their checksums
        self._unverified = set(entries) if checksums is not None else set()

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def quantized_names(self) -> list[str]:
        return [k for k, e in self._entries.items() if e["kind"] == "quantized"]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Any:
        e = self._entries[name]
        if name in self._unverified:
            self._verify(name)
        return self._quantized(e) if e["kind"] == "quantized" else self._kept(name)

    def _stored(self, name: str) -> list[str]:
        """The safetensors tensors that hold ``name``."""
        if self._entries[name]["kind"] == "kept":
            return [name]
        parts = (f"{name}.{p}" for p in ("packed", "levels", "loc", "scale"))
        return [k for k in parts if k in self._file.slots]

    def _verify(self, name: str) -> None:
        assert self._checksums is not None
        for key in self._stored(name):
            got, want = _format.checksum(self._file.raw(key)), self._checksums[key]
            if got != want.lower():
                raise FormatError(
                    f"{self.path}: tensor {name!r} is damaged: the CRC32C of {key!r} is {got}, "
                    f"the file says {want} (load(..., verify=False) reads it anyway)"
                )
        self._unverified.discard(name)

    def release(self, name: str) -> None:
        """Drop the pages of ``name``'s stored tensors from this process (once
        they are copied out; they stay in the page cache)."""
        for key in self._stored(name):
            self._file.release(key)

    def verify(self) -> None:
        """Check every tensor not yet checked against its checksum now (a no-op for
        files without checksums, or loaded with ``verify=False``)."""
        for name in list(self._entries):
            if name in self._unverified:
                self._verify(name)

    def _quantized(self, e: dict[str, Any]) -> QuantizedTensor:
        name, f = e["name"], self._file
        scale = f.array(f"{name}.scale").astype(np.float32, copy=False)
        parts = {p: f.array(f"{name}.{p}").reshape(-1) for p in ("packed", "loc")}
        config = _config(e)
        stored = ["packed", "loc", "scale"]
        if e.get("codebook", "stored") == "implied":
            parts["levels"] = implied_codebook(e["family"], config.bits, config.group_size)
        else:
            parts["levels"] = f.array(f"{name}.levels").reshape(-1)
            stored.append("levels")
        storage = sum(f.slots[f"{name}.{p}"].nbytes for p in stored)
        return QuantizedTensor(
            shape=tuple(e["shape"]),
            dtype=e["dtype"],
            config=config,
            family=e["family"],
            storage_bytes=storage,
            scale=scale,
            torch=self._torch,
            **{k: float(e[k]) for k in _format.STAT_FIELDS},
            **parts,
        )

    def _kept(self, name: str) -> Any:
        slot = self._file.slots[name]
        data = self._file.raw(name).copy()
        dtype_name = DTYPES[slot.dtype][0]
        if not self._torch:
            if slot.dtype == "BF16":
                raise ImportError(f"tensor {name!r} is bfloat16: reading it needs torch")
            return self._file.array(name).copy()
        import torch

        return torch.from_numpy(data).view(getattr(torch, dtype_name)).reshape(slot.shape)

    def dequantize(self) -> dict[str, Any]:
        """A plain state dict (torch tensors in their original shapes and dtypes),
        ready for ``model.load_state_dict``."""
        return {k: v.dequantize() if isinstance(v, QuantizedTensor) else v for k, v in self.items()}

    def report(self) -> Report:
        """Per-tensor statistics from the metadata (nothing is decoded)."""
        rows = []
        for name, e in self._entries.items():
            if e["kind"] == "quantized":
                rows.append(report_row(name, self._quantized(e)))
            else:
                rows.append(_format.kept_report(name, self._file.slots[name]))
        return Report(tuple(rows))
