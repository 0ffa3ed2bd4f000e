"""The solved quantizers against the published Lloyd–Max optima (Max 1960;
Paez & Glisson 1972), observed through quantization of large samples."""

from __future__ import annotations

import numpy as np
import pytest

import nuq_rs


def paper_quantize_tensor(x, bits=4, **options):
    """The paper's method (one fit per tensor, Lloyd–Max codebook), which these
    tests pin down; ``options`` override."""
    return nuq_rs.quantize_tensor(
        x, bits, **({"granularity": "tensor", "codebook": "lloyd-max"} | options)
    )


# Optimal MSE for a unit-variance source, from the published tables: J. Max,
# "Quantizing for minimum distortion", IRE Trans. Inf. Theory IT-6, 7-12 (1960)
# (Gaussian); M. D. Paez and T. H. Glisson, "Minimum mean-squared-error
# quantization in speech PCM and DPCM systems", IEEE Trans. Commun. COM-20,
# 225-230 (1972) (Laplace).
GAUSSIAN = {1: 0.3634, 2: 0.1175, 3: 0.03454, 4: 0.009497}
LAPLACE = {1: 0.5000, 2: 0.1762, 3: 0.05448, 4: 0.01537}


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_solved_mse_matches_the_published_tables(bits):
    _, _, mse_g = nuq_rs.lloyd_max("gaussian", bits)
    _, _, mse_l = nuq_rs.lloyd_max("laplace", bits)
    assert mse_g == pytest.approx(GAUSSIAN[bits], rel=1e-3)
    # Solved for b = 1 (variance 2); the table is for unit variance.
    assert mse_l / 2 == pytest.approx(LAPLACE[bits], rel=1e-3)


def test_published_gaussian_levels():
    levels, bounds, _ = nuq_rs.lloyd_max("gaussian", 3)
    np.testing.assert_allclose(levels[4:], [0.2451, 0.7560, 1.344, 2.152], atol=6e-4)
    levels, bounds, _ = nuq_rs.lloyd_max("gaussian", 2)
    np.testing.assert_allclose(bounds, [-0.9816, 0, 0.9816], atol=1e-4)
    with pytest.raises(ValueError, match=r"bits must be in 1\.\.=8, got 9"):
        nuq_rs.lloyd_max("gaussian", 9)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_sample_reaches_the_lloyd_max_mse(bits):
    x = np.random.default_rng(bits).standard_normal(4_000_000).astype(np.float32)
    q = paper_quantize_tensor(x.reshape(2000, 2000), bits=bits, family="gaussian")
    # The fit (sample mean/std) and sampling add ~0.5% noise to the optimum.
    assert q.mse / x.var() == pytest.approx(GAUSSIAN[bits], rel=0.01)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_laplace_sample_reaches_the_lloyd_max_mse(bits):
    x = np.random.default_rng(bits).laplace(size=4_000_000).astype(np.float32)
    q = paper_quantize_tensor(x.reshape(2000, 2000), bits=bits, family="laplace")
    assert q.mse / x.var() == pytest.approx(LAPLACE[bits], rel=0.02)


@pytest.mark.parametrize("bits", range(1, 9))
def test_codebook_is_symmetric_and_increasing(bits):
    x = np.random.default_rng(0).standard_normal((100, 100)).astype(np.float32)
    for family in ("gaussian", "laplace"):
        levels = paper_quantize_tensor(x, bits=bits, family=family).levels
        assert levels.size == 2**bits
        assert np.all(np.diff(levels) > 0)
        np.testing.assert_allclose(levels, -levels[::-1], atol=1e-6)
