//! AVX512-VNNI kernels of the int8-activation path (`super::q8`): one
//! `vpdpbusd` multiplies 4 columns of one weight row (u8, broadcast) by the
//! same 4 columns of 16 rows of `x` (s8) and adds the 4 products into each
//! i32 lane, 64 multiply-adds per instruction.

use core::arch::x86_64::*;

use super::q8::{row_codes, Flush, Out, ROWS};
use super::tile::{TILE_K, TILE_N};
use crate::weights::PackedWeights;

/// Weight rows per register tile: `NR` x 2 vectors of panel rows = 24
/// accumulators.
const NR: usize = 12;
const _: () = assert!(ROWS == 32, "a panel is two vectors of 16 rows");

/// See `Q8::panel`.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI, and the asserts of `Q8::panel`
/// must hold.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn panel(tile: &[u8], (qa, qe): (usize, usize), xq: &[i8], f: &Flush, out: Out) {
    // SAFETY: `corr` and `rs` hold `ROWS` = 32 values: two vectors each.
    let (corr, rs) = unsafe {
        (
            [0, 16].map(|v| _mm512_loadu_si512(f.corr.as_ptr().add(v).cast())),
            [0, 16].map(|v| _mm512_loadu_ps(f.rs.as_ptr().add(v))),
        )
    };
    let xp = xq.as_ptr();
    for t0 in (0..TILE_N).step_by(NR) {
        let wp = tile[t0 * TILE_K + qa * 4..].as_ptr();
        let mut acc = [[_mm512_setzero_si512(); 2]; NR];
        for q in 0..qe - qa {
            // SAFETY: `xq` holds `(qe - qa) * ROWS * 4` bytes;
            // row `t0 + r < TILE_N` of the tile holds quad `qa + q < TILE_K / 4`.
            unsafe {
                let (a, b) = (
                    _mm512_loadu_si512(xp.add(q * ROWS * 4).cast()),
                    _mm512_loadu_si512(xp.add(q * ROWS * 4 + 64).cast()),
                );
                for (r, c) in acc.iter_mut().enumerate() {
                    let w = wp.add(r * TILE_K + q * 4).cast::<i32>().read_unaligned();
                    let wb = _mm512_set1_epi32(w);
                    c[0] = _mm512_dpbusd_epi32(c[0], wb, a);
                    c[1] = _mm512_dpbusd_epi32(c[1], wb, b);
                }
            }
        }
        for (r, c) in acc.iter().enumerate() {
            let m = _mm512_set1_ps(f.mult[t0 + r]);
            for v in 0..2 {
                let fv = _mm512_cvtepi32_ps(_mm512_sub_epi32(c[v], corr[v]));
                // SAFETY: `out` holds `TILE_N` rows of `m >= i0 + ROWS` floats.
                unsafe {
                    let o = out
                        .data
                        .as_mut_ptr()
                        .add((t0 + r) * out.m + out.i0 + v * 16);
                    let scale = _mm512_mul_ps(rs[v], m);
                    _mm512_storeu_ps(o, _mm512_fmadd_ps(fv, scale, _mm512_loadu_ps(o)));
                }
            }
        }
    }
}

/// Codes of columns `k0..k1` of weight row `r` mapped through `table` into
/// `dst` (at least `k1 - k0` bytes): whole 4-bit tiles are unpacked and
/// mapped in registers, other widths unpacked and then mapped.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn decode_row(
    w: &PackedWeights,
    r: usize,
    (k0, k1): (usize, usize),
    table: &[u8; 256],
    dst: &mut [u8],
) {
    if w.bits == 4 && k1 - k0 == TILE_K {
        // SAFETY: the tile's 128 packed bytes are inside row `r`.
        unsafe { nibbles_to_bytes(&w.row(r)[k0 / 2..k0 / 2 + TILE_K / 2], table, dst) };
    } else {
        let dst = &mut dst[..k1 - k0];
        row_codes(w, r, (k0, k1), dst);
        // SAFETY: the caller's CPU has AVX-512 BW.
        unsafe { map(dst, table, w.bits) };
    }
}

/// `table[code]` for the 256 4-bit codes in `packed` (128 bytes) into `out`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn nibbles_to_bytes(packed: &[u8], table: &[u8; 256], out: &mut [u8]) {
    // SAFETY: the first 16 bytes of the table.
    let tab = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(table.as_ptr().cast()) });
    let (lo, hi) = (_mm512_set1_epi16(0x000F), _mm512_set1_epi16(0x0F00));
    for (src, dst) in packed.chunks_exact(32).zip(out.chunks_exact_mut(64)) {
        // SAFETY: 32 bytes in, 64 out. Byte `b` holds codes `2b` (low nibble)
        // and `2b + 1`: widened to 16 bits, they become bytes `2b` and `2b + 1`.
        unsafe {
            let v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(src.as_ptr().cast()));
            let c = _mm512_or_si512(
                _mm512_and_si512(v, lo),
                _mm512_and_si512(_mm512_slli_epi16::<4>(v), hi),
            );
            _mm512_storeu_si512(dst.as_mut_ptr().cast(), _mm512_shuffle_epi8(tab, c));
        }
    }
}

/// Replaces every code in `bytes` by `table[code]` (codes below `2^bits`):
/// byte shuffles through 16-entry slices of the table, one per value of the
/// code's high nibble (one in all for `bits <= 4`).
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn map(bytes: &mut [u8], table: &[u8; 256], bits: u32) {
    let slices = 1usize << bits.saturating_sub(4);
    // SAFETY: slice `s < 16` is 16 bytes at `16 * s` of the 256-byte table.
    let tabs: [__m512i; 16] = core::array::from_fn(|s| unsafe {
        _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().add(16 * (s % 16)).cast()))
    });
    let nibble = _mm512_set1_epi8(0x0F);
    let mut chunks = bytes.chunks_exact_mut(64);
    for c in &mut chunks {
        // SAFETY: `c` is 64 bytes.
        let v = unsafe { _mm512_loadu_si512(c.as_ptr().cast()) };
        let lo = _mm512_and_si512(v, nibble);
        let r = if slices == 1 {
            _mm512_shuffle_epi8(tabs[0], lo)
        } else {
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
            let mut r = _mm512_setzero_si512();
            for (s, &t) in tabs.iter().enumerate().take(slices) {
                let sel = _mm512_cmpeq_epi8_mask(hi, _mm512_set1_epi8(s as i8));
                r = _mm512_mask_shuffle_epi8(r, sel, t, lo);
            }
            r
        };
        // SAFETY: as above.
        unsafe { _mm512_storeu_si512(c.as_mut_ptr().cast(), r) };
    }
    for b in chunks.into_remainder() {
        *b = table[usize::from(*b)];
    }
}
