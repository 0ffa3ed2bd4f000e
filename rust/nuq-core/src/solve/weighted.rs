//! Lloyd's algorithm on a binned sample (1-D weighted k-means): the data
//! counterpart of the density solver, used to refine a codebook on values that
//! no standard density describes well (per-group absmax-normalized weights,
//! which pile up at ±1).
//!
//! Points are ascending, so each cell is a contiguous run of points; with
//! prefix sums of the weights and weighted points every sweep costs
//! O(N log n) for N levels and n points, whatever n is.

use super::{midpoints, Quantizer};

/// Prefix sums of w and w·x over the points, with a leading zero.
struct Prefix<'a> {
    points: &'a [f64],
    w: Vec<f64>,
    wx: Vec<f64>,
}

impl<'a> Prefix<'a> {
    fn new(points: &'a [f64], weights: &[f64]) -> Prefix<'a> {
        let mut w = Vec::with_capacity(points.len() + 1);
        let mut wx = Vec::with_capacity(points.len() + 1);
        let (mut sw, mut swx) = (0.0, 0.0);
        w.push(0.0);
        wx.push(0.0);
        for (&x, &wt) in points.iter().zip(weights) {
            sw += wt;
            swx += wt * x;
            w.push(sw);
            wx.push(swx);
        }
        Prefix { points, w, wx }
    }

    /// End (exclusive) of each cell's run of points: cell j holds the points
    /// in (t_{j−1}, t_j], a point on a boundary going to the lower cell.
    fn cell_ends(&self, boundaries: &[f64]) -> Vec<usize> {
        let mut ends: Vec<usize> = boundaries
            .iter()
            .map(|&t| self.points.partition_point(|&x| x <= t))
            .collect();
        ends.push(self.points.len());
        ends
    }

    /// Replaces each level by the weighted mean of its run of points; a cell
    /// without weight keeps its level. The mean is clamped to the run's range
    /// so rounding can neither reorder levels nor leave the cell.
    fn update_levels(&self, ends: &[usize], levels: &mut [f64]) {
        let mut start = 0;
        for (y, &end) in levels.iter_mut().zip(ends) {
            let w = self.w[end] - self.w[start];
            if end > start && w > 0.0 {
                let mean = (self.wx[end] - self.wx[start]) / w;
                *y = mean.clamp(self.points[start], self.points[end - 1]);
            }
            start = end;
        }
    }
}

/// Weighted mean squared error of reproducing each point by its nearest level
/// (ascending `levels`, ties to the lower one); 0 if the total weight is 0.
pub(crate) fn weighted_mse(points: &[f64], weights: &[f64], levels: &[f64]) -> f64 {
    let q = Quantizer::from_levels(levels.to_vec(), 0.0);
    let (mut num, mut den) = (0.0, 0.0);
    for (&x, &w) in points.iter().zip(weights) {
        let d = x - levels[usize::from(q.encode_one(x))];
        num += w * d * d;
        den += w;
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

/// Refines the codebook `init_levels` on the sample of ascending `points`
/// (bin centroids) with non-negative `weights` (bin counts) by at most
/// `max_iter` Lloyd sweeps (assign to the nearest level, move each level to
/// its cell's weighted mean). Stops early at the exact fixed point (no point
/// changes cell). The objective never increases; levels stay ascending; a
/// level whose cell is empty stays where it is. Deterministic.
/// `mse` is the weighted mean squared error on the sample.
///
/// # Panics
/// If `points` and `weights` differ in length, `points` is not ascending,
/// a weight is negative or not finite, or `init_levels` is empty, longer than
/// 256 or not ascending.
pub fn lloyd_weighted(
    points: &[f64],
    weights: &[f64],
    init_levels: &[f64],
    max_iter: usize,
) -> Quantizer {
    let levels = sweeps(points, weights, init_levels, max_iter, false);
    let mse = weighted_mse(points, weights, &levels);
    Quantizer::from_levels(levels, mse)
}

/// [`lloyd_weighted`] with the first and last level held where `init_levels`
/// puts them: the other levels move to their cells' weighted means, the end
/// levels stay (a codebook that must reproduce the extremes exactly). The
/// objective never increases: each sweep is optimal for the free levels
/// given the cells, and the midpoints are optimal cells given all levels.
///
/// # Panics
/// As [`lloyd_weighted`].
pub fn lloyd_pinned(
    points: &[f64],
    weights: &[f64],
    init_levels: &[f64],
    max_iter: usize,
) -> Vec<f64> {
    sweeps(points, weights, init_levels, max_iter, true)
}

/// Lloyd sweeps until no point changes cell or `max_iter`; with `pin`, the
/// end levels stay where `init_levels` puts them (a free level's cell mean
/// lies between them; the clamp only guards rounding).
fn sweeps(
    points: &[f64],
    weights: &[f64],
    init_levels: &[f64],
    max_iter: usize,
    pin: bool,
) -> Vec<f64> {
    check_inputs(points, weights, init_levels);
    let prefix = Prefix::new(points, weights);
    let mut levels = init_levels.to_vec();
    let n = levels.len();
    let (first, last) = (levels[0], levels[n - 1]);
    let mut previous: Option<Vec<usize>> = None;
    for _ in 0..max_iter {
        let ends = prefix.cell_ends(&midpoints(&levels));
        if previous.as_ref() == Some(&ends) {
            break;
        }
        prefix.update_levels(&ends, &mut levels);
        if pin {
            levels[0] = first;
            levels[n - 1] = last;
            for y in &mut levels[1..n - 1] {
                *y = y.clamp(first, last);
            }
        }
        previous = Some(ends);
    }
    levels
}

fn check_inputs(points: &[f64], weights: &[f64], levels: &[f64]) {
    assert_eq!(
        points.len(),
        weights.len(),
        "points and weights differ in length"
    );
    assert!(
        points.windows(2).all(|w| w[0] <= w[1]),
        "points must be ascending"
    );
    assert!(
        weights.iter().all(|&w| w >= 0.0 && w.is_finite()),
        "weights must be finite and non-negative"
    );
    assert!((1..=256).contains(&levels.len()), "need 1..=256 levels");
    assert!(
        levels.windows(2).all(|w| w[0] <= w[1]),
        "levels must be ascending"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;
    use crate::solve::{lloyd_max, partial_moments};
    use proptest::prelude::*;

    fn sorted_sample() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, Vec<f64>)> {
        (
            proptest::collection::vec((-1.0f64..1.0, 0.0f64..50.0), 1..300),
            proptest::collection::vec(-1.2f64..1.2, 1..20),
        )
            .prop_map(|(mut pw, mut lv)| {
                pw.sort_by(|a, b| a.0.total_cmp(&b.0));
                lv.sort_by(f64::total_cmp);
                let (p, w) = pw.into_iter().unzip();
                (p, w, lv)
            })
    }

    #[test]
    fn two_clusters_two_levels() {
        let points = [-1.0, -0.8, 0.5, 0.7, 0.9];
        let weights = [1.0, 3.0, 1.0, 1.0, 2.0];
        let q = lloyd_weighted(&points, &weights, &[-0.1, 0.1], 50);
        assert!((q.levels[0] - (-0.85)).abs() < 1e-15, "{q:?}");
        assert!((q.levels[1] - 0.75).abs() < 1e-15, "{q:?}");
        let want = (0.15f64.powi(2)
            + 3.0 * 0.05f64.powi(2)
            + 0.25f64.powi(2)
            + 0.05f64.powi(2)
            + 2.0 * 0.15f64.powi(2))
            / 8.0;
        assert!((q.mse - want).abs() < 1e-15, "{}", q.mse);
    }

    #[test]
    fn empty_cells_keep_their_level() {
        let q = lloyd_weighted(
            &[0.0, 0.1, 0.2],
            &[1.0, 1.0, 1.0],
            &[-5.0, 0.05, 0.15, 7.0],
            100,
        );
        assert_eq!(q.levels[0], -5.0);
        assert_eq!(q.levels[3], 7.0);
        assert!(q.levels.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn pinned_ends_stay_and_the_error_does_not_grow() {
        let points: Vec<f64> = (0..200).map(|i| -0.9 + 0.009 * i as f64).collect();
        let weights: Vec<f64> = points.iter().map(|p| (-8.0 * p * p).exp()).collect();
        let init = [-1.0, -0.5, 0.0, 0.5, 1.0];
        let pinned = lloyd_pinned(&points, &weights, &init, 100);
        assert_eq!((pinned[0], pinned[4]), (-1.0, 1.0));
        let free = lloyd_weighted(&points, &weights, &init, 100).levels;
        assert!(free[0] > -0.9 && free[4] < 0.9, "{free:?}");
        let mse = |l: &[f64]| weighted_mse(&points, &weights, l);
        assert!(mse(&pinned) < mse(&init), "{pinned:?}");
        assert!(pinned.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn zero_iterations_only_evaluate() {
        let q = lloyd_weighted(&[0.0, 1.0], &[1.0, 1.0], &[0.25, 0.5], 0);
        assert_eq!(q.levels, vec![0.25, 0.5]);
        assert!((q.mse - (0.0625 + 0.25) / 2.0).abs() < 1e-15);
    }

    /// A fine discretization of N(0, 1) (points = bin conditional means,
    /// weights = bin probabilities) keeps the Lloyd–Max levels nearly fixed.
    #[test]
    fn discretized_gaussian_stays_at_lloyd_max() {
        // Bins of 2.5e-4: a boundary snaps to a bin edge, moving levels by ~1e-4.
        let edges: Vec<f64> = (0..=64_000).map(|i| -8.0 + i as f64 * 2.5e-4).collect();
        let (mut points, mut weights) = (Vec::new(), Vec::new());
        for e in edges.windows(2) {
            let m = partial_moments(Family::Gaussian, e[0], e[1]);
            points.push(m.m1 / m.p);
            weights.push(m.p);
        }
        let lm = lloyd_max(Family::Gaussian, 3).unwrap();
        let q = lloyd_weighted(&points, &weights, &lm.levels, 1000);
        for (a, b) in q.levels.iter().zip(&lm.levels) {
            assert!((a - b).abs() < 2e-4, "{a} vs {b}");
        }
        assert!((q.mse / lm.mse - 1.0).abs() < 1e-3);
    }

    proptest! {
        #[test]
        fn objective_never_increases((p, w, lv) in sorted_sample()) {
            let mut prev = f64::INFINITY;
            for k in 0..25 {
                let q = lloyd_weighted(&p, &w, &lv, k);
                prop_assert!(q.mse <= prev * (1.0 + 1e-12) + 1e-300, "iter {k}: {} > {prev}", q.mse);
                prop_assert!(q.levels.windows(2).all(|x| x[0] <= x[1]));
                prev = q.mse;
            }
        }

        #[test]
        fn converged_levels_are_cell_means((p, w, lv) in sorted_sample()) {
            let q = lloyd_weighted(&p, &w, &lv, 10_000);
            prop_assert_eq!(q.boundaries.clone(), midpoints(&q.levels));
            let n = q.levels.len();
            let (mut sw, mut swx) = (vec![0.0; n], vec![0.0; n]);
            for (&x, &wt) in p.iter().zip(&w) {
                let i = usize::from(q.encode_one(x));
                sw[i] += wt;
                swx[i] += wt * x;
            }
            for i in 0..n {
                if sw[i] > 0.0 {
                    prop_assert!((swx[i] / sw[i] - q.levels[i]).abs() < 1e-12, "cell {i}");
                }
            }
        }
    }
}
