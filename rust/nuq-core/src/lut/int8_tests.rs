//! The int8-activation path against its stated error bound (see
//! [`linear_int8`]), the VNNI kernel against the scalar one, and its
//! fallbacks.

use super::scalar::code_at;
use super::tests::{dense_f64, on_pool, same_bits, Case, Gran, Rng, REL_TOL};
use super::*;
use crate::error::NuqError;

/// Every int8 kernel this CPU can run.
fn int8_kernels() -> Vec<Int8Kernel> {
    [Some(Int8Kernel::scalar()), Int8Kernel::vnni()]
        .into_iter()
        .flatten()
        .collect()
}

/// The bound of [`linear_int8`] for every output, plus the f32 rounding
/// allowance of the exact kernels, `[m, N]`.
fn bound(x: &[f32], m: usize, w: &PackedWeights) -> Vec<f64> {
    let (n, k) = (w.rows, w.cols);
    let block = w.group_size.unwrap_or(INT8_BLOCK);
    let amax = w.levels.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
    let sl = f64::from(if amax > 0.0 { amax / 127.0 } else { 1.0 });
    let (_, mag) = dense_f64(x, m, w, None);
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let sx: Vec<f64> = row
            .chunks(block)
            .map(|b| f64::from(b.iter().fold(0.0f32, |a, &v| a.max(v.abs())) / 127.0))
            .collect();
        for r in 0..n {
            let mut e = 0.0;
            for (j, &xj) in row.iter().enumerate() {
                let level = f64::from(w.levels[code_at(w.row(r), j, w.bits)]);
                let s = f64::from(w.scale_of(r, j)).abs();
                let h = sx[j / block] / 2.0;
                e += s * (h * level.abs() + (f64::from(xj).abs() + h) * sl / 2.0);
            }
            out[i * n + r] = e * (1.0 + 1e-6) + REL_TOL * mag[i * n + r];
        }
    }
    out
}

/// Runs every int8 kernel on one case; returns the largest error as a
/// fraction of the bound, or a description of the first output outside it.
fn check_case(case: &Case, m: usize, seed: u64) -> std::result::Result<f64, String> {
    let w = case.view();
    let mut rng = Rng(seed);
    let x = rng.vec(m * w.cols, -1.0, 1.0);
    let bias = rng.vec(w.rows, -0.5, 0.5);
    let (want, _) = dense_f64(&x, m, &w, Some(&bias));
    let limit = bound(&x, m, &w);
    let mut worst = 0.0f64;
    for kernel in int8_kernels() {
        let mut y = vec![f32::NAN; m * w.rows];
        linear_int8_with(kernel, &x, m, &w, Some(&bias), &mut y).map_err(|e| e.to_string())?;
        for (idx, ((&got, &exp), &lim)) in y.iter().zip(&want).zip(&limit).enumerate() {
            let err = (f64::from(got) - exp).abs();
            if err.is_nan() || err > lim {
                return Err(format!(
                    "{kernel:?}: bits {} {}x{} group {:?} m {m} at {idx}: got {got}, want {exp}, bound {lim}",
                    w.bits, w.rows, w.cols, w.group_size
                ));
            }
            worst = worst.max(err / lim);
        }
    }
    Ok(worst)
}

#[test]
fn int8_outputs_stay_within_the_stated_bound() {
    // K not a multiple of 4, of the block or of the tile; groups that do not
    // divide the tile; N across tiles; m across panels and chunks of rows.
    let shapes = [(13, 84, 12), (50, 300, 100), (19, 520, 20), (5, 64, 64)];
    for bits in 1..=8 {
        for (n, k, g) in shapes {
            for gran in [Gran::Tensor, Gran::Channel, Gran::Group(g)] {
                let case = Case::new(n, k, bits, gran, u64::from(bits) * 100 + k as u64);
                for m in [1, 9, 17, 40] {
                    check_case(&case, m, m as u64).unwrap();
                }
            }
        }
        let odd_k = Case::new(11, 45, bits, Gran::Channel, u64::from(bits));
        check_case(&odd_k, 20, 7).unwrap();
    }
    let tall = Case::new(7, 33, 4, Gran::Channel, 3);
    check_case(&tall, 300, 1).unwrap();
}

#[test]
fn the_bound_is_not_loose_by_orders_of_magnitude() {
    // The bound assumes every rounding goes the same way, so real errors use
    // a small share of it (7.5% at most here when written); the exact fp32
    // kernels stay near 0, so this fails if the int8 rounding were skipped.
    let case = Case::new(48, 512, 4, Gran::Group(128), 11);
    let worst = check_case(&case, 32, 5).unwrap();
    assert!(worst > 0.05, "largest error is only {worst} of the bound");
}

#[test]
fn vnni_equals_the_scalar_kernel_bit_for_bit() {
    let Some(vnni) = Int8Kernel::vnni() else {
        eprintln!("SKIPPED vnni_equals_the_scalar_kernel_bit_for_bit: this CPU lacks AVX512-VNNI");
        return;
    };
    for (bits, gran, k) in [
        (4, Gran::Group(128), 1024),
        (3, Gran::Channel, 777),
        (8, Gran::Tensor, 300),
        (5, Gran::Group(20), 260),
        (2, Gran::Group(4), 64),
    ] {
        let case = Case::new(61, k, bits, gran, 9);
        let w = case.view();
        let x = Rng(2).vec(70 * k, -2.0, 2.0);
        let run = |kernel| {
            let mut y = vec![0.0f32; 70 * 61];
            linear_int8_with(kernel, &x, 70, &w, None, &mut y).unwrap();
            y
        };
        let (a, b) = (run(Int8Kernel::scalar()), run(vnni));
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}

#[test]
fn int8_falls_back_to_the_exact_kernels() {
    // With the scalar int8 kernel selected (as `NUQ_ISA=scalar` does), so on
    // any CPU: groups of 6 cannot be cut into quads, so the explicit call
    // refuses and the automatic one runs `linear`; so does a small batch, or
    // no int8 kernel. A batch of 20 in groups of 12 runs int8 and differs.
    let int8 = Some(Int8Kernel::scalar());
    let case = Case::new(9, 36, 4, Gran::Group(6), 1);
    let w = case.view();
    let x = Rng(3).vec(20 * 36, -1.0, 1.0);
    let (mut a, mut b) = (vec![0.0f32; 20 * 9], vec![0.0f32; 20 * 9]);
    assert_eq!(
        linear_int8_with(Int8Kernel::scalar(), &x, 20, &w, None, &mut a),
        Err(NuqError::Int8GroupSize(6))
    );
    assert_eq!(int8_plan(int8, 20, &w), None);
    linear_int8_auto(int8, &x, 20, &w, None, &mut a).unwrap();
    linear(&x, 20, &w, None, &mut b).unwrap();
    assert_eq!(a, b);
    let grouped = Case::new(9, 36, 4, Gran::Group(12), 1);
    let g = grouped.view();
    for (m, kernel, want) in [
        (4, int8, None),
        (16, int8, None),
        (17, None, None),
        (17, int8, int8),
    ] {
        assert_eq!(int8_plan(kernel, m, &g), want, "m {m}, {kernel:?}");
    }
    let run = |m: usize, kernel| {
        let mut y = vec![0.0f32; m * 9];
        linear_int8_auto(kernel, &x[..m * 36], m, &g, None, &mut y).unwrap();
        let mut exact = vec![0.0f32; m * 9];
        linear(&x[..m * 36], m, &g, None, &mut exact).unwrap();
        (y, exact)
    };
    let (y, exact) = run(16, int8);
    assert_eq!(y, exact);
    let (y, exact) = run(20, int8);
    assert_ne!(y, exact, "the int8 kernel did not run");
}

#[test]
fn int8_checks_lengths_and_propagates_non_finite_input() {
    let case = Case::new(4, 16, 3, Gran::Channel, 5);
    let w = case.view();
    let mut y = vec![0.0f32; 2 * 4];
    assert!(matches!(
        linear_int8_with(Int8Kernel::scalar(), &[0.0; 31], 2, &w, None, &mut y),
        Err(NuqError::LengthMismatch { what: "x", .. })
    ));
    let mut x = vec![0.5f32; 2 * 16];
    x[20] = f32::NAN;
    for kernel in int8_kernels() {
        linear_int8_with(kernel, &x, 2, &w, None, &mut y).unwrap();
        assert!(y[..4].iter().all(|v| v.is_finite()));
        assert!(y[4..].iter().all(|v| v.is_nan()));
    }
}

#[test]
fn int8_is_bit_identical_for_any_thread_count() {
    let case = Case::new(70, 600, 4, Gran::Group(120), 3);
    let w = case.view();
    let x = Rng(4).vec(40 * 600, -1.0, 1.0);
    for kernel in int8_kernels() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut y = vec![0.0f32; 40 * 70];
            pool.install(|| linear_int8_with(kernel, &x, 40, &w, None, &mut y))
                .unwrap();
            y
        };
        let one = run(1);
        assert!(one
            .iter()
            .zip(run(3))
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn int8_serial_and_rayon_are_bit_identical() {
    // 48 rows of x against 40 x 96 (below SERIAL_WORK) and 70 x 600 (above).
    for (rows, cols) in [(40, 96), (70, 600)] {
        let x = Rng(5).vec(48 * cols, -1.0, 1.0);
        for gran in [Gran::Tensor, Gran::Channel, Gran::Group(24)] {
            let case = Case::new(rows, cols, 4, gran, 6);
            let w = case.view();
            for kernel in int8_kernels() {
                let run = |exec: Exec| {
                    let mut y = vec![f32::NAN; 48 * rows];
                    linear_int8_in((exec, kernel), &x, 48, &w, None, &mut y).unwrap();
                    y
                };
                let serial = run(Exec::Serial);
                assert!(same_bits(&serial, &on_pool(|| run(Exec::Rayon))));
            }
        }
    }
}
