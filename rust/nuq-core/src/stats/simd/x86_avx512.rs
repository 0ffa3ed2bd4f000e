//! AVX-512 versions. LLVM splits the portable f32-to-f64 lane loops into
//! 128-bit halves and spills their lanes, so those are written out: lanes
//! 0..8 and 8..16 in two registers, the same adds in the same order as
//! `scalar` (masked-out terms added as the portable code adds `0.0`). The
//! others are the portable loops compiled for AVX-512F. Each function
//! requires AVX-512F.

use std::arch::x86_64::*;

use super::super::grid::Grid;
use super::super::source::{Value, CHUNK};
use super::scalar::{self, add_tail, reduce, LANES};
use super::BandSplit;

/// `Σ f(x)` as `scalar::lane_sum`, with `f` given as a vector and a scalar op.
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

/// As `scalar::min_max`: `vminps(c, lo)` is `if c < lo { c } else { lo }`.
#[target_feature(enable = "avx512f")]
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
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
pub(super) fn count_below<const P: usize>(x: &[f32], pivots: &[f32; P]) -> [usize; P] {
    scalar::count_below(x, pivots)
}

#[target_feature(enable = "avx512f")]
pub(super) fn count_bins(x: &[f32], counts: &mut [u32], index: impl Fn(f32) -> u32) {
    scalar::count_bins(x, counts, index);
}

#[target_feature(enable = "avx512f")]
pub(super) fn index_block<V: Value>(grid: &Grid, vals: &[V], out: &mut [u32; CHUNK]) {
    scalar::index_block(grid, vals, out);
}

/// The values of block `c` whose bit of `outside` is clear. Out of line
/// and cold: a call inside the loop would otherwise keep its
/// accumulators in memory.
#[cold]
#[inline(never)]
fn push_band(band: &mut Vec<f32>, c: &[f32], outside: u32) {
    band.extend((0..LANES).filter(|l| outside >> l & 1 == 0).map(|l| c[l]));
}

/// As `scalar::band_split`, the band's values pushed when a block holds
/// any (rarely), so no second sweep is needed.
#[target_feature(enable = "avx512f")]
pub(super) fn band_split(x: &[f32], lo: f64, hi: f64, centre: f64) -> BandSplit {
    let (lo_v, hi_v, c_v) = (
        _mm512_set1_pd(lo),
        _mm512_set1_pd(hi),
        _mm512_set1_pd(centre),
    );
    let (mut below_0, mut below_1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    let (mut all_0, mut all_1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    // Counts per lane, 64-bit.
    let mut n_below = _mm512_setzero_si512();
    let one = _mm512_set1_epi64(1);
    let mut band = Vec::new();
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        // SAFETY: `c` holds 16 floats.
        let (v0, v1) = unsafe {
            (
                _mm512_cvtps_pd(_mm256_loadu_ps(c.as_ptr())),
                _mm512_cvtps_pd(_mm256_loadu_ps(c.as_ptr().add(8))),
            )
        };
        let (b0, b1) = (
            _mm512_cmp_pd_mask::<_CMP_LT_OQ>(v0, lo_v),
            _mm512_cmp_pd_mask::<_CMP_LT_OQ>(v1, lo_v),
        );
        let (a0, a1) = (
            _mm512_cmp_pd_mask::<_CMP_GT_OQ>(v0, hi_v),
            _mm512_cmp_pd_mask::<_CMP_GT_OQ>(v1, hi_v),
        );
        let (d0, d1) = (_mm512_sub_pd(v0, c_v), _mm512_sub_pd(v1, c_v));
        below_0 = _mm512_add_pd(below_0, _mm512_maskz_mov_pd(b0, d0));
        below_1 = _mm512_add_pd(below_1, _mm512_maskz_mov_pd(b1, d1));
        all_0 = _mm512_add_pd(all_0, d0);
        all_1 = _mm512_add_pd(all_1, d1);
        n_below = _mm512_mask_add_epi64(n_below, b0, n_below, one);
        n_below = _mm512_mask_add_epi64(n_below, b1, n_below, one);
        let outside = u32::from(b0 | a0) | u32::from(b1 | a1) << 8;
        if outside != 0xffff {
            push_band(&mut band, c, outside);
        }
    }
    let sum = |h0: __m512d, h1: __m512d| {
        let mut out = [0.0f64; LANES];
        // SAFETY: `out` holds 16 f64.
        unsafe {
            _mm512_storeu_pd(out.as_mut_ptr(), h0);
            _mm512_storeu_pd(out.as_mut_ptr().add(8), h1);
        }
        reduce(out)
    };
    let count = |n: __m512i| {
        let mut out = [0u64; 8];
        // SAFETY: `out` holds 8 u64.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), n) };
        out.iter().sum::<u64>() as usize
    };
    let mut s = BandSplit {
        below_n: count(n_below),
        below_sum: sum(below_0, below_1),
        all_sum: sum(all_0, all_1),
        band,
    };
    let tail = chunks.remainder();
    add_tail(&mut s, tail, lo, centre);
    s.band
        .extend(tail.iter().filter(|&&v| (lo..=hi).contains(&f64::from(v))));
    s
}

/// As `scalar::in_spans`, a mask register per vector of 16 values; a
/// partial vector is loaded under a mask, the missing lanes NaN, which no
/// range holds.
#[target_feature(enable = "avx512f")]
pub(super) fn in_spans(spans: &[(f32, f32)], vals: &[f32]) -> u64 {
    debug_assert!(vals.len() <= CHUNK);
    let mut mask = 0u64;
    for k in 0..vals.len().div_ceil(16) {
        let left = vals.len() - 16 * k;
        let valid = if left >= 16 { !0 } else { (1u16 << left) - 1 };
        // SAFETY: only the lanes of `valid` are read, all inside `vals`.
        let v = unsafe {
            _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NAN), valid, vals.as_ptr().add(16 * k))
        };
        let mut hit: __mmask16 = 0;
        for &(lo, hi) in spans {
            let ge = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, _mm512_set1_ps(lo));
            hit |= _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(ge, v, _mm512_set1_ps(hi));
        }
        mask |= u64::from(hit) << (16 * k);
    }
    mask
}

/// Most ranges `span_masks` holds in registers.
pub(super) const REG_SPANS: usize = 4;

/// `in_spans` of every `CHUNK` of `vals` into `masks`, with the (at most
/// `REG_SPANS`) ranges held in registers across the whole slice.
#[target_feature(enable = "avx512f")]
pub(super) fn span_masks(spans: &[(f32, f32)], vals: &[f32], masks: &mut [u64]) {
    match spans.len() {
        0 => masks.fill(0),
        1 => masks_n::<1>(spans, vals, masks),
        2 => masks_n::<2>(spans, vals, masks),
        3 => masks_n::<3>(spans, vals, masks),
        4 => masks_n::<4>(spans, vals, masks),
        n => panic!("span_masks: {n} ranges, at most {REG_SPANS}"),
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn masks_n<const N: usize>(spans: &[(f32, f32)], vals: &[f32], masks: &mut [u64]) {
    let lo: [__m512; N] = std::array::from_fn(|k| _mm512_set1_ps(spans[k].0));
    let hi: [__m512; N] = std::array::from_fn(|k| _mm512_set1_ps(spans[k].1));
    for (m, chunk) in masks.iter_mut().zip(vals.chunks(CHUNK)) {
        let mut mask = 0u64;
        for k in 0..chunk.len().div_ceil(16) {
            let left = chunk.len() - 16 * k;
            let valid = if left >= 16 { !0 } else { (1u16 << left) - 1 };
            // SAFETY: only the lanes of `valid` are read, all inside `chunk`.
            let v = unsafe {
                _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NAN), valid, chunk.as_ptr().add(16 * k))
            };
            let mut hit: __mmask16 = 0;
            for j in 0..N {
                let ge = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, lo[j]);
                hit |= _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(ge, v, hi[j]);
            }
            mask |= u64::from(hit) << (16 * k);
        }
        *m = mask;
    }
}
