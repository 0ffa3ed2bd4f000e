//! The portable reference of every statistics loop: what each
//! instruction-set version in this directory must compute, bit for bit.
//! Sums run in `LANES` independent f64 accumulators added pairwise at the
//! end (a fixed order that vectorizes); compares and indices are exact.

use std::ops::Range;

use super::super::grid::Grid;
use super::super::router::{f32_at_least, f32_at_most};
use super::super::source::{Source, Value, CHUNK};
use super::BandSplit;

/// Lanes of independent f64 accumulators: vectorizable, fixed order (two
/// AVX-512 or four AVX2 registers, enough add chains to hide the latency).
pub(crate) const LANES: usize = 16;

/// `Σ f(x)` in `LANES` partial sums added pairwise at the end, then the tail.
#[inline(always)]
pub(super) fn lane_sum(x: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(f64::from(v));
        }
    }
    let tail: f64 = it.remainder().iter().map(|&v| f(f64::from(v))).sum();
    reduce(acc) + tail
}

/// The lanes added pairwise: `acc[i] += acc[i + w]` for w = 8, 4, 2, 1.
#[inline(always)]
pub(super) fn reduce(mut acc: [f64; LANES]) -> f64 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

#[inline(always)]
pub(super) fn sum(x: &[f32]) -> f64 {
    lane_sum(x, |v| v)
}

#[inline(always)]
pub(super) fn sq_dev_sum(x: &[f32], center: f64) -> f64 {
    lane_sum(x, |v| (v - center) * (v - center))
}

#[inline(always)]
pub(super) fn abs_dev_sum(x: &[f32], center: f64) -> f64 {
    lane_sum(x, |v| (v - center).abs())
}

/// Smallest and largest of finite `x` in `LANES` lanes (plain compares: they
/// vectorize, unlike `f32::min`'s NaN handling).
#[inline(always)]
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for j in 0..LANES {
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
        }
    }
    let fold = |(a, b): (f32, f32), &v: &f32| (a.min(v), b.max(v));
    let lanes = lo
        .iter()
        .zip(&hi)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), (&l, &h)| {
            (a.min(l), b.max(h))
        });
    it.remainder().iter().fold(lanes, fold)
}

/// Number of values of `x` below each pivot: a compare-and-add pass per
/// pivot (u32 lane sums cannot overflow within a piece).
#[inline(always)]
pub(super) fn count_below<const P: usize>(x: &[f32], pivots: &[f32; P]) -> [usize; P] {
    let mut below = [0usize; P];
    for piece in x.chunks(1 << 20) {
        for (b, &p) in below.iter_mut().zip(pivots) {
            *b += piece.iter().map(|&v| u32::from(v < p)).sum::<u32>() as usize;
        }
    }
    below
}

/// Adds one to `counts[index(v)]` for every value: the indices of a chunk
/// first (a vectorizable loop), then the increments.
#[inline(always)]
pub(super) fn count_bins(x: &[f32], counts: &mut [u32], index: impl Fn(f32) -> u32) {
    let mut idx = [0u32; CHUNK];
    for c in x.chunks(CHUNK) {
        for (o, &v) in idx.iter_mut().zip(c) {
            *o = index(v);
        }
        for &b in &idx[..c.len()] {
            counts[b as usize] += 1;
        }
    }
}

/// Sums about `centre` below the band `[lo, hi]` and over everything, and
/// the band's values in data order (see [`BandSplit`]).
#[inline(always)]
pub(super) fn band_split(x: &[f32], lo: f64, hi: f64, centre: f64) -> BandSplit {
    let (mut s_below, mut s_all) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut n_below = [0u64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let v = f64::from(c[l]);
            let b = v < lo;
            let d = v - centre;
            s_below[l] += if b { d } else { 0.0 };
            s_all[l] += d;
            n_below[l] += u64::from(b);
        }
    }
    let mut s = BandSplit {
        below_n: n_below.iter().sum::<u64>() as usize,
        below_sum: reduce(s_below),
        all_sum: reduce(s_all),
        band: Vec::new(),
    };
    add_tail(&mut s, chunks.remainder(), lo, centre);
    // The band's few values, by a second sweep of the part (in cache),
    // which keeps the loop above free of branches: `v` is in `[lo, hi]`
    // exactly when it is in the f32 range rounded inward. (Only a part
    // whose values all lie below the band is known to hold none.)
    if s.below_n < x.len() {
        let range = [(f32_at_least(lo), f32_at_most(hi))];
        super::for_each_hit(&range, x, |j| s.band.push(x[j]));
    }
    s
}

/// Adds the values after the last full lane block, one by one, to the sum
/// over all and (those below the band) to the sum below.
#[inline(always)]
pub(super) fn add_tail(s: &mut BandSplit, tail: &[f32], lo: f64, centre: f64) {
    for &v in tail {
        let w = f64::from(v);
        s.all_sum += w - centre;
        if w < lo {
            s.below_n += 1;
            s.below_sum += w - centre;
        }
    }
}

/// Bit `j` set when `vals[j]` (at most `CHUNK` of them) lies in one of the
/// ranges.
#[inline(always)]
pub(super) fn in_spans(spans: &[(f32, f32)], vals: &[f32]) -> u64 {
    let mut hit = [0u8; CHUNK];
    for &(lo, hi) in spans {
        for (h, &v) in hit.iter_mut().zip(vals) {
            *h |= u8::from(v >= lo) & u8::from(v <= hi);
        }
    }
    // Eight 0/1 bytes to eight bits: the multiply adds byte k's bit at bit
    // 56 + k, and no other partial product reaches the top byte.
    hit.chunks_exact(8).enumerate().fold(0u64, |m, (k, b)| {
        let w = u64::from_le_bytes(b.try_into().unwrap());
        m | ((w.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k))
    })
}

/// `grid.index` of every value of `vals` into `out`.
#[inline(always)]
pub(crate) fn index_block<V: Value>(grid: &Grid, vals: &[V], out: &mut [u32; CHUNK]) {
    for (o, &v) in out.iter_mut().zip(vals) {
        *o = grid.index(v.to_f64()) as u32;
    }
}

/// Adds the bucket of every value of `range` to `h` (`grid.nb` counters).
#[inline(always)]
pub(super) fn count_range<S: Source>(src: &S, range: Range<usize>, grid: &Grid, h: &mut [u32]) {
    assert_eq!(h.len(), grid.nb, "one counter per bucket");
    src.index_chunks(range, grid, |idx| {
        for &b in idx {
            // SAFETY: `index` returns at most `nb - 1` and `h` holds `nb`
            // counters (asserted above).
            unsafe { *h.get_unchecked_mut(b as usize) += 1 };
        }
    });
}
