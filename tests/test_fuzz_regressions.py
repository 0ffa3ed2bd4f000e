"""Regression tests for the bugs the fuzzers (fuzz/) found, one per bug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def test_load_dequantize_before_torch_is_imported():
    """fuzz_load: ``load(path).dequantize()`` in a process that had not imported
    torch raised AttributeError ('NoneType' object has no attribute 'from_numpy')."""
    script = (
        "import sys, nuq_rs\n"
        f"sd = nuq_rs.load({str(FIXTURES / 'v2_small.nuq.safetensors')!r}).dequantize()\n"
        "print(sorted({type(v).__module__ for v in sd.values()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['torch']"


def test_largest_float16_weights_decode_finite():
    """fuzz_quantize: a float16 weight at ±65504 decoded to ±inf (its group's f16
    scale absmax/q rounds up, and q * scale rounds past the float16 maximum)."""
    import numpy as np

    import nuq_rs

    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float16)
    x[0, 0], x[1, 5] = 65504, -65504
    d = nuq_rs.quantize_tensor(x, bits=3).dequantize()
    assert d.dtype == np.float16
    assert np.isfinite(d).all()
    assert (d[0, 0], d[1, 5]) == (65504, -65504)


def test_lloyd_max_weights_near_float32_max_are_refused():
    """fuzz_quantize: Lloyd–Max per-channel codebooks fitted to weights near
    float32's maximum decoded to inf (and reported an infinite error)."""
    import numpy as np
    import pytest

    import nuq_rs

    x = np.full((40, 21), -3e38, np.float32)
    x[0, 0] = 3e38
    for granularity in ("tensor", "channel"):
        with pytest.raises(nuq_rs.QuantizationError, match="overflow float32"):
            nuq_rs.quantize_tensor(x, bits=8, granularity=granularity, codebook="lloyd-max")
    q = nuq_rs.quantize_tensor(x, bits=8)  # the default fitted codebook: saturating scales
    assert np.isfinite(q.dequantize()).all()


def _with_tensor_metadata(path: Path, out: Path, **changes: object) -> None:
    """A copy of a nuq-rs file whose first quantized tensor's metadata has ``changes``."""
    import json
    import struct

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    entries = json.loads(header["__metadata__"]["tensors"])
    next(e for e in entries if e["kind"] == "quantized").update(changes)
    header["__metadata__"]["tensors"] = json.dumps(entries)
    text = json.dumps(header).encode()
    out.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


def test_negative_error_statistics_are_a_format_error(tmp_path):
    """fuzz_load: a negative ``sse`` in the metadata made ``report()`` raise
    ``ValueError: math domain error`` from the SQNR's logarithm."""
    import pytest

    import nuq_rs

    src = FIXTURES / "v2_small.nuq.safetensors"
    for changes in ({"sse": -1.0}, {"energy": -2.5}, {"sse": float("nan")}):
        bad = tmp_path / "bad.nuq.safetensors"
        _with_tensor_metadata(src, bad, **changes)
        with pytest.raises(nuq_rs.FormatError, match="conv.weight"):
            nuq_rs.load(bad)


def test_sqnr_of_an_infinite_error_is_minus_infinity(tmp_path):
    """An error that overflowed (inf, from an older writer) reports -inf dB
    rather than raising from ``log10(0)``."""
    import math

    import nuq_rs

    bad = tmp_path / "inf.nuq.safetensors"
    _with_tensor_metadata(FIXTURES / "v2_small.nuq.safetensors", bad, sse=float("inf"))
    loaded = nuq_rs.load(bad)
    assert loaded["conv.weight"].sqnr_db == -math.inf
    assert "conv.weight" in str(loaded.report())


def test_decoders_refuse_sizes_that_overflow_or_cannot_be_allocated():
    """fuzz_decode: ``dequantize`` with 2^62 columns and no packed bytes passed
    the length checks (``cols * bits`` wrapped to 0) and panicked on a capacity
    overflow; ``linear`` with ``cols = 0`` and 2^60 rows aborted the process
    allocating the output. Now: a QuantizationError, and a MemoryError."""
    import numpy as np
    import pytest

    import nuq_rs
    from nuq_rs import _nuq_rs

    levels, none, one = np.zeros(16, np.float32), np.zeros(0, np.float32), np.ones(1, np.float32)
    empty = np.zeros(0, np.uint8)
    with pytest.raises(nuq_rs.QuantizationError, match="packed"):
        _nuq_rs.dequantize(empty, levels, none, one, 1, 2**62, 4)
    x = np.zeros((1, 0), np.float32)
    with pytest.raises(MemoryError):
        _nuq_rs.linear(x, empty, levels, none, one, 2**60, 0, 4)


def test_channel_fit_of_weights_near_float32_max_does_not_panic():
    """fuzz_quantize: per-channel Lloyd–Max on a row of weights near float32's
    maximum panicked in the row median (PanicException: partition_at_index)."""
    import numpy as np

    import nuq_rs

    row = np.array(
        [
            -8.573521e37,
            -2.176611e37,
            5.183989e37,
            -5.615988e37,
            -7.709522e37,
            1.109905e38,
            -7.343985e37,
            9.238135e37,
            6.180910e37,
            7.343985e37,
            5.881834e37,
            4.552606e37,
            8.307675e37,
            -5.881834e37,
            8.573521e37,
            1.335874e38,
            9.105212e37,
            -6.878755e37,
            4.286760e37,
            6.563063e36,
            -1.083321e38,
            -7.277523e37,
            7.875676e37,
            4.818451e37,
            1.561843e38,
            -1.209597e38,
            -1.136490e38,
            -1.010213e38,
            6.313833e37,
            1.309290e38,
            5.682450e37,
            4.652298e37,
        ],
        np.float32,
    )
    x = np.stack([row, -row, row[::-1]])
    try:
        q = nuq_rs.quantize_tensor(x, bits=1, granularity="channel", codebook="lloyd-max")
    except nuq_rs.QuantizationError as e:  # the documented overflow refusal is fine
        assert "overflow float32" in str(e)
    else:
        assert np.isfinite(q.dequantize()).all()
