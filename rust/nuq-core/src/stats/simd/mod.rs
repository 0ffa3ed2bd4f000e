//! The statistics' inner loops, one file per instruction set beside the
//! portable reference (`scalar`), dispatched here in one place as `pack`
//! does: `Kernel::selected()` names the version that runs (`NUQ_ISA`
//! overrides it). Every version performs the reference's IEEE operations
//! in the reference's order, so every statistic is bit-identical on every
//! CPU and under every `NUQ_ISA`; the tests below compare each version the
//! CPU runs with the reference.
//!
//! Most versions are the reference compiled with the instruction set
//! enabled (the baseline x86-64 target has 128-bit vectors only); where
//! LLVM splits a loop badly, `x86_avx512` writes it out in intrinsics.

pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use std::ops::Range;

pub(crate) use scalar::LANES;

use super::grid::Grid;
use super::source::{Source, Value, CHUNK};
use crate::pack::Kernel;

// SAFETY (every `unsafe` call below): the kernel is `Kernel::selected()`
// or, in the tests, one of `available_kernels()`, so the CPU supports its
// instructions.

/// `f(args)` of the kernel's module (`scalar`'s for a kernel without one).
macro_rules! dispatch {
    ($k:expr, $f:ident($($arg:expr),*)) => {
        match $k {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { x86_avx512::$f($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86_avx2::$f($($arg),*) },
            _ => scalar::$f($($arg),*),
        }
    };
}

/// `Σ v` over `x` in f64, in `LANES` lanes added pairwise, then the tail.
pub(crate) fn sum(x: &[f32]) -> f64 {
    dispatch!(Kernel::selected(), sum(x))
}

/// `Σ (v - center)²` in f64, as [`sum`].
pub(crate) fn sq_dev_sum(x: &[f32], center: f64) -> f64 {
    dispatch!(Kernel::selected(), sq_dev_sum(x, center))
}

/// `Σ |v - center|` in f64, as [`sum`].
pub(crate) fn abs_dev_sum(x: &[f32], center: f64) -> f64 {
    dispatch!(Kernel::selected(), abs_dev_sum(x, center))
}

/// Smallest and largest of finite `x` (`(inf, -inf)` if empty).
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    dispatch!(Kernel::selected(), min_max(x))
}

/// Number of values of `x` below each pivot.
pub(crate) fn count_below<const P: usize>(x: &[f32], pivots: &[f32; P]) -> [usize; P] {
    dispatch!(Kernel::selected(), count_below(x, pivots))
}

/// Adds one to `counts[index(v)]` for every value of `x` (`index` must stay
/// below `counts.len()`). Compiled for AVX-512 only: the increments bound
/// the loop, and the AVX2 indexing gains nothing over the baseline's.
pub(crate) fn count_bins(x: &[f32], counts: &mut [u32], index: impl Fn(f32) -> u32) {
    count_bins_on(Kernel::selected(), x, counts, index);
}

#[inline]
fn count_bins_on(k: Kernel, x: &[f32], counts: &mut [u32], index: impl Fn(f32) -> u32) {
    match k {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { x86_avx512::count_bins(x, counts, index) },
        _ => scalar::count_bins(x, counts, index),
    }
}

/// What [`band_split`] finds in a slice about a band `[lo, hi]` and a
/// centre `c`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct BandSplit {
    /// Count of the values below `lo`.
    pub below_n: usize,
    /// `Σ (v - c)` over the values below `lo`.
    pub below_sum: f64,
    /// `Σ (v - c)` over every value.
    pub all_sum: f64,
    /// The values in `[lo, hi]`, in data order.
    pub band: Vec<f32>,
}

/// Sums of `x` below the band `[lo, hi]` and over everything, about
/// `centre`, and the band's values: one pass for the median and mean
/// absolute deviation of `laplace`.
pub(crate) fn band_split(x: &[f32], lo: f64, hi: f64, centre: f64) -> BandSplit {
    dispatch!(Kernel::selected(), band_split(x, lo, hi, centre))
}

/// `grid.index` of every value of `vals` (at most `CHUNK`) into `out`: a
/// routing pass without value ranges runs it on every block.
pub(crate) fn index_block<V: Value>(grid: &Grid, vals: &[V], out: &mut [u32; CHUNK]) {
    dispatch!(Kernel::selected(), index_block(grid, vals, out))
}

/// Adds the `grid` bucket of every value of `src` in `range` to `h`
/// (`grid.nb` counters): the one pass every KS statistic makes over all
/// elements (reading, for a standardized source standardizing, indexing,
/// counting). There is no AVX-512 version: the loop is bound by its scalar
/// `+= 1`s, and the AVX-512 build of it measured slower than the AVX2
/// build (benches/README.md), so AVX-512 machines run the AVX2 one.
pub(crate) fn count_range<S: Source>(src: &S, range: Range<usize>, grid: &Grid, h: &mut [u32]) {
    count_range_on(Kernel::selected(), src, range, grid, h);
}

#[inline]
fn count_range_on<S: Source>(k: Kernel, src: &S, range: Range<usize>, grid: &Grid, h: &mut [u32]) {
    match k {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 | Kernel::Avx2 => unsafe { x86_avx2::count_range(src, range, grid, h) },
        _ => scalar::count_range(src, range, grid, h),
    }
}

/// Calls `hit(j)`, `j` ascending, for every position of `vals` whose value
/// lies in one of the ranges: the range tests of a slice first (masks of
/// up to `HIT_SLICE` values), then the hits.
#[inline]
pub(crate) fn for_each_hit(spans: &[(f32, f32)], vals: &[f32], mut hit: impl FnMut(usize)) {
    let kernel = Kernel::selected();
    let mut masks = [0u64; HIT_SLICE / CHUNK];
    for (p, piece) in vals.chunks(HIT_SLICE).enumerate() {
        let masks = &mut masks[..piece.len().div_ceil(CHUNK)];
        span_masks_on(kernel, spans, piece, masks);
        for (c, &mask) in masks.iter().enumerate() {
            let base = p * HIT_SLICE + c * CHUNK;
            let mut bits = mask;
            while bits != 0 {
                hit(base + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }
}

/// Values whose range tests `for_each_hit` runs before handling their hits.
const HIT_SLICE: usize = 4096;

/// Bit `j % CHUNK` of `masks[j / CHUNK]` set when `vals[j]` lies in one of
/// the ranges: under AVX-512 with up to `REG_SPANS` ranges held in
/// registers across the whole slice, else chunk by chunk.
fn span_masks_on(k: Kernel, spans: &[(f32, f32)], vals: &[f32], masks: &mut [u64]) {
    assert_eq!(
        masks.len(),
        vals.len().div_ceil(CHUNK),
        "one mask per chunk"
    );
    #[cfg(target_arch = "x86_64")]
    if k == Kernel::Avx512 && spans.len() <= x86_avx512::REG_SPANS {
        return unsafe { x86_avx512::span_masks(spans, vals, masks) };
    }
    for (m, chunk) in masks.iter_mut().zip(vals.chunks(CHUNK)) {
        *m = dispatch!(k, in_spans(spans, chunk));
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::{inv_scale, standardize, Flat, Standardized};
    use super::*;
    use crate::pack::available_kernels;

    /// Values with a spread of magnitudes, a few large ones, not integers
    /// (a different order of additions would show).
    fn values(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i * 7919) % 1009) as f32 * 1e-3 - 0.4
                    + if i % 7 == 0 { 1e3 } else { 0.0 }
                    + (i as f32).sin() * 1e-4
            })
            .collect()
    }

    const LENGTHS: [usize; 8] = [0, 1, 15, 16, 17, 100, 1023, 1 << 15];

    /// The lane sums and the range: bit for bit, tails of every length.
    #[test]
    fn sums_and_range_match_scalar() {
        for k in available_kernels() {
            for len in LENGTHS {
                let x = values(len);
                assert_eq!(dispatch!(k, sum(&x)).to_bits(), scalar::sum(&x).to_bits());
                let (sq, ab) = (
                    dispatch!(k, sq_dev_sum(&x, 0.3)),
                    dispatch!(k, abs_dev_sum(&x, 0.3)),
                );
                assert_eq!(sq.to_bits(), scalar::sq_dev_sum(&x, 0.3).to_bits());
                assert_eq!(ab.to_bits(), scalar::abs_dev_sum(&x, 0.3).to_bits());
                assert_eq!(
                    dispatch!(k, min_max(&x)),
                    scalar::min_max(&x),
                    "{k:?} {len}"
                );
            }
        }
    }

    /// Pivot counts and bucket counts, and the direct counts they stand for.
    #[test]
    fn counts_match_scalar() {
        let x = values(4609);
        let pivots = [-0.6f32, -0.15, -0.07, 0.0, 0.07, 0.6, 999.0];
        let want = scalar::count_below(&x, &pivots);
        for (b, p) in want.iter().zip(pivots) {
            assert_eq!(*b, x.iter().filter(|&&v| v < p).count());
        }
        let index = |v: f32| ((v + 1.0) * 100.0).clamp(0.0, 255.0) as u32;
        let mut bins = vec![0u32; 256];
        scalar::count_bins(&x, &mut bins, index);
        assert_eq!(bins.iter().sum::<u32>() as usize, x.len());
        for k in available_kernels() {
            assert_eq!(dispatch!(k, count_below(&x, &pivots)), want, "{k:?}");
            let mut got = vec![0u32; 256];
            count_bins_on(k, &x, &mut got, index);
            assert_eq!(got, bins, "{k:?}");
        }
    }

    /// The band's sums and values: bit for bit, and a direct count and sum.
    #[test]
    fn band_split_matches_scalar() {
        let x: Vec<f32> = (0..10_007)
            .map(|i| ((i * 7919) % 1009) as f32 * 0.37 - 185.3 + (i as f32).sin() * 1e-3)
            .collect();
        let (lo, hi, centre) = (-3.5, 2.0, -1.0);
        let want = scalar::band_split(&x, lo, hi, centre);
        for k in available_kernels() {
            for len in [0, 5, 16, 33, x.len()] {
                let got = dispatch!(k, band_split(&x[..len], lo, hi, centre));
                assert_eq!(
                    format!("{got:?}"),
                    format!("{:?}", scalar::band_split(&x[..len], lo, hi, centre))
                );
            }
        }
        let band: Vec<f32> = x
            .iter()
            .copied()
            .filter(|&v| (lo..=hi).contains(&f64::from(v)))
            .collect();
        assert!(!band.is_empty());
        assert_eq!(want.band, band);
        let below: Vec<f64> = x
            .iter()
            .map(|&v| f64::from(v))
            .filter(|&v| v < lo)
            .collect();
        assert_eq!(want.below_n, below.len());
        let sum: f64 = below.iter().map(|v| v - centre).sum();
        assert!((want.below_sum - sum).abs() <= 1e-9 * sum.abs());
        let all: f64 = x.iter().map(|&v| f64::from(v) - centre).sum();
        assert!((want.all_sum - all).abs() <= 1e-9 * all.abs().max(1.0));
    }

    /// Grid indices: values inside, on the edges of and outside the grid,
    /// subnormals, a zero-width grid; f32 and f64 values.
    #[test]
    fn grid_indices_match_scalar() {
        let mut vals: Vec<f32> = (0..CHUNK)
            .map(|i| (i as f32 - 20.0) * 0.37 + (i as f32).sin() * 1e-3)
            .collect();
        vals[..6].copy_from_slice(&[-1e30, 1e30, f32::MIN_POSITIVE / 4.0, -0.0, -4.0, 4.0]);
        let wide: Vec<f64> = vals.iter().map(|&v| f64::from(v) * 1.0001).collect();
        for grid in [
            Grid::new(-4.0, 4.0, 8),
            Grid::new(-4.0, 4.0, 1 << 16),
            Grid::new(1.0, 1.0, 8),
        ] {
            let want: Vec<u32> = vals
                .iter()
                .map(|&v| grid.index(f64::from(v)) as u32)
                .collect();
            let want64: Vec<u32> = wide.iter().map(|&v| grid.index(v) as u32).collect();
            for k in available_kernels() {
                let mut got = [u32::MAX; CHUNK];
                dispatch!(k, index_block(&grid, &vals, &mut got));
                assert_eq!(got.as_slice(), want.as_slice(), "{k:?}");
                dispatch!(k, index_block(&grid, &wide, &mut got));
                assert_eq!(got.as_slice(), want64.as_slice(), "{k:?}");
            }
        }
    }

    /// Every version of the count loop counts what `Grid::index` of each
    /// value says, for the raw tensor and for rows standardized by their
    /// own (loc, scale), on a range that starts and ends inside a row and
    /// inside a chunk.
    #[test]
    fn range_counts_are_each_values_index() {
        let x: Vec<f32> = (0..10_000)
            .map(|i| ((i * 7919 % 1013) as f32 - 500.0).powi(3) / 1e6)
            .collect();
        let row_len = 300;
        let rows = x.len() / row_len;
        let loc: Vec<f64> = (0..rows).map(|r| r as f64 * 0.7 - 9.0).collect();
        let inv: Vec<f64> = (0..rows).map(|r| inv_scale(r as f64 * 3.0)).collect();
        let std_src = Standardized {
            x: &x,
            row_len,
            loc: &loc,
            inv: &inv,
        };
        let range = 157..9_871;
        let flat_grid = Grid::new(-100.0, 120.0, 1000);
        let std_grid = Grid::new(-8.0, 8.0, 1 << 12);
        let flat_want = range.clone().fold(vec![0u32; flat_grid.nb], |mut h, i| {
            h[flat_grid.index(f64::from(x[i]))] += 1;
            h
        });
        let std_want = range.clone().fold(vec![0u32; std_grid.nb], |mut h, i| {
            let r = i / row_len;
            h[std_grid.index(standardize(x[i], loc[r], inv[r]))] += 1;
            h
        });
        for k in available_kernels() {
            let mut got = vec![0u32; flat_grid.nb];
            count_range_on(k, &Flat(&x), range.clone(), &flat_grid, &mut got);
            assert_eq!(got, flat_want, "{k:?}");
            let mut got = vec![0u32; std_grid.nb];
            count_range_on(k, &std_src, range.clone(), &std_grid, &mut got);
            assert_eq!(got, std_want, "{k:?}");
        }
    }

    /// Scattered values in [-5, 5.23), and ranges over them: a single
    /// value, bounded, open-ended, and one disjoint from the values.
    fn filter_values(len: usize) -> Vec<f32> {
        (0..len)
            .map(|j| ((j as u32).wrapping_mul(2_654_435_761) >> 22) as f32 * 0.01 - 5.0)
            .collect()
    }
    const FILTER_SPANS: [(f32, f32); 6] = [
        (-4.9, -4.9),
        (-4.0, -3.0),
        (0.0, 2.5),
        (5.23, f32::INFINITY),
        (-1.5, -1.0),
        (f32::NEG_INFINITY, -4.95),
    ];

    #[test]
    fn range_tests_match_the_definition() {
        let (vals, spans) = (filter_values(CHUNK), FILTER_SPANS);
        for n in [0, 1, 3, 4, 6] {
            for len in [CHUNK, 37] {
                let want = vals[..len].iter().enumerate().fold(0u64, |m, (j, &v)| {
                    let hit = spans[..n].iter().any(|&(a, b)| a <= v && v <= b);
                    m | (u64::from(hit) << j)
                });
                for k in available_kernels() {
                    assert_eq!(
                        dispatch!(k, in_spans(&spans[..n], &vals[..len])),
                        want,
                        "{k:?}"
                    );
                }
            }
        }
    }

    /// The slice-wide filter lists exactly the values in the ranges, in
    /// order, for any number of ranges (registers up to `REG_SPANS`, the
    /// chunk test beyond) and slices that end inside a chunk and span
    /// several `HIT_SLICE`s; every version's masks are the reference's.
    #[test]
    fn hits_are_the_values_in_the_ranges() {
        let (vals, spans) = (filter_values(2 * HIT_SLICE + 3 * CHUNK + 17), FILTER_SPANS);
        for n in 0..=spans.len() {
            for len in [0, 37, CHUNK, HIT_SLICE + 5, vals.len()] {
                let (xs, ranges) = (&vals[..len], &spans[..n]);
                let want: Vec<usize> = (0..len)
                    .filter(|&j| ranges.iter().any(|&(a, b)| a <= xs[j] && xs[j] <= b))
                    .collect();
                let mut got = Vec::new();
                for_each_hit(ranges, xs, |j| got.push(j));
                assert_eq!(got, want, "{n} ranges, {len} values");
                let piece = &xs[..len.min(HIT_SLICE)];
                let reference: Vec<u64> = piece
                    .chunks(CHUNK)
                    .map(|c| scalar::in_spans(ranges, c))
                    .collect();
                for k in available_kernels() {
                    let mut masks = vec![u64::MAX; piece.len().div_ceil(CHUNK)];
                    span_masks_on(k, ranges, piece, &mut masks);
                    assert_eq!(masks, reference, "{k:?}: {n} ranges, {len} values");
                }
            }
        }
    }
}
