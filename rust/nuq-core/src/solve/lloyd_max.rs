//! The Lloyd–Max quantizer of a standardized density.
//!
//! The optimum satisfies two conditions: every boundary is the midpoint of its
//! neighbouring levels, every level the conditional mean of its cell. Plain
//! alternation (Lloyd's method I) contracts slowly once N is large (thousands of
//! sweeps at 8 bits), so we solve the fixed point for the boundaries directly
//! by damped Newton: the residual t_j − (y_j + y_{j+1})/2 has a tridiagonal
//! Jacobian whose entries are closed-form (∂y/∂a = f(a)(y − a)/P,
//! ∂y/∂c = f(c)(c − y)/P). Lloyd sweeps then confirm the fixed point (and take
//! over should Newton ever stall). Both densities are symmetric and
//! log-concave, so the optimum is unique and symmetric: we solve only the
//! positive half (boundary 0 fixed) and mirror it, which makes symmetry exact.

use std::sync::OnceLock;

use super::moments::scaled_moments;
use super::normal_quantile::inverse_normal_cdf;
use super::{density_mse, midpoints, Quantizer};
use crate::error::{NuqError, Result};
use crate::family::Family;

/// Stop Newton once the largest midpoint residual is this small.
const NEWTON_TOL: f64 = 1e-15;
const MAX_NEWTON_STEPS: usize = 100;
/// Step halvings before declaring Newton stalled (at the rounding floor).
const MAX_HALVINGS: u32 = 30;
/// Converged when one Lloyd sweep moves no level by more than this.
const LLOYD_TOL: f64 = 1e-13;
const MAX_LLOYD_SWEEPS: usize = 1_000_000;

/// Iteration counts of one solve, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SolveStats {
    pub newton_steps: usize,
    pub lloyd_sweeps: usize,
}

static CACHE: [[OnceLock<Quantizer>; 8]; 2] = [const { [const { OnceLock::new() }; 8] }; 2];

/// The Lloyd–Max quantizer with 2^`bits` levels of the standardized `family`
/// density (Gaussian σ = 1, Laplace b = 1), solved on first use and cached.
pub fn lloyd_max(family: Family, bits: u32) -> Result<&'static Quantizer> {
    check_bits(bits)?;
    let fam = match family {
        Family::Gaussian => 0,
        Family::Laplace => 1,
    };
    let cell = &CACHE[fam][bits as usize - 1];
    Ok(cell.get_or_init(|| solve(family, bits).0))
}

/// Solves afresh, bypassing the cache (benchmarks; otherwise use [`lloyd_max`]).
pub fn solve_uncached(family: Family, bits: u32) -> Result<Quantizer> {
    check_bits(bits)?;
    Ok(solve(family, bits).0)
}

fn check_bits(bits: u32) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(NuqError::InvalidBits(bits))
    }
}

/// Solve for valid `bits`; see the module docs.
pub(crate) fn solve(family: Family, bits: u32) -> (Quantizer, SolveStats) {
    let mut u = panter_dite_boundaries(family, bits);
    let newton_steps = newton(family, &mut u);
    let mut half = cell_means(family, &u);
    let mut lloyd_sweeps = 0;
    while lloyd_sweeps < MAX_LLOYD_SWEEPS {
        lloyd_sweeps += 1;
        let next = cell_means(family, &midpoints(&half));
        let change = max_abs_diff(&next, &half);
        half = next;
        if change < LLOYD_TOL {
            break;
        }
    }
    let levels: Vec<f64> = half
        .iter()
        .rev()
        .map(|y| -y)
        .chain(half.iter().copied())
        .collect();
    let boundaries = midpoints(&levels);
    let mse = density_mse(family, &levels, &boundaries);
    let stats = SolveStats {
        newton_steps,
        lloyd_sweeps,
    };
    (
        Quantizer {
            levels,
            boundaries,
            mse,
        },
        stats,
    )
}

/// Positive boundaries (excluding 0) from the Panter–Dite high-resolution
/// optimum: levels at the quantiles of f^(1/3) normalized, which is N(0, 3)
/// for the Gaussian and Laplace(b = 3) for the Laplace.
fn panter_dite_boundaries(family: Family, bits: u32) -> Vec<f64> {
    let n = 1usize << bits;
    let levels: Vec<f64> = (n / 2..n)
        .map(|i| {
            let p = (i as f64 + 0.5) / n as f64;
            match family {
                Family::Gaussian => 3f64.sqrt() * inverse_normal_cdf(p),
                Family::Laplace => -3.0 * (2.0 * (1.0 - p)).ln(),
            }
        })
        .collect();
    midpoints(&levels)
}

/// Conditional means of the positive cells [0, u_1], …, [u_K, ∞).
fn cell_means(family: Family, u: &[f64]) -> Vec<f64> {
    cell_ends(u)
        .map(|(a, c)| {
            let s = scaled_moments(family, a, c);
            (s.m1 / s.p).clamp(a, c)
        })
        .collect()
}

fn cell_ends(u: &[f64]) -> impl Iterator<Item = (f64, f64)> + '_ {
    let lo = std::iter::once(0.0).chain(u.iter().copied());
    let hi = u.iter().copied().chain(std::iter::once(f64::INFINITY));
    lo.zip(hi)
}

fn max_abs_diff(x: &[f64], y: &[f64]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// Midpoint residuals F_j = u_j − (y_j + y_{j+1})/2 and the tridiagonal
/// Jacobian (sub, diag, sup) of F with respect to u.
struct Linearized {
    residual: Vec<f64>,
    sub: Vec<f64>,
    diag: Vec<f64>,
    sup: Vec<f64>,
}

fn linearize(family: Family, u: &[f64]) -> Linearized {
    // Per cell: mean, ∂mean/∂(lower end), ∂mean/∂(upper end).
    let cells: Vec<(f64, f64, f64)> = cell_ends(u)
        .map(|(a, c)| {
            let s = scaled_moments(family, a, c);
            let y = (s.m1 / s.p).clamp(a, c);
            let d_lo = s.fa * (y - a) / s.p;
            let d_hi = if c.is_finite() {
                s.fc * (c - y) / s.p
            } else {
                0.0
            };
            (y, d_lo, d_hi)
        })
        .collect();
    let k = u.len();
    let mut lin = Linearized {
        residual: Vec::with_capacity(k),
        sub: vec![0.0; k],
        diag: Vec::with_capacity(k),
        sup: vec![0.0; k],
    };
    for j in 0..k {
        let (left, right) = (cells[j], cells[j + 1]);
        lin.residual.push(u[j] - 0.5 * (left.0 + right.0));
        lin.diag.push(1.0 - 0.5 * (left.2 + right.1));
        if j > 0 {
            lin.sub[j] = -0.5 * left.1;
        }
        if j + 1 < k {
            lin.sup[j] = -0.5 * right.2;
        }
    }
    lin
}

/// Solves the tridiagonal system J x = rhs (Thomas algorithm; J is close to
/// the identity here, so no pivoting is needed).
fn solve_tridiagonal(lin: &Linearized, rhs: &[f64]) -> Vec<f64> {
    let k = rhs.len();
    let mut c = vec![0.0; k];
    let mut x = vec![0.0; k];
    for j in 0..k {
        let m = lin.diag[j] - if j > 0 { lin.sub[j] * c[j - 1] } else { 0.0 };
        c[j] = lin.sup[j] / m;
        x[j] = (rhs[j] - if j > 0 { lin.sub[j] * x[j - 1] } else { 0.0 }) / m;
    }
    for j in (0..k.saturating_sub(1)).rev() {
        x[j] -= c[j] * x[j + 1];
    }
    x
}

fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Damped Newton on the midpoint residual; returns the number of accepted
/// steps. Stops when converged or when no damped step reduces the residual
/// (the rounding floor, or a stall that the Lloyd sweeps will then finish).
fn newton(family: Family, u: &mut Vec<f64>) -> usize {
    let mut lin = linearize(family, u);
    let mut norm = max_abs(&lin.residual);
    for step in 0..MAX_NEWTON_STEPS {
        if norm <= NEWTON_TOL || !norm.is_finite() {
            return step;
        }
        let neg: Vec<f64> = lin.residual.iter().map(|r| -r).collect();
        let delta = solve_tridiagonal(&lin, &neg);
        let mut lambda = 1.0;
        let accepted = (0..MAX_HALVINGS).find_map(|_| {
            let trial: Vec<f64> = u.iter().zip(&delta).map(|(x, d)| x + lambda * d).collect();
            lambda *= 0.5;
            if !is_increasing_positive(&trial) {
                return None;
            }
            let trial_lin = linearize(family, &trial);
            let trial_norm = max_abs(&trial_lin.residual);
            (trial_norm < norm).then_some((trial, trial_lin, trial_norm))
        });
        match accepted {
            Some((trial, trial_lin, trial_norm)) => {
                *u = trial;
                lin = trial_lin;
                norm = trial_norm;
            }
            None => return step,
        }
    }
    MAX_NEWTON_STEPS
}

fn is_increasing_positive(u: &[f64]) -> bool {
    u.iter().all(|&x| x > 0.0 && x.is_finite()) && u.windows(2).all(|w| w[0] < w[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solve::moments::conditional_mean;

    /// Unit-variance optimum MSE, 1..4 bits: Max (1960) and Paez & Glisson (1972).
    const MAX_1960: [f64; 4] = [0.3634, 0.1175, 0.03454, 0.009497];
    const PAEZ_GLISSON_1972: [f64; 4] = [0.5000, 0.1762, 0.05448, 0.01537];

    fn rel(x: f64, y: f64) -> f64 {
        (x / y - 1.0).abs()
    }

    #[test]
    fn reproduces_published_mse_tables() {
        for bits in 1..=4u32 {
            let g = lloyd_max(Family::Gaussian, bits).unwrap().mse;
            assert!(
                rel(g, MAX_1960[bits as usize - 1]) < 1e-3,
                "gauss {bits}: {g}"
            );
            // Laplace b = 1 has variance 2; the table is for variance 1.
            let l = lloyd_max(Family::Laplace, bits).unwrap().mse / 2.0;
            let want = PAEZ_GLISSON_1972[bits as usize - 1];
            assert!(rel(l, want) < 1e-3, "laplace {bits}: {l}");
        }
    }

    #[test]
    fn reproduces_published_gaussian_levels() {
        let close = |got: &[f64], want: &[f64]| {
            got.iter().zip(want).all(|(g, w)| (g - w).abs() < 6e-4) && got.len() == want.len()
        };
        let q2 = lloyd_max(Family::Gaussian, 2).unwrap();
        assert!(
            close(&q2.levels, &[-1.510, -0.4528, 0.4528, 1.510]),
            "{q2:?}"
        );
        assert!(close(&q2.boundaries, &[-0.9816, 0.0, 0.9816]), "{q2:?}");
        let q3 = lloyd_max(Family::Gaussian, 3).unwrap();
        let want = [
            -2.152, -1.344, -0.7560, -0.2451, 0.2451, 0.7560, 1.344, 2.152,
        ];
        assert!(close(&q3.levels, &want), "{q3:?}");
    }

    #[test]
    fn optimality_conditions_hold_for_every_width() {
        for fam in Family::ALL {
            for bits in 1..=8u32 {
                let q = lloyd_max(fam, bits).unwrap();
                let n = 1usize << bits;
                assert_eq!(q.levels.len(), n);
                assert_eq!(q.boundaries.len(), n - 1);
                assert!(q.levels.windows(2).all(|w| w[0] < w[1]), "{fam:?} {bits}");
                for i in 0..n {
                    assert_eq!(q.levels[i], -q.levels[n - 1 - i], "{fam:?} {bits}");
                }
                assert_eq!(q.boundaries[n / 2 - 1], 0.0);
                for (i, t) in q.boundaries.iter().enumerate() {
                    assert_eq!(*t, 0.5 * (q.levels[i] + q.levels[i + 1]));
                }
                let mut lo = f64::NEG_INFINITY;
                for (i, &y) in q.levels.iter().enumerate() {
                    let hi = q.boundaries.get(i).copied().unwrap_or(f64::INFINITY);
                    let m = conditional_mean(fam, lo, hi);
                    assert!((m - y).abs() < 1e-12, "{fam:?} {bits} cell {i}: {m} vs {y}");
                    lo = hi;
                }
            }
        }
    }

    #[test]
    fn mse_falls_about_fourfold_per_bit_towards_panter_dite() {
        // High-resolution limit N²·MSE -> (∫f^(1/3))³/12: √3π/2 (Gaussian), 9 (Laplace b=1).
        for (fam, limit) in [
            (Family::Gaussian, 3f64.sqrt() * std::f64::consts::PI / 2.0),
            (Family::Laplace, 9.0),
        ] {
            let mse: Vec<f64> = (1..=8).map(|b| lloyd_max(fam, b).unwrap().mse).collect();
            assert!(mse.windows(2).all(|w| w[1] < w[0]), "{fam:?} {mse:?}");
            for b in 5..8 {
                let ratio = mse[b - 1] / mse[b];
                assert!(
                    (3.6..4.1).contains(&ratio),
                    "{fam:?} {b}->{}: {ratio}",
                    b + 1
                );
            }
            let scaled = mse[7] * 65536.0;
            assert!(
                scaled < limit && rel(scaled, limit) < 0.05,
                "{fam:?}: {scaled} vs {limit}"
            );
        }
    }

    #[test]
    fn is_a_local_minimum() {
        for fam in Family::ALL {
            let q = lloyd_max(fam, 3).unwrap();
            for i in 0..q.levels.len() {
                for h in [-1e-3, 1e-3] {
                    let mut lv = q.levels.clone();
                    lv[i] += h;
                    let b = midpoints(&lv);
                    assert!(density_mse(fam, &lv, &b) > q.mse, "{fam:?} level {i} {h}");
                }
            }
        }
    }

    #[test]
    fn newton_converges_in_few_steps() {
        for fam in Family::ALL {
            for bits in 1..=8u32 {
                let (q, st) = solve(fam, bits);
                assert!(st.newton_steps <= 12, "{fam:?} {bits}: {st:?}");
                assert!(st.lloyd_sweeps <= 3, "{fam:?} {bits}: {st:?}");
                assert_eq!(&q, lloyd_max(fam, bits).unwrap());
            }
        }
    }

    #[test]
    fn cache_and_validation() {
        let a = lloyd_max(Family::Laplace, 5).unwrap();
        let b = lloyd_max(Family::Laplace, 5).unwrap();
        assert!(std::ptr::eq(a, b));
        assert_eq!(
            lloyd_max(Family::Gaussian, 0),
            Err(NuqError::InvalidBits(0))
        );
        assert_eq!(
            solve_uncached(Family::Gaussian, 9),
            Err(NuqError::InvalidBits(9))
        );
    }
}
