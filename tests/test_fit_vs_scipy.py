"""The Kolmogorov–Smirnov statistics and the family choice against scipy.stats.kstest."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

import nuq_rs


def scipy_ks(x: np.ndarray) -> tuple[float, float]:
    """D against the fitted Gaussian (mean, std) and Laplace (median, mean |x - median|)."""
    x = x.astype(np.float64).ravel()
    med = np.median(x)
    d_g = stats.kstest(x, "norm", args=(x.mean(), x.std())).statistic
    d_l = stats.kstest(x, "laplace", args=(med, np.abs(x - med).mean())).statistic
    return d_g, d_l


def check(x: np.ndarray) -> nuq_rs.QuantizedTensor:
    q = nuq_rs.quantize_tensor(x, bits=4)
    if np.ptp(x) == 0:
        # scipy gives NaN for a zero scale; a point mass fitted by a degenerate
        # density is a perfect fit.
        assert (q.d_gaussian, q.d_laplace, q.family) == (0.0, 0.0, "gaussian")
        return q
    d_g, d_l = scipy_ks(x)
    # Within the tolerance the Rust core brackets D to (plus scipy's and our
    # cdf roundings, far below it).
    tol = nuq_rs.KS_TOLERANCE + 1e-9
    assert q.d_gaussian == pytest.approx(d_g, abs=tol)
    assert q.d_laplace == pytest.approx(d_l, abs=tol)
    assert q.family == ("gaussian" if d_g <= d_l else "laplace")
    return q


@pytest.mark.parametrize(
    "draw",
    [
        lambda r, n: r.standard_normal(n),
        lambda r, n: r.laplace(size=n),
        lambda r, n: r.standard_t(3, size=n),
        lambda r, n: r.uniform(-1, 1, n),
        lambda r, n: np.round(r.standard_normal(n) * 4) / 4,  # heavy ties
    ],
    ids=["normal", "laplace", "student-t3", "uniform", "ties"],
)
@pytest.mark.parametrize("n", [1, 2, 3, 100, 10_000, 1_000_000])
def test_ks_matches_scipy(rng, draw, n):
    x = (draw(rng, n) * 0.05 + 0.01).astype(np.float32).reshape(1, n)
    check(x)


def test_family_choice_follows_the_shape(rng):
    assert check(rng.standard_normal((256, 256)).astype(np.float32)).family == "gaussian"
    assert check(rng.laplace(size=(256, 256)).astype(np.float32)).family == "laplace"


def test_ks_on_ten_million_weights(rng):
    """All elements count: no sub-sampling, even at 10^7+ weights."""
    x = (rng.standard_normal(10_500_000) * 0.02).astype(np.float32)
    x[::7] = rng.laplace(size=x[::7].size) * 0.02
    check(x.reshape(3500, 3000))


def test_ks_on_real_pretrained_weights(real_weight_matrices):
    families = [check(w).family for w in real_weight_matrices.values()]
    # The 19 weight tensors of MTCNN's three nets; both families win on some
    # (14 Laplace, 5 Gaussian when written), each as scipy's statistics say.
    assert len(families) == 19
    assert set(families) == {"gaussian", "laplace"}


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 8), st.integers(1, 64)),
        elements=st.floats(-1e3, 1e3, width=32),
    )
)
def test_ks_matches_scipy_on_arbitrary_data(x):
    check(x)
