//! Per-row fits for channel granularity. Rows are short (10..20000), so each
//! row is handled by one thread with exact two-pass sums (the lane sums of
//! `moments`) and a median by pivot compares (`median::median_of_row`);
//! rows run in parallel.

use crate::family::Family;
use rayon::prelude::*;

use super::median::{median_of_row, Scratch};
use super::simd::{abs_dev_sum, sq_dev_sum, sum};

/// Both fits of one row: Gaussian (`mean`, `std`, population) and Laplace
/// (`median`, `b` = mean |x - median|).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RowFit {
    pub mean: f64,
    pub std: f64,
    pub median: f64,
    pub b: f64,
}

impl RowFit {
    /// `(location, scale)` of `family`'s fit.
    pub fn params(&self, family: Family) -> (f64, f64) {
        match family {
            Family::Gaussian => (self.mean, self.std),
            Family::Laplace => (self.median, self.b),
        }
    }
}

/// Fit of every row of `row_len` elements, or the lowest row that holds a
/// NaN or infinity: a row's f64 sum of f32 values is finite exactly when
/// all of them are (it cannot overflow), so the check costs no pass of
/// its own, and a bad row is not fitted further.
///
/// # Panics
/// If `row_len == 0` or it does not divide `x.len()`.
pub(crate) fn checked_row_fits(x: &[f32], row_len: usize) -> Result<Vec<RowFit>, usize> {
    assert!(
        row_len > 0 && x.len().is_multiple_of(row_len),
        "row_fits: row_len {row_len} must be > 0 and divide {}",
        x.len()
    );
    let fits: Vec<Option<RowFit>> = x
        .par_chunks(row_len)
        .map_init(Scratch::default, |scratch, row| fit_row(row, scratch))
        .collect();
    match fits.iter().position(Option::is_none) {
        Some(r) => Err(r),
        None => Ok(fits.into_iter().flatten().collect()),
    }
}

fn fit_row(row: &[f32], scratch: &mut Scratch) -> Option<RowFit> {
    let n = row.len() as f64;
    let total = sum(row);
    if !total.is_finite() {
        return None;
    }
    let mean = total / n;
    let var = sq_dev_sum(row, mean) / n;
    let median = median_of_row(row, mean, var.sqrt(), scratch);
    let b = abs_dev_sum(row, median) / n;
    Some(RowFit {
        mean,
        std: var.sqrt(),
        median,
        b,
    })
}

/// Fit of every row of `row_len` elements.
///
/// # Panics
/// If `row_len == 0` or it does not divide `x.len()`, or `x` holds a NaN
/// or infinity.
#[cfg(test)]
pub(crate) fn row_fits(x: &[f32], row_len: usize) -> Vec<RowFit> {
    checked_row_fits(x, row_len)
        .unwrap_or_else(|r| panic!("row_fits: row {r} holds a NaN or infinity"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_each_row() {
        let x = [1.0f32, 2.0, 3.0, 10.0, 7.0, 7.0, 7.0, 7.0];
        let f = row_fits(&x, 4);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].mean, 4.0);
        assert_eq!(f[0].std, 12.5f64.sqrt());
        assert_eq!(f[0].median, 2.5);
        assert_eq!(f[0].b, (1.5 + 0.5 + 0.5 + 7.5) / 4.0);
        assert_eq!(
            f[1],
            RowFit {
                mean: 7.0,
                std: 0.0,
                median: 7.0,
                b: 0.0
            }
        );
        assert!(row_fits(&[], 3).is_empty());
    }

    #[test]
    fn finds_the_first_row_with_a_nan_or_infinity() {
        let mut x = vec![0.5f32; 12];
        assert!(checked_row_fits(&x, 3).is_ok());
        for (i, bad) in [(7, f32::NAN), (4, f32::INFINITY), (11, f32::NEG_INFINITY)] {
            x[i] = bad;
        }
        assert_eq!(checked_row_fits(&x, 3), Err(1));
        x[4] = f32::MAX;
        assert_eq!(checked_row_fits(&x, 3), Err(2));
        // Finite extremes do not overflow the f64 sum.
        x[7] = f32::MAX;
        x[11] = -f32::MAX;
        assert!(checked_row_fits(&x, 3).is_ok());
    }

    #[test]
    #[should_panic(expected = "NaN or infinity")]
    fn row_fits_panics_on_a_nan() {
        row_fits(&[1.0, f32::NAN], 1);
    }

    #[test]
    #[should_panic(expected = "row_fits")]
    fn rejects_zero_row_len() {
        row_fits(&[1.0], 0);
    }
}
