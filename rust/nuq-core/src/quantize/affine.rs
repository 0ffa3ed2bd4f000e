//! Tensor and channel granularity: the Lloyd–Max codebook of the chosen family,
//! shifted and scaled by the fitted location and scale (per tensor or per row).

use super::rows::{encode_rows, Codebook};
use super::{energy_of, Config, FamilyChoice, Granularity, Quantized};
use crate::error::{NuqError, Result};
use crate::family::Family;
use crate::solve::lloyd_max;
use crate::stats::{fit_rows, fit_tensor};

/// The fit a codebook gets scaled by.
struct Fitted {
    family: Family,
    d_gaussian: f64,
    d_laplace: f64,
    loc: Vec<f32>,
    scale: Vec<f32>,
    /// Tensor-wide summary of `loc` / `scale` for reports.
    fit_loc: f64,
    fit_scale: f64,
    /// `Σ v²` of the weights.
    energy: f64,
}

pub(super) fn quantize(x: &[f32], rows: usize, cols: usize, cfg: &Config) -> Result<Quantized> {
    let fitted = match cfg.granularity {
        Granularity::Channel => fit_channels(x, rows, cols, cfg.family)?,
        _ => fit_whole(x, cfg.family)?,
    };
    let solved = lloyd_max(fitted.family, cfg.bits)?;
    let levels: Vec<f32> = solved.levels.iter().map(|&v| v as f32).collect();
    let boundaries: Vec<f32> = solved.boundaries.iter().map(|&v| v as f32).collect();
    let book = Codebook {
        bits: cfg.bits,
        levels: &levels,
        boundaries: &boundaries,
        span: cols.max(1),
    };
    let (loc, scale) = (&fitted.loc, &fitted.scale);
    let pick = |r: usize| if loc.len() == 1 { 0 } else { r };
    let enc = encode_rows(x, rows, cols, &book, |r, _| (loc[pick(r)], scale[pick(r)]));
    check_decodable(x, &levels, loc, scale, enc.sse)?;
    Ok(Quantized {
        rows,
        cols,
        bits: cfg.bits,
        granularity: cfg.granularity,
        family: fitted.family,
        d_gaussian: fitted.d_gaussian,
        d_laplace: fitted.d_laplace,
        fit_loc: fitted.fit_loc,
        fit_scale: fitted.fit_scale,
        levels,
        loc: fitted.loc,
        scale: fitted.scale,
        packed: enc.packed,
        sse: enc.sse,
        energy: fitted.energy,
        implied_codebook: false,
        f16_scales: false,
    })
}

/// Fails when a decoded weight (`loc + scale · level`, f32) or the error sum
/// is not finite: the fit of weights near `f32::MAX` can put outer levels, or
/// the distance from a weight to its level, beyond the f32 range. Fitted and
/// group codebooks cannot (their f16 scales saturate).
fn check_decodable(x: &[f32], levels: &[f32], loc: &[f32], scale: &[f32], sse: f64) -> Result<()> {
    let (lo, hi) = (levels[0], levels[levels.len() - 1]);
    let finite = loc
        .iter()
        .zip(scale)
        .all(|(&l, &s)| (l + s * lo).is_finite() && (l + s * hi).is_finite());
    if finite && sse.is_finite() {
        return Ok(());
    }
    let max_abs = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    Err(NuqError::Overflow { max_abs })
}

/// The family to solve for, given the user's choice and the KS winner.
pub(super) fn choose(choice: FamilyChoice, best: Family) -> Family {
    match choice {
        FamilyChoice::Auto => best,
        FamilyChoice::Fixed(f) => f,
    }
}

fn fit_whole(x: &[f32], choice: FamilyChoice) -> Result<Fitted> {
    let fit = fit_tensor(x)?;
    let family = choose(choice, fit.best());
    let (loc, scale) = fit.params(family);
    Ok(Fitted {
        family,
        d_gaussian: fit.d_gaussian,
        d_laplace: fit.d_laplace,
        loc: vec![loc as f32],
        scale: vec![scale as f32],
        fit_loc: loc,
        fit_scale: scale,
        energy: energy_of(x.len(), fit.moments.mean, fit.moments.std),
    })
}

fn fit_channels(x: &[f32], rows: usize, cols: usize, choice: FamilyChoice) -> Result<Fitted> {
    if x.is_empty() {
        // No weights: every row decodes nothing, but keeps its (zero) parameters.
        let family = choose(choice, Family::Gaussian);
        return Ok(Fitted {
            family,
            d_gaussian: 0.0,
            d_laplace: 0.0,
            loc: vec![0.0; rows],
            scale: vec![0.0; rows],
            fit_loc: 0.0,
            fit_scale: 0.0,
            energy: 0.0,
        });
    }
    let fit = fit_rows(x, cols)?;
    let family = choose(choice, fit.best());
    let (loc, scale): (Vec<f32>, Vec<f32>) = fit
        .rows
        .iter()
        .map(|row| {
            let (l, s) = row.params(family);
            (l as f32, s as f32)
        })
        .unzip();
    let mean = |v: &[f32]| v.iter().map(|&a| f64::from(a)).sum::<f64>() / v.len().max(1) as f64;
    let energy = fit
        .rows
        .iter()
        .map(|r| energy_of(cols, r.mean, r.std))
        .sum();
    Ok(Fitted {
        family,
        d_gaussian: fit.d_gaussian,
        d_laplace: fit.d_laplace,
        fit_loc: mean(&loc),
        fit_scale: mean(&scale),
        loc,
        scale,
        energy,
    })
}
