//! The two densities the quantizer chooses between, in standardized form:
//! the standard normal (μ = 0, σ = 1) and the Laplace with μ = 0, b = 1.
//! Fitted densities are these shifted by a location and scaled by a scale.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// A bell-shaped family of weight densities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Normal: location = mean, scale = standard deviation.
    Gaussian,
    /// Laplace: location = median, scale = b = mean absolute deviation from the median.
    Laplace,
}

impl Family {
    /// Both families, Gaussian first (it wins ties).
    pub const ALL: [Family; 2] = [Family::Gaussian, Family::Laplace];

    /// Lower-case name, as reported to users.
    pub fn name(self) -> &'static str {
        match self {
            Family::Gaussian => "gaussian",
            Family::Laplace => "laplace",
        }
    }

    /// Standardized density at `z`.
    pub fn pdf(self, z: f64) -> f64 {
        match self {
            Family::Gaussian => (-0.5 * z * z).exp() / (2.0 * PI).sqrt(),
            Family::Laplace => 0.5 * (-z.abs()).exp(),
        }
    }

    /// Standardized cumulative distribution at `z`, accurate in both tails
    /// (no `1 - small` cancellation).
    pub fn cdf(self, z: f64) -> f64 {
        match self {
            Family::Gaussian => 0.5 * libm::erfc(-z * FRAC_1_SQRT_2),
            Family::Laplace => {
                if z < 0.0 {
                    0.5 * z.exp()
                } else {
                    1.0 - 0.5 * (-z).exp()
                }
            }
        }
    }

    /// Upper tail `P(Z > z)` of the standardized density, accurate for large `z`.
    pub fn sf(self, z: f64) -> f64 {
        self.cdf(-z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_matches_known_values() {
        // Φ(1.959963984540054) = 0.975 (two-sided 95% point).
        let g = Family::Gaussian.cdf(1.959963984540054);
        assert!((g - 0.975).abs() < 1e-14, "{g}");
        assert_eq!(Family::Gaussian.cdf(0.0), 0.5);
        assert_eq!(Family::Laplace.cdf(0.0), 0.5);
        let l = Family::Laplace.cdf(2.0);
        assert!((l - (1.0 - 0.5 * (-2.0f64).exp())).abs() < 1e-15);
    }

    #[test]
    fn tails_do_not_cancel() {
        // Φ(-10) ≈ 7.6198530241605e-24: a difference of numbers near 1 would give 0.
        let t = Family::Gaussian.sf(10.0);
        assert!((t / 7.619_853_024_160_527e-24 - 1.0).abs() < 1e-10, "{t}");
        assert!(Family::Laplace.sf(40.0) > 0.0);
    }

    #[test]
    fn pdf_integrates_to_one() {
        for fam in Family::ALL {
            let h = 1e-3;
            let s: f64 = (-40_000..40_000).map(|i| fam.pdf(i as f64 * h) * h).sum();
            assert!((s - 1.0).abs() < 1e-6, "{fam:?}: {s}");
        }
    }
}
