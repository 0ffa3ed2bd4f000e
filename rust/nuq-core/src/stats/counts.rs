//! The counting pass of a top-level histogram: per-thread `u32` counters,
//! merged exactly (integer adds, any order), in passes short enough that
//! no counter can overflow. Counter tables are recycled per thread, as a
//! fresh table is memory to fault in anew.

use super::grid::{Grid, MAX_BUCKETS};
use super::parts::fold_parts;
use super::simd::count_range;
use super::source::Source;

/// Per-pass element limit so that the `u32` bucket counts cannot overflow.
pub(crate) const BLOCK: usize = 1 << 31;

/// Counts per grid bucket: per-thread `u32` counters merged exactly, in
/// passes of at most `BLOCK` elements so they cannot overflow.
pub(crate) fn count_histogram<S: Source>(src: &S, grid: &Grid) -> Vec<usize> {
    let n = src.len();
    let mut totals = vec![0usize; grid.nb];
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let counts = fold_parts(
            end - start,
            || zeroed_table(grid.nb),
            |mut h, r| {
                count_range(src, start + r.start..start + r.end, grid, &mut h);
                h
            },
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                recycle_table(b);
                a
            },
        );
        totals
            .iter_mut()
            .zip(&counts)
            .for_each(|(t, &c)| *t += c as usize);
        recycle_table(counts);
    }
    totals
}

/// Count tables kept per thread for reuse, at most this many.
const KEPT_TABLES: usize = 4;

thread_local! {
    static TABLES: std::cell::RefCell<Vec<Vec<u32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `n` zeroed counters, in a table this thread recycled if it has one. A
/// fresh table of 2^16 counters (256 KiB) is memory the allocator often
/// maps anew, and faults in page by page: in a Python process, 250-600
/// page faults per 768x768 channel statistic (a fifth to a third of its
/// time), varying from process to process with the allocator's state.
fn zeroed_table(n: usize) -> Vec<u32> {
    match TABLES.with(|t| t.borrow_mut().pop()) {
        Some(mut table) => {
            table.clear();
            table.resize(n, 0);
            table
        }
        None => vec![0; n],
    }
}

/// Keeps `table` for [`zeroed_table`] on this thread (up to
/// [`KEPT_TABLES`] of them; tables above 2^17 counters are freed).
fn recycle_table(table: Vec<u32>) {
    if table.capacity() <= 2 * MAX_BUCKETS {
        TABLES.with(|t| {
            let mut t = t.borrow_mut();
            if t.len() < KEPT_TABLES {
                t.push(table);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recycled table comes back zeroed, at the size asked for; at most
    /// `KEPT_TABLES` are kept, and oversized ones not at all.
    #[test]
    fn recycled_tables_come_back_zeroed() {
        let kept = || TABLES.with(|t| t.borrow().len());
        let before = kept();
        let mut dirty = zeroed_table(100);
        dirty.iter_mut().for_each(|c| *c = 7);
        recycle_table(dirty);
        assert_eq!(kept(), (before + 1).min(KEPT_TABLES));
        assert_eq!(zeroed_table(300), vec![0u32; 300]);
        recycle_table(vec![1; 4 * MAX_BUCKETS]);
        for _ in 0..2 * KEPT_TABLES {
            recycle_table(vec![5; 10]);
        }
        assert_eq!(kept(), KEPT_TABLES);
        for _ in 0..KEPT_TABLES {
            assert_eq!(zeroed_table(20), vec![0u32; 20]);
        }
    }
}
