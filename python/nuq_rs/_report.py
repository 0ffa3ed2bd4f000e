"""Per-tensor quantization reports and their totals."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, overload

from . import _arrays
from ._tensor import QuantizedTensor

if TYPE_CHECKING:
    from ._budget import Choice


@dataclass(frozen=True)
class TensorReport:
    """What happened to one tensor. Kept tensors have ``bits`` = None; with
    ``target_bpw``, ``choice`` (e.g. ``"4b g64"``) and ``proxy`` (the budget's
    sensitivity proxy, see ``nuq_rs._budget``) say what the budget chose."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    bits: int | None
    granularity: str | None
    family: str | None
    d_gaussian: float | None
    d_laplace: float | None
    loc: float | None
    scale: float | None
    clip: float | None
    mse: float | None
    sqnr_db: float | None
    bytes_before: int
    bytes_after: int
    choice: str | None = None
    proxy: float | None = None

    @property
    def quantized(self) -> bool:
        return self.bits is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per element, metadata included."""
        return 8 * self.bytes_after / self.numel if self.numel else 0.0


def report_row(name: str, value: Any, choice: Choice | None = None) -> TensorReport:
    """The row of ``value``: a :class:`QuantizedTensor` (with the budget's
    ``choice`` if any) or a tensor kept as it is."""
    if isinstance(value, QuantizedTensor):
        budget = {} if choice is None else {"choice": choice.label, "proxy": choice.proxy}
        return TensorReport(
            name,
            value.shape,
            value.dtype,
            value.bits,
            value.config.granularity,
            value.family,
            value.d_gaussian,
            value.d_laplace,
            value.fit_loc,
            value.fit_scale,
            value.clip,
            value.mse,
            value.sqnr_db,
            value.bytes_before,
            value.storage_bytes,
            **budget,
        )
    size = _arrays.nbytes(value)
    shape = tuple(getattr(value, "shape", ()))
    dtype = str(getattr(value, "dtype", type(value).__name__)).removeprefix("torch.")
    return TensorReport(name, shape, dtype, *([None] * 10), size, size)


_COLUMNS = (
    ("name", "{}"),
    ("shape", "{}"),
    ("bits", "{}"),
    ("gran", "{}"),
    ("family", "{}"),
    ("D_gauss", "{:.4f}"),
    ("D_laplace", "{:.4f}"),
    ("scale", "{:.3g}"),
    ("clip", "{:.3g}"),
    ("mse", "{:.3g}"),
    ("sqnr_dB", "{:.2f}"),
    ("bytes", "{}"),
    ("q_bytes", "{}"),
    ("bpw", "{:.2f}"),
)


_BUDGET_COLUMNS = (("choice", "{}"), ("proxy", "{:.3g}"))


def _cells(t: TensorReport, budget: bool) -> list[str]:
    values = (
        t.name,
        "x".join(map(str, t.shape)) or "scalar",
        t.bits,
        t.granularity,
        t.family,
        t.d_gaussian,
        t.d_laplace,
        t.scale,
        t.clip,
        t.mse,
        t.sqnr_db,
        t.bytes_before,
        t.bytes_after,
        t.bits_per_weight,
    )
    columns = _COLUMNS + _BUDGET_COLUMNS if budget else _COLUMNS
    values += (t.choice, t.proxy) if budget else ()
    formats = [fmt for _, fmt in columns]
    return ["-" if v is None else fmt.format(v) for v, fmt in zip(values, formats, strict=True)]


@dataclass(frozen=True)
class Report(Sequence[TensorReport]):
    """Reports of every tensor of a state dict, in order, with totals.

    A read-only sequence of :class:`TensorReport` in state-dict order: ``len``,
    iteration, ``report[0]``, ``report[-1]``, ``report[1:3]`` (a ``Report``), and
    ``report["fc.weight"]`` by name.

    >>> import torch, nuq_rs
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 4))
    >>> report = nuq_rs.quantize_state_dict(model.state_dict(), bits=4).report()
    >>> len(report), [t.name for t in report if t.quantized]
    (4, ['0.weight', '1.weight'])
    >>> report[-1].name, report["0.weight"].bits, [t.name for t in report[1:3]]
    ('1.bias', 4, ['0.bias', '1.weight'])
    """

    tensors: tuple[TensorReport, ...]

    @property
    def bytes_before(self) -> int:
        return sum(t.bytes_before for t in self.tensors)

    @property
    def bytes_after(self) -> int:
        return sum(t.bytes_after for t in self.tensors)

    @property
    def compression_ratio(self) -> float:
        """Original bytes over stored bytes, all tensors included."""
        return self.bytes_before / self.bytes_after if self.bytes_after else 1.0

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per quantized weight, metadata included."""
        quantized = [t for t in self.tensors if t.quantized]
        numel = sum(t.numel for t in quantized)
        return 8 * sum(t.bytes_after for t in quantized) / numel if numel else 0.0

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[TensorReport]:
        return iter(self.tensors)

    @overload
    def __getitem__(self, key: int | str) -> TensorReport: ...
    @overload
    def __getitem__(self, key: slice) -> Report: ...
    def __getitem__(self, key: int | str | slice) -> TensorReport | Report:
        """By position (negative counts from the end), by slice, or by tensor name."""
        if isinstance(key, str):
            for t in self.tensors:
                if t.name == key:
                    return t
            raise KeyError(key)
        if isinstance(key, slice):
            return Report(self.tensors[key])
        return self.tensors[key]

    def __contains__(self, item: object) -> bool:
        """A tensor name, or a :class:`TensorReport`."""
        if isinstance(item, str):
            return any(t.name == item for t in self.tensors)
        return item in self.tensors

    def to_dicts(self) -> list[dict[str, Any]]:
        """One plain dict per tensor (JSON-friendly apart from ``inf`` SQNR)."""
        return [asdict(t) | {"bits_per_weight": t.bits_per_weight} for t in self.tensors]

    def __str__(self) -> str:
        budget = any(t.proxy is not None for t in self.tensors)
        columns = _COLUMNS + _BUDGET_COLUMNS if budget else _COLUMNS
        rows = [[c for c, _ in columns]] + [_cells(t, budget) for t in self.tensors]
        widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
        lines = [
            "  ".join(
                c.ljust(w) if i < 5 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        n_q = sum(t.quantized for t in self.tensors)
        lines.append(
            f"{n_q} of {len(self.tensors)} tensors quantized: {self.bytes_before:,} -> "
            f"{self.bytes_after:,} bytes ({self.compression_ratio:.2f}x), "
            f"{self.bits_per_weight:.3f} bits per quantized weight"
        )
        return "\n".join(lines)
