//! Tests of the whole tensor pipeline.

use proptest::prelude::*;

use super::*;
use crate::solve::implied_codebook;

/// A deterministic bell-shaped sample (sum of uniforms, a Gaussian-ish shape).
fn bell(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((0..6).map(|_| uniform()).sum::<f64>() - 3.0) as f32 * 0.05)
        .collect()
}

fn config(bits: u32, granularity: Granularity) -> Config {
    Config {
        bits,
        granularity,
        family: FamilyChoice::Auto,
        codebook: CodebookChoice::LloydMax,
    }
}

fn decoded(q: &Quantized) -> Vec<f32> {
    let mut out = vec![0f32; q.len()];
    dequantize(&q.view(), &mut out).unwrap();
    out
}

const GRANULARITIES: [Granularity; 3] = [
    Granularity::Tensor,
    Granularity::Channel,
    Granularity::Group(32),
];

#[test]
fn reported_error_is_the_error_of_the_decoded_tensor() {
    let x = bell(48 * 96, 1);
    for bits in 1..=8 {
        for g in GRANULARITIES {
            let q = quantize(&x, 48, 96, &config(bits, g)).unwrap();
            let sse: f64 = x
                .iter()
                .zip(decoded(&q))
                .map(|(&a, b)| f64::from(a - b).powi(2))
                .sum();
            assert!(
                (sse - q.sse).abs() <= 1e-9 * q.energy,
                "{bits} {g:?}: {sse} vs {}",
                q.sse
            );
            assert_eq!(q.packed.len(), 48 * q.row_bytes());
        }
    }
}

/// The energy, taken from the fit's moments, is the weights' `Σ v²` to
/// rounding, with constant rows (zero spread) and a shifted mean too.
#[test]
fn reported_energy_is_the_sum_of_squares() {
    let mut x: Vec<f32> = bell(48 * 96, 3).iter().map(|v| v + 0.3).collect();
    x[..96].fill(-1.25);
    let want: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
    for g in GRANULARITIES {
        let q = quantize(&x, 48, 96, &config(4, g)).unwrap();
        assert!(
            (q.energy - want).abs() <= 1e-12 * want,
            "{g:?}: {} vs {want}",
            q.energy
        );
    }
    let empty = quantize(&[], 0, 96, &config(4, Granularity::Channel)).unwrap();
    assert_eq!(empty.energy, 0.0);
}

#[test]
fn tensor_mode_reaches_the_lloyd_max_optimum() {
    // Sum-of-6-uniforms is close to Gaussian; its 4-bit error stays near the
    // Gaussian optimum 0.0095 of the variance.
    let x = bell(1 << 18, 2);
    let q = quantize(&x, 512, 512, &config(4, Granularity::Tensor)).unwrap();
    let var = q.fit_scale * q.fit_scale;
    assert_eq!(q.family, Family::Gaussian);
    assert!((q.mse() / var - 0.0095).abs() < 0.001, "{}", q.mse() / var);
}

#[test]
fn finer_granularity_never_hurts_much_and_groups_cost_only_fp16_scales() {
    let x = bell(64 * 256, 3);
    let errs: Vec<f64> = GRANULARITIES
        .iter()
        .map(|&g| quantize(&x, 64, 256, &config(4, g)).unwrap().mse())
        .collect();
    assert!(errs[1] <= errs[0] * 1.05, "{errs:?}");
    // Groups of 32, each scaled by its absmax, fit this light-tailed sample
    // better than one scale: 0.72 of the tensor's error when written.
    assert!(errs[2] <= errs[0] * 0.85, "{errs:?}");
    let q = quantize(&x, 64, 256, &config(4, Granularity::Group(32))).unwrap();
    // Codes and one f16 scale per group: the codebook is implied, not stored.
    assert_eq!(q.bits_per_weight(), 4.0 + 16.0 / 32.0);
    assert_eq!(q.levels, implied_codebook(q.family, 4, 32).unwrap());
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let x = bell(300 * 700, 4);
    for g in GRANULARITIES {
        let cfg = config(
            3,
            if g == Granularity::Group(32) {
                Granularity::Group(35)
            } else {
                g
            },
        );
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| quantize(&x, 300, 700, &cfg).unwrap())
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(7));
    }
}

#[test]
fn bad_input_is_rejected_before_any_work() {
    let x = vec![0.5f32; 12];
    assert_eq!(
        quantize(&x, 3, 4, &config(0, Granularity::Tensor)),
        Err(NuqError::InvalidBits(0))
    );
    assert_eq!(
        quantize(&x, 3, 4, &config(9, Granularity::Tensor)),
        Err(NuqError::InvalidBits(9))
    );
    let bad_group = NuqError::InvalidGroupSize {
        group_size: 0,
        row_len: 4,
    };
    assert_eq!(
        quantize(&x, 3, 4, &config(4, Granularity::Group(0))),
        Err(bad_group)
    );
    // A group size that does not divide the row leaves a short last group.
    let short = quantize(&x, 3, 4, &config(4, Granularity::Group(3))).unwrap();
    assert_eq!(short.scale.len(), 3 * 2);
    assert!(matches!(
        quantize(&x, 2, 4, &config(4, Granularity::Tensor)),
        Err(NuqError::LengthMismatch { .. })
    ));
    let mut nan = bell(64, 5);
    nan[40] = f32::NAN;
    nan[50] = f32::INFINITY;
    for g in GRANULARITIES {
        let err = quantize(&nan, 2, 32, &config(4, g)).unwrap_err();
        assert!(
            matches!(err, NuqError::NonFinite { index: 40, .. }),
            "{g:?}: {err}"
        );
    }
}

/// Found by fuzz/fuzz_quantize.py: Lloyd–Max tensor and channel codebooks fitted
/// to weights near `f32::MAX` decoded to infinity (8 bits, per channel) and
/// reported an infinite error; they are refused now. Fitted codebooks (f16
/// scales, saturating) decode such weights to finite values.
#[test]
fn weights_near_f32_max_are_refused_or_decode_finite() {
    let mut x = vec![-3.0e38f32; 40 * 21];
    x[0] = 3.0e38;
    for g in [Granularity::Tensor, Granularity::Channel] {
        for bits in [1, 8] {
            let err = quantize(&x, 40, 21, &config(bits, g)).unwrap_err();
            assert!(
                matches!(err, NuqError::Overflow { max_abs } if max_abs == 3.0e38),
                "{err}"
            );
        }
    }
    for g in GRANULARITIES {
        let cfg = Config {
            codebook: CodebookChoice::Fitted,
            ..config(8, g)
        };
        let q = quantize(&x, 40, 21, &cfg).unwrap();
        assert!(q.sse.is_finite());
        assert!(decoded(&q).iter().all(|v| v.is_finite()));
    }
}

#[test]
fn constant_and_empty_tensors_decode_exactly() {
    for g in [Granularity::Tensor, Granularity::Channel] {
        let x = vec![-3.75f32; 20];
        let q = quantize(&x, 4, 5, &config(2, g)).unwrap();
        assert_eq!(decoded(&q), x);
        assert_eq!((q.sse, q.d_gaussian, q.d_laplace), (0.0, 0.0, 0.0));
        let e = quantize(&[], 0, 5, &config(2, g)).unwrap();
        assert!(e.packed.is_empty() && decoded(&e).is_empty());
    }
    let zeros = quantize(&[0.0; 16], 2, 8, &config(4, Granularity::Group(4))).unwrap();
    assert_eq!(decoded(&zeros), vec![0.0; 16]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn decoded_values_come_from_the_codebook(
        rows in 1usize..6,
        groups in 1usize..5,
        bits in 1u32..=8,
        gran in 0usize..3,
        seed in 0u64..1000,
    ) {
        let cols = groups * 8;
        let x = bell(rows * cols, seed);
        let g = [Granularity::Tensor, Granularity::Channel, Granularity::Group(8)][gran];
        let q = quantize(&x, rows, cols, &config(bits, g)).unwrap();
        let w = q.view();
        let out = decoded(&q);
        for r in 0..rows {
            for j in 0..cols {
                let s = w.scales_of(r)[j / w.scale_span()];
                let v = out[r * cols + j];
                prop_assert!(q.levels.iter().any(|&l| w.loc_of(r) + s * l == v));
            }
        }
        // Group codebooks are rounded to f16, which may merge neighbours.
        let strict = !matches!(g, Granularity::Group(_));
        prop_assert!(q.levels.windows(2).all(|p| p[0] < p[1] || (!strict && p[0] == p[1])));
    }
}
