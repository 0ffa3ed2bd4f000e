"""Fuzz ``nuq_rs.quantize_tensor`` on odd arrays: shapes (empty, 0-d, 1-D, 4-D),
strides (transposed, stepped, negative), dtypes (float16/32/64, torch bfloat16),
subnormals, ±0, huge magnitudes, NaN and infinity, and every option.

Accepted outcomes: success with a finite decoded result of the input's shape
and dtype; ``NonFiniteError`` exactly when the input holds NaN or infinity (or
float64 values beyond float32); ``QuantizationError`` "overflow float32" for
Lloyd–Max codebooks of weights near float32's maximum; ``ValueError`` /
``TypeError`` for a bad option. Anything else is a bug.

    python fuzz/fuzz_quantize.py fuzz/corpus/quantize -max_len=2048
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["nuq_rs"]):
    import nuq_rs

import numpy as np
import torch

SPECIALS = np.array(
    [0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 5e-324, 1e-300, 3.4e38, -3.4e38, 1e30, -1e30,
     65504.0, 6e-8, 1.0, -1.0, np.nan, np.inf, -np.inf],
    dtype=np.float64,
)  # fmt: skip
DTYPES = ("float32", "float16", "float64", "bfloat16")


@atheris.instrument_func
def make_array(fdp: atheris.FuzzedDataProvider) -> np.ndarray:
    ndim = fdp.ConsumeIntInRange(0, 4)
    shape = tuple(fdp.ConsumeIntInRange(0, 9 if ndim > 2 else 40) for _ in range(ndim))
    n = int(np.prod(shape))
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:  # raw float32 bit patterns: every class of float
        raw = fdp.ConsumeBytes(4 * n).ljust(4 * n, b"\0")
        x = np.frombuffer(raw, np.float32).astype(np.float64)
    elif mode == 1:  # mostly normal, a sprinkling of specials
        scale = 10.0 ** fdp.ConsumeIntInRange(-45, 38)
        x = np.random.default_rng(fdp.ConsumeIntInRange(0, 1 << 16)).standard_normal(n) * scale
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            if n:
                x[fdp.ConsumeIntInRange(0, n - 1)] = SPECIALS[fdp.ConsumeIntInRange(0, 17)]
    elif mode == 2:  # only specials
        x = SPECIALS[[fdp.ConsumeIntInRange(0, 17) for _ in range(n)]]
    else:  # a constant
        x = np.full(n, SPECIALS[fdp.ConsumeIntInRange(0, 17)])
    return x.reshape(shape)


@atheris.instrument_func
def odd_layout(x: np.ndarray, fdp: atheris.FuzzedDataProvider) -> np.ndarray:
    """The same values in a non-contiguous layout, when the fuzzer asks."""
    layout = fdp.ConsumeIntInRange(0, 3)
    if layout == 1 and x.ndim >= 2:
        return np.ascontiguousarray(np.swapaxes(x, 0, 1)).swapaxes(0, 1)
    if layout == 2:
        big = np.repeat(x[..., None], 2, axis=-1)
        return big[..., 0]  # stride 2 in the last axis
    if layout == 3 and x.ndim >= 1:
        return np.flip(np.ascontiguousarray(np.flip(x, 0)), 0)  # negative stride
    return x


@atheris.instrument_func
def convert(x: np.ndarray, dtype: str, as_torch: bool):
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "bfloat16":
            return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(torch.bfloat16)
        y = odd = x.astype(dtype)
    if as_torch:
        t = torch.from_numpy(np.ascontiguousarray(y))
        return t.t() if t.ndim == 2 and not odd.flags.c_contiguous else t
    return y


def finite_input(arr) -> bool:
    if isinstance(arr, torch.Tensor):
        return bool(torch.isfinite(arr.float()).all()) if arr.numel() else True
    with np.errstate(over="ignore"):
        return bool(
            np.isfinite(arr.astype(np.float64)).all() and np.isfinite(arr.astype(np.float32)).all()
        )


def max_abs(arr) -> float:
    if isinstance(arr, torch.Tensor):
        return float(arr.float().abs().max()) if arr.numel() else 0.0
    return float(np.abs(arr.astype(np.float64)).max()) if arr.size else 0.0


@atheris.instrument_func
def options(fdp: atheris.FuzzedDataProvider) -> dict:
    kw: dict = {"bits": fdp.ConsumeIntInRange(0, 9)}
    g = fdp.ConsumeIntInRange(0, 3)
    if g == 0:
        kw["granularity"] = "tensor"
    elif g == 1:
        kw["granularity"] = "channel"
    elif g == 2:
        kw["group_size"] = fdp.ConsumeIntInRange(0, 70)
    kw["family"] = ("auto", "gaussian", "laplace")[fdp.ConsumeIntInRange(0, 2)]
    kw["codebook"] = ("fitted", "lloyd-max")[fdp.ConsumeIntInRange(0, 1)]
    return kw


@atheris.instrument_func
def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kw = options(fdp)
    dtype = DTYPES[fdp.ConsumeIntInRange(0, 3)]
    as_torch = dtype == "bfloat16" or fdp.ConsumeBool()
    x = convert(odd_layout(make_array(fdp), fdp), dtype, as_torch)
    bad_option = not 1 <= kw["bits"] <= 8 or kw.get("group_size") == 0
    try:
        q = nuq_rs.quantize_tensor(x, **kw)
    except nuq_rs.NonFiniteError:
        assert not finite_input(x), "NonFiniteError on finite input"
        return
    except nuq_rs.QuantizationError as e:
        # Lloyd–Max codebooks of weights near float32's maximum overflow.
        assert "overflow float32" in str(e) and max_abs(x) > 1e30, f"unexpected {e!r}"
        return
    except (ValueError, TypeError) as e:
        assert bad_option, f"unexpected {e!r}"
        return
    assert not bad_option, f"accepted bad option {kw}"
    assert finite_input(x), "non-finite input accepted"
    out = q.dequantize()
    assert tuple(out.shape) == tuple(x.shape), (out.shape, x.shape)
    assert str(out.dtype).removeprefix("torch.") == dtype, (out.dtype, dtype)
    out64 = (out.float() if as_torch else torch.from_numpy(np.asarray(out, np.float32))).numpy()
    assert np.isfinite(out64).all(), "non-finite output"
    assert np.isfinite(q.sse) and q.sse >= 0, q.sse
    assert isinstance(repr(q), str)


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
