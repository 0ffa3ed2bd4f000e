//! The rank layout: a histogram on a fixed grid. Because the bucket index is
//! a monotone function of the value, buckets are contiguous runs of the
//! sorted data: a bucket with `offset` smaller elements holds the order
//! statistics `offset+1 ..= offset+count`, and equal values always share a
//! bucket. The top-level pass only counts (the cheapest scatter); a run's
//! value bounds are then its grid edges, widened by a rounding guard.
//! Refinement passes, which touch few elements, also record each sub-bucket's
//! exact min and max: the first and last order statistics of the run.
//!
//! Records can be *gathered* (their elements copied out, one data pass for any
//! number of records) or *refined* (re-histogrammed on a finer grid over their
//! own `[min, max]`, one data pass): both exact, both cheap when few records
//! are involved.

use rayon::prelude::*;

use super::router::Router;
use super::simd::count_range;
use super::source::{fold_parts, Source, Value};

/// Largest bucket count of a refinement histogram, and of the top-level one
/// below `LARGE_N` elements: 2^16 u32 counters (256 KiB) per thread stay in
/// L2 (refinement bins with min/max: 768 KiB).
pub(crate) const MAX_BUCKETS: usize = 1 << 16;
/// Order statistics: runs up to this many elements are gathered and selected
/// in place (O(c)); bigger ones are refined first.
pub(crate) const GATHER_MAX: usize = 1 << 16;
/// Per-pass element limit so that the `u32` bucket counts cannot overflow.
const BLOCK: usize = 1 << 31;

/// A uniform grid of `nb` buckets over `[lo, hi]`; values outside clamp to the
/// end buckets. The index is monotone non-decreasing in the value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    lo: f64,
    inv: f64,
    /// `1 / inv`: edges are a multiply, not a divide (one per bucket of a
    /// layout, on the serial path).
    width: f64,
    pub(crate) nb: usize,
}

impl Grid {
    /// # Panics
    /// If `nb` is 0 or above 2^31 (indices are computed as `i32`).
    pub(crate) fn new(lo: f64, hi: f64, nb: usize) -> Self {
        assert!(nb > 0 && nb <= 1 << 31, "grid of {nb} buckets");
        let inv = if hi > lo { nb as f64 / (hi - lo) } else { 0.0 };
        Grid {
            lo,
            inv,
            width: 1.0 / inv,
            nb,
        }
    }

    #[inline(always)]
    pub(crate) fn index(&self, v: f64) -> usize {
        // max() maps NaN (from inf * 0) to 0; the result is in [0, nb - 1].
        let t = ((v - self.lo) * self.inv)
            .max(0.0)
            .min((self.nb - 1) as f64);
        // SAFETY: `t` is finite, not NaN, and within [0, nb - 1] (nb <= 2^31,
        // checked in `new`), so it fits an i32.
        unsafe { t.to_int_unchecked::<i32>() as usize }
    }

    /// Value bounds `[lo, hi]` of every value whose index is `b`: the grid
    /// edges widened by more than the rounding of `index` and of the edges
    /// themselves (a few ulps of the grid's magnitude); the end buckets are
    /// unbounded because they catch everything outside the grid.
    /// `guard` is `self.guard()`, passed in: it costs a division, and this
    /// runs once per non-empty bucket.
    fn bounds(&self, b: usize, guard: f64) -> (f64, f64) {
        let lo = if b == 0 {
            f64::NEG_INFINITY
        } else {
            self.edge(b) - guard
        };
        let hi = if b + 1 == self.nb {
            f64::INFINITY
        } else {
            self.edge(b + 1) + guard
        };
        (lo, hi)
    }

    /// The lower edge of bucket `k` (before widening by the guard), within
    /// a few ulps of `lo + k / inv`.
    #[inline]
    pub(crate) fn edge(&self, k: usize) -> f64 {
        self.lo + k as f64 * self.width
    }

    /// How far a bucket's values can lie outside its edges.
    pub(crate) fn guard(&self) -> f64 {
        let hi_grid = self.edge(self.nb);
        16.0 * f64::EPSILON * (self.lo.abs() + hi_grid.abs() + (hi_grid - self.lo))
    }
}

/// Bucket count for `n` elements on the top-level grid: about 16 elements
/// each up to `MAX_BUCKETS`, and twice that from `LARGE_N` elements on.
/// There the runs near the KS arg-max hold thousands of values each and
/// gathering them dominates; below it the bigger table costs the count
/// pass more than it saves (measured: benches/README.md).
pub(crate) fn buckets_for(n: usize) -> usize {
    if n >= LARGE_N {
        2 * MAX_BUCKETS
    } else {
        (n / 16).next_power_of_two().clamp(1024, MAX_BUCKETS)
    }
}

/// Elements from which the top-level grid doubles its buckets.
const LARGE_N: usize = 1 << 23;

#[derive(Debug, Clone, Copy)]
struct Bin<V> {
    count: u32,
    min: V,
    max: V,
}

impl<V: Value> Bin<V> {
    const EMPTY: Self = Bin {
        count: 0,
        min: V::HIGHEST,
        max: V::LOWEST,
    };

    #[inline]
    fn add(&mut self, v: V) {
        self.count += 1;
        self.min = self.min.min_v(v);
        self.max = self.max.max_v(v);
    }
}

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

/// Standard deviations either side of the centre that a top-level grid
/// spans (a tensor's grid never reaches beyond its range). Beyond, the end
/// buckets hold the tails. A grid over `[min, max]` instead lets a few far
/// outliers (weight matrices have some at 50σ and more) stretch it until
/// the central runs hold thousands of values each: 5 outliers at up to
/// 150σ among 2.4M Gaussian values made 1.7M of them KS candidates. Six
/// rather than eight: the bulk gets
/// finer runs (fewer KS candidates, whose gathering costs more than the
/// count pass loses to a wider hot zone of counters), while beyond 6σ a
/// Laplace tensor of millions holds a few hundred values, whose terms are
/// far from D.
pub(crate) const GRID_SIGMAS: f64 = 6.0;

/// Counts `src` on `nb` buckets over `[lo, hi]`. `range`: bounds `[a, b]`
/// the data are known to lie in (tightens the end runs' bounds).
pub(crate) fn build<S: Source>(
    src: &S,
    lo: f64,
    hi: f64,
    nb: usize,
    range: Option<(f64, f64)>,
) -> Layout {
    let grid = Grid::new(lo, hi, nb);
    let counts = count_histogram(src, &grid);
    Layout {
        n: src.len(),
        grid,
        recs: records(&grid, &counts, range),
        coarse: None,
    }
}

/// Top-level buckets per coarse run of [`build_coarse`].
const COARSE: usize = 64;

/// [`build`] on `grid` with one coarse run per aligned group of
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

/// Buckets per task of [`records`].
const RECORD_CHUNK: usize = 1 << 12;

/// One record per non-empty bucket, in bucket order, built in parallel: a
/// first pass takes each chunk of buckets' record count and element count,
/// so every chunk knows where its records go and their offsets, and writes
/// them in place (a 2^16-bucket layout is some 3 MB of records, too much
/// for a serial loop or a copy of per-chunk vectors while the other
/// threads idle).
fn records(grid: &Grid, counts: &[usize], range: Option<(f64, f64)>) -> Vec<Rec> {
    let sizes: Vec<(usize, usize)> = counts
        .par_chunks(RECORD_CHUNK)
        .map(|c| (c.iter().filter(|&&k| k > 0).count(), c.iter().sum()))
        .collect();
    let total = sizes.iter().map(|s| s.0).sum();
    let mut recs: Vec<Rec> = Vec::with_capacity(total);
    // Each chunk's share of the spare capacity and its first offset.
    let mut rest = &mut recs.spare_capacity_mut()[..total];
    let mut shares = Vec::with_capacity(sizes.len());
    let mut offset = 0;
    for &(k, sum) in &sizes {
        let (share, tail) = std::mem::take(&mut rest).split_at_mut(k);
        shares.push((share, offset));
        rest = tail;
        offset += sum;
    }
    let guard = grid.guard();
    shares
        .into_par_iter()
        .zip(counts.par_chunks(RECORD_CHUNK))
        .enumerate()
        .for_each(|(c, ((share, mut offset), chunk))| {
            let mut slots = share.iter_mut();
            for (i, &count) in chunk.iter().enumerate().filter(|e| *e.1 > 0) {
                let root = c * RECORD_CHUNK + i;
                let (mut a, mut b) = grid.bounds(root, guard);
                if let Some((min, max)) = range {
                    (a, b) = (a.max(min), b.min(max));
                }
                let slot = slots.next().expect("one slot per non-empty bucket");
                slot.write(Rec::top_level(a, b, offset, count, root, 1));
                offset += count;
            }
        });
    // SAFETY: the shares partition the first `total` slots, and each chunk
    // wrote one record into every slot of its share (as many as its
    // non-empty buckets, counted above).
    unsafe { recs.set_len(total) };
    recs
}

/// Counts per grid bucket: per-thread `u32` counters merged exactly, in
/// passes of at most `BLOCK` elements so they cannot overflow.
fn count_histogram<S: Source>(src: &S, grid: &Grid) -> Vec<usize> {
    let n = src.len();
    let mut totals = vec![0usize; grid.nb];
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let counts = fold_parts(
            end - start,
            || zeroed_table(grid.nb),
            |mut h, r| {
                count_range(src, start + r.start..start + r.end, grid, &mut h);
                h
            },
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                recycle_table(b);
                a
            },
        );
        totals
            .iter_mut()
            .zip(&counts)
            .for_each(|(t, &c)| *t += c as usize);
        recycle_table(counts);
    }
    totals
}

/// Count tables kept per thread for reuse, at most this many.
const KEPT_TABLES: usize = 4;

thread_local! {
    static TABLES: std::cell::RefCell<Vec<Vec<u32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `n` zeroed counters, in a table this thread recycled if it has one. A
/// fresh table of 2^16 counters (256 KiB) is memory the allocator often
/// maps anew, and faults in page by page: in a Python process, 250-600
/// page faults per 768x768 channel statistic (a fifth to a third of its
/// time), varying from process to process with the allocator's state.
fn zeroed_table(n: usize) -> Vec<u32> {
    match TABLES.with(|t| t.borrow_mut().pop()) {
        Some(mut table) => {
            table.clear();
            table.resize(n, 0);
            table
        }
        None => vec![0; n],
    }
}

/// Keeps `table` for [`zeroed_table`] on this thread (up to
/// [`KEPT_TABLES`] of them; tables above 2^17 counters are freed).
fn recycle_table(table: Vec<u32>) {
    if table.capacity() <= 2 * MAX_BUCKETS {
        TABLES.with(|t| {
            let mut t = t.borrow_mut();
            if t.len() < KEPT_TABLES {
                t.push(table);
            }
        });
    }
}

/// (count, min, max) per bucket `bucket(target, value)` of the values that
/// `router` assigns to a target (the others are skipped). Per-thread `u32`
/// bins, merged exactly; passes of at most `BLOCK` elements keep the `u32`
/// counts from overflowing.
fn histogram<S, B>(src: &S, nb: usize, router: &Router, bucket: B) -> Vec<(usize, S::V, S::V)>
where
    S: Source,
    B: Fn(usize, f64) -> usize + Sync,
{
    let n = src.len();
    let mut totals = vec![(0usize, S::V::HIGHEST, S::V::LOWEST); nb];
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let bins = fold_parts(
            end - start,
            || vec![Bin::<S::V>::EMPTY; nb],
            |mut h, r| {
                src.route(start + r.start..start + r.end, router, |t, v| {
                    h[bucket(t, v.to_f64())].add(v)
                });
                h
            },
            merge_bins,
        );
        for (t, b) in totals.iter_mut().zip(&bins) {
            *t = (t.0 + b.count as usize, t.1.min_v(b.min), t.2.max_v(b.max));
        }
    }
    totals
}

fn merge_bins<V: Value>(mut a: Vec<Bin<V>>, b: Vec<Bin<V>>) -> Vec<Bin<V>> {
    for (x, y) in a.iter_mut().zip(&b) {
        x.count += y.count;
        x.min = x.min.min_v(y.min);
        x.max = x.max.max_v(y.max);
    }
    a
}

/// Splits each target record (ascending indices, none pure, all refinable)
/// into the non-empty buckets of a finer grid over its own `[lo, hi]`.
pub(crate) fn refine<S: Source>(src: &S, layout: &mut Layout, targets: &[usize]) {
    let router = Router::new(layout, targets);
    let total: usize = targets.iter().map(|&i| layout.recs[i].count).sum();
    let grids: Vec<(usize, Grid)> = {
        let mut base = 0;
        targets
            .iter()
            .map(|&i| {
                let r = &layout.recs[i];
                let nb = sub_buckets(r.count, total);
                let g = (base, Grid::new(r.lo, r.hi, nb));
                base += nb;
                g
            })
            .collect()
    };
    let nbins: usize = grids.iter().map(|(_, g)| g.nb).sum();
    let bins = histogram(src, nbins, &router, |t, v| {
        let (base, g) = &grids[t];
        base + g.index(v)
    });
    splice(layout, targets, &grids, &bins);
}

/// Sub-buckets for a run of `count` elements among targets holding `total`:
/// about 8 elements each, but at most `MAX_BUCKETS` for the whole pass
/// (shared in proportion to the counts) so that the bins stay in cache and
/// the record list stays short when many runs are refined at once.
fn sub_buckets(count: usize, total: usize) -> usize {
    let share = (count as u128 * MAX_BUCKETS as u128 / total.max(1) as u128) as usize;
    (count / 8).min(share).clamp(2, MAX_BUCKETS)
}

/// Replaces each target record by its non-empty sub-buckets.
fn splice<V: Value>(
    layout: &mut Layout,
    targets: &[usize],
    grids: &[(usize, Grid)],
    bins: &[(usize, V, V)],
) {
    let old = std::mem::take(&mut layout.recs);
    let mut next = targets.iter().zip(grids).peekable();
    for (i, rec) in old.into_iter().enumerate() {
        match next.peek() {
            Some(&(&t, &(base, g))) if t == i => {
                next.next();
                let mut offset = rec.offset;
                for &(count, lo, hi) in bins[base..base + g.nb].iter().filter(|b| b.0 > 0) {
                    layout.recs.push(Rec {
                        lo: lo.to_f64(),
                        hi: hi.to_f64(),
                        exact: true,
                        offset,
                        count,
                        root: rec.root,
                        buckets: 1,
                        done: false,
                    });
                    offset += count;
                }
                debug_assert_eq!(offset, rec.offset + rec.count);
            }
            _ => layout.recs.push(rec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gather::gather;
    use super::super::source::Flat;
    use super::*;

    fn check_layout(x: &[f32], layout: &Layout) {
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

    fn data(n: usize) -> Vec<f32> {
        // Deterministic, uneven, with ties.
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 - 500.0).powi(3) / 1e6)
            .collect()
    }

    #[test]
    fn grid_index_is_clamped_and_monotone() {
        let g = Grid::new(-1.0, 1.0, 8);
        assert_eq!(g.index(-5.0), 0);
        assert_eq!(g.index(-1.0), 0);
        assert_eq!(g.index(1.0), 7);
        assert_eq!(g.index(9.0), 7);
        let idx: Vec<usize> = (-40..=40).map(|i| g.index(i as f64 / 20.0)).collect();
        assert!(idx.windows(2).all(|w| w[0] <= w[1]));
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
        let nb = 3 * RECORD_CHUNK + 5;
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

    /// A recycled table comes back zeroed, at the size asked for; at most
    /// `KEPT_TABLES` are kept, and oversized ones not at all.
    #[test]
    fn recycled_tables_come_back_zeroed() {
        let kept = || TABLES.with(|t| t.borrow().len());
        let before = kept();
        let mut dirty = zeroed_table(100);
        dirty.iter_mut().for_each(|c| *c = 7);
        recycle_table(dirty);
        assert_eq!(kept(), (before + 1).min(KEPT_TABLES));
        assert_eq!(zeroed_table(300), vec![0u32; 300]);
        recycle_table(vec![1; 4 * MAX_BUCKETS]);
        for _ in 0..2 * KEPT_TABLES {
            recycle_table(vec![5; 10]);
        }
        assert_eq!(kept(), KEPT_TABLES);
        for _ in 0..KEPT_TABLES {
            assert_eq!(zeroed_table(20), vec![0u32; 20]);
        }
    }

    #[test]
    fn refinement_bins_stay_within_the_budget() {
        let counts = [3usize, 17, 5_000, 1 << 20, 1 << 24, 123_456_789];
        let total: usize = counts.iter().sum();
        let bins: Vec<usize> = counts.iter().map(|&c| sub_buckets(c, total)).collect();
        assert!(bins.iter().all(|&b| b >= 2));
        assert!(bins.iter().sum::<usize>() <= MAX_BUCKETS + 2 * counts.len());
        // Alone, a run gets about 8 elements per bucket, capped.
        assert_eq!(sub_buckets(800, 800), 100);
        assert_eq!(sub_buckets(1 << 30, 1 << 30), MAX_BUCKETS);
    }

    #[test]
    fn refine_and_gather_stay_exact() {
        let x = data(200_000);
        let mut layout = build(&Flat(&x), -100.0, 100.0, 4, None);
        let before = layout.recs.len();
        let targets: Vec<usize> = (0..before).filter(|&i| !layout.recs[i].pure()).collect();
        refine(&Flat(&x), &mut layout, &targets);
        assert!(layout.recs.len() > before);
        assert!(layout.recs.iter().all(|r| r.exact));
        check_layout(&x, &layout);
        let all: Vec<usize> = (0..layout.recs.len()).step_by(3).collect();
        let mut got = gather(&Flat(&x), &layout, &all);
        for (g, &i) in got.runs_mut().into_iter().zip(&all) {
            let r = layout.recs[i];
            assert_eq!(g.len(), r.count);
            assert!(g.iter().all(|&v| r.lo <= v as f64 && v as f64 <= r.hi));
        }
    }
}
