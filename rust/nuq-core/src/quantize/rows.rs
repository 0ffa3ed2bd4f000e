//! Encoding, packing and error measurement of all rows, in parallel and with
//! a reduction order that does not depend on the thread count.

use rayon::prelude::*;

use super::rows_per_task;
use super::simd::span_error;
use crate::encode::Encoder;
use crate::pack::{pack, packed_len};

/// What encoding a tensor produced.
pub(super) struct Encoded {
    pub packed: Vec<u8>,
    pub sse: f64,
}

/// The codebook and how rows are split into spans sharing one (loc, scale).
pub(super) struct Codebook<'a> {
    pub bits: u32,
    pub levels: &'a [f32],
    pub boundaries: &'a [f32],
    /// Columns per (loc, scale) span: `cols` for tensor/channel, `g` for groups.
    pub span: usize,
}

/// Encodes each span `s` of row `r` against `loc + scale * boundaries`, where
/// `params(r, s)` gives `(loc, scale)`, packs the codes row by row and sums the
/// squared errors.
pub(super) fn encode_rows<P>(
    x: &[f32],
    rows: usize,
    cols: usize,
    book: &Codebook,
    params: P,
) -> Encoded
where
    P: Fn(usize, usize) -> (f32, f32) + Sync,
{
    let row_bytes = packed_len(cols, book.bits);
    let mut packed = vec![0u8; rows * row_bytes];
    if rows * cols == 0 {
        return Encoded { packed, sse: 0.0 };
    }
    let encoder = Encoder::new(book.boundaries);
    // Indexed by a u8 code: no bounds check in the error loop.
    let mut table = [0.0f32; 256];
    table[..book.levels.len()].copy_from_slice(book.levels);
    let task_rows = rows_per_task(cols);
    let sums: Vec<f64> = packed
        .par_chunks_mut(task_rows * row_bytes)
        .zip(x.par_chunks(task_rows * cols))
        .enumerate()
        .map(|(task, (out, data))| {
            let mut codes = vec![0u8; cols];
            let mut acc = 0.0;
            for (i, (row_out, row)) in out.chunks_mut(row_bytes).zip(data.chunks(cols)).enumerate()
            {
                let r = task * task_rows + i;
                acc += encode_row(row, &mut codes, &encoder, &table, book, |s| params(r, s));
                pack(&codes, book.bits, row_out);
            }
            acc
        })
        .collect();
    let sse = sums.iter().sum();
    Encoded { packed, sse }
}

/// Encodes one row span by span; returns its squared error.
fn encode_row(
    row: &[f32],
    codes: &mut [u8],
    encoder: &Encoder,
    table: &[f32; 256],
    book: &Codebook,
    params: impl Fn(usize) -> (f32, f32),
) -> f64 {
    let levels = book.levels.len();
    let mut sse = 0.0f64;
    for (s, (xs, cs)) in row
        .chunks(book.span)
        .zip(codes.chunks_mut(book.span))
        .enumerate()
    {
        let (loc, scale) = params(s);
        let mul = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        encoder.encode(xs, loc, mul, cs);
        sse += span_error(encoder.kernel(), xs, cs, loc, scale, table, levels);
    }
    sse
}
