//! Phase-split decode for the small-`m` driver (widths 1..=4 on x86).
//!
//! A vector of packed bits holds `LANES` *units* of `P` consecutive codes each
//! (a 32-bit word for 1/2/4 bits, 24 bits for 3 bits). Shifting the whole
//! vector right by `B` bits walks every lane to its next code, so "phase" `p`
//! (the `p`-th code of every unit) costs one immediate shift, one in-register
//! table lookup and one FMA, with no masking: the lookup tables repeat the
//! codebook so that the bits above a code never change the entry read.
//!
//! Phase `p` of a chunk of `LANES * P` codes therefore meets the activations
//! `x[c0 + l * P + p]` for `l < LANES`: `x` is permuted once per call so that
//! those sit contiguously ([`permute_x`]).

use super::scalar::code_at;
use crate::weights::PackedWeights;

/// Codes per unit for width `bits`: 8 for 3 bits (24-bit units), else `32 / bits`.
pub(crate) const fn per_unit(bits: u32) -> usize {
    if bits == 3 {
        8
    } else {
        32 / bits as usize
    }
}

/// Shape of the phase-split layout for one kernel and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Units per vector.
    pub lanes: usize,
    /// Codes per unit (= phases).
    pub per_unit: usize,
}

impl Layout {
    /// Codes per vector of packed bits.
    pub fn chunk(self) -> usize {
        self.lanes * self.per_unit
    }

    /// Layout for `lanes`-wide vectors if `bits` has a phase-split kernel and
    /// every scale segment of a `cols`-wide row starts on a chunk boundary.
    pub fn new(lanes: usize, bits: u32, cols: usize, group: Option<usize>) -> Option<Self> {
        if !(1..=4).contains(&bits) {
            return None;
        }
        let layout = Layout {
            lanes,
            per_unit: per_unit(bits),
        };
        let c = layout.chunk();
        let aligned = group.is_none_or(|g| g.is_multiple_of(c));
        (aligned && cols >= c).then_some(layout)
    }

    /// Copies the `[m, k]` activations `x` into phase order: within every whole
    /// chunk, `out[c0 + p * lanes + l] = x[c0 + l * per_unit + p]`; the tail
    /// past the last whole chunk is copied unchanged.
    pub fn permute_x(self, x: &[f32], k: usize) -> Aligned {
        let mut out = Aligned::zeroed(x.len());
        let c = self.chunk();
        let dst_all = out.as_mut_slice();
        dst_all.copy_from_slice(x);
        for (src, dst) in x.chunks_exact(k).zip(dst_all.chunks_exact_mut(k)) {
            for (s, d) in src.chunks_exact(c).zip(dst.chunks_exact_mut(c)) {
                for (p, dp) in d.chunks_exact_mut(self.lanes).enumerate() {
                    for (l, v) in dp.iter_mut().enumerate() {
                        *v = s[l * self.per_unit + p];
                    }
                }
            }
        }
        out
    }
}

/// Floats starting on a 64-byte boundary, so that whole-register loads of a
/// row whose width is a multiple of 16 never straddle two cache lines (a
/// split load costs two L1 accesses, and the decode loop is load-heavy).
pub(crate) struct Aligned {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl Aligned {
    /// Alignment in floats.
    const FLOATS: usize = 16;

    fn zeroed(len: usize) -> Self {
        let buf = vec![0.0f32; len + Self::FLOATS];
        let off = buf
            .as_ptr()
            .align_offset(4 * Self::FLOATS)
            .min(Self::FLOATS);
        Aligned { buf, off, len }
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// The whole `chunk`-code chunks of row `r` in order, as `(c0, scale)` where
/// `scale` is `Some` when the chunk starts a new scale segment (always for the
/// first). Segments start on chunk boundaries (`Layout::new`), so a chunk
/// never straddles two; the changes are counted down, not divided.
pub(crate) fn chunks<'a>(
    w: &PackedWeights<'a>,
    r: usize,
    chunk: usize,
) -> impl Iterator<Item = (usize, Option<f32>)> + 'a {
    let scales = w.scales_of(r);
    let per_group = w.scale_span().div_ceil(chunk);
    let vend = w.cols / chunk * chunk;
    let (mut c0, mut g, mut left) = (0, 0, 0);
    std::iter::from_fn(move || {
        if c0 >= vend {
            return None;
        }
        let scale = (left == 0).then(|| {
            left = per_group;
            g += 1;
            scales[g - 1]
        });
        left -= 1;
        c0 += chunk;
        Some((c0 - chunk, scale))
    })
}

/// Adds to `rest` the products of the codes of row `r` past its last whole
/// `chunk` (scalar: fewer than one chunk) with the rows `xs`.
pub(crate) fn tail<const R: usize>(
    w: &PackedWeights,
    r: usize,
    chunk: usize,
    xs: [&[f32]; R],
    rest: &mut [f32; R],
) {
    let (row, span, scales) = (w.row(r), w.scale_span(), w.scales_of(r));
    for j in w.cols / chunk * chunk..w.cols {
        let wj = scales[j / span] * w.levels[code_at(row, j, w.bits)];
        for (s, xr) in rest.iter_mut().zip(xs) {
            *s += wj * xr[j];
        }
    }
}

/// `table[t] = levels[t % levels.len()]` for `N` entries: a lookup that reads
/// `N`-entry indices sees every code's level whatever the bits above the code.
pub(crate) fn repeat_levels<const N: usize>(levels: &[f32]) -> [f32; N] {
    core::array::from_fn(|t| levels[t % levels.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_announce_each_new_scale_once() {
        const SCALE: [f32; 4] = [1.0, 2.0, 3.0, 4.0];
        let (packed, levels) = ([0u8; 64], [0.0f32; 2]);
        let view = |group_size, scale: &'static [f32]| PackedWeights {
            rows: 2,
            cols: 256,
            bits: 1,
            packed: &packed,
            levels: &levels,
            loc: &[0.0],
            scale,
            group_size,
        };
        let grouped: Vec<_> = chunks(&view(Some(128), &SCALE), 1, 64).collect();
        let want = [(0, Some(3.0)), (64, None), (128, Some(4.0)), (192, None)];
        assert_eq!(grouped, want);
        let whole: Vec<_> = chunks(&view(None, &SCALE[..2]), 1, 96).collect();
        assert_eq!(whole, [(0, Some(2.0)), (96, None)]);
    }

    #[test]
    fn layout_needs_chunk_aligned_segments() {
        assert_eq!(
            Layout::new(16, 4, 4096, Some(128)).map(Layout::chunk),
            Some(128)
        );
        assert_eq!(Layout::new(16, 3, 4096, None).map(Layout::chunk), Some(128));
        assert_eq!(Layout::new(8, 2, 4096, None).map(Layout::chunk), Some(128));
        assert_eq!(Layout::new(16, 4, 4096, Some(64)), None);
        assert_eq!(Layout::new(16, 5, 4096, None), None);
        assert_eq!(Layout::new(16, 4, 100, None), None);
    }

    #[test]
    fn permute_x_puts_each_phase_in_a_contiguous_run() {
        let layout = Layout {
            lanes: 2,
            per_unit: 3,
        };
        let x: Vec<f32> = (0..14).map(|v| v as f32).collect();
        // Two rows of k = 7: one chunk of 6 codes plus a tail of 1.
        let out = layout.permute_x(&x, 7);
        let want = [0., 3., 1., 4., 2., 5., 6., 7., 10., 8., 11., 9., 12., 13.];
        assert_eq!(out.as_slice(), want);
        assert_eq!(out.as_slice().as_ptr() as usize % 64, 0);
    }

    #[test]
    fn repeated_levels_wrap_around() {
        assert_eq!(
            repeat_levels::<8>(&[1.0, 2.0, 3.0, 4.0]),
            [1., 2., 3., 4., 1., 2., 3., 4.]
        );
    }
}
