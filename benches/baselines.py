"""Quantization baselines that nuq is compared against, in plain NumPy.

Every function takes a 2-D+ float array (row = first dim, as in nuq) and
returns ``(dequantized, bits_per_weight)``: the float32 reconstruction in the
input's shape and the storage cost per weight *including* metadata, which is
stored as fp16 (and rounded to fp16 before use, so the error is honest):

- :func:`uniform_minmax` -- round-to-nearest on [min, max], fp16 scale and
  zero point per tensor / channel / group (32 bits of metadata per block).
- :func:`aciq` -- uniform quantization clipped at the ACIQ analytical
  threshold (Banner, Nahshan, Soudry, NeurIPS 2019) for the fitted Gaussian
  or Laplace density; fp16 low end and step per block.
- :func:`nf4` -- the 16 published NormalFloat levels of QLoRA (Dettmers et
  al. 2023), absmax scaling over flat blocks of 64, fp16 absmax: 4.25 bits.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import optimize, stats

__all__ = ["NF4_LEVELS", "aciq", "aciq_alpha", "blocks_of", "nf4", "uniform_minmax"]

#: bits of fp16 metadata per block (two fp16 numbers).
_META_BITS = 32

#: The 16 NF4 levels as published with QLoRA / bitsandbytes.
NF4_LEVELS = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
        0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
        0.7229568362236023, 1.0,
    ]
)  # fmt: skip

# ACIQ's published optimal clipping multipliers (Banner et al. 2019), used to
# check the numerical minimisation in aciq_alpha.
_ACIQ_PUBLISHED = {
    "gaussian": {2: 1.71, 3: 2.15, 4: 2.55, 8: 3.92},
    "laplace": {2: 2.83, 3: 3.89, 4: 5.03, 8: 9.89},
}


def blocks_of(x: np.ndarray, granularity: str, group_size: int | None) -> np.ndarray:
    """View ``x`` as ``(n_blocks, width)``: one block per tensor, row, or row group."""
    rows = np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1)
    if granularity == "tensor":
        return rows.reshape(1, -1)
    if granularity == "channel":
        return rows
    if granularity != "group":
        raise ValueError(f"unknown granularity {granularity!r}")
    if not group_size or rows.shape[1] % group_size:
        raise ValueError(f"group_size {group_size} must divide the row length {rows.shape[1]}")
    return rows.reshape(-1, group_size)


def _fp16(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).astype(np.float32)


def _finish(x: np.ndarray, deq_blocks: np.ndarray, meta_bits: float, bits: int):
    deq = deq_blocks.reshape(x.shape).astype(np.float32)
    assert deq.shape == x.shape and np.all(np.isfinite(deq))
    return deq, bits + meta_bits / x.size


def uniform_minmax(
    x: np.ndarray, bits: int, granularity: str = "tensor", group_size: int | None = None
) -> tuple[np.ndarray, float]:
    """Asymmetric round-to-nearest over each block's [min, max], 2**bits levels."""
    b = blocks_of(x, granularity, group_size)
    zero = _fp16(b.min(axis=1, keepdims=True))
    scale = _fp16((b.max(axis=1, keepdims=True) - zero) / (2**bits - 1))
    scale = np.where(scale > 0, scale, np.float32(1.0))
    codes = np.clip(np.rint((b - zero) / scale), 0, 2**bits - 1)
    return _finish(x, zero + codes * scale, _META_BITS * len(b), bits)


@functools.cache
def aciq_alpha(family: str, bits: int) -> float:
    """Clipping threshold in units of sigma (Gaussian) or b (Laplace).

    Minimises ACIQ's expected error: clipping noise of the tails plus uniform
    quantization noise alpha**2 / (3 * 4**bits) of 2**bits bins over [-alpha, alpha].
    """
    granular = 1.0 / (3.0 * 4.0**bits)
    if family == "gaussian":

        def err(a: float) -> float:
            return 2 * ((a * a + 1) * stats.norm.sf(a) - a * stats.norm.pdf(a)) + a * a * granular
    elif family == "laplace":

        def err(a: float) -> float:
            return 2 * np.exp(-a) + a * a * granular
    else:
        raise ValueError(f"unknown family {family!r}")
    res = optimize.minimize_scalar(
        err, bounds=(0.1, 40.0), method="bounded", options={"xatol": 1e-9}
    )
    return float(res.x)


def _fit(block: np.ndarray, family: str) -> tuple[str, float, float]:
    """(family, loc, spread) with the same fits and KS choice as nuq."""
    flat = block.astype(np.float64)
    mu, sigma = flat.mean(), flat.std()
    med = np.median(flat)
    b = np.mean(np.abs(flat - med))
    if family == "auto":
        d_g = stats.kstest(flat, "norm", args=(mu, sigma)).statistic if sigma > 0 else 1.0
        d_l = stats.kstest(flat, "laplace", args=(med, b)).statistic if b > 0 else 1.0
        family = "gaussian" if d_g <= d_l else "laplace"
    return (family, mu, sigma) if family == "gaussian" else (family, med, b)


def aciq(
    x: np.ndarray,
    bits: int,
    granularity: str = "tensor",
    group_size: int | None = None,
    family: str = "auto",
) -> tuple[np.ndarray, float]:
    """Uniform 2**bits bins over [loc - alpha, loc + alpha] (cut to the data range)."""
    b = blocks_of(x, granularity, group_size)
    out = np.empty_like(b)
    for i, block in enumerate(b):
        fam, loc, spread = _fit(block, family)
        alpha = aciq_alpha(fam, bits) * spread
        lo = max(loc - alpha, float(block.min()))
        hi = min(loc + alpha, float(block.max()))
        low = _fp16(np.float32(lo))
        step = _fp16(np.float32((hi - lo) / 2**bits))
        step = step if step > 0 else np.float32(1.0)
        codes = np.clip(np.floor((block - low) / step), 0, 2**bits - 1)
        out[i] = low + (codes + 0.5) * step
    return _finish(x, out, _META_BITS * len(b), bits)


def nf4(x: np.ndarray, block_size: int = 64) -> tuple[np.ndarray, float]:
    """NF4: flat blocks of ``block_size`` (zero-padded), nearest of 16 levels x fp16 absmax."""
    x = np.asarray(x, dtype=np.float32)
    flat = x.ravel()
    pad = (-flat.size) % block_size
    b = np.concatenate([flat, np.zeros(pad, np.float32)]).reshape(-1, block_size)
    absmax = _fp16(np.abs(b).max(axis=1, keepdims=True))
    absmax = np.where(absmax > 0, absmax, np.float32(1.0))
    mids = 0.5 * (NF4_LEVELS[1:] + NF4_LEVELS[:-1])
    codes = np.searchsorted(mids, b / absmax)
    deq = (NF4_LEVELS[codes] * absmax).ravel()[: flat.size]
    # Packed codes of the padded blocks plus one fp16 absmax per block.
    bits_per_weight = (4 * b.size + 16 * len(b)) / flat.size
    out, _ = _finish(x, deq, 0, 4)
    return out, bits_per_weight


def _self_check() -> None:
    for fam, table in _ACIQ_PUBLISHED.items():
        for bits, want in table.items():
            got = aciq_alpha(fam, bits)
            assert abs(got - want) < 0.01, (fam, bits, got, want)
    rng = np.random.default_rng(1)
    x = rng.laplace(scale=0.02, size=(128, 512)).astype(np.float32)

    def mse(deq: np.ndarray) -> float:
        return float(np.mean((x - deq) ** 2))

    for bits in (2, 3, 4, 8):
        for gran, g in (("tensor", None), ("channel", None), ("group", 64)):
            u, ub = uniform_minmax(x, bits, gran, g)
            a, ab = aciq(x, bits, gran, g)
            assert ub == ab and ub > bits
            print(
                f"{bits} bits {gran:7s}: minmax mse {mse(u):.3e} ({ub:.3f} b/w), aciq {mse(a):.3e}"
            )
            if bits <= 4 and gran == "tensor":
                assert mse(a) < mse(u), "clipping must beat min-max on heavy tails"
    q, qb = nf4(x)
    assert qb == 4.25 and q.shape == x.shape
    assert np.allclose(nf4(NF4_LEVELS.reshape(1, 16).astype(np.float32), 16)[0], NF4_LEVELS)
    print(f"nf4 block 64: mse {mse(q):.3e} ({qb} b/w)")


if __name__ == "__main__":
    _self_check()
