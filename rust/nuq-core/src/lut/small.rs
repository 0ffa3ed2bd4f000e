//! Decode driver (`m <= 16`): memory-bound, so the work is split over output
//! rows and each weight row is streamed once for the whole batch of `x`.

use rayon::prelude::*;

use super::kernel::Isa;
use crate::weights::PackedWeights;

/// Weight rows per Rayon task: enough to amortize scheduling, small enough to
/// balance N = a few hundred rows over the cores.
const ROWS_PER_TASK: usize = 8;

/// Fills `y_t` (`[N, m]`) with the offset-free dot products of every weight row.
pub(crate) fn run(isa: Isa, x: &[f32], m: usize, w: &PackedWeights, y_t: &mut [f32]) {
    y_t.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (t, out) in chunk.chunks_mut(m).enumerate() {
                isa.dot_rows(w, task * ROWS_PER_TASK + t, x, out);
            }
        });
}
