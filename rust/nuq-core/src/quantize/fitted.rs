//! Codebooks fitted to the weights themselves, keeping every span's extremes.
//!
//! The Lloyd–Max codebook of the fitted density minimises the expected error
//! of that density, and does it by clipping the largest weights, which
//! trained networks depend on. Here every span of weights gets the scale of
//! symmetric round-to-nearest, `s = f16(absmax / q)` with `q = 2^(bits−1) − 1`
//! (1 for one bit), and the codebook, in units of `s`, has its first and last
//! level pinned at ±q, so the extremes decode as round-to-nearest decodes them
//! (exactly, up to the f16 rounding of the scale):
//!
//! | granularity | `loc` | `scale` (f16 values)   | span                                          |
//! |-------------|-------|------------------------|-----------------------------------------------|
//! | tensor      | none  | the tensor's absmax / q | the tensor                                    |
//! | channel     | none  | each row's absmax / q   | a row                                         |
//! | group `g`   | none  | each group's absmax / q | `g` weights of a row; a row's last may be shorter |
//!
//! The codebook is fitted on the normalised values `u = w / (q·scale)` in
//! [−1, 1], each weighing `scale²` (so errors are those of the real weights),
//! binned on a sample of whole rows and judged on other rows
//! ([`Binned::fit_and_judge`]), and stored times `q`.
//! Candidates:
//! - the grid of round-to-nearest (`k / q`, `|k| <= q`) plus one level in its
//!   heaviest gap: it contains every level of round-to-nearest on the same
//!   scales, so no weight decodes worse;
//! - the pinned Lloyd fixed points ([`lloyd_pinned`]) of the values, each
//!   started from the companding init (levels at equal steps of the cube root
//!   of the weighted density, the asymptotically optimal spacing), with the
//!   largest 1% of the weights counted `1 + μ` times for every `μ` of
//!   [`TOP_WEIGHT`] (a Lagrangian sweep of the two errors), and weighted by
//!   `1 + λ u²` for every `λ` of [`EMPHASIS`]. Both spend more levels on
//!   large magnitudes as `μ` or `λ` grows.
//!
//! The codebook kept is the first candidate unless another has an error over
//! all the values below [`CLEAR_GAIN`] times its error and an error on the
//! largest 1% of the tensor's weights (by |w|) within [`TOP_SLACK`] of its
//! own; then the one with the smallest error. Hence, up to the sampling, the
//! tensor's error is at most round-to-nearest's, and its largest weights'
//! error at most half a decibel above it.

use half::{f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use super::group::absmax;
use super::rows::{encode_rows, Codebook};
use super::simd::span_absmax;
use super::{energy_of, Config, Granularity, Quantized};
use crate::error::Result;
use crate::pack::Kernel;
use crate::solve::lloyd_pinned;
use crate::stats::fit_tensor;

/// Extra weight `μ` of the largest 1% of the weights in the candidates' fits
/// (0: plain MSE): Lagrangian trade-offs between the two errors.
const TOP_WEIGHT: [f64; 7] = [0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0];

/// Weights of `1 + λ u²` for more candidate codebooks.
const EMPHASIS: [f64; 3] = [4.0, 64.0, 1024.0];

/// Largest ratio of a candidate's error on the largest 1% of the weights to
/// the round-to-nearest grid's: 10^(0.5 / 10), half a decibel.
const TOP_SLACK: f64 = 1.122_018_454_301_963_3;

/// A fitted candidate replaces the round-to-nearest one only with an error
/// this much smaller on the sample (0.09 dB), so that the binning cannot make
/// the kept codebook worse than round-to-nearest on the whole tensor.
const CLEAR_GAIN: f64 = 0.98;

/// Values binned for the fit: at least this many (whole rows), when the tensor
/// has more.
const SAMPLE_VALUES: usize = 1 << 17;

/// Lloyd sweeps per candidate (the companding init starts near the optimum).
const SWEEPS: usize = 40;

/// Where the codebook comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Levels {
    /// Fitted on the tensor's normalised values (stored with the tensor).
    Fitted,
    /// The family's implied group codebook (recomputed when decoding).
    Implied,
}

pub(super) fn quantize(
    x: &[f32],
    rows: usize,
    cols: usize,
    cfg: &Config,
    source: Levels,
) -> Result<Quantized> {
    // Implied codebooks are in units of the absmax itself.
    let q = match source {
        Levels::Fitted => rtn_steps(cfg.bits),
        Levels::Implied => 1.0,
    };
    // The codebook is built beside the fit, which only the report and an
    // implied codebook's family need: it fills the fit's serial steps.
    let codebook = || -> (Spans, Option<Vec<f32>>) {
        let spans = Spans::of(x, rows, cols, cfg.granularity, q as f32);
        let levels = (source == Levels::Fitted).then(|| {
            let bins = Binned::bins(cfg.bits);
            let (fit, judge) = Binned::fit_and_judge(x, (rows, cols), &spans, q, bins);
            let levels = fit_codebook(&fit, judge.as_ref().unwrap_or(&fit), cfg.bits);
            levels.iter().map(|&v| (v * q) as f32).collect()
        });
        (spans, levels)
    };
    let (fit, (spans, fitted)) = rayon::join(|| fit_tensor(x), codebook);
    let fit = fit?;
    let family = super::affine::choose(cfg.family, fit.best());
    let levels: Vec<f32> = match (fitted, cfg.granularity) {
        (Some(levels), _) => levels,
        (None, Granularity::Group(g)) => crate::solve::implied_codebook(family, cfg.bits, g)?,
        (None, _) => unreachable!("implied codebooks are for groups only"),
    };
    let boundaries: Vec<f32> = levels.windows(2).map(|p| 0.5 * (p[0] + p[1])).collect();
    let book = Codebook {
        bits: cfg.bits,
        levels: &levels,
        boundaries: &boundaries,
        span: spans.span,
    };
    let enc = encode_rows(x, rows, cols, &book, |r, s| spans.at(r, s));
    let (fit_loc, fit_scale) = fit.params(family);
    Ok(Quantized {
        rows,
        cols,
        bits: cfg.bits,
        granularity: cfg.granularity,
        family,
        d_gaussian: fit.d_gaussian,
        d_laplace: fit.d_laplace,
        fit_loc,
        fit_scale,
        levels,
        loc: Vec::new(),
        scale: spans.scale,
        packed: enc.packed,
        sse: enc.sse,
        energy: energy_of(x.len(), fit.moments.mean, fit.moments.std),
        implied_codebook: source == Levels::Implied,
        f16_scales: true,
    })
}

/// The scale of every span, laid out as the file stores them.
struct Spans {
    scale: Vec<f32>,
    /// Columns per span: `cols` (tensor, channel) or `g`.
    span: usize,
    /// Spans per row in `scale` (0: one span for the whole tensor).
    per_row: usize,
}

impl Spans {
    fn of(x: &[f32], rows: usize, cols: usize, granularity: Granularity, q: f32) -> Spans {
        let (span, per_row) = match granularity {
            Granularity::Tensor => (cols.max(1), 0),
            Granularity::Channel => (cols.max(1), 1),
            Granularity::Group(g) => (g, cols.div_ceil(g)),
        };
        if granularity == Granularity::Tensor {
            let m = x.par_chunks(1 << 14).map(absmax).reduce(|| 0.0, f32::max);
            return Spans {
                scale: vec![to_f16(m / q)],
                span,
                per_row,
            };
        }
        let mut scale = vec![0f32; rows * per_row];
        let kernel = Kernel::selected();
        if cols > 0 {
            scale
                .par_chunks_mut(per_row)
                .zip(x.par_chunks(cols))
                .for_each(|(out, row)| {
                    span_absmax(kernel, row, span, out);
                    out.iter_mut().for_each(|m| *m /= q);
                    round_to_f16(out);
                });
        }
        Spans {
            scale,
            span,
            per_row,
        }
    }

    /// `(loc, scale)` of span `s` of row `r`.
    #[inline]
    fn at(&self, r: usize, s: usize) -> (f32, f32) {
        (0.0, self.scale[r * self.per_row + s])
    }
}

/// `m` rounded to the nearest f16 (what the file stores), saturating.
fn to_f16(m: f32) -> f32 {
    f16::from_f32(m.min(f16::MAX.to_f32())).to_f32()
}

/// [`to_f16`] of every value in place, converting a slice at a time (with
/// the CPU's f16 conversions where it has them; the rounding is the same).
fn round_to_f16(values: &mut [f32]) {
    let mut halves = [f16::ZERO; 64];
    for chunk in values.chunks_mut(halves.len()) {
        chunk.iter_mut().for_each(|m| *m = m.min(f16::MAX.to_f32()));
        let halves = &mut halves[..chunk.len()];
        halves.convert_from_f32_slice(chunk);
        halves.convert_to_f32_slice(chunk);
    }
}

/// A histogram of normalised values on [−1, 1], as ascending bin centroids
/// with their weights, for all the sampled values and for the largest 1% of
/// them by |w|.
struct Binned {
    all: (Vec<f64>, Vec<f64>),
    top: (Vec<f64>, Vec<f64>),
    /// The weight of the largest 1% in each bin of `all`, aligned with it.
    top_on_all: Vec<f64>,
}

impl Binned {
    /// Bins of [−1, 1] for a `bits`-wide codebook: about 128 per level of
    /// round-to-nearest, so that binning moves no error by more than a
    /// fraction of a percent, and few enough that the candidates' fits (which
    /// cost a pass over the bins each) stay cheap next to encoding.
    fn bins(bits: u32) -> usize {
        (64usize << bits).clamp(1 << 10, 1 << 15)
    }

    /// The rows binned to fit the codebook, and those binned to choose among
    /// the candidates: every `stride`-th row, `stride` keeping at least
    /// [`SAMPLE_VALUES`] values, from row 0 and from row `stride / 2`. A
    /// tensor with fewer values is binned whole, once, for both; a larger one
    /// is judged on other rows than those fitted, so that a codebook fitted to
    /// a sample's few largest weights does not look better than it is.
    fn fit_and_judge(
        x: &[f32],
        (rows, cols): (usize, usize),
        spans: &Spans,
        q: f64,
        bins: usize,
    ) -> (Binned, Option<Binned>) {
        let stride = (rows * cols / SAMPLE_VALUES).max(1).min(rows.max(1));
        let fit_rows: Vec<usize> = (0..rows).step_by(stride).collect();
        let mut magnitudes: Vec<f32> = fit_rows
            .iter()
            .flat_map(|&r| x[r * cols..(r + 1) * cols].iter().map(|v| v.abs()))
            .collect();
        let threshold = top_threshold(&mut magnitudes);
        let judge_rows: Vec<usize> = (stride / 2..rows).step_by(stride).collect();
        let of = |rows: &[usize]| Self::of_rows(x, cols, rows, spans, (q, threshold), bins);
        rayon::join(|| of(&fit_rows), || (stride > 1).then(|| of(&judge_rows)))
    }

    /// Bins the values of `rows`; those with |w| >= `threshold` also in `top`.
    /// Bins are filled in the values' order (the sums are the same whatever
    /// the blocking), a block of values at a time: their bins and normalised
    /// values first (a loop that vectorises), then the adds into the bins.
    fn of_rows(
        x: &[f32],
        cols: usize,
        rows: &[usize],
        spans: &Spans,
        (q, threshold): (f64, f32),
        bins: usize,
    ) -> Binned {
        let mut all = Hist::new(bins);
        let mut top = Hist::new(bins);
        let mut block = Block::default();
        for &r in rows {
            for (s, chunk) in x[r * cols..(r + 1) * cols].chunks(spans.span).enumerate() {
                let (loc, scale) = spans.at(r, s);
                if scale == 0.0 || !scale.is_finite() {
                    continue;
                }
                let unit = q * f64::from(scale);
                let (inv, w) = (1.0 / unit, unit * unit);
                for values in chunk.chunks(BLOCK) {
                    block.place(values, f64::from(loc), inv, bins);
                    for (k, &v) in values.iter().enumerate() {
                        // Non-finite values are the fit's error to report (it
                        // runs beside this); here they are only kept out of
                        // the bins.
                        if !v.is_finite() {
                            continue;
                        }
                        let (i, u) = (block.bin[k] as usize, block.u[k]);
                        all.add_at(i, u, w);
                        if v.abs() >= threshold {
                            top.add_at(i, u, w);
                        }
                    }
                }
            }
        }
        let top_on_all = all
            .w
            .iter()
            .zip(&top.w)
            .filter(|(&w, _)| w > 0.0)
            .map(|(_, &t)| t)
            .collect();
        Binned {
            all: all.points(),
            top: top.points(),
            top_on_all,
        }
    }
}

/// Values binned per step of [`Binned::of_rows`].
const BLOCK: usize = 64;

/// A block's normalised values `u` and their bins.
struct Block {
    u: [f64; BLOCK],
    bin: [u32; BLOCK],
}

impl Default for Block {
    fn default() -> Block {
        Block {
            u: [0.0; BLOCK],
            bin: [0; BLOCK],
        }
    }
}

impl Block {
    /// `u = clamp((v − loc)·inv, −1, 1)` of each of `values` (at most
    /// [`BLOCK`]) and its bin of `bins` equal bins of [−1, 1] ([`Hist::bin`]).
    #[inline]
    fn place(&mut self, values: &[f32], loc: f64, inv: f64, bins: usize) {
        for ((u, bin), &v) in self.u.iter_mut().zip(&mut self.bin).zip(values) {
            *u = ((f64::from(v) - loc) * inv).clamp(-1.0, 1.0);
            *bin = Hist::bin(*u, bins);
        }
    }
}

/// The |w| at or above which the largest 1% of `magnitudes` lie (at least one).
fn top_threshold(magnitudes: &mut [f32]) -> f32 {
    let n = magnitudes.len();
    if n == 0 {
        return f32::INFINITY;
    }
    let k = n - n.div_ceil(100);
    *magnitudes.select_nth_unstable_by(k, f32::total_cmp).1
}

/// Weight and weighted sum of the values in each of `n` equal bins of [−1, 1].
struct Hist {
    w: Vec<f64>,
    wu: Vec<f64>,
}

impl Hist {
    fn new(n: usize) -> Hist {
        Hist {
            w: vec![0.0; n],
            wu: vec![0.0; n],
        }
    }

    /// The bin of `u` among `n` equal bins of [−1, 1] (NaN: bin 0), as
    /// `floor((u + 1) / 2 · n)` clamped to the last bin.
    #[inline(always)]
    fn bin(u: f64, n: usize) -> u32 {
        let t = ((u + 1.0) * 0.5 * n as f64).max(0.0).min((n - 1) as f64);
        // SAFETY: `t` is in [0, n − 1] and not NaN (max maps NaN to 0), and
        // `n` (at most 2^15 bins) fits an i32.
        unsafe { t.to_int_unchecked::<i32>() as u32 }
    }

    /// Adds `w` and `w·u` to bin `i` (from [`Hist::bin`]).
    #[inline(always)]
    fn add_at(&mut self, i: usize, u: f64, w: f64) {
        self.w[i] += w;
        self.wu[i] += w * u;
    }

    /// Centroids and weights of the non-empty bins, ascending.
    fn points(&self) -> (Vec<f64>, Vec<f64>) {
        self.w
            .iter()
            .zip(&self.wu)
            .filter(|(&w, _)| w > 0.0)
            .map(|(&w, &wu)| ((wu / w).clamp(-1.0, 1.0), w))
            .unzip()
    }
}

/// The kept codebook of `2^bits` ascending levels from −1 to 1 (module doc).
fn fit_codebook(binned: &Binned, judge: &Binned, bits: u32) -> Vec<f64> {
    let n = 1usize << bits;
    let (points, weights) = (&binned.all.0, &binned.all.1);
    if n <= 2 {
        return vec![-1.0, 1.0];
    }
    let rtn = rtn_plus_one(points, weights, n);
    let error = |levels: &[f64], (p, w): &(Vec<f64>, Vec<f64>)| sq_error(p, w, levels);
    let top_limit = error(&rtn, &judge.top) * TOP_SLACK;
    let rtn_error = error(&rtn, &judge.all);
    if points.is_empty() {
        return rtn;
    }
    let mut best = (rtn_error, rtn.clone());
    let uniform: Vec<f64> = (0..n)
        .map(|k| -1.0 + 2.0 * k as f64 / (n - 1) as f64)
        .collect();
    // Each weighting with the cube roots of its weights (for the companding
    // init). The Lagrangian ones differ from the plain weights only where
    // the largest 1% lie, so the plain roots are taken once and only those
    // bins' roots are taken again.
    let roots: Vec<f64> = weights.iter().map(|w| w.cbrt()).collect();
    let lagrangian = TOP_WEIGHT.iter().map(|&mu| {
        let (mut w, mut r) = (weights.clone(), roots.clone());
        for ((w, r), &t) in w.iter_mut().zip(&mut r).zip(&binned.top_on_all) {
            if t > 0.0 {
                *w += mu * t;
                *r = w.cbrt();
            }
        }
        (w, r)
    });
    let emphasis = EMPHASIS.iter().map(|&lambda| {
        let w: Vec<f64> = points
            .iter()
            .zip(weights)
            .map(|(u, w)| w * (1.0 + lambda * u * u))
            .collect();
        let r = w.iter().map(|w| w.cbrt()).collect();
        (w, r)
    });
    let weightings: Vec<(Vec<f64>, Vec<f64>)> = lagrangian.chain(emphasis).collect();
    let fits: Vec<(f64, f64, Vec<f64>)> = weightings
        .par_iter()
        .map(|(weighted, roots)| {
            let init = companding(points, roots, &uniform);
            let levels = lloyd_pinned(points, weighted, &init, SWEEPS);
            (
                error(&levels, &judge.all),
                error(&levels, &judge.top),
                levels,
            )
        })
        .collect();
    for (total, top, levels) in fits {
        if total < best.0 && top <= top_limit {
            best = (total, levels);
        }
    }
    if best.0 < CLEAR_GAIN * rtn_error {
        best.1
    } else {
        rtn
    }
}

/// Steps of symmetric round-to-nearest on each side of 0: `2^(bits−1) − 1`,
/// and 1 for one bit (whose two levels are ±1).
fn rtn_steps(bits: u32) -> f64 {
    ((1u32 << (bits - 1)) - 1).max(1) as f64
}

/// The `n − 1` levels `k / q` of symmetric round-to-nearest (`q = n/2 − 1`)
/// and one more at the weighted mean of the points in the gap that holds the
/// most weight (its midpoint when no gap holds any).
fn rtn_plus_one(points: &[f64], weights: &[f64], n: usize) -> Vec<f64> {
    let q = (n / 2 - 1) as f64;
    let mut levels: Vec<f64> = (0..n - 1).map(|k| (k as f64 - q) / q).collect();
    let (mut best, mut extra) = (0.0, 0.5 / q);
    for gap in levels.windows(2) {
        let (lo, hi) = (
            points.partition_point(|&p| p <= gap[0]),
            points.partition_point(|&p| p < gap[1]),
        );
        let w: f64 = weights[lo..hi].iter().sum();
        if w > best {
            let wp: f64 = points[lo..hi]
                .iter()
                .zip(&weights[lo..hi])
                .map(|(p, w)| p * w)
                .sum();
            (best, extra) = (w, wp / w);
        }
    }
    let at = levels.partition_point(|&l| l < extra);
    levels.insert(at, extra);
    levels
}

/// Levels at equal steps of the cumulative cube roots of the weights,
/// `roots` (the high-resolution optimum), ends at ±1, blended with a thousandth of
/// `uniform` so that they ascend strictly.
fn companding(points: &[f64], roots: &[f64], uniform: &[f64]) -> Vec<f64> {
    let n = uniform.len();
    let mut cumulative = Vec::with_capacity(points.len());
    let mut total = 0.0;
    for r in roots {
        total += r;
        cumulative.push(total);
    }
    let mut levels = Vec::with_capacity(n);
    levels.push(-1.0);
    for (k, &even) in uniform.iter().enumerate().take(n - 1).skip(1) {
        let target = total * k as f64 / (n - 1) as f64;
        let i = cumulative
            .partition_point(|&c| c < target)
            .min(points.len() - 1);
        levels.push(0.999 * points[i] + 0.001 * even);
    }
    levels.push(1.0);
    levels
}

/// `Σ w (p − nearest level)²` over ascending `points`.
fn sq_error(points: &[f64], weights: &[f64], levels: &[f64]) -> f64 {
    let mut cell = 0;
    let mut sum = 0.0;
    for (&p, &w) in points.iter().zip(weights) {
        while cell + 1 < levels.len() && p > 0.5 * (levels[cell] + levels[cell + 1]) {
            cell += 1;
        }
        let d = p - levels[cell];
        sum += w * d * d;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::{dequantize, quantize, CodebookChoice, FamilyChoice};
    use proptest::prelude::*;

    fn config(bits: u32, granularity: Granularity) -> Config {
        Config {
            bits,
            granularity,
            family: FamilyChoice::Auto,
            codebook: CodebookChoice::Fitted,
        }
    }

    /// Rounding a slice to f16 is rounding each value: ties to even,
    /// subnormals, saturation above the largest f16 (a NaN too), zeros.
    #[test]
    fn slices_round_to_f16_as_values_do() {
        let mut v: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.37).exp2() * 1e-9).collect();
        let tie = f16::from_f32(1.0).to_f32() + f16::EPSILON.to_f32() / 2.0;
        v.extend([
            0.0,
            -0.0,
            tie,
            65504.0,
            65520.0,
            1e9,
            f32::INFINITY,
            f32::NAN,
        ]);
        v.extend([5.96e-8, 3.0e-8]);
        let want: Vec<f32> = v.iter().map(|&m| to_f16(m)).collect();
        round_to_f16(&mut v);
        assert_eq!(v, want);
    }

    /// A bin is `floor((u + 1) / 2 · n)` clamped to the last bin, at bin
    /// edges and ends too, and a NaN lands in bin 0 rather than anywhere.
    #[test]
    fn bins_are_the_floor_of_the_scaled_value() {
        for n in [1024usize, 4096, 1 << 15] {
            let edges = (0..=n).map(|k| -1.0 + 2.0 * k as f64 / n as f64);
            let near = edges.flat_map(|e| [e, e.next_down(), e.next_up()]);
            for u in near.filter(|u| (-1.0..=1.0).contains(u)) {
                let want = (((u + 1.0) * 0.5 * n as f64) as usize).min(n - 1);
                assert_eq!(Hist::bin(u, n) as usize, want, "u = {u}, n = {n}");
            }
            assert_eq!(Hist::bin(f64::NAN, n), 0);
        }
    }

    /// The spans' lane-wise absmax (`group::absmax`) is `f32::max`'s fold
    /// at every length and lane, NaN skipped wherever it sits.
    #[test]
    fn absmax_is_the_fold_of_max() {
        for len in 0..40 {
            for at in 0..len {
                let mut x: Vec<f32> = (0..len).map(|i| (i as f32 - 13.0) * 0.5).collect();
                x[at] = -100.0 - at as f32;
                let want = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert_eq!(absmax(&x), want, "len {len}, largest at {at}");
                if len > 1 {
                    x[(at + 1) % len] = f32::NAN;
                    assert_eq!(absmax(&x), want, "NaN, len {len}, largest at {at}");
                }
            }
        }
        assert_eq!(absmax(&[]), 0.0);
    }

    /// Heavy-tailed weights (a Student-t-like ratio of uniforms) with a few
    /// large outliers, as trained layers have.
    fn heavy(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut uniform = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let g = (0..4).map(|_| uniform()).sum::<f64>() - 2.0;
                let t = g / (0.3 + uniform());
                (t * 0.02) as f32
            })
            .collect()
    }

    fn decoded(q: &Quantized) -> Vec<f32> {
        let mut out = vec![0f32; q.len()];
        dequantize(&q.view(), &mut out).unwrap();
        out
    }

    /// Symmetric round-to-nearest with f16 scales `absmax / q` over the same
    /// spans: the baseline the fitted codebook must not fall behind.
    fn round_to_nearest(x: &[f32], cols: usize, span: usize, bits: u32) -> Vec<f32> {
        let q = ((1i32 << (bits - 1)) - 1).max(1) as f32;
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(cols) {
            for grp in row.chunks(span) {
                let m = grp.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = f16::from_f32(m / q).to_f32();
                for &v in grp {
                    let k = if s > 0.0 {
                        (v / s).round().clamp(-q, q)
                    } else {
                        0.0
                    };
                    out.push(k * s);
                }
            }
        }
        out
    }

    fn sq_err(x: &[f32], y: &[f32], keep: impl Fn(f32) -> bool) -> f64 {
        x.iter()
            .zip(y)
            .filter(|(a, _)| keep(**a))
            .map(|(&a, &b)| f64::from(a - b).powi(2))
            .sum()
    }

    fn top_threshold_of(x: &[f32]) -> f32 {
        let mut m: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        top_threshold(&mut m)
    }

    const CASES: [(usize, usize, Granularity); 4] = [
        (64, 96, Granularity::Tensor),
        (64, 96, Granularity::Channel),
        (64, 96, Granularity::Group(32)),
        // 96 = 3 * 28 + 12: a short last group in every row.
        (64, 96, Granularity::Group(28)),
    ];

    fn span_of(cols: usize, g: Granularity) -> usize {
        match g {
            Granularity::Group(s) => s,
            _ => cols,
        }
    }

    /// Tensor granularity's single span is the whole tensor.
    fn rtn_of(x: &[f32], rows: usize, cols: usize, g: Granularity, bits: u32) -> Vec<f32> {
        match g {
            Granularity::Tensor => round_to_nearest(x, rows * cols, rows * cols, bits),
            _ => round_to_nearest(x, cols, span_of(cols, g), bits),
        }
    }

    #[test]
    fn never_worse_than_round_to_nearest_and_largest_weights_kept() {
        for seed in 1..4 {
            for (rows, cols, g) in CASES {
                let x = heavy(rows * cols, seed);
                let tau = top_threshold_of(&x);
                for bits in 2..=8 {
                    let q = quantize(&x, rows, cols, &config(bits, g)).unwrap();
                    let (ours, rtn) = (decoded(&q), rtn_of(&x, rows, cols, g, bits));
                    let (e, e_rtn) = (sq_err(&x, &ours, |_| true), sq_err(&x, &rtn, |_| true));
                    assert!(e <= e_rtn * (1.0 + 1e-6), "{g:?} {bits}: {e} > {e_rtn}");
                    let big = |v: f32| v.abs() >= tau;
                    let (t, t_rtn) = (sq_err(&x, &ours, big), sq_err(&x, &rtn, big));
                    // Within 1 dB of round-to-nearest on the largest 1%.
                    assert!(t <= t_rtn * 1.2589, "{g:?} {bits}: top {t} > {t_rtn}");
                }
            }
        }
    }

    #[test]
    fn fitted_codebook_beats_round_to_nearest_on_bell_shaped_weights() {
        // 4 bits on heavy tails: the fitted levels must earn their keep.
        let (rows, cols) = (64, 96);
        let x = heavy(rows * cols, 9);
        let q = quantize(&x, rows, cols, &config(4, Granularity::Channel)).unwrap();
        let rtn = rtn_of(&x, rows, cols, Granularity::Channel, 4);
        let gain = sq_err(&x, &rtn, |_| true) / q.sse;
        // Measured 1.20x; round-to-nearest plus one level alone gives less than 1.1x.
        assert!(gain > 1.15, "only {gain}x less error than round-to-nearest");
    }

    #[test]
    fn extremes_decode_as_round_to_nearest_does() {
        for (rows, cols, g) in CASES {
            let x = heavy(rows * cols, 4);
            let q = quantize(&x, rows, cols, &config(4, g)).unwrap();
            let rtn = rtn_of(&x, rows, cols, g, 4);
            let ours = decoded(&q);
            let top = x
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap()
                .0;
            assert_eq!(ours[top], rtn[top], "{g:?}");
            assert!((ours[top] - x[top]).abs() <= x[top].abs() * 1e-3, "{g:?}");
        }
    }

    #[test]
    fn reported_error_and_storage_match_the_decoded_tensor() {
        for (rows, cols, g) in CASES {
            let x = heavy(rows * cols, 2);
            for bits in 1..=8 {
                let q = quantize(&x, rows, cols, &config(bits, g)).unwrap();
                let e = sq_err(&x, &decoded(&q), |_| true);
                assert!((e - q.sse).abs() <= 1e-9 * q.energy, "{g:?} {bits}");
                let spans = match g {
                    Granularity::Tensor => 1,
                    Granularity::Channel => rows,
                    Granularity::Group(s) => rows * cols.div_ceil(s),
                };
                assert_eq!(q.scale.len(), spans);
                assert!(q.loc.is_empty() && !q.implied_codebook);
                let want = q.packed.len() + 4 * (1 << bits) + 2 * spans;
                assert_eq!(q.storage_bytes(), want);
            }
        }
    }

    #[test]
    fn lloyd_max_groups_that_do_not_divide_the_row_use_the_implied_codebook() {
        let x = heavy(8 * 50, 3);
        let cfg = Config {
            codebook: CodebookChoice::LloydMax,
            ..config(4, Granularity::Group(16))
        };
        let q = quantize(&x, 8, 50, &cfg).unwrap();
        assert!(q.implied_codebook);
        let want = crate::solve::implied_codebook(q.family, 4, 16).unwrap();
        assert_eq!(q.levels, want);
        assert_eq!(q.scale.len(), 8 * 4);
        let e = sq_err(&x, &decoded(&q), |_| true);
        assert!((e - q.sse).abs() <= 1e-9 * q.energy);
    }

    #[test]
    fn non_finite_values_are_the_fits_error_not_a_panic() {
        for (rows, cols, g) in CASES {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut x = heavy(rows * cols, 6);
                x[77] = bad;
                let err = quantize(&x, rows, cols, &config(4, g)).unwrap_err();
                assert!(
                    matches!(err, crate::error::NuqError::NonFinite { index: 77, .. }),
                    "{g:?} {bad}: {err:?}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn any_data_decodes_within_round_to_nearest_error(
            seed in 1u64..1000,
            rows in 1usize..12,
            cols in 1usize..80,
            bits in 2u32..=8,
            group in 1usize..40,
        ) {
            let x = heavy(rows * cols, seed);
            let g = Granularity::Group(group);
            let q = quantize(&x, rows, cols, &config(bits, g)).unwrap();
            let rtn = rtn_of(&x, rows, cols, g, bits);
            let (e, e_rtn) = (sq_err(&x, &decoded(&q), |_| true), sq_err(&x, &rtn, |_| true));
            prop_assert!(e <= e_rtn * (1.0 + 1e-6) + 1e-12, "{e} > {e_rtn}");
        }
    }
}
