//! Solver benchmarks: the uncached Lloyd–Max solve per (family, bits), and the
//! weighted Lloyd refinement of a per-group absmax codebook on 4096 bins.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use nuq_core::solve::{absmax_init, lloyd_weighted, partial_moments, solve_uncached};
use nuq_core::Family;

fn bench_lloyd_max(c: &mut Criterion) {
    let mut group = c.benchmark_group("lloyd_max_uncached");
    for family in Family::ALL {
        for bits in 1..=8u32 {
            let id = BenchmarkId::new(family.name(), bits);
            group.bench_with_input(id, &bits, |b, &bits| {
                b.iter(|| solve_uncached(family, black_box(bits)).unwrap())
            });
        }
    }
    group.finish();
}

/// 4096 equal-width bins on [−1, 1] of a Gaussian scaled so that ±1 is the
/// typical maximum of a group of 64 (≈ 2.6σ), plus point masses at ±1.
fn absmax_like_bins() -> (Vec<f64>, Vec<f64>) {
    const BINS: usize = 4096;
    let sigma = 1.0 / 2.6;
    let (mut points, mut weights) = (Vec::with_capacity(BINS), Vec::with_capacity(BINS));
    for i in 0..BINS {
        let lo = -1.0 + 2.0 * i as f64 / BINS as f64;
        let hi = lo + 2.0 / BINS as f64;
        let m = partial_moments(Family::Gaussian, lo / sigma, hi / sigma);
        points.push(sigma * m.m1 / m.p);
        weights.push(m.p);
    }
    points[0] = -1.0;
    points[BINS - 1] = 1.0;
    weights[0] += 1.0 / 128.0;
    weights[BINS - 1] += 1.0 / 128.0;
    (points, weights)
}

fn bench_lloyd_weighted(c: &mut Criterion) {
    let (points, weights) = absmax_like_bins();
    let mut group = c.benchmark_group("lloyd_weighted_4096_bins");
    for bits in [2u32, 4, 8] {
        let init = absmax_init(Family::Gaussian, bits, 64).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(bits), &init, |b, init| {
            b.iter(|| lloyd_weighted(black_box(&points), &weights, init, 1000))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_lloyd_max, bench_lloyd_weighted);
criterion_main!(benches);
