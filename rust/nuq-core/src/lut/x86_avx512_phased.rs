//! AVX-512F phase-split dot products for 1..=4 bits (see `super::phased`):
//! 16 units per zmm, the codebook repeated to 16 entries in one register
//! (`vpermps` reads 4 index bits), so each code costs a shift, a permute and
//! an FMA shared by 16 codes.

use core::arch::x86_64::*;

use super::phased::{chunks, per_unit, repeat_levels, tail};
use super::scalar::x_rows;
use crate::weights::PackedWeights;

/// Units per vector.
const LANES: usize = 16;
/// Bytes of packed codes prefetched ahead of the chunk being decoded.
const PREFETCH: usize = 1024;

/// The 16 units of the chunk whose packed bytes start at `bytes`.
///
/// # Safety
/// `bytes` must be valid for `2 * B` 32-bit words (the chunk's bytes).
#[target_feature(enable = "avx512f")]
unsafe fn units<const B: u32>(bytes: *const u8) -> __m512i {
    if B == 3 {
        // 48 bytes: unit i (bits 24i..24i+24) is word 3i/4 shifted right by
        // 24i % 32, or-ed with the next word shifted left to fill the gap.
        // SAFETY: the mask reads only the 12 words of the chunk.
        let v = unsafe { _mm512_maskz_loadu_epi32(0x0FFF, bytes.cast()) };
        let lo = _mm512_setr_epi32(0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11);
        let s = _mm512_setr_epi32(0, 24, 16, 8, 0, 24, 16, 8, 0, 24, 16, 8, 0, 24, 16, 8);
        let next = _mm512_add_epi32(lo, _mm512_set1_epi32(1));
        let fill = _mm512_sub_epi32(_mm512_set1_epi32(32), s);
        _mm512_or_si512(
            _mm512_srlv_epi32(_mm512_permutexvar_epi32(lo, v), s),
            _mm512_sllv_epi32(_mm512_permutexvar_epi32(next, v), fill),
        )
    } else {
        // SAFETY: the chunk is exactly 64 bytes for 1, 2 and 4 bits.
        unsafe { _mm512_loadu_si512(bytes.cast()) }
    }
}

/// Every lane shifted right by `B` bits (an immediate shift per width).
#[target_feature(enable = "avx512f")]
fn next_code<const B: u32>(u: __m512i) -> __m512i {
    match B {
        1 => _mm512_srli_epi32::<1>(u),
        2 => _mm512_srli_epi32::<2>(u),
        3 => _mm512_srli_epi32::<3>(u),
        _ => _mm512_srli_epi32::<4>(u),
    }
}

/// Offset-free dot products of weight row `r` with the `R` rows `xs` (`xp`:
/// the same rows in phase order). Phase `p` adds into accumulator `p % A`, so
/// `R * A` independent FMA chains hide the FMA latency.
#[target_feature(enable = "avx512f")]
fn dot_row<const B: u32, const R: usize, const A: usize>(
    w: &PackedWeights,
    r: usize,
    xp: [&[f32]; R],
    xs: [&[f32]; R],
    table: __m512,
) -> [f32; R] {
    let (row, chunk) = (w.row(r), LANES * per_unit(B));
    let mut acc = [[_mm512_setzero_ps(); A]; R];
    let mut book = table;
    for (c0, scale) in chunks(w, r, chunk) {
        if let Some(s) = scale {
            book = _mm512_mul_ps(table, _mm512_set1_ps(s));
        }
        // SAFETY: `chunks` yields whole chunks (`c0 + chunk <= cols`), so the
        // chunk's bytes are in `row`.
        let at = c0 * B as usize / 8;
        // Prefetching never faults, so the address may run past the row.
        _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(at + PREFETCH).cast());
        let mut u = unsafe { units::<B>(row.as_ptr().add(at)) };
        for p in 0..per_unit(B) {
            let wv = _mm512_permutexvar_ps(u, book);
            for (a, xr) in acc.iter_mut().zip(xp) {
                // SAFETY: c0 + (p + 1) * 16 <= c0 + chunk <= cols == xr.len().
                let xv = unsafe { _mm512_loadu_ps(xr.as_ptr().add(c0 + p * LANES)) };
                a[p % A] = _mm512_fmadd_ps(wv, xv, a[p % A]);
            }
            u = next_code::<B>(u);
        }
    }
    let mut rest = [0.0f32; R];
    tail(w, r, chunk, xs, &mut rest);
    for (s, a) in rest.iter_mut().zip(acc) {
        let total = a[1..].iter().fold(a[0], |t, &v| _mm512_add_ps(t, v));
        *s += _mm512_reduce_add_ps(total);
    }
    rest
}

/// Phase-split [`super::kernel::Isa::dot_rows`] for the weight rows
/// `r0..r0 + out.len() / m` (`out` is `[rows, m]`): `xp` is `x` permuted by
/// `Layout::permute_x` for 16 lanes and `w.bits` (1..=4).
#[target_feature(enable = "avx512f")]
pub(crate) fn dot_rows(
    w: &PackedWeights,
    r0: usize,
    x: &[f32],
    xp: &[f32],
    m: usize,
    out: &mut [f32],
) {
    match w.bits {
        1 => dot_rows_b::<1>(w, r0, x, xp, m, out),
        2 => dot_rows_b::<2>(w, r0, x, xp, m, out),
        3 => dot_rows_b::<3>(w, r0, x, xp, m, out),
        4 => dot_rows_b::<4>(w, r0, x, xp, m, out),
        _ => {
            for (t, out_r) in out.chunks_mut(m).enumerate() {
                super::x86_avx512::dot_rows(w, r0 + t, x, out_r);
            }
        }
    }
}

/// Per weight row, rows of `x` go in blocks of 8/4/2/1 with 1/2/4/8
/// accumulators each (8 independent FMA chains).
#[target_feature(enable = "avx512f")]
fn dot_rows_b<const B: u32>(
    w: &PackedWeights,
    r0: usize,
    x: &[f32],
    xp: &[f32],
    m: usize,
    out: &mut [f32],
) {
    let levels: [f32; 16] = repeat_levels(&w.levels[..1 << B]);
    // SAFETY: `levels` holds 16 floats.
    let table = unsafe { _mm512_loadu_ps(levels.as_ptr()) };
    let k = w.cols;
    for (t, out_r) in out.chunks_mut(m).enumerate() {
        let r = r0 + t;
        let mut i = 0;
        while i < m {
            i += match m - i {
                8.. => put(
                    &mut out_r[i..i + 8],
                    dot_row::<B, 8, 1>(w, r, x_rows(xp, k, i), x_rows(x, k, i), table),
                ),
                4.. => put(
                    &mut out_r[i..i + 4],
                    dot_row::<B, 4, 2>(w, r, x_rows(xp, k, i), x_rows(x, k, i), table),
                ),
                2.. => put(
                    &mut out_r[i..i + 2],
                    dot_row::<B, 2, 4>(w, r, x_rows(xp, k, i), x_rows(x, k, i), table),
                ),
                _ => put(
                    &mut out_r[i..i + 1],
                    dot_row::<B, 1, 8>(w, r, x_rows(xp, k, i), x_rows(x, k, i), table),
                ),
            };
        }
    }
}

/// Copies `dots` to `out`; returns how many.
fn put<const R: usize>(out: &mut [f32], dots: [f32; R]) -> usize {
    out.copy_from_slice(&dots);
    R
}
