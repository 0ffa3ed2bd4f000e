//! The rank layout: sorted, disjoint runs covering every element, each
//! with the rank of its first element (`offset`), its size and bounds
//! `[lo, hi]` of its values. One counting pass on a [`Grid`] builds it: the
//! bucket index is monotone in the value, so a bucket with `offset` smaller
//! elements holds exactly the order statistics `offset+1 ..= offset+count`,
//! and equal values always share a bucket. A top-level run's bounds are its
//! bucket's edges widened by the grid's rounding guard; `refine` makes them
//! exact (the run's first and last values). A coarse layout holds one run
//! per aligned group of buckets until [`expand`] splits the runs asked for,
//! from the counts it keeps. Runs are examined by `gather` (their values
//! copied out, one pass for any number of runs) or `refine`.

use super::counts::count_histogram;
use super::grid::Grid;
use super::source::Source;

/// Order statistics: runs up to this many elements are gathered and selected
/// in place (O(c)); bigger ones are refined first.
pub(crate) const GATHER_MAX: usize = 1 << 16;

/// A contiguous run of the sorted data: order statistics
/// `offset+1 ..= offset+count` (1-based), all within `[lo, hi]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec {
    pub lo: f64,
    pub hi: f64,
    /// `lo` and `hi` are the run's actual smallest and largest values.
    pub exact: bool,
    pub offset: usize,
    pub count: usize,
    /// Top-level bucket the run lies in (routing key for later passes).
    pub(crate) root: usize,
    /// Top-level buckets `root..root + buckets` the run covers: 1, except
    /// for the coarse runs of [`build_coarse`], which are only bounded,
    /// never gathered or refined, until [`expand`] splits them.
    pub(crate) buckets: u32,
    /// Set once every element's exact KS terms have been taken into account.
    pub done: bool,
}

impl Rec {
    /// The run of the `count` values (the first one of rank `offset + 1`)
    /// that lie in the top-level buckets `root..root + buckets`, within
    /// `[lo, hi]`: inexact, and not yet taken into account.
    fn top_level(lo: f64, hi: f64, offset: usize, count: usize, root: usize, buckets: u32) -> Self {
        Rec {
            lo,
            hi,
            exact: false,
            offset,
            count,
            root,
            buckets,
            done: false,
        }
    }

    /// All elements equal: everything about the run is known without data.
    pub(crate) fn pure(&self) -> bool {
        self.exact && self.lo == self.hi
    }

    /// Whether a refinement pass makes progress: it makes bounds exact, then
    /// splits any exact run of finite span.
    pub(crate) fn refinable(&self) -> bool {
        !self.exact || (self.hi - self.lo).is_finite()
    }
}

/// Sorted, disjoint, non-empty runs covering all `n` elements.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub n: usize,
    pub(crate) grid: Grid,
    pub recs: Vec<Rec>,
    /// What a layout with coarse runs keeps to split them (see [`expand`]).
    pub(crate) coarse: Option<Coarse>,
}

/// The top-level counts of a layout with coarse runs, and the range its
/// values are known to lie in.
#[derive(Debug, Clone)]
pub(crate) struct Coarse {
    counts: Vec<usize>,
    range: (f64, f64),
}

/// Top-level buckets per coarse run of [`build_coarse`].
const COARSE: usize = 64;

/// Counts `src` on `grid` into one coarse run per aligned group of
/// [`COARSE`] buckets holding values, from its first to its last non-empty
/// bucket; the counts are kept. A coarse run is bounded as one run across
/// its buckets, and [`expand`] splits the ones that may hold the KS
/// arg-max into buckets, from the counts, with no pass over the data: a
/// KS statistic lays out and bounds about a thousand runs, and the buckets
/// of the few it splits, instead of one run per non-empty bucket (35-45K
/// for 768x768 and 768x3072 weight matrices).
pub(crate) fn build_coarse<S: Source>(src: &S, grid: Grid, range: Option<(f64, f64)>) -> Layout {
    let counts = count_histogram(src, &grid);
    let guard = grid.guard();
    let (min, max) = range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
    let mut recs = Vec::with_capacity(grid.nb.div_ceil(COARSE));
    let mut offset = 0;
    for (g, group) in counts.chunks(COARSE).enumerate() {
        let Some(first) = group.iter().position(|&k| k > 0) else {
            continue;
        };
        let last = group.iter().rposition(|&k| k > 0).unwrap_or(first);
        let count: usize = group[first..=last].iter().sum();
        let root = g * COARSE + first;
        let (lo, hi) = (
            grid.bounds(root, guard).0.max(min),
            grid.bounds(root + last - first, guard).1.min(max),
        );
        let buckets = (last - first + 1) as u32;
        recs.push(Rec::top_level(lo, hi, offset, count, root, buckets));
        offset += count;
    }
    Layout {
        n: src.len(),
        grid,
        recs,
        coarse: Some(Coarse {
            counts,
            range: (min, max),
        }),
    }
}

/// Splits the coarse runs `targets` (ascending indices into `layout.recs`)
/// of a layout from [`build_coarse`] into one run per non-empty bucket.
///
/// # Panics
/// If the layout kept no counts (it was not built by [`build_coarse`]).
pub(crate) fn expand(layout: &mut Layout, targets: &[usize]) {
    let Coarse {
        counts,
        range: (min, max),
    } = layout
        .coarse
        .as_ref()
        .expect("only a coarse layout keeps its counts");
    let guard = layout.grid.guard();
    let buckets = |r: &Rec| r.root..r.root + r.buckets as usize;
    let added: usize = targets
        .iter()
        .map(|&i| {
            counts[buckets(&layout.recs[i])]
                .iter()
                .filter(|&&k| k > 0)
                .count()
                - 1
        })
        .sum();
    // Sized once: a growing vector is fresh memory to fault in, time and again.
    let sized = Vec::with_capacity(layout.recs.len() + added);
    let old = std::mem::replace(&mut layout.recs, sized);
    let mut next = targets.iter().peekable();
    for (i, rec) in old.into_iter().enumerate() {
        if next.next_if_eq(&&i).is_none() {
            layout.recs.push(rec);
            continue;
        }
        let mut offset = rec.offset;
        for (root, &count) in buckets(&rec).zip(&counts[buckets(&rec)]) {
            if count > 0 {
                let (lo, hi) = layout.grid.bounds(root, guard);
                let (lo, hi) = (lo.max(*min), hi.min(*max));
                layout
                    .recs
                    .push(Rec::top_level(lo, hi, offset, count, root, 1));
                offset += count;
            }
        }
        debug_assert_eq!(offset, rec.offset + rec.count);
    }
}

/// One run per non-empty bucket of `nb` over `[lo, hi]`, laid out
/// directly: what a coarse layout expands into. `range`: bounds `[a, b]`
/// the data are known to lie in (tightens the end runs' bounds).
#[cfg(test)]
pub(crate) fn build<S: Source>(
    src: &S,
    lo: f64,
    hi: f64,
    nb: usize,
    range: Option<(f64, f64)>,
) -> Layout {
    let grid = Grid::new(lo, hi, nb);
    let (min, max) = range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
    let mut recs = Vec::new();
    let mut offset = 0;
    for (root, &count) in count_histogram(src, &grid).iter().enumerate() {
        if count > 0 {
            let (a, b) = grid.bounds(root, grid.guard());
            recs.push(Rec::top_level(
                a.max(min),
                b.min(max),
                offset,
                count,
                root,
                1,
            ));
            offset += count;
        }
    }
    Layout {
        n: src.len(),
        grid,
        recs,
        coarse: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::source::Flat;
    use super::*;

    pub(crate) fn check_layout(x: &[f32], layout: &Layout) {
        let mut sorted = x.to_vec();
        sorted.sort_by(f32::total_cmp);
        let mut offset = 0;
        for r in &layout.recs {
            assert_eq!(r.offset, offset);
            let (first, last) = (sorted[offset] as f64, sorted[offset + r.count - 1] as f64);
            if r.exact {
                assert_eq!((r.lo, r.hi), (first, last));
            } else {
                assert!(r.lo <= first && last <= r.hi, "{r:?} {first} {last}");
            }
            offset += r.count;
        }
        assert_eq!(offset, x.len());
    }

    pub(crate) fn data(n: usize) -> Vec<f32> {
        // Deterministic, uneven, with ties.
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 - 500.0).powi(3) / 1e6)
            .collect()
    }

    #[test]
    fn records_are_runs_of_the_sorted_data() {
        let x = data(100_000);
        let (lo, hi) = (-125.0, 512f64.powi(3) / 1e6);
        check_layout(&x, &build(&Flat(&x), lo, hi, 1024, Some((lo, hi))));
        // A grid narrower than the data: the end runs catch the rest.
        check_layout(&x, &build(&Flat(&x), -20.0, 20.0, 1000, None));
        check_layout(&x, &build(&Flat(&x), -20.0, 20.0, 1000, Some((lo, hi))));
        // Several chunks of records, some of them without a value (the data
        // hold 1013 distinct values): one record per non-empty bucket, in
        // bucket order, holding that bucket's values.
        let nb = 3 * 4096 + 5;
        let layout = build(&Flat(&x), lo, hi, nb, Some((lo, hi)));
        check_layout(&x, &layout);
        let mut want = vec![0usize; nb];
        x.iter()
            .for_each(|&v| want[layout.grid.index(f64::from(v))] += 1);
        let got: Vec<(usize, usize)> = layout.recs.iter().map(|r| (r.root, r.count)).collect();
        let want: Vec<(usize, usize)> = want.into_iter().enumerate().filter(|c| c.1 > 0).collect();
        assert_eq!(got, want);
    }

    /// Coarse runs cover the non-empty buckets of each aligned group of
    /// `COARSE`; expanded (some, then all), they are exactly `build`'s runs.
    #[test]
    fn coarse_runs_expand_into_the_bucket_runs() {
        let x = data(100_000);
        let known = Some((-125.0, 512f64.powi(3) / 1e6));
        for (nb, range) in [(1000, None), (3 * COARSE + 5, known), (1 << 12, None)] {
            let fine = build(&Flat(&x), -20.0, 20.0, nb, range);
            let mut coarse = build_coarse(&Flat(&x), Grid::new(-20.0, 20.0, nb), range);
            check_layout(&x, &coarse);
            assert!(coarse.recs.len() <= nb.div_ceil(COARSE));
            for r in &coarse.recs {
                let first = fine.recs.iter().position(|f| f.root == r.root).unwrap();
                let end = r.root + r.buckets as usize;
                let last = fine.recs.iter().rposition(|f| f.root < end).unwrap();
                assert_eq!(r.root / COARSE, (end - 1) / COARSE, "within one group");
                assert_eq!(fine.recs[last].root, end - 1, "ends on a non-empty bucket");
                let held: usize = fine.recs[first..=last].iter().map(|f| f.count).sum();
                assert_eq!((r.offset, r.count), (fine.recs[first].offset, held));
                assert_eq!((r.lo, r.hi), (fine.recs[first].lo, fine.recs[last].hi));
            }
            let every = |l: &Layout| -> Vec<usize> { (0..l.recs.len()).collect() };
            let odd: Vec<usize> = every(&coarse).into_iter().skip(1).step_by(2).collect();
            expand(&mut coarse, &odd);
            check_layout(&x, &coarse);
            let multi: Vec<usize> = every(&coarse)
                .into_iter()
                .filter(|&i| coarse.recs[i].buckets > 1)
                .collect();
            expand(&mut coarse, &multi);
            let key = |l: &Layout| -> Vec<_> {
                l.recs
                    .iter()
                    .map(|r| (r.lo, r.hi, r.exact, r.offset, r.count, r.root, r.buckets))
                    .collect()
            };
            assert_eq!(key(&coarse), key(&fine));
        }
    }
}
