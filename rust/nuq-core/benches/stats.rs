//! Statistics passes on Gaussian-ish weights, next to a plain summation pass
//! (the memory-read floor that `np.sum` stands for) as the in-run baseline.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nuq_core::stats;

/// Deterministic weights: SplitMix64 uniforms, sum of four centred (Irwin–Hall,
/// bell-shaped), scaled like a layer's weights.
fn weights(n: usize) -> Vec<f32> {
    let mut s = 0x5EED_u64;
    let mut uniform = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| 0.02 * ((uniform() + uniform() + uniform() + uniform()) - 2.0))
        .collect()
}

fn bench_stats(c: &mut Criterion) {
    let mut g = c.benchmark_group("stats");
    g.sample_size(10);
    for log2 in [20, 24] {
        let x = weights(1 << log2);
        g.throughput(Throughput::Elements(x.len() as u64));
        let id = |name: &str| BenchmarkId::new(name, format!("2^{log2}"));
        g.bench_function(id("sum_baseline"), |b| {
            b.iter(|| black_box(&x).iter().map(|&v| f64::from(v)).sum::<f64>())
        });
        g.bench_function(id("moments"), |b| b.iter(|| stats::moments(black_box(&x))));
        g.bench_function(id("median"), |b| b.iter(|| stats::median(black_box(&x))));
        g.bench_function(id("fit_tensor"), |b| {
            b.iter(|| stats::fit_tensor(black_box(&x)))
        });
        g.bench_function(id("fit_rows_4096"), |b| {
            b.iter(|| stats::fit_rows(black_box(&x), 4096))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_stats);
criterion_main!(benches);
