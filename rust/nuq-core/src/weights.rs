//! A borrowed view of a packed weight matrix: what decoding and the LUT matmul
//! read. `Quantized::view()` makes one; so can a binding from loaded buffers.

use crate::error::{NuqError, Result};
use crate::pack::packed_len;

/// A quantized `[rows, cols]` weight matrix as the quantizer stores it:
/// `W[r, j] = loc_r + scale_{r or group} · levels[code(r, j)]`.
///
/// Construct it freely; [`PackedWeights::validate`] (called by every
/// `lut` entry point) checks that all lengths agree.
#[derive(Clone, Copy, Debug)]
pub struct PackedWeights<'a> {
    /// N = out_features.
    pub rows: usize,
    /// K = in_features.
    pub cols: usize,
    /// Code width, 1..=8.
    pub bits: u32,
    /// `rows * packed_len(cols, bits)` bytes; row `r` starts at
    /// `r * packed_len(cols, bits)` (layout: [`crate::pack`]).
    pub packed: &'a [u8],
    /// `2^bits` standardized codebook entries shared by the whole tensor.
    pub levels: &'a [f32],
    /// Offsets: 1 (per tensor), `rows` (per channel) or 0 (none, e.g. groups).
    pub loc: &'a [f32],
    /// Scales: 1 (tensor) or `rows` (channel) without groups;
    /// `rows * ceil(cols / g)` with `group_size = Some(g)`.
    pub scale: &'a [f32],
    /// `Some(g)`: scale index of `(r, j)` is `r * ceil(cols / g) + j / g`
    /// (the last group of a row is short when `g` does not divide `cols`).
    pub group_size: Option<usize>,
}

/// A run of codes `start..end` of one row that shares one scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Segment {
    pub start: usize,
    pub end: usize,
    pub scale: f32,
}

impl<'a> PackedWeights<'a> {
    /// Checks bit width, group size and every slice length.
    pub fn validate(&self) -> Result<()> {
        if !(1..=8).contains(&self.bits) {
            return Err(NuqError::InvalidBits(self.bits));
        }
        check_len("levels", Some(1usize << self.bits), self.levels.len())?;
        // Checked: absurd `rows`/`cols` from a caller must not wrap around to
        // a length that a short buffer matches. (`rows * cols` cannot overflow
        // then: it is at most 8 bytes per packed byte, or 0.)
        let row_bytes = self
            .cols
            .checked_mul(self.bits as usize)
            .map(|b| b.div_ceil(8));
        check_len(
            "packed",
            row_bytes.and_then(|b| self.rows.checked_mul(b)),
            self.packed.len(),
        )?;
        if ![0, 1, self.rows].contains(&self.loc.len()) {
            check_len("loc", Some(self.rows), self.loc.len())?;
        }
        match self.group_size {
            Some(g) => {
                if g == 0 {
                    return Err(NuqError::InvalidGroupSize {
                        group_size: g,
                        row_len: self.cols,
                    });
                }
                let expected = self.rows.checked_mul(self.cols.div_ceil(g));
                check_len("scale", expected, self.scale.len())?;
            }
            None if [1, self.rows].contains(&self.scale.len()) => {}
            None => check_len("scale", Some(self.rows), self.scale.len())?,
        }
        Ok(())
    }

    /// Bytes of one packed row.
    pub fn row_bytes(&self) -> usize {
        packed_len(self.cols, self.bits)
    }

    /// Scales that apply to row `r`: one per group, or a single one.
    pub fn scales_of(&self, r: usize) -> &'a [f32] {
        match self.group_size {
            Some(g) => {
                let per_row = self.cols.div_ceil(g);
                &self.scale[r * per_row..(r + 1) * per_row]
            }
            None if self.scale.len() == 1 => &self.scale[..1],
            None => &self.scale[r..r + 1],
        }
    }

    /// Columns covered by one entry of `scales_of(r)`.
    pub fn scale_span(&self) -> usize {
        self.group_size.unwrap_or(self.cols).max(1)
    }

    /// Rows `r0..r1` as weights of their own (one group of a grouped
    /// convolution); `self` must be valid and `r0 <= r1 <= rows`.
    pub(crate) fn row_range(&self, r0: usize, r1: usize) -> PackedWeights<'a> {
        let per_row = |len: usize| self.rows > 1 && len == self.rows;
        let scale = match self.group_size {
            Some(g) => {
                let per = self.cols.div_ceil(g);
                &self.scale[r0 * per..r1 * per]
            }
            None if per_row(self.scale.len()) => &self.scale[r0..r1],
            None => self.scale,
        };
        let loc = if per_row(self.loc.len()) {
            &self.loc[r0..r1]
        } else {
            self.loc
        };
        let row_bytes = self.row_bytes();
        PackedWeights {
            rows: r1 - r0,
            packed: &self.packed[r0 * row_bytes..r1 * row_bytes],
            loc,
            scale,
            ..*self
        }
    }

    /// Packed bytes of row `r`.
    pub(crate) fn row(&self, r: usize) -> &'a [u8] {
        let len = packed_len(self.cols, self.bits);
        &self.packed[r * len..(r + 1) * len]
    }

    /// Offset of row `r` (0 when there is none).
    pub fn loc_of(&self, r: usize) -> f32 {
        match self.loc.len() {
            0 => 0.0,
            1 => self.loc[0],
            _ => self.loc[r],
        }
    }

    /// Scale of weight `(r, j)`.
    pub(crate) fn scale_of(&self, r: usize, j: usize) -> f32 {
        match self.group_size {
            Some(g) => self.scale[r * self.cols.div_ceil(g) + j / g],
            None if self.scale.len() == 1 => self.scale[0],
            None => self.scale[r],
        }
    }

    /// The equal-scale runs of row `r` that cover `k0..k1`, in order.
    pub(crate) fn segments(
        &self,
        r: usize,
        k0: usize,
        k1: usize,
    ) -> impl Iterator<Item = Segment> + '_ {
        let step = self.group_size.unwrap_or(usize::MAX);
        let mut start = k0;
        std::iter::from_fn(move || {
            if start >= k1 {
                return None;
            }
            let end = (start / step)
                .saturating_add(1)
                .saturating_mul(step)
                .min(k1);
            let seg = Segment {
                start,
                end,
                scale: self.scale_of(r, start),
            };
            start = end;
            Some(seg)
        })
    }
}

/// `expected == None` means the product overflowed: no slice can match it.
pub(crate) fn check_len(what: &'static str, expected: Option<usize>, actual: usize) -> Result<()> {
    match expected {
        Some(e) if e == actual => Ok(()),
        e => Err(NuqError::LengthMismatch {
            what,
            expected: e.unwrap_or(usize::MAX),
            actual,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(packed: &'a [u8], levels: &'a [f32], scale: &'a [f32]) -> PackedWeights<'a> {
        PackedWeights {
            rows: 2,
            cols: 6,
            bits: 2,
            packed,
            levels,
            loc: &[],
            scale,
            group_size: Some(3),
        }
    }

    #[test]
    fn validate_accepts_consistent_group_view() {
        let (p, l, s) = ([0u8; 4], [0.0f32; 4], [1.0f32; 4]);
        assert_eq!(view(&p, &l, &s).validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_each_bad_field() {
        let (p, l, s) = ([0u8; 4], [0.0f32; 4], [1.0f32; 4]);
        let w = view(&p, &l, &s);
        let bad_bits = PackedWeights { bits: 9, ..w };
        assert_eq!(bad_bits.validate(), Err(NuqError::InvalidBits(9)));
        // Groups of 4 in rows of 6: a short last group, 2 scales a row.
        let short_group = PackedWeights {
            group_size: Some(4),
            ..w
        };
        assert_eq!(short_group.validate(), Ok(()));
        let bad_group = PackedWeights {
            group_size: Some(2),
            ..w
        };
        assert!(matches!(
            bad_group.validate(),
            Err(NuqError::LengthMismatch { what: "scale", .. })
        ));
        let zero_group = PackedWeights {
            group_size: Some(0),
            ..w
        };
        assert!(matches!(
            zero_group.validate(),
            Err(NuqError::InvalidGroupSize { .. })
        ));
        let short_packed = PackedWeights {
            packed: &p[..3],
            ..w
        };
        assert!(matches!(
            short_packed.validate(),
            Err(NuqError::LengthMismatch { what: "packed", .. })
        ));
        // Found by fuzz/fuzz_decode.py: `cols * bits` wrapped around to a
        // packed length of 0, so an empty buffer passed for 2^62 columns.
        let wrapping = PackedWeights {
            rows: 1,
            cols: 1 << 62,
            packed: &[],
            scale: &s[..1],
            ..w
        };
        assert!(matches!(
            wrapping.validate(),
            Err(NuqError::LengthMismatch { what: "packed", .. })
        ));
        let short_levels = PackedWeights {
            levels: &l[..3],
            ..w
        };
        assert!(matches!(
            short_levels.validate(),
            Err(NuqError::LengthMismatch { what: "levels", .. })
        ));
        let bad_loc = PackedWeights { loc: &l[..3], ..w };
        assert!(matches!(
            bad_loc.validate(),
            Err(NuqError::LengthMismatch { what: "loc", .. })
        ));
        let bad_scale = PackedWeights {
            scale: &s[..3],
            ..w
        };
        assert!(matches!(
            bad_scale.validate(),
            Err(NuqError::LengthMismatch { what: "scale", .. })
        ));
        let channel_bad = PackedWeights {
            group_size: None,
            ..w
        };
        assert!(matches!(
            channel_bad.validate(),
            Err(NuqError::LengthMismatch { what: "scale", .. })
        ));
    }

    #[test]
    fn segments_split_at_group_boundaries() {
        let scale = [1.0, 2.0, 3.0, 4.0];
        let (p, l) = ([0u8; 4], [0.0f32; 4]);
        let w = view(&p, &l, &scale);
        let segs: Vec<_> = w.segments(1, 1, 5).collect();
        let expect = [
            Segment {
                start: 1,
                end: 3,
                scale: 3.0,
            },
            Segment {
                start: 3,
                end: 5,
                scale: 4.0,
            },
        ];
        assert_eq!(segs, expect);
        let whole = PackedWeights {
            group_size: None,
            scale: &scale[..1],
            ..w
        };
        let segs: Vec<_> = whole.segments(1, 0, 6).collect();
        assert_eq!(
            segs,
            [Segment {
                start: 0,
                end: 6,
                scale: 1.0
            }]
        );
    }
}
