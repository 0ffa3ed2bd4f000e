//! AVX-512F encode/decode, 16 values per vector. Encoding descends the search
//! tree with every tree level held in registers: levels 0..=4 are one 16-float
//! register each (`vpermps` indexes by the low 4 bits of the node number),
//! level 5 two (`vpermt2ps`, 5 bits), levels 6 and 7 pairs of those joined by
//! blends on node-number bits 5 and 6. Leftovers use the scalar reference.

use std::arch::x86_64::*;

use super::{scalar, tree::SearchTree};

const LANES: usize = 16;

/// As `scalar::encode`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
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
/// `regs[r]` holds `nodes[16r .. 16r + 16]`; levels 0..=3 all live in `regs[0]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn lookup(regs: &[__m512; 16], level: usize, i: __m512i) -> __m512 {
    let pair = |r: usize| _mm512_permutex2var_ps(regs[r], i, regs[r + 1]);
    let bit = |b: i32| _mm512_test_epi32_mask(i, _mm512_set1_epi32(b));
    match level {
        0..=3 => _mm512_permutexvar_ps(i, regs[0]),
        4 => _mm512_permutexvar_ps(i, regs[1]),
        5 => pair(2),
        6 => _mm512_mask_blend_ps(bit(32), pair(4), pair(6)),
        _ => {
            let lo = _mm512_mask_blend_ps(bit(32), pair(8), pair(10));
            let hi = _mm512_mask_blend_ps(bit(32), pair(12), pair(14));
            _mm512_mask_blend_ps(bit(64), lo, hi)
        }
    }
}

/// Vectors encoded side by side per loop step: the descent is a chain of
/// dependent permutes and compares per vector, and one chain at a time left
/// the core waiting on it (measured: benches/README.md).
const WAYS: usize = 8;

/// Encodes whole vectors for a tree of `D` levels, `WAYS` at a time, then
/// one at a time; returns values done.
#[target_feature(enable = "avx512f")]
fn encode_depth<const D: usize>(
    x: &[f32],
    offset: f32,
    mul: f32,
    tree: &SearchTree,
    codes: &mut [u8],
) -> usize {
    let wide = x.len() / (WAYS * LANES) * (WAYS * LANES);
    encode_steps::<D, WAYS>(&x[..wide], offset, mul, tree, &mut codes[..wide]);
    let n = x.len() / LANES * LANES;
    encode_steps::<D, 1>(&x[wide..n], offset, mul, tree, &mut codes[wide..n]);
    n
}

/// Encodes `x` (a whole number of `W`-vector steps), `W` vectors per step.
#[inline]
#[target_feature(enable = "avx512f")]
fn encode_steps<const D: usize, const W: usize>(
    x: &[f32],
    offset: f32,
    mul: f32,
    tree: &SearchTree,
    codes: &mut [u8],
) {
    debug_assert!(x.len().is_multiple_of(W * LANES) && codes.len() == x.len());
    // SAFETY: `tree.nodes` is 256 floats = 16 aligned vectors (64-byte aligned struct).
    let regs: [__m512; 16] =
        std::array::from_fn(|r| unsafe { _mm512_load_ps(tree.nodes.as_ptr().add(LANES * r)) });
    let (off, scale) = (_mm512_set1_ps(offset), _mm512_set1_ps(mul));
    let (one, leaf0) = (_mm512_set1_epi32(1), _mm512_set1_epi32(1 << D));
    for s in (0..x.len()).step_by(W * LANES) {
        let z: [__m512; W] = std::array::from_fn(|w| {
            // SAFETY: reads x[s + 16w .. s + 16w + 16], in bounds as x.len()
            // is a multiple of 16W.
            let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(s + LANES * w)) };
            _mm512_mul_ps(_mm512_sub_ps(v, off), scale)
        });
        let mut i = [one; W];
        for level in 0..D {
            for w in 0..W {
                let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(lookup(&regs, level, i[w]), z[w]);
                let twice = _mm512_add_epi32(i[w], i[w]);
                i[w] = _mm512_mask_add_epi32(twice, below, twice, one);
            }
        }
        for (w, &node) in i.iter().enumerate() {
            let c = _mm512_cvtepi32_epi8(_mm512_sub_epi32(node, leaf0));
            // SAFETY: writes codes[s + 16w .. s + 16w + 16]; codes.len() == x.len().
            unsafe { _mm_storeu_si128(codes.as_mut_ptr().add(s + LANES * w).cast(), c) };
        }
    }
}

/// As `scalar::decode`: permutes from registers for up to 32 levels, a gather
/// beyond. The caller has checked every code indexes `levels`.
///
/// # Safety
/// The CPU must support AVX-512F, and every code must be `< levels.len()`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn decode(codes: &[u8], levels: &[f32], out: &mut [f32]) {
    let mut table = [0.0f32; 32];
    let small = levels.len() <= 32;
    if small {
        table[..levels.len()].copy_from_slice(levels);
    }
    // SAFETY: table is 32 readable floats.
    let (lo, hi) = unsafe {
        (
            _mm512_loadu_ps(table.as_ptr()),
            _mm512_loadu_ps(table.as_ptr().add(16)),
        )
    };
    let n = codes.len() / LANES * LANES;
    for s in (0..n).step_by(LANES) {
        // SAFETY: reads codes[s..s+16], in bounds as s + 16 <= n.
        let i = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(codes.as_ptr().add(s).cast()) });
        let v = if small {
            _mm512_permutex2var_ps(lo, i, hi)
        } else {
            // SAFETY: every code is < levels.len() (caller contract), so each
            // gathered float lies inside `levels`.
            unsafe { _mm512_i32gather_ps::<4>(i, levels.as_ptr().cast()) }
        };
        // SAFETY: writes out[s..s+16]; out.len() == codes.len() (checked by the caller).
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(s), v) };
    }
    scalar::decode(&codes[n..], levels, &mut out[n..]);
}
