//! Group granularity: each group of `g` consecutive weights of a row is divided
//! by its absmax (stored as f16) and encoded with the implied codebook of the
//! family ([`implied_codebook`]), which the decoder recomputes: nothing but
//! the codes and one f16 per group is stored.
//!
//! With [`FamilyChoice::Auto`] the family is the one whose implied codebook
//! has the smaller error on this tensor's normalised values, each group
//! weighted by its squared scale (so, the error of the real weights up to
//! the binning), rather than the KS choice: what is fitted here is the shape
//! of x / max|x|, not of x. Both KS statistics are still reported.

use half::f16;
use rayon::prelude::*;

use super::rows::{encode_rows, Codebook};
use super::{rows_per_task, Config, FamilyChoice, Quantized};
use crate::error::Result;
use crate::family::Family;
use crate::solve::{bin_centers, implied_codebook, weighted_mse, BINS};
use crate::stats::{fit_tensor, lane_min_max};

pub(super) fn quantize(
    x: &[f32],
    rows: usize,
    cols: usize,
    g: usize,
    cfg: &Config,
) -> Result<Quantized> {
    let fit = fit_tensor(x)?;
    let scale = group_scales(x, g);
    let (family, levels) = choose_codebook(x, cols, g, &scale, cfg)?;
    let (fit_loc, fit_scale) = fit.params(family);
    let boundaries: Vec<f32> = levels.windows(2).map(|p| 0.5 * (p[0] + p[1])).collect();
    let book = Codebook {
        bits: cfg.bits,
        levels: &levels,
        boundaries: &boundaries,
        span: g,
    };
    let per_row = cols / g;
    let enc = encode_rows(x, rows, cols, &book, |r, s| (0.0, scale[r * per_row + s]));
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
        energy: enc.energy,
    })
}

/// Absmax of every group, rounded to the nearest f16 (what is stored). `x`
/// is finite (checked by the fit). Rayon tasks take many groups at once.
fn group_scales(x: &[f32], g: usize) -> Vec<f32> {
    let per_task = ((1 << 16) / g).max(1);
    let mut scale = vec![0f32; x.len() / g];
    scale
        .par_chunks_mut(per_task)
        .zip(x.par_chunks(g * per_task))
        .for_each(|(out, part)| {
            for (s, grp) in out.iter_mut().zip(part.chunks(g)) {
                *s = f16::from_f32(absmax(grp).min(f16::MAX.to_f32())).to_f32();
            }
        });
    scale
}

/// Largest |v| of finite, non-empty `x`: from its range, taken in the
/// vectorizable lanes of the moments pass.
fn absmax(x: &[f32]) -> f32 {
    let (lo, hi) = lane_min_max(x);
    hi.max(-lo)
}

/// The family allowed by `cfg` whose implied codebook has the smallest
/// scale²-weighted error on the normalised values (ties: Gaussian), and that codebook.
fn choose_codebook(
    x: &[f32],
    cols: usize,
    g: usize,
    scale: &[f32],
    cfg: &Config,
) -> Result<(Family, Vec<f32>)> {
    if let FamilyChoice::Fixed(f) = cfg.family {
        // Nothing to compare: no histogram pass over the data.
        return Ok((f, implied_codebook(f, cfg.bits, g)?));
    }
    let weights = normalised_histogram(x, cols, g, scale);
    let centers = bin_centers();
    let mut best: Option<(f64, Family, Vec<f32>)> = None;
    for family in Family::ALL {
        let levels = implied_codebook(family, cfg.bits, g)?;
        let wide: Vec<f64> = levels.iter().map(|&v| f64::from(v)).collect();
        let err = weighted_mse(&centers, &weights, &wide);
        if best.as_ref().is_none_or(|b| err < b.0) {
            best = Some((err, family, levels));
        }
    }
    let (_, family, levels) = best.expect("at least one candidate family");
    Ok((family, levels))
}

/// Weights of `x / scale` on the `BINS` centres of [-1, 1], each weight counted
/// with its group's squared scale. Chunks are fixed, partial sums added in order.
fn normalised_histogram(x: &[f32], cols: usize, g: usize, scale: &[f32]) -> Vec<f64> {
    let half_span = (BINS - 1) as f32 / 2.0;
    // A whole number of rows, hence of groups (g divides cols).
    let chunk = (rows_per_task(cols) * cols).max(1);
    let partial: Vec<Vec<f64>> = x
        .par_chunks(chunk)
        .enumerate()
        .map(|(c, data)| {
            let mut hist = vec![0f64; BINS];
            // A group's bins, computed in one vectorizable loop before the
            // scatter (which then runs without waiting on the arithmetic).
            let mut idx = vec![0u32; g];
            let first_group = c * chunk / g;
            for (i, grp) in data.chunks(g).enumerate() {
                let s = scale[first_group + i];
                if s == 0.0 {
                    continue;
                }
                let (inv, w) = (1.0 / s, f64::from(s) * f64::from(s));
                for (b, &v) in idx.iter_mut().zip(grp) {
                    let pos = ((v * inv).clamp(-1.0, 1.0) + 1.0) * half_span;
                    // `pos.round()` for pos >= 0, without the libm call:
                    // pos + 0.5 is exact in f64, and truncation is floor.
                    *b = (f64::from(pos) + 0.5) as u32;
                }
                for &b in &idx {
                    hist[b as usize] += w;
                }
            }
            hist
        })
        .collect();
    let mut weights = vec![0f64; BINS];
    for hist in &partial {
        weights.iter_mut().zip(hist).for_each(|(a, b)| *a += b);
    }
    weights
}
