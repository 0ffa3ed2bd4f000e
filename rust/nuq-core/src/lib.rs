//! nuq-core: data-free, distribution-aware, non-uniform post-training weight
//! quantization. Pure Rust, no Python: the `nuq-py` crate binds it.
//!
//! Pipeline for one weight tensor (see `quantize`): fit a Gaussian and a Laplace
//! (`stats`), keep the family with the smaller Kolmogorov–Smirnov statistic,
//! take the Lloyd–Max quantizer of the standardized density (`solve`), encode
//! every weight as its cell index and bit-pack the indices (`pack`).

pub mod encode;
pub mod error;
pub mod family;
pub mod lut;
pub mod pack;
pub mod quantize;
pub mod solve;
pub mod stats;
pub mod weights;

pub use error::NuqError;
pub use family::Family;
pub use quantize::{
    dequantize, quantize, CodebookChoice, Config, FamilyChoice, Granularity, Quantized,
};
pub use weights::PackedWeights;
