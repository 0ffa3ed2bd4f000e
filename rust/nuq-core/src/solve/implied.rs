//! The implied codebook of group granularity: the Lloyd–Max quantizer of the
//! values x / max|x| of a group of `g` iid draws of a standardized family.
//!
//! It is a pure function of (family, bits, g), computed by a fixed sequence of
//! f64 operations and rounded to f16, so a decoder recomputes exactly the
//! codebook the encoder used and a file stores none: the storage of a group
//! tensor is the codes plus one f16 scale per group, as NF4's.
//!
//! The error is measured on the real weights, so a group counts with its
//! squared scale M² (M = its absmax). A weight that is its group's maximum sits
//! at ±1 (an atom of weight E[M_g²] / 2g per side, M_g the max of g |X|); any
//! other weight is X / M' with M' the max of the other g − 1 magnitudes, which
//! gives the weighted density on (−1, 1)
//! p(y) = ∫ f_{M'}(m) · m² · m f(y m) dm, f_{M'} = (g − 1) h H^{g−2}
//! (h, H: density and cdf of |X|). It is discretized on the bins that group
//! quantization uses for the data, then solved by [`lloyd_weighted`] from
//! [`absmax_init`].

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use half::f16;

use super::{absmax_init, lloyd_weighted};
use crate::error::Result;
use crate::family::Family;

/// Bins of the normalised values on [−1, 1]; odd so that −1, 0 and +1 are
/// bin centres (absmax scaling puts a weight exactly on ±1 in every group).
pub(crate) const BINS: usize = 4097;
/// Lloyd iterations (the sweep stops earlier at its fixed point).
const LLOYD_ITERS: usize = 200;
/// Simpson steps per unit of m: the integrands vary on a scale of ~0.3 or
/// more, and the codebook is rounded to f16 (relative 5e-4) in the end.
const STEPS_PER_UNIT: f64 = 32.0;

type Key = (Family, u32, usize);

/// The implied codebook (2^`bits` ascending f16 values as f32, within
/// [−1, 1]) of groups of `group_size` weights of `family`; solved on first use
/// and cached. Fails on bits outside 1..=8 or a group size of 0.
pub fn implied_codebook(family: Family, bits: u32, group_size: usize) -> Result<Vec<f32>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Vec<f32>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (family, bits, group_size);
    // Only valid keys are ever stored, so a hit needs no checks (and skips
    // the starting codebook's integral).
    if let Some(levels) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(levels.clone());
    }
    // Solved outside the lock: a race only solves the same codebook twice.
    let levels = solve_implied(family, bits, group_size)?;
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, levels.clone());
    Ok(levels)
}

/// The implied codebook solved afresh (what [`implied_codebook`] caches).
fn solve_implied(family: Family, bits: u32, group_size: usize) -> Result<Vec<f32>> {
    let init = absmax_init(family, bits, group_size)?;
    let (centers, weights) = model_histogram(family, group_size);
    let solved = lloyd_weighted(&centers, &weights, &init, LLOYD_ITERS).levels;
    // The sweep sends the point on a boundary (0, for an even count) to the
    // lower cell, which tilts the fixed point slightly; the source is
    // symmetric, so average each level with its mirror.
    let n = solved.len();
    let levels: Vec<f32> = (0..n)
        .map(|i| f16::from_f64(0.5 * (solved[i] - solved[n - 1 - i])).to_f32())
        .collect();
    Ok(levels)
}

/// The `BINS` centres on [−1, 1], ascending.
pub(crate) fn bin_centers() -> Vec<f64> {
    let half = ((BINS - 1) / 2) as f64;
    (0..BINS).map(|k| k as f64 / half - 1.0).collect()
}

/// The M²-weighted distribution of x / max|x| over the bins: interior bins by
/// the midpoint rule on p(y), the end bins also take the atoms at ±1.
/// Symmetric by construction (computed on y >= 0 and mirrored).
pub(crate) fn model_histogram(family: Family, g: usize) -> (Vec<f64>, Vec<f64>) {
    let centers = bin_centers();
    let width = centers[1] - centers[0];
    let grid = MGrid::new(family, g);
    let mid = (BINS - 1) / 2;
    let mut weights = vec![0f64; BINS];
    for k in mid..BINS {
        let y = centers[k];
        let density = if g > 1 {
            grid.simpson(|m, h, big_h| {
                (g - 1) as f64 * h * big_h.powi(g as i32 - 2) * m.powi(3) * family.pdf(y * m)
            })
        } else {
            0.0
        };
        weights[k] = if k == BINS - 1 { 0.5 } else { 1.0 } * width * density;
        weights[BINS - 1 - k] = weights[k];
    }
    let atom = 0.5 * grid.simpson(|m, h, big_h| h * big_h.powi(g as i32 - 1) * m * m);
    weights[0] += atom;
    weights[BINS - 1] += atom;
    (centers, weights)
}

/// Simpson nodes on m ∈ [0, upper] with the density h and cdf H of |X| there.
struct MGrid {
    step: f64,
    nodes: Vec<(f64, f64, f64)>,
}

impl MGrid {
    fn new(family: Family, g: usize) -> MGrid {
        // Beyond `upper` every integrand is below ~1e-15 of its mass.
        let upper = match family {
            Family::Gaussian => 14.0,
            Family::Laplace => (g as f64).ln() + 40.0,
        };
        let n = 2 * ((upper * STEPS_PER_UNIT / 2.0).ceil() as usize);
        let step = upper / n as f64;
        let nodes = (0..=n)
            .map(|i| {
                let m = i as f64 * step;
                (m, 2.0 * family.pdf(m), 1.0 - 2.0 * family.sf(m))
            })
            .collect();
        MGrid { step, nodes }
    }

    /// ∫ f(m, h(m), H(m)) dm over the grid.
    fn simpson(&self, f: impl Fn(f64, f64, f64) -> f64) -> f64 {
        let last = self.nodes.len() - 1;
        let sum: f64 = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, &(m, h, big_h))| {
                let w = if i == 0 || i == last {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                w * f(m, h, big_h)
            })
            .sum();
        sum * self.step / 3.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solve::{expected_absmax, weighted::weighted_mse};

    /// The total weight is E[M_g²] and the atoms carry E[M_g²] / g of it.
    #[test]
    fn histogram_mass_is_the_mean_squared_absmax() {
        for family in Family::ALL {
            for g in [1usize, 2, 8, 64, 256] {
                let (_, w) = model_histogram(family, g);
                let grid = MGrid::new(family, g);
                let e_m2 = grid.simpson(|m, h, hh| g as f64 * h * hh.powi(g as i32 - 1) * m * m);
                let total: f64 = w.iter().sum();
                assert!(
                    (total - e_m2).abs() < 2e-3 * e_m2,
                    "{family:?} {g}: {total} vs {e_m2}"
                );
                // E[M_g] agrees with the independent Simpson rule of absmax.rs.
                let e_m = grid.simpson(|m, h, hh| g as f64 * h * hh.powi(g as i32 - 1) * m);
                let want = expected_absmax(family, g);
                assert!(
                    (e_m - want).abs() < 1e-6 * want,
                    "{family:?} {g}: {e_m} vs {want}"
                );
            }
        }
    }

    #[test]
    fn codebook_is_symmetric_ascending_f16_within_unit_range() {
        for family in Family::ALL {
            for bits in 1..=8 {
                for g in [2usize, 7, 64] {
                    let l = implied_codebook(family, bits, g).unwrap();
                    assert_eq!(l.len(), 1 << bits);
                    // Strictly ascending unless f16 cannot separate levels
                    // crowded at ±1 (many bits, tiny groups).
                    let strict = bits <= 4 || g >= 64;
                    assert!(
                        l.windows(2).all(|p| p[0] < p[1] || !strict && p[0] == p[1]),
                        "{family:?} {bits} {g}: {l:?}"
                    );
                    assert!(l
                        .iter()
                        .all(|v| v.abs() <= 1.0 && f16::from_f32(*v).to_f32() == *v));
                    let mirrored: Vec<f32> = l.iter().rev().map(|v| -v).collect();
                    assert_eq!(l, mirrored, "{family:?} {bits} {g}");
                }
            }
        }
        assert!(implied_codebook(Family::Gaussian, 9, 64).is_err());
        assert!(implied_codebook(Family::Gaussian, 4, 0).is_err());
    }

    /// Lloyd only lowers the model error below the starting codebook's, and
    /// the cached result is what a fresh solve gives.
    #[test]
    fn solved_codebook_beats_the_starting_one() {
        for family in Family::ALL {
            let (c, w) = model_histogram(family, 64);
            let init = absmax_init(family, 4, 64).unwrap();
            let solved: Vec<f64> = implied_codebook(family, 4, 64)
                .unwrap()
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let (before, after) = (weighted_mse(&c, &w, &init), weighted_mse(&c, &w, &solved));
            assert!(after < 0.97 * before, "{family:?}: {after} vs {before}");
            // The first call may have solved and stored it; this one reads
            // the cache (filled for both families by now).
            assert_eq!(
                implied_codebook(family, 4, 64).unwrap(),
                solve_implied(family, 4, 64).unwrap()
            );
        }
    }
}
