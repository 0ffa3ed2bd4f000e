//! Exact order statistics without sorting or copying the tensor: the layout
//! says which run holds a rank; a run's first and last elements and runs of
//! ties are known outright, otherwise only that run is gathered (or refined
//! first when it is large) and `select_nth` finds the value.

use super::gather::gather;
use super::hist::{buckets_for, build, refine, Layout, GATHER_MAX};
use super::moments::min_max;
use super::source::{Flat, Source, Value};
use super::SMALL_N;

/// Exact median (mean of the two middle values for even `n`, as
/// `numpy.median`, averaged in f64). 0 for empty `x`; `x` must be finite.
pub fn median(x: &[f32]) -> f64 {
    if x.len() < SMALL_N {
        return median_small(&mut x.to_vec());
    }
    let (lo, hi) = min_max(x);
    let mut layout = build(&Flat(x), lo, hi, buckets_for(x.len()), true);
    median_of_layout(&Flat(x), &mut layout)
}

/// Median by copy + select, for small inputs (reorders `v`).
pub(crate) fn median_small(v: &mut [f32]) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let (_, &mut hi, _) = v.select_nth_unstable_by(n / 2, f32::total_cmp);
    if n % 2 == 1 {
        return f64::from(hi);
    }
    // After selection the lower half sits before n/2: its max is rank n/2-1.
    let lo = v[..n / 2].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (f64::from(lo) + f64::from(hi)) / 2.0
}

/// `median_small` of `x` without reordering it, by radix selection: one
/// pass counts the top `RADIX_BITS` of each value's `total_cmp` key, and
/// only the bucket(s) holding the middle ranks are copied (as keys, into
/// `keys`, reused between calls) and selected. Same result, bit for bit;
/// much cheaper than a full selection on short rows.
pub(crate) fn median_radix(x: &[f32], keys: &mut Vec<u32>) -> f64 {
    let n = x.len();
    if n == 0 {
        return 0.0;
    }
    let mut counts = [0u32; 1 << RADIX_BITS];
    for &v in x {
        counts[(order_key(v) >> (32 - RADIX_BITS)) as usize] += 1;
    }
    let (lo_rank, hi_rank) = ((n - 1) / 2, n / 2);
    let (first, below) = bucket_of(&counts, lo_rank);
    let (last, _) = bucket_of(&counts, hi_rank);
    // Branch-free compaction: every key is written, the cursor advances
    // only for those of the middle bucket(s).
    keys.clear();
    keys.resize(n, 0);
    let mut m = 0;
    for &v in x {
        let k = order_key(v);
        let b = (k >> (32 - RADIX_BITS)) as usize;
        keys[m] = k;
        m += usize::from(first <= b && b <= last);
    }
    keys.truncate(m);
    let (lower, &mut hi, _) = keys.select_nth_unstable(hi_rank - below);
    let hi = from_order_key(hi);
    if lo_rank == hi_rank {
        return f64::from(hi);
    }
    let lo = from_order_key(
        lower
            .iter()
            .copied()
            .max()
            .expect("lo_rank is in the copied keys"),
    );
    (f64::from(lo) + f64::from(hi)) / 2.0
}

/// The bucket holding 0-based rank `rank` (`< Σ counts`), and the count of
/// the buckets before it: whole blocks of 16 buckets are skipped by their
/// sums (vectorized) before the scan within one block.
fn bucket_of(counts: &[u32], rank: usize) -> (usize, usize) {
    const BLOCK: usize = 16;
    let mut below = 0usize;
    let mut start = 0;
    for block in counts.chunks_exact(BLOCK) {
        let sum = block.iter().sum::<u32>() as usize;
        if below + sum > rank {
            break;
        }
        below += sum;
        start += BLOCK;
    }
    let mut b = start;
    while below + counts[b] as usize <= rank {
        below += counts[b] as usize;
        b += 1;
    }
    (b, below)
}

/// Bits of the key counted by `median_radix`: 4096 counters (16 KiB, in L1).
const RADIX_BITS: u32 = 12;

const _: () = assert!((1usize << RADIX_BITS).is_multiple_of(16));

/// A u32 whose unsigned order is `f32::total_cmp`'s.
#[inline(always)]
fn order_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 1 << 31
    }
}

fn from_order_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k })
}

/// Median from a layout of the same source (which may get refined).
pub(crate) fn median_of_layout<S: Source>(src: &S, layout: &mut Layout) -> f64 {
    let n = layout.n;
    if n == 0 {
        return 0.0;
    }
    let v = select_ranks(src, layout, &[(n - 1) / 2, n / 2]);
    (v[0].to_f64() + v[1].to_f64()) / 2.0
}

/// Values of the 0-based order statistics `ranks` (ascending, `< n`).
pub(crate) fn select_ranks<S: Source>(src: &S, layout: &mut Layout, ranks: &[usize]) -> Vec<S::V> {
    debug_assert!(ranks.windows(2).all(|w| w[0] <= w[1]));
    let mut out: Vec<Option<S::V>> = vec![None; ranks.len()];
    loop {
        let pending = known_or_pending(layout, ranks, &mut out);
        if pending.is_empty() {
            return out.into_iter().map(Option::unwrap).collect();
        }
        let (large, small): (Vec<usize>, Vec<usize>) = pending.into_iter().partition(|&i| {
            let r = &layout.recs[i];
            r.count > GATHER_MAX && r.refinable()
        });
        if !small.is_empty() {
            let mut gathered = gather(src, layout, &small);
            let mut groups = gathered.runs_mut();
            for (&k, o) in ranks.iter().zip(out.iter_mut()) {
                let i = run_of(layout, k);
                if let (None, Ok(g)) = (*o, small.binary_search(&i)) {
                    let at = k - layout.recs[i].offset;
                    let (_, &mut v, _) = groups[g].select_nth_unstable_by(at, S::V::total_order);
                    *o = Some(v);
                }
            }
        }
        if !large.is_empty() {
            refine(src, layout, &large);
        }
    }
}

/// Index of the run holding 0-based rank `k`.
fn run_of(layout: &Layout, k: usize) -> usize {
    layout.recs.partition_point(|r| r.offset + r.count <= k)
}

/// Fills the ranks the layout answers alone; returns the runs (ascending,
/// distinct) that must be examined for the others.
fn known_or_pending<V: Value>(
    layout: &Layout,
    ranks: &[usize],
    out: &mut [Option<V>],
) -> Vec<usize> {
    let mut pending = Vec::new();
    for (&k, o) in ranks.iter().zip(out.iter_mut()) {
        if o.is_some() {
            continue;
        }
        let i = run_of(layout, k);
        let r = &layout.recs[i];
        if r.exact && (r.pure() || k == r.offset) {
            *o = Some(V::from_f64(r.lo));
        } else if r.exact && k + 1 == r.offset + r.count {
            *o = Some(V::from_f64(r.hi));
        } else if pending.last() != Some(&i) {
            pending.push(i);
        }
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(median(&[5.0, -1.0, 2.0, 2.0]), 2.0);
        assert_eq!(median(&[5.0, -1.0, 7.0, 2.0, 9.0]), 5.0);
    }

    #[test]
    fn radix_medians_equal_the_float_selection() {
        let mut keys = Vec::new();
        let lumpy = |i: usize| ((i * 7919) % 211) as f32 * 0.01 - 1.0;
        let cases: Vec<Vec<f32>> = vec![
            vec![],
            vec![3.5],
            vec![-0.0, 0.0],
            vec![0.0, -0.0, -0.0],
            vec![f32::MAX, -f32::MAX, 1e-45, -1e-45],
            vec![2.0; 1000],
            (0..1001).map(lumpy).collect(),
            (0..3072).map(|i| lumpy(i) * 1e-3 + 0.02).collect(),
            (0..768)
                .map(|i| if i % 3 == 0 { 0.0 } else { -lumpy(i) })
                .collect(),
        ];
        for x in cases {
            let want = median_small(&mut x.clone());
            let got = median_radix(&x, &mut keys);
            assert_eq!(got.to_bits(), want.to_bits(), "{x:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn radix_median_matches(x in proptest::collection::vec(-1e3f32..1e3, 1..600)) {
            let mut keys = Vec::new();
            proptest::prop_assert_eq!(
                median_radix(&x, &mut keys).to_bits(),
                median_small(&mut x.clone()).to_bits()
            );
        }
    }

    #[test]
    fn every_rank_of_a_tied_large_input() {
        // Few distinct values, large n: runs are pure or must be refined.
        let x: Vec<f32> = (0..200_000).map(|i| ((i * 37) % 11) as f32 * 0.5).collect();
        let mut sorted = x.clone();
        sorted.sort_by(f32::total_cmp);
        let mut layout = build(&Flat(&x), 0.0, 5.0, 1024, true);
        let ranks: Vec<usize> = (0..x.len()).step_by(997).collect();
        let got = select_ranks(&Flat(&x), &mut layout, &ranks);
        for (&k, v) in ranks.iter().zip(got) {
            assert_eq!(v, sorted[k]);
        }
    }

    #[test]
    fn large_run_is_refined_then_selected() {
        // A wide spike of distinct values inside one top-level bucket.
        let mut x: Vec<f32> = (0..300_000).map(|i| 1.0 + i as f32 * 1e-7).collect();
        x.extend([-1000.0, 1000.0]);
        let mut sorted = x.clone();
        sorted.sort_by(f32::total_cmp);
        let m = median(&x);
        let n = x.len();
        let want = (f64::from(sorted[n / 2 - 1]) + f64::from(sorted[n / 2])) / 2.0;
        assert_eq!(m, want);
    }
}
