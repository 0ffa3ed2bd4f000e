//! AVX-512F kernels. The codebook lives in registers: up to 16 levels in one
//! zmm (`vpermps` maps 4-bit indices to floats), 32 levels in two
//! (`vpermt2ps`); wider codebooks are gathered. Each segment gets a codebook
//! pre-multiplied by its scale, so decoding costs no multiply.

use core::arch::x86_64::*;

use super::kernel::PanelArgs;
use super::scalar::{code_at, load_le_u64, padded_levels, vector_span, x_rows};
use super::tile::TILE_K;
use super::with_bits;
use crate::weights::PackedWeights;

/// Codes per vector.
const LANES: usize = 16;
/// Weight rows per register tile of the prefill kernel (x two vectors of
/// panel rows: 24 of the 32 zmm registers accumulate).
const NR: usize = 12;

/// A scaled codebook ready for register lookups.
#[derive(Clone, Copy)]
struct Book<'a, const B: u32> {
    lo: __m512,
    hi: __m512,
    scale: __m512,
    table: &'a [f32],
}

impl<'a, const B: u32> Book<'a, B> {
    #[target_feature(enable = "avx512f")]
    fn new(padded: &[f32; 32], table: &'a [f32], scale: f32) -> Self {
        let s = _mm512_set1_ps(scale);
        // SAFETY: `padded` holds 32 floats: two whole registers.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_ps(padded.as_ptr()),
                _mm512_loadu_ps(padded.as_ptr().add(16)),
            )
        };
        Book {
            lo: _mm512_mul_ps(lo, s),
            hi: _mm512_mul_ps(hi, s),
            scale: s,
            table,
        }
    }

    /// `scale * levels[idx]` for 16 indices below `2^B`.
    #[target_feature(enable = "avx512f")]
    fn lookup(&self, idx: __m512i) -> __m512 {
        if B <= 4 {
            _mm512_permutexvar_ps(idx, self.lo)
        } else if B == 5 {
            _mm512_permutex2var_ps(self.lo, idx, self.hi)
        } else {
            // SAFETY: every index is masked to B bits and `table` holds 2^B floats.
            let v = unsafe { _mm512_i32gather_ps::<4>(idx, self.table.as_ptr()) };
            _mm512_mul_ps(v, self.scale)
        }
    }
}

/// Indices of codes `j..j + 16` of `row` (`j % 8 == 0`, so byte-aligned), for
/// [`Book::lookup`] only: at 4 bits the lanes keep bits above the code.
#[target_feature(enable = "avx512f")]
fn indices<const B: u32>(row: &[u8], j: usize) -> __m512i {
    let off = j * B as usize / 8;
    let mask = (1i32 << B) - 1;
    if B == 4 {
        // Each byte doubled (b0 b0 b1 b1 ..), widened to a lane, and the odd
        // lanes shifted down a nibble. The bits left above the code need no
        // mask: `vpermps` reads only the low 4 bits of an index.
        let bytes = _mm_cvtsi64_si128(load_le_u64(row, off) as i64);
        let pairs = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(bytes, bytes));
        let sh = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
        _mm512_srlv_epi32(pairs, sh)
    } else if B < 4 {
        // Two runs of 8 codes, each within 32 bits: one shift per lane.
        let v = load_le_u64(row, off);
        let runs = _mm512_inserti64x4::<1>(
            _mm512_set1_epi32(v as i32),
            _mm256_set1_epi32((v >> (8 * B)) as i32),
        );
        let b = B as i32;
        let sh = _mm512_setr_epi32(
            0,
            b,
            2 * b,
            3 * b,
            4 * b,
            5 * b,
            6 * b,
            7 * b,
            0,
            b,
            2 * b,
            3 * b,
            4 * b,
            5 * b,
            6 * b,
            7 * b,
        );
        _mm512_and_si512(_mm512_srlv_epi32(runs, sh), _mm512_set1_epi32(mask))
    } else {
        // Runs of 8 codes span up to 64 bits: shift 64-bit lanes for even and
        // odd codes, then interleave them as 32-bit lanes.
        let (v0, v1) = (load_le_u64(row, off), load_le_u64(row, off + B as usize));
        let runs =
            _mm512_inserti64x4::<1>(_mm512_set1_epi64(v0 as i64), _mm256_set1_epi64x(v1 as i64));
        let b = i64::from(B);
        let even = _mm512_srlv_epi64(
            runs,
            _mm512_setr_epi64(0, 2 * b, 4 * b, 6 * b, 0, 2 * b, 4 * b, 6 * b),
        );
        let odd = _mm512_srlv_epi64(
            runs,
            _mm512_setr_epi64(b, 3 * b, 5 * b, 7 * b, b, 3 * b, 5 * b, 7 * b),
        );
        let m = _mm512_set1_epi64(i64::from(mask));
        _mm512_or_si512(
            _mm512_and_si512(even, m),
            _mm512_slli_epi64::<32>(_mm512_and_si512(odd, m)),
        )
    }
}

/// Offset-free dot products of weight row `r` with the `R` rows `xs`: each
/// 16-code chunk is decoded once and used by all `R` accumulators.
#[target_feature(enable = "avx512f")]
fn dot_row<const B: u32, const R: usize>(
    w: &PackedWeights,
    r: usize,
    xs: [&[f32]; R],
    padded: &[f32; 32],
) -> [f32; R] {
    let row = w.row(r);
    let mut acc = [_mm512_setzero_ps(); R];
    let mut rest = [0.0f32; R];
    for seg in w.segments(r, 0, w.cols) {
        let book = Book::<B>::new(padded, w.levels, seg.scale);
        let (vs, ve) = vector_span(seg.start, seg.end, LANES);
        for j in (seg.start..vs).chain(ve..seg.end) {
            let wj = seg.scale * w.levels[code_at(row, j, B)];
            for (s, xr) in rest.iter_mut().zip(xs) {
                *s += wj * xr[j];
            }
        }
        for j in (vs..ve).step_by(LANES) {
            let wv = book.lookup(indices::<B>(row, j));
            for (a, xr) in acc.iter_mut().zip(xs) {
                // SAFETY: j + 16 <= seg.end <= cols == xr.len().
                *a = _mm512_fmadd_ps(wv, unsafe { _mm512_loadu_ps(xr.as_ptr().add(j)) }, *a);
            }
        }
    }
    for (s, a) in rest.iter_mut().zip(acc) {
        *s += _mm512_reduce_add_ps(a);
    }
    rest
}

/// See [`super::kernel::Isa::dot_rows`]: rows of `x` go in blocks of 8/4/2/1.
#[target_feature(enable = "avx512f")]
pub(crate) fn dot_rows(w: &PackedWeights, r: usize, x: &[f32], out: &mut [f32]) {
    let padded = padded_levels(w.levels);
    let mut i = 0;
    while i < out.len() {
        i += with_bits!(w.bits, B => match out.len() - i {
            8.. => put_rows::<B, 8>(w, r, x, i, &padded, out),
            4.. => put_rows::<B, 4>(w, r, x, i, &padded, out),
            2.. => put_rows::<B, 2>(w, r, x, i, &padded, out),
            _ => put_rows::<B, 1>(w, r, x, i, &padded, out),
        });
    }
}

/// Writes the products of rows `i..i + R` of `x` to `out[i..i + R]`; returns `R`.
#[target_feature(enable = "avx512f")]
fn put_rows<const B: u32, const R: usize>(
    w: &PackedWeights,
    r: usize,
    x: &[f32],
    i: usize,
    padded: &[f32; 32],
    out: &mut [f32],
) -> usize {
    let dots = dot_row::<B, R>(w, r, x_rows(x, w.cols, i), padded);
    out[i..i + R].copy_from_slice(&dots);
    R
}

/// See [`super::kernel::Isa::decode_row`].
#[target_feature(enable = "avx512f")]
pub(crate) fn decode_row(w: &PackedWeights, r: usize, k0: usize, out: &mut [f32]) {
    with_bits!(w.bits, B => decode_row_b::<B>(w, r, k0, out))
}

#[target_feature(enable = "avx512f")]
fn decode_row_b<const B: u32>(w: &PackedWeights, r: usize, k0: usize, out: &mut [f32]) {
    let (row, padded) = (w.row(r), padded_levels(w.levels));
    for seg in w.segments(r, k0, k0 + out.len()) {
        let book = Book::<B>::new(&padded, w.levels, seg.scale);
        let (vs, ve) = vector_span(seg.start, seg.end, LANES);
        for j in (seg.start..vs).chain(ve..seg.end) {
            out[j - k0] = seg.scale * w.levels[code_at(row, j, B)];
        }
        for j in (vs..ve).step_by(LANES) {
            let dst = &mut out[j - k0..j - k0 + LANES];
            // SAFETY: `dst` holds exactly 16 floats.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), book.lookup(indices::<B>(row, j))) }
        }
    }
}

/// See [`super::kernel::Isa::gemm_panel`]: `NR` weight rows by 32 panel rows
/// (two zmm) per register tile; edge rows in smaller power-of-two tiles.
#[target_feature(enable = "avx512f")]
pub(crate) fn gemm_panel(g: &PanelArgs, out: &mut [f32]) {
    let mut t = 0;
    while t < g.rows {
        t += match g.rows - t {
            NR.. => panel_rows::<NR>(g, t, out),
            8.. => panel_rows::<8>(g, t, out),
            4.. => panel_rows::<4>(g, t, out),
            2.. => panel_rows::<2>(g, t, out),
            _ => panel_rows::<1>(g, t, out),
        };
    }
}

/// Outer products over `k`: one broadcast weight times two vectors of `x`.
#[target_feature(enable = "avx512f")]
fn panel_rows<const R: usize>(g: &PanelArgs, t0: usize, out: &mut [f32]) -> usize {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (xp, w) = (g.xp.as_ptr(), g.tile[t0 * TILE_K..].as_ptr());
    for k in 0..g.klen {
        // SAFETY: `PanelArgs::check` proved `xp` holds `klen * 32` floats and
        // the tile `(t0 + R) * TILE_K` with `klen <= TILE_K`, so every read is in bounds.
        let (a, b) = unsafe {
            (
                _mm512_loadu_ps(xp.add(k * 32)),
                _mm512_loadu_ps(xp.add(k * 32 + 16)),
            )
        };
        for (r, c) in acc.iter_mut().enumerate() {
            // SAFETY: as above, `(t0 + r) * TILE_K + k` is inside the tile.
            let s = _mm512_set1_ps(unsafe { *w.add(r * TILE_K + k) });
            c[0] = _mm512_fmadd_ps(s, a, c[0]);
            c[1] = _mm512_fmadd_ps(s, b, c[1]);
        }
    }
    for (r, c) in acc.iter().enumerate() {
        let dst = &mut out[(t0 + r) * g.m + g.i0..][..g.mlen];
        for (v, &cv) in c.iter().enumerate() {
            let lanes = g.mlen.saturating_sub(v * 16).min(16);
            if lanes == 0 {
                continue;
            }
            let mask = (((1u32 << lanes) - 1) & 0xFFFF) as __mmask16;
            // SAFETY: lane `l` is touched only if `v * 16 + l < mlen ==
            // dst.len()`; masked-off lanes are neither read nor written.
            unsafe {
                let p = dst.as_mut_ptr().add(v * 16);
                let cur = _mm512_maskz_loadu_ps(mask, p);
                _mm512_mask_storeu_ps(p, mask, _mm512_add_ps(cur, cv));
            }
        }
    }
    R
}
