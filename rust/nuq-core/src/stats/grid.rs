//! The uniform bucket grid every rank argument of `stats` rests on: the
//! bucket index is a non-decreasing function of the value (a subtract, a
//! multiply, a clamp and a truncation, each monotone), so the buckets of a
//! grid hold contiguous runs of the sorted data and equal values share a
//! bucket. Also where top-level grids are placed and how fine they are.

/// Largest bucket count of a refinement histogram, and of the top-level one
/// below `LARGE_N` elements: 2^16 u32 counters (256 KiB) per thread stay in
/// L2 (refinement bins with min/max: 768 KiB).
pub(crate) const MAX_BUCKETS: usize = 1 << 16;

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
    pub(crate) fn bounds(&self, b: usize, guard: f64) -> (f64, f64) {
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

/// Standard deviations either side of the centre that a top-level grid
/// spans (a tensor's grid never reaches beyond its range). Beyond, the end
/// buckets hold the tails. A grid over `[min, max]` instead lets a few far
/// outliers (weight matrices have some at 50σ and more) stretch it until
/// the central runs hold thousands of values each. Six rather than eight:
/// the bulk gets finer runs (fewer KS candidates to gather), while beyond
/// 6σ a Laplace tensor of millions holds a few hundred values, whose terms
/// are far from D.
pub(crate) const GRID_SIGMAS: f64 = 6.0;

#[cfg(test)]
mod tests {
    use super::*;

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
}
