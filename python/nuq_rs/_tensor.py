"""One tensor: :func:`quantize_tensor` and :class:`QuantizedTensor`."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _arrays
from ._nuq_rs import QuantizationError
from ._nuq_rs import dequantize as _dequantize
from ._nuq_rs import quantize as _quantize
from ._options import QuantConfig


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols): rows = first dimension (output channels), cols = the rest."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


@dataclass(eq=False)
class QuantizedTensor:
    """Packed codes of one tensor plus everything needed to decode and report them.

    Weight ``(r, j)`` of the ``rows x cols`` matrix decodes to
    ``loc[r] + scale[s] * levels[code]``, with ``s`` the row (channel), the
    group, or 0 (tensor) and ``loc`` empty for groups. ``d_gaussian`` and
    ``d_laplace`` are the Kolmogorov–Smirnov statistics of all the weights
    against the two fits, within ``nuq_rs.KS_TOLERANCE`` of
    ``scipy.stats.kstest``'s (exact when the two are that close, so
    ``family`` is the exact statistics' choice).
    """

    shape: tuple[int, ...]
    dtype: str
    config: QuantConfig
    family: str
    d_gaussian: float
    d_laplace: float
    fit_loc: float
    fit_scale: float
    clip: float
    sse: float
    energy: float
    storage_bytes: int
    levels: np.ndarray = field(repr=False)
    loc: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)
    packed: np.ndarray = field(repr=False)
    torch: bool = field(default=False, repr=False)

    @property
    def bits(self) -> int:
        return self.config.bits

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def mse(self) -> float:
        """Mean squared error of the decoded weights."""
        return self.sse / self.numel if self.numel else 0.0

    @property
    def sqnr_db(self) -> float:
        """Signal-to-quantization-noise ratio in dB (``inf`` when exact)."""
        if self.sse == 0:
            return math.inf
        ratio = self.energy / self.sse  # 0 when the error overflowed to inf
        return 10 * math.log10(ratio) if ratio > 0 else -math.inf

    @property
    def bits_per_weight(self) -> float:
        """Storage per weight as a file holds it, codebook, locations and scales
        included (group codebooks are implied by family, bits and group size:
        0 bits; group scales are fp16)."""
        return 8 * self.storage_bytes / self.numel if self.numel else 0.0

    @property
    def bytes_before(self) -> int:
        return self.numel * {"float16": 2, "bfloat16": 2, "float64": 8}.get(self.dtype, 4)

    def dequantize(self) -> Any:
        """The decoded tensor in the original shape and dtype, as a CPU torch
        tensor if a torch tensor was quantized, else a NumPy array."""
        rows, cols = matrix_shape(self.shape)
        values = _dequantize(
            self.packed,
            self.levels,
            self.loc,
            self.scale,
            rows,
            cols,
            self.bits,
            self.config.group_size,
        )
        return _arrays.restore(values, self.shape, self.dtype, self.torch)


def quantize_tensor(
    x: Any,
    bits: int = 4,
    *,
    granularity: str = "group",
    group_size: int | None = None,
    family: str = "auto",
    codebook: str = "fitted",
    name: str | None = None,
) -> QuantizedTensor:
    """Quantize one floating tensor (torch or NumPy) to ``2**bits`` non-uniform levels.

    Rows are the first dimension (output channels), columns the product of the
    others; a 1-D tensor is one row. ``granularity`` is ``"group"`` (groups of
    ``group_size`` consecutive weights of a row, 64 unless given; a row that it
    does not divide ends in a shorter group), ``"channel"`` (a scale per row)
    or ``"tensor"``; ``codebook`` is ``"fitted"`` or the paper's
    ``"lloyd-max"`` (see :class:`nuq_rs.QuantConfig`). ``name`` only labels error
    messages.

    >>> import numpy as np, nuq_rs
    >>> w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    >>> q = nuq_rs.quantize_tensor(w, bits=4)
    >>> q.family, round(q.sqnr_db, 1)
    ('gaussian', 20.8)
    >>> q.dequantize().shape
    (64, 128)
    """
    config = QuantConfig(bits, granularity, group_size, family, codebook)
    return quantize_with(x, config, name)


def quantize_with(x: Any, config: QuantConfig, name: str | None = None) -> QuantizedTensor:
    """The one call into the core's quantizer: ``x`` (a torch tensor, a NumPy
    array, or an :class:`nuq_rs._arrays.Flat` read from a file) with ``config``
    (checked already); errors name the tensor ``name``."""
    label = f"tensor {name!r}" if name else "tensor"
    packed = sys.modules.get(f"{__package__}._packed")  # none exist before it is imported
    if packed is not None and isinstance(x, packed.PackedWeight):
        raise ValueError(
            f"{label} is already quantized (a nuq_rs.PackedWeight); quantize the float "
            "weights, or decode it first with .dequantize()"
        )
    try:
        flat = x if isinstance(x, _arrays.Flat) else _arrays.flatten(x)
    except TypeError as e:
        raise TypeError(f"{label}: {e}") from None
    rows, cols = matrix_shape(flat.shape)
    try:
        out = _quantize(
            flat.data,
            rows,
            cols,
            config.bits,
            config.granularity,
            config.group_size,
            config.family,
            flat.bfloat16,
            config.codebook,
        )
    except QuantizationError as e:
        raise type(e)(f"{label} of shape {list(flat.shape)}: {e}") from None
    return QuantizedTensor(
        shape=flat.shape, dtype=flat.dtype, config=config, torch=flat.torch, **out
    )
