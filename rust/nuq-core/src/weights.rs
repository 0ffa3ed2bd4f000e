//! A borrowed view of a packed weight matrix: what decoding and the LUT matmul
//! read. `Quantized::view()` makes one; so can a binding from loaded buffers.

use crate::error::{NuqError, Result};
use crate::pack::packed_len;

/// Packed codes plus codebook, locations and scales of a `rows x cols` matrix.
/// Weight `(r, j)` decodes to `loc_r + scale_s * levels[code]` (f32 multiply,
/// then add), `loc_r` being 0 when `loc` is empty.
#[derive(Debug, Clone, Copy)]
pub struct PackedWeights<'a> {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    /// `rows * packed_len(cols, bits)` bytes, row `r` at `r * packed_len(cols, bits)`.
    pub packed: &'a [u8],
    /// `2^bits` codebook entries shared by the whole matrix.
    pub levels: &'a [f32],
    /// Length 1 (per tensor), `rows` (per channel) or 0 (no offset).
    pub loc: &'a [f32],
    /// Length 1 (per tensor), `rows` (per channel) or `rows * cols / g` (groups).
    pub scale: &'a [f32],
    /// `Some(g)` when `scale` holds one entry per group of `g` columns.
    pub group_size: Option<usize>,
}

impl PackedWeights<'_> {
    /// Bytes of one packed row.
    pub fn row_bytes(&self) -> usize {
        packed_len(self.cols, self.bits)
    }

    /// Location of row `r`.
    #[inline]
    pub fn loc_of(&self, r: usize) -> f32 {
        match self.loc.len() {
            0 => 0.0,
            1 => self.loc[0],
            _ => self.loc[r],
        }
    }

    /// Scales that apply to row `r`: one per group, or a single one.
    #[inline]
    pub fn scales_of(&self, r: usize) -> &[f32] {
        match self.group_size {
            Some(g) => {
                let per_row = self.cols / g;
                &self.scale[r * per_row..(r + 1) * per_row]
            }
            None if self.scale.len() == 1 => &self.scale[..1],
            None => &self.scale[r..r + 1],
        }
    }

    /// Columns covered by one entry of `scales_of(r)`.
    #[inline]
    pub fn scale_span(&self) -> usize {
        self.group_size.unwrap_or(self.cols).max(1)
    }

    /// Checks every length against the shape, so kernels may index freely.
    pub fn validate(&self) -> Result<()> {
        if !(1..=8).contains(&self.bits) {
            return Err(NuqError::InvalidBits(self.bits));
        }
        expect_len(
            "packed codes",
            self.rows * self.row_bytes(),
            self.packed.len(),
        )?;
        expect_len("codebook levels", 1 << self.bits, self.levels.len())?;
        if !matches!(self.loc.len(), 0 | 1) {
            expect_len("locations", self.rows, self.loc.len())?;
        }
        let scales = match self.group_size {
            Some(g) if g == 0 || self.cols % g != 0 => {
                return Err(NuqError::InvalidGroupSize {
                    group_size: g,
                    row_len: self.cols,
                })
            }
            Some(g) => self.rows * (self.cols / g),
            None if self.scale.len() == 1 => 1,
            None => self.rows,
        };
        expect_len("scales", scales, self.scale.len())
    }
}

fn expect_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(NuqError::LengthMismatch {
            what,
            expected,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(packed: &'a [u8], levels: &'a [f32], scale: &'a [f32]) -> PackedWeights<'a> {
        PackedWeights {
            rows: 2,
            cols: 8,
            bits: 2,
            packed,
            levels,
            loc: &[],
            scale,
            group_size: Some(4),
        }
    }

    #[test]
    fn accepts_consistent_lengths() {
        let v = view(&[0; 4], &[0.0; 4], &[1.0; 4]);
        assert_eq!(v.validate(), Ok(()));
        assert_eq!(v.scales_of(1), &[1.0, 1.0]);
        assert_eq!(v.scale_span(), 4);
    }

    #[test]
    fn names_the_wrong_buffer() {
        let err = view(&[0; 3], &[0.0; 4], &[1.0; 4]).validate().unwrap_err();
        assert!(err.to_string().contains("packed codes"), "{err}");
        let err = view(&[0; 4], &[0.0; 4], &[1.0; 3]).validate().unwrap_err();
        assert!(err.to_string().contains("scales"), "{err}");
    }
}
