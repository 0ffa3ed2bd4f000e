//! Routing of values to the records a pass targets: which of a few runs of
//! the layout (if any) holds a value, decided for a block of values at a
//! time. Most values belong to no target and are rejected first: by a few
//! value-range compares (targets are usually a handful of stretches of
//! consecutive runs), or, for scattered targets, by a bit-set test on the
//! grid index.

use super::hist::{Grid, Layout};
use super::source::{Value, CHUNK};

/// Maps a value to the target record holding it, if any: one grid index and a
/// table lookup, plus a short scan when a top-level bucket was refined.
pub(crate) struct Router {
    grid: Grid,
    /// Top-level buckets holding a target, one bit each (8 KiB for 2^16
    /// buckets: stays in L1, unlike `first`). Most values of a pass belong
    /// to no target and are rejected here.
    live: Vec<u64>,
    /// Per top-level bucket: first entry of that bucket, `DIRECT | target`
    /// for a bucket that is one inexact target run, or `NONE`.
    first: Vec<u32>,
    /// (root, lo, hi, target), sorted by value; an inexact run is the only
    /// entry of its root (its bounds overlap the neighbours' by the guard).
    entries: Vec<(usize, f64, f64, usize)>,
    /// Value ranges holding every target (a stretch of consecutive target
    /// runs each, from its first run's `lo` to its last run's `hi`), when
    /// there are at most `MAX_SPANS`; compares on the raw values vectorize
    /// and need no grid index for the values they reject.
    spans: Spans,
    /// How many targets: the slot of a value that belongs to none.
    targets: usize,
}

/// Most value ranges tested per value; more fall back to the bit set.
const MAX_SPANS: usize = 32;
/// Ranges that neighbouring stretches are joined down to, and the share of
/// the data (`1 / JOIN_SHARE`) the joined-in runs may hold. One range: the
/// range test is a pass over every value of the tensor, while the values
/// joined in cost one rejected lookup each (measured: benches/README.md).
const FEW_SPANS: usize = 1;
const JOIN_SHARE: usize = 64;
/// The share of the data that may be joined in to get down to `MAX_SPANS`
/// ranges: a rejected lookup costs a few times what the bit-set test costs
/// per value, and that test indexes every value.
const LAST_SHARE: usize = 8;

/// The value ranges, rounded outward to each value type (empty: not used).
#[derive(Debug, Default)]
pub(crate) struct Spans {
    pub(crate) f32s: Vec<(f32, f32)>,
    pub(crate) f64s: Vec<(f64, f64)>,
}

const NONE: u32 = u32::MAX;
/// Tags an entry of `first` that is the root's target itself (the root's
/// only entry, a whole bucket, which every value of the root belongs to).
const DIRECT: u32 = 1 << 31;

impl Router {
    /// `targets` are record indices, ascending.
    pub(crate) fn new(layout: &Layout, targets: &[usize]) -> Self {
        assert!(targets.len() < DIRECT as usize, "{} targets", targets.len());
        debug_assert!(
            targets.iter().all(|&i| layout.recs[i].buckets == 1),
            "coarse runs are split before a pass routes values to them"
        );
        let mut first = vec![NONE; layout.grid.nb];
        let mut live = vec![0u64; layout.grid.nb.div_ceil(64)];
        let mut entries = Vec::with_capacity(targets.len());
        for (t, &i) in targets.iter().enumerate() {
            let r = &layout.recs[i];
            live[r.root / 64] |= 1 << (r.root % 64);
            // An inexact run (a whole bucket) is its root's only entry:
            // its root maps to it directly, with no entry to read.
            if first[r.root] == NONE {
                first[r.root] = if r.exact {
                    entries.len() as u32
                } else {
                    DIRECT | t as u32
                };
            }
            let (lo, hi) = if r.exact {
                (r.lo, r.hi)
            } else {
                (f64::NEG_INFINITY, f64::INFINITY)
            };
            entries.push((r.root, lo, hi, t));
        }
        Router {
            grid: layout.grid,
            live,
            first,
            spans: value_spans(layout, targets),
            entries,
            targets: targets.len(),
        }
    }

    /// `target_of(v)`, or the number of targets for none, without a branch on the
    /// answer when `v`'s bucket is a whole target run or no target's.
    #[inline]
    pub(crate) fn slot_of(&self, v: f64) -> usize {
        let root = self.grid.index(v);
        let first = self.first[root];
        if first & DIRECT != 0 {
            // NONE has the DIRECT bit as well, and past it a number above
            // every target (asserted in `new`).
            return ((first & !DIRECT) as usize).min(self.targets);
        }
        self.lookup(root, v).unwrap_or(self.targets)
    }

    /// Calls `f(target, value)` for every value of `vals` that belongs to a
    /// target: a block-wide test first (value ranges, or grid indices and
    /// the bit set), and the full lookup only for the few values that pass.
    #[inline]
    pub(crate) fn route_block<V: Value>(&self, vals: &[V], mut f: impl FnMut(usize, V)) {
        let spans = V::spans(&self.spans);
        if !spans.is_empty() {
            let mut hits = in_spans(spans, vals);
            while hits != 0 {
                let j = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                let v = vals[j].to_f64();
                if let Some(t) = self.lookup(self.grid.index(v), v) {
                    f(t, vals[j]);
                }
            }
            return;
        }
        let mut idx = [0u32; CHUNK];
        self.grid.index_block(vals, &mut idx);
        for (&root, &v) in idx.iter().zip(vals) {
            let root = root as usize;
            if self.live[root / 64] & (1 << (root % 64)) != 0 {
                if let Some(t) = self.lookup(root, v.to_f64()) {
                    f(t, v);
                }
            }
        }
    }

    /// The target holding `v`, if any (the full lookup, no prefilter).
    #[inline]
    pub(crate) fn target_of(&self, v: f64) -> Option<usize> {
        self.lookup(self.grid.index(v), v)
    }

    /// The value ranges holding every target (empty when the router tests
    /// grid indices instead).
    pub(crate) fn value_ranges(&self) -> &[(f64, f64)] {
        &self.spans.f64s
    }

    /// The same ranges rounded outward to f32 (empty likewise).
    pub(crate) fn f32_ranges(&self) -> &[(f32, f32)] {
        &self.spans.f32s
    }

    /// The target holding `v`, whose top-level bucket is `root`.
    #[inline]
    fn lookup(&self, root: usize, v: f64) -> Option<usize> {
        let first = self.first[root];
        if first == NONE {
            return None;
        }
        if first & DIRECT != 0 {
            return Some((first & !DIRECT) as usize);
        }
        let tail = &self.entries[first as usize..];
        // Usually one entry per root; a refined root has several, searched
        // by value (entries are sorted by root, then value).
        let i = match tail.get(1) {
            Some(e) if e.0 == root => tail.partition_point(|e| e.0 == root && e.2 < v),
            _ => 0,
        };
        match tail.get(i) {
            Some(&(r, lo, hi, t)) if r == root && lo <= v && v <= hi => Some(t),
            _ => None,
        }
    }
}

/// Value ranges of the stretches of consecutive targets, rounded outward to
/// f32 and kept in f64. A run's `[lo, hi]` holds every value the lookup can
/// assign to it. Neighbouring stretches are joined, smallest gap first (a
/// gap's cost, the values of the runs it holds, does not change as others
/// are joined): down to `MAX_SPANS` ranges while the values joined in stay
/// within `n / LAST_SHARE` (else empty: the bit-set test), then on down to
/// `FEW_SPANS` while they stay within `n / JOIN_SHARE`. Each range costs two
/// compares per value, a joined-in value one lookup that rejects it.
fn value_spans(layout: &Layout, targets: &[usize]) -> Spans {
    // (first record, last record) of each stretch.
    let mut stretches: Vec<(usize, usize)> = Vec::new();
    for &i in targets {
        match stretches.last_mut() {
            Some(last) if last.1 + 1 == i => last.1 = i,
            _ => stretches.push((i, i)),
        }
    }
    // Gap `k` lies between stretches `k` and `k + 1`; `(cost, k)` ascending.
    let mut gaps: Vec<(usize, usize)> = stretches
        .windows(2)
        .enumerate()
        .map(|(k, w)| {
            let (before, after) = (&layout.recs[w[0].1], &layout.recs[w[1].0]);
            (after.offset - (before.offset + before.count), k)
        })
        .collect();
    gaps.sort_unstable();
    let mut joined = vec![false; gaps.len()];
    let mut ranges = stretches.len();
    let mut spent = 0;
    for &(cost, k) in &gaps {
        let budget = if ranges > MAX_SPANS {
            layout.n / LAST_SHARE
        } else {
            layout.n / JOIN_SHARE
        };
        if ranges <= FEW_SPANS || spent + cost > budget {
            break;
        }
        spent += cost;
        joined[k] = true;
        ranges -= 1;
    }
    if ranges > MAX_SPANS {
        return Spans::default();
    }
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(ranges);
    for (k, &s) in stretches.iter().enumerate() {
        match runs.last_mut() {
            Some(last) if joined[k - 1] => last.1 = s.1,
            _ => runs.push(s),
        }
    }
    let f64s: Vec<(f64, f64)> = runs
        .iter()
        .map(|&(a, b)| (layout.recs[a].lo, layout.recs[b].hi))
        .collect();
    let f32s = f64s
        .iter()
        .map(|&(lo, hi)| (f32_at_most(lo), f32_at_least(hi)))
        .collect();
    Spans { f32s, f64s }
}

/// Largest f32 `<= v` (v not NaN).
pub(crate) fn f32_at_most(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) > v {
        f.next_down()
    } else {
        f
    }
}

/// Smallest f32 `>= v` (v not NaN).
pub(crate) fn f32_at_least(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) < v {
        f.next_up()
    } else {
        f
    }
}

/// Bit `j` set when `vals[j]` lies in one of the ranges: AVX-512 compares
/// where present, else a loop compiled for AVX2 as well.
pub(crate) fn in_spans<V: Value>(spans: &[(V, V)], vals: &[V]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::pack::Kernel::Avx512.is_allowed() {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { V::in_spans_avx512(spans, vals) };
        }
        if crate::pack::Kernel::Avx2.is_allowed() {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { in_spans_avx2(spans, vals) };
        }
    }
    in_spans_any(spans, vals)
}

/// Calls `hit(j)`, `j` ascending, for every position of `vals` whose value
/// lies in one of the ranges: the range tests of a slice first (masks of
/// up to `HIT_SLICE` values, AVX-512 where present), then the hits.
#[inline]
pub(crate) fn for_each_hit(spans: &[(f32, f32)], vals: &[f32], mut hit: impl FnMut(usize)) {
    let mut masks = [0u64; HIT_SLICE / CHUNK];
    for (p, piece) in vals.chunks(HIT_SLICE).enumerate() {
        let masks = &mut masks[..piece.len().div_ceil(CHUNK)];
        span_masks(spans, piece, masks);
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

/// `in_spans` of every `CHUNK` of `vals` into `masks` (one per chunk):
/// under AVX-512, with up to `REG_SPANS` ranges held in registers across
/// the whole slice instead of loaded again for every chunk.
fn span_masks(spans: &[(f32, f32)], vals: &[f32], masks: &mut [u64]) {
    assert_eq!(
        masks.len(),
        vals.len().div_ceil(CHUNK),
        "one mask per chunk"
    );
    #[cfg(target_arch = "x86_64")]
    if spans.len() <= x86_avx512::REG_SPANS && crate::pack::Kernel::Avx512.is_allowed() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { x86_avx512::span_masks_f32(spans, vals, masks) };
    }
    for (m, chunk) in masks.iter_mut().zip(vals.chunks(CHUNK)) {
        *m = in_spans(spans, chunk);
    }
}

#[inline(always)]
fn in_spans_any<V: Value>(spans: &[(V, V)], vals: &[V]) -> u64 {
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn in_spans_avx2<V: Value>(spans: &[(V, V)], vals: &[V]) -> u64 {
    in_spans_any(spans, vals)
}

/// The AVX-512 range tests, a mask register per vector of values (16 f32
/// or 8 f64); a partial vector is loaded under a mask, the missing lanes
/// NaN, which no range holds.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512 {
    use std::arch::x86_64::*;

    use super::CHUNK;

    /// # Safety
    /// The CPU must support AVX-512F; `vals.len() <= CHUNK`.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn in_spans_f32(spans: &[(f32, f32)], vals: &[f32]) -> u64 {
        debug_assert!(vals.len() <= CHUNK);
        let mut mask = 0u64;
        for k in 0..vals.len().div_ceil(16) {
            let left = vals.len() - 16 * k;
            let valid = if left >= 16 { !0 } else { (1u16 << left) - 1 };
            // SAFETY: only the lanes of `valid` are read, all inside `vals`.
            let v = unsafe {
                _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NAN), valid, vals.as_ptr().add(16 * k))
            };
            let mut hit: __mmask16 = 0;
            for &(lo, hi) in spans {
                let ge = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, _mm512_set1_ps(lo));
                hit |= _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(ge, v, _mm512_set1_ps(hi));
            }
            mask |= u64::from(hit) << (16 * k);
        }
        mask
    }

    /// Most ranges `span_masks_f32` holds in registers.
    pub(crate) const REG_SPANS: usize = 4;

    /// As `super::span_masks`, for at most `REG_SPANS` ranges.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `masks.len() == vals.len().div_ceil(CHUNK)`.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn span_masks_f32(spans: &[(f32, f32)], vals: &[f32], masks: &mut [u64]) {
        match spans.len() {
            0 => masks.fill(0),
            1 => masks_n::<1>(spans, vals, masks),
            2 => masks_n::<2>(spans, vals, masks),
            3 => masks_n::<3>(spans, vals, masks),
            4 => masks_n::<4>(spans, vals, masks),
            n => panic!("span_masks_f32: {n} ranges, at most {REG_SPANS}"),
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn masks_n<const N: usize>(spans: &[(f32, f32)], vals: &[f32], masks: &mut [u64]) {
        let lo: [__m512; N] = std::array::from_fn(|k| _mm512_set1_ps(spans[k].0));
        let hi: [__m512; N] = std::array::from_fn(|k| _mm512_set1_ps(spans[k].1));
        for (m, chunk) in masks.iter_mut().zip(vals.chunks(CHUNK)) {
            let mut mask = 0u64;
            for k in 0..chunk.len().div_ceil(16) {
                let left = chunk.len() - 16 * k;
                let valid = if left >= 16 { !0 } else { (1u16 << left) - 1 };
                // SAFETY: only the lanes of `valid` are read, all inside `chunk`.
                let v = unsafe {
                    _mm512_mask_loadu_ps(
                        _mm512_set1_ps(f32::NAN),
                        valid,
                        chunk.as_ptr().add(16 * k),
                    )
                };
                let mut hit: __mmask16 = 0;
                for j in 0..N {
                    let ge = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, lo[j]);
                    hit |= _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(ge, v, hi[j]);
                }
                mask |= u64::from(hit) << (16 * k);
            }
            *m = mask;
        }
    }

    /// # Safety
    /// As `in_spans_f32`.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn in_spans_f64(spans: &[(f64, f64)], vals: &[f64]) -> u64 {
        debug_assert!(vals.len() <= CHUNK);
        let mut mask = 0u64;
        for k in 0..vals.len().div_ceil(8) {
            let left = vals.len() - 8 * k;
            let valid = if left >= 8 { !0 } else { (1u8 << left) - 1 };
            // SAFETY: only the lanes of `valid` are read, all inside `vals`.
            let v = unsafe {
                _mm512_mask_loadu_pd(_mm512_set1_pd(f64::NAN), valid, vals.as_ptr().add(8 * k))
            };
            let mut hit: __mmask8 = 0;
            for &(lo, hi) in spans {
                let ge = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(v, _mm512_set1_pd(lo));
                hit |= _mm512_mask_cmp_pd_mask::<_CMP_LE_OQ>(ge, v, _mm512_set1_pd(hi));
            }
            mask |= u64::from(hit) << (8 * k);
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::super::hist::{build, refine};
    use super::super::source::{Flat, Source};
    use super::*;

    #[test]
    fn routes_exactly_the_values_of_the_targets() {
        let x: Vec<f32> = (0..5000).map(|i| ((i * 37) % 1001) as f32 / 10.0).collect();
        // Runs of targets (span filter) and scattered targets beyond
        // MAX_SPANS ranges (bit-set test).
        let layout = build(&Flat(&x), 0.0, 100.0, 256, Some((0.0, 100.0)));
        let runs: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 20 < 7).collect();
        let scattered: Vec<usize> = (0..layout.recs.len()).step_by(3).collect();
        assert!(!Router::new(&layout, &runs).spans.f64s.is_empty());
        assert!(Router::new(&layout, &scattered).spans.f64s.is_empty());
        // Stretches one small run apart get joined into fewer ranges: the
        // joined-in values reach the lookup, which rejects them.
        let holes: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 30 != 29).collect();
        let stretches = 1 + holes.windows(2).filter(|w| w[1] != w[0] + 1).count();
        let joined = Router::new(&layout, &holes).spans.f64s.len();
        assert!(
            stretches > FEW_SPANS && joined < stretches,
            "{joined} of {stretches}"
        );
        // More than MAX_SPANS stretches, one small run apart: joined down
        // to MAX_SPANS ranges rather than left to the bit-set test.
        let many: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 6 != 5).collect();
        let stretches = 1 + many.windows(2).filter(|w| w[1] != w[0] + 1).count();
        let joined = Router::new(&layout, &many).spans.f64s.len();
        assert!(
            stretches > MAX_SPANS && (1..=MAX_SPANS).contains(&joined),
            "{joined} of {stretches}"
        );
        for targets in [runs, scattered, holes, many] {
            check_routing(&x, &layout, &targets);
        }
        // Refined roots hold several runs: the span filter passes them all,
        // the lookup picks the right one.
        let mut layout = layout;
        let coarse: Vec<usize> = (0..layout.recs.len()).step_by(4).collect();
        refine(&Flat(&x), &mut layout, &coarse);
        let runs: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 40 < 9).collect();
        assert!(!Router::new(&layout, &runs).spans.f64s.is_empty());
        check_routing(&x, &layout, &runs);
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
    fn span_filters_agree_with_the_scalar_test() {
        let (vals, spans) = (filter_values(CHUNK), FILTER_SPANS);
        for n in [0, 1, 3, 4, 6] {
            for len in [CHUNK, 37] {
                let want = vals[..len].iter().enumerate().fold(0u64, |m, (j, &v)| {
                    let hit = spans[..n].iter().any(|&(a, b)| a <= v && v <= b);
                    m | (u64::from(hit) << j)
                });
                let got = [
                    in_spans_any(&spans[..n], &vals[..len]),
                    in_spans(&spans[..n], &vals[..len]),
                ];
                assert_eq!(got, [want; 2]);
                #[cfg(target_arch = "x86_64")]
                {
                    if std::is_x86_feature_detected!("avx512f") {
                        // SAFETY: AVX-512F is available (checked).
                        let got = unsafe { x86_avx512::in_spans_f32(&spans[..n], &vals[..len]) };
                        assert_eq!(got, want);
                        let wide: Vec<(f64, f64)> = spans[..n]
                            .iter()
                            .map(|&(a, b)| (a.into(), b.into()))
                            .collect();
                        let vals64: Vec<f64> = vals[..len].iter().map(|&v| v.into()).collect();
                        // SAFETY: as above.
                        let got = unsafe { x86_avx512::in_spans_f64(&wide, &vals64) };
                        assert_eq!(got, want);
                    }
                    if std::is_x86_feature_detected!("avx2") {
                        // SAFETY: AVX2 is available (checked).
                        assert_eq!(unsafe { in_spans_avx2(&spans[..n], &vals[..len]) }, want);
                    }
                }
            }
        }
    }

    /// The slice-wide filter lists exactly the values in the ranges, in
    /// order, for any number of ranges (registers up to `REG_SPANS`, the
    /// chunk test beyond) and slices that end inside a chunk and span
    /// several `HIT_SLICE`s; its AVX-512 masks are the portable ones.
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
                #[cfg(target_arch = "x86_64")]
                if n <= x86_avx512::REG_SPANS && std::is_x86_feature_detected!("avx512f") {
                    let chunks = len.div_ceil(CHUNK);
                    let portable: Vec<u64> =
                        xs.chunks(CHUNK).map(|c| in_spans_any(ranges, c)).collect();
                    let mut masks = vec![u64::MAX; chunks];
                    // SAFETY: AVX-512F is available (checked); one mask per chunk.
                    unsafe { x86_avx512::span_masks_f32(ranges, xs, &mut masks) };
                    assert_eq!(masks, portable, "{n} ranges, {len} values");
                }
            }
        }
    }

    #[test]
    fn f32_bounds_round_outward() {
        for v in [
            0.1f64,
            -0.1,
            1.0,
            1e-40,
            -3.3e38,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let (lo, hi) = (f32_at_most(v), f32_at_least(v));
            assert!(f64::from(lo) <= v && v <= f64::from(hi), "{v}");
            // Tight: the two bounds are equal or adjacent f32 values.
            assert!(lo == hi || lo.next_up() == hi, "{v}: {lo} {hi}");
        }
    }

    fn check_routing(x: &[f32], layout: &super::super::hist::Layout, targets: &[usize]) {
        let router = Router::new(layout, targets);
        let mut routed = vec![0usize; targets.len()];
        for block in x.chunks(CHUNK) {
            router.route_block(block, |t, v| {
                let r = &layout.recs[targets[t]];
                assert!(r.lo <= f64::from(v) && f64::from(v) <= r.hi);
                routed[t] += 1;
            });
        }
        for (&n, &i) in routed.iter().zip(targets) {
            assert_eq!(n, layout.recs[i].count);
        }
        // The branch-free slot: the target, or the number of targets.
        for &v in x {
            let v = f64::from(v);
            let want = router.target_of(v).unwrap_or(targets.len());
            assert_eq!(router.slot_of(v), want, "{v}");
        }
        // Flat routing by slots passes every target's values with it.
        let mut slotted = vec![0usize; targets.len() + 1];
        Flat(x).route_slots(0..x.len(), &router, |t, _| slotted[t] += 1);
        assert_eq!(slotted[..targets.len()], routed);
    }
}
