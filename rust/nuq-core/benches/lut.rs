//! LUT matmul vs a plain dense f32 matmul on the same shapes, same run.
//!
//! Shapes: K x N = 4096 x 4096 (LLM projection) and 768 x 3072 (GPT-2 MLP);
//! m = 1, 8 (decode driver) and 64 (tile driver); 4 and 3 bits; group 128 and
//! per-channel scales; at m = 64 also the int8-activation path (`lut_int8`,
//! where the CPU has AVX512-VNNI). Read the LUT figures as ratios to
//! `dense_f32` in the same group. Only meaningful on an otherwise idle machine.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;

use nuq_core::lut;

mod common;

use common::{data, Quantized};

/// Baseline: `y = x · Wᵀ` on a materialized f32 W, parallel over output rows
/// like the LUT kernels, with 8 independent partial sums so the compiler
/// vectorizes the dot products.
fn dense(x: &[f32], m: usize, w: &[f32], k: usize, y_t: &mut [f32]) {
    y_t.par_chunks_mut(m)
        .zip(w.par_chunks(k))
        .for_each(|(out, wr)| {
            for (o, xr) in out.iter_mut().zip(x.chunks_exact(k)) {
                let mut acc = [0.0f32; 8];
                for (xc, wc) in xr.chunks_exact(8).zip(wr.chunks_exact(8)) {
                    for t in 0..8 {
                        acc[t] += xc[t] * wc[t];
                    }
                }
                *o = acc.iter().sum();
            }
        });
}

fn bench_shape(c: &mut Criterion, k: usize, n: usize) {
    let w_dense = data(n * k, 5);
    for m in [1usize, 8, 64] {
        let mut group = c.benchmark_group(format!("lut_{k}x{n}_m{m}"));
        group.throughput(Throughput::Elements((m * n * k) as u64));
        group.sample_size(10);
        let x = data(m * k, 7);
        let mut y = vec![0.0f32; m * n];
        group.bench_function("dense_f32", |b| {
            b.iter(|| dense(&x, m, &w_dense, k, &mut y))
        });
        for bits in [4u32, 3] {
            for g in [Some(128), None] {
                let q = Quantized::new(n, k, bits, g);
                let w = q.view();
                let name = match g {
                    Some(g) => format!("b{bits}_g{g}"),
                    None => format!("b{bits}_channel"),
                };
                group.bench_function(BenchmarkId::new("lut", &name), |b| {
                    b.iter(|| lut::linear(&x, m, &w, None, &mut y).unwrap())
                });
                if m > 16 && lut::Int8Kernel::vnni().is_some() {
                    group.bench_function(BenchmarkId::new("lut_int8", &name), |b| {
                        b.iter(|| lut::linear_int8(&x, m, &w, None, &mut y).unwrap())
                    });
                }
            }
        }
        group.finish();
    }
}

fn lut_matmul(c: &mut Criterion) {
    bench_shape(c, 4096, 4096);
    bench_shape(c, 768, 3072);
}

criterion_group!(benches, lut_matmul);
criterion_main!(benches);
