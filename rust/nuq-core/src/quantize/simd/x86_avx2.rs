//! AVX2 versions of `scalar`'s loops: `span_error` written out in
//! intrinsics (the same operations in the same order), `scan_task` the
//! portable loop compiled for AVX2. Each function requires AVX2.

use std::arch::x86_64::*;

use super::super::group::RowSample;
use super::scalar::{self, Book, Sums};

/// 8 values per step: codes decoded by one permute (up to 8 levels), two and
/// a blend (up to 16) or a gather, the low and high halves of the f32
/// differences widened to f64 and added to lanes 0–3 and 4–7.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn span_error(xs: &[f32], cs: &[u8], book: &Book, levels: usize) -> f64 {
    const STEP: usize = 8;
    let table = book.table.as_ptr();
    // SAFETY: `table` holds 256 floats.
    let (lo, hi) = unsafe { (_mm256_loadu_ps(table), _mm256_loadu_ps(table.add(8))) };
    let (loc, scale) = (_mm256_set1_ps(book.loc), _mm256_set1_ps(book.scale));
    let seven = _mm256_set1_epi32(7);
    let (mut sse_lo, mut sse_hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let n = xs.len().min(cs.len()) / STEP * STEP;
    for s in (0..n).step_by(STEP) {
        // SAFETY: s + 8 <= n, within both slices.
        let (v, c) = unsafe {
            (
                _mm256_loadu_ps(xs.as_ptr().add(s)),
                _mm256_cvtepu8_epi32(_mm_loadl_epi64(cs.as_ptr().add(s).cast())),
            )
        };
        let level = if levels <= 8 {
            _mm256_permutevar8x32_ps(lo, c)
        } else if levels <= 16 {
            let upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(c, seven));
            _mm256_blendv_ps(
                _mm256_permutevar8x32_ps(lo, c),
                _mm256_permutevar8x32_ps(hi, c),
                upper,
            )
        } else {
            // SAFETY: codes are u8, and `table` holds 256 floats.
            unsafe { _mm256_i32gather_ps::<4>(table, c) }
        };
        let d = _mm256_sub_ps(v, _mm256_add_ps(loc, _mm256_mul_ps(scale, level)));
        let (d_lo, d_hi) = (
            _mm256_cvtps_pd(_mm256_castps256_ps128(d)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(d)),
        );
        sse_lo = _mm256_add_pd(sse_lo, _mm256_mul_pd(d_lo, d_lo));
        sse_hi = _mm256_add_pd(sse_hi, _mm256_mul_pd(d_hi, d_hi));
    }
    let mut sums = Sums::default();
    // SAFETY: the array holds 8 f64.
    unsafe {
        _mm256_storeu_pd(sums.sse.as_mut_ptr(), sse_lo);
        _mm256_storeu_pd(sums.sse.as_mut_ptr().add(4), sse_hi);
    }
    sums.add(&xs[n..], &cs[n..], book).total()
}

/// `scalar::scan_task` compiled for AVX2.
#[target_feature(enable = "avx2")]
pub(super) fn scan_task(
    data: &[f32],
    g: usize,
    at: RowSample,
    scale: &mut [f32],
    hist: &mut [f64],
) {
    scalar::scan_task(data, g, at, scale, hist);
}

/// `scalar::span_absmax` compiled for AVX2.
#[target_feature(enable = "avx2")]
pub(super) fn span_absmax(row: &[f32], span: usize, out: &mut [f32]) {
    scalar::span_absmax(row, span, out);
}
