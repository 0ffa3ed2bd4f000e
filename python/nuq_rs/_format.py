"""The nuq-rs file format: a plain safetensors file plus JSON metadata.

Layout (format version 4). A quantized tensor ``NAME`` is stored as the
safetensors tensors ``NAME.packed`` (U8, ``rows x ceil(cols * bits / 8)``),
``NAME.levels`` (F32, ``2**bits``), ``NAME.loc`` (F32) and ``NAME.scale``
(F32, or F16 for groups, whose scales are fp16 values already). A kept tensor is
stored under its own name, as it was. The header's ``__metadata__`` holds
``format = "nuq-rs"``, ``format_version = "4"``, ``crc32c`` and ``tensors``: a JSON list,
in state-dict order, of ``{"name", "kind": "kept"}`` or of the quantized
tensor's shape, original dtype, bits, granularity, group size, family, fit
statistics and ``codebook``. Everything needed to decode is in the file;
nothing is pickled.

``codebook`` is ``"stored"`` (``NAME.levels`` present) or ``"implied"``: group
tensors store no ``NAME.levels``, their codebook being a deterministic
function of (family, bits, group size) that the reader recomputes
(``implied_codebook`` of the extension). Version 1 had no ``codebook`` field
and stored every codebook, groups' included; such files still read as
``"stored"``.

``crc32c`` (since version 4) is a JSON object giving, for every safetensors tensor
of the file, the CRC32C of its bytes as 8 hex digits; readers verify a tensor
before decoding it, so that damaged data fails instead of loading as wrong
weights. The version was raised for it so that a version-4 file without the
field is itself refused as damaged; versions 1 to 3 have no checksums and load
unverified. Version 3 added fitted codebooks (``codebook_kind``).

Safetensors headers (ours and any other) are parsed and validated by the
``safetensors`` library; this module turns its refusals into messages naming
the file and the problem.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
from safetensors import SafetensorError, safe_open

from ._options import QuantConfig
from ._report import TensorReport
from ._tensor import matrix_shape

FORMAT_NAME = "nuq-rs"
FORMAT_VERSION = 4
#: The first format version whose files carry (and must carry) checksums.
CHECKSUMS_SINCE = 4
#: Metadata key of the per-tensor checksums.
CHECKSUM_KEY = "crc32c"
CODEBOOKS = ("stored", "implied")
#: Dimensions, element counts and sizes must fit in int64 (torch's and NumPy's index type).
MAX_SIZE = 2**63 - 1

#: safetensors dtype code -> (dtype name as torch spells it, bytes per element).
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U64": ("uint64", 8),
    "U32": ("uint32", 4),
    "U16": ("uint16", 2),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}
CODES = {name: code for code, (name, _) in DTYPES.items()}
FLOAT_CODES = ("F64", "F32", "F16", "BF16")

#: Metadata fields of a quantized tensor that are only known after quantizing.
STAT_FIELDS = ("d_gaussian", "d_laplace", "fit_loc", "fit_scale", "clip", "sse", "energy")
#: A float whose JSON text is as long as any float's (sign, 17 digits, exponent).
WIDEST_FLOAT = -1.2345678901234567e-300


class FormatError(ValueError):
    """A file that is not a valid safetensors / nuq-rs file."""


@dataclass(frozen=True)
class Slot:
    """One safetensors tensor: dtype code, shape and byte range in the data."""

    dtype: str
    shape: tuple[int, ...]
    begin: int = 0
    end: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype][1]


@dataclass(frozen=True)
class Header:
    """A checked safetensors header."""

    path: Path
    slots: dict[str, Slot]
    metadata: dict[str, str]
    data_start: int


def kept_report(name: str, slot: Slot) -> TensorReport:
    """The report row of a tensor stored as it is."""
    return TensorReport(
        name, slot.shape, DTYPES[slot.dtype][0], *[None] * 10, slot.nbytes, slot.nbytes
    )


def implied_codebook(config: QuantConfig) -> bool:
    """Whether this writer leaves the codebook out (Lloyd–Max groups: implied
    by family, bits and group size)."""
    return config.granularity == "group" and config.codebook == "lloyd-max"


def f16_scales(config: QuantConfig) -> bool:
    """Whether the scales are fp16 values (groups and fitted codebooks)."""
    return config.granularity == "group" or config.codebook == "fitted"


def quantized_slots(
    name: str, shape: tuple[int, ...], config: QuantConfig, implied: bool
) -> dict[str, Slot]:
    """The tensors storing a quantized tensor (no levels when the codebook is
    ``implied``); sizes follow from shape and config."""
    rows, cols = matrix_shape(shape)
    if config.granularity == "tensor":
        n_loc = n_scale = 1
    elif config.granularity == "channel":
        n_loc = n_scale = rows
    else:
        n_loc, n_scale = 0, rows * -(-cols // config.group_size)
    if config.codebook == "fitted":
        n_loc = 0  # absmax scales only (see nuq_core::quantize::fitted)
    scale_dtype = "F16" if f16_scales(config) else "F32"
    slots = {
        f"{name}.packed": Slot("U8", (rows, -(-cols * config.bits // 8))),
        f"{name}.levels": Slot("F32", (2**config.bits,)),
        f"{name}.loc": Slot("F32", (n_loc,)),
        f"{name}.scale": Slot(scale_dtype, (n_scale,)),
    }
    if implied:
        del slots[f"{name}.levels"]
    return slots


def quantized_entry(name: str, shape: tuple[int, ...], dtype: str, config: QuantConfig) -> dict:
    """Metadata of a quantized tensor with placeholder statistics of maximal width."""
    return {
        "name": name,
        "kind": "quantized",
        "shape": list(shape),
        "dtype": dtype,
        "bits": config.bits,
        "granularity": config.granularity,
        "group_size": config.group_size,
        "family": "gaussian",
        "codebook": "implied" if implied_codebook(config) else "stored",
        "codebook_kind": config.codebook,
        **dict.fromkeys(STAT_FIELDS, WIDEST_FLOAT),
    }


def checksum(data: Any) -> str:
    """CRC32C of a buffer's bytes as 8 hex digits (the same width for every value,
    so that the header's size is known before the data is written)."""
    return f"{crc32c.crc32c(data):08x}"


def encode_header(
    slots: dict[str, Slot], entries: list[dict], checksums: dict[str, str], width: int = 0
) -> bytes:
    """The 8-byte length and the JSON header, padded with spaces to ``width`` bytes
    at least and to a multiple of 8 (so that the data starts aligned)."""
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        CHECKSUM_KEY: json.dumps(checksums, separators=(",", ":")),
        "tensors": json.dumps(entries, separators=(",", ":")),
    }
    header: dict[str, Any] = {"__metadata__": metadata}
    for key, s in slots.items():
        header[key] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [s.begin, s.end]}
    text = json.dumps(header, separators=(",", ":")).encode()
    size = max(len(text), width)
    size += -size % 8
    return struct.pack("<Q", size) + text.ljust(size, b" ")


def assign_offsets(slots: dict[str, Slot]) -> tuple[dict[str, Slot], int]:
    """Contiguous byte ranges, widest elements first so every tensor is aligned."""
    order = sorted(slots, key=lambda k: -DTYPES[slots[k].dtype][1])
    out, pos = {}, 0
    for key in order:
        s = slots[key]
        out[key] = Slot(s.dtype, s.shape, pos, pos + s.nbytes)
        pos += s.nbytes
    return {k: out[k] for k in slots}, pos


def read_header(path: Path | str) -> Header:
    """Parse and check the header of a safetensors file (any writer's).

    The ``safetensors`` library parses and validates it (tensors contiguous from
    the data's start to the file's end, sizes that match shapes and dtypes, no
    overflow); its refusals become a :class:`FormatError` naming the file. Since a
    valid file's tensors are contiguous in the order of ``offset_keys``, the byte
    ranges follow from the sizes.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
    if len(prefix) < 8:
        raise FormatError(f"{path}: not a safetensors file (only {size} bytes)")
    (n,) = struct.unpack("<Q", prefix)
    if n > size - 8:
        raise FormatError(
            f"{path}: not a safetensors file, or a truncated one: its header length "
            f"field says {n} bytes, and the file has {size - 8} after it"
        )
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            declared = [(k, f.get_slice(k)) for k in f.offset_keys()]
            declared = [(k, s.get_dtype(), s.get_shape()) for k, s in declared]
    except SafetensorError as e:
        raise FormatError(f"{path}: {_explain(e)}") from None
    slots, begin = {}, 0
    for name, dtype, shape in declared:
        if dtype not in DTYPES:
            raise FormatError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        bad = shape_error(shape)
        if bad:
            raise FormatError(f"{path}: tensor {name!r}: {bad}")
        nbytes = Slot(dtype, tuple(shape)).nbytes
        slots[name] = Slot(dtype, tuple(shape), begin, begin + nbytes)
        begin += nbytes
    return Header(path, slots, metadata, 8 + n)


def _explain(error: Exception) -> str:
    """Why the safetensors library refused a file, in its words."""
    text = str(error).removeprefix("Error while deserializing header: ")
    if "not fully covered" in text:  # the data ends before or after the file does
        text += ": a truncated or padded file"
    return f"not a valid safetensors file ({text})"


def parse_json(text: str) -> Any:
    """``json.loads``, with nesting too deep for the parser a ``ValueError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def shape_error(shape: Any) -> str | None:
    """Why ``shape`` is not a list of dimensions whose sizes fit in int64 (None: it is).

    Checked before anything is allocated for it."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        return f"bad shape {shape!r}"
    if max(shape, default=0) > MAX_SIZE or math.prod(d for d in shape if d) > MAX_SIZE:
        return f"shape {shape} overflows int64"
    return None
