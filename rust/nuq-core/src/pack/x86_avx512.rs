//! AVX-512 (F + BW) pack/unpack. A block is 64 codes = `8 * bits` bytes, one
//! 512-bit register. The same merge steps as the AVX2 kernel leave `2 * bits`
//! bytes at the start of each 128-bit lane; a word permute (`vpermw`, which
//! crosses lanes) makes them contiguous, and masked loads/stores touch exactly
//! the block's bytes, so no slack is needed. Leftovers go to the scalar
//! reference on the remaining byte-aligned sub-slices.

use std::arch::x86_64::*;

use super::{scalar, shuffle};

const BLOCK: usize = 64;

/// Packs like `scalar::pack`; `bits` in 1..=8.
///
/// # Safety
/// The CPU must support AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn pack(codes: &[u8], bits: u32, out: &mut [u8]) {
    let done = match bits {
        1 => pack1(codes, out),
        2..=7 => pack_general(codes, bits as usize, out),
        _ => {
            out.copy_from_slice(codes);
            codes.len()
        }
    };
    let o = done * bits as usize / 8;
    scalar::pack(&codes[done..], bits, &mut out[o..]);
}

/// Unpacks like `scalar::unpack`; `bits` in 1..=8.
///
/// # Safety
/// The CPU must support AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn unpack(packed: &[u8], bits: u32, out: &mut [u8]) {
    let done = match bits {
        1 => unpack1(packed, out),
        2..=7 => unpack_general(packed, bits as usize, out),
        _ => {
            out.copy_from_slice(packed);
            out.len()
        }
    };
    let o = done * bits as usize / 8;
    scalar::unpack(&packed[o..], bits, &mut out[done..]);
}

/// One bit per code: the mask register of "low bit set" is the packed block.
#[target_feature(enable = "avx512f,avx512bw")]
fn pack1(codes: &[u8], out: &mut [u8]) -> usize {
    let blocks = codes.len() / BLOCK;
    let one = _mm512_set1_epi8(1);
    for b in 0..blocks {
        // SAFETY: reads codes[64b..64b+64], in bounds as b < len / 64.
        let x = unsafe { _mm512_loadu_si512(codes.as_ptr().add(b * BLOCK).cast()) };
        let word = _mm512_test_epi8_mask(x, one);
        out[b * 8..b * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    blocks * BLOCK
}

/// Reverse of `pack1`: the packed bytes are a mask selecting ones.
#[target_feature(enable = "avx512f,avx512bw")]
fn unpack1(packed: &[u8], out: &mut [u8]) -> usize {
    let blocks = out.len() / BLOCK;
    let one = _mm512_set1_epi8(1);
    for b in 0..blocks {
        let word = u64::from_le_bytes(packed[b * 8..b * 8 + 8].try_into().unwrap());
        let y = _mm512_maskz_mov_epi8(word, one);
        // SAFETY: writes out[64b..64b+64], in bounds as b < out.len() / 64.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(b * BLOCK).cast(), y) };
    }
    blocks * BLOCK
}

/// The byte shuffle (same in all four lanes) and the cross-lane word permute.
#[target_feature(enable = "avx512f,avx512bw")]
fn tables(bits: usize, pack: bool) -> (__m512i, __m512i) {
    let bytes = shuffle::lane_bytes(bits, pack);
    let words = shuffle::lane_words(bits, pack);
    // SAFETY: 16 and 64 readable bytes respectively; loadu needs no alignment.
    unsafe {
        let b = _mm512_broadcast_i32x4(_mm_loadu_si128(bytes.as_ptr().cast()));
        (b, _mm512_loadu_si512(words.as_ptr().cast()))
    }
}

/// Widths 2..=7: codes merge pairwise into 16-, 32-, then 64-bit lanes
/// (`maddubs`, `madd`, shifts) so each 64-bit lane holds 8 codes as `bits`
/// bytes; `pshufb` and `vpermw` then compact the 64 codes to `8 * bits` bytes.
#[target_feature(enable = "avx512f,avx512bw")]
fn pack_general(codes: &[u8], bits: usize, out: &mut [u8]) -> usize {
    let mask = _mm512_set1_epi8(((1u16 << bits) - 1) as i8);
    let mul8 = _mm512_set1_epi16((1 | (1u16 << (8 + bits))) as i16);
    let mul16 = _mm512_set1_epi32(1 | (1 << (16 + 2 * bits)));
    let shift64 = _mm512_set1_epi64(4 * bits as i64);
    let lo32 = _mm512_set1_epi64(0xFFFF_FFFF);
    let (shuf, perm) = tables(bits, true);
    let store: u64 = (1 << (8 * bits)) - 1;
    let blocks = codes.len() / BLOCK;
    for b in 0..blocks {
        // SAFETY: reads codes[64b..64b+64], in bounds as b < len / 64.
        let x = unsafe { _mm512_loadu_si512(codes.as_ptr().add(b * BLOCK).cast()) };
        let t = _mm512_maddubs_epi16(mul8, _mm512_and_si512(x, mask));
        let u = _mm512_madd_epi16(t, mul16);
        let hi = _mm512_sllv_epi64(_mm512_srli_epi64::<32>(u), shift64);
        let v = _mm512_or_si512(_mm512_and_si512(u, lo32), hi);
        let y = _mm512_permutexvar_epi16(perm, _mm512_shuffle_epi8(v, shuf));
        // SAFETY: the mask writes out[8b*bits..8(b+1)*bits] only; that is the
        // block's share of `packed_len(n, bits)`, so it is in bounds.
        unsafe { _mm512_mask_storeu_epi8(out.as_mut_ptr().add(b * 8 * bits).cast(), store, y) };
    }
    blocks * BLOCK
}

/// Reverse of `pack_general`: spread the block over the lanes, then split each
/// 64-bit lane into 32-, 16- and 8-bit lanes with variable shifts and masks.
#[target_feature(enable = "avx512f,avx512bw")]
fn unpack_general(packed: &[u8], bits: usize, out: &mut [u8]) -> usize {
    let (shuf, perm) = tables(bits, false);
    let load: u64 = (1 << (8 * bits)) - 1;
    let (s64, m64) = (
        _mm512_set1_epi64(4 * bits as i64),
        _mm512_set1_epi64((1 << (4 * bits)) - 1),
    );
    let (s32, m32) = (
        _mm512_set1_epi32(2 * bits as i32),
        _mm512_set1_epi32((1 << (2 * bits)) - 1),
    );
    let (s16, m16) = (
        _mm512_set1_epi16(bits as i16),
        _mm512_set1_epi16((1 << bits) - 1),
    );
    let blocks = out.len() / BLOCK;
    for b in 0..blocks {
        // SAFETY: the mask reads packed[8b*bits..8(b+1)*bits] only, in bounds
        // because the input holds `packed_len(out.len(), bits)` bytes.
        let x = unsafe { _mm512_maskz_loadu_epi8(load, packed.as_ptr().add(b * 8 * bits).cast()) };
        let u = _mm512_shuffle_epi8(_mm512_permutexvar_epi16(perm, x), shuf);
        let hi = _mm512_slli_epi64::<32>(_mm512_srlv_epi64(u, s64));
        let v = _mm512_or_si512(_mm512_and_si512(u, m64), hi);
        let hi = _mm512_slli_epi32::<16>(_mm512_srlv_epi32(v, s32));
        let w = _mm512_or_si512(_mm512_and_si512(v, m32), hi);
        let hi = _mm512_slli_epi16::<8>(_mm512_srlv_epi16(w, s16));
        let z = _mm512_or_si512(_mm512_and_si512(w, m16), hi);
        // SAFETY: writes out[64b..64b+64], in bounds as b < out.len() / 64.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(b * BLOCK).cast(), z) };
    }
    blocks * BLOCK
}
