//! Kolmogorov–Smirnov statistic, exact, by bucket pruning (see the module
//! doc of `stats`) with a sort-based reference that defines the result.

use rayon::prelude::*;

use super::approx_cdf::ApproxCdf;
use super::bounds::{blocks, fit_bounds, rank_bounds, FitBounds};
use super::cells::{run_terms, CellScratch};
use super::gather::gather;
use super::grid::{buckets_for, Grid, GRID_SIGMAS, MAX_BUCKETS};
use super::layout::{build_coarse, expand, Layout};
use super::refine::refine;
use super::source::{inv_scale, Source, Standardized, Value};
use super::SMALL_N;
use crate::Family;

/// A bucket is skipped only when its bound is below the best exact term by
/// more than this: covers ulp-level non-monotonicity of `erfc`/`exp`.
pub(super) const SLACK: f64 = 1e-14;
/// Candidates at most this big are always gathered rather than refined.
const REFINE_MIN: usize = 16;
/// Bigger candidates are refined (a pass, no copy) rather than gathered.
/// Up to this size gathering wins even for runs of thousands of values:
/// the cells of `run_terms` sort only what can reach the maximum, while a
/// refinement pass bins every candidate value into a table too big for L2
/// (measured: benches/README.md).
const SORT_MAX: usize = 1 << 16;

/// Where the exact D of one fit lies: `lo <= D <= hi` (equal when exact).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    pub lo: f64,
    pub hi: f64,
}

impl Estimate {
    pub(crate) fn exact(d: f64) -> Self {
        Estimate { lo: d, hi: d }
    }

    /// The midpoint: within half the width of the exact D.
    pub(crate) fn value(&self) -> f64 {
        if self.hi > self.lo {
            0.5 * (self.lo + self.hi)
        } else {
            self.hi
        }
    }
}

/// Whether the Gaussian-or-Laplace choice (the smaller D; ties: Gaussian)
/// is the same for every exact pair of statistics within `gaussian` and
/// `laplace`, and so the same as [`Estimate::value`]s give.
pub(crate) fn choice_is_certain(gaussian: Estimate, laplace: Estimate) -> bool {
    gaussian.hi <= laplace.lo || laplace.hi < gaussian.lo
}

/// A fitted distribution: `F(v) = family.cdf((v - loc) / scale)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fitted {
    pub family: Family,
    pub loc: f64,
    pub scale: f64,
}

impl Fitted {
    #[inline]
    pub(super) fn cdf(&self, v: f64) -> f64 {
        self.family.cdf((v - self.loc) / self.scale)
    }

    /// `cdf` within [`APPROX_ERR`], for bounds (`approx` of the family).
    #[inline]
    pub(super) fn approx_cdf(&self, approx: ApproxCdf, v: f64) -> f64 {
        approx.at((v - self.loc) / self.scale)
    }
}

/// scipy's larger term for order statistic `i` (1-based) of `n` where the
/// cdf is `f`: `max(i/n - f, f - (i-1)/n)`.
#[inline]
pub(super) fn term(i: usize, n: f64, f: f64) -> f64 {
    (i as f64 / n - f).max(f - (i - 1) as f64 / n)
}

/// Max of the terms of sorted values holding order statistics `offset+1..`.
pub(super) fn ks_sorted<V: Value>(sorted: &[V], offset: usize, n: usize, fit: &Fitted) -> f64 {
    let nf = n as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(j, v)| term(offset + j + 1, nf, fit.cdf(v.to_f64())))
        .fold(0.0, f64::max)
}

/// Elements per block of [`ks_sorted_above`].
const TERM_BLOCK: usize = 16;

/// [`ks_sorted`] for the terms that can reach `floor` (a lower bound of D):
/// a block of sorted values is bounded by the cdf at its first and last
/// value and their ranks, and only blocks whose bound reaches `floor` (less
/// `SLACK`) get every term computed. The block holding the term that attains
/// D is never skipped, so the largest term seen is the same as `ks_sorted`'s
/// whenever that term lies in `sorted`.
pub(super) fn ks_sorted_above<V: Value>(
    sorted: &[V],
    offset: usize,
    n: usize,
    fit: &Fitted,
    floor: f64,
) -> f64 {
    let nf = n as f64;
    let mut best = 0.0f64;
    for (b, block) in sorted.chunks(TERM_BLOCK).enumerate() {
        let first = offset + b * TERM_BLOCK + 1;
        let last = first + block.len() - 1;
        let (f_first, f_last) = (
            fit.cdf(block[0].to_f64()),
            fit.cdf(block[block.len() - 1].to_f64()),
        );
        best = best
            .max(term(first, nf, f_first))
            .max(term(last, nf, f_last));
        let (_, upper) = rank_bounds(first - 1, last, nf, f_first, f_last);
        if upper + SLACK > floor.max(best) && block.len() > 2 {
            best = best.max(ks_sorted(&block[1..block.len() - 1], first, n, fit));
        }
    }
    best
}

/// D of a small sample for every fit, as [`ks_by_sort`] but without the
/// sort or most cdf evaluations: the sample is one run of cells
/// ([`run_terms`]), and only the cells that can hold the maximum are sorted.
pub(crate) fn ks_small<V: Value>(mut v: Vec<V>, fits: &[Fitted]) -> Vec<f64> {
    let live: Vec<Fitted> = fits
        .iter()
        .copied()
        .filter(|f| active(f, v.len()))
        .collect();
    let floors = vec![0.0; live.len()];
    let n = v.len();
    let mut d = run_terms(&mut v, 0, n, &live, &floors, &mut CellScratch::default()).into_iter();
    fits.iter()
        .map(|f| if active(f, n) { d.next().unwrap() } else { 0.0 })
        .collect()
}

/// A zero scale (constant data) is a point mass that the data equal: D = 0.
fn active(fit: &Fitted, n: usize) -> bool {
    n > 0 && fit.scale != 0.0
}

/// D of the pooled per-row standardized values `z = (x - loc[r]) / scale[r]`
/// (rows of `row_len`; `scale[r] == 0` gives `z = 0`) against the standard
/// `family` cdf, known within `tol` (see [`ks_layout_within`]; exact for
/// `tol == 0` and below `SMALL_N` elements). `x` must be finite. `z` is
/// computed as `(x - loc) * (1 / scale)`, within an ulp of the quotient.
///
/// # Panics
/// If `row_len == 0`, `x.len()` is not a multiple of it, or `loc`/`scale`
/// do not have one entry per row.
pub(crate) fn ks_rows_within(
    x: &[f32],
    row_len: usize,
    family: Family,
    loc: &[f64],
    scale: &[f64],
    tol: f64,
) -> Estimate {
    assert!(
        row_len > 0 && x.len().is_multiple_of(row_len),
        "ks_rows_within: row_len {row_len} must be > 0 and divide {}",
        x.len()
    );
    let rows = x.len() / row_len;
    assert!(
        loc.len() == rows && scale.len() == rows,
        "ks_rows_within: need {rows} loc/scale entries, got {}/{}",
        loc.len(),
        scale.len()
    );
    let fit = [Fitted {
        family,
        loc: 0.0,
        scale: 1.0,
    }];
    let inv: Vec<f64> = scale.iter().map(|&s| inv_scale(s)).collect();
    let src = Standardized {
        x,
        row_len,
        loc,
        inv: &inv,
    };
    if x.len() < SMALL_N {
        let mut z = Vec::with_capacity(x.len());
        src.visit(0..x.len(), |v| z.push(v));
        return Estimate::exact(ks_small(z, &fit)[0]);
    }
    // Standardized values beyond the grid fall in its clamped end buckets
    // (still exact, only less finely bucketed). 2^16 buckets over ±6
    // bracket every term within 1e-4 (see `ks_layout_within`): the doubled
    // grid of large tensors would only cost its counting pass more.
    let nb = buckets_for(x.len()).min(MAX_BUCKETS);
    let grid = Grid::new(-GRID_SIGMAS, GRID_SIGMAS, nb);
    let mut layout = build_coarse(&src, grid, None);
    ks_layout_within(&src, &mut layout, &fit, tol)[0]
}

/// D for each fit, known to within `tol` (exact for `tol == 0`): runs whose
/// upper bound exceeds the largest lower bound of D by at most `2 tol` are
/// left unresolved, so D lies between that lower bound and their largest
/// upper bound (or is the largest exact term, when none is left), at most
/// `2 tol` apart. A whole top-level bucket bounds its terms within the
/// fitted cdf's rise across it (see the module doc), so with a tolerance of
/// about half that rise, few runs or none need a gather.
pub(crate) fn ks_layout_within<S: Source>(
    src: &S,
    layout: &mut Layout,
    fits: &[Fitted],
    tol: f64,
) -> Vec<Estimate> {
    let live: Vec<Fitted> = fits
        .iter()
        .copied()
        .filter(|f| active(f, layout.n))
        .collect();
    // `best`: largest exact term seen; `lower`: largest lower bound of D
    // (exact terms, or bounds from inexact runs). Pruning uses `lower`; the
    // answer is `best`, which ends up holding the term that attains D.
    let mut best = vec![0.0; live.len()];
    let mut lower = vec![0.0; live.len()];
    for r in layout.recs.iter_mut() {
        r.done = false;
    }
    // Per fit, per run: what the run alone says (recomputed only when
    // refinement changes the runs; resolving only marks runs done).
    let mut bounds: Vec<FitBounds> = Vec::new();
    loop {
        if bounds.is_empty() {
            let blocks = blocks(layout);
            bounds = live
                .iter()
                .map(|f| fit_bounds(layout, &blocks, f))
                .collect();
        }
        let cands = candidates(layout, &bounds, &mut best, &mut lower, tol);
        if cands.is_empty() {
            break;
        }
        // Coarse candidates are split into their buckets and bounded anew.
        let coarse: Vec<usize> = cands
            .iter()
            .copied()
            .filter(|&i| layout.recs[i].buckets > 1)
            .collect();
        if !coarse.is_empty() {
            expand(layout, &coarse);
            bounds.clear();
            continue;
        }
        let (large, small) = plan(layout, cands);
        if !small.is_empty() {
            resolve(src, layout, &small, &live, &lower, &mut best);
        }
        if !large.is_empty() {
            refine(src, layout, &large);
            bounds.clear();
        }
    }
    let mut it = bounds
        .iter()
        .zip(best.iter().zip(&lower))
        .map(|(fb, (&best, &lower))| unresolved(layout, fb, best, lower));
    fits.iter()
        .map(|f| {
            if active(f, layout.n) {
                it.next().unwrap()
            } else {
                Estimate::exact(0.0)
            }
        })
        .collect()
}

/// Where D lies once every candidate run is resolved: `best` (the largest
/// exact term) unless runs left unresolved may hold a larger term, then
/// between `lower` and their largest upper bound.
fn unresolved(layout: &Layout, fb: &FitBounds, best: f64, lower: f64) -> Estimate {
    let hi = fb
        .fine
        .iter()
        .filter(|(i, b)| {
            let r = &layout.recs[*i];
            b.upper + SLACK > lower && !r.done && !r.pure()
        })
        .map(|(_, b)| b.upper + SLACK)
        .fold(best, f64::max);
    let lo = best.max(lower);
    if hi > lo {
        Estimate { lo, hi }
    } else {
        Estimate::exact(best)
    }
}

/// Splits candidates into (refine, gather). Gathering is cheap while the
/// candidates hold few elements; beyond `gather_budget` a refinement pass
/// (which tightens every candidate's bounds) comes first.
fn plan(layout: &Layout, cands: Vec<usize>) -> (Vec<usize>, Vec<usize>) {
    let total: usize = cands.iter().map(|&i| layout.recs[i].count).sum();
    let limit = if total > gather_budget(layout.n) {
        REFINE_MIN
    } else {
        SORT_MAX
    };
    cands.into_iter().partition(|&i| {
        let r = &layout.recs[i];
        r.count > limit && r.refinable()
    })
}

/// Elements worth gathering in one round: sorting many short runs costs
/// little next to the pass a refinement would add.
fn gather_budget(n: usize) -> usize {
    (n / 8).max(1 << 14)
}

/// Raises `best` by the exact terms the runs expose alone (first and last
/// order statistics of exact runs; every term of a run of ties) and `lower`
/// by every lower bound, then lists the runs whose upper bound for some fit
/// still exceeds that fit's `lower` by more than `2 tol` (ascending).
fn candidates(
    layout: &Layout,
    bounds: &[FitBounds],
    best: &mut [f64],
    lower: &mut [f64],
    tol: f64,
) -> Vec<usize> {
    let mut cands = Vec::new();
    for ((fb, best), lower) in bounds.iter().zip(best.iter_mut()).zip(lower.iter_mut()) {
        // Maxima: exact in any order.
        for (_, b) in &fb.fine {
            *best = best.max(b.exact);
            *lower = lower.max(b.lower).max(b.exact);
        }
        *lower = lower.max(fb.floor);
        // The bound first: most runs fail it, and it needs no record.
        cands.extend(fb.fine.iter().filter_map(|&(i, b)| {
            let r = &layout.recs[i];
            (b.upper + SLACK > *lower + 2.0 * tol && !r.done && !r.pure()).then_some(i)
        }));
    }
    cands.sort_unstable();
    cands.dedup();
    cands
}

/// Gathers the records `idx`, sorts each, and folds in their exact terms
/// that can reach `lower` (per fit, a lower bound of D).
fn resolve<S: Source>(
    src: &S,
    layout: &mut Layout,
    idx: &[usize],
    fits: &[Fitted],
    lower: &[f64],
    best: &mut [f64],
) {
    let mut groups = gather(src, layout, idx);
    let recs = &layout.recs;
    let exact: Vec<Vec<f64>> = groups
        .runs_mut()
        .into_par_iter()
        .zip(idx.par_iter())
        .map_init(CellScratch::default, |scratch, (g, &i)| {
            run_terms(g, recs[i].offset, layout.n, fits, lower, scratch)
        })
        .collect();
    for e in &exact {
        for (b, &d) in best.iter_mut().zip(e) {
            *b = b.max(d);
        }
    }
    for &i in idx {
        layout.recs[i].done = true;
    }
}

/// D by full sort, exactly as `scipy.stats.kstest(x, family, args=(loc,
/// scale))`: the definition the fast paths are tested against. `scale == 0`
/// or empty `x` gives 0.
#[cfg(test)]
pub(crate) fn ks_sorted_reference(x: &[f32], family: Family, loc: f64, scale: f64) -> f64 {
    let fit = Fitted { family, loc, scale };
    ks_by_sort(x.to_vec(), &[fit])[0]
}

/// Sort, then every term of every non-degenerate fit: the definition.
#[cfg(test)]
fn ks_by_sort<V: Value>(mut v: Vec<V>, fits: &[Fitted]) -> Vec<f64> {
    v.sort_unstable_by(V::total_order);
    fits.iter()
        .map(|f| active(f, v.len()).then(|| ks_sorted(&v, 0, v.len(), f)))
        .map(Option::unwrap_or_default)
        .collect()
}

/// The exact D of `x` against each `(family, loc, scale)`, over all
/// elements, from one shared histogram pass (the pipeline's path with no
/// tolerance). `x` must be finite.
#[cfg(test)]
pub(crate) fn ks_tensor(x: &[f32], fits: &[(Family, f64, f64)]) -> Vec<f64> {
    use super::{grid::buckets_for, layout::build, moments::min_max, source::Flat, SMALL_N};
    let fits: Vec<Fitted> = fits
        .iter()
        .map(|&(family, loc, scale)| Fitted { family, loc, scale })
        .collect();
    if x.len() < SMALL_N {
        return ks_small(x.to_vec(), &fits);
    }
    let (lo, hi) = min_max(x);
    let mut layout = build(&Flat(x), lo, hi, buckets_for(x.len()), Some((lo, hi)));
    ks_layout(&Flat(x), &mut layout, &fits)
}

/// The exact D for each fit from a layout of the same source.
#[cfg(test)]
pub(crate) fn ks_layout<S: Source>(src: &S, layout: &mut Layout, fits: &[Fitted]) -> Vec<f64> {
    ks_layout_within(src, layout, fits, 0.0)
        .iter()
        .map(Estimate::value)
        .collect()
}

/// The exact [`ks_rows_within`].
#[cfg(test)]
pub(crate) fn ks_rows(
    x: &[f32],
    row_len: usize,
    family: Family,
    loc: &[f64],
    scale: &[f64],
) -> f64 {
    ks_rows_within(x, row_len, family, loc, scale, 0.0).value()
}

/// Reference for `ks_rows`: materialize every `z`, sort, scipy formula.
#[cfg(test)]
pub(crate) fn ks_rows_reference(
    x: &[f32],
    row_len: usize,
    family: Family,
    loc: &[f64],
    scale: &[f64],
) -> f64 {
    let z: Vec<f64> = x
        .chunks(row_len)
        .enumerate()
        .flat_map(|(r, row)| {
            let inv = inv_scale(scale[r]);
            row.iter()
                .map(move |&v| super::source::standardize(v, loc[r], inv))
        })
        .collect();
    let fit = Fitted {
        family,
        loc: 0.0,
        scale: 1.0,
    };
    ks_by_sort(z, &[fit])[0]
}

#[cfg(test)]
mod tests {
    use super::super::bounds::Edges;
    use super::super::{layout::build, moments::min_max, source::Flat};
    use super::*;

    #[test]
    fn matches_scipy_on_a_small_sample() {
        // scipy 1.17: kstest(x, 'norm', args=(0.25, 1.5)).statistic and
        // kstest(x, 'laplace', args=(0.0, 0.8)).statistic.
        let x = [0.3f32, -1.2, 2.5, 0.0, 0.0, 1.1, -0.4, 0.7];
        let g = ks_sorted_reference(&x, Family::Gaussian, 0.25, 1.5);
        let l = ks_sorted_reference(&x, Family::Laplace, 0.0, 0.8);
        assert!((g - 0.207_386_311_183_485_1).abs() < 1e-12, "{g}");
        assert!((l - 0.25).abs() < 1e-12, "{l}");
    }

    #[test]
    fn pruned_terms_keep_the_maximum() {
        // Sorted, lumpy data with ties, against a fit that misses it.
        let mut x: Vec<f32> = (0..5000)
            .map(|i| (((i * 7919) % 4001) as f32 / 1000.0 - 2.0).powi(3))
            .collect();
        x.sort_by(f32::total_cmp);
        let n = x.len();
        for fit in [
            Fitted {
                family: Family::Gaussian,
                loc: 0.3,
                scale: 2.0,
            },
            Fitted {
                family: Family::Laplace,
                loc: -0.1,
                scale: 1.5,
            },
        ] {
            let d = ks_sorted(&x, 0, n, &fit);
            for floor in [0.0, d / 2.0, d - 1e-9, d] {
                assert_eq!(ks_sorted_above(&x, 0, n, &fit, floor), d);
            }
            // Pieces with their offsets: the piece holding the maximum keeps it.
            let pieces: Vec<f64> = (0..n)
                .step_by(777)
                .map(|a| ks_sorted_above(&x[a..(a + 777).min(n)], a, n, &fit, d))
                .collect();
            assert_eq!(pieces.iter().copied().fold(0.0, f64::max), d);
            // Above D, blocks are skipped, and what is returned is still a term.
            assert!(ks_sorted_above(&x, 0, n, &fit, 1.0) <= d);
        }
    }

    /// The lower bound and the candidates that every run's own bounds
    /// give, from all runs (the definition the block pruning must keep).
    fn fine_everywhere(layout: &Layout, fit: &Fitted) -> (f64, Vec<usize>) {
        let all = Edges::new(layout, fit).run_bounds(0..layout.recs.len(), layout.n as f64);
        let lower = all.iter().map(|b| b.lower.max(b.exact)).fold(0.0, f64::max);
        let cands = (0..all.len())
            .filter(|&i| !layout.recs[i].pure() && all[i].upper + SLACK > lower)
            .collect();
        (lower, cands)
    }

    /// Bounding blocks of runs first keeps the lower bound and the
    /// candidates bit for bit, on whole-bucket and on refined (exact) runs,
    /// while bounding only a fraction of the runs one by one.
    #[test]
    fn block_pruning_keeps_the_candidates() {
        use super::super::tests::sample;
        let n = 200_000;
        for kind in [0u8, 1, 3, 5, 6] {
            let x = sample(kind, n, 17);
            let (lo, hi) = min_max(&x);
            let mut layout = build(&Flat(&x), lo, hi, buckets_for(n), Some((lo, hi)));
            let mid = (lo + hi) / 2.0;
            let fits = [
                Fitted {
                    family: Family::Gaussian,
                    loc: mid,
                    scale: (hi - lo) / 9.0,
                },
                Fitted {
                    family: Family::Laplace,
                    loc: mid + (hi - lo) / 50.0,
                    scale: (hi - lo) / 13.0,
                },
            ];
            for round in 0..2 {
                for fit in &fits {
                    let (want_lower, want) = fine_everywhere(&layout, fit);
                    let fb = fit_bounds(&layout, &blocks(&layout), fit);
                    let fine = fb.fine.len();
                    let (mut best, mut lower) = ([0.0], [0.0]);
                    let got = candidates(&layout, &[fb], &mut best, &mut lower, 0.0);
                    assert_eq!(lower[0], want_lower, "kind {kind}, round {round}");
                    assert_eq!(got, want, "kind {kind}, round {round}");
                    if kind == 0 {
                        let runs = layout.recs.len();
                        assert!(4 * fine < runs, "{fine} of {runs} runs bounded alone");
                    }
                }
                // Refine every tenth refinable run: exact runs among whole buckets.
                let targets: Vec<usize> = (0..layout.recs.len())
                    .filter(|&i| {
                        let r = &layout.recs[i];
                        i % 10 == 0 && !r.pure() && r.refinable()
                    })
                    .collect();
                refine(&Flat(&x), &mut layout, &targets);
            }
        }
    }

    #[test]
    fn degenerate_inputs_give_zero() {
        assert_eq!(ks_sorted_reference(&[], Family::Gaussian, 0.0, 1.0), 0.0);
        assert_eq!(ks_tensor(&[2.0; 5], &[(Family::Laplace, 2.0, 0.0)]), [0.0]);
        let big = vec![-3.5f32; 3 * SMALL_N];
        let d = ks_tensor(
            &big,
            &[(Family::Gaussian, -3.5, 0.0), (Family::Gaussian, 0.0, 1.0)],
        );
        assert_eq!(d[0], 0.0);
        assert_eq!(d[1], ks_sorted_reference(&big, Family::Gaussian, 0.0, 1.0));
    }

    #[test]
    fn single_element_against_its_own_location_is_one_half() {
        let d = ks_sorted_reference(&[1.0], Family::Gaussian, 1.0, 2.0);
        assert_eq!(d, 0.5);
    }

    #[test]
    fn rows_with_zero_scale_pool_as_zero() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let d = ks_rows(&x, 3, Family::Laplace, &[0.0, 0.0], &[0.0, 0.0]);
        assert_eq!(d, 0.5);
        let r = ks_rows_reference(&x, 3, Family::Laplace, &[2.0, 5.0], &[1.0, 0.0]);
        let f = ks_rows(&x, 3, Family::Laplace, &[2.0, 5.0], &[1.0, 0.0]);
        assert_eq!(r, f);
    }

    #[test]
    #[should_panic(expected = "ks_rows")]
    fn rows_reject_a_bad_row_length() {
        ks_rows(&[1.0; 5], 2, Family::Gaussian, &[0.0; 2], &[1.0; 2]);
    }
}
