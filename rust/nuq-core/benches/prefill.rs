//! The two prefill products against each other in one process: the
//! hand-written micro-kernel (`Prefill::Micro`) and the `gemm` crate on
//! decoded tiles (`Prefill::Gemm`), with the instruction set this CPU runs
//! (or `NUQ_ISA`).
//!
//! Linear: K x N = 4096 x 4096 and 4096 x 11008, m = 64 and 512, 4 bits,
//! per-channel scales and group 128. Convolution (batch 8): a
//! MobileNetV2-like 1x1 96 -> 576 on 56 x 56, a 3x3 64 -> 64 on 56 x 56
//! (padding 1) and a depthwise 3x3 over 144 channels on 56 x 56.
//!
//! Runs alternate micro and gemm, `REPEATS` times each after a warm-up, and
//! print the medians and `gemm/micro` (below 1: gemm is faster). Only
//! meaningful on an otherwise idle machine.
//!
//! `cargo bench -p nuq-core --bench prefill` (all cases);
//! `cargo bench -p nuq-core --bench prefill -- --quick` (one run of each,
//! to check that it works); any other argument keeps the cases whose name
//! contains it.

use std::time::Instant;

use nuq_core::lut::{self, ConvShape, Kernel, Prefill};

mod common;

use common::{data, Quantized};

const REPEATS: usize = 7;

/// Median seconds of `run(Micro)` and `run(Gemm)`, alternated.
fn time_both(repeats: usize, mut run: impl FnMut(Prefill)) -> [f64; 2] {
    for p in Prefill::ALL {
        run(p);
    }
    let mut secs = [vec![], vec![]];
    for _ in 0..repeats {
        for (i, p) in Prefill::ALL.into_iter().enumerate() {
            let t = Instant::now();
            run(p);
            secs[i].push(t.elapsed().as_secs_f64());
        }
    }
    secs.map(|mut s| {
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    })
}

fn report(name: &str, [micro, gemm]: [f64; 2]) {
    println!(
        "{name:<32} micro {:>9.2} ms  gemm {:>9.2} ms  gemm/micro {:.3}",
        micro * 1e3,
        gemm * 1e3,
        gemm / micro
    );
}

fn linear_cases(repeats: usize, keep: &dyn Fn(&str) -> bool) {
    let kernel = Kernel::detect();
    for (k, n) in [(4096, 4096), (4096, 11008)] {
        for group in [None, Some(128)] {
            let q = Quantized::new(n, k, 4, group);
            let w = q.view();
            for m in [64, 512] {
                let gran = group.map_or("channel".into(), |g| format!("g{g}"));
                let name = format!("linear {k}x{n} b4 {gran} m{m}");
                if !keep(&name) {
                    continue;
                }
                let x = data(m * k, 7);
                let mut y = vec![0.0f32; m * n];
                let times = time_both(repeats, |p| {
                    lut::linear_with_prefill(kernel, p, &x, m, &w, None, &mut y).unwrap()
                });
                report(&name, times);
            }
        }
    }
}

fn conv_cases(repeats: usize, keep: &dyn Fn(&str) -> bool) {
    let kernel = Kernel::detect();
    // (name, in, out, kernel, padding, groups), batch 8 on 56 x 56.
    let cases = [
        ("conv 1x1 96->576 56x56 b8", 96, 576, 1, 0, 1),
        ("conv 3x3 64->64 56x56 b8", 64, 64, 3, 1, 1),
        ("conv dw3x3 144 56x56 b8", 144, 144, 3, 1, 144),
    ];
    for (name, cin, cout, kk, pad, groups) in cases {
        if !keep(name) {
            continue;
        }
        let s = ConvShape {
            batch: 8,
            in_channels: cin,
            height: 56,
            width: 56,
            kernel: [kk, kk],
            stride: [1, 1],
            padding: [pad, pad],
            dilation: [1, 1],
            groups,
        };
        let q = Quantized::new(cout, cin / groups * kk * kk, 4, None);
        let w = q.view();
        let [oh, ow] = s.output_size().unwrap();
        let x = data(8 * cin * 56 * 56, 7);
        let mut y = vec![0.0f32; 8 * cout * oh * ow];
        let times = time_both(repeats, |p| {
            lut::conv2d_with_prefill(kernel, p, &s, &x, &w, None, &mut y).unwrap()
        });
        report(&format!("{name} b4 channel"), times);
    }
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let keep = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let repeats = if quick { 1 } else { REPEATS };
    println!(
        "prefill products on {} ({} threads, decode isa {}), median of {repeats}",
        cpu_name(),
        rayon::current_num_threads(),
        Kernel::detect().name()
    );
    linear_cases(repeats, &keep);
    conv_cases(repeats, &keep);
}
