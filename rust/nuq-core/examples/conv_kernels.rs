//! Times `lut::conv2d_with` per kernel on the second convolution of the
//! Fashion-MNIST CNN at batch 512 (16 -> 32 channels, 3x3, 14x14, padding 1),
//! on an idle machine: `cargo run --release -p nuq-core --example conv_kernels`.
//! `CONV_KERNEL=avx512` times that kernel only.

use std::time::Instant;

use nuq_core::lut::{conv2d_with, ConvShape, Kernel};
use nuq_core::{quantize, CodebookChoice, Config, FamilyChoice, Granularity};

fn main() {
    let shape = ConvShape {
        batch: 512,
        in_channels: 16,
        height: 14,
        width: 14,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let (rows, cols) = (32, 16 * 9);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let cfg = Config {
        bits: 4,
        granularity: Granularity::Tensor,
        family: FamilyChoice::Auto,
        codebook: CodebookChoice::LloydMax,
    };
    let q = quantize(&w, rows, cols, &cfg).unwrap();
    let x: Vec<f32> = (0..512 * 16 * 14 * 14)
        .map(|i| (i % 17) as f32 * 0.1 - 0.8)
        .collect();
    let [oh, ow] = shape.output_size().unwrap();
    let mut y = vec![0f32; 512 * rows * oh * ow];
    let only = std::env::var("CONV_KERNEL").ok();
    for kernel in Kernel::available() {
        if only.as_deref().is_some_and(|k| k != kernel.name()) {
            continue;
        }
        let mut best = f64::INFINITY;
        for _ in 0..10 {
            let t = Instant::now();
            conv2d_with(kernel, &shape, &x, &q.view(), None, &mut y).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("conv2 b512 4-bit {:<7} {:.3} ms", kernel.name(), best * 1e3);
    }
}
