//! AVX2 pack/unpack. A block is 32 codes = `4 * bits` bytes, handled as two
//! 128-bit halves of 16 codes (`2 * bits` bytes each), because AVX2 byte
//! shuffles cannot cross the halves: each half is stored (or loaded) on its
//! own, overlapping the next one, so the loops stop while 16 bytes still fit.
//! Blocks are byte-aligned in the stream, so leftovers go to the scalar
//! reference on the remaining sub-slices.

use std::arch::x86_64::*;

use super::{scalar, shuffle};

const BLOCK: usize = 32;

/// Packs like `scalar::pack`; `bits` in 1..=8.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
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
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
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

/// One bit per code: shifting by 7 moves each byte's low bit to its sign bit,
/// and `movemask` gathers the 32 sign bits LSB-first. Returns codes done.
#[target_feature(enable = "avx2")]
fn pack1(codes: &[u8], out: &mut [u8]) -> usize {
    let blocks = codes.len() / BLOCK;
    for b in 0..blocks {
        // SAFETY: reads codes[32b..32b+32], in bounds as b < len / 32.
        let x = unsafe { _mm256_loadu_si256(codes.as_ptr().add(b * BLOCK).cast()) };
        let word = _mm256_movemask_epi8(_mm256_slli_epi16::<7>(x)) as u32;
        out[b * 4..b * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    blocks * BLOCK
}

/// Reverse of `pack1`: replicate byte `j / 8` into byte `j`, test bit `j % 8`.
#[target_feature(enable = "avx2")]
fn unpack1(packed: &[u8], out: &mut [u8]) -> usize {
    let blocks = out.len() / BLOCK;
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let one = _mm256_set1_epi8(1);
    for b in 0..blocks {
        let word = u32::from_le_bytes(packed[b * 4..b * 4 + 4].try_into().unwrap());
        let x = _mm256_shuffle_epi8(_mm256_set1_epi32(word as i32), spread);
        let y = _mm256_min_epu8(_mm256_and_si256(x, bit), one);
        // SAFETY: writes out[32b..32b+32], in bounds as b < out.len() / 32.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(b * BLOCK).cast(), y) };
    }
    blocks * BLOCK
}

/// The same 16-byte shuffle in both 128-bit halves.
#[target_feature(enable = "avx2")]
fn lane_shuffle(bits: usize, pack: bool) -> __m256i {
    let idx = shuffle::lane_bytes(bits, pack);
    // SAFETY: idx is 16 readable bytes; loadu has no alignment requirement.
    unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(idx.as_ptr().cast())) }
}

/// Widths 2..=7: pairs of codes merge into 16-bit lanes (`maddubs`: c0 +
/// c1 << bits; codes < 128 are valid signed bytes), pairs of those into 32-bit
/// lanes (`madd`), then 64-bit lanes by shifts, leaving each group of 8 codes
/// as `bits` bytes at the bottom of a 64-bit lane; a byte shuffle compacts.
#[target_feature(enable = "avx2")]
fn pack_general(codes: &[u8], bits: usize, out: &mut [u8]) -> usize {
    let half = 2 * bits;
    let mask = _mm256_set1_epi8(((1u16 << bits) - 1) as i8);
    let mul8 = _mm256_set1_epi16((1 | (1u16 << (8 + bits))) as i16);
    let mul16 = _mm256_set1_epi32(1 | (1 << (16 + 2 * bits)));
    let shift64 = _mm256_set1_epi64x(4 * bits as i64);
    let lo32 = _mm256_set1_epi64x(0xFFFF_FFFF);
    let shuf = lane_shuffle(bits, true);
    let (mut done, mut o) = (0, 0);
    while done + BLOCK <= codes.len() && o + half + 16 <= out.len() {
        // SAFETY: reads codes[done..done+32], in bounds by the loop condition.
        let x = unsafe { _mm256_loadu_si256(codes.as_ptr().add(done).cast()) };
        let t = _mm256_maddubs_epi16(mul8, _mm256_and_si256(x, mask));
        let u = _mm256_madd_epi16(t, mul16);
        let hi = _mm256_sllv_epi64(_mm256_srli_epi64::<32>(u), shift64);
        let v = _mm256_or_si256(_mm256_and_si256(u, lo32), hi);
        let y = _mm256_shuffle_epi8(v, shuf);
        // SAFETY: writes out[o..o+half+16], in bounds by the loop condition.
        unsafe {
            let p = out.as_mut_ptr().add(o);
            _mm_storeu_si128(p.cast(), _mm256_castsi256_si128(y));
            _mm_storeu_si128(p.add(half).cast(), _mm256_extracti128_si256::<1>(y));
        }
        done += BLOCK;
        o += 2 * half;
    }
    done
}

/// Reverse of `pack_general`: split each 64-bit lane into two 32-bit lanes of
/// 4 codes, those into 16-bit lanes of 2 codes, those into bytes.
#[target_feature(enable = "avx2")]
fn unpack_general(packed: &[u8], bits: usize, out: &mut [u8]) -> usize {
    let half = 2 * bits;
    let shuf = lane_shuffle(bits, false);
    let (s64, m64) = (
        _mm256_set1_epi64x(4 * bits as i64),
        _mm256_set1_epi64x((1 << (4 * bits)) - 1),
    );
    let (s32, m32) = (
        _mm256_set1_epi32(2 * bits as i32),
        _mm256_set1_epi32((1 << (2 * bits)) - 1),
    );
    let (div16, m16) = (
        _mm256_set1_epi16((1u32 << (16 - bits)) as u16 as i16),
        _mm256_set1_epi16((1 << bits) - 1),
    );
    let (mut done, mut o) = (0, 0);
    while done + BLOCK <= out.len() && o + half + 16 <= packed.len() {
        // SAFETY: reads packed[o..o+half+16], in bounds by the loop condition.
        let x = unsafe {
            let p = packed.as_ptr().add(o);
            _mm256_loadu2_m128i(p.add(half).cast(), p.cast())
        };
        let u = _mm256_shuffle_epi8(x, shuf);
        let hi = _mm256_slli_epi64::<32>(_mm256_srlv_epi64(u, s64));
        let v = _mm256_or_si256(_mm256_and_si256(u, m64), hi);
        let hi = _mm256_slli_epi32::<16>(_mm256_srlv_epi32(v, s32));
        let w = _mm256_or_si256(_mm256_and_si256(v, m32), hi);
        // No variable 16-bit shift in AVX2: w >> bits is the high half of w * 2^(16-bits).
        let hi = _mm256_slli_epi16::<8>(_mm256_mulhi_epu16(w, div16));
        let z = _mm256_or_si256(_mm256_and_si256(w, m16), hi);
        // SAFETY: writes out[done..done+32], in bounds by the loop condition.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(done).cast(), z) };
        done += BLOCK;
        o += 2 * half;
    }
    done
}
