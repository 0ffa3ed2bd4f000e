"""Quantizing a checkpoint on disk one tensor at a time, in bounded memory.

Each tensor is read from the memory-mapped input, quantized, written at its
place in the output file and released before the next one, so peak memory is
that of the largest tensor (times a small factor), not of the checkpoint. The
NumPy arrays go straight to the core: torch is not imported for safetensors
input (bfloat16 weights travel as their uint16 bits).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ._checkpoint import Checkpoint
from ._format import DTYPES, FLOAT_CODES, Slot, kept_report
from ._nuq_rs import QuantizationError
from ._nuq_rs import quantize as _quantize
from ._progress import Progress
from ._report import Report
from ._state_dict import _override, _report_of
from ._tensor import QuantConfig, QuantizedTensor, matrix_shape
from ._writer import FileWriter, Planned

Specs = Mapping[str, tuple[str, tuple[int, ...]]]


def plan(
    specs: Specs,
    base: QuantConfig,
    overrides: Mapping[str, Any],
    exclude: list[str] | tuple[str, ...],
) -> dict[str, QuantConfig]:
    """The options of every tensor to quantize, checked before any data is read.

    Same rules as :func:`nuq_rs.quantize_state_dict` (floating tensors with 2+
    dimensions, unless excluded; overrides by name), from dtypes and shapes
    only. Empty tensors are kept."""
    unknown = [k for k in overrides if k not in specs]
    if unknown:
        raise ValueError(f"overrides name tensors not in the checkpoint: {unknown}")
    patterns = [re.compile(p) for p in exclude]
    unmatched = [p.pattern for p in patterns if not any(p.search(k) for k in specs)]
    if unmatched:
        raise ValueError(f"exclude patterns match no tensor of the checkpoint: {unmatched}")
    configs = {}
    for name, (code, shape) in specs.items():
        if name in overrides:
            config = _override(base, name, overrides[name])
            if code not in FLOAT_CODES:
                raise ValueError(f"overrides: tensor {name!r} is not a floating tensor")
        elif code in FLOAT_CODES and len(shape) >= 2 and not any(p.search(name) for p in patterns):
            config = base
        else:
            continue
        if 0 not in shape:
            configs[name] = config
    return configs


def quantize_array(array: np.ndarray, code: str, config: QuantConfig, name: str) -> QuantizedTensor:
    """Quantize a NumPy array read from a checkpoint (BF16: its uint16 bits)."""
    shape = tuple(array.shape)
    flat = array.reshape(-1)
    if code == "F64":
        flat = flat.astype(np.float32)
    rows, cols = matrix_shape(shape)
    try:
        out = _quantize(
            flat,
            rows,
            cols,
            config.bits,
            config.granularity,
            config.group_size,
            config.family,
            code == "BF16",
            config.codebook,
        )
    except QuantizationError as e:
        raise type(e)(f"tensor {name!r} of shape {list(shape)}: {e}") from None
    return QuantizedTensor(shape=shape, dtype=DTYPES[code][0], config=config, **out)


def quantize_checkpoint(
    checkpoint: Checkpoint,
    configs: Mapping[str, QuantConfig],
    output: Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Report:
    """Quantize ``checkpoint`` tensor by tensor; write ``output`` if given."""
    specs = checkpoint.specs
    layout = [
        Planned(n, shape, DTYPES[code][0], configs[n]) if n in configs else Planned(n, shape, code)
        for n, (code, shape) in specs.items()
    ]
    writer = FileWriter(output, layout, overwrite=overwrite) if output else None
    rows = []
    bar = Progress(len(specs), checkpoint.nbytes, enabled=progress)
    with writer or nullcontext(), bar:
        for name, (code, shape) in specs.items():
            if name in configs:
                q = quantize_array(checkpoint.array(name), code, configs[name], name)
                rows.append(_report_of(name, q))
                if writer:
                    writer.write_quantized(name, q)
            else:
                rows.append(kept_report(name, Slot(code, shape)))
                if writer:
                    writer.write_kept(name, checkpoint.raw(name))
            checkpoint.release(name)
            bar.advance(Slot(code, shape).nbytes)
        if writer:
            writer.commit()
    return Report(tuple(rows))
