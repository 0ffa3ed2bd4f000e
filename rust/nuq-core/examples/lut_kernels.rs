//! Times `lut::linear_with` per kernel on one 4096x4096 layer (idle machine,
//! --release): `cargo run --release -p nuq-core --example lut_kernels`.

use std::time::Instant;

use nuq_core::lut::{linear_with, Kernel};
use nuq_core::{quantize, Config, FamilyChoice, Granularity};

fn main() {
    let (n, k) = (4096, 4096);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    for g in [Granularity::Channel, Granularity::Group(128)] {
        let cfg = Config {
            bits: 4,
            granularity: g,
            family: FamilyChoice::Auto,
        };
        let q = quantize(&w, n, k, &cfg).unwrap();
        for m in [1usize, 64] {
            let x = vec![0.5f32; m * k];
            let mut y = vec![0f32; m * n];
            for kernel in Kernel::available() {
                let mut best = f64::INFINITY;
                for _ in 0..20 {
                    let t = Instant::now();
                    linear_with(kernel, &x, m, &q.view(), None, &mut y).unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!("{g:?} m={m} {:<7} {:.3} ms", kernel.name(), best * 1e3);
            }
        }
    }
}
