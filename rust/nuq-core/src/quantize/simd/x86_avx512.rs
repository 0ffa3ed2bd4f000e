//! AVX-512 versions of `scalar`'s loops: `span_error` written out in
//! intrinsics (the same operations in the same order), `scan_task` the
//! portable loop compiled for AVX-512F. Each function requires AVX-512F.

use std::arch::x86_64::*;

use super::super::group::RowSample;
use super::scalar::{self, Book, Sums};

/// 16 values per step: codes decoded by a two-register permute (up to 32
/// levels) or a gather, each half of the f32 differences widened to f64 and
/// added to the 8 lanes in element order.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn span_error(xs: &[f32], cs: &[u8], book: &Book, levels: usize) -> f64 {
    const STEP: usize = 16;
    let table = book.table.as_ptr();
    // SAFETY: `table` holds 256 floats.
    let (lo, hi) = unsafe { (_mm512_loadu_ps(table), _mm512_loadu_ps(table.add(16))) };
    let (loc, scale) = (_mm512_set1_ps(book.loc), _mm512_set1_ps(book.scale));
    let mut sse = _mm512_setzero_pd();
    let n = xs.len().min(cs.len()) / STEP * STEP;
    for s in (0..n).step_by(STEP) {
        // SAFETY: s + 16 <= n, within both slices.
        let (v, c) = unsafe {
            (
                _mm512_loadu_ps(xs.as_ptr().add(s)),
                _mm512_cvtepu8_epi32(_mm_loadu_si128(cs.as_ptr().add(s).cast())),
            )
        };
        let level = if levels <= 32 {
            _mm512_permutex2var_ps(lo, c, hi)
        } else {
            // SAFETY: codes are u8, and `table` holds 256 floats.
            unsafe { _mm512_i32gather_ps::<4>(c, table.cast()) }
        };
        let d = _mm512_sub_ps(v, _mm512_add_ps(loc, _mm512_mul_ps(scale, level)));
        for half in [
            _mm512_castps512_ps256(d),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(d))),
        ] {
            let w = _mm512_cvtps_pd(half);
            sse = _mm512_add_pd(sse, _mm512_mul_pd(w, w));
        }
    }
    let mut sums = Sums::default();
    // SAFETY: the array holds 8 f64.
    unsafe { _mm512_storeu_pd(sums.sse.as_mut_ptr(), sse) };
    sums.add(&xs[n..], &cs[n..], book).total()
}

/// `scalar::scan_task` compiled for AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) fn scan_task(
    data: &[f32],
    g: usize,
    at: RowSample,
    scale: &mut [f32],
    hist: &mut [f64],
) {
    scalar::scan_task(data, g, at, scale, hist);
}

/// `scalar::span_absmax` compiled for AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) fn span_absmax(row: &[f32], span: usize, out: &mut [f32]) {
    scalar::span_absmax(row, span, out);
}
