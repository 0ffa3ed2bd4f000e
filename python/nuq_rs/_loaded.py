"""Reading nuq-rs files: :func:`load` and :class:`LoadedStateDict`."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _format
from ._checkpoint import SafetensorsFile
from ._format import CODEBOOKS, DTYPES, FORMAT_NAME, FORMAT_VERSION, FormatError
from ._nuq_rs import implied_codebook
from ._report import Report
from ._state_dict import _report_of
from ._tensor import QuantConfig, QuantizedTensor

_QUANTIZED_FIELDS = {
    "shape": list,
    "dtype": str,
    "bits": int,
    "granularity": str,
    "family": str,
    **dict.fromkeys(_format.STAT_FIELDS, (int, float)),
}


def load(path: Path | str) -> LoadedStateDict:
    """Open a file written by :meth:`QuantizedStateDict.save` (memory-mapped;
    tensors are read and decoded only when asked for).

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
    return LoadedStateDict(f, _entries(f))


def _entries(f: SafetensorsFile) -> dict[str, dict[str, Any]]:
    """The checked per-tensor metadata, in state-dict order."""
    meta = f.header.metadata
    if meta.get("format") != FORMAT_NAME:
        raise FormatError(
            f"{f.path}: not a nuq-rs file (a safetensors file without format={FORMAT_NAME!r} "
            "metadata); quantize it with `nuq-rs quantize`"
        )
    version = meta.get("format_version", "")
    if not version.isdigit():
        raise FormatError(f"{f.path}: bad format_version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise FormatError(
            f"{f.path}: written in nuq-rs file format version {version}; this nuq-rs reads "
            f"versions up to {FORMAT_VERSION}: upgrade nuq-rs"
        )
    try:
        listed = json.loads(meta["tensors"])
        entries = {e["name"]: e for e in listed}
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{f.path}: missing or corrupted 'tensors' metadata ({e!r})") from None
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
        if not all(isinstance(d, int) and d >= 0 for d in e["shape"]):
            raise ValueError(f"bad shape {e['shape']}")
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

    def __init__(self, file: SafetensorsFile, entries: dict[str, dict[str, Any]]) -> None:
        self._file = file
        self._entries = entries
        self._torch = importlib.util.find_spec("torch") is not None

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
        return self._quantized(e) if e["kind"] == "quantized" else self._kept(name)

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
                rows.append(_report_of(name, self._quantized(e)))
            else:
                rows.append(_format.kept_report(name, self._file.slots[name]))
        return Report(tuple(rows))
