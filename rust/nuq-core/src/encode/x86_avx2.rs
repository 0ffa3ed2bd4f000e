//! AVX2 encode/decode, 8 values per vector and 32 per loop step (so four
//! vectors of node numbers pack into one 32-byte store). Tree levels 0..=3 are
//! looked up with `vpermps` from registers (low 3 bits of the node number),
//! level 4 with two permutes and a blend on bit 3, deeper levels with a gather
//! from the node array. Leftovers use the scalar reference.

use std::arch::x86_64::*;

use super::{scalar, tree::SearchTree};

const STEP: usize = 32;

/// As `scalar::encode`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn encode(x: &[f32], offset: f32, mul: f32, tree: &SearchTree, codes: &mut [u8]) {
    let done = match tree.depth {
        1 => encode_depth::<1>(x, offset, mul, tree, codes),
        2 => encode_depth::<2>(x, offset, mul, tree, codes),
        3 => encode_depth::<3>(x, offset, mul, tree, codes),
        4 => encode_depth::<4>(x, offset, mul, tree, codes),
        5 => encode_depth::<5>(x, offset, mul, tree, codes),
        6 => encode_depth::<6>(x, offset, mul, tree, codes),
        7 => encode_depth::<7>(x, offset, mul, tree, codes),
        _ => encode_depth::<8>(x, offset, mul, tree, codes),
    };
    scalar::encode(&x[done..], offset, mul, tree, &mut codes[done..]);
}

/// Node values of level `level` for node numbers `i` (all on that level).
/// `regs[r]` holds `nodes[8r .. 8r + 8]`.
#[inline]
#[target_feature(enable = "avx2")]
fn lookup(tree: &SearchTree, regs: &[__m256; 4], level: usize, i: __m256i) -> __m256 {
    match level {
        0..=2 => _mm256_permutevar8x32_ps(regs[0], i),
        3 => _mm256_permutevar8x32_ps(regs[1], i),
        4 => {
            let (a, b) = (
                _mm256_permutevar8x32_ps(regs[2], i),
                _mm256_permutevar8x32_ps(regs[3], i),
            );
            _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(i)))
        }
        // SAFETY: node numbers stay below 2^depth <= 256 = nodes.len().
        _ => unsafe { _mm256_i32gather_ps::<4>(tree.nodes.as_ptr(), i) },
    }
}

/// Codes (node number minus the first leaf) of 8 values.
#[inline]
#[target_feature(enable = "avx2")]
fn search<const D: usize>(tree: &SearchTree, regs: &[__m256; 4], z: __m256) -> __m256i {
    let mut i = _mm256_set1_epi32(1);
    for level in 0..D {
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(lookup(tree, regs, level, i), z);
        // `below` is all ones (-1) where true: i = 2i + 1 there, 2i elsewhere.
        i = _mm256_sub_epi32(_mm256_add_epi32(i, i), _mm256_castps_si256(below));
    }
    _mm256_sub_epi32(i, _mm256_set1_epi32(1 << D))
}

/// Encodes whole 32-value steps for a tree of `D` levels; returns values done.
#[target_feature(enable = "avx2")]
fn encode_depth<const D: usize>(
    x: &[f32],
    offset: f32,
    mul: f32,
    tree: &SearchTree,
    codes: &mut [u8],
) -> usize {
    // SAFETY: nodes[0..32] are in bounds and 32-byte aligned (64-byte aligned struct).
    let regs: [__m256; 4] =
        std::array::from_fn(|r| unsafe { _mm256_load_ps(tree.nodes.as_ptr().add(8 * r)) });
    let (off, scale) = (_mm256_set1_ps(offset), _mm256_set1_ps(mul));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let n = x.len() / STEP * STEP;
    for s in (0..n).step_by(STEP) {
        let c: [__m256i; 4] = std::array::from_fn(|q| {
            // SAFETY: reads x[s+8q..s+8q+8], in bounds as s + 32 <= n <= x.len().
            let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(s + 8 * q)) };
            search::<D>(tree, &regs, _mm256_mul_ps(_mm256_sub_ps(v, off), scale))
        });
        // Codes are 0..=255, so the saturating packs are exact; they interleave
        // 128-bit halves, which the final dword permute undoes.
        let words = (
            _mm256_packs_epi32(c[0], c[1]),
            _mm256_packs_epi32(c[2], c[3]),
        );
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(words.0, words.1), order);
        // SAFETY: writes codes[s..s+32]; codes.len() == x.len() (checked by the caller).
        unsafe { _mm256_storeu_si256(codes.as_mut_ptr().add(s).cast(), bytes) };
    }
    n
}

/// As `scalar::decode`: a register permute for up to 8 levels, a gather beyond.
///
/// # Safety
/// The CPU must support AVX2, and every code must be `< levels.len()`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn decode(codes: &[u8], levels: &[f32], out: &mut [f32]) {
    let mut table = [0.0f32; 8];
    let small = levels.len() <= 8;
    if small {
        table[..levels.len()].copy_from_slice(levels);
    }
    // SAFETY: table is 8 readable floats.
    let reg = unsafe { _mm256_loadu_ps(table.as_ptr()) };
    let n = codes.len() / 8 * 8;
    for s in (0..n).step_by(8) {
        // SAFETY: reads codes[s..s+8], in bounds as s + 8 <= n.
        let i = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(codes.as_ptr().add(s).cast()) });
        let v = if small {
            _mm256_permutevar8x32_ps(reg, i)
        } else {
            // SAFETY: every code is < levels.len() (caller contract).
            unsafe { _mm256_i32gather_ps::<4>(levels.as_ptr(), i) }
        };
        // SAFETY: writes out[s..s+8]; out.len() == codes.len() (checked by the caller).
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(s), v) };
    }
    scalar::decode(&codes[n..], levels, &mut out[n..]);
}
