//! NumPy inputs to core slices: float32 as is, float16 and bfloat16 (passed as
//! its uint16 bit pattern, NumPy having no bfloat16) widened in Rust.

use std::borrow::Cow;

use half::{bf16, f16};
use numpy::{PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use rayon::prelude::*;

/// A borrowed 1-D weight buffer in one of the accepted dtypes.
pub enum Weights<'py> {
    F32(PyReadonlyArray1<'py, f32>),
    F16(PyReadonlyArray1<'py, f16>),
    Bf16(PyReadonlyArray1<'py, u16>),
}

impl<'py> Weights<'py> {
    /// Accepts a C-contiguous 1-D float32/float16 array, or uint16 when
    /// `bfloat16` says it holds bfloat16 bit patterns.
    pub fn extract(obj: &Bound<'py, PyAny>, bfloat16: bool) -> PyResult<Self> {
        let weights = if bfloat16 {
            obj.extract::<PyReadonlyArray1<u16>>()
                .map(Weights::Bf16)
                .ok()
        } else if let Ok(a) = obj.extract::<PyReadonlyArray1<f32>>() {
            Some(Weights::F32(a))
        } else {
            obj.extract::<PyReadonlyArray1<f16>>()
                .map(Weights::F16)
                .ok()
        };
        let weights = weights.ok_or_else(|| {
            PyTypeError::new_err(
                "expected a 1-D numpy array of float32, float16 or (bfloat16 as) uint16",
            )
        })?;
        if !weights.is_contiguous() {
            return Err(PyValueError::new_err("weight array must be C-contiguous"));
        }
        Ok(weights)
    }

    fn is_contiguous(&self) -> bool {
        match self {
            Weights::F32(a) => a.is_c_contiguous(),
            Weights::F16(a) => a.is_c_contiguous(),
            Weights::Bf16(a) => a.is_c_contiguous(),
        }
    }

    /// A view of the data that can cross `py.detach` (contiguity was checked).
    pub fn slice(&self) -> Slice<'_> {
        match self {
            Weights::F32(a) => Slice::F32(a.as_slice().expect("checked contiguous")),
            Weights::F16(a) => Slice::F16(a.as_slice().expect("checked contiguous")),
            Weights::Bf16(a) => Slice::Bf16(a.as_slice().expect("checked contiguous")),
        }
    }
}

/// Plain slices, free of Python, safe to use without the GIL.
#[derive(Clone, Copy)]
pub enum Slice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [u16]),
}

impl<'a> Slice<'a> {
    /// The values as f32, borrowed when they already are.
    pub fn to_f32(self) -> Cow<'a, [f32]> {
        match self {
            Slice::F32(s) => Cow::Borrowed(s),
            Slice::F16(s) => Cow::Owned(s.par_iter().map(|v| v.to_f32()).collect()),
            Slice::Bf16(s) => {
                Cow::Owned(s.par_iter().map(|&b| bf16::from_bits(b).to_f32()).collect())
            }
        }
    }
}
