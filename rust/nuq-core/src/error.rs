//! The one error type of the core. The binding maps each variant to a Python
//! exception; every message says what is wrong and where.

use thiserror::Error;

/// Every way a core call can fail.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum NuqError {
    /// A value is NaN or infinite; `index` is its flat position.
    #[error("non-finite value {value} at flat index {index}")]
    NonFinite { index: usize, value: f32 },
    /// The weights are finite but so large that their decoded values, or their
    /// errors, overflow f32 (magnitudes near `f32::MAX`).
    #[error("weights of magnitude up to {max_abs:e} overflow float32 once decoded")]
    Overflow { max_abs: f32 },
    /// The bit width is outside 1..=8.
    #[error("bits must be in 1..=8, got {0}")]
    InvalidBits(u32),
    /// The group size is zero.
    #[error("group_size {group_size} must be > 0 (row length {row_len})")]
    InvalidGroupSize { group_size: usize, row_len: usize },
    /// Two lengths that must agree do not.
    #[error("{what}: expected length {expected}, got {actual}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// The int8-activation path needs groups of whole 4-column quads.
    #[error("int8 activations need a group_size that is a multiple of 4, got {0}")]
    Int8GroupSize(usize),
    /// A convolution's geometry does not fit its input or weights.
    #[error("convolution: {0}")]
    InvalidConv(String),
    /// A code does not index the codebook.
    #[error("code {code} at flat index {index} is outside a codebook of {levels} levels")]
    CodeOutOfRange {
        index: usize,
        code: u8,
        levels: usize,
    },
}

/// Shorthand used across the core.
pub type Result<T> = std::result::Result<T, NuqError>;
