//! The quantizer's inner loops, one file per instruction set beside the
//! portable reference (`scalar`), dispatched here: the squared error of an
//! encoded span ([`span_error`]) and the per-group scan of group
//! granularity ([`scan_task`]). Every version performs the reference's
//! IEEE operations in the reference's order, so every result is the
//! reference's bit for bit, whichever kernel runs; the tests compare each
//! version the CPU runs with the reference.

pub(super) mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use super::group::RowSample;
use crate::pack::Kernel;

// SAFETY (every `unsafe` call below): the kernel is one this CPU runs (the
// callers pass the encoder's kernel, `Kernel::selected()` or, in the tests,
// one of `available_kernels()`).

/// `Σ (v - w)²` over a span (see [`scalar::span_error`]) with `kernel` (one
/// this CPU runs). `levels`: how many entries of `table` the codes can
/// index.
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
    let book = scalar::Book { loc, scale, table };
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { x86_avx512::span_error(xs, cs, &book, levels) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86_avx2::span_error(xs, cs, &book, levels) },
        _ => scalar::span_error(xs, cs, &book),
    }
}

/// [`scalar::scan_task`] with `kernel` (one this CPU runs).
pub(super) fn scan_task(
    kernel: Kernel,
    data: &[f32],
    g: usize,
    at: RowSample,
    scale: &mut [f32],
    hist: &mut [f64],
) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { x86_avx512::scan_task(data, g, at, scale, hist) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86_avx2::scan_task(data, g, at, scale, hist) },
        _ => scalar::scan_task(data, g, at, scale, hist),
    }
}

/// [`scalar::span_absmax`] with `kernel` (one this CPU runs).
pub(super) fn span_absmax(kernel: Kernel, row: &[f32], span: usize, out: &mut [f32]) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { x86_avx512::span_absmax(row, span, out) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86_avx2::span_absmax(row, span, out) },
        _ => scalar::span_absmax(row, span, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU runs gives the scalar absmax of every span, for
    /// rows and spans of lengths on either side of the lane counts, with
    /// signs, zeros, a NaN (skipped) and an infinity.
    #[test]
    fn span_absmax_agrees_with_the_scalar_one() {
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 200, 768] {
            let mut row: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 613) as f32 * 0.013 - 4.0)
                .collect();
            if len > 20 {
                row[len / 2] = f32::NAN;
                row[len / 3] = f32::NEG_INFINITY;
                row[len - 1] = -9.5;
            }
            for span in [1usize, 7, 16, 64, 100] {
                let n = len.div_ceil(span);
                let mut want = vec![0f32; n];
                span_absmax(Kernel::Scalar, &row, span, &mut want);
                for (m, piece) in want.iter().zip(row.chunks(span)) {
                    let fold = piece.iter().fold(0f32, |a, v| a.max(v.abs()));
                    assert_eq!(m.to_bits(), fold.to_bits(), "len {len}, span {span}");
                }
                for kernel in crate::pack::available_kernels() {
                    let mut got = vec![0f32; n];
                    span_absmax(kernel, &row, span, &mut got);
                    let bits = |v: &[f32]| v.iter().map(|m| m.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{kernel:?}, len {len}, span {span}"
                    );
                }
            }
        }
    }

    /// Every kernel this CPU runs gives the scalar sums bit for bit, for
    /// spans of every length mod 16 and tables of 2..=256 levels.
    #[test]
    fn span_errors_agree_with_the_scalar_sums() {
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
