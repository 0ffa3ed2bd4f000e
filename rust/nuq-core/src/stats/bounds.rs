//! Bounds of the KS terms of a layout's runs, without their values: a run
//! holds known ranks (`offset + 1 ..= offset + count`) and its values lie
//! in `[lo, hi]`, where the fitted cdf is monotone, so each of its terms
//! lies below `upper` and D is at least `lower` (see the `stats` module
//! doc). Blocks of runs are bounded first, so that only the runs of the
//! blocks that can reach D get bounds of their own. Cdf values at inexact
//! edges come from `approx_cdf`, its error added to the margins.

use std::ops::Range;

use rayon::prelude::*;

use super::approx_cdf::{ApproxCdf, APPROX_ERR};
use super::ks::{term, Fitted, SLACK};
use super::layout::{Layout, Rec};

/// `(lower, upper)` for order statistics `offset + 1 ..= last` of `n` whose
/// cdf values lie in `[fl, fh]`: every term is at most `upper`, and the
/// first or last term is at least `lower` (a lower bound of D).
#[inline]
pub(super) fn rank_bounds(offset: usize, last: usize, n: f64, fl: f64, fh: f64) -> (f64, f64) {
    let (below, upto) = (offset as f64 / n, last as f64 / n);
    ((fl - below).max(upto - fh), (upto - fl).max(fh - below))
}

/// What a run alone says about its terms.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// Largest of its terms known exactly (0 if none).
    pub exact: f64,
    /// A lower bound of D implied by its rank and value bounds.
    pub lower: f64,
    /// An upper bound of all its terms.
    pub upper: f64,
}

/// What the runs of a layout say about D for one fit: the runs that may
/// hold the term attaining it, each with its own bounds, and a lower bound
/// of D from the others.
#[derive(Debug)]
pub(super) struct FitBounds {
    /// `(run, its bounds)`, ascending.
    pub fine: Vec<(usize, Bounds)>,
    /// A lower bound of D: the largest lower bound of a block of runs.
    pub floor: f64,
}

/// Blocks of consecutive runs are bounded first, each as one run between
/// the cdf at its two ends; a block holds at most `n / BLOCK_SHARE` elements
/// (or one run) and at most `BLOCK_RUNS` runs.
const BLOCK_SHARE: usize = 2048;
const BLOCK_RUNS: usize = 64;

/// The runs' bounds against `fit`, coarse to fine. Each block of runs is
/// bounded as one run (two cdf evaluations); only the runs of the blocks
/// whose upper bound reaches `floor`, the largest block lower bound (less
/// `SLACK`), get bounds of their own. No other run can hold the term that
/// attains D, nor have an upper bound that reaches `floor`; and the block
/// that attains `floor` is one of those kept, whose first and last runs'
/// own lower bounds are at least its. So `candidates` finds the same lower
/// bound and the same runs as from every run's own bounds, with a few cdf
/// evaluations per block and per kept run. On a close fit (D below a
/// block's slack) nearly every block is kept, so nearly every run is
/// bounded.
pub(super) fn fit_bounds(layout: &Layout, blocks: &[Range<usize>], fit: &Fitted) -> FitBounds {
    let n = layout.n as f64;
    let edges = Edges::new(layout, fit);
    let whole: Vec<Bounds> = blocks
        .par_iter()
        .map(|b| edges.span_bounds(b.start, b.end - 1, n))
        .collect();
    let floor = whole.iter().map(|b| b.lower).fold(0.0, f64::max);
    let fine: Vec<(usize, Bounds)> = blocks
        .par_iter()
        .zip(&whole)
        .filter(|(_, w)| w.upper + SLACK > floor)
        .flat_map_iter(|(b, _)| b.clone().zip(edges.run_bounds(b.clone(), n)))
        .collect();
    FitBounds { fine, floor }
}

/// Consecutive runs in blocks of at most `n / BLOCK_SHARE` elements (a
/// bigger run alone) and at most `BLOCK_RUNS` runs.
pub(super) fn blocks(layout: &Layout) -> Vec<Range<usize>> {
    let cap = (layout.n / BLOCK_SHARE).max(1);
    let mut out = Vec::with_capacity(layout.recs.len() / 4 + 1);
    let (mut start, mut held) = (0, 0);
    for (i, r) in layout.recs.iter().enumerate() {
        if i > start && (held + r.count > cap || i - start == BLOCK_RUNS) {
            out.push(start..i);
            (start, held) = (i, 0);
        }
        held += r.count;
    }
    if start < layout.recs.len() {
        out.push(start..layout.recs.len());
    }
    out
}

/// The cdf bounds at the ends of the runs of a layout. An inexact run that
/// is not an end bucket is a whole top-level bucket: its values lie within
/// the grid edges widened by the guard, where the cdf is within `guard * max
/// density` of the cdf at the edges.
pub(super) struct Edges<'a> {
    layout: &'a Layout,
    fit: &'a Fitted,
    approx: ApproxCdf,
    /// Both densities peak below 0.5 / scale; doubled for rounding.
    widen: f64,
}

impl<'a> Edges<'a> {
    pub(super) fn new(layout: &'a Layout, fit: &'a Fitted) -> Self {
        let widen = layout.grid.guard() / fit.scale;
        Edges {
            layout,
            fit,
            approx: ApproxCdf::new(fit.family),
            widen,
        }
    }

    fn whole(&self, r: &Rec) -> bool {
        !r.exact && r.root > 0 && r.root + (r.buckets as usize) < self.layout.grid.nb
    }

    /// How far the cdf of run `i`'s values can lie beyond its edge values
    /// (`at_lo`, `at_hi`): the guard's widening for a whole bucket, and the
    /// approximation's error unless the run is exact.
    fn margin(&self, i: usize) -> f64 {
        let r = &self.layout.recs[i];
        if r.exact {
            0.0
        } else if self.whole(r) {
            self.widen + APPROX_ERR
        } else {
            APPROX_ERR
        }
    }

    /// The cdf at a run's edge `v`: exact for an exact run (its edges are
    /// its first and last values, whose terms are taken as exact), else
    /// the table's (within `APPROX_ERR`).
    fn cdf_at(&self, r: &Rec, v: f64) -> f64 {
        if r.exact {
            self.fit.cdf(v)
        } else {
            self.fit.approx_cdf(self.approx, v)
        }
    }

    /// The cdf at run `i`'s lower edge: its grid edge if whole, else `lo`.
    fn at_lo(&self, i: usize) -> f64 {
        let r = &self.layout.recs[i];
        let v = if self.whole(r) {
            self.layout.grid.edge(r.root)
        } else {
            r.lo
        };
        self.cdf_at(r, v)
    }

    /// The cdf at run `i`'s upper edge.
    fn at_hi(&self, i: usize) -> f64 {
        let r = &self.layout.recs[i];
        let v = if self.whole(r) {
            self.layout.grid.edge(r.root + r.buckets as usize)
        } else {
            r.hi
        };
        self.cdf_at(r, v)
    }

    /// Bounds of runs `first..=last` taken as one run (no exact terms).
    fn span_bounds(&self, first: usize, last: usize, n: f64) -> Bounds {
        let recs = &self.layout.recs;
        let merged = Rec {
            exact: false,
            count: recs[last].offset + recs[last].count - recs[first].offset,
            ..recs[first]
        };
        let fl = self.at_lo(first) - self.margin(first);
        let fh = self.at_hi(last) + self.margin(last);
        run_bounds(&merged, n, fl, fh)
    }

    /// Each run's own bounds. A run's upper edge is its successor's lower
    /// edge when both are whole buckets and adjacent (most are): about one
    /// cdf evaluation per run instead of two.
    pub(super) fn run_bounds(&self, runs: Range<usize>, n: f64) -> Vec<Bounds> {
        let recs = &self.layout.recs;
        let at_lo: Vec<f64> = runs.clone().map(|i| self.at_lo(i)).collect();
        runs.clone()
            .zip(&at_lo)
            .map(|(i, &fl)| {
                let r = &recs[i];
                let shared = i + 1 < runs.end
                    && self.whole(r)
                    && self.whole(&recs[i + 1])
                    && recs[i + 1].root == r.root + r.buckets as usize;
                let fh = if shared {
                    at_lo[i + 1 - runs.start]
                } else {
                    self.at_hi(i)
                };
                let m = self.margin(i);
                run_bounds(r, n, fl - m, fh + m)
            })
            .collect()
    }
}

/// The rank of the run's first element is `offset+1`, of its last
/// `offset+count`, and every value lies in `[lo, hi]`, where the cdf is at
/// least `fl` and at most `fh` (exactly the cdf there when the run is exact);
/// `F` is monotone.
fn run_bounds(r: &Rec, n: f64, fl: f64, fh: f64) -> Bounds {
    let (first, last) = (r.offset + 1, r.offset + r.count);
    let (lower, upper) = rank_bounds(r.offset, last, n, fl, fh);
    if r.pure() {
        return Bounds {
            exact: upper,
            lower: upper,
            upper,
        };
    }
    let exact = if r.exact {
        term(first, n, fl).max(term(last, n, fh))
    } else {
        0.0
    };
    Bounds {
        exact,
        lower,
        upper,
    }
}

#[cfg(test)]
mod tests {
    use super::super::grid::Grid;
    use super::super::layout::build;
    use super::super::source::Flat;
    use super::*;
    use crate::Family;

    /// Every run's bounds, from the shared edge cdf values, hold its exact
    /// terms: `upper` is at least each term and `lower` at most the larger
    /// of its first and last terms. Values sit on and next to the grid edges
    /// (where the guard matters), on a grid with empty buckets in between.
    #[test]
    fn run_bounds_hold_the_exact_terms() {
        let grid = Grid::new(-1.0, 1.0, 1 << 10);
        let mut x: Vec<f32> = (0..=1024)
            .filter(|k| k % 7 != 3)
            .flat_map(|k| {
                let e = grid.edge(k) as f32;
                [e.next_down(), e, e.next_up(), e + 1e-4]
            })
            .filter(|v| (-1.0..=1.0).contains(v))
            .collect();
        x.sort_by(f32::total_cmp);
        let n = x.len();
        let layout = build(&Flat(&x), -1.0, 1.0, 1 << 10, Some((-1.0, 1.0)));
        for fit in [
            Fitted {
                family: Family::Gaussian,
                loc: 0.05,
                scale: 0.4,
            },
            Fitted {
                family: Family::Laplace,
                loc: -0.02,
                scale: 0.3,
            },
        ] {
            let bounds = Edges::new(&layout, &fit).run_bounds(0..layout.recs.len(), n as f64);
            for (r, b) in layout.recs.iter().zip(&bounds) {
                let run = &x[r.offset..r.offset + r.count];
                let terms: Vec<f64> = run
                    .iter()
                    .enumerate()
                    .map(|(j, &v)| term(r.offset + j + 1, n as f64, fit.cdf(f64::from(v))))
                    .collect();
                let top = terms.iter().copied().fold(0.0, f64::max);
                assert!(top <= b.upper, "{r:?}: term {top} above {}", b.upper);
                let ends = terms[0].max(terms[terms.len() - 1]);
                assert!(b.lower <= ends, "{r:?}: lower {} above {ends}", b.lower);
            }
        }
    }
}
