//! The Python exceptions of nuq-rs and the one mapping from the core's errors.

use nuq_core::NuqError;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    nuq_rs,
    QuantizationError,
    PyValueError,
    "Base class of the errors nuq-rs raises for bad input (a ValueError)."
);
create_exception!(
    nuq_rs,
    NonFiniteError,
    QuantizationError,
    "A tensor holds NaN or infinity."
);

/// Wraps a core error so `?` turns it into the matching Python exception.
pub struct CoreError(pub NuqError);

impl From<NuqError> for CoreError {
    fn from(e: NuqError) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> PyErr {
        let msg = e.to_string();
        match e {
            NuqError::NonFinite { .. } => NonFiniteError::new_err(msg),
            NuqError::InvalidBits(_)
            | NuqError::InvalidGroupSize { .. }
            | NuqError::LengthMismatch { .. }
            | NuqError::InvalidConv(_)
            | NuqError::Int8GroupSize(_)
            | NuqError::CodeOutOfRange { .. }
            | NuqError::Overflow { .. } => QuantizationError::new_err(msg),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("QuantizationError", py.get_type::<QuantizationError>())?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    Ok(())
}
