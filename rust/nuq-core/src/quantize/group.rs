//! Group granularity: each group of `g` consecutive weights of a row is divided
//! by its absmax (stored as f16) and encoded with the implied codebook of the
//! family ([`implied_codebook`]), which the decoder recomputes: nothing but
//! the codes and one f16 per group is stored.
//!
//! With [`FamilyChoice::Auto`] the family is the one whose implied codebook
//! has the smaller error on this tensor's normalised values, each group
//! weighted by its squared scale (so, the error of the real weights up to
//! the binning), rather than the KS choice: what is fitted here is the shape
//! of x / max|x|, not of x. Past `SAMPLED_GROUPS` groups, the values weighed
//! first are those of a sample of whole rows (every k-th row, at least
//! `SAMPLED_GROUPS` groups): the choice is one bit, which a sample settles
//! unless the two codebooks come within `CLOSE` of each other there; then
//! every group is weighed. Both KS statistics are still reported, over every
//! element.

use rayon::prelude::*;

use super::rows::{encode_rows, Codebook, Encoded};
use super::simd::scan_task;
use super::{energy_of, rows_per_task, Config, FamilyChoice, Quantized};
use crate::error::Result;
use crate::family::Family;
use crate::pack::Kernel;
use crate::solve::{bin_centers, implied_codebook, weighted_mse, BINS};
use crate::stats::fit_tensor;

pub(super) fn quantize(
    x: &[f32],
    rows: usize,
    cols: usize,
    g: usize,
    cfg: &Config,
) -> Result<Quantized> {
    // Nothing but the report needs the fit: the scales, the codebook and
    // the codes are computed beside it, filling its serial steps. That side
    // is safe on a NaN or infinity (every index it forms stays in range);
    // the fit reports them, and its error comes first.
    let (fit, coded) = rayon::join(|| fit_tensor(x), || encode_groups(x, rows, cols, g, cfg));
    let fit = fit?;
    let Coded {
        family,
        levels,
        scale,
        enc,
    } = coded?;
    let (fit_loc, fit_scale) = fit.params(family);
    Ok(Quantized {
        rows,
        cols,
        bits: cfg.bits,
        granularity: cfg.granularity,
        family,
        d_gaussian: fit.d_gaussian,
        d_laplace: fit.d_laplace,
        fit_loc,
        fit_scale,
        levels,
        loc: Vec::new(),
        scale,
        packed: enc.packed,
        sse: enc.sse,
        energy: energy_of(x.len(), fit.moments.mean, fit.moments.std),
        implied_codebook: true,
        f16_scales: true,
    })
}

/// What the group side of `quantize` produces.
struct Coded {
    family: Family,
    levels: Vec<f32>,
    scale: Vec<f32>,
    enc: Encoded,
}

/// The groups' scales, the family and its implied codebook, and the codes.
fn encode_groups(x: &[f32], rows: usize, cols: usize, g: usize, cfg: &Config) -> Result<Coded> {
    // A fixed family needs no comparison, hence no histogram.
    let per_row = cols / g;
    let sample = RowSample::new(x.len() / g, per_row);
    let auto = cfg.family == FamilyChoice::Auto;
    let (scale, weights) = scan_groups(x, cols, g, auto.then_some(sample));
    let (family, levels) = match cfg.family {
        FamilyChoice::Fixed(f) => (f, implied_codebook(f, cfg.bits, g)?),
        FamilyChoice::Auto => {
            let on_every = || {
                let every = Some(RowSample::every(per_row));
                best_codebook(&scan_groups(x, cols, g, every).1, g, cfg.bits)
            };
            let choice = settle(best_codebook(&weights, g, cfg.bits)?, sample, on_every)?;
            (choice.family, choice.levels)
        }
    };
    let boundaries: Vec<f32> = levels.windows(2).map(|p| 0.5 * (p[0] + p[1])).collect();
    let book = Codebook {
        bits: cfg.bits,
        levels: &levels,
        boundaries: &boundaries,
        span: g,
    };
    let per_row = cols / g;
    let enc = encode_rows(x, rows, cols, &book, |r, s| (0.0, scale[r * per_row + s]));
    Ok(Coded {
        family,
        levels,
        scale,
        enc,
    })
}

/// Groups whose values the family choice weighs first: at least this many,
/// and every group of a tensor with fewer than twice as many. The sample
/// saves the scan most of its scatter into the histogram; a larger sample
/// cost more where the call is clear, a smaller one more where it is close
/// and every group is weighed again (measured: benches/README.md).
const SAMPLED_GROUPS: usize = 1 << 10;

/// Relative difference of the two codebooks' errors on a sample below which
/// every group is weighed. On the 198 (tensor, g in {64, 128}) cases of
/// the bench state dict, a 1024-group sample alone picked the other family
/// 3 times (a 4096-group one, once), each where the full errors lie within
/// 1% of each other; with this margin, every family is the full
/// histogram's.
const CLOSE: f64 = 0.02;

/// The groups the histogram of [`scan_groups`] holds: those of every
/// `stride`-th row (whole rows, so that every column position counts alike),
/// as seen by a task whose first group is group `first` of the tensor.
#[derive(Debug, Clone, Copy)]
pub(super) struct RowSample {
    per_row: usize,
    stride: usize,
    first: usize,
}

impl RowSample {
    /// The sample of a tensor of `groups` groups, `per_row` per row.
    fn new(groups: usize, per_row: usize) -> Self {
        RowSample {
            per_row,
            stride: (groups / SAMPLED_GROUPS).max(1),
            first: 0,
        }
    }

    /// Every group of a tensor of `per_row` groups per row.
    fn every(per_row: usize) -> Self {
        RowSample {
            per_row,
            stride: 1,
            first: 0,
        }
    }

    /// The same sample seen from group `first` on.
    fn starting_at(self, first: usize) -> Self {
        RowSample { first, ..self }
    }

    /// Whether the task's group `k` is in the sample.
    #[inline]
    pub(super) fn holds(&self, k: usize) -> bool {
        ((self.first + k) / self.per_row).is_multiple_of(self.stride)
    }
}

/// One pass over the groups: each group's absmax rounded to the nearest f16
/// (what is stored) and, with a `sample` (else empty), the weights of
/// `x / scale` on the `BINS` centres of [-1, 1] over the groups of the
/// sample, each value counted with its group's squared scale. Safe on any
/// `x` (NaNs and infinities included). Tasks take fixed runs of whole rows
/// (hence of groups, as g divides cols) and their partial histograms are
/// added in order, so the weights do not depend on the thread count.
fn scan_groups(
    x: &[f32],
    cols: usize,
    g: usize,
    sample: Option<RowSample>,
) -> (Vec<f32>, Vec<f64>) {
    let mut scale = vec![0f32; x.len() / g];
    let mut weights = vec![0f64; if sample.is_some() { BINS } else { 0 }];
    if x.is_empty() {
        return (scale, weights);
    }
    // Without a histogram, the sample is not looked at.
    let sample = sample.unwrap_or(RowSample::every(cols / g));
    let chunk = rows_per_task(cols) * cols;
    let partial: Vec<Vec<f64>> = scale
        .par_chunks_mut(chunk / g)
        .zip(x.par_chunks(chunk))
        .enumerate()
        .map(|(task, (out, data))| {
            let mut hist = vec![0f64; weights.len()];
            scan_task(
                Kernel::selected(),
                data,
                g,
                sample.starting_at(task * (chunk / g)),
                out,
                &mut hist,
            );
            hist
        })
        .collect();
    for hist in &partial {
        weights.iter_mut().zip(hist).for_each(|(a, b)| *a += b);
    }
    (scale, weights)
}

/// Largest |v| of `x` (0 when empty, NaN skipped), in lanes that vectorize
/// (max is exact, so the order does not matter).
#[inline(always)]
pub(super) fn absmax(x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0f32; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for (m, v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    it.remainder()
        .iter()
        .chain(&lanes)
        .fold(0f32, |m, v| m.max(v.abs()))
}

/// What [`best_codebook`] picked.
struct Choice {
    family: Family,
    levels: Vec<f32>,
    /// [`relative_gap`] of the families' errors.
    gap: f64,
}

/// The family whose implied codebook has the smallest scale²-weighted error
/// on the normalised values' `weights` (from `scan_groups`; ties:
/// Gaussian), and that codebook.
fn best_codebook(weights: &[f64], g: usize, bits: u32) -> Result<Choice> {
    let centers = bin_centers();
    let mut best: Option<(f64, Family, Vec<f32>)> = None;
    let mut errors = Vec::with_capacity(Family::ALL.len());
    for family in Family::ALL {
        let levels = implied_codebook(family, bits, g)?;
        let wide: Vec<f64> = levels.iter().map(|&v| f64::from(v)).collect();
        let err = weighted_mse(&centers, weights, &wide);
        errors.push(err);
        if best.as_ref().is_none_or(|b| err < b.0) {
            best = Some((err, family, levels));
        }
    }
    let (_, family, levels) = best.expect("at least one candidate family");
    Ok(Choice {
        family,
        levels,
        gap: relative_gap(&errors),
    })
}

/// `first`, the choice on `sample`'s groups, unless that is a proper sample
/// and the call is close: then the choice on every group, `on_every()`.
fn settle(
    first: Choice,
    sample: RowSample,
    on_every: impl FnOnce() -> Result<Choice>,
) -> Result<Choice> {
    if first.gap < CLOSE && sample.stride > 1 {
        on_every()
    } else {
        Ok(first)
    }
}

/// `(max - min) / min` of non-negative errors; 0 when they are all 0.
fn relative_gap(errors: &[f64]) -> f64 {
    let (lo, hi) = errors
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), &e| (a.min(e), b.max(e)));
    if hi == 0.0 {
        0.0
    } else {
        (hi - lo) / lo
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::super::simd::scalar;
    use super::*;

    /// Rows of groups with ordinary, zero, tiny, huge (beyond f16) and
    /// single-signed magnitudes.
    fn sample(rows: usize, cols: usize) -> Vec<f32> {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        (0..rows * cols)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                match (i / 8) % 5 {
                    0 => 0.0,
                    1 => u * 1e-30,
                    2 => u.abs() * 1e6,
                    _ => u * u * u * 3.0,
                }
            })
            .collect()
    }

    /// The scales and weights, value by value with `f64::round`; the weights
    /// of the groups of every `stride`-th row of `cols`.
    fn reference(x: &[f32], cols: usize, g: usize, stride: usize) -> (Vec<f32>, Vec<f64>) {
        let half_span = (BINS - 1) as f32 / 2.0;
        let mut weights = vec![0f64; BINS];
        let scale: Vec<f32> = x
            .chunks(g)
            .enumerate()
            .map(|(k, grp)| {
                let m = grp.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = f16::from_f32(m.min(f16::MAX.to_f32())).to_f32();
                if s != 0.0 && (k * g / cols).is_multiple_of(stride) {
                    for &v in grp {
                        let pos = ((v * (1.0 / s)).clamp(-1.0, 1.0) + 1.0) * half_span;
                        weights[f64::from(pos).round() as usize] += f64::from(s) * f64::from(s);
                    }
                }
                s
            })
            .collect();
        (scale, weights)
    }

    #[test]
    fn scan_matches_a_value_by_value_reference() {
        for (rows, cols, g) in [(3, 40, 8), (70, 1024, 128), (1, 8, 8), (0, 16, 4)] {
            let x = sample(rows, cols);
            let (scale, weights) =
                scan_groups(&x, cols, g, Some(RowSample::new(x.len() / g, cols / g)));
            let (want_scale, want_weights) = reference(&x, cols, g, 1);
            assert_eq!(scale, want_scale, "{rows}x{cols} g {g}");
            for (b, (w, r)) in weights.iter().zip(&want_weights).enumerate() {
                assert!((w - r).abs() <= 1e-12 * r.abs(), "bin {b}: {w} vs {r}");
            }
            let (scales_only, none) = scan_groups(&x, cols, g, None);
            assert_eq!(scales_only, want_scale);
            assert!(none.is_empty());
        }
        // Values on bin edges (pos = k + 0.5 exactly, absmax 1) round up,
        // as `f64::round` does; values just below them round down.
        let half = (BINS - 1) as f32 / 2.0;
        let edge = |k: f32| (k + 0.5) / half - 1.0;
        let x = [
            1.0,
            edge(0.0),
            edge(1.0),
            edge(1.0).next_down(),
            edge(2047.0),
            edge(3.0).next_down(),
            edge(4095.0),
            -1.0,
        ];
        let (scale, weights) = scan_groups(&x, 8, 8, Some(RowSample::every(1)));
        assert_eq!(scale, [1.0]);
        assert_eq!(weights, reference(&x, 8, 8, 1).1);
        let filled: Vec<usize> = (0..BINS).filter(|&b| weights[b] > 0.0).collect();
        assert_eq!(filled, [0, 1, 2, 3, 2048, 4096]);
    }

    /// Past `2 * SAMPLED_GROUPS` groups the weights are those of every
    /// `stride`-th row, whatever the task boundaries; the scales are every
    /// group's.
    #[test]
    fn weights_come_from_a_sample_of_whole_rows() {
        // 9 groups per row, rows split across tasks of 911, 12 * 4096 + 6
        // groups: every 48th row.
        let (rows, cols, g) = (12 * 4096 / 9 + 1, 9 * 8, 8);
        assert_eq!(rows_per_task(cols), 911);
        let x = sample(rows, cols);
        let sampled = RowSample::new(x.len() / g, cols / g);
        assert_eq!(sampled.stride, 12 * 4096 / SAMPLED_GROUPS);
        let (scale, weights) = scan_groups(&x, cols, g, Some(sampled));
        let (want_scale, want_weights) = reference(&x, cols, g, sampled.stride);
        assert_eq!(scale, want_scale);
        for (b, (w, r)) in weights.iter().zip(&want_weights).enumerate() {
            assert!((w - r).abs() <= 1e-12 * r.abs(), "bin {b}: {w} vs {r}");
        }
        let (_, every) = reference(&x, cols, g, 1);
        assert_ne!(weights, every);
        assert_eq!(RowSample::new(2 * SAMPLED_GROUPS - 1, 9).stride, 1);
        assert_eq!(RowSample::new(2 * SAMPLED_GROUPS, 9).stride, 2);
    }

    /// The gap between the families' errors, relative to the smaller.
    #[test]
    fn relative_gap_of_the_errors() {
        assert_eq!(relative_gap(&[2.0, 2.5]), 0.25);
        assert_eq!(relative_gap(&[2.5, 2.0]), 0.25);
        assert_eq!(relative_gap(&[0.0, 0.0]), 0.0);
        assert_eq!(relative_gap(&[0.0, 1.0]), f64::INFINITY);
    }

    /// A close call on a proper sample is made again on every group; a clear
    /// one, or one made on every group already, stands.
    #[test]
    fn close_calls_on_a_sample_are_settled_on_every_group() {
        let choice = |family, gap| Choice {
            family,
            levels: Vec::new(),
            gap,
        };
        let (sampled, every) = (RowSample::new(8 * SAMPLED_GROUPS, 4), RowSample::every(4));
        assert_eq!(sampled.stride, 8);
        let redo = || Ok(choice(Family::Laplace, 0.5));
        let close = CLOSE / 2.0;
        let settled = |first, sample| settle(first, sample, redo).unwrap().family;
        assert_eq!(
            settled(choice(Family::Gaussian, close), sampled),
            Family::Laplace
        );
        assert_eq!(
            settled(choice(Family::Gaussian, 2.0 * CLOSE), sampled),
            Family::Gaussian
        );
        assert_eq!(
            settled(choice(Family::Gaussian, close), every),
            Family::Gaussian
        );
    }

    /// The scan runs beside the fit, before anything rejects a NaN or an
    /// infinity: on them it stays within its bins, and the other groups
    /// get their scales (an infinity's group saturates at the f16 maximum,
    /// an all-NaN group gets 0, a NaN among finite values is skipped).
    #[test]
    fn scan_is_safe_on_non_finite_values() {
        let (cols, g) = (64, 16);
        let mut x = sample(2, cols);
        x[3] = f32::NAN;
        x[20] = f32::INFINITY;
        x[32..48].fill(f32::NAN);
        let (scale, weights) =
            scan_groups(&x, cols, g, Some(RowSample::new(x.len() / g, cols / g)));
        let clean: Vec<f32> = x
            .iter()
            .map(|&v| if v.is_nan() { 0.0 } else { v })
            .collect();
        let (want, _) = reference(&clean, cols, g, 1);
        assert_eq!(scale[0], want[0]);
        assert_eq!(scale[1], f16::MAX.to_f32());
        assert_eq!(scale[2], 0.0);
        assert_eq!(scale[3..], want[3..]);
        assert!(weights.iter().all(|w| w.is_finite()));
    }

    /// Every version of the scan this CPU runs agrees with the portable
    /// one, bit for bit.
    #[test]
    fn simd_scans_equal_the_portable_scan() {
        let (cols, g) = (512, 64);
        let x = sample(8, cols);
        let at = RowSample::new(x.len() / g, cols / g);
        let (mut scale, mut hist) = (vec![0f32; x.len() / g], vec![0f64; BINS]);
        scalar::scan_task(&x, g, at, &mut scale, &mut hist);
        assert!(hist.iter().any(|&w| w > 0.0));
        for kernel in crate::pack::available_kernels() {
            let (mut got_scale, mut got_hist) = (vec![0f32; x.len() / g], vec![0f64; BINS]);
            scan_task(kernel, &x, g, at, &mut got_scale, &mut got_hist);
            assert_eq!((&got_scale, &got_hist), (&scale, &hist), "{kernel:?}");
        }
    }
}
