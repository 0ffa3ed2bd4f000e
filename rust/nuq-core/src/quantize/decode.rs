//! Decoding packed weights back to f32, row-parallel, with the SIMD row
//! decoder of the LUT kernels.

use rayon::prelude::*;

use crate::error::{NuqError, Result};
use crate::lut::{decode_row, Kernel};
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
    let kernel = Kernel::detect();
    out.par_chunks_mut(w.cols)
        .enumerate()
        .for_each(|(r, row)| decode_row(kernel, w, r, row));
    Ok(())
}
