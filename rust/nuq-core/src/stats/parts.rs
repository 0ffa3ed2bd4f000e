//! Deterministic parallel passes: the index range `0..n` cut into parts of
//! a fixed size, whatever the thread count. Floating reductions combine
//! the parts' results in index order ([`map_parts`]); only exact merges
//! (integer counts, min/max, collections) may combine them in any order
//! ([`fold_parts`]). So every statistic is the same on any machine.

use std::ops::Range;

use rayon::prelude::*;

/// Elements per parallel work item. Fixed, so that any per-item floating
/// reduction is independent of the Rayon thread count.
pub(crate) const PART: usize = 1 << 15;

/// Parallel fold over fixed `PART`-sized ranges of `0..n`. Only for
/// accumulators whose merge is exact (integer counts, min/max, collections).
/// Accumulators are big (a histogram of up to 2^16 counters, or of bins),
/// so each Rayon task takes at least 1/4 of a thread's share of the ranges
/// (left alone, Rayon made one accumulator per range: 17 zeroed and merged
/// 256 KiB tables for the 18 ranges of a 768x768 tensor), and the results
/// are merged pairwise without a further empty accumulator.
pub(crate) fn fold_parts<A, I, S, M>(n: usize, identity: I, step: S, merge: M) -> A
where
    A: Send,
    I: Fn() -> A + Sync + Send,
    S: Fn(A, Range<usize>) -> A + Sync + Send,
    M: Fn(A, A) -> A + Sync + Send,
{
    let parts = n.div_ceil(PART);
    (0..parts)
        .into_par_iter()
        .with_min_len(parts.div_ceil(4 * rayon::current_num_threads()).max(1))
        .fold(&identity, |acc, p| {
            step(acc, p * PART..((p + 1) * PART).min(n))
        })
        .reduce_with(merge)
        .unwrap_or_else(identity)
}

/// Per-range results of `f` over fixed `PART`-sized ranges, in index order,
/// for floating reductions that must be combined in a fixed order.
pub(crate) fn map_parts<R, F>(n: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync + Send,
{
    (0..n.div_ceil(PART))
        .into_par_iter()
        .map(|p| f(p * PART..((p + 1) * PART).min(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_every_index_once_in_order() {
        let n = 3 * PART + 17;
        let ranges = map_parts(n, |r| r);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].start, 0);
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(ranges.last().unwrap().end, n);
        let count = fold_parts(n, || 0usize, |a, r| a + r.len(), |a, b| a + b);
        assert_eq!(count, n);
    }
}
