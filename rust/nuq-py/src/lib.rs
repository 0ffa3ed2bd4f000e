//! `nuq_rs._nuq_rs`: the thin PyO3 binding of `nuq-core`.
//!
//! Each function extracts NumPy arrays, releases the GIL around the core call
//! (run inside the binding's fork-aware Rayon pool) and converts the result
//! back. No algorithm lives here.

mod convert;
mod errors;
mod functions;
mod pool;

use pyo3::prelude::*;

#[pymodule]
fn _nuq_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    functions::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("KS_TOLERANCE", nuq_core::stats::KS_TOLERANCE)?;
    Ok(())
}
