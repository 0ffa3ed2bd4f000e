//! The portable references of the quantizer's loops: the definitions that
//! every other version (`x86_avx2`, `x86_avx512`) reproduces bit for bit.

use half::f16;

use super::super::group::{absmax, RowSample};
use crate::solve::BINS;

/// Interleaved partial sums of [`span_error`].
const LANES: usize = 8;

/// Squared error of an encoded span: `Σ (v - w)²` with `w = loc + scale ·
/// table[code]`, the decoded weight (f32: multiply, then add). The sum runs
/// in `LANES` interleaved f64 partial sums (independent add chains):
/// element `i` goes to lane `i % LANES`, in order, except a last partial
/// chunk, which gets its own sum; the lanes are added last. (The weights'
/// energy `Σ v²` comes from the fit's moments, see `energy_of`.)
pub(super) fn span_error(xs: &[f32], cs: &[u8], book: &Book) -> f64 {
    Sums::default().add(xs, cs, book).total()
}

/// How a code decodes.
pub(super) struct Book<'a> {
    pub loc: f32,
    pub scale: f32,
    pub table: &'a [f32; 256],
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
pub(super) struct Sums {
    pub sse: [f64; LANES],
    tail: f64,
}

impl Sums {
    /// Adds a span that starts at lane 0 and ends the span (the scalar
    /// reference, and the tail of the kernels).
    pub(super) fn add(mut self, xs: &[f32], cs: &[u8], book: &Book) -> Self {
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

    pub(super) fn total(&self) -> f64 {
        self.sse.iter().sum::<f64>() + self.tail
    }
}

/// The absmax of each `span`-long piece of `row` (the last may be
/// shorter), in order, into `out` (one per piece).
#[inline(always)]
pub(in crate::quantize) fn span_absmax(row: &[f32], span: usize, out: &mut [f32]) {
    for (m, piece) in out.iter_mut().zip(row.chunks(span)) {
        *m = absmax(piece);
    }
}

/// One task's part of `group::scan_groups` (`hist` empty: scales only):
/// each group's absmax rounded to the nearest f16, and the group's values
/// binned into `hist` when the group is in the sample. (The group tests
/// compare every version with this one.)
#[inline(always)]
pub(in crate::quantize) fn scan_task(
    data: &[f32],
    g: usize,
    at: RowSample,
    scale: &mut [f32],
    hist: &mut [f64],
) {
    assert!(hist.is_empty() || hist.len() == BINS, "one weight per bin");
    let half_span = (BINS - 1) as f32 / 2.0;
    // A group's bins, computed in one vectorizable loop before the scatter
    // (which then runs without waiting on the arithmetic).
    let mut idx = vec![0u32; if hist.is_empty() { 0 } else { g }];
    for (k, (s, grp)) in scale.iter_mut().zip(data.chunks_exact(g)).enumerate() {
        *s = f16::from_f32(absmax(grp).min(f16::MAX.to_f32())).to_f32();
        if hist.is_empty() || *s == 0.0 || !at.holds(k) {
            continue;
        }
        let (inv, w) = (1.0 / *s, f64::from(*s) * f64::from(*s));
        for (b, &v) in idx.iter_mut().zip(grp) {
            // max/min rather than clamp: they map a NaN (a non-finite
            // input, which the fit running beside this rejects) to -1,
            // where clamp keeps it.
            #[allow(clippy::manual_clamp)]
            let pos = ((v * inv).max(-1.0).min(1.0) + 1.0) * half_span;
            // `pos.round()` for pos >= 0 (halves up), without the libm call
            // and in f32: truncation is floor, and `pos - floor(pos)` is
            // exact (Sterbenz, as floor(pos) >= pos / 2 once it is >= 1).
            // SAFETY: pos lies in [0, BINS - 1] whatever v is (above), so
            // it fits an i32 (the unchecked conversion vectorizes).
            let floor = unsafe { pos.to_int_unchecked::<i32>() };
            *b = (floor + i32::from(pos - floor as f32 >= 0.5)) as u32;
        }
        for &b in &idx {
            // SAFETY: b <= BINS - 1 (above) and `hist` holds BINS weights
            // (asserted at the top).
            unsafe { *hist.get_unchecked_mut(b as usize) += w };
        }
    }
}
