//! One-pass moments and the mean absolute deviation, with f64 accumulation
//! over fixed-size parts combined in index order (bit-identical for any
//! thread count).

use super::source::{fold_parts, map_parts, PART};
use crate::error::{NuqError, Result};

/// Count, range, mean and population standard deviation (ddof = 0).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    pub n: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
}

/// Statistics of one part: its own mean and centred sum of squares, so that
/// merging (Chan et al.) does not suffer the `E[x²] - mean²` cancellation.
#[derive(Debug, Clone, Copy)]
struct Part {
    n: usize,
    mean: f64,
    m2: f64,
    min: f32,
    max: f32,
}

/// Lanes of independent f64 accumulators: vectorizable, fixed order (two
/// AVX-512 or four AVX2 registers, enough add chains to hide the latency).
pub(super) const LANES: usize = 16;

/// `Σ f(x)` in `LANES` partial sums added pairwise at the end, then the tail.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(f64::from(v));
        }
    }
    let tail: f64 = it.remainder().iter().map(|&v| f(f64::from(v))).sum();
    reduce(acc) + tail
}

/// The lanes added pairwise: `acc[i] += acc[i + w]` for w = 8, 4, 2, 1.
#[inline(always)]
pub(super) fn reduce(mut acc: [f64; LANES]) -> f64 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

/// Smallest and largest of finite `x` in `LANES` lanes (plain compares: they
/// vectorize, unlike `f32::min`'s NaN handling).
#[inline(always)]
pub(crate) fn lane_min_max(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for j in 0..LANES {
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
        }
    }
    let fold = |(a, b): (f32, f32), &v: &f32| (a.min(v), b.max(v));
    let lanes = lo
        .iter()
        .zip(&hi)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), (&l, &h)| {
            (a.min(l), b.max(h))
        });
    it.remainder().iter().fold(lanes, fold)
}

/// `Err(first offending index)` if the part holds a NaN or infinity.
fn part(x: &[f32], start: usize) -> std::result::Result<Part, usize> {
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx512.is_allowed() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { x86_avx512::part(x, start) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx2.is_allowed() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { x86_avx2::part(x, start) };
    }
    part_with(x, start, sum, sq_dev_sum, lane_min_max)
}

/// The part's statistics from `Σ v`, `Σ (v - m)²` and the range (portable
/// or SIMD loops, which agree bit for bit).
#[inline(always)]
fn part_with(
    x: &[f32],
    start: usize,
    sum: impl Fn(&[f32]) -> f64,
    centred: impl Fn(&[f32], f64) -> f64,
    min_max: impl Fn(&[f32]) -> (f32, f32),
) -> std::result::Result<Part, usize> {
    let total = sum(x);
    if !total.is_finite() {
        // f32 values cannot overflow an f64 sum: a non-finite sum means a
        // non-finite element.
        let i = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(start + i);
    }
    let mean = total / x.len() as f64;
    let (min, max) = min_max(x);
    let m2 = centred(x, mean);
    Ok(Part {
        n: x.len(),
        mean,
        m2,
        min,
        max,
    })
}

/// `Σ v` in f64 (the lanes of `lane_sum`; AVX-512 where present).
pub(crate) fn sum(x: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx512.is_allowed() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { x86_avx512::sum(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx2.is_allowed() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { x86_avx2::sum(x) };
    }
    lane_sum(x, |v| v)
}

/// `Σ (v - center)²` in f64, as `sum`.
pub(crate) fn sq_dev_sum(x: &[f32], center: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx512.is_allowed() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { x86_avx512::sq_dev_sum(x, center) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx2.is_allowed() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { x86_avx2::sq_dev_sum(x, center) };
    }
    lane_sum(x, |v| (v - center) * (v - center))
}

/// `Σ |v - center|` in f64, as `sum`.
pub(crate) fn abs_dev_sum(x: &[f32], center: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx512.is_allowed() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { x86_avx512::abs_dev_sum(x, center) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx2.is_allowed() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { x86_avx2::abs_dev_sum(x, center) };
    }
    lane_sum(x, |v| (v - center).abs())
}

/// The portable lane loops compiled for AVX2 (the baseline x86-64 build
/// only has 128-bit vectors): the same code, so the same adds in the same
/// order, bit for bit.
#[cfg(target_arch = "x86_64")]
mod x86_avx2 {
    use super::{lane_min_max, lane_sum, part_with, Part};

    #[target_feature(enable = "avx2")]
    pub(super) fn part(x: &[f32], start: usize) -> Result<Part, usize> {
        part_with(
            x,
            start,
            |x| lane_sum(x, |v| v),
            |x, m| lane_sum(x, |v| (v - m) * (v - m)),
            lane_min_max,
        )
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn sum(x: &[f32]) -> f64 {
        lane_sum(x, |v| v)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn sq_dev_sum(x: &[f32], center: f64) -> f64 {
        lane_sum(x, |v| (v - center) * (v - center))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn abs_dev_sum(x: &[f32], center: f64) -> f64 {
        lane_sum(x, |v| (v - center).abs())
    }
}

/// The lane loops with explicit AVX-512 (LLVM splits the portable ones into
/// 128-bit halves): lanes 0..8 and 8..16 in two registers, the same adds in
/// the same order as the portable code.
#[cfg(target_arch = "x86_64")]
mod x86_avx512 {
    use std::arch::x86_64::*;

    use super::{part_with, reduce, Part, LANES};

    /// `Σ f(x)` as `lane_sum`, with `f` given as a vector and a scalar op.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lane_sum(x: &[f32], f: impl Fn(__m512d) -> __m512d, tail: impl Fn(f64) -> f64) -> f64 {
        let (mut a, mut b) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let mut it = x.chunks_exact(LANES);
        for c in &mut it {
            // SAFETY: `c` holds 16 floats.
            let (lo, hi) = unsafe {
                (
                    _mm256_loadu_ps(c.as_ptr()),
                    _mm256_loadu_ps(c.as_ptr().add(8)),
                )
            };
            a = _mm512_add_pd(a, f(_mm512_cvtps_pd(lo)));
            b = _mm512_add_pd(b, f(_mm512_cvtps_pd(hi)));
        }
        let mut acc = [0.0f64; LANES];
        // SAFETY: `acc` holds 16 f64.
        unsafe {
            _mm512_storeu_pd(acc.as_mut_ptr(), a);
            _mm512_storeu_pd(acc.as_mut_ptr().add(8), b);
        }
        let rest: f64 = it.remainder().iter().map(|&v| tail(f64::from(v))).sum();
        reduce(acc) + rest
    }

    /// As `lane_min_max`: `vminps(c, lo)` is `if c < lo { c } else { lo }`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn min_max(x: &[f32]) -> (f32, f32) {
        let (mut lo, mut hi) = (
            _mm512_set1_ps(f32::INFINITY),
            _mm512_set1_ps(f32::NEG_INFINITY),
        );
        let mut it = x.chunks_exact(LANES);
        for c in &mut it {
            // SAFETY: `c` holds 16 floats.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            lo = _mm512_min_ps(v, lo);
            hi = _mm512_max_ps(v, hi);
        }
        let (mut l, mut h) = ([0.0f32; LANES], [0.0f32; LANES]);
        // SAFETY: each array holds 16 floats.
        unsafe {
            _mm512_storeu_ps(l.as_mut_ptr(), lo);
            _mm512_storeu_ps(h.as_mut_ptr(), hi);
        }
        let lanes = l
            .iter()
            .zip(&h)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), (&p, &q)| {
                (a.min(p), b.max(q))
            });
        it.remainder()
            .iter()
            .fold(lanes, |(a, b), &v| (a.min(v), b.max(v)))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn part(x: &[f32], start: usize) -> Result<Part, usize> {
        part_with(
            x,
            start,
            |x| sum(x),
            |x, m| sq_dev_sum(x, m),
            |x| min_max(x),
        )
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn sum(x: &[f32]) -> f64 {
        lane_sum(x, |v| v, |v| v)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn sq_dev_sum(x: &[f32], center: f64) -> f64 {
        let c = _mm512_set1_pd(center);
        let square = |v| {
            let d = _mm512_sub_pd(v, c);
            _mm512_mul_pd(d, d)
        };
        lane_sum(x, square, |v| (v - center) * (v - center))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn abs_dev_sum(x: &[f32], center: f64) -> f64 {
        let c = _mm512_set1_pd(center);
        lane_sum(
            x,
            |v| _mm512_abs_pd(_mm512_sub_pd(v, c)),
            |v| (v - center).abs(),
        )
    }
}

fn merge(a: Part, b: Part) -> Part {
    let n = a.n + b.n;
    let delta = b.mean - a.mean;
    let wb = b.n as f64 / n as f64;
    Part {
        n,
        mean: a.mean + delta * wb,
        m2: a.m2 + b.m2 + delta * delta * a.n as f64 * wb,
        min: a.min.min(b.min),
        max: a.max.max(b.max),
    }
}

/// n, min, max, mean and population std of `x` in one parallel pass.
/// Empty `x` gives all zeros.
///
/// # Errors
/// [`NuqError::NonFinite`] for the lowest index holding a NaN or infinity.
pub fn moments(x: &[f32]) -> Result<Moments> {
    let parts = map_parts(x.len(), |r| part(&x[r.clone()], r.start));
    let mut acc: Option<Part> = None;
    for p in parts {
        let p = p.map_err(|index| NuqError::NonFinite {
            index,
            value: x[index],
        })?;
        acc = Some(acc.map_or(p, |a| merge(a, p)));
    }
    Ok(acc.map_or(Moments::default(), |a| Moments {
        n: a.n,
        min: f64::from(a.min),
        max: f64::from(a.max),
        mean: a.mean,
        std: (a.m2 / a.n as f64).max(0.0).sqrt(),
    }))
}

/// Mean of `|x - center|` (0 for empty `x`), parallel and deterministic.
pub fn mean_abs_dev(x: &[f32], center: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let sums = map_parts(x.len(), |r| abs_dev_sum(&x[r], center));
    sums.into_iter().sum::<f64>() / x.len() as f64
}

/// Smallest and largest value (as f64) of finite `x`; `(0, 0)` if empty.
pub(crate) fn min_max(x: &[f32]) -> (f64, f64) {
    if x.is_empty() {
        return (0.0, 0.0);
    }
    let (lo, hi) = fold_parts(
        x.len(),
        || (f32::INFINITY, f32::NEG_INFINITY),
        |(a, b), r| x[r].iter().fold((a, b), |(a, b), &v| (a.min(v), b.max(v))),
        |(a, b), (c, d)| (a.min(c), b.max(d)),
    );
    (f64::from(lo), f64::from(hi))
}

const _: () = assert!(PART.is_multiple_of(LANES));

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn two_pass(x: &[f32]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    /// The part loops this CPU runs (AVX-512 where present) give the
    /// portable loops' results bit for bit, tails of every length included.
    #[test]
    fn part_kernels_agree_with_the_portable_loops() {
        for len in [1usize, 15, 16, 17, 100, 1023, PART] {
            let x: Vec<f32> = (0..len)
                .map(|i| {
                    ((i * 7919) % 1009) as f32 * 1e-3 - 0.4 + if i % 7 == 0 { 1e3 } else { 0.0 }
                })
                .collect();
            let got = part(&x, 0).unwrap();
            let want = part_with(
                &x,
                0,
                |x| lane_sum(x, |v| v),
                |x, m| lane_sum(x, |v| (v - m) * (v - m)),
                lane_min_max,
            )
            .unwrap();
            assert_eq!(sum(&x), lane_sum(&x, |v| v));
            assert_eq!(sq_dev_sum(&x, 0.3), lane_sum(&x, |v| (v - 0.3) * (v - 0.3)));
            assert_eq!(
                (got.mean, got.m2, got.min, got.max),
                (want.mean, want.m2, want.min, want.max)
            );
            assert_eq!(abs_dev_sum(&x, 0.3), lane_sum(&x, |v| (v - 0.3).abs()));
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                let (p, s, q, a) = unsafe {
                    (
                        x86_avx2::part(&x, 0).unwrap(),
                        x86_avx2::sum(&x),
                        x86_avx2::sq_dev_sum(&x, 0.3),
                        x86_avx2::abs_dev_sum(&x, 0.3),
                    )
                };
                assert_eq!(
                    (p.mean, p.m2, p.min, p.max),
                    (want.mean, want.m2, want.min, want.max)
                );
                assert_eq!(s, lane_sum(&x, |v| v));
                assert_eq!(q, lane_sum(&x, |v| (v - 0.3) * (v - 0.3)));
                assert_eq!(a, lane_sum(&x, |v| (v - 0.3).abs()));
            }
        }
    }

    #[test]
    fn empty_is_all_zero() {
        assert_eq!(moments(&[]).unwrap(), Moments::default());
        assert_eq!(mean_abs_dev(&[], 1.0), 0.0);
    }

    #[test]
    fn reports_the_lowest_non_finite_index() {
        let mut x = vec![1.0f32; 5 * PART];
        x[3 * PART + 7] = f32::INFINITY;
        x[PART + 2] = f32::NAN;
        x[4 * PART] = f32::NEG_INFINITY;
        match moments(&x) {
            Err(NuqError::NonFinite { index, value }) => {
                assert_eq!(index, PART + 2);
                assert!(value.is_nan());
            }
            other => panic!("{other:?}"),
        }
        // Per-row fits find it too, for any row length.
        for row_len in [5 * PART, PART, 5, 1] {
            assert!(matches!(
                super::super::fit::fit_rows(&x, row_len),
                Err(NuqError::NonFinite { index, .. }) if index == PART + 2
            ));
        }
    }

    #[test]
    fn large_offset_does_not_cancel() {
        // mean 1000, std 1e-3: E[x²] - mean² would lose every digit.
        let x: Vec<f32> = (0..3 * PART + 5)
            .map(|i| 1000.0 + if i % 2 == 0 { 1e-3 } else { -1e-3 } * 0.9765625)
            .collect();
        let m = moments(&x).unwrap();
        let (mean, std) = two_pass(&x);
        assert!((m.mean - mean).abs() < 1e-12 * 1000.0);
        assert!((m.std / std - 1.0).abs() < 1e-9, "{} vs {}", m.std, std);
    }

    proptest! {
        #[test]
        fn agrees_with_two_pass(x in prop::collection::vec(-1e4f32..1e4, 1..3000)) {
            let m = moments(&x).unwrap();
            let (mean, std) = two_pass(&x);
            prop_assert!((m.mean - mean).abs() <= 1e-9 * (1.0 + mean.abs()));
            prop_assert!((m.std - std).abs() <= 1e-9 * (1.0 + std));
            prop_assert_eq!(m.n, x.len());
            prop_assert_eq!(m.min, x.iter().copied().fold(f32::INFINITY, f32::min) as f64);
            prop_assert_eq!(m.max, x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64);
            prop_assert_eq!((m.min, m.max), min_max(&x));
            let mad = x.iter().map(|&v| (f64::from(v) - 3.0).abs()).sum::<f64>() / x.len() as f64;
            prop_assert!((mean_abs_dev(&x, 3.0) - mad).abs() <= 1e-9 * (1.0 + mad));
        }
    }
}
