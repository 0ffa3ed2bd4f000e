"""Pictures of a quantized file (matplotlib, an optional dependency: ``nuq-rs[plot]``).

Figures are drawn on matplotlib's Agg canvas directly, without pyplot, so
nothing global (backend, open figures) changes in the caller's process.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._tensor import QuantizedTensor


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: pip install 'nuq-rs[plot]' (or pip install matplotlib)"
        ) from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, out: Path) -> None:
    """Write the image under a temporary name, then rename it into place."""
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=120)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def density(family: str, loc: float, scale: float, x: np.ndarray) -> np.ndarray:
    """The fitted Gaussian (scale = std) or Laplace (scale = b) density at ``x``."""
    z = (x - loc) / scale
    if family == "gaussian":
        return np.exp(-0.5 * z * z) / (scale * math.sqrt(2 * math.pi))
    return np.exp(-np.abs(z)) / (2 * scale)


def levels_in_weight_units(q: QuantizedTensor) -> tuple[np.ndarray, str]:
    """The decoded levels of the first row (channel) or group, and what they are."""
    first_loc = float(q.loc[0]) if len(q.loc) else 0.0
    levels = first_loc + float(q.scale[0]) * q.levels.astype(np.float64)
    what = {"tensor": "", "channel": " (of row 0)", "group": " (of group 0)"}
    return levels, what[q.config.granularity]


def _weights(q: QuantizedTensor, name: str, source: str | None) -> tuple[np.ndarray, str]:
    if source is None:
        decoded = dataclasses.replace(q, torch=False, dtype="float32").dequantize()
        return decoded.reshape(-1), "decoded weights"
    from ._checkpoint import Checkpoint

    checkpoint = Checkpoint(source)
    if name not in checkpoint.specs:
        raise ValueError(f"{source}: has no tensor {name!r}")
    array = checkpoint.array(name)
    if tuple(array.shape) != q.shape:
        raise ValueError(f"{source}: tensor {name!r} has shape {list(array.shape)}, not {q.shape}")
    if checkpoint.specs[name][0] == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.reshape(-1).astype(np.float32), "original weights"


def plot_tensor(loaded: Any, name: str, out: Path, *, source: str | None = None) -> None:
    """Histogram of one tensor's weights, its fitted density, boundaries and levels."""
    if name not in loaded:
        raise ValueError(f"{loaded.path}: has no tensor {name!r}")
    q = loaded[name]
    if not isinstance(q, QuantizedTensor):
        raise ValueError(f"{loaded.path}: tensor {name!r} was kept as it was, not quantized")
    values, what = _weights(q, name, source)
    levels, which = levels_in_weight_units(q)
    boundaries = (levels[1:] + levels[:-1]) / 2
    lo = min(float(values.min()), float(levels[0]))
    hi = max(float(values.max()), float(levels[-1]))
    fig = _figure(9, 4.8)
    ax = fig.add_subplot()
    ax.hist(values, bins=200, range=(lo, hi), density=True, color="0.75", label=what)
    x = np.linspace(lo, hi, 1000)
    pdf = density(q.family, q.fit_loc, q.fit_scale, x)
    ax.plot(x, pdf, color="C0", lw=2, label=f"fitted {q.family} density")
    for i, t in enumerate(boundaries):
        ax.axvline(t, color="C1", ls="--", lw=0.8, label=f"boundaries{which}" if i == 0 else None)
    for i, y in enumerate(levels):
        ax.axvline(y, color="C3", lw=1.0, label=f"levels{which}" if i == 0 else None)
    ax.set_ylim(0, 1.25 * float(pdf.max()))
    ax.set_xlabel("weight value")
    ax.set_ylabel("density")
    ax.set_title(
        f"{name} {list(q.shape)}: {q.bits} bits, {q.config.granularity}, {q.family} "
        f"(D_gauss {q.d_gaussian:.4f}, D_laplace {q.d_laplace:.4f}), SQNR {q.sqnr_db:.2f} dB",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    _save(fig, out)


def plot_summary(loaded: Any, out: Path) -> None:
    """SQNR and stored bits per weight of every quantized tensor."""
    report = loaded.report()
    rows = [t for t in report.tensors if t.quantized]
    if not rows:
        raise ValueError(f"{loaded.path}: no quantized tensor to plot")
    fig = _figure(10, max(3.0, 0.22 * len(rows) + 1.2))
    ax_sqnr, ax_bits = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))
    sqnr = [t.sqnr_db if math.isfinite(t.sqnr_db) else 0.0 for t in rows]
    ax_sqnr.barh(y, sqnr, color="C0")
    ax_sqnr.set_xlabel("SQNR (dB)")
    ax_bits.barh(y, [t.bits_per_weight for t in rows], color="C2")
    ax_bits.set_xlabel("stored bits per weight")
    ax_sqnr.set_yticks(y, [t.name for t in rows], fontsize=max(4, min(9, 400 // len(rows))))
    ax_sqnr.invert_yaxis()
    fig.suptitle(
        f"{loaded.path.name}: {len(rows)} quantized tensors, "
        f"{report.bits_per_weight:.3f} bits per weight, {report.compression_ratio:.2f}x smaller",
        fontsize=10,
    )
    _save(fig, out)
