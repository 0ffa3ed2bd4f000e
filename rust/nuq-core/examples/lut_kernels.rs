//! Times `lut::linear_with` per kernel on one 4096x4096 layer (idle machine,
//! --release): `cargo run --release -p nuq-core --example lut_kernels`.
//! Optional arguments: bit widths to time (default `4 3`); `LUT_ROWS=n`
//! shrinks N (e.g. to an L2-resident layer, to separate decode cost from
//! memory traffic); `LUT_M=m` times that batch size only; `LUT_KERNEL=avx512`
//! times that kernel only (`int8`: the int8-activation VNNI kernel).

use std::time::Instant;

use nuq_core::lut::{linear_int8_with, linear_with, Int8Kernel, Kernel};
use nuq_core::{quantize, CodebookChoice, Config, FamilyChoice, Granularity};

fn main() {
    let n = std::env::var("LUT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let k = 4096;
    let ms: Vec<usize> = match std::env::var("LUT_M").ok().and_then(|v| v.parse().ok()) {
        Some(m) => vec![m],
        None => vec![1, 4, 16, 64],
    };
    let bits: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let bits = if bits.is_empty() { vec![4, 3] } else { bits };
    let only = std::env::var("LUT_KERNEL").ok();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    for b in bits {
        for g in [Granularity::Channel, Granularity::Group(128)] {
            let cfg = Config {
                bits: b,
                granularity: g,
                family: FamilyChoice::Auto,
                codebook: CodebookChoice::LloydMax,
            };
            let q = quantize(&w, n, k, &cfg).unwrap();
            for m in ms.iter().copied() {
                let x: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
                let mut y = vec![0f32; m * n];
                for kernel in Kernel::available().into_iter().skip(1) {
                    if only.as_deref().is_some_and(|k| k != kernel.name()) {
                        continue;
                    }
                    let mut best = f64::INFINITY;
                    for _ in 0..20 {
                        let t = Instant::now();
                        linear_with(kernel, &x, m, &q.view(), None, &mut y).unwrap();
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    println!("b{b} {g:?} m={m} {:<7} {:.3} ms", kernel.name(), best * 1e3);
                }
                let int8 =
                    Int8Kernel::vnni().filter(|_| only.as_deref().is_none_or(|k| k == "int8"));
                if let Some(kernel) = int8 {
                    let mut best = f64::INFINITY;
                    for _ in 0..20 {
                        let t = Instant::now();
                        linear_int8_with(kernel, &x, m, &q.view(), None, &mut y).unwrap();
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    println!("b{b} {g:?} m={m} int8    {:.3} ms", best * 1e3);
                }
            }
        }
    }
}
