//! Public entry points that run the selected kernel (see `Kernel::selected`).
//! Every kernel produces byte-for-byte the output of the scalar reference.

use super::{packed_len, scalar, Kernel};

/// Packs `codes` into `out` (`packed_len(codes.len(), bits)` bytes) with the
/// selected kernel. Callers guarantee every code is `< 2^bits`; higher bits
/// are ignored (masked) by every kernel.
///
/// # Panics
/// If `bits` is outside 1..=8 or `out` has the wrong length.
pub fn pack(codes: &[u8], bits: u32, out: &mut [u8]) {
    pack_with(Kernel::selected(), codes, bits, out);
}

/// Unpacks `out.len()` codes of `bits` bits from `packed` with the selected
/// kernel. Unused high bits of the last byte are ignored.
///
/// # Panics
/// If `bits` is outside 1..=8 or `packed` has the wrong length.
pub fn unpack(packed: &[u8], bits: u32, out: &mut [u8]) {
    unpack_with(Kernel::selected(), packed, bits, out);
}

/// `pack` with a named kernel.
///
/// # Panics
/// As `pack`, and if the CPU cannot run `kernel`.
pub fn pack_with(kernel: Kernel, codes: &[u8], bits: u32, out: &mut [u8]) {
    check(kernel, bits, out.len(), codes.len(), "pack: output length");
    match kernel {
        Kernel::Scalar => scalar::pack(codes, bits, out),
        // SAFETY: `check` verified the CPU supports AVX2.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { super::x86_avx2::pack(codes, bits, out) },
        // SAFETY: `check` verified the CPU supports AVX-512 F and BW.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { super::x86_avx512::pack(codes, bits, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("checked above"),
    }
}

/// `unpack` with a named kernel.
///
/// # Panics
/// As `unpack`, and if the CPU cannot run `kernel`.
pub fn unpack_with(kernel: Kernel, packed: &[u8], bits: u32, out: &mut [u8]) {
    check(
        kernel,
        bits,
        packed.len(),
        out.len(),
        "unpack: input length",
    );
    match kernel {
        Kernel::Scalar => scalar::unpack(packed, bits, out),
        // SAFETY: `check` verified the CPU supports AVX2.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { super::x86_avx2::unpack(packed, bits, out) },
        // SAFETY: `check` verified the CPU supports AVX-512 F and BW.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { super::x86_avx512::unpack(packed, bits, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("checked above"),
    }
}

/// The preconditions the SIMD kernels rely on for memory safety.
fn check(kernel: Kernel, bits: u32, packed: usize, n: usize, what: &str) {
    assert!((1..=8).contains(&bits), "bits must be in 1..=8, got {bits}");
    assert_eq!(packed, packed_len(n, bits), "{what}");
    assert!(
        kernel.is_available(),
        "kernel {} not supported by this CPU",
        kernel.name()
    );
}

#[cfg(test)]
mod tests {
    use super::super::available_kernels;
    use super::*;
    use proptest::prelude::*;

    const LENGTHS: [usize; 14] = [0, 1, 7, 8, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000];

    fn codes(n: usize, bits: u32, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 56) as u8 & ((1u16 << bits) - 1) as u8
            })
            .collect()
    }

    /// Packs and unpacks with `kernel` and the reference; both directions must agree.
    fn assert_matches_scalar(kernel: Kernel, codes: &[u8], bits: u32) {
        let len = packed_len(codes.len(), bits);
        let (mut want, mut got) = (vec![0u8; len], vec![0xAAu8; len]);
        scalar::pack(codes, bits, &mut want);
        pack_with(kernel, codes, bits, &mut got);
        assert_eq!(got, want, "{kernel:?} pack, bits {bits}, n {}", codes.len());
        let mut back = vec![0xAAu8; codes.len()];
        unpack_with(kernel, &want, bits, &mut back);
        assert_eq!(
            back,
            codes,
            "{kernel:?} unpack, bits {bits}, n {}",
            codes.len()
        );
    }

    #[test]
    fn every_kernel_matches_scalar_for_every_width_and_length() {
        for kernel in available_kernels() {
            for bits in 1..=8 {
                for (i, n) in LENGTHS.into_iter().enumerate() {
                    assert_matches_scalar(kernel, &codes(n, bits, i as u64), bits);
                }
            }
        }
    }

    #[test]
    fn all_ones_and_all_zeros_keep_unused_bits_zero() {
        for kernel in available_kernels() {
            for bits in 1..=8 {
                for n in [65, 130, 1001] {
                    assert_matches_scalar(kernel, &vec![((1u16 << bits) - 1) as u8; n], bits);
                    assert_matches_scalar(kernel, &vec![0; n], bits);
                }
            }
        }
    }

    #[test]
    fn out_of_range_codes_are_masked_like_scalar() {
        let raw: Vec<u8> = (0..300).map(|i| (i * 37 + 11) as u8).collect();
        for kernel in available_kernels() {
            for bits in 1..=8 {
                let len = packed_len(raw.len(), bits);
                let (mut want, mut got) = (vec![0u8; len], vec![0u8; len]);
                scalar::pack(&raw, bits, &mut want);
                pack_with(kernel, &raw, bits, &mut got);
                assert_eq!(got, want, "{kernel:?} bits {bits}");
            }
        }
    }

    #[test]
    fn unpack_ignores_garbage_in_unused_last_bits() {
        for kernel in available_kernels() {
            for bits in [1, 3, 5, 7] {
                let n = 131; // 131 * bits is not a multiple of 8 for odd bits
                let mut packed = vec![0u8; packed_len(n, bits)];
                *packed.last_mut().unwrap() = 0xFF;
                let (mut want, mut got) = (vec![0u8; n], vec![0u8; n]);
                scalar::unpack(&packed, bits, &mut want);
                unpack_with(kernel, &packed, bits, &mut got);
                assert_eq!(got, want, "{kernel:?} bits {bits}");
            }
        }
    }

    #[test]
    fn dispatching_entry_points_round_trip() {
        let c = codes(777, 5, 9);
        let mut packed = vec![0u8; packed_len(c.len(), 5)];
        pack(&c, 5, &mut packed);
        let mut back = vec![0u8; c.len()];
        unpack(&packed, 5, &mut back);
        assert_eq!(back, c);
    }

    #[test]
    #[should_panic(expected = "pack: output length")]
    fn wrong_output_length_panics() {
        pack(&[1, 2, 3], 4, &mut [0u8; 1]);
    }

    proptest! {
        #[test]
        fn random_lengths_match_scalar(
            bits in 1u32..=8,
            raw in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            let c: Vec<u8> = raw.iter().map(|&b| b & ((1u16 << bits) - 1) as u8).collect();
            for kernel in available_kernels() {
                assert_matches_scalar(kernel, &c, bits);
            }
        }

        #[test]
        fn random_streams_unpack_like_scalar(
            bits in 1u32..=8,
            n in 0usize..700,
            seed in any::<u64>(),
        ) {
            let packed = codes(packed_len(n, bits), 8, seed);
            let mut want = vec![0u8; n];
            scalar::unpack(&packed, bits, &mut want);
            for kernel in available_kernels() {
                let mut got = vec![0u8; n];
                unpack_with(kernel, &packed, bits, &mut got);
                prop_assert_eq!(&got, &want, "{:?}", kernel);
            }
        }
    }
}
