//! Encoding weights to cell indices ("codes") and decoding codes to levels.
//!
//! A weight `x` is standardized as `z = (x - offset) * mul`, computed exactly
//! so in f32 (a subtraction, then a multiplication, never fused), and its code
//! is the number of quantizer boundaries strictly below `z`: a `z` equal to a
//! boundary belongs to the lower cell, and NaN maps to 0. Every kernel gives
//! bit-for-bit the scalar result. Kernels are chosen as for `pack` (same
//! `Kernel`, same `NUQ_ISA` override).

mod scalar;
mod tree;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

pub use crate::pack::Kernel;

use crate::error::{NuqError, Result};
use tree::SearchTree;

/// `codes[i]` = number of `boundaries` `< (x[i] - offset) * mul`, with the
/// selected kernel. `boundaries` are the `N - 1` ascending cell edges of an
/// `N`-level quantizer in standardized units (1..=255 of them).
///
/// # Panics
/// If `codes.len() != x.len()`, or `boundaries` is empty, longer than 255,
/// contains NaN or is not ascending.
pub fn encode(x: &[f32], offset: f32, mul: f32, boundaries: &[f32], codes: &mut [u8]) {
    encode_with(Kernel::selected(), x, offset, mul, boundaries, codes);
}

/// `encode` with a named kernel.
///
/// # Panics
/// As `encode`, and if the CPU cannot run `kernel`.
pub fn encode_with(
    kernel: Kernel,
    x: &[f32],
    offset: f32,
    mul: f32,
    boundaries: &[f32],
    codes: &mut [u8],
) {
    Encoder::with_kernel(kernel, boundaries).encode(x, offset, mul, codes);
}

/// Boundaries prepared once (checked, laid out as a search tree) for many
/// `encode` calls, e.g. one per group of a tensor.
pub struct Encoder {
    kernel: Kernel,
    tree: Box<SearchTree>,
}

impl Encoder {
    /// Prepares `boundaries` for the selected kernel.
    ///
    /// # Panics
    /// As `encode`.
    pub fn new(boundaries: &[f32]) -> Encoder {
        Encoder::with_kernel(Kernel::selected(), boundaries)
    }

    /// Prepares `boundaries` for a named kernel.
    ///
    /// # Panics
    /// As `encode`, and if the CPU cannot run `kernel`.
    pub fn with_kernel(kernel: Kernel, boundaries: &[f32]) -> Encoder {
        assert!(
            (1..=255).contains(&boundaries.len()),
            "encode: {} boundaries, need 1..=255",
            boundaries.len()
        );
        assert!(
            boundaries.windows(2).all(|w| w[0] <= w[1]) && !boundaries.iter().any(|b| b.is_nan()),
            "encode: boundaries must be ascending and not NaN"
        );
        assert!(
            kernel.is_available(),
            "kernel {} not supported by this CPU",
            kernel.name()
        );
        Encoder {
            kernel,
            tree: Box::new(SearchTree::new(boundaries)),
        }
    }

    /// The kernel this encoder runs (one this CPU supports).
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// `codes[i]` = number of boundaries `< (x[i] - offset) * mul`.
    ///
    /// # Panics
    /// If `codes.len() != x.len()`.
    pub fn encode(&self, x: &[f32], offset: f32, mul: f32, codes: &mut [u8]) {
        assert_eq!(codes.len(), x.len(), "encode: codes length");
        let tree = &*self.tree;
        match self.kernel {
            Kernel::Scalar => scalar::encode(x, offset, mul, tree, codes),
            // SAFETY: availability checked when the encoder was made; lengths agree.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86_avx2::encode(x, offset, mul, tree, codes) },
            // SAFETY: availability checked when the encoder was made; lengths agree.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { x86_avx512::encode(x, offset, mul, tree, codes) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("checked when the encoder was made"),
        }
    }
}

/// `out[i] = levels[codes[i]]` with the selected kernel (`levels`: 1..=256
/// reconstruction values, e.g. standardized levels already scaled back).
///
/// # Errors
/// `LengthMismatch` if `out.len() != codes.len()`; `CodeOutOfRange` (first
/// offending index) if a code does not index `levels`, before writing `out`.
pub fn decode(codes: &[u8], levels: &[f32], out: &mut [f32]) -> Result<()> {
    decode_with(Kernel::selected(), codes, levels, out)
}

/// `decode` with a named kernel.
///
/// # Panics
/// If `levels` is empty or longer than 256, or the CPU cannot run `kernel`.
pub fn decode_with(kernel: Kernel, codes: &[u8], levels: &[f32], out: &mut [f32]) -> Result<()> {
    assert!(
        (1..=256).contains(&levels.len()),
        "decode: {} levels, need 1..=256",
        levels.len()
    );
    assert!(
        kernel.is_available(),
        "kernel {} not supported by this CPU",
        kernel.name()
    );
    check_decode(codes, levels.len(), out.len())?;
    match kernel {
        Kernel::Scalar => scalar::decode(codes, levels, out),
        // SAFETY: availability, lengths and code range checked above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86_avx2::decode(codes, levels, out) },
        // SAFETY: availability, lengths and code range checked above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { x86_avx512::decode(codes, levels, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("checked above"),
    }
    Ok(())
}

/// The memory-safety preconditions of the SIMD decoders (gathers index by code).
fn check_decode(codes: &[u8], levels: usize, out: usize) -> Result<()> {
    if out != codes.len() {
        return Err(NuqError::LengthMismatch {
            what: "decode output",
            expected: codes.len(),
            actual: out,
        });
    }
    // A max over bytes vectorizes well; locate the culprit only on failure.
    if levels < 256
        && codes
            .iter()
            .max()
            .is_some_and(|&m| usize::from(m) >= levels)
    {
        let index = codes
            .iter()
            .position(|&c| usize::from(c) >= levels)
            .unwrap_or(0);
        return Err(NuqError::CodeOutOfRange {
            index,
            code: codes[index],
            levels,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::available_kernels;
    use proptest::prelude::*;

    const COUNTS: [usize; 11] = [1, 2, 3, 5, 7, 15, 31, 63, 100, 127, 255];

    /// The definition, straight from the doc comment.
    fn naive(x: &[f32], offset: f32, mul: f32, boundaries: &[f32]) -> Vec<u8> {
        x.iter()
            .map(|&v| {
                let z = (v - offset) * mul;
                boundaries.iter().filter(|&&b| b < z).count() as u8
            })
            .collect()
    }

    /// Bell-shaped spread of `nb` ascending boundaries, roughly in -4..4.
    fn boundaries(nb: usize) -> Vec<f32> {
        (1..=nb)
            .map(|j| (j as f32 / (nb + 1) as f32 - 0.5).powi(3) * 32.0)
            .collect()
    }

    fn next_up(v: f32) -> f32 {
        f32::from_bits(if v >= 0.0 {
            v.to_bits() + 1
        } else {
            v.to_bits() - 1
        })
    }

    fn next_down(v: f32) -> f32 {
        -next_up(-v)
    }

    /// Inputs that stress the comparisons: every boundary and its neighbours,
    /// signed zeros, denormals, huge and infinite values, NaN, then a ramp.
    fn tricky(bounds: &[f32]) -> Vec<f32> {
        let mut x: Vec<f32> = bounds
            .iter()
            .flat_map(|&b| [b, next_up(b), next_down(b)])
            .collect();
        let dn = f32::from_bits(1);
        x.extend([
            0.0,
            -0.0,
            dn,
            -dn,
            1e-40,
            -1e-40,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        x.extend((0..203).map(|i| (i as f32 - 101.0) * 0.047));
        x
    }

    fn assert_all_kernels(x: &[f32], offset: f32, mul: f32, bounds: &[f32]) {
        let want = naive(x, offset, mul, bounds);
        for kernel in available_kernels() {
            for n in [x.len(), x.len() / 2, 31, 17, 1, 0] {
                let n = n.min(x.len());
                let mut got = vec![0xEEu8; n];
                encode_with(kernel, &x[..n], offset, mul, bounds, &mut got);
                assert_eq!(
                    got,
                    want[..n],
                    "{kernel:?}, {} boundaries, n {n}",
                    bounds.len()
                );
            }
        }
    }

    #[test]
    fn every_kernel_counts_exactly_for_every_boundary_count() {
        for nb in COUNTS {
            let b = boundaries(nb);
            assert_all_kernels(&tricky(&b), 0.0, 1.0, &b);
            assert_all_kernels(&tricky(&b), 0.37, 1.7, &b);
        }
    }

    #[test]
    fn signed_zero_and_denormal_boundaries() {
        let dn = f32::from_bits(1);
        let b = [-1e-40, -dn, -0.0, 0.0, dn, 1e-40, 1e-38];
        assert_all_kernels(&tricky(&b), 0.0, 1.0, &b);
        // Denormal z from normal x: 1e-30 * 1e-10 underflows to 1e-40.
        assert_all_kernels(&tricky(&b), 0.0, 1e-10, &b);
    }

    #[test]
    fn equal_to_a_boundary_is_the_lower_cell() {
        for kernel in available_kernels() {
            let x = vec![0.5f32; 40];
            let mut codes = vec![0u8; 40];
            encode_with(kernel, &x, 0.0, 1.0, &[-0.5, 0.5, 1.0], &mut codes);
            assert!(codes.iter().all(|&c| c == 1), "{kernel:?}");
        }
    }

    #[test]
    #[should_panic(expected = "ascending")]
    fn unsorted_boundaries_panic() {
        encode(&[0.0], 0.0, 1.0, &[1.0, 0.0], &mut [0]);
    }

    #[test]
    fn decode_matches_scalar_for_every_table_size() {
        for levels_n in [1usize, 2, 4, 7, 8, 9, 16, 17, 32, 33, 64, 255, 256] {
            let levels: Vec<f32> = (0..levels_n).map(|j| j as f32 * 0.25 - 3.0).collect();
            let codes: Vec<u8> = (0..1000)
                .map(|i| ((i * 97 + 13) % levels_n) as u8)
                .collect();
            let want: Vec<f32> = codes.iter().map(|&c| levels[usize::from(c)]).collect();
            for kernel in available_kernels() {
                for n in [0, 1, 7, 8, 15, 16, 17, 33, 1000] {
                    let mut out = vec![f32::NAN; n];
                    decode_with(kernel, &codes[..n], &levels, &mut out).unwrap();
                    assert_eq!(out, want[..n], "{kernel:?}, {levels_n} levels, n {n}");
                }
            }
        }
    }

    #[test]
    fn decode_reports_the_first_bad_code() {
        let mut out = vec![0.0f32; 40];
        let mut codes = vec![1u8; 40];
        codes[29] = 4;
        codes[33] = 9;
        for kernel in available_kernels() {
            let err = decode_with(kernel, &codes, &[0.0; 4], &mut out).unwrap_err();
            assert_eq!(
                err,
                NuqError::CodeOutOfRange {
                    index: 29,
                    code: 4,
                    levels: 4
                }
            );
        }
        let err = decode(&codes, &[0.0; 16], &mut out[..3]).unwrap_err();
        assert!(matches!(
            err,
            NuqError::LengthMismatch {
                expected: 40,
                actual: 3,
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn random_inputs_match_the_definition(
            mut b in proptest::collection::vec(-5.0f32..5.0, 1..=255),
            x in proptest::collection::vec(-1e3f32..1e3, 0..300),
            offset in -10.0f32..10.0,
            mul in -3.0f32..3.0,
        ) {
            b.sort_by(f32::total_cmp);
            let want = naive(&x, offset, mul, &b);
            for kernel in available_kernels() {
                let mut got = vec![0u8; x.len()];
                encode_with(kernel, &x, offset, mul, &b, &mut got);
                prop_assert_eq!(&got, &want, "{:?}", kernel);
            }
        }

        #[test]
        fn decode_inverts_into_levels(
            levels in proptest::collection::vec(-1e6f32..1e6, 1..=256),
            raw in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let codes: Vec<u8> = raw.iter().map(|&r| (usize::from(r) % levels.len()) as u8).collect();
            for kernel in available_kernels() {
                let mut out = vec![0.0f32; codes.len()];
                decode_with(kernel, &codes, &levels, &mut out).unwrap();
                for (o, &c) in out.iter().zip(&codes) {
                    prop_assert_eq!(o.to_bits(), levels[usize::from(c)].to_bits());
                }
            }
        }
    }
}
