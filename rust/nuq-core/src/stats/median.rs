//! Exact medians without sorting the data, as `numpy.median` (the mean of
//! the two middle values for even `n`, averaged in f64; 0 when empty), by
//! one strategy: **bracket, copy, select**. Counting finds a value range
//! holding the middle ranks and how many values lie below it; only the
//! values in that range are copied out, and the middle ranks less that
//! count are selected among them by integer keys that order as
//! `f32::total_cmp` ([`select_middle`]). Every bracket test is monotone in
//! the value and keeps ties (and `-0.0` with `0.0`) on one side, so the
//! values below a bracket are exactly those the sort puts before it, and
//! the result is the sort's, bit for bit.
//!
//! Brackets come from what each caller already has:
//! - a short slice ([`median`] below `SMALL_N`): the whole slice;
//! - a row with its mean and standard deviation ([`median_of_row`], one
//!   per channel): compare passes against pivots about the mean, or, when
//!   no narrow pivot bracket holds the middle ranks (ties, skew), a count
//!   on about `n / 4` buckets over the mean ± 4 standard deviations;
//! - a tensor's histogram layout ([`median_of_layout`]): the runs holding
//!   the middle ranks, whose first and last values are known once exact,
//!   refined first when too large to copy. The tensor fit fuses this
//!   bracket with the mean absolute deviation in one pass (`laplace`).

use super::gather::gather;
use super::grid::{buckets_for, Grid};
use super::layout::{build_coarse, expand, Layout, GATHER_MAX};
use super::moments::min_max;
use super::refine::refine;
use super::router::{f32_at_least, f32_at_most};
use super::simd::{count_below, count_bins, for_each_hit};
use super::source::{Flat, Source, Value};
use super::SMALL_N;

/// Exact median (mean of the two middle values for even `n`, as
/// `numpy.median`, averaged in f64). 0 for empty `x`; `x` must be finite.
pub fn median(x: &[f32]) -> f64 {
    let n = x.len();
    if n == 0 {
        return 0.0;
    }
    if n < SMALL_N {
        return select_middle(x, &mut Vec::new(), (n - 1) / 2, n / 2);
    }
    let (lo, hi) = min_max(x);
    let grid = Grid::new(lo, hi, buckets_for(n));
    let mut layout = build_coarse(&Flat(x), grid, Some((lo, hi)));
    expand_middle(&mut layout);
    median_of_layout(&Flat(x), &mut layout)
}

/// [`median`] of a row whose values spread about `center` by about
/// `spread` (its mean and standard deviation): [`median_pivoted`], or
/// [`median_binned`] when the middle ranks are not within a narrow pivot
/// bracket (the hints are off, or ties crowd the middle). Exact, bit for
/// bit, whatever the hints; `scratch` is reused between rows.
pub(crate) fn median_of_row(x: &[f32], center: f64, spread: f64, scratch: &mut Scratch) -> f64 {
    median_pivoted(x, center, spread, scratch)
        .unwrap_or_else(|| median_binned(x, center, spread, scratch))
}

/// Pivots of [`median_pivoted`] in units of `spread` about `center`: a
/// first round of three about the centre, where the median of a weight row
/// mostly lies (a bracket of 0.07 standard deviations holds 3% of Gaussian
/// values), then, when the middle ranks are not within one of its narrow
/// brackets, a second round dense near the centre and reaching further
/// out. Each pivot costs a compare pass over the row, so the wide round
/// runs only when the narrow one fails. Of the 1084 rows of the MTCNN and
/// default model weights, 8 are left to the bucket fallback either way.
const CENTRE: [f64; 3] = [-0.07, 0.0, 0.07];
const PIVOTS: [f64; 10] = [-0.6, -0.3, -0.15, -0.07, -0.02, 0.02, 0.07, 0.15, 0.3, 0.6];

/// The median by compares alone, no scatter: a vectorized count of the
/// values below each pivot (the whole row sits in L1) finds the pivot
/// bracket `[lo, hi)` holding the middle ranks (see `CENTRE`); its values
/// are copied out and selected. `None` when no bracket holding them has at
/// most `n / 8` values (or the hints are not finite). Values below a pivot
/// are exactly the ones ordered before it by `total_cmp` (`-0.0` and `0.0`
/// fall on the same side of every pivot), so a selection in the bracket is
/// the sort's.
pub(crate) fn median_pivoted(
    x: &[f32],
    center: f64,
    spread: f64,
    scratch: &mut Scratch,
) -> Option<f64> {
    let n = x.len();
    if n == 0 || !center.is_finite() || !spread.is_finite() {
        return None;
    }
    // Non-decreasing: the scale is non-negative and rounding is monotone.
    let at = |c: f64| (center + c * spread.abs()) as f32;
    let (lo, hi, base, count) =
        middle_bracket(x, &CENTRE.map(at)).or_else(|| middle_bracket(x, &PIVOTS.map(at)))?;
    scratch.vals.clear();
    let range = [(lo, hi)];
    for_each_hit(&range, x, |j| scratch.vals.push(x[j]));
    if scratch.vals.len() != count {
        // Pivots near the f32 limits can make the compares and the copy's
        // range disagree: leave the row to the next method.
        return None;
    }
    let (lo_rank, hi_rank) = ((n - 1) / 2, n / 2);
    Some(select_middle(
        &scratch.vals,
        &mut scratch.keys,
        lo_rank - base,
        hi_rank - base,
    ))
}

/// The bracket of `pivots` (bracket j is `[pivots[j-1], pivots[j])`,
/// unbounded at the ends) holding the middle ranks of `x`, as `(lo, hi,
/// base, count)`: f32 bounds `[lo, hi]` (inclusive) of its `count` values,
/// with `base` values below `lo`. `None` if it holds more than `n / 8`.
fn middle_bracket<const P: usize>(
    x: &[f32],
    pivots: &[f32; P],
) -> Option<(f32, f32, usize, usize)> {
    let n = x.len();
    let below = count_below(x, pivots);
    let (lo_rank, hi_rank) = ((n - 1) / 2, n / 2);
    let bracket = |rank: usize| below.partition_point(|&c| c <= rank);
    let (first, last) = (bracket(lo_rank), bracket(hi_rank));
    let base = if first == 0 { 0 } else { below[first - 1] };
    let end = below.get(last).copied().unwrap_or(n);
    if 8 * (end - base) > n.max(64) {
        return None;
    }
    let lo = if first == 0 {
        f32::NEG_INFINITY
    } else {
        pivots[first - 1]
    };
    // The largest value below the upper pivot (values are finite).
    let hi = pivots.get(last).map_or(f32::INFINITY, |p| p.next_down());
    Some((lo, hi, base, end - base))
}

/// The median from the values holding 0-based ranks `lo..=hi` (`hi - lo`
/// is 0 or 1) of the data, at those positions of `vals` in sorted order.
/// The values are selected as [`total_key`]s (in `keys`, reused): integer
/// compares, not `total_cmp` calls. `keys` is left as the selection
/// permuted it, an order fixed by the values alone, so a sum over it
/// (`laplace`'s) rounds the same way every run.
pub(super) fn select_middle(vals: &[f32], keys: &mut Vec<i32>, lo: usize, hi: usize) -> f64 {
    keys.clear();
    keys.extend(vals.iter().map(|&v| total_key(v)));
    let (lower, &mut top, _) = keys.select_nth_unstable(hi);
    let top = from_total_key(top);
    if lo == hi {
        return f64::from(top);
    }
    let bottom = lower
        .iter()
        .copied()
        .max()
        .expect("rank lo is below rank hi");
    (f64::from(from_total_key(bottom)) + f64::from(top)) / 2.0
}

/// An integer whose order is `f32::total_cmp`'s: the bits, with those
/// below the sign flipped for negative values.
fn total_key(v: f32) -> i32 {
    let bits = v.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// The value of a [`total_key`] (the map is its own inverse).
pub(super) fn from_total_key(key: i32) -> f32 {
    f32::from_bits(total_key(f32::from_bits(key as u32)) as u32)
}

/// [`median`] of `x` by bucket selection: one
/// pass counts the values on a grid of about `n / 4` buckets over `center
/// ± 4 spread`, and a second copies out only the values of the bucket(s)
/// holding the middle ranks, which are then selected. The bucket index is a
/// monotone function of the value (f32 arithmetic, 16 lanes under
/// AVX-512), so the result is the sort's, bit for bit, whatever `center`
/// and `spread` are: they only place the buckets (the row's mean and
/// standard deviation put a few values in each). `scratch` is reused
/// between calls.
pub(crate) fn median_binned(x: &[f32], center: f64, spread: f64, scratch: &mut Scratch) -> f64 {
    let n = x.len();
    if n == 0 {
        return 0.0;
    }
    let nb = (n / 4).next_power_of_two().clamp(16, MAX_ROW_BUCKETS);
    // A negative spread would reverse the index's order.
    let spread = spread.abs();
    let bins = Bins {
        lo: (center - 4.0 * spread) as f32,
        inv: (nb as f64 / (8.0 * spread)) as f32,
        top: (nb - 1) as f32,
    };
    scratch.counts.clear();
    scratch.counts.resize(nb, 0);
    count_bins(x, &mut scratch.counts, |v| bins.index(v));
    let (lo_rank, hi_rank) = ((n - 1) / 2, n / 2);
    let (first, below) = bucket_of(&scratch.counts, lo_rank);
    let (last, _) = bucket_of(&scratch.counts, hi_rank);
    scratch.vals.clear();
    bins.collect(x, first as u32, last as u32, &mut scratch.vals);
    let expected: u32 = scratch.counts[first..=last].iter().sum();
    if scratch.vals.len() != expected as usize {
        // Found by fuzz/fuzz_quantize.py: for weights near f32::MAX, `v - lo`
        // overflows in the bucket index and the counted and the collected
        // values disagree (an empty selection panicked). Select from the row.
        scratch.vals.clear();
        scratch.vals.extend_from_slice(x);
        return select_middle(&scratch.vals, &mut scratch.keys, lo_rank, hi_rank);
    }
    select_middle(
        &scratch.vals,
        &mut scratch.keys,
        lo_rank - below,
        hi_rank - below,
    )
}

/// Most buckets of `median_binned` (16 KiB of counters, in L1).
const MAX_ROW_BUCKETS: usize = 1 << 12;

/// Buffers of [`median_of_row`], kept between rows.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    counts: Vec<u32>,
    vals: Vec<f32>,
    keys: Vec<i32>,
}

/// `clamp((v - lo) * inv, 0, top)` truncated, in f32: non-decreasing in
/// `v` for any `lo`, `inv >= 0` and `top` (rounding is monotone; a NaN
/// product, from `0 * inf`, clamps to 0 like everything at or below `lo`).
#[derive(Debug, Clone, Copy)]
struct Bins {
    lo: f32,
    inv: f32,
    top: f32,
}

impl Bins {
    #[inline(always)]
    fn index(&self, v: f32) -> u32 {
        let t = ((v - self.lo) * self.inv).max(0.0).min(self.top);
        // SAFETY: `t` is within [0, top] (max() maps NaN to 0) and `top` <
        // 2^12, so it fits an i32.
        unsafe { t.to_int_unchecked::<i32>() as u32 }
    }

    /// Pushes the values whose bucket is in `first..=last`, in order: a
    /// range compare on the raw values (the buckets' value range, widened
    /// beyond the f32 rounding of `index`, AVX-512 where present) rejects
    /// nearly all of them, and `index` decides for the rest.
    fn collect(&self, x: &[f32], first: u32, last: u32, out: &mut Vec<f32>) {
        let range = [self.value_range(first, last)];
        for_each_hit(&range, x, |j| {
            if (first..=last).contains(&self.index(x[j])) {
                out.push(x[j]);
            }
        });
    }

    /// Bounds holding every value whose bucket is in `first..=last`: the
    /// edges, widened by a relative 1e-6 (`index` errs by a few f32 ulps,
    /// 2^-22 relative), open-ended at the clamped end buckets; everything
    /// when the grid is degenerate (`lo` or `inv` not finite).
    fn value_range(&self, first: u32, last: u32) -> (f32, f32) {
        let (lo, inv) = (f64::from(self.lo), f64::from(self.inv));
        if !lo.is_finite() || !inv.is_finite() || inv == 0.0 {
            return (f32::NEG_INFINITY, f32::INFINITY);
        }
        let edge = |k: u32| {
            let d = f64::from(k) / inv;
            (
                lo + d,
                1e-6 * (lo.abs() + d.abs()) + f64::from(f32::MIN_POSITIVE),
            )
        };
        let below = if first == 0 {
            f32::NEG_INFINITY
        } else {
            let (e, w) = edge(first);
            f32_at_most(e - w)
        };
        let above = if f64::from(last) >= f64::from(self.top) {
            f32::INFINITY
        } else {
            let (e, w) = edge(last + 1);
            f32_at_least(e + w)
        };
        (below, above)
    }
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

/// Splits the coarse runs holding the middle ranks into their buckets
/// (from the kept counts, no pass over the data), so that the runs the
/// median is selected from stay narrow.
pub(crate) fn expand_middle(layout: &mut Layout) {
    let n = layout.n;
    let mut middle = vec![run_of(layout, (n - 1) / 2), run_of(layout, n / 2)];
    middle.dedup();
    middle.retain(|&i| layout.recs[i].buckets > 1);
    expand(layout, &middle);
}

/// Median from a layout of the same source (which may get refined); the
/// runs holding the middle ranks must not be coarse.
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
pub(super) fn run_of(layout: &Layout, k: usize) -> usize {
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
    use super::super::layout::build;
    use super::super::tests::sorted_median;
    use super::*;

    /// Found by fuzz/fuzz_quantize.py: a row of weights near `f32::MAX`
    /// (per-channel Lloyd–Max fits) overflowed the bucket index, counted and
    /// collected values disagreed, and selecting from none panicked.
    #[test]
    #[allow(clippy::excessive_precision)] // the fuzzer's row, digit for digit
    fn row_median_of_weights_near_f32_max_is_the_sorted_median() {
        #[rustfmt::skip]
        let row: Vec<f32> = vec![-8.573521e+37, -2.176611e+37, 5.183989e+37, -5.615988e+37, -7.709522e+37, 1.109905e+38, -7.343985e+37, 9.238135e+37, 6.180910e+37, 7.343985e+37, 5.881834e+37, 4.552606e+37, 8.307675e+37, -5.881834e+37, 8.573521e+37, 1.335874e+38, 9.105212e+37, -6.878755e+37, 4.286760e+37, 6.563063e+36, -1.083321e+38, -7.277523e+37, 7.875676e+37, 4.818451e+37, 1.561843e+38, -1.209597e+38, -1.136490e+38, -1.010213e+38, 6.313833e+37, 1.309290e+38, 5.682450e+37, 4.652298e+37];
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / row.len() as f64;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / row.len() as f64;
        let mut sorted = row.clone();
        sorted.sort_by(f32::total_cmp);
        let expected = (f64::from(sorted[15]) + f64::from(sorted[16])) / 2.0;
        let got = median_of_row(&row, mean, var.sqrt(), &mut Scratch::default());
        assert_eq!(got, expected);
        let binned = median_binned(&row, mean, var.sqrt(), &mut Scratch::default());
        assert_eq!(binned, expected);
    }

    /// Keys order as `total_cmp` and map back to the same bits.
    #[test]
    fn total_keys_follow_total_cmp() {
        let mut vals = vec![
            -f32::MAX,
            -3.5,
            -1.0,
            -f32::MIN_POSITIVE,
            -1e-45,
            -0.0,
            0.0,
            1e-45,
            f32::MIN_POSITIVE,
            0.1,
            1.0,
            2.5e30,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for &v in &vals {
            assert_eq!(from_total_key(total_key(v)).to_bits(), v.to_bits());
        }
        vals.sort_by(f32::total_cmp);
        let keys: Vec<i32> = vals.iter().map(|&v| total_key(v)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    #[test]
    fn small_medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(median(&[5.0, -1.0, 2.0, 2.0]), 2.0);
        assert_eq!(median(&[5.0, -1.0, 7.0, 2.0, 9.0]), 5.0);
    }

    #[test]
    fn binned_medians_equal_the_float_selection() {
        let mut scratch = Scratch::default();
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
            let want = sorted_median(&x);
            let n = x.len().max(1) as f64;
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let std = (x
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
            // The row's own moments, and hints that place the buckets badly
            // or not at all (one bucket, NaN, infinite scale).
            for (center, spread) in [
                (mean, std),
                (0.0, 1.0),
                (1e6, 1e-9),
                (0.0, 0.0),
                (f64::NAN, 1.0),
                (0.0, f64::INFINITY),
                (mean, -std),
            ] {
                let got = median_binned(&x, center, spread, &mut scratch);
                assert_eq!(got.to_bits(), want.to_bits(), "{x:?} {center} {spread}");
                let near = median_of_row(&x, center, spread, &mut scratch);
                assert_eq!(near.to_bits(), want.to_bits(), "{x:?} {center} {spread}");
            }
        }
    }

    /// Rows like weights (Gaussian, Laplace, heavy-tailed, a few exact
    /// zeros; odd and even lengths) are settled by the pivots alone, with
    /// the sort's median, also when the hints put the median off centre; rows crowded with ties fall back to the bins,
    /// with the same result. The pivot counts are the direct counts.
    #[test]
    fn pivoted_medians_of_weight_rows() {
        use super::super::tests::sample;
        let mut scratch = Scratch::default();
        let cases = [(0u8, 3072), (1, 768), (3, 3071), (0, 4609), (1, 577)];
        for (kind, n) in cases.into_iter().chain([(5, 4608), (6, 576)]) {
            for seed in 0..4 {
                let mut x = sample(kind, n, seed);
                if seed == 3 {
                    x.iter_mut().step_by(97).for_each(|v| *v = 0.0);
                }
                let m = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
                let s =
                    (x.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / n as f64).sqrt();
                let want = sorted_median(&x);
                // Hints off by a quarter of a standard deviation either
                // way: the second round of pivots settles Gaussian and
                // Laplace rows (heavy tails crowd its bracket).
                for (k, centre) in [m, m + 0.25 * s, m - 0.25 * s].into_iter().enumerate() {
                    let got = median_pivoted(&x, centre, s, &mut scratch);
                    if kind < 5 && (k == 0 || kind < 2) {
                        assert_eq!(got.map(f64::to_bits), Some(want.to_bits()), "kind {kind}");
                    }
                    let near = median_of_row(&x, centre, s, &mut scratch);
                    assert_eq!(near.to_bits(), want.to_bits(), "kind {kind}");
                }
                let pivots = [-0.6, -0.15, -0.07, 0.0, 0.07, 0.6].map(|c| (m + c * s) as f32);
                let below = count_below(&x, &pivots);
                for (b, p) in below.iter().zip(pivots) {
                    assert_eq!(*b, x.iter().filter(|&&v| v < p).count());
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn near_median_matches(
            x in proptest::collection::vec(-1e3f32..1e3, 1..600),
            center in -2e3f64..2e3,
            spread in -1e4f64..1e4,
            ties in 0usize..4,
        ) {
            // Ties (every `ties`-th value zeroed) crowd the pivot brackets.
            let mut x = x;
            if ties > 0 {
                x.iter_mut().step_by(ties + 1).for_each(|v| *v = 0.0);
            }
            let want = sorted_median(&x).to_bits();
            let mut scratch = Scratch::default();
            if let Some(m) = median_pivoted(&x, center, spread, &mut scratch) {
                proptest::prop_assert_eq!(m.to_bits(), want);
            }
            proptest::prop_assert_eq!(median_of_row(&x, center, spread, &mut scratch).to_bits(), want);
        }

        #[test]
        fn binned_median_matches(
            x in proptest::collection::vec(-1e3f32..1e3, 1..600),
            center in -2e3f64..2e3,
            spread in -1e4f64..1e4,
        ) {
            let mut scratch = Scratch::default();
            proptest::prop_assert_eq!(
                median_binned(&x, center, spread, &mut scratch).to_bits(),
                sorted_median(&x).to_bits()
            );
        }
    }

    #[test]
    fn every_rank_of_a_tied_large_input() {
        // Few distinct values, large n: runs are pure or must be refined.
        let x: Vec<f32> = (0..200_000).map(|i| ((i * 37) % 11) as f32 * 0.5).collect();
        let mut sorted = x.clone();
        sorted.sort_by(f32::total_cmp);
        let mut layout = build(&Flat(&x), 0.0, 5.0, 1024, Some((0.0, 5.0)));
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
