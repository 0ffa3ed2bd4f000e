//! AVX2 + FMA phase-split dot products for 1..=4 bits (see `super::phased`):
//! 8 units per ymm; `vpermps` reads 3 index bits, so up to 3 bits the
//! codebook repeated to 8 entries is one register, and 4 bits use two
//! registers blended on the code's top bit.

use core::arch::x86_64::*;

use super::phased::{chunks, per_unit, repeat_levels, tail};
use super::scalar::x_rows;
use crate::weights::PackedWeights;

/// Units per vector.
const LANES: usize = 8;
/// Bytes of packed codes prefetched ahead of the chunk being decoded.
const PREFETCH: usize = 1024;

/// The 8 units of the chunk whose packed bytes start at `bytes`.
///
/// # Safety
/// `bytes` must be valid for the chunk's `B * 8` bytes.
#[target_feature(enable = "avx2,fma")]
unsafe fn units<const B: u32>(bytes: *const u8) -> __m256i {
    if B == 3 {
        // 24 bytes: bytes 0..16 feed units 0..3, bytes 8..24 units 4..7; each
        // unit's 3 bytes are spread to one 32-bit lane.
        // SAFETY: both 16-byte loads end within the 24 chunk bytes.
        let (lo, hi) = unsafe {
            (
                _mm_loadu_si128(bytes.cast()),
                _mm_loadu_si128(bytes.add(8).cast()),
            )
        };
        let spread = _mm256_setr_epi8(
            0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1, //
            4, 5, 6, -1, 7, 8, 9, -1, 10, 11, 12, -1, 13, 14, 15, -1,
        );
        _mm256_shuffle_epi8(_mm256_set_m128i(hi, lo), spread)
    } else {
        // SAFETY: the chunk is exactly 32 bytes for 1, 2 and 4 bits.
        unsafe { _mm256_loadu_si256(bytes.cast()) }
    }
}

/// Every lane shifted right by `B` bits (an immediate shift per width).
#[target_feature(enable = "avx2,fma")]
fn next_code<const B: u32>(u: __m256i) -> __m256i {
    match B {
        1 => _mm256_srli_epi32::<1>(u),
        2 => _mm256_srli_epi32::<2>(u),
        3 => _mm256_srli_epi32::<3>(u),
        _ => _mm256_srli_epi32::<4>(u),
    }
}

/// Scaled levels of the low code of every lane of `u`.
#[target_feature(enable = "avx2,fma")]
fn lookup<const B: u32>(u: __m256i, lo: __m256, hi: __m256) -> __m256 {
    if B == 4 {
        // Bit 3 of the code moved to the sign bit selects the upper half.
        let pick = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(u));
        _mm256_blendv_ps(
            _mm256_permutevar8x32_ps(lo, u),
            _mm256_permutevar8x32_ps(hi, u),
            pick,
        )
    } else {
        _mm256_permutevar8x32_ps(lo, u)
    }
}

/// Sum of the 8 lanes.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
}

/// Offset-free dot products of weight row `r` with the `R` rows `xs` (`xp`:
/// the same rows in phase order). Phase `p` adds into accumulator `p % A`.
#[target_feature(enable = "avx2,fma")]
fn dot_row<const B: u32, const R: usize, const A: usize>(
    w: &PackedWeights,
    r: usize,
    xp: [&[f32]; R],
    xs: [&[f32]; R],
    table: [__m256; 2],
) -> [f32; R] {
    let (row, chunk) = (w.row(r), LANES * per_unit(B));
    let mut acc = [[_mm256_setzero_ps(); A]; R];
    let (mut lo, mut hi) = (table[0], table[1]);
    for (c0, scale) in chunks(w, r, chunk) {
        if let Some(s) = scale {
            let s = _mm256_set1_ps(s);
            (lo, hi) = (_mm256_mul_ps(table[0], s), _mm256_mul_ps(table[1], s));
        }
        // SAFETY: `chunks` yields whole chunks (`c0 + chunk <= cols`), so the
        // chunk's bytes are in `row`.
        let at = c0 * B as usize / 8;
        // Prefetching never faults, so the address may run past the row.
        _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(at + PREFETCH).cast());
        let mut u = unsafe { units::<B>(row.as_ptr().add(at)) };
        for p in 0..per_unit(B) {
            let wv = lookup::<B>(u, lo, hi);
            for (a, xr) in acc.iter_mut().zip(xp) {
                // SAFETY: c0 + (p + 1) * 8 <= c0 + chunk <= cols == xr.len().
                let xv = unsafe { _mm256_loadu_ps(xr.as_ptr().add(c0 + p * LANES)) };
                a[p % A] = _mm256_fmadd_ps(wv, xv, a[p % A]);
            }
            u = next_code::<B>(u);
        }
    }
    let mut rest = [0.0f32; R];
    tail(w, r, chunk, xs, &mut rest);
    for (s, a) in rest.iter_mut().zip(acc) {
        let total = a[1..].iter().fold(a[0], |t, &v| _mm256_add_ps(t, v));
        *s += hsum(total);
    }
    rest
}

/// Phase-split [`super::kernel::Isa::dot_rows`] for the weight rows
/// `r0..r0 + out.len() / m` (`out` is `[rows, m]`): `xp` is `x` permuted by
/// `Layout::permute_x` for 8 lanes and `w.bits` (1..=4).
#[target_feature(enable = "avx2,fma")]
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
                super::x86_avx2::dot_rows(w, r0 + t, x, out_r);
            }
        }
    }
}

/// Per weight row, rows of `x` go in blocks of 8/4/2/1 with 1/2/4/8
/// accumulators each (8 independent FMA chains).
#[target_feature(enable = "avx2,fma")]
fn dot_rows_b<const B: u32>(
    w: &PackedWeights,
    r0: usize,
    x: &[f32],
    xp: &[f32],
    m: usize,
    out: &mut [f32],
) {
    let levels: [f32; 16] = repeat_levels(&w.levels[..1 << B]);
    // SAFETY: `levels` holds 16 floats: two whole registers.
    let table = unsafe {
        [
            _mm256_loadu_ps(levels.as_ptr()),
            _mm256_loadu_ps(levels.as_ptr().add(8)),
        ]
    };
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
