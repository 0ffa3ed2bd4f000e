//! Group granularity: each group of `g` consecutive weights of a row is divided
//! by its absmax (stored as f16), and one codebook for the whole tensor is
//! refined on the normalised values, weighting each group by its squared scale
//! so that the refinement minimises the error of the real weights.

use half::f16;
use rayon::prelude::*;

use super::affine::choose;
use super::rows::{encode_rows, Codebook};
use super::{rows_per_task, Config, Quantized};
use crate::error::Result;
use crate::solve::{absmax_init, lloyd_weighted};
use crate::stats::fit_tensor;

/// Bins of the normalised-value histogram on [-1, 1]; odd so that -1, 0 and
/// +1 are bin centres (absmax scaling puts a weight exactly on ±1 in every group).
const BINS: usize = 4097;
/// Lloyd iterations of the codebook refinement.
const REFINE_ITERS: usize = 200;

pub(super) fn quantize(
    x: &[f32],
    rows: usize,
    cols: usize,
    g: usize,
    cfg: &Config,
) -> Result<Quantized> {
    let fit = fit_tensor(x)?;
    let family = choose(cfg.family, fit.best());
    let (fit_loc, fit_scale) = fit.params(family);
    let scale = group_scales(x, g);
    let (centers, weights) = normalised_histogram(x, cols, g, &scale);
    let init = absmax_init(family, cfg.bits, g)?;
    let refined = lloyd_weighted(&centers, &weights, &init, REFINE_ITERS);
    // Rounded to f16 so that the codebook could be stored at half size
    // exactly; encode against exactly what decodes.
    let levels: Vec<f32> = refined
        .levels
        .iter()
        .map(|&v| f16::from_f64(v).to_f32())
        .collect();
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

/// Absmax of every group, rounded to the nearest f16 (what is stored).
fn group_scales(x: &[f32], g: usize) -> Vec<f32> {
    x.par_chunks(g)
        .map(|grp| {
            let m = grp.iter().fold(0f32, |m, v| m.max(v.abs()));
            f16::from_f32(m.min(f16::MAX.to_f32())).to_f32()
        })
        .collect()
}

/// Histogram of `x / scale` over `BINS` centres on [-1, 1], each weight counted
/// with its group's squared scale. Chunks are fixed, partial sums added in order.
fn normalised_histogram(x: &[f32], cols: usize, g: usize, scale: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let half_span = (BINS - 1) as f32 / 2.0;
    // A whole number of rows, hence of groups (g divides cols).
    let chunk = (rows_per_task(cols) * cols).max(1);
    let partial: Vec<Vec<f64>> = x
        .par_chunks(chunk)
        .enumerate()
        .map(|(c, data)| {
            let mut hist = vec![0f64; BINS];
            let first_group = c * chunk / g;
            for (i, grp) in data.chunks(g).enumerate() {
                let s = scale[first_group + i];
                if s == 0.0 {
                    continue;
                }
                let (inv, w) = (1.0 / s, f64::from(s) * f64::from(s));
                for &v in grp {
                    let pos = ((v * inv).clamp(-1.0, 1.0) + 1.0) * half_span;
                    hist[pos.round() as usize] += w;
                }
            }
            hist
        })
        .collect();
    let mut weights = vec![0f64; BINS];
    for hist in &partial {
        weights.iter_mut().zip(hist).for_each(|(a, b)| *a += b);
    }
    let centers = (0..BINS)
        .map(|k| k as f64 / f64::from(half_span) - 1.0)
        .collect();
    (centers, weights)
}
