//! What the histogram passes read: a flat `f32` tensor, or the per-row
//! standardized values `z = (x - loc[r]) / scale[r]` computed on the fly (so
//! the pooled channel statistic never materializes a copy of the tensor).

use std::cmp::Ordering;
use std::ops::Range;

use super::grid::Grid;
use super::router::{f32_at_least, f32_at_most, Router};
use super::simd::{for_each_hit, scalar};

/// A totally ordered sample value (`f32` data or `f64` standardized values).
pub(crate) trait Value: Copy + Default + PartialOrd + Send + Sync + std::fmt::Debug {
    /// Identity of `min` (larger than every finite value).
    const HIGHEST: Self;
    /// Identity of `max`.
    const LOWEST: Self;
    fn to_f64(self) -> f64;
    /// Inverse of `to_f64` on values that came from it (exact).
    fn from_f64(v: f64) -> Self;
    fn total_order(&self, other: &Self) -> Ordering;
    /// Branch-free minimum; the inputs are never NaN.
    fn min_v(self, o: Self) -> Self;
    fn max_v(self, o: Self) -> Self;
}

/// The same `Value` for both float types: their own min/max, total order
/// and infinities; `to_f64` widens exactly and `from_f64` inverts it.
macro_rules! impl_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            const HIGHEST: Self = <$t>::INFINITY;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            #[inline]
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn total_order(&self, other: &Self) -> Ordering {
                self.total_cmp(other)
            }
            #[inline]
            fn min_v(self, o: Self) -> Self {
                self.min(o)
            }
            #[inline]
            fn max_v(self, o: Self) -> Self {
                self.max(o)
            }
        }
    )*};
}

impl_value!(f32, f64);

/// A sequence of sample values that can be re-read cheaply, in parallel.
pub(crate) trait Source: Sync {
    type V: Value;
    fn len(&self) -> usize;
    /// Calls `f` on every value of the flat index range, in order.
    fn visit<F: FnMut(Self::V)>(&self, range: Range<usize>, f: F);
    /// Calls `f` on consecutive slices (at most `CHUNK` values each) covering
    /// the range in order: lets per-value work run in tight, vectorizable
    /// loops over a block.
    fn visit_chunks<F: FnMut(&[Self::V])>(&self, range: Range<usize>, mut f: F) {
        let mut buf = Vec::with_capacity(CHUNK);
        self.visit(range, |v| {
            buf.push(v);
            if buf.len() == CHUNK {
                f(&buf);
                buf.clear();
            }
        });
        if !buf.is_empty() {
            f(&buf);
        }
    }

    /// Calls `f(target, value)`, in order, for every value of the range that
    /// `router` assigns to a target.
    fn route<F: FnMut(usize, Self::V)>(&self, range: Range<usize>, router: &Router, f: F) {
        self.route_with::<false, F>(range, router, f);
    }

    /// As `route`, and may also call `f(n, value)`, `n` the number of
    /// targets, for values that belong to no target: a pass that can keep
    /// those aside saves a branch per value that passed the range test.
    fn route_slots<F: FnMut(usize, Self::V)>(&self, range: Range<usize>, router: &Router, f: F) {
        self.route_with::<true, F>(range, router, f);
    }

    /// `route`, or with `SLOTS` `route_slots`.
    fn route_with<const SLOTS: bool, F: FnMut(usize, Self::V)>(
        &self,
        range: Range<usize>,
        router: &Router,
        f: F,
    );

    /// Calls `f` on the `grid` indices of consecutive chunks (at most
    /// `CHUNK` values each) covering the range in order.
    #[inline(always)]
    fn index_chunks<F: FnMut(&[u32])>(&self, range: Range<usize>, grid: &Grid, mut f: F) {
        let mut idx = [0u32; CHUNK];
        self.visit_chunks(range, |vals| {
            scalar::index_block(grid, vals, &mut idx);
            f(&idx[..vals.len()]);
        });
    }
}

/// Values per block of `visit_chunks`.
pub(crate) const CHUNK: usize = 64;

/// The tensor itself.
pub(crate) struct Flat<'a>(pub &'a [f32]);

impl Source for Flat<'_> {
    type V = f32;
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline]
    fn visit<F: FnMut(f32)>(&self, range: Range<usize>, f: F) {
        self.0[range].iter().copied().for_each(f);
    }
    #[inline(always)]
    fn visit_chunks<F: FnMut(&[f32])>(&self, range: Range<usize>, f: F) {
        self.0[range].chunks(CHUNK).for_each(f);
    }

    /// The router's f32 value ranges tested a slice at a time.
    fn route_with<const SLOTS: bool, F: FnMut(usize, f32)>(
        &self,
        range: Range<usize>,
        router: &Router,
        mut f: F,
    ) {
        let spans = router.f32_ranges();
        if spans.is_empty() {
            return self.visit_chunks(range, |vals| router.route_block(vals, &mut f));
        }
        let xs = &self.0[range];
        for_each_hit(spans, xs, |j| {
            let v = f64::from(xs[j]);
            if SLOTS {
                f(router.slot_of(v), xs[j]);
            } else if let Some(t) = router.target_of(v) {
                f(t, xs[j]);
            }
        });
    }
}

/// The tensor seen as rows of `row_len`, each standardized by its own fit.
pub(crate) struct Standardized<'a> {
    pub x: &'a [f32],
    pub row_len: usize,
    pub loc: &'a [f64],
    /// Per row `inv_scale(scale)`.
    pub inv: &'a [f64],
}

/// Reciprocal scale, 0 for scale 0 (so that the row standardizes to z = 0).
pub(crate) fn inv_scale(scale: f64) -> f64 {
    if scale == 0.0 {
        0.0
    } else {
        1.0 / scale
    }
}

/// The one definition of a standardized value, shared by the fast path and the
/// sort reference so that both see bit-identical `z` (a multiply, not a
/// divide: this runs once per element per pass).
#[inline]
pub(crate) fn standardize(x: f32, loc: f64, inv: f64) -> f64 {
    (f64::from(x) - loc) * inv
}

impl Source for Standardized<'_> {
    type V = f64;
    fn len(&self) -> usize {
        self.x.len()
    }
    fn visit<F: FnMut(f64)>(&self, range: Range<usize>, mut f: F) {
        let mut i = range.start;
        while i < range.end {
            let r = i / self.row_len;
            let row_end = ((r + 1) * self.row_len).min(range.end);
            let (loc, inv) = (self.loc[r], self.inv[r]);
            for &x in &self.x[i..row_end] {
                f(standardize(x, loc, inv));
            }
            i = row_end;
        }
    }
    #[inline(always)]
    fn visit_chunks<F: FnMut(&[f64])>(&self, range: Range<usize>, mut f: F) {
        let mut buf = [0.0; CHUNK];
        let mut i = range.start;
        while i < range.end {
            let r = i / self.row_len;
            let end = ((r + 1) * self.row_len).min(range.end).min(i + CHUNK);
            let (loc, inv) = (self.loc[r], self.inv[r]);
            for (z, &x) in buf.iter_mut().zip(&self.x[i..end]) {
                *z = standardize(x, loc, inv);
            }
            f(&buf[..end - i]);
            i = end;
        }
    }

    /// The index of each standardized value straight from the raw one
    /// (the same operations as `visit_chunks` then `Grid::index`, so the
    /// same indices), row by row: no per-chunk row lookup, no buffer of
    /// standardized values.
    ///
    /// A chunk is handed over once the next one is indexed: a count pass
    /// then interleaves the indexing with its scattered increments (for
    /// the flat tensor, copying each chunk's indices to do the same was
    /// slower: benches/README.md).
    #[inline(always)]
    fn index_chunks<F: FnMut(&[u32])>(&self, range: Range<usize>, grid: &Grid, mut f: F) {
        let mut bufs = [[0u32; CHUNK]; 2];
        let (mut held, mut cur) = (0, 0);
        let mut i = range.start;
        let mut r = i / self.row_len;
        while i < range.end {
            let row_end = ((r + 1) * self.row_len).min(range.end);
            let (loc, inv) = (self.loc[r], self.inv[r]);
            for xs in self.x[i..row_end].chunks(CHUNK) {
                let [a, b] = &mut bufs;
                let (idx, prev) = if cur == 0 { (a, b) } else { (b, a) };
                for (o, &x) in idx.iter_mut().zip(xs) {
                    *o = grid.index(standardize(x, loc, inv)) as u32;
                }
                if held > 0 {
                    f(&prev[..held]);
                }
                (held, cur) = (xs.len(), 1 - cur);
            }
            (i, r) = (row_end, r + 1);
        }
        if held > 0 {
            f(&bufs[1 - cur][..held]);
        }
    }

    /// Most values belong to no target: each row tests its raw values
    /// against the targets' value ranges mapped back through its own
    /// `(loc, inv)` (f32 compares, widened beyond any rounding), and only
    /// the values that pass are standardized and looked up exactly.
    fn route_with<const SLOTS: bool, F: FnMut(usize, f64)>(
        &self,
        range: Range<usize>,
        router: &Router,
        mut f: F,
    ) {
        let ranges = router.value_ranges();
        if ranges.is_empty() {
            return self.visit_chunks(range, |vals| router.route_block(vals, &mut f));
        }
        let mut raw: Vec<(f32, f32)> = Vec::with_capacity(ranges.len());
        let mut i = range.start;
        while i < range.end {
            let r = i / self.row_len;
            let row_end = ((r + 1) * self.row_len).min(range.end);
            let (loc, inv) = (self.loc[r], self.inv[r]);
            if !inv.is_finite() {
                self.visit_chunks(i..row_end, |vals| router.route_block(vals, &mut f));
                i = row_end;
                continue;
            }
            raw.clear();
            raw.extend(ranges.iter().map(|&(lo, hi)| raw_range(lo, hi, loc, inv)));
            let row = &self.x[i..row_end];
            for_each_hit(&raw, row, |j| {
                let z = standardize(row[j], loc, inv);
                if SLOTS {
                    f(router.slot_of(z), z);
                } else if let Some(t) = router.target_of(z) {
                    f(t, z);
                }
            });
            i = row_end;
        }
    }
}

/// The raw values `x` whose `standardize(x, loc, inv)` can lie in `[lo,
/// hi]` (`inv` finite, >= 0), as f32 bounds: the preimage, widened by far
/// more than the rounding of the standardization and of this inversion
/// (a relative 1e-12), then rounded outward. An empty range stays empty
/// (`lo > hi`); for `inv == 0` every z is 0, so the range is all or nothing.
fn raw_range(lo: f64, hi: f64, loc: f64, inv: f64) -> (f32, f32) {
    if inv == 0.0 {
        return if lo <= 0.0 && 0.0 <= hi {
            (f32::NEG_INFINITY, f32::INFINITY)
        } else {
            (f32::INFINITY, f32::NEG_INFINITY)
        };
    }
    let widen = |d: f64| 1e-12 * (loc.abs() + d.abs()) + f64::MIN_POSITIVE;
    let (dl, dh) = (lo / inv, hi / inv);
    (
        f32_at_most(loc + dl - widen(dl)),
        f32_at_least(loc + dh + widen(dh)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Standardized::route` (raw-value prefilter per row) emits exactly
    /// what the generic route over the standardized chunks does, in the same
    /// order: stretched targets, every run, scattered targets (index test),
    /// refined runs; rows of zero, tiny (infinite `inv`), huge and ordinary
    /// scales.
    #[test]
    fn standardized_route_equals_the_generic_route() {
        use super::super::layout::build;
        use super::super::refine::refine;
        let row_len = 500;
        let scales: [f64; 8] = [0.02, 0.0, 3e4, 1e-320, 1.0, 0.5, 7e-3, 2.0];
        let x: Vec<f32> = (0..row_len * scales.len())
            .map(|i| {
                let u = ((i * 7919 + 13) % 10007) as f32 / 10007.0 - 0.5;
                (u * u * u * 40.0 + u) * scales[i / row_len].max(1e-3) as f32
            })
            .collect();
        let loc: Vec<f64> = (0..scales.len()).map(|r| r as f64 * 1e-3).collect();
        let inv: Vec<f64> = scales.iter().map(|&s| inv_scale(s)).collect();
        let src = Standardized {
            x: &x,
            row_len,
            loc: &loc,
            inv: &inv,
        };
        let mut layout = build(&src, -8.0, 8.0, 256, None);
        let generic = |router: &Router| {
            let mut out = Vec::new();
            src.visit_chunks(0..x.len(), |vals| {
                router.route_block(vals, |t, v| out.push((t, v.to_bits())))
            });
            out
        };
        let fast = |router: &Router| {
            let mut out = Vec::new();
            src.route(0..x.len(), router, |t, v| out.push((t, v.to_bits())));
            out
        };
        let all: Vec<usize> = (0..layout.recs.len()).collect();
        let middle: Vec<usize> = (layout.recs.len() / 3..layout.recs.len() / 2).collect();
        let scattered: Vec<usize> = (0..layout.recs.len()).step_by(2).collect();
        for targets in [all, middle.clone(), scattered, vec![0], vec![]] {
            let router = Router::new(&layout, &targets);
            let want = generic(&router);
            assert!(targets.is_empty() || !want.is_empty());
            assert_eq!(fast(&router), want, "targets {targets:?}");
        }
        let refinable: Vec<usize> = middle
            .into_iter()
            .filter(|&i| layout.recs[i].refinable() && !layout.recs[i].pure())
            .collect();
        refine(&src, &mut layout, &refinable);
        let stretch: Vec<usize> = (layout.recs.len() / 3..layout.recs.len() / 2).collect();
        let router = Router::new(&layout, &stretch);
        assert_eq!(fast(&router), generic(&router));
    }

    #[test]
    fn standardized_visits_rows_across_part_boundaries() {
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let loc = [1.0, 5.0, 0.0];
        let inv = [2.0, 0.0, 4.0].map(inv_scale);
        let s = Standardized {
            x: &x,
            row_len: 4,
            loc: &loc,
            inv: &inv,
        };
        let mut got = Vec::new();
        s.visit(2..10, |z| got.push(z));
        assert_eq!(got, vec![0.5, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.25]);
    }

    #[test]
    fn chunks_are_the_visited_values_in_order() {
        let x: Vec<f32> = (0..1000).map(|i| (i % 37) as f32).collect();
        let (loc, inv) = (vec![0.5; 10], vec![inv_scale(2.0); 10]);
        let s = Standardized {
            x: &x,
            row_len: 100,
            loc: &loc,
            inv: &inv,
        };
        for range in [0..1000, 3..977, 150..151, 40..40] {
            let (mut want, mut got) = (Vec::new(), Vec::new());
            s.visit(range.clone(), |z| want.push(z));
            s.visit_chunks(range.clone(), |c| {
                assert!(!c.is_empty() && c.len() <= CHUNK);
                got.extend_from_slice(c);
            });
            assert_eq!(got, want);
            // Grid indices: the same values' indices, in order, chunk by
            // chunk (handed over one chunk late).
            let grid = Grid::new(-4.0, 20.0, 96);
            let mut idx = Vec::new();
            s.index_chunks(range.clone(), &grid, |c| {
                assert!(!c.is_empty() && c.len() <= CHUNK);
                idx.extend_from_slice(c);
            });
            let want_idx: Vec<u32> = want.iter().map(|&z| grid.index(z) as u32).collect();
            assert_eq!(idx, want_idx);
            let mut flat = Vec::new();
            Flat(&x).visit_chunks(range.clone(), |c| flat.extend_from_slice(c));
            assert_eq!(flat, &x[range]);
        }
    }
}
