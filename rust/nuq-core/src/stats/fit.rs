//! What the pipeline calls: both fits and both KS statistics of a tensor
//! (or of its rows), fused into as few data passes as possible.

use super::grid::{buckets_for, Grid, GRID_SIGMAS};
use super::ks::{choice_is_certain, ks_layout_within, ks_rows_within, ks_small, Estimate, Fitted};
use super::laplace::laplace_fit;
use super::layout::build_coarse;
use super::median::{expand_middle, median, median_of_layout};
use super::moments::{mean_abs_dev, moments, Moments};
use super::rows::{checked_row_fits, RowFit};
use super::source::Flat;
use super::{KS_TOLERANCE, SMALL_N};
use crate::error::{NuqError, Result};
use crate::Family;

/// Location and scale of a fitted family.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LocScale {
    pub loc: f64,
    pub scale: f64,
}

/// Tensor-wide fits: Gaussian (mean, std), Laplace (median, b) and their KS
/// statistics over all elements.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TensorFit {
    pub moments: Moments,
    pub gaussian: LocScale,
    pub laplace: LocScale,
    pub d_gaussian: f64,
    pub d_laplace: f64,
}

impl TensorFit {
    /// The family with the smaller KS statistic (ties: Gaussian).
    pub fn best(&self) -> Family {
        pick(self.d_gaussian, self.d_laplace)
    }

    /// `(location, scale)` of `family`'s fit.
    pub fn params(&self, family: Family) -> (f64, f64) {
        let fit = match family {
            Family::Gaussian => self.gaussian,
            Family::Laplace => self.laplace,
        };
        (fit.loc, fit.scale)
    }
}

/// Per-row fits and the KS statistics of the pooled standardized values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelFit {
    pub rows: Vec<RowFit>,
    pub d_gaussian: f64,
    pub d_laplace: f64,
}

impl ChannelFit {
    /// The family with the smaller pooled KS statistic (ties: Gaussian).
    pub fn best(&self) -> Family {
        pick(self.d_gaussian, self.d_laplace)
    }
}

fn pick(d_gaussian: f64, d_laplace: f64) -> Family {
    if d_laplace < d_gaussian {
        Family::Laplace
    } else {
        Family::Gaussian
    }
}

/// Both fits of `x` and both KS statistics, each within [`KS_TOLERANCE`]
/// of the exact one, and exact whenever the two are that close (so the
/// family choice is always the exact statistics' choice). Passes over the
/// data: moments, one histogram (shared by the median and both KS
/// statistics), one for the median and `Σ |x - median|` together (see
/// `laplace`; a median run too large to gather is refined first, and
/// `|x - median|` summed in a pass of its own), plus gathers of the few
/// buckets the KS statistics still need.
///
/// # Errors
/// [`NuqError::NonFinite`] for the lowest index holding a NaN or infinity.
pub fn fit_tensor(x: &[f32]) -> Result<TensorFit> {
    fit_tensor_within(x, KS_TOLERANCE)
}

/// [`fit_tensor`] with the KS statistics known within `tol` (exact for 0).
pub(crate) fn fit_tensor_within(x: &[f32], tol: f64) -> Result<TensorFit> {
    let moments = moments(x)?;
    let gaussian = LocScale {
        loc: moments.mean,
        scale: moments.std,
    };
    let (laplace, d) = if x.len() < SMALL_N {
        let loc = median(x);
        let laplace = LocScale {
            loc,
            scale: mean_abs_dev(x, loc),
        };
        (laplace, ks_small(x.to_vec(), &both_fits(gaussian, laplace)))
    } else {
        let (lo, hi) = central_grid(&moments);
        let range = Some((moments.min, moments.max));
        let grid = Grid::new(lo, hi, buckets_for(x.len()));
        let mut layout = build_coarse(&Flat(x), grid, range);
        expand_middle(&mut layout);
        let laplace = laplace_fit(x, &layout).unwrap_or_else(|| {
            let median = median_of_layout(&Flat(x), &mut layout);
            LocScale {
                loc: median,
                scale: mean_abs_dev(x, median),
            }
        });
        let fits = both_fits(gaussian, laplace);
        let d = settle(tol, |tol| {
            let d = ks_layout_within(&Flat(x), &mut layout, &fits, tol);
            (d[0], d[1])
        });
        (laplace, d.to_vec())
    };
    Ok(TensorFit {
        moments,
        gaussian,
        laplace,
        d_gaussian: d[0],
        d_laplace: d[1],
    })
}

/// The Gaussian and Laplace statistics from `ks(tol)`, or from `ks(0.0)`
/// (exact) when those within `tol` leave the choice between them open.
fn settle(tol: f64, mut ks: impl FnMut(f64) -> (Estimate, Estimate)) -> [f64; 2] {
    let (mut g, mut l) = ks(tol);
    if tol > 0.0 && !choice_is_certain(g, l) {
        (g, l) = ks(0.0);
    }
    [g.value(), l.value()]
}

/// The top-level grid of a tensor: `GRID_SIGMAS` standard deviations either
/// side of the mean, within the data's range.
pub(crate) fn central_grid(m: &Moments) -> (f64, f64) {
    let reach = GRID_SIGMAS * m.std;
    (m.min.max(m.mean - reach), m.max.min(m.mean + reach))
}

/// The Gaussian and Laplace fits as the KS code takes them, in that order.
pub(crate) fn both_fits(g: LocScale, l: LocScale) -> [Fitted; 2] {
    let fitted = |family, LocScale { loc, scale }| Fitted { family, loc, scale };
    [fitted(Family::Gaussian, g), fitted(Family::Laplace, l)]
}

/// Per-row fits (rows of `row_len`) and, per family, the KS statistic of the
/// pooled standardized values, within [`KS_TOLERANCE`] as in
/// [`fit_tensor`].
///
/// # Errors
/// [`NuqError::LengthMismatch`] if `row_len` is 0 or does not divide
/// `x.len()`; [`NuqError::NonFinite`] for the lowest non-finite index.
pub fn fit_rows(x: &[f32], row_len: usize) -> Result<ChannelFit> {
    fit_rows_within(x, row_len, KS_TOLERANCE)
}

/// [`fit_rows`] with the KS statistics known within `tol` (exact for 0).
pub(crate) fn fit_rows_within(x: &[f32], row_len: usize, tol: f64) -> Result<ChannelFit> {
    if row_len == 0 || !x.len().is_multiple_of(row_len) {
        return Err(NuqError::LengthMismatch {
            what: "tensor length (a multiple of row_len)",
            expected: x.len().next_multiple_of(row_len.max(1)),
            actual: x.len(),
        });
    }
    let rows = checked_row_fits(x, row_len).map_err(|r| {
        let row = &x[r * row_len..(r + 1) * row_len];
        let i = row
            .iter()
            .position(|v| !v.is_finite())
            .expect("the row's sum was not finite");
        NuqError::NonFinite {
            index: r * row_len + i,
            value: row[i],
        }
    })?;
    // Constant rows (zero scale) decode exactly; like a constant tensor they
    // fit perfectly and are left out of the pooled statistics.
    let spread: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].std > 0.0).collect();
    let pooled: std::borrow::Cow<[f32]> = if spread.len() == rows.len() {
        x.into()
    } else {
        spread
            .iter()
            .flat_map(|&r| &x[r * row_len..(r + 1) * row_len])
            .copied()
            .collect()
    };
    let column =
        |f: fn(&RowFit) -> f64| -> Vec<f64> { spread.iter().map(|&r| f(&rows[r])).collect() };
    let (mean, std) = (column(|r| r.mean), column(|r| r.std));
    let (median, b) = (column(|r| r.median), column(|r| r.b));
    let ks = |family: Family, loc: &[f64], scale: &[f64], tol: f64| {
        if pooled.is_empty() {
            Estimate::exact(0.0)
        } else {
            ks_rows_within(&pooled, row_len, family, loc, scale, tol)
        }
    };
    // The two statistics side by side: each has serial steps (laying out
    // its runs, bounding them) that the other's parallel passes fill.
    let [d_gaussian, d_laplace] = settle(tol, |tol| {
        rayon::join(
            || ks(Family::Gaussian, &mean, &std, tol),
            || ks(Family::Laplace, &median, &b, tol),
        )
    });
    Ok(ChannelFit {
        d_gaussian,
        d_laplace,
        rows,
    })
}
