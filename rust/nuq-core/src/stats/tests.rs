//! Cross-module tests: every fast path against its sort-based definition, on
//! many shapes of data, and bit-identical results for any thread count.

use proptest::prelude::*;

use super::fit::{fit_rows_within, fit_tensor_within};
use super::ks::{ks_rows, ks_rows_reference, ks_sorted_reference, ks_tensor};
use super::rows::row_fits;
use super::*;
use crate::Family;

/// SplitMix64: a tiny deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Shapes of data the quantizer meets (and some it should survive).
pub(super) fn sample(kind: u8, n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| {
            let v = match kind {
                0 => 0.02 * r.normal() + 0.001,
                1 => {
                    let u = r.uniform() - 0.5;
                    -0.05 * u.signum() * (1.0 - 2.0 * u.abs()).ln()
                }
                2 => 3.0 * r.uniform() - 1.0,
                3 => {
                    // Student-t with 2 degrees of freedom: heavy tails.
                    let chi2 = r.normal().powi(2) + r.normal().powi(2);
                    r.normal() / (chi2 / 2.0).sqrt()
                }
                4 => (r.uniform() * 5.0).floor() - 2.0,
                5 => {
                    // Pruned weights: half exact zeros.
                    if r.uniform() < 0.5 {
                        0.0
                    } else {
                        r.normal()
                    }
                }
                6 => (r.normal() * 8.0).round() / 8.0 + 100.0,
                _ => {
                    // Gaussian with rare extreme outliers, which dominate
                    // even the standard deviation: the top-level grid (mean
                    // ± 6σ) puts nearly everything in one bucket.
                    if r.uniform() < 1e-4 {
                        1e30 * (r.uniform() - 0.5)
                    } else {
                        r.normal()
                    }
                }
            };
            v as f32
        })
        .collect()
}

/// The median by its definition: sort, then the middle value(s); 0 when empty.
pub(super) fn sorted_median(x: &[f32]) -> f64 {
    let mut s = x.to_vec();
    s.sort_by(f32::total_cmp);
    let n = s.len();
    if n == 0 {
        return 0.0;
    }
    (f64::from(s[(n - 1) / 2]) + f64::from(s[n / 2])) / 2.0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ks_tensor_equals_the_sorted_reference(
        kind in 0u8..8,
        n in prop_oneof![0usize..40, 40usize..16_384, 16_000usize..120_000],
        seed: u64,
        shift in -1.0f64..1.0,
        stretch in 0.3f64..3.0,
    ) {
        let x = sample(kind, n, seed);
        let m = moments(&x).unwrap();
        let med = median(&x);
        prop_assert_eq!(med, sorted_median(&x));
        let b = mean_abs_dev(&x, med);
        let fits = [
            (Family::Gaussian, m.mean, m.std),
            (Family::Laplace, med, b),
            (Family::Gaussian, m.mean + shift * m.std, m.std * stretch),
            (Family::Laplace, med - shift * b, b * stretch),
        ];
        let fast = ks_tensor(&x, &fits);
        for (&(fam, loc, scale), d) in fits.iter().zip(fast) {
            let want = if scale == 0.0 { 0.0 } else { ks_sorted_reference(&x, fam, loc, scale) };
            prop_assert_eq!(d, want, "{:?} loc {} scale {}", fam, loc, scale);
        }
    }

    #[test]
    fn ks_rows_equals_the_sorted_reference(
        kind in 0u8..8,
        rows in 1usize..60,
        row_len in prop_oneof![1usize..12, 200usize..2500],
        seed: u64,
        family in prop_oneof![Just(Family::Gaussian), Just(Family::Laplace)],
        zero_every in 0usize..5,
    ) {
        let x = sample(kind, rows * row_len, seed);
        let fits = row_fits(&x, row_len);
        let (loc, mut scale): (Vec<f64>, Vec<f64>) = match family {
            Family::Gaussian => fits.iter().map(|f| (f.mean, f.std)).unzip(),
            Family::Laplace => fits.iter().map(|f| (f.median, f.b)).unzip(),
        };
        if zero_every > 0 {
            scale.iter_mut().step_by(zero_every).for_each(|s| *s = 0.0);
        }
        let fast = ks_rows(&x, row_len, family, &loc, &scale);
        prop_assert_eq!(fast, ks_rows_reference(&x, row_len, family, &loc, &scale));
    }

    /// Within a tolerance the bracket holds the exact D, is at most twice
    /// the tolerance wide, and its middle is within the tolerance.
    #[test]
    fn ks_within_a_tolerance_brackets_the_exact_statistic(
        kind in 0u8..8,
        n in 16_384usize..150_000,
        seed: u64,
        tol in prop_oneof![Just(1e-6), Just(KS_TOLERANCE), Just(1e-3), Just(0.05)],
        row_len in prop_oneof![Just(1usize), Just(256), Just(4096)],
    ) {
        use super::fit::{both_fits, central_grid};
        use super::grid::buckets_for;
use super::layout::build;
        use super::ks::{ks_layout_within, ks_rows_within};
        use super::source::Flat;
        let x = sample(kind, n - n % row_len, seed);
        let f = fit_tensor_within(&x, 0.0).unwrap();
        let (lo, hi) = central_grid(&f.moments);
        let range = Some((f.moments.min, f.moments.max));
        let mut layout = build(&Flat(&x), lo, hi, buckets_for(x.len()), range);
        let got = ks_layout_within(&Flat(&x), &mut layout, &both_fits(f.gaussian, f.laplace), tol);
        let mut checks: Vec<_> = got.into_iter().zip([f.d_gaussian, f.d_laplace]).collect();
        if row_len > 1 {
            let fits = row_fits(&x, row_len);
            let (loc, scale): (Vec<f64>, Vec<f64>) = fits.iter().map(|f| (f.median, f.b)).unzip();
            checks.push((
                ks_rows_within(&x, row_len, Family::Laplace, &loc, &scale, tol),
                ks_rows_reference(&x, row_len, Family::Laplace, &loc, &scale),
            ));
        }
        for (d, exact) in checks {
            prop_assert!(d.lo <= exact && exact <= d.hi, "{:?} vs {}", d, exact);
            prop_assert!(d.hi - d.lo <= 2.0 * tol + 1e-12, "{:?}", d);
            prop_assert!((d.value() - exact).abs() <= tol + 1e-12, "{:?} vs {}", d, exact);
        }
    }

    #[test]
    fn row_fits_match_their_definitions(
        kind in 0u8..7,
        rows in 1usize..20,
        row_len in 1usize..300,
        seed: u64,
    ) {
        let x = sample(kind, rows * row_len, seed);
        for (f, row) in row_fits(&x, row_len).iter().zip(x.chunks(row_len)) {
            let m = moments(row).unwrap();
            prop_assert!((f.mean - m.mean).abs() <= 1e-12 * (1.0 + m.mean.abs()));
            prop_assert!((f.std - m.std).abs() <= 1e-12 * (1.0 + m.std));
            prop_assert_eq!(f.median, sorted_median(row));
            let b = mean_abs_dev(row, f.median);
            prop_assert!((f.b - b).abs() <= 1e-12 * (1.0 + b));
        }
    }
}

#[test]
fn ks_matches_scipy_on_a_tied_sample() {
    // scipy 1.17 `kstest(x.astype(np.float64), ...)` on the same float32 data.
    // (Given the float32 array itself, scipy 1.17 carries some float32
    // intermediates and lands within 1e-9 of these.)
    let x: Vec<f32> = (0..50_000i64)
        .map(|i| {
            let v = ((i * 7919) % 10007 - 5003) as f32 / 1000.0;
            v.signum() * v * v / 5.0
        })
        .collect();
    assert_eq!(median(&x), 0.0);
    let d = ks_tensor(
        &x,
        &[(Family::Gaussian, 0.1, 1.5), (Family::Laplace, 0.0, 1.2)],
    );
    assert!((d[0] - 0.106_364_623_132_907_57).abs() < 1e-12, "{}", d[0]);
    assert!((d[1] - 0.089_615_825_660_084_52).abs() < 1e-12, "{}", d[1]);
    let m = moments(&x).unwrap();
    assert!((m.mean - 0.000_173_866_364_056_593_74).abs() < 1e-15);
    assert!((m.std - 2.239_234_555_041_535).abs() < 1e-12);
}

#[test]
fn tiny_inputs() {
    for x in [vec![], vec![0.5f32], vec![0.5, -2.0], vec![1.0, 1.0, 1.0]] {
        let f = fit_tensor(&x).unwrap();
        let ref_g = ks_sorted_reference(&x, Family::Gaussian, f.gaussian.loc, f.gaussian.scale);
        let ref_l = ks_sorted_reference(&x, Family::Laplace, f.laplace.loc, f.laplace.scale);
        assert_eq!((f.d_gaussian, f.d_laplace), (ref_g, ref_l), "{x:?}");
    }
    let two = fit_tensor(&[0.5, -2.0]).unwrap();
    assert_eq!(
        two.laplace,
        LocScale {
            loc: -0.75,
            scale: 1.25
        }
    );
    // Two points at ±σ: D = 1/2 - Φ(-1).
    assert!((two.d_gaussian - (0.5 - Family::Gaussian.cdf(-1.0))).abs() < 1e-15);
    let c = fit_tensor(&[2.0; 70_000]).unwrap();
    assert_eq!(
        (c.d_gaussian, c.d_laplace, c.best()),
        (0.0, 0.0, Family::Gaussian)
    );
}

#[test]
fn fit_tensor_picks_the_true_family() {
    for (kind, want) in [(0u8, Family::Gaussian), (1, Family::Laplace)] {
        let x = sample(kind, 200_000, 7);
        let f = assert_fit_is_exact(&x);
        assert_eq!(f.best(), want, "{f:?}");
        let l = f.laplace;
        // One pass sums each side of the median apart (see `laplace`):
        // equal to the element-by-element sum up to rounding.
        let b = mean_abs_dev(&x, l.loc);
        assert!((l.scale - b).abs() <= 1e-12 * b, "{} vs {b}", l.scale);
        let c = fit_rows(&x, 1000).unwrap();
        assert_eq!(c.best(), want, "{:?} {:?}", c.d_gaussian, c.d_laplace);
    }
}

#[test]
fn fit_errors() {
    let mut x = vec![0.0f32; 100_000];
    x[77_777] = f32::NAN;
    x[90_000] = f32::INFINITY;
    let nan_at =
        |e| matches!(e, crate::NuqError::NonFinite { index: 77_777, value } if value.is_nan());
    assert!(nan_at(fit_tensor(&x).unwrap_err()));
    assert!(nan_at(fit_rows(&x, 100).unwrap_err()));
    assert!(matches!(
        fit_rows(&[1.0; 10], 3),
        Err(crate::NuqError::LengthMismatch {
            expected: 12,
            actual: 10,
            ..
        })
    ));
    assert!(fit_rows(&[1.0; 10], 0).is_err());
}

/// A Gaussian/Laplace mixture whose two statistics are as close as the
/// sample allows (the mixing share found by bisection): their brackets
/// within the tolerance overlap, so both are computed exactly.
#[test]
fn a_close_call_is_settled_exactly() {
    use super::fit::{both_fits, central_grid};
    use super::grid::buckets_for;
    use super::ks::{choice_is_certain, ks_layout_within};
    use super::layout::build;
    use super::source::Flat;
    let (g, l) = (sample(0, 200_000, 3), sample(1, 200_000, 4));
    let mut r = Rng(5);
    let u: Vec<f64> = (0..g.len()).map(|_| r.uniform()).collect();
    let mix = |p: f64| -> Vec<f32> {
        (0..g.len())
            .map(|i| if u[i] < p { g[i] } else { l[i] })
            .collect()
    };
    let gap = |p: f64| {
        let f = fit_tensor_within(&mix(p), 0.0).unwrap();
        f.d_gaussian - f.d_laplace
    };
    // All Laplace (p = 0): the Laplace fit is closer; all Gaussian: the Gaussian.
    let (mut lo, mut hi) = (0.0, 1.0);
    assert!(gap(lo) > 0.0 && gap(hi) < 0.0);
    for _ in 0..30 {
        let mid = 0.5 * (lo + hi);
        if gap(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let x = mix(hi);
    let exact = assert_fit_is_exact(&x);
    assert!(
        (exact.d_gaussian - exact.d_laplace).abs() < KS_TOLERANCE,
        "{exact:?}"
    );
    let (lo, hi) = central_grid(&exact.moments);
    let range = Some((exact.moments.min, exact.moments.max));
    let mut layout = build(&Flat(&x), lo, hi, buckets_for(x.len()), range);
    let fits = both_fits(exact.gaussian, exact.laplace);
    let d = ks_layout_within(&Flat(&x), &mut layout, &fits, KS_TOLERANCE);
    assert!(!choice_is_certain(d[0], d[1]), "{d:?}");
    assert_eq!(fit_tensor(&x).unwrap(), exact);
    // The same values as one row: the pooled statistics of `fit_rows`.
    let one_row = fit_rows_within(&x, x.len(), 0.0).unwrap();
    assert!((one_row.d_gaussian - one_row.d_laplace).abs() < KS_TOLERANCE);
    assert_eq!(fit_rows(&x, x.len()).unwrap(), one_row);
}

#[test]
fn the_choice_is_certain_only_for_disjoint_brackets() {
    use super::ks::{choice_is_certain, Estimate};
    let at = |lo, hi| Estimate { lo, hi };
    assert!(choice_is_certain(at(0.1, 0.2), at(0.2, 0.3)));
    assert!(choice_is_certain(at(0.2, 0.3), at(0.1, 0.15)));
    assert!(!choice_is_certain(at(0.2, 0.3), at(0.1, 0.2)));
    assert!(!choice_is_certain(at(0.1, 0.3), at(0.2, 0.25)));
    assert!(choice_is_certain(
        Estimate::exact(0.1),
        Estimate::exact(0.1)
    ));
    assert_eq!(at(0.1, 0.3).value(), 0.2);
    assert_eq!(Estimate::exact(0.125).value(), 0.125);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let x = sample(3, 300_000, 11);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| (fit_tensor(&x).unwrap(), fit_rows(&x, 3000).unwrap()))
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// Exactly Gaussian data: D ~ 1/sqrt(n) is comparable to the top-level
/// bucket masses, so a large share of the data is refined at once (the
/// refinement budget path), for the tensor and for the pooled rows.
/// The exact fit of `x`, after checking both KS statistics and the median
/// against the sort-based references, and that `fit_tensor` (the
/// pipeline's, within `KS_TOLERANCE`) agrees: same fits, statistics within
/// the tolerance, same family.
fn assert_fit_is_exact(x: &[f32]) -> TensorFit {
    let f = fit_tensor_within(x, 0.0).unwrap();
    let (g, l) = (f.gaussian, f.laplace);
    assert_eq!(
        f.d_gaussian,
        ks_sorted_reference(x, Family::Gaussian, g.loc, g.scale)
    );
    assert_eq!(
        f.d_laplace,
        ks_sorted_reference(x, Family::Laplace, l.loc, l.scale)
    );
    assert_eq!(f.laplace.loc, sorted_median(x));
    let within = fit_tensor(x).unwrap();
    assert_eq!((within.gaussian, within.laplace), (g, l));
    assert_within_tolerance(
        [within.d_gaussian, within.d_laplace],
        [f.d_gaussian, f.d_laplace],
    );
    assert_eq!(within.best(), f.best());
    f
}

fn assert_within_tolerance(got: [f64; 2], exact: [f64; 2]) {
    for (got, exact) in got.into_iter().zip(exact) {
        assert!(
            (got - exact).abs() <= KS_TOLERANCE,
            "{got} vs exact {exact}"
        );
    }
}

#[test]
fn gaussian_data_refined_in_bulk_stay_exact() {
    use super::fit::both_fits;
    use super::ks::ks_layout;
    use super::layout::build;
    use super::source::Flat;
    let x = sample(0, 1 << 21, 99);
    let f = assert_fit_is_exact(&x);
    // A coarse top-level grid makes nearly every run a candidate.
    let fits = both_fits(f.gaussian, f.laplace);
    let m = f.moments;
    let mut layout = build(&Flat(&x), m.min, m.max, 256, Some((m.min, m.max)));
    let d = ks_layout(&Flat(&x), &mut layout, &fits);
    assert_eq!(d, [f.d_gaussian, f.d_laplace]);
    // The doubled top-level grid of tensors from `LARGE_N` elements on.
    let nb = super::grid::buckets_for(usize::MAX);
    let mut layout = build(&Flat(&x), m.min, m.max, nb, Some((m.min, m.max)));
    assert_eq!(layout.grid.nb, 1 << 17);
    let d = ks_layout(&Flat(&x), &mut layout, &fits);
    assert_eq!(d, [f.d_gaussian, f.d_laplace]);
    let row_len = 1 << 11;
    let c = fit_rows_within(&x, row_len, 0.0).unwrap();
    let within = fit_rows(&x, row_len).unwrap();
    assert_within_tolerance(
        [within.d_gaussian, within.d_laplace],
        [c.d_gaussian, c.d_laplace],
    );
    assert_eq!(within.best(), c.best());
    let column = |f: fn(&RowFit) -> f64| -> Vec<f64> { c.rows.iter().map(f).collect() };
    let (mean, std) = (column(|r| r.mean), column(|r| r.std));
    let want = ks_rows_reference(&x, row_len, Family::Gaussian, &mean, &std);
    assert_eq!(c.d_gaussian, want);
    let (med, b) = (column(|r| r.median), column(|r| r.b));
    let want = ks_rows_reference(&x, row_len, Family::Laplace, &med, &b);
    assert_eq!(c.d_laplace, want);
}

/// 10^7 Gaussian weights (past `LARGE_N`, where the top-level grid doubles):
/// the fast path against a full sort (seconds at the test profile).
#[test]
fn huge_tensor_matches_the_reference() {
    assert_fit_is_exact(&sample(0, 10_000_000, 2024));
}

/// The point of the pruning: only a sliver of the data is ever gathered
/// (at most the gather budget of n/8; typically well under 2%). Kind 1 (a
/// close Laplace fit), kind 3 (Student-t with 2 degrees of freedom: the
/// standard deviation of its tails widens the grid, and its central runs,
/// ~3% of the data, are gathered, not refined by a pass) and kind 6 (about
/// a hundred distinct values: its candidate runs are runs of ties, gathered
/// whole and resolved by a sort of equal values) take more of the budget.
/// The last sample is Gaussian with five far outliers (up to 150σ), which
/// must not coarsen the grid of the bulk.
#[test]
fn ks_gathers_a_small_fraction() {
    use super::fit::{both_fits, central_grid};
    use super::grid::buckets_for;
    use super::ks::ks_layout;
    use super::layout::build;
    use super::source::Flat;
    let n = 1_000_000;
    let mut outliers = sample(0, n, 5);
    outliers[..5].copy_from_slice(&[1.5, -1.2, 3.0, 0.9, -2.0]);
    let samples = (0u8..8).map(|kind| (kind, sample(kind, n, 5)));
    for (kind, x) in samples.chain([(8, outliers)]) {
        let f = if kind == 8 {
            assert_fit_is_exact(&x)
        } else {
            fit_tensor_within(&x, 0.0).unwrap()
        };
        let fits = both_fits(f.gaussian, f.laplace);
        let (lo, hi) = central_grid(&f.moments);
        let range = Some((f.moments.min, f.moments.max));
        let mut layout = build(&Flat(&x), lo, hi, buckets_for(n), range);
        assert_eq!(
            ks_layout(&Flat(&x), &mut layout, &fits),
            [f.d_gaussian, f.d_laplace]
        );
        let gathered: usize = layout.recs.iter().filter(|r| r.done).map(|r| r.count).sum();
        eprintln!(
            "kind {kind}: gathered {gathered} of {n}, {} runs",
            layout.recs.len()
        );
        assert!(gathered <= n / 8, "kind {kind}: gathered {gathered} of {n}");
        if ![1, 3, 6].contains(&kind) {
            assert!(gathered < n / 50, "kind {kind}: gathered {gathered} of {n}");
        }
    }
}

#[test]
fn constant_rows_are_left_out_of_the_pooled_statistics() {
    let varied = sample(0, 4 * 300, 11);
    let mut with_constant = vec![2.5f32; 300];
    with_constant.extend_from_slice(&varied);
    let a = fit_rows(&with_constant, 300).unwrap();
    let b = fit_rows(&varied, 300).unwrap();
    assert_eq!((a.d_gaussian, a.d_laplace), (b.d_gaussian, b.d_laplace));
    assert_eq!(a.rows[0].std, 0.0);
    let all_constant = fit_rows(&[1.0f32; 40], 8).unwrap();
    assert_eq!(
        (all_constant.d_gaussian, all_constant.d_laplace),
        (0.0, 0.0)
    );
}
