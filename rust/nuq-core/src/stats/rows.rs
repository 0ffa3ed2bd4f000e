//! Per-row fits for channel granularity. Rows are short (10..20000), so each
//! row is handled by one thread with exact two-pass sums (the lane sums of
//! `moments`) and a bucket-select median; rows run in parallel.

use crate::family::Family;
use rayon::prelude::*;

use super::moments::{abs_dev_sum, sq_dev_sum, sum};
use super::select::{median_binned, Scratch};

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

/// Fit of every row of `row_len` elements (`x` finite).
///
/// # Panics
/// If `row_len == 0` or it does not divide `x.len()`.
pub fn row_fits(x: &[f32], row_len: usize) -> Vec<RowFit> {
    assert!(
        row_len > 0 && x.len().is_multiple_of(row_len),
        "row_fits: row_len {row_len} must be > 0 and divide {}",
        x.len()
    );
    x.par_chunks(row_len)
        .map_init(Scratch::default, |scratch, row| fit_row(row, scratch))
        .collect()
}

fn fit_row(row: &[f32], scratch: &mut Scratch) -> RowFit {
    let n = row.len() as f64;
    let mean = sum(row) / n;
    let var = sq_dev_sum(row, mean) / n;
    let median = median_binned(row, mean, var.sqrt(), scratch);
    let b = abs_dev_sum(row, median) / n;
    RowFit {
        mean,
        std: var.sqrt(),
        median,
        b,
    }
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
    #[should_panic(expected = "row_fits")]
    fn rejects_zero_row_len() {
        row_fits(&[1.0], 0);
    }
}
