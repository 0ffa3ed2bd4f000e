"""quantize_tensor: decoding, granularities, dtypes, layouts and bad input."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import nuq_rs


def paper_quantize_tensor(x, bits=4, **options):
    """The paper's method (one fit per tensor, Lloyd–Max codebook), which these
    tests pin down; ``options`` override."""
    return nuq_rs.quantize_tensor(
        x, bits, **({"granularity": "tensor", "codebook": "lloyd-max"} | options)
    )


torch = pytest.importorskip("torch")


def nearest_level_decode(x: np.ndarray, q: nuq_rs.QuantizedTensor) -> np.ndarray:
    """Independent oracle: each weight goes to the cell its standardized value
    falls in (boundaries = midpoints of the levels), decoded as loc + scale * level."""
    rows = x.shape[0] if x.ndim >= 2 else 1
    x2 = x.reshape(rows, -1).astype(np.float32)
    mids = ((q.levels[1:] + q.levels[:-1]) / 2).astype(np.float32)
    g = q.config.group_size
    if g:
        s = np.repeat(q.scale.reshape(rows, -1), g, axis=1)
        loc = np.float32(0)
    else:
        s = np.broadcast_to(q.scale.reshape(-1, 1), x2.shape) if q.scale.size > 1 else q.scale
        loc = q.loc.reshape(-1, 1) if q.loc.size > 1 else q.loc
    safe = np.where(s != 0, s, np.float32(1))
    mul = np.where(s != 0, np.float32(1) / safe, np.float32(0))
    z = ((x2 - loc) * mul).astype(np.float32)
    codes = np.searchsorted(mids, z, side="left")
    return (loc + s * q.levels[codes]).astype(np.float32).reshape(x.shape)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize(
    "granularity,group_size", [("tensor", None), ("channel", None), ("group", 16)]
)
def test_decode_matches_nearest_cell_oracle(rng, bits, granularity, group_size):
    x = (rng.standard_t(5, size=(24, 80)) * 0.1).astype(np.float32)
    q = paper_quantize_tensor(x, bits, granularity=granularity, group_size=group_size)
    got = q.dequantize()
    assert got.shape == x.shape and got.dtype == np.float32
    want = nearest_level_decode(x, q)
    # Boundary ties may round either way in f32; allow a handful of neighbours.
    assert np.mean(got != want) < 1e-3
    assert q.mse == pytest.approx(np.mean((got.astype(np.float64) - x) ** 2), rel=1e-6)
    assert q.sqnr_db == pytest.approx(
        10
        * math.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((got - x.astype(np.float64)) ** 2)),
        rel=1e-6,
    )


@pytest.mark.parametrize("bits", range(1, 8))
def test_more_bits_less_error(rng, bits):
    # One more bit divides the Lloyd–Max error by 3 to 4 on a Gaussian (Max
    # 1960: 0.3634, 0.1175, 0.03454, 0.009497, then about 4x per bit).
    x = rng.standard_normal((128, 128)).astype(np.float32)
    assert paper_quantize_tensor(x, bits + 1).mse < 0.4 * paper_quantize_tensor(x, bits).mse


def test_packed_size_and_bits_per_weight(rng):
    x = rng.standard_normal((64, 200)).astype(np.float32)
    for bits in range(1, 9):
        q = paper_quantize_tensor(x, bits)
        assert q.packed.size == 64 * math.ceil(200 * bits / 8)
        assert q.bits_per_weight == pytest.approx(bits + (2**bits + 2) * 32 / x.size)
    qc = paper_quantize_tensor(x, 4, granularity="channel")
    assert qc.bits_per_weight == pytest.approx(4 + (16 * 32 + 64 * 64) / x.size)
    qg = paper_quantize_tensor(x, 4, group_size=50)
    assert qg.bits_per_weight == pytest.approx(4 + 16 / 50)  # the codebook is implied


@pytest.mark.parametrize("family", ["gaussian", "laplace"])
def test_group_codebook_is_the_implied_one_of_the_chosen_family(rng, family):
    x = rng.laplace(size=(32, 128)).astype(np.float32)
    q = paper_quantize_tensor(x, 3, group_size=64, family=family)
    assert q.family == family
    implied = nuq_rs._nuq_rs.implied_codebook(family, 3, 64)
    np.testing.assert_array_equal(q.levels, implied)
    np.testing.assert_array_equal(implied, -implied[::-1])
    # "auto" takes the family whose codebook fits best: never worse than either
    auto = paper_quantize_tensor(x, 3, group_size=64)
    assert auto.sse <= q.sse * (1 + 1e-3)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_torch_dtypes_round_trip(rng, dtype):
    t = torch.from_numpy(rng.standard_normal((32, 3, 3, 3)).astype(np.float32)).to(
        getattr(torch, dtype)
    )
    q = paper_quantize_tensor(t, bits=8)
    out = q.dequantize()
    assert isinstance(out, torch.Tensor) and out.dtype == t.dtype and out.shape == t.shape
    assert out.device.type == "cpu"
    # 8 bits on a normal sample: about 40 dB.
    assert q.sqnr_db > 35
    ref = paper_quantize_tensor(t.float().numpy(), bits=8)  # widened in Python instead
    np.testing.assert_array_equal(q.packed, ref.packed)


def test_numpy_float16_and_float64(rng):
    x = rng.standard_normal((16, 16))
    for dt in (np.float16, np.float64):
        q = paper_quantize_tensor(x.astype(dt), 4)
        assert q.dequantize().dtype == dt


def test_numpy_api_does_not_import_torch():
    """The NumPy-level functions work without torch and never import it (its
    import alone takes seconds), even though torch is installed here."""
    script = (
        "import sys, numpy as np, nuq_rs\n"
        "x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)\n"
        "q = nuq_rs.quantize_tensor(x, bits=4)\n"
        "assert nuq_rs.dequantize(q).shape == (64, 256)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["False"]


def test_non_contiguous_and_transposed_inputs(rng):
    base = rng.standard_normal((40, 60)).astype(np.float32)
    for view in (base.T, base[:, ::2], base[::3]):
        a = paper_quantize_tensor(view, 4, granularity="channel")
        b = paper_quantize_tensor(np.ascontiguousarray(view), 4, granularity="channel")
        np.testing.assert_array_equal(a.packed, b.packed)
        np.testing.assert_array_equal(a.dequantize(), b.dequantize())
    t = torch.from_numpy(base)
    a = paper_quantize_tensor(t.t(), 4)
    b = paper_quantize_tensor(t.t().contiguous(), 4)
    np.testing.assert_array_equal(a.packed, b.packed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensor_gives_cpu_result(rng):
    t = torch.from_numpy(rng.standard_normal((8, 8)).astype(np.float32)).cuda()
    assert paper_quantize_tensor(t).dequantize().device.type == "cpu"


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0,)])
def test_empty_tensor(shape):
    for gran, g in (("tensor", None), ("channel", None), ("group", 5)):
        if g and shape[-1] % g:
            continue
        q = paper_quantize_tensor(np.zeros(shape, np.float32), 4, granularity=gran, group_size=g)
        assert q.dequantize().shape == shape
        assert q.mse == 0 and q.packed.size == 0


@pytest.mark.parametrize("value", [0.0, 3.25, -1e-30])
@pytest.mark.parametrize("shape", [(1, 1), (7, 9)])
def test_constant_and_single_element_tensors_are_exact(value, shape):
    x = np.full(shape, value, np.float32)
    for gran, g in (("tensor", None), ("channel", None), ("group", shape[1])):
        q = paper_quantize_tensor(x, 3, granularity=gran, group_size=g)
        out = q.dequantize()
        assert not np.isnan(out).any()
        if gran != "group":  # an f16 group scale cannot hold every float exactly
            np.testing.assert_array_equal(out, x)
        assert q.d_gaussian == 0 and q.d_laplace == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_tensor_and_index(bad):
    x = np.ones((4, 5), np.float32)
    x[2, 3] = bad
    with pytest.raises(nuq_rs.NonFiniteError, match=r"'layer\.w'.*index 13"):
        paper_quantize_tensor(x, name="layer.w")
    assert issubclass(nuq_rs.NonFiniteError, ValueError)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bits": 0}, r"bits must be in 1\.\.=8, got 0"),
        ({"bits": 9}, r"bits must be in 1\.\.=8, got 9"),
        (
            {"granularity": "row"},
            "unknown granularity 'row'; expected 'tensor', 'channel' or 'group'",
        ),
        ({"group_size": 0}, "group_size must be > 0"),
        ({"group_size": -4}, "group_size must be > 0"),
        ({"codebook": "nf4"}, "unknown codebook"),
        ({"granularity": "channel", "group_size": 4}, "cannot be combined"),
        ({"family": "cauchy"}, "unknown family"),
    ],
)
def test_bad_options_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paper_quantize_tensor(np.ones((3, 12), np.float32), **kwargs)


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="floating"):
        paper_quantize_tensor(np.ones((3, 3), np.int32))
    with pytest.raises(TypeError, match="torch.Tensor or numpy.ndarray"):
        paper_quantize_tensor([[1.0, 2.0]])
    with pytest.raises(TypeError, match="bits must be an int"):
        paper_quantize_tensor(np.ones((3, 3), np.float32), bits=4.0)


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 40)),
        elements=st.floats(-100, 100, width=32),
    ),
    st.integers(1, 8),
    st.sampled_from(["tensor", "channel"]),
)
def test_decoded_values_are_codebook_entries_and_bounded(x, bits, granularity):
    q = paper_quantize_tensor(x, bits, granularity=granularity)
    out = q.dequantize()
    assert np.isfinite(out).all()
    rows = x.shape[0]
    loc = np.broadcast_to(q.loc.reshape(-1, 1), (rows, 1))
    scale = np.broadcast_to(q.scale.reshape(-1, 1), (rows, 1))
    cand = loc + scale * q.levels.reshape(1, -1)  # every value a row can decode to
    assert all(np.isin(out[r], cand[r]).all() for r in range(rows))
