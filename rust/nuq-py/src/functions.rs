//! The `#[pyfunction]`s: extract, release the GIL, call the core, convert back.

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray4, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyReadonlyArray4, PyUntypedArrayMethods,
};
use nuq_core::{CodebookChoice, Config, Family, FamilyChoice, Granularity, PackedWeights};
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::Weights;
use crate::errors::CoreError;
use crate::pool;

fn parse_granularity(name: &str, group_size: Option<usize>) -> PyResult<Granularity> {
    match (name, group_size) {
        ("tensor", None) => Ok(Granularity::Tensor),
        ("channel", None) => Ok(Granularity::Channel),
        ("group", Some(g)) => Ok(Granularity::Group(g)),
        ("group", None) => Err(PyValueError::new_err(
            "granularity 'group' needs a group_size",
        )),
        ("tensor" | "channel", Some(_)) => Err(PyValueError::new_err(format!(
            "group_size is only valid with granularity 'group', not {name:?}"
        ))),
        _ => Err(PyValueError::new_err(format!(
            "unknown granularity {name:?}; expected 'tensor', 'channel' or 'group'"
        ))),
    }
}

fn parse_family(name: &str) -> PyResult<FamilyChoice> {
    match name {
        "auto" => Ok(FamilyChoice::Auto),
        "gaussian" => Ok(FamilyChoice::Fixed(Family::Gaussian)),
        "laplace" => Ok(FamilyChoice::Fixed(Family::Laplace)),
        _ => Err(PyValueError::new_err(format!(
            "unknown family {name:?}; expected 'auto', 'gaussian' or 'laplace'"
        ))),
    }
}

fn parse_codebook(name: &str) -> PyResult<CodebookChoice> {
    match name {
        "fitted" => Ok(CodebookChoice::Fitted),
        "lloyd-max" => Ok(CodebookChoice::LloydMax),
        _ => Err(PyValueError::new_err(format!(
            "unknown codebook {name:?}; expected 'fitted' or 'lloyd-max'"
        ))),
    }
}

/// Quantizes a flat `rows x cols` array; returns the packed codes, codebook,
/// locations, scales and fit statistics as a dict.
#[pyfunction]
#[pyo3(signature = (data, rows, cols, bits, granularity="tensor", group_size=None, family="auto", bfloat16=false, codebook="fitted"))]
#[allow(clippy::too_many_arguments)]
fn quantize<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    rows: usize,
    cols: usize,
    bits: u32,
    granularity: &str,
    group_size: Option<usize>,
    family: &str,
    bfloat16: bool,
    codebook: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = Config {
        bits,
        granularity: parse_granularity(granularity, group_size)?,
        family: parse_family(family)?,
        codebook: parse_codebook(codebook)?,
    };
    let weights = Weights::extract(data, bfloat16)?;
    let slice = weights.slice();
    let q = py
        .detach(|| pool::run(|| nuq_core::quantize(&slice.to_f32(), rows, cols, &cfg)))
        .map_err(CoreError)?;
    let out = PyDict::new(py);
    out.set_item("family", q.family.name())?;
    out.set_item("d_gaussian", q.d_gaussian)?;
    out.set_item("d_laplace", q.d_laplace)?;
    out.set_item("fit_loc", q.fit_loc)?;
    out.set_item("fit_scale", q.fit_scale)?;
    out.set_item("clip", q.clip())?;
    out.set_item("sse", q.sse)?;
    out.set_item("energy", q.energy)?;
    out.set_item("storage_bytes", q.storage_bytes())?;
    out.set_item("levels", q.levels.into_pyarray(py))?;
    out.set_item("loc", q.loc.into_pyarray(py))?;
    out.set_item("scale", q.scale.into_pyarray(py))?;
    out.set_item("packed", q.packed.into_pyarray(py))?;
    Ok(out)
}

/// The borrowed view of a packed matrix passed as arrays: codes, then
/// `[levels, loc, scale]`, for a `[rows, cols]` shape.
fn packed_view<'a>(
    packed: &'a PyReadonlyArray1<'_, u8>,
    [levels, loc, scale]: [&'a PyReadonlyArray1<'_, f32>; 3],
    [rows, cols]: [usize; 2],
    bits: u32,
    group_size: Option<usize>,
) -> PyResult<PackedWeights<'a>> {
    Ok(PackedWeights {
        rows,
        cols,
        bits,
        packed: packed.as_slice()?,
        levels: levels.as_slice()?,
        loc: loc.as_slice()?,
        scale: scale.as_slice()?,
        group_size,
    })
}

/// `n` zeroed floats for an output whose size comes from the caller's shapes
/// (which may be absurd: `rows = 2^60` with `cols = 0` needs no packed data):
/// `MemoryError` rather than an abort when they cannot be allocated.
fn zeros(n: Option<usize>) -> PyResult<Vec<f32>> {
    let too_big = || PyMemoryError::new_err(format!("cannot allocate an output of {n:?} floats"));
    let layout = n
        .and_then(|n| std::alloc::Layout::array::<f32>(n).ok())
        .ok_or_else(too_big)?;
    let n = n.unwrap_or_default();
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
    if ptr.is_null() {
        return Err(too_big());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `n`
    // f32s, all initialised (zero bits are 0.0); the Vec frees it with the same.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// `y = x · Wᵀ (+ bias)` for a float32 `[m, cols]` matrix `x`, straight from
/// the packed codes of the `rows x cols` matrix W (the LUT matmul). With
/// `int8_activations`, `nuq_core::lut::linear_int8` (an approximation with a
/// stated bound, faster on AVX512-VNNI CPUs for `m > 16`).
#[pyfunction]
#[pyo3(signature = (x, packed, levels, loc, scale, rows, cols, bits, group_size=None, bias=None, int8_activations=false))]
#[allow(clippy::too_many_arguments)]
fn linear<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    packed: PyReadonlyArray1<'py, u8>,
    levels: PyReadonlyArray1<'py, f32>,
    loc: PyReadonlyArray1<'py, f32>,
    scale: PyReadonlyArray1<'py, f32>,
    rows: usize,
    cols: usize,
    bits: u32,
    group_size: Option<usize>,
    bias: Option<PyReadonlyArray1<'py, f32>>,
    int8_activations: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let arrays = [&levels, &loc, &scale];
    let view = packed_view(&packed, arrays, [rows, cols], bits, group_size)?;
    let [m, k] = [x.shape()[0], x.shape()[1]];
    let matmul = if int8_activations {
        nuq_core::lut::linear_int8
    } else {
        nuq_core::lut::linear
    };
    if k != cols {
        return Err(PyValueError::new_err(format!(
            "input has {k} features but the layer expects {cols}"
        )));
    }
    let xs = x.as_slice()?;
    let bias = bias.as_ref().map(|b| b.as_slice()).transpose()?;
    view.validate().map_err(CoreError)?;
    let mut y = zeros(m.checked_mul(rows))?;
    // `linear` and `linear_int8` run serially exactly when `for_linear` says so.
    let exec = nuq_core::lut::Exec::for_linear(m, &view);
    py.detach(|| pool::run_as(exec, || matmul(xs, m, &view, bias, &mut y)))
        .map_err(CoreError)?;
    PyArray1::from_vec(py, y).reshape([m, rows])
}

/// `(kernel, stride, padding, dilation)` as `(height, width)` pairs, and groups.
type Geometry = ([usize; 2], [usize; 2], [usize; 2], [usize; 2], usize);

/// `conv2d(x, W) (+ bias)` for a float32 NCHW `x`, straight from the packed
/// codes of W (`rows` = out channels, `cols` = in_channels / groups * kh * kw):
/// implicit im2col into the LUT matmul.
#[pyfunction]
#[pyo3(signature = (x, packed, levels, loc, scale, rows, cols, bits, group_size, bias, geometry))]
#[allow(clippy::too_many_arguments)]
fn conv2d<'py>(
    py: Python<'py>,
    x: PyReadonlyArray4<'py, f32>,
    packed: PyReadonlyArray1<'py, u8>,
    levels: PyReadonlyArray1<'py, f32>,
    loc: PyReadonlyArray1<'py, f32>,
    scale: PyReadonlyArray1<'py, f32>,
    rows: usize,
    cols: usize,
    bits: u32,
    group_size: Option<usize>,
    bias: Option<PyReadonlyArray1<'py, f32>>,
    geometry: Geometry,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let arrays = [&levels, &loc, &scale];
    let view = packed_view(&packed, arrays, [rows, cols], bits, group_size)?;
    let (kernel, stride, padding, dilation, groups) = geometry;
    let [batch, in_channels, height, width] = [0, 1, 2, 3].map(|a| x.shape()[a]);
    let shape = nuq_core::lut::ConvShape {
        batch,
        in_channels,
        height,
        width,
        kernel,
        stride,
        padding,
        dilation,
        groups,
    };
    let xs = x.as_slice()?;
    let bias = bias.as_ref().map(|b| b.as_slice()).transpose()?;
    let [oh, ow] = shape.output_size().map_err(CoreError)?;
    let n = [rows, oh, ow]
        .iter()
        .try_fold(batch, |a, &b| a.checked_mul(b));
    let mut y = zeros(n)?;
    // `conv2d` runs serially exactly when `for_conv` says so.
    let exec = nuq_core::lut::Exec::for_conv(&shape, &view);
    let conv = || nuq_core::lut::conv2d(&shape, xs, &view, bias, &mut y);
    py.detach(|| pool::run_as(exec, conv)).map_err(CoreError)?;
    PyArray1::from_vec(py, y).reshape([batch, rows, oh, ow])
}

/// Decodes packed codes back to a flat float32 array of `rows * cols` values.
#[pyfunction]
#[pyo3(signature = (packed, levels, loc, scale, rows, cols, bits, group_size=None))]
#[allow(clippy::too_many_arguments)]
fn dequantize<'py>(
    py: Python<'py>,
    packed: PyReadonlyArray1<'py, u8>,
    levels: PyReadonlyArray1<'py, f32>,
    loc: PyReadonlyArray1<'py, f32>,
    scale: PyReadonlyArray1<'py, f32>,
    rows: usize,
    cols: usize,
    bits: u32,
    group_size: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let arrays = [&levels, &loc, &scale];
    let view = packed_view(&packed, arrays, [rows, cols], bits, group_size)?;
    view.validate().map_err(CoreError)?;
    let mut out = zeros(rows.checked_mul(cols))?;
    py.detach(|| pool::run(|| nuq_core::dequantize(&view, &mut out)))
        .map_err(CoreError)?;
    Ok(out.into_pyarray(py))
}

/// `(levels, boundaries, mse)` of a solved quantizer.
type Solved<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>, f64);

/// The optimal quantizer of the standardized family (Gaussian σ = 1, Laplace
/// b = 1) with `2^bits` levels: `(levels, boundaries, mse)`.
#[pyfunction]
fn lloyd_max<'py>(py: Python<'py>, family: &str, bits: u32) -> PyResult<Solved<'py>> {
    let family = fixed_family(family)?;
    let q = nuq_core::solve::lloyd_max(family, bits).map_err(CoreError)?;
    Ok((
        q.levels.clone().into_pyarray(py),
        q.boundaries.clone().into_pyarray(py),
        q.mse,
    ))
}

/// `family` as a fixed family ('auto' is refused).
fn fixed_family(family: &str) -> PyResult<Family> {
    match parse_family(family)? {
        FamilyChoice::Fixed(f) => Ok(f),
        FamilyChoice::Auto => Err(PyValueError::new_err(
            "family must be 'gaussian' or 'laplace'",
        )),
    }
}

/// The codebook that group quantization implies for `family`, `bits` and
/// `group_size` (2^bits float32 values in [-1, 1]); files do not store it.
#[pyfunction]
fn implied_codebook<'py>(
    py: Python<'py>,
    family: &str,
    bits: u32,
    group_size: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let family = fixed_family(family)?;
    let levels = py
        .detach(|| nuq_core::solve::implied_codebook(family, bits, group_size))
        .map_err(CoreError)?;
    Ok(levels.into_pyarray(py))
}

/// Sets the number of worker threads (`None`: `RAYON_NUM_THREADS` or one per CPU).
#[pyfunction]
#[pyo3(signature = (threads=None))]
fn set_num_threads(threads: Option<usize>) -> PyResult<()> {
    if threads == Some(0) {
        return Err(PyValueError::new_err(
            "threads must be >= 1 (or None for the default)",
        ));
    }
    pool::set_threads(threads);
    Ok(())
}

/// The number of worker threads quantization uses.
#[pyfunction]
fn get_num_threads() -> usize {
    pool::threads()
}

/// The kernels in use: `isa` (the selected instruction set), `requested`
/// (what `NUQ_ISA` asked for, or None), `available` (what this CPU runs,
/// slowest first), `int8` (the int8-activation kernel, or None where
/// `activations="int8"` runs the fp32 kernels) and `prefill` (the product
/// of decoded weight tiles for more than 16 rows, `{"linear": ..., "conv2d":
/// ...}`, each "micro" or "gemm", see `NUQ_PREFILL`).
///
/// >>> k = nuq_rs.kernels(); k["isa"] in k["available"]
/// True
#[pyfunction]
fn kernels(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    use nuq_core::lut::Prefill;
    use nuq_core::pack::{available_kernels, Kernel};
    let requested = Kernel::requested().map_err(PyValueError::new_err)?;
    let d = PyDict::new(py);
    d.set_item("isa", Kernel::selected().name())?;
    d.set_item("requested", requested.map(Kernel::name))?;
    let available: Vec<&str> = available_kernels().into_iter().map(Kernel::name).collect();
    d.set_item("available", available)?;
    let int8 = nuq_core::lut::Int8Kernel::selected().map(|k| k.name());
    d.set_item("int8", int8)?;
    let prefill = PyDict::new(py);
    prefill.set_item("linear", Prefill::for_linear().name())?;
    let conv = Prefill::for_conv(nuq_core::lut::Kernel::detect());
    prefill.set_item("conv2d", conv.name())?;
    d.set_item("prefill", prefill)?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // An unknown `NUQ_ISA` refuses the import rather than panic in a kernel.
    nuq_core::pack::Kernel::requested().map_err(PyValueError::new_err)?;
    nuq_core::lut::Prefill::requested().map_err(PyValueError::new_err)?;
    m.add_function(wrap_pyfunction!(kernels, m)?)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(lloyd_max, m)?)?;
    m.add_function(wrap_pyfunction!(implied_codebook, m)?)?;
    m.add_function(wrap_pyfunction!(linear, m)?)?;
    m.add_function(wrap_pyfunction!(conv2d, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    Ok(())
}
