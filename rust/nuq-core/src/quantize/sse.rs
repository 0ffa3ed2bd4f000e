//! Squared error of an encoded span: `Σ (v - w)²` with `w = loc + scale ·
//! table[code]`, the decoded weight (f32: multiply, then add). The sum runs
//! in `LANES` interleaved f64 partial sums (independent add chains):
//! element `i` goes to lane `i % LANES`, in order, except a last partial
//! chunk, which gets its own sum; the lanes are added last. The AVX-512
//! and AVX2 kernels keep exactly that order and the same IEEE operations, so
//! every kernel returns the scalar result bit for bit. (The weights' energy `Σ
//! v²` comes from the fit's moments, see `energy_of`.)

use crate::pack::Kernel;

/// Interleaved partial sums.
const LANES: usize = 8;

/// `Σ (v - w)²` over a span with `kernel` (one this CPU runs).
/// `levels`: how many entries of `table` the codes can index.
pub(super) fn span_error(
    kernel: Kernel,
    xs: &[f32],
    cs: &[u8],
    loc: f32,
    scale: f32,
    table: &[f32; 256],
    levels: usize,
) -> f64 {
    debug_assert_eq!(xs.len(), cs.len());
    let book = Book { loc, scale, table };
    match kernel {
        // SAFETY: the caller passes a kernel this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { span_error_avx512(xs, cs, &book, levels) },
        // SAFETY: the caller passes a kernel this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { span_error_avx2(xs, cs, &book, levels) },
        _ => Sums::default().add(xs, cs, &book).total(),
    }
}

/// How a code decodes.
struct Book<'a> {
    loc: f32,
    scale: f32,
    table: &'a [f32; 256],
}

impl Book<'_> {
    #[inline(always)]
    fn term(&self, v: f32, c: u8) -> f64 {
        let d = f64::from(v - (self.loc + self.scale * self.table[usize::from(c)]));
        d * d
    }
}

/// The partial sums.
#[derive(Default)]
struct Sums {
    sse: [f64; LANES],
    tail: f64,
}

impl Sums {
    /// Adds a span that starts at lane 0 and ends the span (the scalar
    /// reference, and the tail of the kernels).
    fn add(mut self, xs: &[f32], cs: &[u8], book: &Book) -> Self {
        let (mut xc, mut cc) = (xs.chunks_exact(LANES), cs.chunks_exact(LANES));
        for (x8, c8) in (&mut xc).zip(&mut cc) {
            for j in 0..LANES {
                self.sse[j] += book.term(x8[j], c8[j]);
            }
        }
        for (&v, &c) in xc.remainder().iter().zip(cc.remainder()) {
            self.tail += book.term(v, c);
        }
        self
    }

    fn total(&self) -> f64 {
        self.sse.iter().sum::<f64>() + self.tail
    }
}

/// 16 values per step: codes decoded by a two-register permute (up to 32
/// levels) or a gather, each half of the f32 differences widened to f64 and
/// added to the 8 lanes in element order.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn span_error_avx512(xs: &[f32], cs: &[u8], book: &Book, levels: usize) -> f64 {
    use std::arch::x86_64::*;
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

/// 8 values per step: codes decoded by one permute (up to 8 levels), two and
/// a blend (up to 16) or a gather, the low and high halves of the f32
/// differences widened to f64 and added to lanes 0–3 and 4–7.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn span_error_avx2(xs: &[f32], cs: &[u8], book: &Book, levels: usize) -> f64 {
    use std::arch::x86_64::*;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU runs gives the scalar sums bit for bit, for
    /// spans of every length mod 16 and tables of 2..=256 levels.
    #[test]
    fn kernels_agree_with_the_scalar_sums() {
        for levels in [2usize, 8, 9, 16, 17, 32, 33, 256] {
            let mut table = [0.0f32; 256];
            for (k, t) in table.iter_mut().take(levels).enumerate() {
                *t = (k as f32 - levels as f32 / 2.0) * 0.37 + (k as f32).sin() * 0.01;
            }
            for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 24, 31, 100, 1001] {
                let xs: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919) % 613) as f32 * 0.013 - 4.0)
                    .collect();
                let cs: Vec<u8> = (0..len).map(|i| ((i * 31 + 7) % levels) as u8).collect();
                let want = span_error(Kernel::Scalar, &xs, &cs, 0.25, 1.5, &table, levels);
                // A plain f64 sum agrees to rounding.
                let plain: f64 = xs
                    .iter()
                    .zip(&cs)
                    .map(|(&v, &c)| f64::from(v - (0.25 + 1.5 * table[usize::from(c)])).powi(2))
                    .sum();
                assert!((want - plain).abs() <= 1e-12 * plain.max(1.0));
                for kernel in crate::pack::available_kernels() {
                    let got = span_error(kernel, &xs, &cs, 0.25, 1.5, &table, levels);
                    assert_eq!(got, want, "{kernel:?}, {levels} levels, len {len}");
                }
            }
        }
    }
}
