//! One-pass moments and the mean absolute deviation, with f64 accumulation
//! over fixed-size parts combined in index order (bit-identical for any
//! thread count).

use super::parts::{fold_parts, map_parts, PART};
use super::simd::{self, abs_dev_sum, sq_dev_sum, sum, LANES};
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

/// `Err(first offending index)` if the part holds a NaN or infinity.
fn part(x: &[f32], start: usize) -> std::result::Result<Part, usize> {
    let total = sum(x);
    if !total.is_finite() {
        // f32 values cannot overflow an f64 sum: a non-finite sum means a
        // non-finite element.
        let i = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(start + i);
    }
    let mean = total / x.len() as f64;
    let (min, max) = simd::min_max(x);
    let m2 = sq_dev_sum(x, mean);
    Ok(Part {
        n: x.len(),
        mean,
        m2,
        min,
        max,
    })
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

    /// A part's statistics are its own sum's mean, the centred sum of
    /// squares about it and its range, for tails of every length.
    #[test]
    fn parts_are_their_sums_and_range() {
        for len in [1usize, 15, 16, 17, 100, 1023, PART] {
            let x: Vec<f32> = (0..len)
                .map(|i| {
                    ((i * 7919) % 1009) as f32 * 1e-3 - 0.4 + if i % 7 == 0 { 1e3 } else { 0.0 }
                })
                .collect();
            let p = part(&x, 0).unwrap();
            let mean = sum(&x) / len as f64;
            assert_eq!(p.mean, mean);
            assert_eq!(p.m2, sq_dev_sum(&x, mean));
            let (lo, hi) = (
                x.iter().copied().fold(f32::INFINITY, f32::min),
                x.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            );
            assert_eq!((p.n, p.min, p.max), (len, lo, hi));
            let (m, s) = two_pass(&x);
            assert!((p.mean - m).abs() <= 1e-12 * (1.0 + m.abs()));
            assert!((p.m2 / len as f64 - s * s).abs() <= 1e-9 * (1.0 + s * s));
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
