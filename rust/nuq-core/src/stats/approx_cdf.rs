//! A fast cdf for bounds, within [`APPROX_ERR`] of [`Family::cdf`]
//! everywhere. The pruning of the KS statistic evaluates the cdf at tens of
//! thousands of bucket and cell edges per fit only to bound terms; the exact
//! terms keep `Family::cdf`. The Gaussian's is a cubic Hermite interpolation
//! between table points `1/128` apart (a few times cheaper than `erfc`);
//! the Laplace's `exp` is as fast as a table, so it is the exact cdf.
//!
//! Error: the Hermite cubic through `f` and `f'` at both ends of a step `h`
//! is within `max |f''''| h^4 / 384` of `f`; `Φ'''' = -(z^3 - 3z) φ(z)` is at
//! most 0.56 in size, so 5.4e-12 at `h = 1/128`. Past the table (|z| > 9)
//! the cdf is within 1.2e-19 of 0 or 1. Rounding in the table and the
//! evaluation adds a few ulps of 1.

use std::sync::OnceLock;

use crate::Family;

/// Most the approximation can differ from [`Family::cdf`] (ten times the
/// bounds above, for rounding).
pub(crate) const APPROX_ERR: f64 = 1e-10;

/// Table steps per unit of `z`.
const PER_UNIT: f64 = 128.0;
/// The Gaussian table covers `[-GAUSS_END, GAUSS_END]`.
const GAUSS_END: f64 = 9.0;

/// Per step `k` of a function from `start` (steps of `1 / PER_UNIT`): the
/// Hermite cubic through its values and slopes at both ends, in powers of
/// the position `t` in `[0, 1]` within the step.
pub(crate) struct Table {
    start: f64,
    cubic: Vec<[f64; 4]>,
}

impl Table {
    /// `f(x) = (value, slope)`.
    fn new(start: f64, end: f64, f: impl Fn(f64) -> (f64, f64)) -> Self {
        let steps = ((end - start) * PER_UNIT) as usize;
        let ends: Vec<(f64, f64)> = (0..=steps)
            .map(|k| f(start + k as f64 / PER_UNIT))
            .collect();
        let cubic = ends
            .windows(2)
            .map(|w| {
                let ((f0, s0), (f1, s1)) = (w[0], w[1]);
                let (d0, d1) = (s0 / PER_UNIT, s1 / PER_UNIT);
                [
                    f0,
                    d0,
                    3.0 * (f1 - f0) - 2.0 * d0 - d1,
                    2.0 * (f0 - f1) + d0 + d1,
                ]
            })
            .collect();
        Table { start, cubic }
    }

    /// The cubic at `x`, which must lie within the table.
    #[inline]
    fn at(&self, x: f64) -> f64 {
        let pos = (x - self.start) * PER_UNIT;
        let k = (pos as usize).min(self.cubic.len() - 1);
        let t = pos - k as f64;
        let [c0, c1, c2, c3] = self.cubic[k];
        c0 + t * (c1 + t * (c2 + t * c3))
    }
}

fn gauss() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        Table::new(-GAUSS_END, GAUSS_END, |z| {
            (Family::Gaussian.cdf(z), Family::Gaussian.pdf(z))
        })
    })
}

/// The standardized cdf of a family within [`APPROX_ERR`], its table looked
/// up once.
#[derive(Clone, Copy)]
pub(crate) enum ApproxCdf {
    Gaussian(&'static Table),
    Laplace,
}

impl ApproxCdf {
    pub(crate) fn new(family: Family) -> Self {
        match family {
            Family::Gaussian => ApproxCdf::Gaussian(gauss()),
            Family::Laplace => ApproxCdf::Laplace,
        }
    }

    /// The cdf at `z`, within [`APPROX_ERR`].
    #[inline]
    pub(crate) fn at(self, z: f64) -> f64 {
        match self {
            ApproxCdf::Gaussian(t) => {
                if z <= -GAUSS_END {
                    0.0
                } else if z >= GAUSS_END {
                    1.0
                } else {
                    t.at(z)
                }
            }
            ApproxCdf::Laplace => Family::Laplace.cdf(z),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn worst(family: Family, zs: impl Iterator<Item = f64>) -> f64 {
        zs.map(|z| (ApproxCdf::new(family).at(z) - family.cdf(z)).abs())
            .fold(0.0, f64::max)
    }

    /// A dense sweep (16 points per table step, both ends, beyond the
    /// tables): the error stays well inside the bound it is used with.
    #[test]
    fn within_the_bound_everywhere() {
        let sweep = || (-50 * 2048..=50 * 2048).map(|k| k as f64 / 2048.0);
        for family in Family::ALL {
            let e = worst(family, sweep());
            assert!(e < APPROX_ERR / 5.0, "{family:?}: {e:e}");
        }
        // The interpolation is not the table: midpoints are off the grid.
        let mid = 0.5 / PER_UNIT - 0.3;
        assert_ne!(
            ApproxCdf::new(Family::Gaussian).at(mid),
            Family::Gaussian.cdf(mid)
        );
    }

    proptest! {
        #[test]
        fn within_the_bound_anywhere(z in -60.0f64..60.0) {
            for family in Family::ALL {
                let e = (ApproxCdf::new(family).at(z) - family.cdf(z)).abs();
                prop_assert!(e < APPROX_ERR / 5.0, "{:?} at {}: {:e}", family, z, e);
            }
        }
    }
}
