//! Times each phase of quantizing one large tensor (run with --release on an
//! idle machine): `cargo run --release -p nuq-core --example phases [--gaussian
//! | --mixture]`. Default data: a uniform/comb mix (many distinct values,
//! lumpy); `--gaussian`: exact normal data (the hardest case for the KS
//! pruning, whose D ~ 1/sqrt(n)); `--mixture`: the Gaussian/Laplace mixture of
//! `benches/bench_quantize.py`. Set RAYON_NUM_THREADS to fix the thread count,
//! and `PHASES_SHAPE=ROWSxCOLS` for another shape than 4096x8192 (e.g.
//! `768x3072`, a GPT-2 MLP matrix, where per-tensor costs weigh more).

use std::time::Instant;

use nuq_core::encode::Encoder;
use nuq_core::pack::pack;
use nuq_core::stats::{fit_rows, fit_tensor, moments};
use nuq_core::{quantize, CodebookChoice, Config, FamilyChoice, Granularity};

const REPEATS: usize = 5;

fn time<T>(label: &str, base: f64, mut f: impl FnMut() -> T) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..REPEATS {
        let t = Instant::now();
        std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{label:<28} {:>8.1} ms  {:>6.1}x sum",
        best * 1e3,
        best / base
    );
    best
}

/// Xorshift64 with a uniform in [0, 1) and a Box-Muller normal.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn laplace(&mut self) -> f64 {
        let u = self.uniform() - 0.5;
        -u.signum() * (1.0 - 2.0 * u.abs()).ln()
    }
}

fn data(kind: &str, n: usize) -> Vec<f32> {
    let mut r = Rng(0x2545_F491_4F6C_DD1D);
    let mix = 0.37;
    (0..n)
        .map(|_| match kind {
            "--gaussian" => (r.normal() * 0.02) as f32,
            "--mixture" if r.uniform() < mix => (r.laplace() * 0.02 / 2f64.sqrt()) as f32,
            "--mixture" => (r.normal() * 0.02) as f32,
            _ => {
                let s = r.next();
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                (u - 0.5) * 0.02 + ((s & 0xff) as f32 - 127.5) * 1e-4
            }
        })
        .collect()
}

fn main() {
    let kind = std::env::args().nth(1).unwrap_or_default();
    let (rows, cols) = match std::env::var("PHASES_SHAPE") {
        Ok(s) => {
            let (r, c) = s.split_once('x').expect("PHASES_SHAPE=ROWSxCOLS");
            (r.parse().expect("rows"), c.parse().expect("cols"))
        }
        Err(_) => (4096, 8192),
    };
    let x = data(&kind, rows * cols);
    println!("data {kind:?}, {rows} x {cols}, best of {REPEATS}");
    let base = time("sum (single pass floor)", 1.0, || x.iter().sum::<f32>());
    let base = base.max(1e-9);
    time("moments", base, || moments(&x).unwrap());
    time("fit_tensor", base, || fit_tensor(&x).unwrap());
    time("median", base, || nuq_core::stats::median(&x));
    time("mean_abs_dev", base, || {
        nuq_core::stats::mean_abs_dev(&x, 0.0)
    });
    time("fit_rows", base, || fit_rows(&x, cols).unwrap());
    let bounds: Vec<f32> = (1..16).map(|i| (i as f32 - 8.0) * 0.3).collect();
    let enc = Encoder::new(&bounds);
    let mut codes = vec![0u8; x.len()];
    time("encode 4-bit (1 thread)", base, || {
        enc.encode(&x, 0.0, 50.0, &mut codes)
    });
    let mut packed = vec![0u8; x.len() / 2];
    time("pack 4-bit (1 thread)", base, || {
        pack(&codes, 4, &mut packed)
    });
    for g in [
        Granularity::Tensor,
        Granularity::Channel,
        Granularity::Group(128),
    ] {
        let cfg = Config {
            bits: 4,
            granularity: g,
            family: FamilyChoice::Auto,
            codebook: CodebookChoice::LloydMax,
        };
        time(&format!("quantize {g:?}"), base, || {
            quantize(&x, rows, cols, &cfg).unwrap()
        });
    }
}
