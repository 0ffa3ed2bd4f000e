//! Convolution against an explicit im2col (written naively here) fed to the
//! f64 dense reference of the matmul tests, for every kernel.

use proptest::prelude::*;

use super::*;
use crate::lut::tests::{dense_f64, on_pool, same_bits, Case, Gran, Rng, REL_TOL};
use crate::lut::Exec;

/// Explicit im2col of group `g` of image `b`: `[positions, patch]`.
fn im2col(s: &ConvShape, x: &[f32], b: usize, g: usize) -> Vec<f32> {
    let [oh, ow] = s.output_size().unwrap();
    let c_g = s.in_channels / s.groups;
    let mut cols = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            for c in g * c_g..(g + 1) * c_g {
                for dy in 0..s.kernel[0] {
                    for dx in 0..s.kernel[1] {
                        let iy = (oy * s.stride[0] + dy * s.dilation[0]) as isize
                            - s.padding[0] as isize;
                        let ix = (ox * s.stride[1] + dx * s.dilation[1]) as isize
                            - s.padding[1] as isize;
                        let inside = (0..s.height as isize).contains(&iy)
                            && (0..s.width as isize).contains(&ix);
                        cols.push(if inside {
                            x[((b * s.in_channels + c) * s.height + iy as usize) * s.width
                                + ix as usize]
                        } else {
                            0.0
                        });
                    }
                }
            }
        }
    }
    cols
}

fn shape(batch: usize, cin: usize, hw: [usize; 2], k: [usize; 2], spdg: [usize; 4]) -> ConvShape {
    let [stride, padding, dilation, groups] = spdg;
    ConvShape {
        batch,
        in_channels: cin,
        height: hw[0],
        width: hw[1],
        kernel: k,
        stride: [stride, stride],
        padding: [padding, padding + 1],
        dilation: [dilation, dilation],
        groups,
    }
}

/// Every kernel's conv2d against the reference; `Err` names the first miss.
fn check(
    s: &ConvShape,
    cout: usize,
    bits: u32,
    gran: Gran,
    seed: u64,
) -> std::result::Result<(), String> {
    let patch = s.in_channels / s.groups * s.kernel[0] * s.kernel[1];
    let case = Case::new(cout, patch, bits, gran, seed);
    let w = case.view();
    let mut rng = Rng(seed ^ 0x5eed);
    let x = rng.vec(s.batch * s.in_channels * s.height * s.width, -1.0, 1.0);
    let bias = rng.vec(cout, -0.5, 0.5);
    let bias = seed.is_multiple_of(2).then_some(&bias[..]);
    let [oh, ow] = s.output_size().unwrap();
    let (positions, per_out) = (oh * ow, cout / s.groups);
    let runs = Kernel::available()
        .into_iter()
        .flat_map(|k| Prefill::ALL.map(|pf| (k, pf)));
    for (k, pf) in runs {
        let mut y = vec![f32::NAN; s.batch * cout * positions];
        conv2d_with_prefill(k, pf, s, &x, &w, bias, &mut y).map_err(|e| e.to_string())?;
        for b in 0..s.batch {
            for g in 0..s.groups {
                let wg = w.row_range(g * per_out, (g + 1) * per_out);
                let bg = bias.map(|v| &v[g * per_out..(g + 1) * per_out]);
                let (want, mag) = dense_f64(&im2col(s, &x, b, g), positions, &wg, bg);
                for (i, (&exp, &mg)) in want.iter().zip(&mag).enumerate() {
                    let (p, t) = (i / per_out, i % per_out);
                    let got = y[(b * cout + g * per_out + t) * positions + p];
                    let err = (f64::from(got) - exp).abs();
                    if err.is_nan() || err > REL_TOL * mg + 1e-30 {
                        return Err(format!(
                            "{}/{}: {s:?} b{b} g{g} ch{t} pos{p}: got {got}, want {exp}",
                            k.name(),
                            pf.name()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn strided_padded_dilated_grouped_and_depthwise() {
    let cases = [
        (
            shape(2, 3, [9, 7], [3, 3], [1, 1, 1, 1]),
            10,
            4,
            Gran::Tensor,
        ),
        (
            shape(1, 4, [8, 11], [3, 2], [2, 0, 2, 2]),
            6,
            3,
            Gran::Channel,
        ),
        (
            shape(3, 6, [5, 5], [3, 3], [1, 1, 1, 6]),
            12,
            2,
            Gran::Channel,
        ),
        (
            shape(1, 2, [6, 6], [1, 1], [1, 0, 1, 1]),
            5,
            8,
            Gran::Group(2),
        ),
    ];
    for (i, (s, cout, bits, gran)) in cases.into_iter().enumerate() {
        check(&s, cout, bits, gran, i as u64).unwrap();
    }
}

#[test]
fn several_chunks_tiles_and_k_blocks() {
    // 3 images of 20 x 20 = 400 positions (chunks of 256 cross images
    // mid-way), 50 output channels (two tiles), 32 * 9 = 288 patch values
    // (two k blocks), groups that cut codes.
    let s = shape(3, 32, [20, 20], [3, 3], [1, 1, 1, 1]);
    check(&s, 50, 4, Gran::Group(96), 7).unwrap();
}

#[test]
fn depthwise_and_pointwise_past_one_tile_of_rows() {
    // 1x1 over 140 channels into 150 (two blocks of decoded rows, 600
    // positions: three chunks); a depthwise 3x3 with stride 2 over 24
    // channels; a dilated 3x3 whose patch (40 * 9 = 360) is not a multiple
    // of any tile.
    let point = shape(2, 140, [15, 20], [1, 1], [1, 0, 1, 1]);
    check(&point, 150, 4, Gran::Channel, 11).unwrap();
    let depthwise = shape(2, 24, [13, 9], [3, 3], [2, 1, 1, 24]);
    check(&depthwise, 48, 3, Gran::Tensor, 12).unwrap();
    let dilated = shape(1, 40, [11, 12], [3, 3], [1, 2, 2, 1]);
    check(&dilated, 20, 5, Gran::Group(50), 13).unwrap();
}

#[test]
fn serial_and_rayon_are_bit_identical() {
    // Work (positions x rows x cols) below and above SERIAL_WORK, for the
    // matmul drivers and the depthwise one.
    let cases = [
        (shape(1, 4, [6, 6], [3, 3], [1, 1, 1, 1]), 8),
        (shape(3, 32, [20, 20], [3, 3], [1, 1, 1, 1]), 50),
        (shape(1, 6, [7, 7], [3, 3], [1, 1, 1, 6]), 12),
        (shape(2, 64, [40, 40], [3, 3], [2, 1, 1, 64]), 64),
        (shape(2, 6, [9, 9], [3, 3], [1, 1, 1, 2]), 10),
    ];
    for (s, cout) in cases {
        let patch = s.in_channels / s.groups * s.kernel[0] * s.kernel[1];
        let [oh, ow] = s.output_size().unwrap();
        let x = Rng(3).vec(s.batch * s.in_channels * s.height * s.width, -1.0, 1.0);
        let bias = Rng(4).vec(cout, -0.5, 0.5);
        for bits in 1..=8 {
            for gran in [Gran::Tensor, Gran::Channel, Gran::Group(patch.min(9))] {
                let case = Case::new(cout, patch, bits, gran, u64::from(bits));
                let w = case.view();
                let runs = Kernel::available()
                    .into_iter()
                    .flat_map(|k| Prefill::ALL.map(|p| (k, p)));
                for (k, p) in runs {
                    let run = |exec: Exec| {
                        let mut y = vec![f32::NAN; s.batch * cout * oh * ow];
                        conv2d_in((exec, k, p), &s, &x, &w, Some(&bias), &mut y).unwrap();
                        y
                    };
                    let serial = run(Exec::Serial);
                    let what = format!("{}/{} {bits} bits {gran:?} {s:?}", k.name(), p.name());
                    assert!(same_bits(&serial, &on_pool(|| run(Exec::Rayon))), "{what}");
                }
            }
        }
    }
}

#[test]
fn bad_geometry_and_lengths_are_errors() {
    let case = Case::new(4, 18, 4, Gran::Tensor, 1);
    let w = case.view();
    let good = shape(1, 2, [5, 5], [3, 3], [1, 0, 1, 1]);
    let x = vec![0.0f32; 50];
    let [oh, ow] = good.output_size().unwrap();
    let mut y = vec![0.0f32; 4 * oh * ow];
    assert!(conv2d(&good, &x, &w, None, &mut y).is_ok());
    let bad = [
        ConvShape { groups: 0, ..good },
        ConvShape { groups: 3, ..good },
        ConvShape {
            stride: [0, 1],
            ..good
        },
        ConvShape {
            kernel: [9, 3],
            ..good
        },
        ConvShape {
            in_channels: 4,
            ..good
        },
    ];
    for s in bad {
        let err = conv2d(&s, &x, &w, None, &mut y).unwrap_err();
        assert!(matches!(err, NuqError::InvalidConv(_)), "{s:?}: {err}");
    }
    assert!(conv2d(&good, &x[1..], &w, None, &mut y).is_err());
    assert!(conv2d(&good, &x, &w, None, &mut y[1..]).is_err());
    assert!(conv2d(&good, &x, &w, Some(&[0.0; 3]), &mut y).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_convolutions_match_im2col(
        batch in 1usize..3,
        (cin, groups) in (1usize..4).prop_flat_map(|g| ((1usize..4).prop_map(move |c| c * g), Just(g))),
        hw in [3usize..12, 3usize..12],
        k in [1usize..4, 1usize..4],
        spd in [1usize..3, 0usize..2, 1usize..3],
        per_out in 1usize..6,
        bits in 1u32..=8,
        seed in any::<u64>(),
    ) {
        let s = ConvShape {
            batch,
            in_channels: cin,
            height: hw[0],
            width: hw[1],
            kernel: k,
            stride: [spd[0]; 2],
            padding: [spd[1]; 2],
            dilation: [spd[2]; 2],
            groups,
        };
        prop_assume!(s.output_size().is_ok());
        let gran = if seed % 2 == 0 { Gran::Tensor } else { Gran::Channel };
        prop_assert_eq!(check(&s, per_out * groups, bits, gran, seed), Ok(()));
    }
}
