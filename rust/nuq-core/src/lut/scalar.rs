//! Portable kernels: the straightforward reference, and scalar versions of the
//! three primitives (used when no SIMD path applies, and for head/tail codes
//! of the SIMD paths).

use super::kernel::PanelArgs;
use super::tile::TILE_K;
use crate::weights::PackedWeights;

/// Little-endian `u64` from `bytes[off..off + 8]`, zero-padded past the end.
/// SIMD decoders read whole code chunks with it without ever over-reading.
#[inline(always)]
pub(crate) fn load_le_u64(bytes: &[u8], off: usize) -> u64 {
    match bytes.get(off..off + 8) {
        Some(b) => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
        None => {
            let mut buf = [0u8; 8];
            let tail = bytes.get(off..).unwrap_or(&[]);
            buf[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(buf)
        }
    }
}

/// Code `j` of a packed row (layout: `crate::pack`).
#[inline(always)]
pub(crate) fn code_at(row: &[u8], j: usize, bits: u32) -> usize {
    let bit = j * bits as usize;
    let lo = u16::from(row[bit / 8]);
    let hi = row.get(bit / 8 + 1).map_or(0, |&b| u16::from(b));
    usize::from(((lo | hi << 8) >> (bit % 8)) & ((1 << bits) - 1))
}

/// The codebook zero-padded to 32 entries, so SIMD paths can load whole
/// registers whatever the width.
pub(crate) fn padded_levels(levels: &[f32]) -> [f32; 32] {
    let mut t = [0.0f32; 32];
    let n = levels.len().min(32);
    t[..n].copy_from_slice(&levels[..n]);
    t
}

/// Splits `start..end` into a scalar head, whole `lanes`-code chunks starting
/// at a multiple of 8 codes (byte-aligned for every width), and a scalar tail:
/// returns the chunk span `(vec_start, vec_end)`.
pub(crate) fn vector_span(start: usize, end: usize, lanes: usize) -> (usize, usize) {
    let vec_start = start.next_multiple_of(8).min(end);
    (vec_start, vec_start + (end - vec_start) / lanes * lanes)
}

/// Rows `i0..i0 + MR` of the row-major `[_, k]` matrix `x`.
pub(crate) fn x_rows<const MR: usize>(x: &[f32], k: usize, i0: usize) -> [&[f32]; MR] {
    core::array::from_fn(|a| &x[(i0 + a) * k..(i0 + a + 1) * k])
}

/// Rows of `x` handled together so each code is decoded once per block.
const BLOCK: usize = 16;

/// Scalar [`super::kernel::Isa::dot_rows`]: per-segment sums of `x · level`,
/// scaled once per segment.
pub(crate) fn dot_rows(w: &PackedWeights, r: usize, x: &[f32], out: &mut [f32]) {
    let (k, row) = (w.cols, w.row(r));
    for (blk, out_blk) in out.chunks_mut(BLOCK).enumerate() {
        let xs = &x[blk * BLOCK * k..(blk * BLOCK + out_blk.len()) * k];
        let mut total = [0.0f32; BLOCK];
        for seg in w.segments(r, 0, k) {
            let mut part = [0.0f32; BLOCK];
            for j in seg.start..seg.end {
                let level = w.levels[code_at(row, j, w.bits)];
                for (p, xr) in part.iter_mut().zip(xs.chunks_exact(k)) {
                    *p += xr[j] * level;
                }
            }
            for (t, p) in total.iter_mut().zip(part) {
                *t += seg.scale * p;
            }
        }
        out_blk.copy_from_slice(&total[..out_blk.len()]);
    }
}

/// Scalar [`super::kernel::Isa::decode_row`].
pub(crate) fn decode_row(w: &PackedWeights, r: usize, k0: usize, out: &mut [f32]) {
    let row = w.row(r);
    for seg in w.segments(r, k0, k0 + out.len()) {
        for j in seg.start..seg.end {
            out[j - k0] = seg.scale * w.levels[code_at(row, j, w.bits)];
        }
    }
}

/// Panel width of the scalar prefill kernel (see `Isa::panel_width`).
const PANEL: usize = 8;
/// Weight rows per register tile of the scalar prefill kernel.
const NR: usize = 4;

/// Scalar [`super::kernel::Isa::gemm_panel`]: `NR x PANEL` accumulators
/// (edge rows in smaller tiles), a shape compilers vectorize.
pub(crate) fn gemm_panel(g: &PanelArgs, out: &mut [f32]) {
    let mut t = 0;
    while t < g.rows {
        t += match g.rows - t {
            NR.. => panel_rows::<NR>(g, t, out),
            2.. => panel_rows::<2>(g, t, out),
            _ => panel_rows::<1>(g, t, out),
        };
    }
}

fn panel_rows<const R: usize>(g: &PanelArgs, t0: usize, out: &mut [f32]) -> usize {
    let mut acc = [[0.0f32; PANEL]; R];
    let ws: [&[f32]; R] = core::array::from_fn(|r| &g.tile[(t0 + r) * TILE_K..][..g.klen]);
    for (k, xv) in g.xp.chunks_exact(PANEL).take(g.klen).enumerate() {
        for (a, wr) in acc.iter_mut().zip(ws) {
            for (c, &xl) in a.iter_mut().zip(xv) {
                *c += wr[k] * xl;
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let dst = &mut out[(t0 + r) * g.m + g.i0..][..g.mlen];
        for (d, &v) in dst.iter_mut().zip(a) {
            *d += v;
        }
    }
    R
}

/// Reference `y = x · Wᵀ + bias`, decoding `W[r, j]` in full for every product.
pub(crate) fn reference(
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (n, k) = (w.rows, w.cols);
    for i in 0..m {
        for r in 0..n {
            let row = w.row(r);
            let mut acc = bias.map_or(0.0, |b| b[r]);
            for j in 0..k {
                let wj = w.loc_of(r) + w.scale_of(r, j) * w.levels[code_at(row, j, w.bits)];
                acc += x[i * k + j] * wj;
            }
            y[i * n + r] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{packed_len, scalar::pack};

    #[test]
    fn code_at_matches_unpack_every_width() {
        for bits in 1..=8u32 {
            let codes: Vec<u8> = (0..29).map(|i| ((i * 5 + 1) % (1 << bits)) as u8).collect();
            let mut packed = vec![0u8; packed_len(codes.len(), bits)];
            pack(&codes, bits, &mut packed);
            for (j, &c) in codes.iter().enumerate() {
                assert_eq!(
                    code_at(&packed, j, bits),
                    usize::from(c),
                    "bits {bits} j {j}"
                );
            }
        }
    }

    #[test]
    fn vector_span_aligns_chunks_to_eight_codes() {
        assert_eq!(vector_span(0, 40, 16), (0, 32));
        assert_eq!(vector_span(3, 40, 16), (8, 40));
        assert_eq!(vector_span(3, 7, 8), (7, 7));
        assert_eq!(vector_span(9, 30, 8), (16, 24));
    }

    #[test]
    fn load_le_u64_pads_with_zeros() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(
            load_le_u64(&bytes, 1),
            u64::from_le_bytes([2, 3, 4, 5, 6, 7, 8, 9])
        );
        assert_eq!(load_le_u64(&bytes, 7), 0x09_08);
        assert_eq!(load_le_u64(&bytes, 9), 0);
        assert_eq!(load_le_u64(&bytes, 100), 0);
    }

    #[test]
    fn reference_decodes_a_tiny_matrix_by_hand() {
        // 2x3 at 1 bit, levels [-1, 1], per-channel loc and scale.
        let mut packed = [0u8; 2];
        pack(&[1, 0, 1], 1, &mut packed[..1]);
        pack(&[0, 0, 1], 1, &mut packed[1..]);
        let w = PackedWeights {
            rows: 2,
            cols: 3,
            bits: 1,
            packed: &packed,
            levels: &[-1.0, 1.0],
            loc: &[0.5, -1.0],
            scale: &[2.0, 3.0],
            group_size: None,
        };
        // W = [[2.5, -1.5, 2.5], [-4, -4, 2]]
        let mut y = [0.0f32; 2];
        reference(&[1.0, 2.0, 3.0], 1, &w, Some(&[0.25, 0.0]), &mut y);
        assert_eq!(y, [2.5 - 3.0 + 7.5 + 0.25, -4.0 - 8.0 + 6.0]);
    }
}
