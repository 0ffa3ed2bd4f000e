//! Closed-form partial moments of the standardized densities on a cell [a, c]:
//! P = ∫f, M1 = ∫x f, M2 = ∫x² f (a may be −∞, c may be +∞). No quadrature.
//!
//! Far in a tail every moment is tiny and the conditional mean M1/P is a ratio
//! of two tiny numbers, so each cell is evaluated *scaled* by the density at
//! its inner end (φ(a) or e^−a/2 for a cell in x >= 0): differences like
//! φ(a) − φ(c) become −expm1(−(c−a)(c+a)/2), and the Gaussian tail probability
//! comes from the Mills ratio Q(x)/φ(x) rather than from 1 − Φ. Cells left of 0
//! are mirrored; cells straddling 0 are split, both halves sharing the scale at 0.

use crate::family::Family;

/// Below this the Mills ratio is Q(x)/φ(x) directly; above it the continued
/// fraction, because φ(x) = exp(−x²/2) carries a relative error of ~x²·ε.
const MILLS_DIRECT_MAX: f64 = 3.0;
/// Depth of the backward-evaluated continued fraction; converged to well below
/// ε for x >= 3 (error shrinks like exp(−2x√depth)).
const MILLS_CF_DEPTH: u32 = 80;

/// Partial moments of the standardized density over one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    /// Probability of the cell, ∫f.
    pub p: f64,
    /// First partial moment, ∫x f.
    pub m1: f64,
    /// Second partial moment, ∫x² f.
    pub m2: f64,
}

impl Moments {
    /// ∫(x − y)² f over the cell: the squared error of reproducing the cell by `y`.
    pub fn cell_error(&self, y: f64) -> f64 {
        self.m2 - 2.0 * y * self.m1 + y * y * self.p
    }
}

/// Moments (and end-point densities) of a cell, all divided by `scale`; the
/// ratios that matter (mean, derivatives of the mean) never need `scale`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scaled {
    pub scale: f64,
    pub p: f64,
    pub m1: f64,
    pub m2: f64,
    /// f(a) / scale and f(c) / scale (0 at an infinite end).
    pub fa: f64,
    pub fc: f64,
}

impl Scaled {
    const EMPTY: Scaled = Scaled {
        scale: 1.0,
        p: 0.0,
        m1: 0.0,
        m2: 0.0,
        fa: 0.0,
        fc: 0.0,
    };

    pub fn unscaled(&self) -> Moments {
        Moments {
            p: self.scale * self.p,
            m1: self.scale * self.m1,
            m2: self.scale * self.m2,
        }
    }
}

/// Q(x)/φ(x) for x >= 0 (Mills ratio), accurate to a few ulps even where
/// both Q and φ are near underflow.
pub(crate) fn mills_ratio(x: f64) -> f64 {
    if x < MILLS_DIRECT_MAX {
        return Family::Gaussian.sf(x) / Family::Gaussian.pdf(x);
    }
    // R(x) = 1/(x + 1/(x + 2/(x + 3/(x + …)))), evaluated from the inside out.
    let mut tail = x;
    for k in (1..=MILLS_CF_DEPTH).rev() {
        tail = x + f64::from(k) / tail;
    }
    1.0 / tail
}

/// Gaussian cell with 0 <= a < c <= ∞, scaled by φ(a).
fn gaussian_right(a: f64, c: f64) -> Scaled {
    // E = φ(c)/φ(a) = exp(−(c − a)(c + a)/2), no cancellation.
    let half_gap = if c.is_finite() {
        0.5 * (c - a) * (c + a)
    } else {
        f64::INFINITY
    };
    let e = (-half_gap).exp();
    let (r_c_e, c_e) = if e > 0.0 {
        (mills_ratio(c) * e, c * e)
    } else {
        (0.0, 0.0)
    };
    let p = mills_ratio(a) - r_c_e;
    Scaled {
        scale: Family::Gaussian.pdf(a),
        p,
        m1: -(-half_gap).exp_m1(),
        m2: p + a - c_e,
        fa: 1.0,
        fc: e,
    }
}

/// Laplace (b = 1) cell with 0 <= a < c <= ∞, scaled by e^−a/2.
fn laplace_right(a: f64, c: f64) -> Scaled {
    let d = c - a;
    let e = (-d).exp();
    let p = -(-d).exp_m1();
    // (a+1) − (c+1)E and (a²+2a+2) − (c²+2c+2)E, regrouped so that the
    // leading terms carry the factor 1 − E instead of cancelling.
    let (d_e, d_e_sum) = if e > 0.0 {
        (d * e, d * (c + a + 2.0) * e)
    } else {
        (0.0, 0.0)
    };
    Scaled {
        scale: 0.5 * (-a).exp(),
        p,
        m1: (a + 1.0) * p - d_e,
        m2: (a * a + 2.0 * a + 2.0) * p - d_e_sum,
        fa: 1.0,
        fc: e,
    }
}

fn right(family: Family, a: f64, c: f64) -> Scaled {
    match family {
        Family::Gaussian => gaussian_right(a, c),
        Family::Laplace => laplace_right(a, c),
    }
}

/// Scaled moments of any cell [a, c]; empty (all zero) when !(a < c).
pub(crate) fn scaled_moments(family: Family, a: f64, c: f64) -> Scaled {
    if a >= c || a.is_nan() || c.is_nan() {
        return Scaled::EMPTY;
    }
    if a >= 0.0 {
        return right(family, a, c);
    }
    if c <= 0.0 {
        let m = right(family, -c, -a);
        return Scaled {
            m1: -m.m1,
            fa: m.fc,
            fc: m.fa,
            ..m
        };
    }
    // Straddles 0: both halves are scaled by the density at 0.
    let lo = right(family, 0.0, -a);
    let hi = right(family, 0.0, c);
    Scaled {
        scale: hi.scale,
        p: lo.p + hi.p,
        m1: hi.m1 - lo.m1,
        m2: lo.m2 + hi.m2,
        fa: lo.fc,
        fc: hi.fc,
    }
}

/// P, M1, M2 of the standardized `family` density over [a, c] (zero if a >= c).
pub fn partial_moments(family: Family, a: f64, c: f64) -> Moments {
    scaled_moments(family, a, c).unscaled()
}

/// E[X | a < X < c], accurate deep in the tails; `a` for a degenerate cell and
/// always inside [a, c] (rounding cannot push it out).
pub fn conditional_mean(family: Family, a: f64, c: f64) -> f64 {
    let s = scaled_moments(family, a, c);
    if s.p > 0.0 {
        (s.m1 / s.p).clamp(a, c)
    } else if a < c && a.is_finite() && c.is_finite() {
        0.5 * (a + c)
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Naive reference from the textbook formulas (fine away from the tails).
    fn naive(family: Family, a: f64, c: f64) -> Moments {
        match family {
            Family::Gaussian => {
                let (pa, pc) = (Family::Gaussian.pdf(a), Family::Gaussian.pdf(c));
                let p = Family::Gaussian.cdf(c) - Family::Gaussian.cdf(a);
                Moments {
                    p,
                    m1: pa - pc,
                    m2: p + a * pa - c * pc,
                }
            }
            Family::Laplace => {
                // Antiderivatives on x >= 0 of ½e^−x·{1, x, x²}, extended oddly/evenly.
                let g = |x: f64, k: u32| -> f64 {
                    let s = x.signum();
                    let t = x.abs();
                    let e = 0.5 * (-t).exp();
                    match k {
                        0 => s * (0.5 - e),
                        1 => 0.5 - (t + 1.0) * e,
                        _ => s * (1.0 - (t * t + 2.0 * t + 2.0) * e),
                    }
                };
                Moments {
                    p: g(c, 0) - g(a, 0),
                    m1: g(c, 1) - g(a, 1),
                    m2: g(c, 2) - g(a, 2),
                }
            }
        }
    }

    /// Asymptotic series R(x) ≈ (1/x) Σ (−1)^k (2k−1)!!/x^{2k}; at x = 30 twelve
    /// terms are far below ε.
    fn mills_series(x: f64) -> f64 {
        let u = 1.0 / (x * x);
        let (mut term, mut sum) = (1.0, 1.0);
        for k in 1..12 {
            term *= -f64::from(2 * k - 1) * u;
            sum += term;
        }
        sum / x
    }

    fn close(x: f64, y: f64, tol: f64) -> bool {
        (x - y).abs() <= tol * (1.0 + y.abs())
    }

    #[test]
    fn whole_line_gives_unit_mass_zero_mean_known_variance() {
        for (fam, var) in [(Family::Gaussian, 1.0), (Family::Laplace, 2.0)] {
            let m = partial_moments(fam, f64::NEG_INFINITY, f64::INFINITY);
            assert!(close(m.p, 1.0, 1e-15), "{fam:?} {m:?}");
            assert!(m.m1.abs() < 1e-15, "{fam:?} {m:?}");
            assert!(close(m.m2, var, 1e-15), "{fam:?} {m:?}");
        }
    }

    #[test]
    fn half_line_moments() {
        // E|X|: sqrt(2/π) for N(0,1), 1 for Laplace(b=1).
        let g = partial_moments(Family::Gaussian, 0.0, f64::INFINITY);
        assert!(close(
            g.m1 / g.p,
            (2.0 / std::f64::consts::PI).sqrt(),
            1e-15
        ));
        let l = partial_moments(Family::Laplace, f64::NEG_INFINITY, 0.0);
        assert!(close(l.m1 / l.p, -1.0, 1e-15));
        assert!(close(l.p, 0.5, 1e-15));
    }

    #[test]
    fn mills_ratio_branches_agree() {
        // At the switch point both forms are accurate.
        let direct = Family::Gaussian.sf(3.0) / Family::Gaussian.pdf(3.0);
        assert!(close(mills_ratio(3.0), direct, 2e-15), "{direct}");
        let x = 6.0;
        let direct = Family::Gaussian.sf(x) / Family::Gaussian.pdf(x);
        assert!(close(mills_ratio(x), direct, 1e-14));
        let x = 30.0f64;
        assert!(close(mills_ratio(x), mills_series(x), 1e-15));
    }

    #[test]
    fn deep_tail_conditional_means() {
        // Gaussian: E[X | X > a] = 1/R(a).
        let a = 30.0f64;
        let expect = 1.0 / mills_series(a);
        let got = conditional_mean(Family::Gaussian, a, f64::INFINITY);
        assert!((got - expect).abs() < 1e-13, "{got} vs {expect}");
        let left = conditional_mean(Family::Gaussian, f64::NEG_INFINITY, -a);
        assert_eq!(left, -got);
        // Laplace: memoryless, E[X | X > a] = a + 1 and [a, a+1] has mean a + 1 − 1/(e − 1).
        assert_eq!(conditional_mean(Family::Laplace, a, f64::INFINITY), a + 1.0);
        let m = conditional_mean(Family::Laplace, a, a + 1.0);
        let expect = a + 1.0 - 1.0 / 1f64.exp_m1();
        assert!((m - expect).abs() < 1e-13, "{m}");
        // Beyond where φ(a) underflows the mean is still finite and sensible.
        let far = conditional_mean(Family::Gaussian, 40.0, 41.0);
        assert!((far - (40.0 + 1.0 / 40.0)).abs() < 1e-3, "{far}");
    }

    #[test]
    fn degenerate_cells() {
        assert_eq!(conditional_mean(Family::Gaussian, 1.0, 1.0), 1.0);
        let m = partial_moments(Family::Laplace, 2.0, 1.0);
        assert_eq!((m.p, m.m1, m.m2), (0.0, 0.0, 0.0));
    }

    #[test]
    fn end_densities_match_pdf() {
        for fam in Family::ALL {
            for (a, c) in [(-2.0, -0.5), (-1.0, 3.0), (0.25, 1.5)] {
                let s = scaled_moments(fam, a, c);
                assert!(close(s.fa * s.scale, fam.pdf(a), 1e-14), "{fam:?} {a}");
                assert!(close(s.fc * s.scale, fam.pdf(c), 1e-14), "{fam:?} {c}");
            }
        }
    }

    proptest! {
        #[test]
        fn matches_naive_formulas(a in -6.0f64..6.0, w in 1e-3f64..8.0, g in any::<bool>()) {
            let fam = if g { Family::Gaussian } else { Family::Laplace };
            let c = a + w;
            let (m, r) = (partial_moments(fam, a, c), naive(fam, a, c));
            prop_assert!((m.p - r.p).abs() < 1e-14, "{m:?} {r:?}");
            prop_assert!((m.m1 - r.m1).abs() < 1e-14, "{m:?} {r:?}");
            prop_assert!((m.m2 - r.m2).abs() < 1e-13, "{m:?} {r:?}");
        }

        #[test]
        fn additive_over_split_cells(a in -5.0f64..5.0, w1 in 0.01f64..4.0, w2 in 0.01f64..4.0, g in any::<bool>()) {
            let fam = if g { Family::Gaussian } else { Family::Laplace };
            let (b, c) = (a + w1, a + w1 + w2);
            let (x, y, z) = (partial_moments(fam, a, b), partial_moments(fam, b, c), partial_moments(fam, a, c));
            prop_assert!(close(x.p + y.p, z.p, 1e-13));
            prop_assert!((x.m1 + y.m1 - z.m1).abs() < 1e-14);
            prop_assert!(close(x.m2 + y.m2, z.m2, 1e-13));
        }

        #[test]
        fn mean_lies_in_cell_and_mirrors(a in -40.0f64..40.0, w in 1e-6f64..10.0, g in any::<bool>()) {
            let fam = if g { Family::Gaussian } else { Family::Laplace };
            let c = a + w;
            let m = conditional_mean(fam, a, c);
            prop_assert!(a <= m && m <= c);
            prop_assert_eq!(conditional_mean(fam, -c, -a), -m);
        }
    }
}
