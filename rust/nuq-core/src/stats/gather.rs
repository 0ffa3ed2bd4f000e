//! Gathering: the elements of a few records of a layout, copied out in one
//! data pass into one buffer, each record's values contiguous.
//!
//! The pass runs over a few fixed blocks of the data in parallel. A block
//! routes its values to `(target, value)` pairs, counts them per target and
//! groups them by target in its own buffer (a counting sort over values
//! that are in cache). Each target's slice of the output then receives its
//! values block after block, in parallel over targets. The order within a
//! target is the data order, whatever the thread count.

use rayon::prelude::*;

use super::layout::Layout;
use super::router::Router;
use super::source::{Source, Value};

/// Values of a gather: target `t`'s are `values[starts[t]..starts[t + 1]]`.
#[derive(Debug)]
pub(crate) struct Gathered<V> {
    values: Vec<V>,
    starts: Vec<usize>,
}

impl<V> Gathered<V> {
    /// The values of every target, each a mutable slice, in target order.
    pub(crate) fn runs_mut(&mut self) -> Vec<&mut [V]> {
        split_at_starts(&mut self.values, &self.starts)
    }
}

/// `buf` cut at `starts` (ascending, from 0 to `buf.len()`).
fn split_at_starts<'a, V>(mut buf: &'a mut [V], starts: &[usize]) -> Vec<&'a mut [V]> {
    starts
        .windows(2)
        .map(|w| {
            let (head, tail) = std::mem::take(&mut buf).split_at_mut(w[1] - w[0]);
            buf = tail;
            head
        })
        .collect()
}

/// Blocks per pass for each thread: enough to balance the load, few enough
/// that the per-block counts (one per target) stay small.
const BLOCKS_PER_THREAD: usize = 4;

/// One block's values, grouped by target: target `t`'s are
/// `values[starts[t]..starts[t + 1]]`, in data order.
struct Block<V> {
    values: Vec<V>,
    starts: Vec<usize>,
}

/// Copies out the elements of the records `targets` (ascending indices).
pub(crate) fn gather<S: Source>(src: &S, layout: &Layout, targets: &[usize]) -> Gathered<S::V> {
    let starts = prefix_sums(targets.iter().map(|&i| layout.recs[i].count));
    let total = starts[targets.len()];
    let n = src.len();
    let router = Router::new(layout, targets);
    let nblocks = (BLOCKS_PER_THREAD * rayon::current_num_threads()).clamp(1, n.max(1));
    let blocks: Vec<Block<S::V>> = (0..nblocks)
        .into_par_iter()
        .map(|b| {
            let range = n * b / nblocks..n * (b + 1) / nblocks;
            // The expected share of the pairs, with some room to spare.
            let expect = total / nblocks + total / (4 * nblocks) + 64;
            let mut pairs: Vec<(u32, S::V)> = Vec::with_capacity(expect);
            // One more group: the values that belong to no target, which
            // the routing may pass on rather than branch on.
            let mut counts = vec![0usize; targets.len() + 1];
            src.route_slots(range, &router, |t, v| {
                pairs.push((t as u32, v));
                counts[t] += 1;
            });
            group_by_target(&pairs, counts)
        })
        .collect();
    let mut values = match blocks.iter().find_map(|b| b.values.first()) {
        Some(&fill) => vec![fill; total],
        None => Vec::new(),
    };
    split_at_starts(&mut values, &starts)
        .into_par_iter()
        .enumerate()
        .for_each(|(t, out)| {
            let mut at = 0;
            for b in &blocks {
                let part = &b.values[b.starts[t]..b.starts[t + 1]];
                out[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            debug_assert_eq!(at, out.len(), "target {t}: counts disagree");
        });
    Gathered { values, starts }
}

/// `[0, c0, c0 + c1, ...]`.
fn prefix_sums(counts: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut starts = vec![0];
    let mut sum = 0;
    for c in counts {
        sum += c;
        starts.push(sum);
    }
    starts
}

/// A counting sort of the pairs by target, stable.
fn group_by_target<V: Value>(pairs: &[(u32, V)], counts: Vec<usize>) -> Block<V> {
    let starts = prefix_sums(counts.into_iter());
    let Some(&(_, fill)) = pairs.first() else {
        return Block {
            values: Vec::new(),
            starts,
        };
    };
    let mut next = starts.clone();
    let mut values = vec![fill; pairs.len()];
    for &(t, v) in pairs {
        let at = &mut next[t as usize];
        values[*at] = v;
        *at += 1;
    }
    Block { values, starts }
}

#[cfg(test)]
mod tests {
    use super::super::layout::build;
    use super::super::source::Flat;
    use super::*;

    impl<V> Gathered<V> {
        /// The values of target `t`.
        fn run(&self, t: usize) -> &[V] {
            &self.values[self.starts[t]..self.starts[t + 1]]
        }
    }

    #[test]
    fn gathers_every_value_of_each_target_in_data_order() {
        let x: Vec<f32> = (0..300_000usize)
            .map(|i| ((i * 7919 % 1013) as f32 - 500.0).powi(3) / 1e6)
            .collect();
        let layout = build(&Flat(&x), -125.0, 512f64.powi(3) / 1e6, 512, None);
        for targets in [
            vec![],
            vec![0],
            (0..layout.recs.len()).step_by(3).collect::<Vec<_>>(),
            (0..layout.recs.len()).collect(),
        ] {
            let got = gather(&Flat(&x), &layout, &targets);
            for (t, &i) in targets.iter().enumerate() {
                let r = &layout.recs[i];
                let want: Vec<f32> = x
                    .iter()
                    .copied()
                    .filter(|&v| layout.grid.index(f64::from(v)) == r.root)
                    .collect();
                assert_eq!(got.run(t), want.as_slice(), "target {t} (record {i})");
            }
        }
    }

    #[test]
    fn splits_a_buffer_at_its_starts() {
        let mut buf = [1, 2, 3, 4, 5];
        let runs = split_at_starts(&mut buf, &[0, 2, 2, 5]);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0], &[1, 2]);
        assert!(runs[1].is_empty());
        assert_eq!(runs[2], &[3, 4, 5]);
    }
}
