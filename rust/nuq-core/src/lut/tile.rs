//! Prefill driver (`m > 16`): compute-bound, so a tile of W is decoded once into
//! an f32 buffer that stays in cache and a register-blocked kernel runs every
//! row of `x` against it. Tasks own disjoint tiles of output rows.

use rayon::prelude::*;

use super::kernel::{Isa, TileArgs};
use crate::weights::PackedWeights;

/// Weight rows per tile (and per Rayon task).
pub(crate) const TILE_N: usize = 32;
/// Columns per tile: `TILE_N * TILE_K` floats = 64 KiB, an L2-resident buffer.
pub(crate) const TILE_K: usize = 512;

/// Fills `y_t` (`[N, m]`) with the offset-free dot products of every weight row.
pub(crate) fn run(isa: Isa, x: &[f32], m: usize, w: &PackedWeights, y_t: &mut [f32]) {
    y_t.par_chunks_mut(TILE_N * m).enumerate().for_each_init(
        || vec![0.0f32; TILE_N * TILE_K],
        |tile, (task, out)| {
            out.fill(0.0);
            let r0 = task * TILE_N;
            let rows = out.len() / m;
            for k0 in (0..w.cols).step_by(TILE_K) {
                let klen = TILE_K.min(w.cols - k0);
                for t in 0..rows {
                    let dst = &mut tile[t * TILE_K..t * TILE_K + klen];
                    isa.decode_row(w, r0 + t, k0, dst);
                }
                let args = TileArgs {
                    x,
                    m,
                    k: w.cols,
                    k0,
                    klen,
                    tile,
                    rows,
                    ld: TILE_K,
                };
                isa.gemm_tile(&args, out);
            }
        },
    );
}
