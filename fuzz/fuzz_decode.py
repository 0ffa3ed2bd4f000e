"""Fuzz the extension's decoders on arbitrary buffers and lengths:
``nuq_rs._nuq_rs.dequantize`` and ``linear`` (the LUT matmul, fp32 and int8
activations) with any packed bytes, codebook, locations, scales, ``rows``,
``cols`` (up to 2^64 - 1), bits and group size.

Accepted outcomes: success with an output of the stated shape;
``QuantizationError``/``ValueError`` for lengths that disagree; ``MemoryError``
for an output that cannot be allocated. Anything else (a Rust panic surfaces
as ``pyo3_runtime.PanicException``, an out-of-bounds read as a crash) is a bug.

    python fuzz/fuzz_decode.py fuzz/corpus/decode -max_len=1024
"""

from __future__ import annotations

import sys

import atheris
import numpy as np

with atheris.instrument_imports(include=["nuq_rs"]):
    from nuq_rs import _nuq_rs

#: Sizes the fuzzer picks among: small ones, and ones near overflow.
SIZES = [0, 1, 2, 3, 7, 8, 9, 31, 64, 2**31, 2**32 + 1, 2**61 + 3, 2**62, 2**63, 2**64 - 1]


@atheris.instrument_func
def size(fdp: atheris.FuzzedDataProvider) -> int:
    if fdp.ConsumeBool():
        return fdp.ConsumeIntInRange(0, 70)
    return SIZES[fdp.ConsumeIntInRange(0, len(SIZES) - 1)]


def floats(fdp: atheris.FuzzedDataProvider, n: int) -> np.ndarray:
    raw = fdp.ConsumeBytes(4 * n).ljust(4 * n, b"\0")
    return np.frombuffer(raw, np.float32).copy()


@atheris.instrument_func
def args(fdp: atheris.FuzzedDataProvider) -> tuple:
    rows, cols, bits = size(fdp), size(fdp), fdp.ConsumeIntInRange(0, 9)
    group = None if fdp.ConsumeBool() else size(fdp)
    if fdp.ConsumeBool() and 1 <= bits <= 8 and max(rows, cols, rows * cols) <= 4096 and group != 0:
        # Consistent lengths (most of the time): the decoding kernels run on
        # arbitrary codes, codebooks and scales, with every kind of tail.
        n_scale = rows * -(-cols // group) if group else (1, rows)[fdp.ConsumeIntInRange(0, 1)]
        n_loc = (0, 1, rows)[fdp.ConsumeIntInRange(0, 2)]
        n_levels, n_packed = 2**bits, rows * -(-cols * bits // 8)
    else:
        n_levels, n_packed = fdp.ConsumeIntInRange(0, 300), fdp.ConsumeIntInRange(0, 600)
        n_loc, n_scale = fdp.ConsumeIntInRange(0, 80), fdp.ConsumeIntInRange(0, 200)
    levels = floats(fdp, n_levels)
    loc = floats(fdp, n_loc)
    scale = floats(fdp, n_scale)
    packed = np.frombuffer(fdp.ConsumeBytes(n_packed).ljust(n_packed, b"\0"), np.uint8).copy()
    return packed, levels, loc, scale, rows, cols, bits, group


#: Error kinds, told apart so that each one is a coverage feature (the
#: extension itself is not instrumented).
KINDS = ("bits", "levels", "packed", "loc", "scale", "group_size", "features", "allocate", "int8")


@atheris.instrument_func
def outcome(message: str) -> int:
    for i, kind in enumerate(KINDS):
        if kind in message:
            return i
    return -1


@atheris.instrument_func
def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 2)
    packed, levels, loc, scale, rows, cols, bits, group = args(fdp)
    m = fdp.ConsumeIntInRange(0, 20)
    x = floats(fdp, m * min(cols, 64))
    bias = floats(fdp, min(rows, 64)) if fdp.ConsumeBool() else None
    try:
        if which == 0:
            out = _nuq_rs.dequantize(packed, levels, loc, scale, rows, cols, bits, group)
            assert out.shape == (rows * cols,), (out.shape, rows, cols)
        else:
            x = x.reshape(m, min(cols, 64))
            out = _nuq_rs.linear(
                x, packed, levels, loc, scale, rows, cols, bits, group, bias, which == 2
            )
            assert out.shape == (m, rows), (out.shape, m, rows)
    except (ValueError, MemoryError, OverflowError) as e:
        # QuantizationError is a ValueError; OverflowError: a size beyond usize.
        outcome(str(e))


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
