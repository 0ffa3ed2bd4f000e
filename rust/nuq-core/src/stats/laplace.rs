//! The Laplace fit of a large tensor, median and mean absolute deviation,
//! in one data pass after the histogram (instead of a gather pass for the
//! median and another pass for `Σ |x - median|`).
//!
//! The layout names the run(s) holding the two middle ranks, whose values
//! lie in a band `[lo, hi]`. Every value below the band is smaller than the
//! median and every value above it larger, so `|x - m|` is `m - x` below
//! and `x - m` above: one pass counts and sums (relative to a centre `c` in
//! the band, so nothing cancels) the values below, sums all of them, and
//! copies out the few in the band; what lies above is what is left
//! (`S_above = S_all - S_below - S_band`). The band's values then give the
//! median by selection and add their own `|x - m|`:
//!
//! `Σ |x - m| = (S_above - (m - c) n_above) + ((m - c) n_below - S_below) + Σ_band |x - m|`
//!
//! The sums run over fixed parts in lanes and are combined in index order,
//! so the result does not depend on the thread count or the CPU; it equals
//! the element-by-element sum up to rounding (a relative 1e-13 or less).

use super::fit::LocScale;
use super::hist::{Layout, GATHER_MAX};
use super::moments::{reduce, LANES};
use super::router::{f32_at_least, f32_at_most, for_each_hit};
use super::select::run_of;
use super::source::map_parts;

/// What one part holds below, above and inside the band.
#[derive(Debug, Default)]
struct Split {
    below: Side,
    above: Side,
    /// The band's values, in data order.
    band: Vec<f32>,
}

/// Count of a side's values and `Σ (v - c)` over them.
#[derive(Debug, Default, Clone, Copy)]
struct Side {
    n: usize,
    sum: f64,
}

/// Median and mean `|x - median|` of finite `x` (at least one element)
/// from its fresh layout, or `None` when the middle runs hold more than
/// `GATHER_MAX` values (the caller then refines).
pub(crate) fn laplace_fit(x: &[f32], layout: &Layout) -> Option<LocScale> {
    let n = x.len();
    let (k_lo, k_hi) = ((n - 1) / 2, n / 2);
    let (first, last) = (
        &layout.recs[run_of(layout, k_lo)],
        &layout.recs[run_of(layout, k_hi)],
    );
    if last.offset + last.count - first.offset > GATHER_MAX {
        return None;
    }
    let (lo, hi) = (first.lo, last.hi);
    let centre = [lo, hi, 0.0].into_iter().find(|c| c.is_finite())?;
    let parts = map_parts(n, |r| split(&x[r], lo, hi, centre));
    let mut total = Split::default();
    for p in parts {
        total.below = total.below.add(p.below);
        total.above = total.above.add(p.above);
        total.band.extend_from_slice(&p.band);
    }
    let Split {
        below,
        above,
        mut band,
    } = total;
    // Everything below the band ranks first, so the band holds the ranks
    // `below.n ..` in order.
    let at = |k: usize| k.checked_sub(below.n).filter(|&i| i < band.len());
    let (lo_at, hi_at) = (at(k_lo)?, at(k_hi)?);
    let (lower, &mut hi_val, _) = band.select_nth_unstable_by(hi_at, f32::total_cmp);
    let median = if lo_at == hi_at {
        f64::from(hi_val)
    } else {
        let lo_val = lower.iter().copied().max_by(f32::total_cmp)?;
        (f64::from(lo_val) + f64::from(hi_val)) / 2.0
    };
    let shift = median - centre;
    let in_band: f64 = band.iter().map(|&v| (f64::from(v) - median).abs()).sum();
    let outside = (above.sum - shift * above.n as f64) + (shift * below.n as f64 - below.sum);
    Some(LocScale {
        loc: median,
        scale: (outside + in_band).max(0.0) / n as f64,
    })
}

impl Side {
    fn add(self, o: Side) -> Side {
        Side {
            n: self.n + o.n,
            sum: self.sum + o.sum,
        }
    }
}

/// One part's `Split`: explicit AVX-512 where present (the band's values
/// are picked up in the same loop), else the portable loops; the same IEEE
/// operations in the same order either way.
fn split(x: &[f32], lo: f64, hi: f64, centre: f64) -> Split {
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx512.is_allowed() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { x86_avx512::split(x, lo, hi, centre) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::pack::Kernel::Avx2.is_allowed() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { split_avx2(x, lo, hi, centre) };
    }
    split_any(x, lo, hi, centre)
}

/// The portable loops compiled for AVX2 (the baseline x86-64 build only has
/// 128-bit vectors): the same code, bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn split_avx2(x: &[f32], lo: f64, hi: f64, centre: f64) -> Split {
    split_any(x, lo, hi, centre)
}

#[inline(always)]
fn split_any(x: &[f32], lo: f64, hi: f64, centre: f64) -> Split {
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
    let mut below = Side {
        n: n_below.iter().sum::<u64>() as usize,
        sum: reduce(s_below),
    };
    let mut all = reduce(s_all);
    add_tail(&mut below, &mut all, chunks.remainder(), lo, centre);
    // The band's few values, by a second sweep of the part (in cache),
    // which keeps the loop above free of branches: `v` is in `[lo, hi]`
    // exactly when it is in the f32 range rounded inward. (Only a part
    // whose values all lie below the band is known to hold none.)
    let mut band = Vec::new();
    if below.n < x.len() {
        let range = [(f32_at_least(lo), f32_at_most(hi))];
        for_each_hit(&range, x, |j| band.push(x[j]));
    }
    finish(x.len(), below, all, band, centre)
}

/// Adds the values after the last full lane block, one by one, to `all`
/// and (those below the band) to `below`.
#[inline(always)]
fn add_tail(below: &mut Side, all: &mut f64, tail: &[f32], lo: f64, centre: f64) {
    for &v in tail {
        let w = f64::from(v);
        *all += w - centre;
        if w < lo {
            *below = below.add(Side {
                n: 1,
                sum: w - centre,
            });
        }
    }
}

/// The part's `Split` from its `n` values' side below the band, the sum of
/// all their `v - centre`, and the band's values: what lies above is what
/// is neither below nor in the band (one sum over all values costs the
/// loop less than a second masked one; every term is taken about the
/// centre, inside the band, so the difference loses nothing to an offset).
fn finish(n: usize, below: Side, all: f64, band: Vec<f32>, centre: f64) -> Split {
    let in_band: f64 = band.iter().map(|&v| f64::from(v) - centre).sum();
    Split {
        above: Side {
            n: n - below.n - band.len(),
            sum: all - below.sum - in_band,
        },
        below,
        band,
    }
}

/// The loop of `split_any` in explicit AVX-512 (LLVM splits the portable
/// f32-to-f64 loop into 128-bit halves and spills its lanes): lanes 0..8
/// and 8..16 in two registers per side, masked-to-zero terms added as the
/// portable code adds `0.0`, and the band's values pushed when a block
/// holds any (rarely), so no second sweep is needed.
#[cfg(target_arch = "x86_64")]
mod x86_avx512 {
    use std::arch::x86_64::*;

    use super::{add_tail, finish, reduce, Side, Split, LANES};

    /// The values of block `c` whose bit of `outside` is clear. Out of line
    /// and cold: a call inside the loop would otherwise keep its
    /// accumulators in memory.
    #[cold]
    #[inline(never)]
    fn push_band(band: &mut Vec<f32>, c: &[f32], outside: u32) {
        band.extend((0..LANES).filter(|l| outside >> l & 1 == 0).map(|l| c[l]));
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn split(x: &[f32], lo: f64, hi: f64, centre: f64) -> Split {
        let (lo_v, hi_v, c_v) = (
            _mm512_set1_pd(lo),
            _mm512_set1_pd(hi),
            _mm512_set1_pd(centre),
        );
        let (mut below_0, mut below_1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let (mut all_0, mut all_1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        // Counts per lane, 64-bit.
        let mut n_below = _mm512_setzero_si512();
        let one = _mm512_set1_epi64(1);
        let mut band = Vec::new();
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 floats.
            let (v0, v1) = unsafe {
                (
                    _mm512_cvtps_pd(_mm256_loadu_ps(c.as_ptr())),
                    _mm512_cvtps_pd(_mm256_loadu_ps(c.as_ptr().add(8))),
                )
            };
            let (b0, b1) = (
                _mm512_cmp_pd_mask::<_CMP_LT_OQ>(v0, lo_v),
                _mm512_cmp_pd_mask::<_CMP_LT_OQ>(v1, lo_v),
            );
            let (a0, a1) = (
                _mm512_cmp_pd_mask::<_CMP_GT_OQ>(v0, hi_v),
                _mm512_cmp_pd_mask::<_CMP_GT_OQ>(v1, hi_v),
            );
            let (d0, d1) = (_mm512_sub_pd(v0, c_v), _mm512_sub_pd(v1, c_v));
            below_0 = _mm512_add_pd(below_0, _mm512_maskz_mov_pd(b0, d0));
            below_1 = _mm512_add_pd(below_1, _mm512_maskz_mov_pd(b1, d1));
            all_0 = _mm512_add_pd(all_0, d0);
            all_1 = _mm512_add_pd(all_1, d1);
            n_below = _mm512_mask_add_epi64(n_below, b0, n_below, one);
            n_below = _mm512_mask_add_epi64(n_below, b1, n_below, one);
            let outside = u32::from(b0 | a0) | u32::from(b1 | a1) << 8;
            if outside != 0xffff {
                push_band(&mut band, c, outside);
            }
        }
        let sum = |h0: __m512d, h1: __m512d| {
            let mut out = [0.0f64; LANES];
            // SAFETY: `out` holds 16 f64.
            unsafe {
                _mm512_storeu_pd(out.as_mut_ptr(), h0);
                _mm512_storeu_pd(out.as_mut_ptr().add(8), h1);
            }
            reduce(out)
        };
        let count = |n: __m512i| {
            let mut out = [0u64; 8];
            // SAFETY: `out` holds 8 u64.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), n) };
            out.iter().sum::<u64>() as usize
        };
        let mut below = Side {
            n: count(n_below),
            sum: sum(below_0, below_1),
        };
        let mut all = sum(all_0, all_1);
        let tail = chunks.remainder();
        add_tail(&mut below, &mut all, tail, lo, centre);
        band.extend(tail.iter().filter(|&&v| (lo..=hi).contains(&f64::from(v))));
        finish(x.len(), below, all, band, centre)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fit::{central_grid, fit_tensor};
    use super::super::hist::{buckets_for, build};
    use super::super::moments::{mean_abs_dev, moments};
    use super::super::source::Flat;
    use super::*;

    fn sorted_median(x: &[f32]) -> f64 {
        let mut v = x.to_vec();
        v.sort_by(f32::total_cmp);
        let n = v.len();
        (f64::from(v[(n - 1) / 2]) + f64::from(v[n / 2])) / 2.0
    }

    fn fit_of(x: &[f32]) -> Option<LocScale> {
        let m = moments(x).unwrap();
        let (lo, hi) = central_grid(&m);
        let layout = build(&Flat(x), lo, hi, buckets_for(x.len()), Some((m.min, m.max)));
        laplace_fit(x, &layout)
    }

    /// The median is the sort's; the scale is the element-by-element mean
    /// |x - median| within rounding: on skewed, offset, tied and odd-sized
    /// data, and with the middle ranks in one run or in two.
    #[test]
    fn median_and_scale_match_the_direct_computation() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut u = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let cases: Vec<Vec<f32>> = vec![
            (0..100_001).map(|_| (u() - 0.5) as f32).collect(),
            (0..100_000)
                .map(|_| (1000.0 + u().powi(3) * 1e-3) as f32)
                .collect(),
            (0..65_536).map(|_| (u() * 7.0).floor() as f32).collect(),
            (0..70_000).map(|_| (-(u().ln()) * 0.02) as f32).collect(),
            (0..50_000)
                .map(|i| if i % 2 == 0 { -1.0 } else { 1.0 })
                .collect(),
        ];
        for x in &cases {
            let f = fit_of(x).expect("middle runs are small");
            assert_eq!(f.loc, sorted_median(x));
            let want = mean_abs_dev(x, f.loc);
            assert!(
                (f.scale - want).abs() <= 1e-12 * want.abs().max(f64::MIN_POSITIVE),
                "{} vs {want}",
                f.scale
            );
        }
    }

    /// Middle runs beyond `GATHER_MAX` values are left to the caller.
    #[test]
    fn large_middle_runs_are_declined() {
        let x = vec![3.0f32; GATHER_MAX + 10];
        let layout = build(&Flat(&x), 0.0, 1.0, 16, Some((3.0, 3.0)));
        assert!(laplace_fit(&x, &layout).is_none());
        let f = fit_tensor(&x).unwrap();
        assert_eq!((f.laplace.loc, f.laplace.scale), (3.0, 0.0));
    }

    /// The part sums and the band do not depend on the compiled version
    /// (non-integer values, so that a different order of the additions
    /// would show), and match a direct count and sum.
    #[test]
    fn split_versions_agree() {
        let x: Vec<f32> = (0..10_007)
            .map(|i| ((i * 7919) % 1009) as f32 * 0.37 - 185.3 + (i as f32).sin() * 1e-3)
            .collect();
        let (lo, hi, centre) = (-3.5, 2.0, -1.0);
        let want = split_any(&x, lo, hi, centre);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available (checked).
            let got = unsafe { x86_avx512::split(&x, lo, hi, centre) };
            assert_eq!(format!("{got:?}"), format!("{want:?}"));
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked).
            let got = unsafe { split_avx2(&x, lo, hi, centre) };
            assert_eq!(format!("{got:?}"), format!("{want:?}"));
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
        assert_eq!(want.below.n, below.len());
        let sum: f64 = below.iter().map(|v| v - centre).sum();
        assert!((want.below.sum - sum).abs() <= 1e-9 * sum.abs());
        assert_eq!(want.below.n + want.above.n + band.len(), x.len());
    }
}
