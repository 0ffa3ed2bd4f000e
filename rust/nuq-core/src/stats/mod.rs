//! Statistics of the quantizer: moments, exact median, mean absolute
//! deviation, and the Kolmogorov–Smirnov statistic against the fitted
//! Gaussian and Laplace, over every element, without sorting the tensor.
//!
//! # Exact KS by bucket pruning
//! scipy defines, for the sorted sample `x_(1) <= .. <= x_(n)` and the fitted
//! cdf `F`, `D = max_i max(i/n - F(x_(i)), F(x_(i)) - (i-1)/n)`.
//!
//! One parallel pass histograms the values on a uniform grid (one multiply
//! and a floor; the end buckets are clamped) and records per bucket its count
//! `c` and its exact `min` and `max`. The bucket index is monotone in the
//! value, so a bucket with `C` smaller elements holds exactly the order
//! statistics `C+1 ..= C+c`, `x_(C+1) = min`, `x_(C+c) = max`, and ties never
//! straddle buckets. As `F` is non-decreasing, every term of the bucket is
//! bounded by `U = max((C+c)/n - F(min), F(max) - C/n)`, while the terms of
//! its first and last order statistics are known exactly from `min` and
//! `max` alone. A bucket whose elements are all equal is known entirely.
//!
//! Let `L` be the largest exactly known term (a value `D` attains). A bucket
//! with `U <= L` cannot raise `D`: skip it. Only the others are gathered (one
//! data pass for all of them), sorted, and their terms computed exactly; a
//! candidate too large to gather is instead re-histogrammed on a finer grid
//! over its own `[min, max]` (each refinement strictly splits it, so this
//! terminates). Repeat until no unresolved bucket's bound exceeds the best
//! exact term. The result is the maximum of the very terms the sort-based
//! reference computes, so it equals [`ks_sorted_reference`]; the skip test
//! keeps a 1e-14 margin for ulp-level non-monotonicity of `erfc`/`exp`.
//! Typically a handful of buckets near the arg-max survive, so the cost is
//! one histogram pass, `2 (B)` cdf evaluations per fit, and one gather pass.
//! The histogram is independent of the fit: one pass serves every fit and the
//! median (whose middle ranks are located the same way).
//!
//! Everything reduces deterministically: integer counts and min/max merge
//! exactly, floating sums run over fixed-size parts combined in index order.

mod fit;
mod hist;
mod ks;
mod moments;
mod rows;
mod select;
mod source;

#[cfg(test)]
mod tests;

pub use fit::{fit_rows, fit_tensor, ChannelFit, LocScale, TensorFit};
pub use ks::{ks_rows, ks_sorted_reference, ks_tensor};
pub use moments::{mean_abs_dev, moments, Moments};
pub use rows::{row_fits, RowFit};
pub use select::median;

/// Below this many elements a sorted copy is cheaper than histogram passes.
const SMALL_N: usize = 1 << 14;
