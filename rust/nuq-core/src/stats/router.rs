//! Routing of values to the records a pass targets: which of a few runs of
//! the layout (if any) holds a value, decided for a block of values at a time
//! with a bit-set test that rejects most of them before any table lookup.

use super::hist::{Grid, Layout};
use super::source::{Value, CHUNK};

/// Maps a value to the target record holding it, if any: one grid index and a
/// table lookup, plus a short scan when a top-level bucket was refined.
pub(crate) struct Router {
    grid: Grid,
    /// Top-level buckets holding a target, one bit each (8 KiB for 2^16
    /// buckets: stays in L1, unlike `first`). Most values of a pass belong
    /// to no target and are rejected here.
    live: Vec<u64>,
    /// Per top-level bucket: first entry of that bucket, or `NONE`.
    first: Vec<u32>,
    /// (root, lo, hi, target), sorted by value; an inexact run is the only
    /// entry of its root (its bounds overlap the neighbours' by the guard).
    entries: Vec<(usize, f64, f64, usize)>,
}

const NONE: u32 = u32::MAX;

impl Router {
    /// `targets` are record indices, ascending.
    pub(crate) fn new(layout: &Layout, targets: &[usize]) -> Self {
        let mut first = vec![NONE; layout.grid.nb];
        let mut live = vec![0u64; layout.grid.nb.div_ceil(64)];
        let mut entries = Vec::with_capacity(targets.len());
        for (t, &i) in targets.iter().enumerate() {
            let r = &layout.recs[i];
            live[r.root / 64] |= 1 << (r.root % 64);
            if first[r.root] == NONE {
                first[r.root] = entries.len() as u32;
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
            entries,
        }
    }

    /// Calls `f(target, value)` for every value of `vals` that belongs to a
    /// target: grid indices for the whole block first, then the bit-set
    /// test, and the full lookup only for the few values that pass it.
    #[inline]
    pub(crate) fn route_block<V: Value>(&self, vals: &[V], mut f: impl FnMut(usize, V)) {
        let mut idx = [0u32; CHUNK];
        self.grid.index_block(vals, &mut idx);
        for (&root, &v) in idx.iter().zip(vals) {
            let root = root as usize;
            if self.live[root / 64] & (1 << (root % 64)) != 0 {
                if let Some(t) = self.lookup(root, v.to_f64()) {
                    f(t, v);
                }
            }
        }
    }

    /// The target holding `v`, whose top-level bucket is `root`.
    #[inline]
    fn lookup(&self, root: usize, v: f64) -> Option<usize> {
        let first = self.first[root];
        if first == NONE {
            return None;
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

#[cfg(test)]
mod tests {
    use super::super::hist::build;
    use super::super::source::Flat;
    use super::*;

    #[test]
    fn routes_exactly_the_values_of_the_targets() {
        let x: Vec<f32> = (0..5000).map(|i| ((i * 37) % 1001) as f32 / 10.0).collect();
        let layout = build(&Flat(&x), 0.0, 100.0, 64, true);
        let targets: Vec<usize> = (0..layout.recs.len()).step_by(5).collect();
        let router = Router::new(&layout, &targets);
        let mut routed = vec![0usize; targets.len()];
        for block in x.chunks(CHUNK) {
            router.route_block(block, |t, v| {
                let r = &layout.recs[targets[t]];
                assert!(r.lo <= f64::from(v) && f64::from(v) <= r.hi);
                routed[t] += 1;
            });
        }
        for (&n, &i) in routed.iter().zip(&targets) {
            assert_eq!(n, layout.recs[i].count);
        }
    }
}
