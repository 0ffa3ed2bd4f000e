//! The portable loops compiled for AVX2 (the baseline x86-64 target has
//! 128-bit vectors only): the same code as `scalar`, so the same operations
//! in the same order, bit for bit. Each function requires AVX2.

use std::ops::Range;

use super::super::grid::Grid;
use super::super::source::{Source, Value, CHUNK};
use super::{scalar, BandSplit};

#[target_feature(enable = "avx2")]
pub(super) fn sum(x: &[f32]) -> f64 {
    scalar::sum(x)
}

#[target_feature(enable = "avx2")]
pub(super) fn sq_dev_sum(x: &[f32], center: f64) -> f64 {
    scalar::sq_dev_sum(x, center)
}

#[target_feature(enable = "avx2")]
pub(super) fn abs_dev_sum(x: &[f32], center: f64) -> f64 {
    scalar::abs_dev_sum(x, center)
}

#[target_feature(enable = "avx2")]
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    scalar::min_max(x)
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
