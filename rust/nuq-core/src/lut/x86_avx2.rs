//! AVX2 + FMA kernels. The codebook lives in registers: up to 8 levels in one
//! ymm (`vpermps`), 16 levels in two (two permutes and a blend on index bit
//! 3); wider codebooks are gathered. Each segment gets a codebook
//! pre-multiplied by its scale, so decoding costs no multiply.

use core::arch::x86_64::*;

use super::kernel::PanelArgs;
use super::scalar::{code_at, load_le_u64, padded_levels, vector_span, x_rows};
use super::tile::TILE_K;
use super::with_bits;
use crate::weights::PackedWeights;

/// Codes per vector.
const LANES: usize = 8;
/// Weight rows per register tile of the prefill kernel (x two vectors of
/// panel rows: 12 of the 16 ymm registers accumulate).
const NR: usize = 6;

/// A scaled codebook ready for register lookups.
#[derive(Clone, Copy)]
struct Book<'a, const B: u32> {
    lo: __m256,
    hi: __m256,
    scale: __m256,
    table: &'a [f32],
}

impl<'a, const B: u32> Book<'a, B> {
    #[target_feature(enable = "avx2,fma")]
    fn new(padded: &[f32; 32], table: &'a [f32], scale: f32) -> Self {
        let s = _mm256_set1_ps(scale);
        // SAFETY: `padded` holds 32 floats; we read the first 16.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_ps(padded.as_ptr()),
                _mm256_loadu_ps(padded.as_ptr().add(8)),
            )
        };
        Book {
            lo: _mm256_mul_ps(lo, s),
            hi: _mm256_mul_ps(hi, s),
            scale: s,
            table,
        }
    }

    /// `scale * levels[idx]` for 8 indices below `2^B`.
    #[target_feature(enable = "avx2,fma")]
    fn lookup(&self, idx: __m256i) -> __m256 {
        if B <= 3 {
            _mm256_permutevar8x32_ps(self.lo, idx)
        } else if B == 4 {
            // vpermps reads index bits 0..2; bit 3 picks the half via blendv's sign test.
            let (lo, hi) = (
                _mm256_permutevar8x32_ps(self.lo, idx),
                _mm256_permutevar8x32_ps(self.hi, idx),
            );
            _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
        } else {
            // SAFETY: every index is masked to B bits and `table` holds 2^B floats.
            let v = unsafe { _mm256_i32gather_ps::<4>(self.table.as_ptr(), idx) };
            _mm256_mul_ps(v, self.scale)
        }
    }
}

/// Indices of codes `j..j + 8` of `row` (`j % 8 == 0`, so byte-aligned).
#[target_feature(enable = "avx2,fma")]
fn indices<const B: u32>(row: &[u8], j: usize) -> __m256i {
    let v = load_le_u64(row, j * B as usize / 8);
    let mask = (1i32 << B) - 1;
    if B <= 4 {
        let b = B as i32;
        let sh = _mm256_setr_epi32(0, b, 2 * b, 3 * b, 4 * b, 5 * b, 6 * b, 7 * b);
        _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_set1_epi32(v as i32), sh),
            _mm256_set1_epi32(mask),
        )
    } else {
        // 8 codes span up to 64 bits: shift 64-bit lanes for even and odd codes,
        // then interleave them as 32-bit lanes.
        let (run, b) = (_mm256_set1_epi64x(v as i64), i64::from(B));
        let even = _mm256_srlv_epi64(run, _mm256_setr_epi64x(0, 2 * b, 4 * b, 6 * b));
        let odd = _mm256_srlv_epi64(run, _mm256_setr_epi64x(b, 3 * b, 5 * b, 7 * b));
        let m = _mm256_set1_epi64x(i64::from(mask));
        _mm256_or_si256(
            _mm256_and_si256(even, m),
            _mm256_slli_epi64::<32>(_mm256_and_si256(odd, m)),
        )
    }
}

/// Sum of the 8 lanes.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
}

/// Offset-free dot products of weight row `r` with the `R` rows `xs`: each
/// 8-code chunk is decoded once and used by all `R` accumulators.
#[target_feature(enable = "avx2,fma")]
fn dot_row<const B: u32, const R: usize>(
    w: &PackedWeights,
    r: usize,
    xs: [&[f32]; R],
    padded: &[f32; 32],
) -> [f32; R] {
    let row = w.row(r);
    let mut acc = [_mm256_setzero_ps(); R];
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
                // SAFETY: j + 8 <= seg.end <= cols == xr.len().
                *a = _mm256_fmadd_ps(wv, unsafe { _mm256_loadu_ps(xr.as_ptr().add(j)) }, *a);
            }
        }
    }
    for (s, a) in rest.iter_mut().zip(acc) {
        *s += hsum(a);
    }
    rest
}

/// See [`super::kernel::Isa::dot_rows`]: rows of `x` go in blocks of 8/4/2/1.
#[target_feature(enable = "avx2,fma")]
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
#[target_feature(enable = "avx2,fma")]
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
#[target_feature(enable = "avx2,fma")]
pub(crate) fn decode_row(w: &PackedWeights, r: usize, k0: usize, out: &mut [f32]) {
    with_bits!(w.bits, B => decode_row_b::<B>(w, r, k0, out))
}

#[target_feature(enable = "avx2,fma")]
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
            // SAFETY: `dst` holds exactly 8 floats.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), book.lookup(indices::<B>(row, j))) }
        }
    }
}

/// See [`super::kernel::Isa::gemm_panel`]: `NR` weight rows by 16 panel rows
/// (two ymm) per register tile; edge rows in smaller power-of-two tiles.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn gemm_panel(g: &PanelArgs, out: &mut [f32]) {
    let mut t = 0;
    while t < g.rows {
        t += match g.rows - t {
            NR.. => panel_rows::<NR>(g, t, out),
            4.. => panel_rows::<4>(g, t, out),
            2.. => panel_rows::<2>(g, t, out),
            _ => panel_rows::<1>(g, t, out),
        };
    }
}

/// Outer products over `k`: one broadcast weight times two vectors of `x`.
#[target_feature(enable = "avx2,fma")]
fn panel_rows<const R: usize>(g: &PanelArgs, t0: usize, out: &mut [f32]) -> usize {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (xp, w) = (g.xp.as_ptr(), g.tile[t0 * TILE_K..].as_ptr());
    for k in 0..g.klen {
        // SAFETY: `PanelArgs::check` proved `xp` holds `klen * 16` floats and
        // the tile `(t0 + R) * TILE_K` with `klen <= TILE_K`, so every read is in bounds.
        let (a, b) = unsafe {
            (
                _mm256_loadu_ps(xp.add(k * 16)),
                _mm256_loadu_ps(xp.add(k * 16 + 8)),
            )
        };
        for (r, c) in acc.iter_mut().enumerate() {
            // SAFETY: as above, `(t0 + r) * TILE_K + k` is inside the tile.
            let s = _mm256_set1_ps(unsafe { *w.add(r * TILE_K + k) });
            c[0] = _mm256_fmadd_ps(s, a, c[0]);
            c[1] = _mm256_fmadd_ps(s, b, c[1]);
        }
    }
    for (r, c) in acc.iter().enumerate() {
        let mut sums = [0.0f32; 16];
        // SAFETY: `sums` holds two vectors.
        unsafe {
            _mm256_storeu_ps(sums.as_mut_ptr(), c[0]);
            _mm256_storeu_ps(sums.as_mut_ptr().add(8), c[1]);
        }
        let dst = &mut out[(t0 + r) * g.m + g.i0..][..g.mlen];
        for (d, s) in dst.iter_mut().zip(sums) {
            *d += s;
        }
    }
    R
}
