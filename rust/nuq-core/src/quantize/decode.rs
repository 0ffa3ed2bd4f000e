//! Decoding packed weights back to f32, row-parallel.

use rayon::prelude::*;

use crate::encode::decode;
use crate::error::{NuqError, Result};
use crate::pack::unpack;
use crate::weights::PackedWeights;

/// Writes the decoded `rows x cols` matrix into `out` (row-major).
pub fn dequantize(w: &PackedWeights, out: &mut [f32]) -> Result<()> {
    w.validate()?;
    if out.len() != w.rows * w.cols {
        return Err(NuqError::LengthMismatch {
            what: "dequantize output",
            expected: w.rows * w.cols,
            actual: out.len(),
        });
    }
    if out.is_empty() {
        return Ok(());
    }
    let row_bytes = w.row_bytes();
    out.par_chunks_mut(w.cols)
        .zip(w.packed.par_chunks(row_bytes))
        .enumerate()
        .try_for_each_init(
            || vec![0u8; w.cols],
            |codes, (r, (row, bytes))| {
                unpack(bytes, w.bits, codes);
                decode(codes, w.levels, row)?;
                apply_affine(row, w.loc_of(r), w.scales_of(r), w.scale_span());
                Ok(())
            },
        )
}

/// `row[j] = loc + scale_{j / span} * row[j]`, where `row` holds the levels.
fn apply_affine(row: &mut [f32], loc: f32, scales: &[f32], span: usize) {
    for (chunk, &s) in row.chunks_mut(span).zip(scales) {
        for v in chunk {
            *v = loc + s * *v;
        }
    }
}
