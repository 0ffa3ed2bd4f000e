"""The work that tests/test_isa.py compares across instruction sets.

Run as ``python tests/_isa_cases.py OUT.npz`` (under some ``NUQ_ISA``), it
quantizes fixed tensors, runs the LUT kernels on fixed layers and inputs, and
saves every code, codebook, scale and output, with ``nuq_rs.kernels()``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from torch import nn

import nuq_rs
import nuq_rs.nn as qnn

# (bits, options) of quantize_tensor: the paper's three granularities, the
# default fitted codebook, and groups that do not divide a row.
CONFIGS = [
    (1, {"granularity": "tensor", "codebook": "lloyd-max"}),
    (3, {"granularity": "channel", "codebook": "lloyd-max"}),
    (4, {"granularity": "group", "group_size": 64, "codebook": "lloyd-max"}),
    (2, {}),
    (4, {}),
    (5, {"group_size": 35}),
    (8, {"granularity": "channel"}),
]

# Rows of input of the linear layers: the decode driver (<= 16) and the
# prefill driver, odd sizes included.
ROWS = (1, 5, 16, 17, 70)


def tensors() -> dict[str, torch.Tensor]:
    """Bell-shaped, heavy-tailed, pruned and reduced-precision weights; one
    of more than 2^23 elements (the large-tensor paths of the statistics)."""
    gen = torch.Generator().manual_seed(11)
    lap = torch.distributions.Laplace(0.0, 1.0)
    torch.manual_seed(11)
    pruned = torch.randn(96, 300, generator=gen)
    pruned[pruned.abs() < 0.7] = 0
    return {
        "normal": torch.randn(67, 300, generator=gen) * 0.05 + 0.01,
        "laplace": lap.sample((33, 1000)),
        "t3": torch.distributions.StudentT(3.0).sample((128, 257)),
        "pruned": pruned,
        "half": (torch.randn(40, 130, generator=gen) * 0.02).half(),
        "bf16": (torch.randn(40, 130, generator=gen) * 0.02).bfloat16(),
        "large": torch.randn(2048, 4200, generator=gen),
    }


def layers() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Quantized layers and inputs, built the same way in every process."""
    gen = torch.Generator().manual_seed(5)
    out: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    for bits, opts in [(4, {}), (3, {"granularity": "channel"}), (6, {"group_size": 20})]:
        lin = nn.Linear(300, 45)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(45, 300, generator=gen) * 0.1)
        for act in ("fp32", "int8"):
            q = qnn.NuqLinear.from_float(lin, bits=bits, activations=act, **opts)
            for m in ROWS:
                x = torch.randn(m, 300, generator=gen)
                out[f"linear/{bits}/{act}/{m}"] = (q, x)
    conv = nn.Conv2d(6, 10, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(10, 6, 3, 3, generator=gen) * 0.2)
    out["conv"] = (qnn.NuqConv2d.from_float(conv, bits=4), torch.randn(2, 6, 9, 11, generator=gen))
    return out


def run() -> dict[str, np.ndarray]:
    res: dict[str, np.ndarray] = {"kernels": np.array(json.dumps(nuq_rs.kernels()))}
    for name, w in tensors().items():
        for i, (bits, opts) in enumerate(CONFIGS):
            if name == "large" and i not in (0, 4):
                continue  # the large tensor only at tensor granularity and the default
            q = nuq_rs.quantize_tensor(w, bits, **opts)
            for field in ("packed", "levels", "loc", "scale"):
                res[f"{name}/{i}/{field}"] = np.asarray(getattr(q, field))
            res[f"{name}/{i}/family"] = np.array(q.family)
            res[f"{name}/{i}/sse"] = np.array(q.sse)
    with torch.inference_mode():
        for name, (layer, x) in layers().items():
            res[f"out/{name}"] = layer(x).numpy()
    return res


if __name__ == "__main__":
    np.savez(sys.argv[1], **run())
