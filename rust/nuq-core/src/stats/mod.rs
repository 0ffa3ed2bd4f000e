//! Statistics of the quantizer: moments, exact median, mean absolute
//! deviation, and the Kolmogorov–Smirnov statistic against the fitted
//! Gaussian and Laplace, over every element, without sorting the tensor.
//!
//! # Exact KS by bucket pruning
//! scipy defines, for the sorted sample `x_(1) <= .. <= x_(n)` and the fitted
//! cdf `F`, `D = max_i max(i/n - F(x_(i)), F(x_(i)) - (i-1)/n)`.
//!
//! One parallel pass counts the values on a uniform grid of `B` buckets (one
//! subtract, one multiply, a floor; the end buckets are clamped). The grid
//! spans the mean ± 6 standard deviations (within `[min, max]`), so a few
//! far outliers cannot coarsen the runs of the bulk; beyond, the end
//! buckets hold the tails. The bucket index is monotone in the value, so a
//! bucket ("run") with `C` smaller elements holds exactly the order
//! statistics `C+1 ..= C+c`, all inside the bucket's edges `[lo, hi]`
//! (widened by a rounding guard), and ties never straddle runs. As `F` is non-decreasing, every term of the run is at most
//! `U = max((C+c)/n - F(lo), F(hi) - C/n)`, and D is at least
//! `L = max(F(lo) - C/n, (C+c)/n - F(hi))` (the terms of its first and last
//! order statistics can be no smaller).
//!
//! Let `L*` be the largest lower bound over all runs. A run with
//! `U < L* <= D` cannot hold the term that attains D: skip it. The others are
//! gathered (one data pass for all of them) and their terms computed exactly:
//! each run is counted into cells of about 16 values on a grid over its own
//! range, and only the cells whose own bound is not below `L*` by the same
//! test are sorted and their terms computed. Runs of more than 2^16 elements
//! (or of more than 16, when all of them hold more than `n / 8`) are refined
//! first: re-histogrammed over their own range on a finer grid that also
//! records each sub-run's exact min and max (whose terms are then exact, and
//! a run of ties, min == max, is known outright). Repeat until no unresolved
//! run's `U` exceeds `L*`. The run that attains D always survives the skip
//! test, so the answer, the largest exact term computed, is the maximum the
//! sort-based definition computes, bit for bit (the skip test keeps a 1e-14
//! margin for ulp-level non-monotonicity of `erfc`/`exp`). The cost is one
//! counting pass, a few thousand cdf evaluations per fit and one gather pass:
//! blocks of consecutive runs (at most `n / 2048` elements or 64 runs each)
//! are bounded first as if each were one run, and only the runs of the blocks
//! whose `U` reaches the largest block `L` are bounded one by one (the same
//! `L*` and the same surviving runs as bounding every run). The counts do not
//! depend on the fit: one pass serves every fit and the median (whose middle
//! ranks are located the same way).
//!
//! # Within a tolerance
//! The pipeline's fits ([`fit_tensor`], [`fit_rows`]) need D only to
//! [`KS_TOLERANCE`] (within 1e-4 of `scipy.stats.kstest`, as documented):
//! runs whose upper bound exceeds `L*` by at most twice the tolerance are
//! left unresolved, D lies between `L*` and the largest upper bound left, and
//! the middle of that bracket is reported. A whole top-level bucket bounds
//! its terms within the fitted cdf's rise across it: at most its width times
//! the fitted density's peak, on a grid of 2^16 buckets over ±6σ 7.3e-5 for
//! the Gaussian fit and about 1.3e-4 for the Laplace fit of Laplace-shaped
//! data (σ = √2 b). So most statistics are bracketed by the counting pass
//! alone, or with the few densest runs resolved, and most gather passes are
//! skipped. When the two families' brackets overlap, both statistics are
//! computed exactly, so the family choice is always that of the exact
//! statistics. The pipeline's layouts (of a tensor, and of the pooled
//! standardized values of channel granularity) hold coarse runs of 64
//! buckets, split into buckets only where they may hold the arg-max or the
//! median (`layout::build_coarse`).
//!
//! Everything reduces deterministically: integer counts and min/max merge
//! exactly, floating sums run over fixed-size parts combined in index order.
//!
//! # Modules, one job each
//! | module | job |
//! |---|---|
//! | `fit` | what the pipeline calls: both fits and both KS statistics |
//! | `moments`, `rows` | mean, std, mean absolute deviation; per-row fits |
//! | `median`, `laplace` | exact medians (bracket, copy, select); the fused median + deviation pass |
//! | `ks`, `bounds`, `cells` | the KS statistic: the pruning loop, bounds of runs, exact terms of a gathered run |
//! | `grid`, `counts`, `layout`, `refine` | the monotone bucket grid, the counting pass, runs of the sorted data, refining runs |
//! | `gather`, `router` | copying out the values of chosen runs; deciding which run a value belongs to |
//! | `source`, `parts` | what a pass reads (flat or standardized rows); fixed parts for deterministic parallel passes |
//! | `simd` | every inner loop: scalar reference, AVX2 and AVX-512 versions, one dispatch |
//! | `approx_cdf` | a table cdf for bounds, within a stated error |

mod approx_cdf;
mod bounds;
mod cells;
mod counts;
mod fit;
mod gather;
mod grid;
mod ks;
mod laplace;
mod layout;
mod median;
mod moments;
mod parts;
mod refine;
mod router;
mod rows;
mod simd;
mod source;

#[cfg(test)]
mod tests;

pub use fit::{fit_rows, fit_tensor, ChannelFit, LocScale, TensorFit};
pub use median::median;
pub use moments::{mean_abs_dev, moments, Moments};
pub use rows::RowFit;

/// How close the KS statistics of [`fit_tensor`] and [`fit_rows`] (the
/// pipeline's) are to the exact ones: their runs need no gather once D is
/// bracketed `2 * KS_TOLERANCE` wide, and they report the bracket's middle.
/// Both statistics are computed exactly when their brackets overlap, so the
/// family choice is the exact one.
pub const KS_TOLERANCE: f64 = 5e-5;

/// Below this many elements a sorted copy is cheaper than histogram passes.
const SMALL_N: usize = 1 << 14;
