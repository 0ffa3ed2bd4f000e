//! Throughput of the bit-packing and encode/decode kernels on 1M elements,
//! per width and per kernel this CPU supports (scalar is the baseline).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nuq_core::encode::{decode_with, encode_with};
use nuq_core::pack::{available_kernels, pack_with, packed_len, unpack_with};

const N: usize = 1 << 20;

/// Deterministic pseudo-random bytes (xorshift), no extra dependency.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 56) as u8
        })
        .collect()
}

/// Roughly bell-shaped weights: the sum of four uniform bytes, centred.
fn weights(n: usize) -> Vec<f32> {
    let b = bytes(4 * n, 7);
    b.chunks_exact(4)
        .map(|q| (q.iter().map(|&v| f32::from(v)).sum::<f32>() - 510.0) / 150.0)
        .collect()
}

fn bench_pack(c: &mut Criterion) {
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Elements(N as u64));
    for bits in 1..=8u32 {
        let codes: Vec<u8> = bytes(N, 3)
            .iter()
            .map(|&v| v & ((1u16 << bits) - 1) as u8)
            .collect();
        let mut packed = vec![0u8; packed_len(N, bits)];
        for kernel in available_kernels() {
            g.bench_with_input(BenchmarkId::new(kernel.name(), bits), &codes, |b, codes| {
                b.iter(|| pack_with(kernel, black_box(codes), bits, &mut packed))
            });
        }
    }
    g.finish();
}

fn bench_unpack(c: &mut Criterion) {
    let mut g = c.benchmark_group("unpack");
    g.throughput(Throughput::Elements(N as u64));
    for bits in 1..=8u32 {
        let packed = bytes(packed_len(N, bits), 5);
        let mut out = vec![0u8; N];
        for kernel in available_kernels() {
            g.bench_with_input(
                BenchmarkId::new(kernel.name(), bits),
                &packed,
                |b, packed| b.iter(|| unpack_with(kernel, black_box(packed), bits, &mut out)),
            );
        }
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let x = weights(N);
    let mut codes = vec![0u8; N];
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(N as u64));
    for bits in 1..=8u32 {
        let nb = (1usize << bits) - 1;
        let bounds: Vec<f32> = (1..=nb)
            .map(|j| (j as f32 / (nb + 1) as f32 - 0.5) * 6.0)
            .collect();
        for kernel in available_kernels() {
            g.bench_with_input(BenchmarkId::new(kernel.name(), bits), &x, |b, x| {
                b.iter(|| encode_with(kernel, black_box(x), 0.01, 1.3, &bounds, &mut codes))
            });
        }
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut out = vec![0.0f32; N];
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(N as u64));
    for bits in [2u32, 4, 5, 8] {
        let levels: Vec<f32> = (0..1usize << bits).map(|j| j as f32 * 0.1).collect();
        let codes: Vec<u8> = bytes(N, 11)
            .iter()
            .map(|&v| v & ((1u16 << bits) - 1) as u8)
            .collect();
        for kernel in available_kernels() {
            g.bench_with_input(BenchmarkId::new(kernel.name(), bits), &codes, |b, codes| {
                b.iter(|| decode_with(kernel, black_box(codes), &levels, &mut out).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_pack,
    bench_unpack,
    bench_encode,
    bench_decode
);
criterion_main!(benches);
