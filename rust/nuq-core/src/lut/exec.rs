//! Where the tasks of one call run: as Rayon tasks on the current pool, or
//! one after the other on the calling thread without any Rayon call.
//!
//! | [`Exec`]   | tasks run                           | chosen for                          |
//! |------------|-------------------------------------|-------------------------------------|
//! | `Serial`   | in task order on the calling thread | fewer than [`SERIAL_WORK`] mult-adds |
//! | `Rayon`    | on the pool the call runs in        | everything else                     |
//!
//! A serial call makes no Rayon call at all, so it may run on any thread: a
//! parallel iterator outside `ThreadPool::install` would run on Rayon's
//! global pool instead, which is why the drivers go through the helpers here
//! rather than calling Rayon directly. The tasks and what each one computes
//! are the same either way (every output element is written by one task in
//! a fixed order), so both give bit-identical results.

use rayon::prelude::*;

use super::ConvShape;
use crate::weights::PackedWeights;

/// Multiply-adds below which a call runs serially on the calling thread.
///
/// Handing a call to a pool from a thread outside it (queue the job, wake the
/// workers, wait on a latch) is a fixed cost per call, while below `2^18`
/// multiply-adds the drivers have few tasks to spread (decode: 16 weight rows
/// per task, so a 64 x 64 layer at `m = 1` is 4; the prefill drivers: one
/// chunk of rows of `x` and a few tiles of weight rows) over work that is
/// small against that cost. `benches/bench_matmul.py --overhead --sizes ...`
/// measures both sides of the threshold.
pub const SERIAL_WORK: usize = 1 << 18;

/// Where the tasks of one call run (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exec {
    /// In task order on the calling thread, with no Rayon call.
    Serial,
    /// As Rayon tasks on the current pool (Rayon's global pool outside any
    /// `ThreadPool::install`).
    Rayon,
}

impl Exec {
    /// `Serial` for fewer than `threshold` multiply-adds, else `Rayon`.
    pub fn for_work(work: usize, threshold: usize) -> Self {
        if work < threshold {
            Exec::Serial
        } else {
            Exec::Rayon
        }
    }

    /// The choice of [`super::linear`] for `m` rows of `x` against `w`:
    /// [`Exec::for_work`] of `m · rows · cols` against [`SERIAL_WORK`].
    pub fn for_linear(m: usize, w: &PackedWeights) -> Self {
        let work = m.saturating_mul(w.rows).saturating_mul(w.cols);
        Self::for_work(work, SERIAL_WORK)
    }

    /// The choice of [`super::conv2d`] for `shape` and `w`: [`Exec::for_work`]
    /// of `batch · out_h · out_w · rows · cols` (an invalid geometry does no
    /// work) against [`SERIAL_WORK`].
    pub fn for_conv(shape: &ConvShape, w: &PackedWeights) -> Self {
        let [oh, ow] = shape.output_size().unwrap_or([0, 0]);
        let work = [oh, ow, w.rows, w.cols]
            .iter()
            .fold(shape.batch, |a, &b| a.saturating_mul(b));
        Self::for_work(work, SERIAL_WORK)
    }

    /// `f(state, i, chunk)` for every `size`-long chunk `i` of `data` (the
    /// last may be shorter), with one `init()` state per Rayon job.
    pub(crate) fn chunks<T, S, I, F>(self, data: &mut [T], size: usize, init: I, f: F)
    where
        T: Send,
        I: Fn() -> S + Sync + Send,
        F: Fn(&mut S, usize, &mut [T]) + Sync + Send,
    {
        let size = size.max(1);
        match self {
            Exec::Serial => {
                let mut state = init();
                for (i, chunk) in data.chunks_mut(size).enumerate() {
                    f(&mut state, i, chunk);
                }
            }
            Exec::Rayon => data
                .par_chunks_mut(size)
                .enumerate()
                .for_each_init(init, |s, (i, chunk)| f(s, i, chunk)),
        }
    }

    /// `[f(state, 0), .., f(state, n - 1)]`, with one `init()` state per
    /// Rayon job.
    pub(crate) fn map<R, S, I, F>(self, n: usize, init: I, f: F) -> Vec<R>
    where
        R: Send,
        I: Fn() -> S + Sync + Send,
        F: Fn(&mut S, usize) -> R + Sync + Send,
    {
        match self {
            Exec::Serial => {
                let mut state = init();
                (0..n).map(|i| f(&mut state, i)).collect()
            }
            Exec::Rayon => (0..n).into_par_iter().map_init(init, f).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_splits_by_work() {
        assert_eq!(Exec::for_work(9, 10), Exec::Serial);
        assert_eq!(Exec::for_work(10, 10), Exec::Rayon);
        assert_eq!(Exec::for_work(usize::MAX, SERIAL_WORK), Exec::Rayon);
        let w = PackedWeights {
            rows: 1 << 9,
            cols: 1 << 9,
            bits: 4,
            packed: &[],
            levels: &[],
            loc: &[],
            scale: &[],
            group_size: None,
        };
        assert_eq!(Exec::for_linear(0, &w), Exec::Serial);
        assert_eq!(Exec::for_linear(1, &w), Exec::Rayon);
        let narrow = PackedWeights { cols: 1 << 8, ..w };
        assert_eq!(Exec::for_linear(1, &narrow), Exec::Serial);
        assert_eq!(Exec::for_linear(usize::MAX, &w), Exec::Rayon);
    }

    #[test]
    fn serial_and_rayon_visit_the_same_tasks() {
        for exec in [Exec::Serial, Exec::Rayon] {
            let mut data: Vec<usize> = vec![0; 10];
            exec.chunks(&mut data, 3, || (), |_, i, c| c.fill(i * 10 + c.len()));
            assert_eq!(data, [3, 3, 3, 13, 13, 13, 23, 23, 23, 31]);
            assert_eq!(exec.map(4, || 1, |s, i| i * *s), [0, 1, 2, 3]);
        }
    }

    #[test]
    fn serial_runs_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let mut data = vec![0u8; 64];
        Exec::Serial.chunks(
            &mut data,
            1,
            || (),
            |_, _, _| {
                assert_eq!(std::thread::current().id(), caller);
                assert!(rayon::current_thread_index().is_none());
            },
        );
    }
}
