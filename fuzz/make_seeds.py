"""Writes the seed corpora: small valid nuq-rs files (every granularity, codebook,
bit width and dtype) for ``fuzz_load.py``, and a few inputs for ``fuzz_quantize.py``.

    python fuzz/make_seeds.py    # into fuzz/seeds/{load,quantize}
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

import nuq_rs

HERE = Path(__file__).parent


def load_seeds(out: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 12)).astype(np.float32)
    configs = [
        dict(bits=1, granularity="tensor"),
        dict(bits=2, granularity="channel"),
        dict(bits=3, group_size=5),
        dict(bits=4, group_size=8, codebook="lloyd-max"),
        dict(bits=5, granularity="tensor", codebook="lloyd-max"),
        dict(bits=8, granularity="channel", codebook="lloyd-max"),
    ]
    for i, kw in enumerate(configs):
        sd = {
            "w": torch.from_numpy(w[: 2 + i % 3]),
            "b": torch.arange(3, dtype=torch.float16),
        }
        if i % 2:
            sd["v"] = torch.from_numpy(rng.laplace(size=(3, 2, 2))).to(torch.bfloat16)
        q = nuq_rs.quantize_state_dict(sd, **kw)
        q.save(out / f"valid-{i}.nuq.safetensors")
    for fixture in ("v1_small", "v2_small"):
        src = HERE.parent / "tests" / "fixtures" / f"{fixture}.nuq.safetensors"
        (out / fixture).write_bytes(src.read_bytes())


def main() -> None:
    for sub in ("load",):
        os.makedirs(HERE / "seeds" / sub, exist_ok=True)
    load_seeds(HERE / "seeds" / "load")


if __name__ == "__main__":
    main()
