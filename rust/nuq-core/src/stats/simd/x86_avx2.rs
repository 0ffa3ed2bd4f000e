//! AVX2 versions. LLVM compiles the portable f32-to-f64 lane loops to
//! 128-bit halves and the portable range to shuffles and blends, so those are
//! written out: lanes 0..4, 4..8, 8..12 and 12..16 of `scalar::LANES` in four
//! registers, the same IEEE operations in the same order as `scalar`. The
//! others are the portable loops compiled for AVX2 (the baseline x86-64
//! target has 128-bit vectors only). Each function requires AVX2.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::grid::Grid;
use super::super::source::{Source, Value, CHUNK};
use super::scalar::{self, reduce, LANES};
use super::BandSplit;

/// `Σ f(x)` as `scalar::lane_sum`, with `f` given as a vector and a scalar op.
#[inline]
#[target_feature(enable = "avx2")]
fn lane_sum(x: &[f32], f: impl Fn(__m256d) -> __m256d, tail: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [_mm256_setzero_pd(); 4];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds 16 floats, `4 * j + 4 <= 16`.
            let v = unsafe { _mm_loadu_ps(c.as_ptr().add(4 * j)) };
            *a = _mm256_add_pd(*a, f(_mm256_cvtps_pd(v)));
        }
    }
    let mut lanes = [0.0f64; LANES];
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: `lanes` holds 16 f64, `4 * j + 4 <= 16`.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr().add(4 * j), *a) };
    }
    let rest: f64 = it.remainder().iter().map(|&v| tail(f64::from(v))).sum();
    reduce(lanes) + rest
}

#[target_feature(enable = "avx2")]
pub(super) fn sum(x: &[f32]) -> f64 {
    lane_sum(x, |v| v, |v| v)
}

#[target_feature(enable = "avx2")]
pub(super) fn sq_dev_sum(x: &[f32], center: f64) -> f64 {
    let c = _mm256_set1_pd(center);
    let square = |v| {
        let d = _mm256_sub_pd(v, c);
        _mm256_mul_pd(d, d)
    };
    lane_sum(x, square, |v| (v - center) * (v - center))
}

#[target_feature(enable = "avx2")]
pub(super) fn abs_dev_sum(x: &[f32], center: f64) -> f64 {
    let c = _mm256_set1_pd(center);
    // |d| clears the sign bit, as f64::abs does.
    let sign = _mm256_set1_pd(-0.0);
    lane_sum(
        x,
        |v| _mm256_andnot_pd(sign, _mm256_sub_pd(v, c)),
        |v| (v - center).abs(),
    )
}

/// As `scalar::min_max`: `vminps(c, lo)` is `if c < lo { c } else { lo }`.
#[target_feature(enable = "avx2")]
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut lo = [_mm256_set1_ps(f32::INFINITY); 2];
    let mut hi = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for j in 0..2 {
            // SAFETY: `c` holds 16 floats, `8 * j + 8 <= 16`.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * j)) };
            lo[j] = _mm256_min_ps(v, lo[j]);
            hi[j] = _mm256_max_ps(v, hi[j]);
        }
    }
    let (mut l, mut h) = ([0.0f32; LANES], [0.0f32; LANES]);
    for j in 0..2 {
        // SAFETY: each array holds 16 floats, `8 * j + 8 <= 16`.
        unsafe {
            _mm256_storeu_ps(l.as_mut_ptr().add(8 * j), lo[j]);
            _mm256_storeu_ps(h.as_mut_ptr().add(8 * j), hi[j]);
        }
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

#[target_feature(enable = "avx2")]
pub(super) fn count_below<const P: usize>(x: &[f32], pivots: &[f32; P]) -> [usize; P] {
    scalar::count_below(x, pivots)
}

#[target_feature(enable = "avx2")]
pub(super) fn band_split(x: &[f32], lo: f64, hi: f64, centre: f64) -> BandSplit {
    scalar::band_split(x, lo, hi, centre)
}

#[target_feature(enable = "avx2")]
pub(super) fn in_spans(spans: &[(f32, f32)], vals: &[f32]) -> u64 {
    scalar::in_spans(spans, vals)
}

#[target_feature(enable = "avx2")]
pub(super) fn index_block<V: Value>(grid: &Grid, vals: &[V], out: &mut [u32; CHUNK]) {
    scalar::index_block(grid, vals, out);
}

#[target_feature(enable = "avx2")]
pub(super) fn count_range<S: Source>(src: &S, range: Range<usize>, grid: &Grid, h: &mut [u32]) {
    scalar::count_range(src, range, grid, h);
}
