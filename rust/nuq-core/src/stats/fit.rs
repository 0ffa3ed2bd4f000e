//! What the pipeline calls: both fits and both KS statistics of a tensor
//! (or of its rows), fused into as few data passes as possible.

use super::hist::{buckets_for, build, GRID_SIGMAS};
use super::ks::{ks_layout, ks_rows, ks_small, Fitted};
use super::laplace::laplace_fit;
use super::moments::{mean_abs_dev, moments, Moments};
use super::rows::{checked_row_fits, RowFit};
use super::select::{median_of_layout, median_small};
use super::source::Flat;
use super::SMALL_N;
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

/// Both fits of `x` and both KS statistics. Passes over the data: moments,
/// one histogram (shared by the median and both KS statistics), one for
/// the median and `Σ |x - median|` together (see `laplace`; a median run
/// too large to gather is refined first, and `|x - median|` summed in a
/// pass of its own), plus gathers of the few buckets the exact KS needs.
///
/// # Errors
/// [`NuqError::NonFinite`] for the lowest index holding a NaN or infinity.
pub fn fit_tensor(x: &[f32]) -> Result<TensorFit> {
    let moments = moments(x)?;
    let gaussian = LocScale {
        loc: moments.mean,
        scale: moments.std,
    };
    let (laplace, d) = if x.len() < SMALL_N {
        let mut v = x.to_vec();
        let median = median_small(&mut v);
        let laplace = LocScale {
            loc: median,
            scale: mean_abs_dev(x, median),
        };
        let d = ks_small(v, &both_fits(gaussian, laplace));
        (laplace, d)
    } else {
        let (lo, hi) = central_grid(&moments);
        let mut layout = build(
            &Flat(x),
            lo,
            hi,
            buckets_for(x.len()),
            Some((moments.min, moments.max)),
        );
        let laplace = laplace_fit(x, &layout).unwrap_or_else(|| {
            let median = median_of_layout(&Flat(x), &mut layout);
            LocScale {
                loc: median,
                scale: mean_abs_dev(x, median),
            }
        });
        let d = ks_layout(&Flat(x), &mut layout, &both_fits(gaussian, laplace));
        (laplace, d)
    };
    Ok(TensorFit {
        moments,
        gaussian,
        laplace,
        d_gaussian: d[0],
        d_laplace: d[1],
    })
}

/// The top-level grid of a tensor: `GRID_SIGMAS` standard deviations either
/// side of the mean, within the data's range.
pub(crate) fn central_grid(m: &Moments) -> (f64, f64) {
    let reach = GRID_SIGMAS * m.std;
    (m.min.max(m.mean - reach), m.max.min(m.mean + reach))
}

/// The Gaussian and Laplace fits as the KS code takes them, in that order.
pub(crate) fn both_fits(g: LocScale, l: LocScale) -> [Fitted; 2] {
    [
        Fitted {
            family: Family::Gaussian,
            loc: g.loc,
            scale: g.scale,
        },
        Fitted {
            family: Family::Laplace,
            loc: l.loc,
            scale: l.scale,
        },
    ]
}

/// Per-row fits (rows of `row_len`) and, per family, the KS statistic of the
/// pooled standardized values.
///
/// # Errors
/// [`NuqError::LengthMismatch`] if `row_len` is 0 or does not divide
/// `x.len()`; [`NuqError::NonFinite`] for the lowest non-finite index.
pub fn fit_rows(x: &[f32], row_len: usize) -> Result<ChannelFit> {
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
    let ks = |family: Family, loc: Vec<f64>, scale: Vec<f64>| {
        if pooled.is_empty() {
            0.0
        } else {
            ks_rows(&pooled, row_len, family, &loc, &scale)
        }
    };
    // The two statistics side by side: each has serial steps (laying out
    // its runs, bounding them) that the other's parallel passes fill.
    let (d_gaussian, d_laplace) = rayon::join(
        || ks(Family::Gaussian, column(|r| r.mean), column(|r| r.std)),
        || ks(Family::Laplace, column(|r| r.median), column(|r| r.b)),
    );
    Ok(ChannelFit {
        d_gaussian,
        d_laplace,
        rows,
    })
}
