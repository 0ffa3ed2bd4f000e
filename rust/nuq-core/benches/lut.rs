//! LUT matmul vs a plain dense f32 matmul on the same shapes, same run.
//!
//! Shapes: K x N = 4096 x 4096 (LLM projection) and 768 x 3072 (GPT-2 MLP);
//! m = 1, 8 (decode driver) and 64 (tile driver); 4 and 3 bits; group 128 and
//! per-channel scales; at m = 64 also the int8-activation path (`lut_int8`,
//! where the CPU has AVX512-VNNI). Read the LUT figures as ratios to
//! `dense_f32` in the same group. Only meaningful on an otherwise idle machine.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;

use nuq_core::lut::{self, PackedWeights};
use nuq_core::pack::{packed_len, scalar::pack};

/// Deterministic test data (xorshift64*), uniform in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            2.0 * u - 1.0
        })
        .collect()
}

/// Quantized weights owned by the bench: packed codes plus metadata.
struct Quantized {
    packed: Vec<u8>,
    levels: Vec<f32>,
    loc: Vec<f32>,
    scale: Vec<f32>,
}

fn quantize(n: usize, k: usize, bits: u32, group: Option<usize>) -> Quantized {
    let codes: Vec<u8> = data(n * k, 11)
        .iter()
        .map(|v| ((v + 1.0) * 0.5 * (1 << bits) as f32) as u8 % (1 << bits))
        .collect();
    let row_bytes = packed_len(k, bits);
    let mut packed = vec![0u8; n * row_bytes];
    for (row, c) in packed
        .chunks_exact_mut(row_bytes)
        .zip(codes.chunks_exact(k))
    {
        pack(c, bits, row);
    }
    let levels = (0..1 << bits)
        .map(|i| i as f32 - (1 << (bits - 1)) as f32)
        .collect();
    let (loc, scale) = match group {
        Some(g) => (vec![], vec![0.01; n * (k / g)]),
        None => (vec![0.001; n], vec![0.01; n]),
    };
    Quantized {
        packed,
        levels,
        loc,
        scale,
    }
}

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
                let q = quantize(n, k, bits, g);
                let w = PackedWeights {
                    rows: n,
                    cols: k,
                    bits,
                    packed: &q.packed,
                    levels: &q.levels,
                    loc: &q.loc,
                    scale: &q.scale,
                    group_size: g,
                };
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
