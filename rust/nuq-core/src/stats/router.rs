//! Routing of values to the records a pass targets: which of a few runs of
//! the layout (if any) holds a value, decided for a block of values at a
//! time. Most values belong to no target and are rejected first: by a few
//! value-range compares (targets are usually a handful of stretches of
//! consecutive runs), or, for scattered targets, by a bit-set test on the
//! grid index.

use super::grid::Grid;
use super::layout::Layout;
use super::simd::index_block;
use super::source::{Value, CHUNK};

/// Maps a value to the target record holding it, if any: one grid index and a
/// table lookup, plus a short scan when a top-level bucket was refined.
pub(crate) struct Router {
    grid: Grid,
    /// Top-level buckets holding a target, one bit each (8 KiB for 2^16
    /// buckets: stays in L1, unlike `first`). Most values of a pass belong
    /// to no target and are rejected here.
    live: Vec<u64>,
    /// Per top-level bucket: first entry of that bucket, `DIRECT | target`
    /// for a bucket that is one inexact target run, or `NONE`.
    first: Vec<u32>,
    /// (root, lo, hi, target), sorted by value; an inexact run is the only
    /// entry of its root (its bounds overlap the neighbours' by the guard).
    entries: Vec<(usize, f64, f64, usize)>,
    /// Value ranges holding every target (a stretch of consecutive target
    /// runs each, from its first run's `lo` to its last run's `hi`), when
    /// there are at most `MAX_SPANS`; compares on the raw values vectorize
    /// and need no grid index for the values they reject.
    spans: Spans,
    /// How many targets: the slot of a value that belongs to none.
    targets: usize,
}

/// Most value ranges tested per value; more fall back to the bit set.
const MAX_SPANS: usize = 32;
/// Ranges that neighbouring stretches are joined down to, and the share of
/// the data (`1 / JOIN_SHARE`) the joined-in runs may hold. One range: the
/// range test is a pass over every value of the tensor, while the values
/// joined in cost one rejected lookup each (measured: benches/README.md).
const FEW_SPANS: usize = 1;
const JOIN_SHARE: usize = 64;
/// The share of the data that may be joined in to get down to `MAX_SPANS`
/// ranges: a rejected lookup costs a few times what the bit-set test costs
/// per value, and that test indexes every value.
const LAST_SHARE: usize = 8;

/// The value ranges, rounded outward to each value type (empty: not used).
#[derive(Debug, Default)]
struct Spans {
    f32s: Vec<(f32, f32)>,
    f64s: Vec<(f64, f64)>,
}

const NONE: u32 = u32::MAX;
/// Tags an entry of `first` that is the root's target itself (the root's
/// only entry, a whole bucket, which every value of the root belongs to).
const DIRECT: u32 = 1 << 31;

impl Router {
    /// `targets` are record indices, ascending.
    pub(crate) fn new(layout: &Layout, targets: &[usize]) -> Self {
        assert!(targets.len() < DIRECT as usize, "{} targets", targets.len());
        debug_assert!(
            targets.iter().all(|&i| layout.recs[i].buckets == 1),
            "coarse runs are split before a pass routes values to them"
        );
        let mut first = vec![NONE; layout.grid.nb];
        let mut live = vec![0u64; layout.grid.nb.div_ceil(64)];
        let mut entries = Vec::with_capacity(targets.len());
        for (t, &i) in targets.iter().enumerate() {
            let r = &layout.recs[i];
            live[r.root / 64] |= 1 << (r.root % 64);
            // An inexact run (a whole bucket) is its root's only entry:
            // its root maps to it directly, with no entry to read.
            if first[r.root] == NONE {
                first[r.root] = if r.exact {
                    entries.len() as u32
                } else {
                    DIRECT | t as u32
                };
            }
            let (lo, hi) = if r.exact {
                (r.lo, r.hi)
            } else {
                (f64::NEG_INFINITY, f64::INFINITY)
            };
            entries.push((r.root, lo, hi, t));
        }
        Router {
            grid: layout.grid,
            live,
            first,
            spans: value_spans(layout, targets),
            entries,
            targets: targets.len(),
        }
    }

    /// `target_of(v)`, or the number of targets for none, without a branch on the
    /// answer when `v`'s bucket is a whole target run or no target's.
    #[inline]
    pub(crate) fn slot_of(&self, v: f64) -> usize {
        let root = self.grid.index(v);
        let first = self.first[root];
        if first & DIRECT != 0 {
            // NONE has the DIRECT bit as well, and past it a number above
            // every target (asserted in `new`).
            return ((first & !DIRECT) as usize).min(self.targets);
        }
        self.lookup(root, v).unwrap_or(self.targets)
    }

    /// Calls `f(target, value)` for every value of `vals` (at most `CHUNK`)
    /// that belongs to a target: the grid indices of the block and the bit
    /// set first, the full lookup only for the few values that pass. (The
    /// sources test a router's value ranges themselves, on raw values,
    /// before they standardize or index anything.)
    #[inline]
    pub(crate) fn route_block<V: Value>(&self, vals: &[V], mut f: impl FnMut(usize, V)) {
        let mut idx = [0u32; CHUNK];
        index_block(&self.grid, vals, &mut idx);
        for (&root, &v) in idx.iter().zip(vals) {
            let root = root as usize;
            if self.live[root / 64] & (1 << (root % 64)) != 0 {
                if let Some(t) = self.lookup(root, v.to_f64()) {
                    f(t, v);
                }
            }
        }
    }

    /// The target holding `v`, if any (the full lookup, no prefilter).
    #[inline]
    pub(crate) fn target_of(&self, v: f64) -> Option<usize> {
        self.lookup(self.grid.index(v), v)
    }

    /// The value ranges holding every target (empty when the router tests
    /// grid indices instead).
    pub(crate) fn value_ranges(&self) -> &[(f64, f64)] {
        &self.spans.f64s
    }

    /// The same ranges rounded outward to f32 (empty likewise).
    pub(crate) fn f32_ranges(&self) -> &[(f32, f32)] {
        &self.spans.f32s
    }

    /// The target holding `v`, whose top-level bucket is `root`.
    #[inline]
    fn lookup(&self, root: usize, v: f64) -> Option<usize> {
        let first = self.first[root];
        if first == NONE {
            return None;
        }
        if first & DIRECT != 0 {
            return Some((first & !DIRECT) as usize);
        }
        let tail = &self.entries[first as usize..];
        // Usually one entry per root; a refined root has several, searched
        // by value (entries are sorted by root, then value).
        let i = match tail.get(1) {
            Some(e) if e.0 == root => tail.partition_point(|e| e.0 == root && e.2 < v),
            _ => 0,
        };
        match tail.get(i) {
            Some(&(r, lo, hi, t)) if r == root && lo <= v && v <= hi => Some(t),
            _ => None,
        }
    }
}

/// Value ranges of the stretches of consecutive targets, rounded outward to
/// f32 and kept in f64. A run's `[lo, hi]` holds every value the lookup can
/// assign to it. Neighbouring stretches are joined, smallest gap first (a
/// gap's cost, the values of the runs it holds, does not change as others
/// are joined): down to `MAX_SPANS` ranges while the values joined in stay
/// within `n / LAST_SHARE` (else empty: the bit-set test), then on down to
/// `FEW_SPANS` while they stay within `n / JOIN_SHARE`. Each range costs two
/// compares per value, a joined-in value one lookup that rejects it.
fn value_spans(layout: &Layout, targets: &[usize]) -> Spans {
    // (first record, last record) of each stretch.
    let mut stretches: Vec<(usize, usize)> = Vec::new();
    for &i in targets {
        match stretches.last_mut() {
            Some(last) if last.1 + 1 == i => last.1 = i,
            _ => stretches.push((i, i)),
        }
    }
    // Gap `k` lies between stretches `k` and `k + 1`; `(cost, k)` ascending.
    let mut gaps: Vec<(usize, usize)> = stretches
        .windows(2)
        .enumerate()
        .map(|(k, w)| {
            let (before, after) = (&layout.recs[w[0].1], &layout.recs[w[1].0]);
            (after.offset - (before.offset + before.count), k)
        })
        .collect();
    gaps.sort_unstable();
    let mut joined = vec![false; gaps.len()];
    let mut ranges = stretches.len();
    let mut spent = 0;
    for &(cost, k) in &gaps {
        let budget = if ranges > MAX_SPANS {
            layout.n / LAST_SHARE
        } else {
            layout.n / JOIN_SHARE
        };
        if ranges <= FEW_SPANS || spent + cost > budget {
            break;
        }
        spent += cost;
        joined[k] = true;
        ranges -= 1;
    }
    if ranges > MAX_SPANS {
        return Spans::default();
    }
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(ranges);
    for (k, &s) in stretches.iter().enumerate() {
        match runs.last_mut() {
            Some(last) if joined[k - 1] => last.1 = s.1,
            _ => runs.push(s),
        }
    }
    let f64s: Vec<(f64, f64)> = runs
        .iter()
        .map(|&(a, b)| (layout.recs[a].lo, layout.recs[b].hi))
        .collect();
    let f32s = f64s
        .iter()
        .map(|&(lo, hi)| (f32_at_most(lo), f32_at_least(hi)))
        .collect();
    Spans { f32s, f64s }
}

/// Largest f32 `<= v` (v not NaN).
pub(crate) fn f32_at_most(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) > v {
        f.next_down()
    } else {
        f
    }
}

/// Smallest f32 `>= v` (v not NaN).
pub(crate) fn f32_at_least(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) < v {
        f.next_up()
    } else {
        f
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::build;
    use super::super::refine::refine;
    use super::super::source::{Flat, Source};
    use super::*;

    #[test]
    fn routes_exactly_the_values_of_the_targets() {
        let x: Vec<f32> = (0..5000).map(|i| ((i * 37) % 1001) as f32 / 10.0).collect();
        // Runs of targets (span filter) and scattered targets beyond
        // MAX_SPANS ranges (bit-set test).
        let layout = build(&Flat(&x), 0.0, 100.0, 256, Some((0.0, 100.0)));
        let runs: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 20 < 7).collect();
        let scattered: Vec<usize> = (0..layout.recs.len()).step_by(3).collect();
        assert!(!Router::new(&layout, &runs).spans.f64s.is_empty());
        assert!(Router::new(&layout, &scattered).spans.f64s.is_empty());
        // Stretches one small run apart get joined into fewer ranges: the
        // joined-in values reach the lookup, which rejects them.
        let holes: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 30 != 29).collect();
        let stretches = 1 + holes.windows(2).filter(|w| w[1] != w[0] + 1).count();
        let joined = Router::new(&layout, &holes).spans.f64s.len();
        assert!(
            stretches > FEW_SPANS && joined < stretches,
            "{joined} of {stretches}"
        );
        // More than MAX_SPANS stretches, one small run apart: joined down
        // to MAX_SPANS ranges rather than left to the bit-set test.
        let many: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 6 != 5).collect();
        let stretches = 1 + many.windows(2).filter(|w| w[1] != w[0] + 1).count();
        let joined = Router::new(&layout, &many).spans.f64s.len();
        assert!(
            stretches > MAX_SPANS && (1..=MAX_SPANS).contains(&joined),
            "{joined} of {stretches}"
        );
        for targets in [runs, scattered, holes, many] {
            check_routing(&x, &layout, &targets);
        }
        // Refined roots hold several runs: the span filter passes them all,
        // the lookup picks the right one.
        let mut layout = layout;
        let coarse: Vec<usize> = (0..layout.recs.len()).step_by(4).collect();
        refine(&Flat(&x), &mut layout, &coarse);
        let runs: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 40 < 9).collect();
        assert!(!Router::new(&layout, &runs).spans.f64s.is_empty());
        check_routing(&x, &layout, &runs);
    }

    #[test]
    fn f32_bounds_round_outward() {
        for v in [
            0.1f64,
            -0.1,
            1.0,
            1e-40,
            -3.3e38,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let (lo, hi) = (f32_at_most(v), f32_at_least(v));
            assert!(f64::from(lo) <= v && v <= f64::from(hi), "{v}");
            // Tight: the two bounds are equal or adjacent f32 values.
            assert!(lo == hi || lo.next_up() == hi, "{v}: {lo} {hi}");
        }
    }

    fn check_routing(x: &[f32], layout: &super::super::layout::Layout, targets: &[usize]) {
        let router = Router::new(layout, targets);
        let mut routed = vec![0usize; targets.len()];
        for block in x.chunks(CHUNK) {
            router.route_block(block, |t, v| {
                let r = &layout.recs[targets[t]];
                assert!(r.lo <= f64::from(v) && f64::from(v) <= r.hi);
                routed[t] += 1;
            });
        }
        for (&n, &i) in routed.iter().zip(targets) {
            assert_eq!(n, layout.recs[i].count);
        }
        // The branch-free slot: the target, or the number of targets.
        for &v in x {
            let v = f64::from(v);
            let want = router.target_of(v).unwrap_or(targets.len());
            assert_eq!(router.slot_of(v), want, "{v}");
        }
        // Flat routing by slots passes every target's values with it.
        let mut slotted = vec![0usize; targets.len() + 1];
        Flat(x).route_slots(0..x.len(), &router, |t, _| slotted[t] += 1);
        assert_eq!(slotted[..targets.len()], routed);
    }
}
