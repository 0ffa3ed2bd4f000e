"""Quantizing a checkpoint on disk one tensor at a time, in bounded memory.

Each tensor is read from the memory-mapped input, quantized, written at its
place in the output file and released before the next one, so peak memory is
that of the largest tensor (times a small factor), not of the checkpoint. The
NumPy arrays go straight to the core: torch is not imported for safetensors
input (bfloat16 weights travel as their uint16 bits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

from ._budget import checkpoint_source
from ._checkpoint import Checkpoint
from ._format import DTYPES, FLOAT_CODES, Slot, kept_report
from ._options import QuantConfig
from ._overlap import in_order
from ._plan import Spec
from ._progress import Progress
from ._report import Report, TensorReport, report_row
from ._writer import FileWriter, Planned


def specs(checkpoint: Checkpoint) -> dict[str, Spec]:
    """What the planner needs of every tensor of ``checkpoint``, from its header."""
    return {
        name: Spec(shape, code in FLOAT_CODES) for name, (code, shape) in checkpoint.specs.items()
    }


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
    quantize = checkpoint_source(checkpoint).quantize
    rows = []
    bar = Progress(len(specs), checkpoint.nbytes, enabled=progress)
    # Two quantized tensors may be in flight (see ._overlap), each written and
    # its pages released by the job that quantized it; kept ones are copied as
    # their turn comes.

    def job(name: str, item: tuple[QuantConfig, int]) -> TensorReport:
        q = quantize(name, item[0])
        if writer:
            writer.write_quantized(name, q)
        checkpoint.release(name)
        return report_row(name, q)

    jobs = [(n, (configs[n], 4 * math.prod(s))) for n, (_, s) in specs.items() if n in configs]
    done = in_order(jobs, job, lambda item: item[1])
    with writer or nullcontext(), bar:
        try:
            for name, (code, shape) in specs.items():
                if name in configs:
                    rows.append(next(done)[1])
                else:
                    rows.append(kept_report(name, Slot(code, shape)))
                    if writer:
                        writer.write_kept(name, checkpoint.raw(name))
                    checkpoint.release(name)
                bar.advance(Slot(code, shape).nbytes)
            if writer:
                writer.commit()
        finally:
            done.close()  # on an error: no job still writes when the writer aborts
    return Report(tuple(rows))
