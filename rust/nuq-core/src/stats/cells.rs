//! The exact KS terms of a gathered run (the values of one histogram bucket:
//! a few hundred, unsorted) without sorting it. A counting pass on a grid
//! over the run's own `[min, max]` puts the values in cells, and as the cell
//! index is monotone in the value, each cell holds known order statistics
//! between known edges: it is bounded like a run of the layout, by the cdf
//! at its edges. Only the cells that can reach the floor are sorted (a dozen
//! values) and their terms computed: about one cdf evaluation per 16 values
//! and no comparison sort, whose mispredicted branches cost more than the
//! rest of the work.

use super::approx_cdf::{ApproxCdf, APPROX_ERR};
use super::bounds::rank_bounds;
use super::grid::Grid;
use super::ks::{ks_sorted, ks_sorted_above, Fitted, SLACK};
use super::source::Value;

/// Runs shorter than this are sorted outright.
const MIN_LEN: usize = 64;
/// Values per cell on average.
const PER_CELL: usize = 16;

/// Buffers reused across the runs [`run_terms`] is called on.
#[derive(Default)]
pub(crate) struct CellScratch<V> {
    cell: Vec<u32>,
    ends: Vec<u32>,
    sorted: Vec<bool>,
    out: Vec<V>,
    /// Per non-empty cell: (cell, upper bound of its terms).
    bounds: Vec<(usize, f64)>,
}

/// For each fit, the largest term of `run` (order statistics `offset + 1
/// ..= offset + run.len()` of `n`, in any order, all finite) that can reach
/// its `floor`, a lower bound of D: as [`ks_sorted_above`] on the sorted
/// run, the term attaining D is found whenever it lies in `run`, and what is
/// returned is always a term. `run` may be reordered.
pub(crate) fn run_terms<V: Value>(
    run: &mut [V],
    offset: usize,
    n: usize,
    fits: &[Fitted],
    floors: &[f64],
    s: &mut CellScratch<V>,
) -> Vec<f64> {
    let (lo, hi) = run.iter().fold((V::HIGHEST, V::LOWEST), |(a, b), &x| {
        (a.min_v(x), b.max_v(x))
    });
    let span = hi.to_f64() - lo.to_f64();
    if run.len() < MIN_LEN || !(span > 0.0 && span.is_finite()) {
        run.sort_unstable_by(V::total_order);
        return fits
            .iter()
            .zip(floors)
            .map(|(f, &floor)| ks_sorted_above(run, offset, n, f, floor))
            .collect();
    }
    let grid = Grid::new(
        lo.to_f64(),
        hi.to_f64(),
        (run.len() / PER_CELL).next_power_of_two(),
    );
    s.arrange(run, &grid);
    let nf = n as f64;
    fits.iter()
        .zip(floors)
        .map(|(fit, &floor)| {
            // The cdf of a cell's values is within `widen` of the cdf at
            // its edges (densities peak below 0.5 / scale; doubled), and
            // the table's within `APPROX_ERR` of that.
            let widen = grid.guard() / fit.scale + APPROX_ERR;
            let approx = ApproxCdf::new(fit.family);
            // Every non-empty cell's upper bound, and the largest lower.
            s.bounds.clear();
            let mut floor = floor;
            // The cdf at the last upper edge computed: (edge index, value).
            let mut known = (usize::MAX, 0.0);
            let mut begin = 0;
            for c in 0..grid.nb {
                let end = s.ends[c] as usize;
                if end == begin {
                    continue;
                }
                let f_lo = if known.0 == c {
                    known.1
                } else {
                    fit.approx_cdf(approx, grid.edge(c))
                } - widen;
                let f_hi = fit.approx_cdf(approx, grid.edge(c + 1));
                known = (c + 1, f_hi);
                let f_hi = f_hi + widen;
                let (lower, upper) = rank_bounds(offset + begin, offset + end, nf, f_lo, f_hi);
                floor = floor.max(lower);
                s.bounds.push((c, upper));
                begin = end;
            }
            let mut best = 0.0f64;
            for &(c, upper) in &s.bounds {
                if upper + SLACK > floor.max(best) {
                    let begin = if c == 0 { 0 } else { s.ends[c - 1] as usize };
                    let end = s.ends[c] as usize;
                    let cell = &mut s.out[begin..end];
                    if !s.sorted[c] {
                        cell.sort_unstable_by(V::total_order);
                        s.sorted[c] = true;
                    }
                    best = best.max(ks_sorted(cell, offset + begin, n, fit));
                }
            }
            best
        })
        .collect()
}

impl<V: Value> CellScratch<V> {
    /// `out`: the values of `run` grouped by cell, in cell order; `ends[c]`:
    /// the end of cell `c` in `out`; no cell sorted yet.
    fn arrange(&mut self, run: &[V], grid: &Grid) {
        let CellScratch {
            cell,
            ends,
            sorted,
            out,
            ..
        } = self;
        cell.clear();
        cell.extend(run.iter().map(|x| grid.index(x.to_f64()) as u32));
        // Counts shifted by one, summed: the start of each cell.
        ends.clear();
        ends.resize(grid.nb + 1, 0);
        for &c in cell.iter() {
            ends[c as usize + 1] += 1;
        }
        for k in 1..ends.len() {
            ends[k] += ends[k - 1];
        }
        out.clear();
        out.resize(run.len(), run[0]);
        // Placing a value advances its cell's start: each ends up at the end.
        for (&c, &x) in cell.iter().zip(run) {
            out[ends[c as usize] as usize] = x;
            ends[c as usize] += 1;
        }
        sorted.clear();
        sorted.resize(grid.nb, false);
    }
}

#[cfg(test)]
mod tests {
    use super::super::ks::ks_sorted;
    use super::*;
    use crate::Family;
    use proptest::prelude::*;

    const FITS: [Fitted; 2] = [
        Fitted {
            family: Family::Gaussian,
            loc: 0.1,
            scale: 0.7,
        },
        Fitted {
            family: Family::Laplace,
            loc: -0.05,
            scale: 0.4,
        },
    ];

    /// `run` as a piece of a sample of `n` (order statistics from
    /// `offset + 1`): the largest term with every floor from 0 to above D
    /// is the sorted piece's largest term (or, above it, a term no larger).
    fn check(run: &[f32], offset: usize, n: usize) {
        let mut sorted = run.to_vec();
        sorted.sort_unstable_by(f32::total_cmp);
        let mut s = CellScratch::default();
        for fit in &FITS {
            let d = ks_sorted(&sorted, offset, n, fit);
            for floor in [0.0, d / 2.0, d - 1e-9, d] {
                let mut v = run.to_vec();
                let got = run_terms(
                    &mut v,
                    offset,
                    n,
                    std::slice::from_ref(fit),
                    &[floor],
                    &mut s,
                );
                assert_eq!(got, [d], "floor {floor}");
            }
            let mut v = run.to_vec();
            let above = run_terms(&mut v, offset, n, std::slice::from_ref(fit), &[1.0], &mut s);
            assert!(above[0] <= d);
        }
    }

    #[test]
    fn terms_of_smooth_tied_and_clumped_runs() {
        // Smooth, as gathered from one bucket.
        let smooth: Vec<f32> = (0..300)
            .map(|i| 0.2 + ((i * 7919) % 300) as f32 * 1e-4)
            .collect();
        check(&smooth, 1000, 5000);
        // Ties and signed zeros.
        let mut tied: Vec<f32> = (0..400).map(|i| ((i * 37) % 5) as f32 * 0.125).collect();
        tied.extend([0.0, -0.0, -0.0, 0.0]);
        check(&tied, 0, 404);
        // One far value: all others land in the first cell.
        let mut far: Vec<f32> = (0..200).map(|i| (i % 13) as f32 * 1e-3).collect();
        far.push(30.0);
        check(&far, 77, 1000);
        // All equal.
        check(&[0.25; 100], 10, 200);
    }

    proptest! {
        #[test]
        fn equals_the_sorted_terms(
            run in prop::collection::vec(
                prop_oneof![
                    -2.0f32..2.0,
                    (-4i32..4).prop_map(|k| k as f32 * 0.25),
                    Just(-0.0f32),
                ],
                1..600,
            ),
            before in 0usize..2000,
            after in 0usize..2000,
        ) {
            check(&run, before, before + run.len() + after);
        }
    }
}
