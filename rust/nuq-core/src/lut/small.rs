//! Decode driver (`m <= 16`): memory-bound, so the work is split over output
//! rows and each weight row is streamed once for the whole batch of `x`.
//! Widths 1..=4 with chunk-aligned scale segments use the phase-split decode
//! (`phased`), which needs `x` permuted once per call.

use super::exec::Exec;
use super::kernel::Isa;
use super::phased::Layout;
use crate::weights::PackedWeights;

/// Weight rows per Rayon task: enough to amortize scheduling, small enough to
/// balance N = a few hundred rows over the cores.
const ROWS_PER_TASK: usize = 16;

/// Fills `y_t` (`[N, m]`) with the offset-free dot products of every weight row.
pub(crate) fn run(
    (exec, isa): (Exec, Isa),
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    y_t: &mut [f32],
) {
    let layout = isa
        .phased_lanes()
        .and_then(|lanes| Layout::new(lanes, w.bits, w.cols, w.group_size));
    let xp = layout.map(|l| l.permute_x(x, w.cols));
    exec.chunks(
        y_t,
        ROWS_PER_TASK * m,
        || (),
        |_, task, chunk| {
            let r0 = task * ROWS_PER_TASK;
            match &xp {
                Some(xp) => isa.dot_rows_phased(w, r0, (x, xp.as_slice(), m), chunk),
                None => {
                    for (t, out) in chunk.chunks_mut(m).enumerate() {
                        isa.dot_rows(w, r0 + t, x, out);
                    }
                }
            }
        },
    );
}
