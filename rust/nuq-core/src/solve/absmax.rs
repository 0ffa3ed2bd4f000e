//! Starting codebook for per-group absmax-normalized weights.
//!
//! A group of g weights divided by its largest magnitude lies in [−1, 1], with
//! one value at exactly ±1 and the rest spread like X / max|X|. The typical
//! divisor is E[max of g |X|], so the Lloyd–Max levels divided by it approximate
//! the optimum for the bulk, and levels at ±1 reproduce the group maximum
//! exactly. The result seeds [`super::lloyd_weighted`].

use super::lloyd_max::lloyd_max;
use crate::error::{NuqError, Result};
use crate::family::Family;

/// Steps per unit length of the Simpson rule for E[max |X|]; the integrand
/// varies on a scale of at least ~0.1, so this is far below 1e-12 error.
const STEPS_PER_UNIT: f64 = 256.0;

/// E[max(|X_1|, …, |X_g|)] for g iid draws of the standardized `family`
/// (H_g, the harmonic number, for Laplace b = 1). Computed as
/// ∫_0^∞ 1 − P(|X| <= m)^g dm with Simpson's rule; `group_size` 0 gives 0.
pub fn expected_absmax(family: Family, group_size: usize) -> f64 {
    if group_size == 0 {
        return 0.0;
    }
    let g = group_size as f64;
    // Beyond `upper` the integrand, ~ g·P(|X| > m), is below 1e-18.
    let upper = match family {
        Family::Gaussian => 14.0,
        Family::Laplace => g.ln() + 42.0,
    };
    let n = 2 * ((upper * STEPS_PER_UNIT / 2.0).ceil() as usize);
    let h = upper / n as f64;
    // 1 − (1 − 2 sf(m))^g without cancellation when g·sf(m) is tiny.
    let integrand = |m: f64| -(g * (-2.0 * family.sf(m)).ln_1p()).exp_m1();
    let inner: f64 = (1..n)
        .map(|i| {
            let w = if i % 2 == 1 { 4.0 } else { 2.0 };
            w * integrand(i as f64 * h)
        })
        .sum();
    (integrand(0.0) + inner + integrand(upper)) * h / 3.0
}

/// A starting codebook of 2^`bits` ascending levels in [−1, 1] for the values
/// x / max|x| of a group of `group_size` iid draws of `family`: levels ±1 for
/// the group maximum, and in between the Lloyd–Max levels divided by
/// E[max |X|]. Inner levels that this puts at or beyond ±1 (small groups, high
/// bits, heavy tails) are clamped, then spread evenly between the last one
/// inside and ±1, so the levels stay distinct and exactly symmetric.
pub fn absmax_init(family: Family, bits: u32, group_size: usize) -> Result<Vec<f64>> {
    let lm = lloyd_max(family, bits)?;
    if group_size == 0 {
        return Err(NuqError::InvalidGroupSize {
            group_size,
            row_len: 0,
        });
    }
    let half = lm.levels.len() / 2;
    let scale = 1.0 / expected_absmax(family, group_size);
    // Positive half, ascending; the last level becomes the group maximum.
    let mut pos: Vec<f64> = lm.levels[half..].iter().map(|y| y * scale).collect();
    pos[half - 1] = 1.0;
    let first_out = pos[..half - 1].partition_point(|&v| v < 1.0);
    let start = if first_out == 0 {
        0.0
    } else {
        pos[first_out - 1]
    };
    let gaps = (half - first_out) as f64;
    for (k, v) in pos[first_out..half - 1].iter_mut().enumerate() {
        *v = start + (1.0 - start) * (k + 1) as f64 / gaps;
    }
    Ok(pos
        .iter()
        .rev()
        .map(|v| -v)
        .chain(pos.iter().copied())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solve::inverse_normal_cdf;
    use crate::solve::lloyd_weighted;

    #[test]
    fn expected_absmax_known_values() {
        // g = 1: E|X| = sqrt(2/π) (Gaussian), 1 (Laplace).
        let g1 = expected_absmax(Family::Gaussian, 1);
        assert!(
            (g1 - (2.0 / std::f64::consts::PI).sqrt()).abs() < 1e-10,
            "{g1}"
        );
        // Laplace: |X| ~ Exp(1), whose maximum of g has mean H_g.
        for g in [1usize, 2, 10, 1000, 100_000] {
            let h: f64 = (1..=g).rev().map(|k| 1.0 / k as f64).sum();
            let e = expected_absmax(Family::Laplace, g);
            assert!((e - h).abs() < 1e-9, "g={g}: {e} vs {h}");
        }
        // Gaussian max grows like sqrt(2 ln 2g), below it, and increases with g.
        let e = |g| expected_absmax(Family::Gaussian, g);
        assert!(e(2) > e(1) && e(64) > e(2) && e(4096) > e(64));
        assert!(e(4096) < (2.0 * (8192f64).ln()).sqrt() && e(4096) > 3.3);
        assert_eq!(expected_absmax(Family::Gaussian, 0), 0.0);
    }

    #[test]
    fn init_is_a_valid_codebook() {
        for fam in Family::ALL {
            for bits in 1..=8 {
                for g in [1, 2, 8, 64, 4096] {
                    let lv = absmax_init(fam, bits, g).unwrap();
                    let n = lv.len();
                    assert_eq!(n, 1 << bits);
                    assert_eq!((lv[0], lv[n - 1]), (-1.0, 1.0));
                    assert!(lv.windows(2).all(|w| w[0] < w[1]), "{fam:?} {bits} {g}");
                    assert!((0..n).all(|i| lv[i] == -lv[n - 1 - i]));
                    if n > 2 {
                        assert!(lv[n - 2] < 1.0, "{fam:?} {bits} {g}");
                    }
                }
            }
        }
        assert!(absmax_init(Family::Gaussian, 9, 64).is_err());
        assert!(absmax_init(Family::Gaussian, 4, 0).is_err());
    }

    /// splitmix64 → uniform (0, 1), deterministic.
    fn uniforms(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
    }

    /// Groups of 64 draws of 0.7·N(0, 1) + 0.3·Laplace(b = 1), divided by each
    /// group's absmax and binned into 4096 bins on [−1, 1] (centroid, count).
    fn binned_absmax_sample() -> (Vec<f64>, Vec<f64>) {
        const BINS: usize = 4096;
        let mut u = uniforms(7);
        let (mut sum, mut count) = (vec![0.0; BINS], vec![0.0; BINS]);
        let mut group = [0.0f64; 64];
        for _ in 0..3000 {
            for x in group.iter_mut() {
                let (pick, v) = (u(), u());
                *x = if pick < 0.7 {
                    inverse_normal_cdf(v)
                } else if v < 0.5 {
                    (2.0 * v).ln()
                } else {
                    -(2.0 * (1.0 - v)).ln()
                };
            }
            let m = group.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            for x in group {
                let z = x / m;
                let b = (((z + 1.0) * 0.5 * BINS as f64) as usize).min(BINS - 1);
                sum[b] += z;
                count[b] += 1.0;
            }
        }
        (0..BINS)
            .filter(|&b| count[b] > 0.0)
            .map(|b| (sum[b] / count[b], count[b]))
            .unzip()
    }

    #[test]
    fn refined_beats_init_and_uniform_grid() {
        let (points, weights) = binned_absmax_sample();
        for fam in Family::ALL {
            for bits in 2..=5u32 {
                let n = 1usize << bits;
                let init = absmax_init(fam, bits, 64).unwrap();
                let at_init = lloyd_weighted(&points, &weights, &init, 0).mse;
                let refined = lloyd_weighted(&points, &weights, &init, 500).mse;
                let grid: Vec<f64> = (0..n)
                    .map(|i| -1.0 + 2.0 * i as f64 / (n - 1) as f64)
                    .collect();
                let uniform = lloyd_weighted(&points, &weights, &grid, 0).mse;
                assert!(refined <= at_init, "{fam:?} {bits}: {refined} > {at_init}");
                assert!(refined < uniform, "{fam:?} {bits}: {refined} >= {uniform}");
                if fam == Family::Gaussian {
                    // The matching family's start already beats the uniform grid.
                    assert!(at_init < uniform, "{bits}: {at_init} >= {uniform}");
                }
            }
        }
    }
}
