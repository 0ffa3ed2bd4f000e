//! Optimal (Lloyd–Max) scalar quantizers.
//!
//! - [`lloyd_max`]: the minimum-MSE 2^bits-level quantizer of a standardized
//!   density, solved once per (family, bits) from closed-form partial moments
//!   ([`moments`]) and cached; a fitted tensor scales it by its σ or b.
//! - [`lloyd_weighted`]: the same optimality conditions on a binned sample
//!   (1-D weighted k-means), to refine a codebook on data, e.g. per-group
//!   absmax-normalized weights starting from [`absmax_init`].
//! - [`implied_codebook`]: the same on the model distribution of absmax-
//!   normalized groups of a family, so that group codebooks need no storage.

mod absmax;
mod implied;
mod lloyd_max;
pub mod moments;
mod normal_quantile;
mod weighted;

pub use absmax::{absmax_init, expected_absmax};
pub use implied::implied_codebook;
pub(crate) use implied::{bin_centers, BINS};
pub use lloyd_max::{lloyd_max, solve_uncached};
pub use moments::{conditional_mean, partial_moments, Moments};
pub use normal_quantile::inverse_normal_cdf;
pub(crate) use weighted::weighted_mse;
pub use weighted::{lloyd_pinned, lloyd_weighted};

use crate::family::Family;

/// A scalar quantizer: value z maps to cell `i` = number of boundaries below z,
/// and is reproduced as `levels[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantizer {
    /// The N reproduction levels, strictly ascending.
    pub levels: Vec<f64>,
    /// The N − 1 interior cell boundaries, ascending (midpoints of the levels).
    pub boundaries: Vec<f64>,
    /// Mean squared error of the quantizer on the source it was solved for
    /// (the standardized density, or the weighted sample).
    pub mse: f64,
}

impl Quantizer {
    /// Builds the nearest-level quantizer of ascending `levels` (boundaries at
    /// the midpoints), with the given `mse`.
    pub(crate) fn from_levels(levels: Vec<f64>, mse: f64) -> Quantizer {
        let boundaries = midpoints(&levels);
        Quantizer {
            levels,
            boundaries,
            mse,
        }
    }

    /// Cell index of `z`: the number of boundaries strictly below it, so a value
    /// equal to a boundary goes to the lower cell (NaN goes to cell 0).
    /// Scalar reference for the bulk encoders.
    pub fn encode_one(&self, z: f64) -> u8 {
        let i = self.boundaries.partition_point(|&t| t < z);
        u8::try_from(i).expect("a quantizer has at most 256 levels")
    }
}

/// Midpoints of neighbouring ascending values.
pub(crate) fn midpoints(levels: &[f64]) -> Vec<f64> {
    levels.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect()
}

/// E[(X − Q(X))²] of the quantizer (`levels`, `boundaries`) on the standardized
/// `family` density, exactly from the partial moments: Σ M2 − 2yM1 + y²P.
pub fn density_mse(family: Family, levels: &[f64], boundaries: &[f64]) -> f64 {
    assert_eq!(
        levels.len(),
        boundaries.len() + 1,
        "N levels need N-1 boundaries"
    );
    let mut lo = f64::NEG_INFINITY;
    let mut sum = 0.0;
    for (i, &y) in levels.iter().enumerate() {
        let hi = boundaries.get(i).copied().unwrap_or(f64::INFINITY);
        sum += partial_moments(family, lo, hi).cell_error(y);
        lo = hi;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encode_one_ties_go_low() {
        let q = Quantizer::from_levels(vec![-1.5, -0.5, 0.5, 1.5], 0.0);
        assert_eq!(q.boundaries, vec![-1.0, 0.0, 1.0]);
        assert_eq!(q.encode_one(-7.0), 0);
        assert_eq!(q.encode_one(-1.0), 0);
        assert_eq!(q.encode_one(-0.999), 1);
        assert_eq!(q.encode_one(0.0), 1);
        assert_eq!(q.encode_one(1.0), 2);
        assert_eq!(q.encode_one(f64::INFINITY), 3);
        assert_eq!(q.encode_one(f64::NAN), 0);
    }

    #[test]
    fn density_mse_of_one_level_is_the_variance() {
        let g = density_mse(Family::Gaussian, &[0.0], &[]);
        assert!((g - 1.0).abs() < 1e-15);
        let l = density_mse(Family::Laplace, &[0.5], &[]);
        assert!((l - 2.25).abs() < 1e-14, "{l}");
    }

    proptest! {
        /// The encoded cell's level is the nearest level (ties aside).
        #[test]
        fn encode_one_picks_nearest(mut lv in proptest::collection::vec(-5.0f64..5.0, 2..16), z in -6.0f64..6.0) {
            lv.sort_by(f64::total_cmp);
            lv.dedup();
            let q = Quantizer::from_levels(lv.clone(), 0.0);
            let i = usize::from(q.encode_one(z));
            let best = lv.iter().map(|y| (y - z).abs()).fold(f64::INFINITY, f64::min);
            prop_assert!((lv[i] - z).abs() <= best + 1e-12);
        }
    }
}
