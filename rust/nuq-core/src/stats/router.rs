//! Routing of values to the records a pass targets: which of a few runs of
//! the layout (if any) holds a value, decided for a block of values at a time
//! with a bit-set test that rejects most of them before any table lookup.

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
    /// Per top-level bucket: first entry of that bucket, or `NONE`.
    first: Vec<u32>,
    /// (root, lo, hi, target), sorted by value; an inexact run is the only
    /// entry of its root (its bounds overlap the neighbours' by the guard).
    entries: Vec<(usize, f64, f64, usize)>,
    /// The live roots as a few ranges `(first root, last - first)`, when
    /// there are at most `MAX_SPANS` of them: targets are usually a handful
    /// of stretches of consecutive runs, and testing a block of indices
    /// against a few ranges vectorizes, unlike the bit-set test.
    spans: Vec<(u32, u32)>,
}

/// Most root ranges tested per value; more fall back to the bit set.
const MAX_SPANS: usize = 32;

const NONE: u32 = u32::MAX;

impl Router {
    /// `targets` are record indices, ascending.
    pub(crate) fn new(layout: &Layout, targets: &[usize]) -> Self {
        let mut first = vec![NONE; layout.grid.nb];
        let mut live = vec![0u64; layout.grid.nb.div_ceil(64)];
        let mut entries = Vec::with_capacity(targets.len());
        for (t, &i) in targets.iter().enumerate() {
            let r = &layout.recs[i];
            live[r.root / 64] |= 1 << (r.root % 64);
            if first[r.root] == NONE {
                first[r.root] = entries.len() as u32;
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
            spans: root_spans(layout, targets),
            entries,
        }
    }

    /// Calls `f(target, value)` for every value of `vals` that belongs to a
    /// target: grid indices for the whole block first, then the bit-set
    /// test, and the full lookup only for the few values that pass it.
    #[inline]
    pub(crate) fn route_block<V: Value>(&self, vals: &[V], mut f: impl FnMut(usize, V)) {
        let mut idx = [0u32; CHUNK];
        self.grid.index_block(vals, &mut idx);
        if !self.spans.is_empty() {
            let mut hits = in_spans(&self.spans, &idx);
            if vals.len() < CHUNK {
                hits &= (1u64 << vals.len()) - 1;
            }
            while hits != 0 {
                let j = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                if let Some(t) = self.lookup(idx[j] as usize, vals[j].to_f64()) {
                    f(t, vals[j]);
                }
            }
            return;
        }
        for (&root, &v) in idx.iter().zip(vals) {
            let root = root as usize;
            if self.live[root / 64] & (1 << (root % 64)) != 0 {
                if let Some(t) = self.lookup(root, v.to_f64()) {
                    f(t, v);
                }
            }
        }
    }

    /// The target holding `v`, whose top-level bucket is `root`.
    #[inline]
    fn lookup(&self, root: usize, v: f64) -> Option<usize> {
        let first = self.first[root];
        if first == NONE {
            return None;
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

/// Ranges of consecutive target runs, as root ranges: two targets adjacent
/// in the layout have no non-empty bucket between their roots. `None`
/// (empty) beyond `MAX_SPANS` ranges.
fn root_spans(layout: &Layout, targets: &[usize]) -> Vec<(u32, u32)> {
    let mut spans: Vec<(u32, u32)> = Vec::new();
    let mut prev: Option<usize> = None;
    for &i in targets {
        let root = layout.recs[i].root as u32;
        match (prev, spans.last_mut()) {
            (Some(p), Some(last)) if p + 1 == i => last.1 = root - last.0,
            _ => {
                if spans.len() == MAX_SPANS {
                    return Vec::new();
                }
                spans.push((root, 0));
            }
        }
        prev = Some(i);
    }
    spans
}

/// Bit `j` set when `idx[j]` lies in one of the root ranges. Compiled for
/// AVX-512 and AVX2 as well (a compare per range and 16 or 8 indices).
fn in_spans(spans: &[(u32, u32)], idx: &[u32; CHUNK]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { in_spans_avx512(spans, idx) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { in_spans_avx2(spans, idx) };
        }
    }
    in_spans_any(spans, idx)
}

#[inline(always)]
fn in_spans_any(spans: &[(u32, u32)], idx: &[u32; CHUNK]) -> u64 {
    let mut hit = [0u8; CHUNK];
    for &(first, width) in spans {
        for (h, &i) in hit.iter_mut().zip(idx) {
            *h |= u8::from(i.wrapping_sub(first) <= width);
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
#[target_feature(enable = "avx512f")]
fn in_spans_avx512(spans: &[(u32, u32)], idx: &[u32; CHUNK]) -> u64 {
    use std::arch::x86_64::*;
    const LANES: usize = 16;
    let mut mask = 0u64;
    for (k, lane) in idx.chunks_exact(LANES).enumerate() {
        // SAFETY: `lane` holds 16 u32 (an unaligned 64-byte load).
        let v = unsafe { _mm512_loadu_si512(lane.as_ptr().cast()) };
        let mut hit: __mmask16 = 0;
        for &(first, width) in spans {
            let d = _mm512_sub_epi32(v, _mm512_set1_epi32(first as i32));
            hit |= _mm512_cmple_epu32_mask(d, _mm512_set1_epi32(width as i32));
        }
        mask |= u64::from(hit) << (LANES * k);
    }
    mask
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn in_spans_avx2(spans: &[(u32, u32)], idx: &[u32; CHUNK]) -> u64 {
    in_spans_any(spans, idx)
}

#[cfg(test)]
mod tests {
    use super::super::hist::{build, refine};
    use super::super::source::Flat;
    use super::*;

    #[test]
    fn routes_exactly_the_values_of_the_targets() {
        let x: Vec<f32> = (0..5000).map(|i| ((i * 37) % 1001) as f32 / 10.0).collect();
        // Runs of targets (span filter) and scattered targets beyond
        // MAX_SPANS ranges (bit-set test).
        let layout = build(&Flat(&x), 0.0, 100.0, 256, true);
        let runs: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 20 < 7).collect();
        let scattered: Vec<usize> = (0..layout.recs.len()).step_by(3).collect();
        assert!(!Router::new(&layout, &runs).spans.is_empty());
        assert!(Router::new(&layout, &scattered).spans.is_empty());
        for targets in [runs, scattered] {
            check_routing(&x, &layout, &targets);
        }
        // Refined roots hold several runs: the span filter passes them all,
        // the lookup picks the right one.
        let mut layout = layout;
        let coarse: Vec<usize> = (0..layout.recs.len()).step_by(4).collect();
        refine(&Flat(&x), &mut layout, &coarse);
        let runs: Vec<usize> = (0..layout.recs.len()).filter(|i| i % 40 < 9).collect();
        assert!(!Router::new(&layout, &runs).spans.is_empty());
        check_routing(&x, &layout, &runs);
    }

    #[test]
    fn span_filters_agree_with_the_scalar_test() {
        let idx: [u32; CHUNK] = std::array::from_fn(|j| (j as u32 * 2_654_435_761) >> 22);
        let spans = [(5u32, 0u32), (100, 37), (900, 200), (1023, 0), (0, 2)];
        for n in [0, 1, 3, 5] {
            let want = idx.iter().enumerate().fold(0u64, |m, (j, &i)| {
                let hit = spans[..n].iter().any(|&(a, w)| a <= i && i - a <= w);
                m | (u64::from(hit) << j)
            });
            assert_eq!(in_spans_any(&spans[..n], &idx), want);
            assert_eq!(in_spans(&spans[..n], &idx), want);
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: AVX-512F is available (checked).
                    assert_eq!(unsafe { in_spans_avx512(&spans[..n], &idx) }, want);
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is available (checked).
                    assert_eq!(unsafe { in_spans_avx2(&spans[..n], &idx) }, want);
                }
            }
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
    }
}
