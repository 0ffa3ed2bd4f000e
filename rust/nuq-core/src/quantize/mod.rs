//! The tensor pipeline: fit, choose, solve, encode and pack one weight matrix.
//!
//! A tensor is viewed as `rows x cols` (rows = output channels, cols = the
//! product of the remaining dimensions). Every decoded weight is
//! `loc[r] + scale[s] * levels[code]` in f32 (multiply, then add), where the
//! codebook `levels` is shared by the whole tensor and `loc`/`scale` depend on
//! the granularity:
//!
//! | granularity | `loc`        | `scale`                  | `levels`                              |
//! |-------------|--------------|--------------------------|---------------------------------------|
//! | tensor      | 1 value      | 1 value                  | Lloyd–Max of the chosen family        |
//! | channel     | 1 per row    | 1 per row                | Lloyd–Max of the chosen family        |
//! | group `g`   | none (0)     | 1 per group (fp16 absmax)| implied by (family, bits, `g`), not stored |

mod affine;
mod decode;
mod fitted;
mod group;
mod rows;
mod simd;

pub use decode::dequantize;

use crate::error::{NuqError, Result};
use crate::family::Family;
use crate::pack::packed_len;
use crate::weights::PackedWeights;

/// How finely location and scale are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One fit for the whole tensor (the paper's method).
    Tensor,
    /// One location and scale per row (output channel); family chosen per tensor.
    Channel,
    /// Groups of this many consecutive weights of a row, each scaled by its absmax.
    Group(usize),
}

/// Which density the quantizer is solved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyChoice {
    /// The family with the smaller Kolmogorov–Smirnov statistic (ties: Gaussian).
    Auto,
    /// Always this family (both statistics are still reported).
    Fixed(Family),
}

/// Where the codebook comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodebookChoice {
    /// Fitted to the tensor's own weights, extremes kept exact (`fitted.rs`).
    #[default]
    Fitted,
    /// The Lloyd–Max quantizer of the fitted density (the paper's method;
    /// for groups, the family's implied codebook).
    LloydMax,
}

/// Everything that selects a quantizer for one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub bits: u32,
    pub granularity: Granularity,
    pub family: FamilyChoice,
    pub codebook: CodebookChoice,
}

impl Config {
    /// Checks the options (a group size may leave a short last group per row).
    pub fn validate(&self, cols: usize) -> Result<()> {
        if !(1..=8).contains(&self.bits) {
            return Err(NuqError::InvalidBits(self.bits));
        }
        if self.granularity == Granularity::Group(0) {
            return Err(NuqError::InvalidGroupSize {
                group_size: 0,
                row_len: cols,
            });
        }
        Ok(())
    }
}

/// A quantized tensor: packed codes plus everything needed to decode them.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    pub granularity: Granularity,
    /// The family the codebook was solved for (for groups: the family whose
    /// implied codebook fits the normalised values best, see `group.rs`).
    pub family: Family,
    /// KS statistic of the data against the fitted Gaussian / Laplace.
    pub d_gaussian: f64,
    pub d_laplace: f64,
    /// Tensor-wide location and scale of the chosen family's fit (for reports).
    pub fit_loc: f64,
    pub fit_scale: f64,
    /// The codebook, `2^bits` ascending entries.
    pub levels: Vec<f32>,
    pub loc: Vec<f32>,
    pub scale: Vec<f32>,
    /// `rows * packed_len(cols, bits)` bytes, one byte-aligned row after another.
    pub packed: Vec<u8>,
    /// Sum of squared errors and of squared weights, over all elements.
    pub sse: f64,
    pub energy: f64,
    /// The codebook is implied by (family, bits, group size) and not stored.
    pub implied_codebook: bool,
    /// The scales are f16 values (stored as f16).
    pub f16_scales: bool,
}

impl Quantized {
    /// Number of weights.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True for a tensor without elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packed matrix as decoding and the LUT matmul read it.
    pub fn view(&self) -> PackedWeights<'_> {
        PackedWeights {
            rows: self.rows,
            cols: self.cols,
            bits: self.bits,
            packed: &self.packed,
            levels: &self.levels,
            loc: &self.loc,
            scale: &self.scale,
            group_size: match self.granularity {
                Granularity::Group(g) => Some(g),
                _ => None,
            },
        }
    }

    /// Bytes of one packed row.
    pub fn row_bytes(&self) -> usize {
        packed_len(self.cols, self.bits)
    }

    /// Mean squared error of the decoded weights.
    pub fn mse(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.sse / self.len() as f64
        }
    }

    /// Signal-to-quantization-noise ratio in dB (`inf` for an exact result).
    pub fn sqnr_db(&self) -> f64 {
        if self.sse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.energy / self.sse).log10()
        }
    }

    /// Largest distance from the location that a decoded weight can have:
    /// weights beyond it were clipped.
    pub fn clip(&self) -> f64 {
        let reach = self.levels.iter().fold(0f32, |m, l| m.max(l.abs())) as f64;
        let max_scale = self.scale.iter().fold(0f32, |m, s| m.max(s.abs())) as f64;
        reach * max_scale
    }

    /// Storage in bytes, as the nuq-rs file holds it: packed codes, the f32
    /// codebook unless it is implied (see [`crate::solve::implied_codebook`]),
    /// f32 locations, and the scales (f16 or f32).
    pub fn storage_bytes(&self) -> usize {
        let book = if self.implied_codebook {
            0
        } else {
            4 * self.levels.len()
        };
        let scales = if self.f16_scales { 2 } else { 4 } * self.scale.len();
        self.packed.len() + book + 4 * self.loc.len() + scales
    }

    /// Storage cost per weight in bits, all metadata included.
    pub fn bits_per_weight(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            8.0 * self.storage_bytes() as f64 / self.len() as f64
        }
    }
}

/// Quantizes a row-major `rows x cols` tensor.
///
/// Fails on a NaN or infinity (naming its flat index), a bit width outside
/// 1..=8, or a group size of 0. A group size that does not divide `cols`
/// leaves a short last group in every row. Nothing is returned half-done:
/// the result is built only after every check passed.
pub fn quantize(x: &[f32], rows: usize, cols: usize, cfg: &Config) -> Result<Quantized> {
    if x.len() != rows * cols {
        return Err(NuqError::LengthMismatch {
            what: "tensor data (rows * cols)",
            expected: rows * cols,
            actual: x.len(),
        });
    }
    cfg.validate(cols)?;
    match (cfg.codebook, cfg.granularity) {
        (CodebookChoice::Fitted, _) => fitted::quantize(x, rows, cols, cfg, fitted::Levels::Fitted),
        (CodebookChoice::LloydMax, Granularity::Group(g)) if cols.is_multiple_of(g) => {
            group::quantize(x, rows, cols, g, cfg)
        }
        (CodebookChoice::LloydMax, Granularity::Group(_)) => {
            fitted::quantize(x, rows, cols, cfg, fitted::Levels::Implied)
        }
        (CodebookChoice::LloydMax, _) => affine::quantize(x, rows, cols, cfg),
    }
}

/// `Σ v²` of `n` values from their mean and population standard deviation:
/// `n (std² + mean²)`, within a few ulps of the sum itself, at no extra
/// pass over the weights (the fits have the moments already).
pub(crate) fn energy_of(n: usize, mean: f64, std: f64) -> f64 {
    n as f64 * (std * std + mean * mean)
}

/// Rows handed to one Rayon task: enough work to amortize scheduling, fixed so
/// that reductions are identical for any thread count.
pub(crate) fn rows_per_task(cols: usize) -> usize {
    (1 << 16) / cols.max(1) + 1
}

#[cfg(test)]
mod tests;
