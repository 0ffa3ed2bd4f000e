//! LUT matmul: `y = x · Wᵀ (+ bias)` straight from bit-packed codes.
//!
//! `W[r, j] = loc_r + scale_{r or group} · levels[code(r, j)]`, so
//! `x · w_r = loc_r · Σx + Σ_groups scale_g · Σ_{j∈g} x_j · levels[c_j]`: the
//! offset comes out as one product with the row sum of `x`, and each kernel folds
//! the group/channel scale into a per-segment copy of the (at most 256-entry)
//! codebook, so the inner loop is "code -> float -> FMA" and W is never
//! materialized as a whole.
//!
//! Two drivers share the per-architecture kernels:
//! - `m <= SMALL_M` (decode): memory-bound; every task owns a chunk of output rows
//!   and decodes each weight row once in registers for a block of up to 8 rows
//!   of `x` (`small`).
//! - larger `m` (prefill, im2col): compute-bound; a tile of W is decoded into a
//!   small f32 buffer and reused by an outer-product micro-kernel over panels
//!   of `x` (`tile`), or, with [`Prefill::Gemm`] (`NUQ_PREFILL=gemm`), by the
//!   `gemm` crate (`dense`).
//!
//! Every output element is computed by exactly one task in a fixed order, so
//! results are bit-identical for any Rayon thread count. Calls of fewer than
//! [`SERIAL_WORK`] multiply-adds run their tasks serially on the calling
//! thread, with no Rayon call ([`Exec`]), with the same results.

mod conv;
mod dense;
mod exec;
mod phased;
mod prefill;
mod q8;
mod scalar;
mod small;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx2_phased;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_phased;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_q8;

mod kernel;

pub use crate::weights::PackedWeights;
pub use conv::{conv2d, conv2d_in, conv2d_with, conv2d_with_prefill, ConvShape};
pub use exec::{Exec, SERIAL_WORK};
pub use kernel::Kernel;
pub use prefill::{Prefill, PREFILL_VAR};
pub use q8::BLOCK as INT8_BLOCK;

use crate::weights::check_len;

use crate::error::Result;

/// Largest `m` served by the decode (small-batch) driver.
const SMALL_M: usize = 16;

/// `y = x · Wᵀ (+ bias)` with the best kernel of this CPU ([`Kernel::detect`]).
///
/// `x` is row-major `[m, w.cols]`, `y` row-major `[m, w.rows]`, `bias` has
/// `w.rows` entries. Every length is checked; nothing panics on bad input.
/// Runs on the calling thread without Rayon when [`Exec::for_linear`] says
/// `Serial`, else on the current Rayon pool.
///
/// ```
/// use nuq_core::lut::{linear, PackedWeights};
/// use nuq_core::pack::scalar::pack;
///
/// // W (2 x 4, 2 bits) = loc + scale * levels[code], one scale per tensor.
/// let mut packed = [0u8; 2];
/// pack(&[0, 1, 2, 3], 2, &mut packed[..1]);
/// pack(&[3, 3, 0, 0], 2, &mut packed[1..]);
/// let w = PackedWeights {
///     rows: 2,
///     cols: 4,
///     bits: 2,
///     packed: &packed,
///     levels: &[-1.5, -0.5, 0.5, 1.5],
///     loc: &[0.0],
///     scale: &[2.0],
///     group_size: None,
/// };
/// let mut y = [0.0f32; 2];
/// linear(&[1.0, 2.0, 3.0, 4.0], 1, &w, Some(&[0.5, 0.0]), &mut y)?;
/// // W = [[-3, -1, 1, 3], [3, 3, -3, -3]]
/// assert_eq!(y, [-3.0 - 2.0 + 3.0 + 12.0 + 0.5, 3.0 + 6.0 - 9.0 - 12.0]);
/// # Ok::<(), nuq_core::NuqError>(())
/// ```
pub fn linear(
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    linear_with(Kernel::detect(), x, m, w, bias, y)
}

/// [`linear`] with an explicit kernel (for tests and benchmarks).
pub fn linear_with(
    kernel: Kernel,
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    linear_with_prefill(kernel, Prefill::for_linear(), x, m, w, bias, y)
}

/// [`linear_with`] with an explicit prefill product for `m > 16` (for tests
/// and benchmarks; [`linear`] takes [`Prefill::for_linear`]).
pub fn linear_with_prefill(
    kernel: Kernel,
    prefill: Prefill,
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let exec = Exec::for_linear(m, w);
    linear_in((exec, kernel, prefill), x, m, w, bias, y)
}

/// [`linear_with_prefill`] with an explicit [`Exec`] (for tests and
/// benchmarks; the others take [`Exec::for_linear`]).
pub fn linear_in(
    (exec, kernel, prefill): (Exec, Kernel, Prefill),
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    check_call(x, m, w, bias, y)?;
    if m == 0 || w.rows == 0 {
        return Ok(());
    }
    let sumx = row_sums(x, m, w.cols);
    let isa = kernel.isa();
    if m <= SMALL_M {
        let mut y_t = vec![0.0f32; w.rows * m];
        small::run((exec, isa), x, m, w, &mut y_t);
        finish(exec, &y_t, &sumx, w, bias, y);
    } else {
        match prefill {
            Prefill::Micro => tile::run((exec, isa), x, w, (&sumx, bias), y),
            Prefill::Gemm => dense::linear((exec, isa), x, w, (&sumx, bias), y),
        }
    }
    Ok(())
}

/// [`linear`] with int8 activations where that is faster: an approximation
/// for CPUs with AVX512-VNNI, opt-in because it is not within 1e-5 of fp32.
///
/// For `m > 16` (prefill; below that the call is memory-bound and runs the
/// fp32 kernels), with an int8 kernel selected ([`Int8Kernel::selected`]: on
/// a CPU with AVX-512 F, BW and VNNI, or the scalar reference under
/// `NUQ_ISA=scalar`), and a group size (if any) that is a multiple of 4, the
/// codebook is rounded to 255 steps of `sl = max|levels| / 127` and each row
/// of `x` to 255 steps of `sx = max|x| / 127` per block of columns (the group,
/// else [`INT8_BLOCK`]), and the products run as exact integer sums. Everything
/// else runs [`linear`] ([`int8_plan`] says which), so the result is always
/// within the bound below.
///
/// Error against [`linear_reference`], per output `(i, r)`, beyond f32
/// rounding: at most `Σ_j scale_rj · (sx_ij / 2 · |levels[c_rj]| + (|x_ij| +
/// sx_ij / 2) · sl / 2)`, where `scale_rj` is the scale of weight `(r, j)`
/// and `sx_ij` the activation scale of its block. The offset and bias terms
/// are exact.
pub fn linear_int8(
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    linear_int8_auto(Int8Kernel::selected(), x, m, w, bias, y)
}

/// [`linear_int8`] choosing among `kernel` and the fp32 kernels.
pub(crate) fn linear_int8_auto(
    kernel: Option<Int8Kernel>,
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    match int8_plan(kernel, m, w) {
        Some(kernel) => linear_int8_with(kernel, x, m, w, bias, y),
        None => linear(x, m, w, bias, y),
    }
}

/// The int8 kernel that [`linear_int8`] runs for `m` rows of `x` against `w`
/// when `kernel` is the selected one, or `None` where it runs the exact fp32
/// kernels (`m <= 16`, a group size not a multiple of 4, no int8 kernel).
pub fn int8_plan(kernel: Option<Int8Kernel>, m: usize, w: &PackedWeights) -> Option<Int8Kernel> {
    kernel.filter(|_| m > SMALL_M && q8::check(w).is_ok())
}

/// An int8-activation kernel that this CPU can run (see [`linear_int8`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int8Kernel(q8::Q8);

impl Int8Kernel {
    /// The portable reference: the same integer sums and f32 steps as VNNI.
    pub fn scalar() -> Self {
        Int8Kernel(q8::Q8::Scalar)
    }

    /// The AVX512-VNNI kernel, if this CPU has AVX-512 F, BW and VNNI.
    pub fn vnni() -> Option<Self> {
        q8::Q8::vnni().map(Int8Kernel)
    }

    /// The kernel of [`linear_int8`]: VNNI when the selected instruction set
    /// (`crate::pack::Kernel::selected`) is AVX-512 and the CPU has VNNI; the
    /// scalar reference when `NUQ_ISA=scalar` (or `NUQ_FORCE_SCALAR=1`) asks
    /// for the references, so that the int8 path runs, and is tested, on any
    /// CPU; otherwise none (the fp32 kernels are faster than scalar int8).
    pub fn selected() -> Option<Self> {
        use crate::pack::Kernel as Isa;
        match Isa::selected() {
            Isa::Avx512 => Self::vnni(),
            Isa::Scalar if Isa::requested() == Ok(Some(Isa::Scalar)) => Some(Self::scalar()),
            _ => None,
        }
    }

    /// `"scalar"` or `"vnni"`.
    pub fn name(self) -> &'static str {
        match self.0 {
            q8::Q8::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            q8::Q8::Vnni => "vnni",
        }
    }
}

/// The int8-activation product of [`linear_int8`] with an explicit kernel,
/// for any `m` (tests and benchmarks). Fails on a group size that is not a
/// multiple of 4.
pub fn linear_int8_with(
    kernel: Int8Kernel,
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    linear_int8_in((Exec::for_linear(m, w), kernel), x, m, w, bias, y)
}

/// [`linear_int8_with`] with an explicit [`Exec`].
pub(crate) fn linear_int8_in(
    (exec, kernel): (Exec, Int8Kernel),
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    check_call(x, m, w, bias, y)?;
    q8::check(w)?;
    if m == 0 || w.rows == 0 {
        return Ok(());
    }
    let sumx = row_sums(x, m, w.cols);
    q8::run((exec, kernel.0), x, w, (&sumx, bias), y);
    Ok(())
}

/// Writes row `r` of W decoded (`loc + scale · level`, the product rounded
/// before the sum as in [`linear_reference`]) into `out` (`w.cols` floats),
/// with `kernel`. `w` must be valid.
pub(crate) fn decode_row(kernel: Kernel, w: &PackedWeights, r: usize, out: &mut [f32]) {
    kernel.isa().decode_row(w, r, 0, out);
    let loc = w.loc_of(r);
    if loc != 0.0 {
        out.iter_mut().for_each(|v| *v += loc);
    }
}

/// Scalar reference: decodes every weight as `loc + scale · level` and sums
/// in row order. The definition every fast path is tested against.
pub fn linear_reference(
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    check_call(x, m, w, bias, y)?;
    scalar::reference(x, m, w, bias, y);
    Ok(())
}

/// Validates the weights view and the lengths of `x`, `bias` and `y`.
fn check_call(
    x: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &[f32],
) -> Result<()> {
    w.validate()?;
    check_len("x", m.checked_mul(w.cols), x.len())?;
    check_len("y", m.checked_mul(w.rows), y.len())?;
    if let Some(b) = bias {
        check_len("bias", Some(w.rows), b.len())?;
    }
    Ok(())
}

/// Σ_j x[i, j] per row of `x`, accumulated in f64 so the `loc · Σx` term adds
/// no error of its own however large K is.
fn row_sums(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    if k == 0 {
        return vec![0.0; m];
    }
    x.chunks_exact(k).map(row_sum).collect()
}

/// Σ of one row in f64 over 8 interleaved partial sums (fixed order, so
/// deterministic), which vectorizes instead of waiting on one add chain.
fn row_sum(row: &[f32]) -> f32 {
    let mut part = [0.0f64; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (p, &v) in part.iter_mut().zip(c) {
            *p += f64::from(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
    (part.iter().sum::<f64>() + tail) as f32
}

/// Adds offset and bias to the per-row dot products `y_t` (`[N, m]`) and
/// transposes them into `y` (`[m, N]`).
fn finish(
    exec: Exec,
    y_t: &[f32],
    sumx: &[f32],
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (n, m) = (w.rows, sumx.len());
    exec.chunks(
        y,
        n,
        || (),
        |_, i, y_row| {
            for (r, out) in y_row.iter_mut().enumerate() {
                *out = output(w, r, y_t[r * m + i], sumx[i], bias);
            }
        },
    );
}

/// Output `r` of a row of `x` from its offset-free dot product `dot` and the
/// row's sum `sx`: adds the weight row's offset and the bias.
#[inline]
fn output(w: &PackedWeights, r: usize, dot: f32, sx: f32, bias: Option<&[f32]>) -> f32 {
    dot + w.loc_of(r) * sx + bias.map_or(0.0, |b| b[r])
}

/// Runs `$body` with `const $b: u32` bound to `$bits` (1..=8); the body is
/// monomorphized per width so bit-width tests fold away in the kernels.
macro_rules! with_bits {
    ($bits:expr, $b:ident => $body:expr) => {
        match $bits {
            1 => {
                const $b: u32 = 1;
                $body
            }
            2 => {
                const $b: u32 = 2;
                $body
            }
            3 => {
                const $b: u32 = 3;
                $body
            }
            4 => {
                const $b: u32 = 4;
                $body
            }
            5 => {
                const $b: u32 = 5;
                $body
            }
            6 => {
                const $b: u32 = 6;
                $body
            }
            7 => {
                const $b: u32 = 7;
                $body
            }
            _ => {
                const $b: u32 = 8;
                $body
            }
        }
    };
}
pub(crate) use with_bits;

#[cfg(test)]
mod int8_tests;
#[cfg(test)]
mod tests;
