//! Accuracy of every kernel against an f64 dense reference, for every width,
//! granularity and shape class, plus argument validation and determinism.

use crate::error::NuqError;
use proptest::prelude::*;

use super::*;
use crate::pack::{packed_len, scalar::pack};

/// Named tolerance of every LUT path, relative to `Σ_j |x_j| (|loc_r| +
/// |s_rj · level_j|) + |bias_r|`: the kernels sum the offset-free products and
/// add `loc_r · Σx` once, so this (not `Σ |x_j w_rj|`, smaller when `loc`
/// cancels `s · level`) bounds their rounding. For quantized weights `loc` is
/// the mean, small against the spread, and the two scales nearly agree.
pub(super) const REL_TOL: f64 = 1e-5;

#[derive(Clone, Copy, Debug)]
pub(super) enum Gran {
    Tensor,
    Channel,
    Group(usize),
}

/// Owned test weights; `view()` borrows them as the kernels see them.
pub(super) struct Case {
    rows: usize,
    cols: usize,
    bits: u32,
    packed: Vec<u8>,
    levels: Vec<f32>,
    loc: Vec<f32>,
    scale: Vec<f32>,
    group: Option<usize>,
}

/// Small deterministic generator (splitmix64) so failures reproduce.
pub(super) struct Rng(pub u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub(super) fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(lo, hi)).collect()
    }
}

impl Case {
    pub(super) fn new(rows: usize, cols: usize, bits: u32, gran: Gran, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let mut levels = rng.vec(1 << bits, -3.0, 3.0);
        levels.sort_by(f32::total_cmp);
        let row_bytes = packed_len(cols, bits);
        let mut packed = vec![0u8; rows * row_bytes];
        for row in packed.chunks_exact_mut(row_bytes.max(1)).take(rows) {
            let codes: Vec<u8> = (0..cols)
                .map(|_| (rng.next() % (1 << bits)) as u8)
                .collect();
            pack(&codes, bits, row);
        }
        let (loc, scale, group) = match gran {
            Gran::Tensor => (rng.vec(1, -0.1, 0.1), rng.vec(1, 0.01, 0.2), None),
            Gran::Channel => (rng.vec(rows, -0.1, 0.1), rng.vec(rows, 0.01, 0.2), None),
            Gran::Group(g) => (vec![], rng.vec(rows * cols.div_ceil(g), 0.01, 0.2), Some(g)),
        };
        Case {
            rows,
            cols,
            bits,
            packed,
            levels,
            loc,
            scale,
            group,
        }
    }

    pub(super) fn view(&self) -> PackedWeights<'_> {
        PackedWeights {
            rows: self.rows,
            cols: self.cols,
            bits: self.bits,
            packed: &self.packed,
            levels: &self.levels,
            loc: &self.loc,
            scale: &self.scale,
            group_size: self.group,
        }
    }
}

/// Dense f64 product and its error scale (see `REL_TOL`), `[m, N]`.
pub(super) fn dense_f64(
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let (n, k) = (w.rows, w.cols);
    let (mut y, mut mag) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for r in 0..n {
            let b = bias.map_or(0.0, |b| f64::from(b[r]));
            let (mut s, mut a) = (b, b.abs());
            for j in 0..k {
                let c = scalar::code_at(w.row(r), j, w.bits);
                let (loc, dev) = (
                    f64::from(w.loc_of(r)),
                    f64::from(w.scale_of(r, j)) * f64::from(w.levels[c]),
                );
                let xj = f64::from(x[i * k + j]);
                s += xj * (loc + dev);
                a += xj.abs() * (loc.abs() + dev.abs());
            }
            y[i * n + r] = s;
            mag[i * n + r] = a;
        }
    }
    (y, mag)
}

/// Runs the reference and every available kernel and checks each against f64.
fn check_all(case: &Case, m: usize, seed: u64) -> std::result::Result<(), String> {
    let w = case.view();
    let mut rng = Rng(seed);
    let x = rng.vec(m * w.cols, -1.0, 1.0);
    let bias = rng.vec(w.rows, -0.5, 0.5);
    let bias = seed.is_multiple_of(2).then_some(&bias[..]);
    let (want, mag) = dense_f64(&x, m, &w, bias);
    let mut runs: Vec<(String, Vec<f32>)> = vec![];
    let mut y = vec![f32::NAN; m * w.rows];
    linear_reference(&x, m, &w, bias, &mut y).map_err(|e| e.to_string())?;
    runs.push(("reference".into(), y));
    // Both prefill products where they differ (m > SMALL_M).
    let prefills = if m > SMALL_M {
        &Prefill::ALL[..]
    } else {
        &Prefill::ALL[..1]
    };
    for k in Kernel::available() {
        for &p in prefills {
            let mut y = vec![f32::NAN; m * w.rows];
            linear_with_prefill(k, p, &x, m, &w, bias, &mut y).map_err(|e| e.to_string())?;
            runs.push((format!("{}/{}", k.name(), p.name()), y));
        }
    }
    for (name, y) in runs {
        for (idx, ((&got, &exp), &mg)) in y.iter().zip(&want).zip(&mag).enumerate() {
            let err = (f64::from(got) - exp).abs();
            if err.is_nan() || err > REL_TOL * mg + 1e-30 {
                return Err(format!(
                    "{name}: bits {} {}x{} group {:?} m {m} at {idx}: got {got}, want {exp} (scale {mg})",
                    w.bits, w.rows, w.cols, w.group_size
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_width_and_granularity_small_and_large_m() {
    let shapes = [(13, 45, 15), (7, 200, 40), (19, 135, 27), (5, 64, 64)];
    for bits in 1..=8 {
        for (n, k, g) in shapes {
            for gran in [Gran::Tensor, Gran::Channel, Gran::Group(g)] {
                let case = Case::new(n, k, bits, gran, u64::from(bits) * 1000 + k as u64);
                for m in [1, 2, 3, 5, 8, 11, 16, 17, 23, 40] {
                    check_all(&case, m, m as u64).unwrap();
                }
            }
        }
    }
}

#[test]
fn every_batch_size_up_to_300() {
    let case = Case::new(37, 77, 4, Gran::Group(11), 7);
    let odd = Case::new(33, 61, 3, Gran::Channel, 8);
    for m in 1..=300 {
        check_all(&case, m, m as u64).unwrap();
        if m % 7 == 0 || m == 300 {
            check_all(&odd, m, m as u64 + 1).unwrap();
        }
    }
}

#[test]
fn several_tiles_in_both_directions() {
    // N > TILE_N and K > TILE_K, with groups that cut chunks off byte alignment;
    // m = 300 spans two chunks of rows of x.
    for (bits, gran) in [
        (3, Gran::Group(100)),
        (4, Gran::Channel),
        (5, Gran::Group(275)),
        (8, Gran::Tensor),
    ] {
        let case = Case::new(70, 1100, bits, gran, 99);
        check_all(&case, 1, 1).unwrap();
        check_all(&case, 37, 2).unwrap();
        check_all(&case, 300, 3).unwrap();
    }
}

#[test]
fn gemm_prefill_every_width_granularity_and_tile_edge() {
    // 133 rows: two blocks of decoded rows, the last short; k = 1037: three
    // tiles along k, the last short; groups that divide k and that do not
    // (the last group of a row is short); m past one and two chunks of rows
    // of x only in the last case (the reference costs m·n·k).
    for bits in 1..=8 {
        for gran in [
            Gran::Tensor,
            Gran::Channel,
            Gran::Group(61),
            Gran::Group(100),
        ] {
            let case = Case::new(133, 1037, bits, gran, u64::from(bits) * 31);
            for m in [17, 33] {
                check_all(&case, m, m as u64).unwrap();
            }
        }
    }
    let case = Case::new(133, 1037, 4, Gran::Group(128), 5);
    check_all(&case, 256 + 7, 2).unwrap();
    let wide = Case::new(9, 300, 3, Gran::Channel, 6);
    check_all(&wide, 1100, 4).unwrap();
}

#[test]
fn phase_split_decode_chunks_and_tails() {
    // Chunk-aligned segments (128/256/512 codes per chunk on AVX-512, half on
    // AVX2) with a scalar tail; every block size of rows of x.
    for bits in 1..=4 {
        for (cols, gran) in [
            (1100, Gran::Channel),
            (1024, Gran::Group(128)),
            (1024, Gran::Group(512)),
            (600, Gran::Tensor),
        ] {
            let case = Case::new(21, cols, bits, gran, u64::from(bits) + cols as u64);
            for m in [1, 2, 3, 4, 7, 8, 15, 16] {
                check_all(&case, m, m as u64).unwrap();
            }
        }
    }
}

#[test]
fn degenerate_shapes_give_bias_or_nothing() {
    let empty_k = Case::new(3, 0, 4, Gran::Channel, 1);
    let mut y = vec![f32::NAN; 6];
    linear(&[], 2, &empty_k.view(), Some(&[1.0, 2.0, 3.0]), &mut y).unwrap();
    assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    let case = Case::new(3, 5, 4, Gran::Tensor, 1);
    linear(&[], 0, &case.view(), None, &mut []).unwrap();
    let no_rows = Case::new(0, 5, 2, Gran::Channel, 1);
    linear(&[0.0; 10], 2, &no_rows.view(), None, &mut []).unwrap();
}

#[test]
fn bad_lengths_are_errors_not_panics() {
    let case = Case::new(4, 9, 3, Gran::Group(3), 5);
    let w = case.view();
    let (x, mut y) = (vec![0.0f32; 18], vec![0.0f32; 8]);
    let err = |r: Result<()>| match r {
        Err(NuqError::LengthMismatch { what, .. }) => what,
        other => panic!("expected LengthMismatch, got {other:?}"),
    };
    assert_eq!(err(linear(&x[..17], 2, &w, None, &mut y)), "x");
    assert_eq!(err(linear(&x, 2, &w, None, &mut y[..7])), "y");
    assert_eq!(err(linear(&x, 2, &w, Some(&[0.0; 3]), &mut y)), "bias");
    assert_eq!(err(linear(&x, usize::MAX, &w, None, &mut y)), "x");
    assert_eq!(err(linear_reference(&x[..1], 2, &w, None, &mut y)), "x");
    let bad = PackedWeights { bits: 0, ..w };
    assert_eq!(
        linear(&x, 2, &bad, None, &mut y),
        Err(NuqError::InvalidBits(0))
    );
}

#[test]
fn bit_identical_for_any_thread_count() {
    let case = Case::new(70, 600, 4, Gran::Group(120), 3);
    let w = case.view();
    // m = 530: two chunks of rows of x for the gemm prefill.
    let x = Rng(4).vec(530 * 600, -1.0, 1.0);
    for (k, p) in Kernel::available()
        .into_iter()
        .flat_map(|k| Prefill::ALL.map(|p| (k, p)))
    {
        for m in [3, 20, 530] {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut y = vec![0.0f32; m * 70];
                pool.install(|| linear_with_prefill(k, p, &x[..m * 600], m, &w, None, &mut y))
                    .unwrap();
                y
            };
            let one = run(1);
            assert!(
                one.iter()
                    .zip(run(3))
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}/{}",
                k.name(),
                p.name()
            );
        }
    }
}

/// Runs `f` on a pool of 3 threads, so that `Exec::Rayon` splits for real.
pub(super) fn on_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(f)
}

/// Whether `a` and `b` hold the same floats bit for bit.
pub(super) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn serial_and_rayon_are_bit_identical() {
    // 40 x 96 stays below SERIAL_WORK up to m = 68, 130 x 520 is above it
    // from m = 4; m covers the decode driver (<= 16) and the prefill.
    let shapes: [(usize, usize, &[usize]); 2] =
        [(40, 96, &[1, 16, 17, 40]), (130, 520, &[4, 16, 300])];
    for (rows, cols, ms) in shapes {
        assert!(40 * rows * cols < SERIAL_WORK || 4 * rows * cols >= SERIAL_WORK);
        let x = Rng(9).vec(300 * cols, -1.0, 1.0);
        let bias = Rng(10).vec(rows, -0.5, 0.5);
        for (bits, gran) in (1..=8).flat_map(|b| {
            [
                Gran::Tensor,
                Gran::Channel,
                Gran::Group(cols / 4),
                Gran::Group(8),
            ]
            .map(|g| (b, g))
        }) {
            let case = Case::new(rows, cols, bits, gran, u64::from(bits));
            let w = case.view();
            let runs = Kernel::available()
                .into_iter()
                .flat_map(|k| Prefill::ALL.map(|p| (k, p)));
            for ((k, p), &m) in runs.flat_map(|kp| ms.iter().map(move |m| (kp, m))) {
                let x = &x[..m * cols];
                let run = |exec: Exec| {
                    let mut y = vec![f32::NAN; m * rows];
                    linear_in((exec, k, p), x, m, &w, Some(&bias), &mut y).unwrap();
                    y
                };
                let serial = run(Exec::Serial);
                let rayon = on_pool(|| run(Exec::Rayon));
                let mut auto = vec![f32::NAN; m * rows];
                on_pool(|| linear_with_prefill(k, p, x, m, &w, Some(&bias), &mut auto)).unwrap();
                let what = format!(
                    "{}/{} {bits} bits {gran:?} {rows}x{cols} m={m}",
                    k.name(),
                    p.name()
                );
                assert!(same_bits(&serial, &rayon), "{what}");
                assert!(same_bits(&serial, &auto), "{what}");
            }
        }
    }
}

fn gran_strategy(cols: usize) -> impl Strategy<Value = Gran> {
    let divisors: Vec<usize> = (1..=cols).filter(|&g| cols.is_multiple_of(g)).collect();
    prop_oneof![
        Just(Gran::Tensor),
        Just(Gran::Channel),
        proptest::sample::select(divisors).prop_map(Gran::Group),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_shapes_match_f64(
        (cols, gran) in (1usize..300).prop_flat_map(|c| (Just(c), gran_strategy(c))),
        rows in 1usize..40,
        bits in 1u32..=8,
        m in 1usize..40,
        seed in any::<u64>(),
    ) {
        let case = Case::new(rows, cols, bits, gran, seed);
        prop_assert_eq!(check_all(&case, m, seed), Ok(()));
    }
}
