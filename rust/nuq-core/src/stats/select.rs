//! Exact order statistics without sorting or copying the tensor: the layout
//! says which run holds a rank; a run's first and last elements and runs of
//! ties are known outright, otherwise only that run is gathered (or refined
//! first when it is large) and `select_nth` finds the value.

use super::hist::{buckets_for, build, gather, refine, Layout, GATHER_MAX};
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
            let mut groups = gather(src, layout, &small);
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
