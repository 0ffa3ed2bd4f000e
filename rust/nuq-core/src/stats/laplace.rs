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
use super::layout::{Layout, GATHER_MAX};
use super::median::{from_total_key, run_of, select_middle};
use super::parts::map_parts;
use super::simd::band_split;

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
    let Split { below, above, band } = total;
    // Everything below the band ranks first, so the band holds the ranks
    // `below.n ..` in order.
    let at = |k: usize| k.checked_sub(below.n).filter(|&i| i < band.len());
    let (lo_at, hi_at) = (at(k_lo)?, at(k_hi)?);
    let mut keys = Vec::new();
    let median = select_middle(&band, &mut keys, lo_at, hi_at);
    let shift = median - centre;
    // Summed in the order the selection left the keys, which fixes its
    // rounding.
    let in_band: f64 = keys
        .iter()
        .map(|&k| (f64::from(from_total_key(k)) - median).abs())
        .sum();
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

/// One part's `Split` (the sums below and over all, and the band's values,
/// from `simd::band_split`): what lies above is what is neither below nor
/// in the band (one sum over all values costs the loop less than a second
/// masked one; every term is taken about the centre, inside the band, so
/// the difference loses nothing to an offset).
fn split(x: &[f32], lo: f64, hi: f64, centre: f64) -> Split {
    let s = band_split(x, lo, hi, centre);
    let in_band: f64 = s.band.iter().map(|&v| f64::from(v) - centre).sum();
    let below = Side {
        n: s.below_n,
        sum: s.below_sum,
    };
    Split {
        above: Side {
            n: x.len() - below.n - s.band.len(),
            sum: s.all_sum - below.sum - in_band,
        },
        below,
        band: s.band,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fit::{central_grid, fit_tensor};
    use super::super::grid::buckets_for;
    use super::super::layout::build;
    use super::super::moments::{mean_abs_dev, moments};
    use super::super::source::Flat;
    use super::super::tests::sorted_median;
    use super::*;

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
}
