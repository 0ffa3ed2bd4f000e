//! Refinement: selected runs of a layout re-histogrammed, in one data pass,
//! on finer grids over their own bounds, each sub-bucket recording its
//! exact min and max. A sub-grid's index is monotone too, so each non-empty
//! sub-bucket is a run of the sorted data whose first and last values are
//! now known exactly; a run of ties (min == max) is known outright.

use super::counts::BLOCK;
use super::grid::{Grid, MAX_BUCKETS};
use super::layout::{Layout, Rec};
use super::parts::fold_parts;
use super::router::Router;
use super::source::{Source, Value};

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
    use super::super::layout::build;
    use super::super::layout::tests::{check_layout, data};
    use super::super::source::Flat;
    use super::*;

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
