//! 2-D convolution on packed weights by implicit im2col: the patches of each
//! chunk of output positions are written straight into the panels of the
//! prefill kernel (`tile`), so the `[positions, C·kh·kw]` matrix of an
//! explicit im2col is never materialized, and the products come out as
//! `[out channels, positions]`, which is already the NCHW output layout.
//! With [`Prefill::Gemm`] the patches of a chunk form one panel, i.e. the
//! row-major `[C·kh·kw, chunk]` im2col matrix of the chunk (the same
//! `MC · C·kh·kw` floats as the micro-kernel's panels), which `gemm` reads
//! with strides.
//! Convolutions with one input channel per group (depthwise) have too few
//! columns for either product and run tap by tap instead (`depthwise`).

use super::dense;
use super::exec::Exec;
use super::kernel::{Isa, Kernel};
use super::output;
use super::prefill::Prefill;
use super::tile::{products, Panels, MC, TILE_K, TILE_N};
use crate::error::{NuqError, Result};
use crate::weights::{check_len, PackedWeights};

/// Geometry of a convolution over an NCHW `f32` input, with PyTorch's
/// `Conv2d` semantics (zero padding). Pairs are `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvShape {
    /// `[height, width]` of the output, or why the geometry is invalid.
    pub fn output_size(&self) -> Result<[usize; 2]> {
        let bad = |msg: String| Err(NuqError::InvalidConv(msg));
        if self.groups == 0 || !self.in_channels.is_multiple_of(self.groups) {
            return bad(format!(
                "groups {} must be > 0 and divide in_channels {}",
                self.groups, self.in_channels
            ));
        }
        let mut out = [0; 2];
        for (a, axis) in ["height", "width"].into_iter().enumerate() {
            let (k, s, d) = (self.kernel[a], self.stride[a], self.dilation[a]);
            if k == 0 || s == 0 || d == 0 {
                return bad(format!("kernel, stride and dilation {axis} must be > 0"));
            }
            let size = [self.height, self.width][a] + 2 * self.padding[a];
            let span = d * (k - 1) + 1;
            if size < span {
                return bad(format!(
                    "kernel {axis} spans {span} but the padded input {axis} is {size}"
                ));
            }
            out[a] = (size - span) / s + 1;
        }
        Ok(out)
    }

    /// Values per im2col column: `in_channels / groups · kh · kw`.
    fn patch_len(&self) -> usize {
        self.in_channels / self.groups * self.kernel[0] * self.kernel[1]
    }
}

/// `y = conv2d(x, W) (+ bias)` with the best kernel of this CPU: `x` is
/// `[batch, in_channels, height, width]`, W has `rows` = out channels and
/// `cols` = `in_channels / groups · kh · kw` (PyTorch's weight flattened),
/// `y` is `[batch, rows, out_h, out_w]`. Every length and the geometry are
/// checked; nothing panics on bad input.
pub fn conv2d(
    shape: &ConvShape,
    x: &[f32],
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    conv2d_with(Kernel::detect(), shape, x, w, bias, y)
}

/// [`conv2d`] with an explicit kernel (for tests and benchmarks).
pub fn conv2d_with(
    kernel: Kernel,
    shape: &ConvShape,
    x: &[f32],
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    conv2d_with_prefill(kernel, Prefill::for_conv(kernel), shape, x, w, bias, y)
}

/// [`conv2d_with`] with an explicit prefill product (for tests and
/// benchmarks; [`conv2d`] takes [`Prefill::for_conv`]).
pub fn conv2d_with_prefill(
    kernel: Kernel,
    prefill: Prefill,
    shape: &ConvShape,
    x: &[f32],
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let exec = Exec::for_conv(shape, w);
    conv2d_in((exec, kernel, prefill), shape, x, w, bias, y)
}

/// [`conv2d_with_prefill`] with an explicit [`Exec`] (for tests and
/// benchmarks; the others take [`Exec::for_conv`]).
pub fn conv2d_in(
    (exec, kernel, prefill): (Exec, Kernel, Prefill),
    shape: &ConvShape,
    x: &[f32],
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let [oh, ow] = check(shape, x, w, bias, y)?;
    if y.is_empty() {
        return Ok(());
    }
    if depthwise::applies(shape) {
        depthwise::run((exec, kernel), shape, [oh, ow], (x, w, bias), y);
        return Ok(());
    }
    let (isa, n, positions) = (kernel.isa(), w.rows, oh * ow);
    let per_out = n / shape.groups;
    for g in 0..shape.groups {
        let wg = w.row_range(g * per_out, (g + 1) * per_out);
        let blocks = group_products((exec, isa, prefill), shape, [oh, ow], (x, g), &wg);
        exec.chunks(
            y,
            n * positions,
            || (),
            |_, b, y_b| {
                for t in 0..per_out {
                    let r = g * per_out + t;
                    let y_r = &mut y_b[r * positions..(r + 1) * positions];
                    write_row(w, (r, t), &blocks, b * positions, bias, y_r);
                }
            },
        );
    }
    Ok(())
}

/// Validates everything [`conv2d_with`] relies on; returns the output size.
fn check(
    shape: &ConvShape,
    x: &[f32],
    w: &PackedWeights,
    bias: Option<&[f32]>,
    y: &[f32],
) -> Result<[usize; 2]> {
    w.validate()?;
    let [oh, ow] = shape.output_size()?;
    if w.cols != shape.patch_len() {
        return Err(NuqError::InvalidConv(format!(
            "weights have {} columns, expected in_channels / groups * kh * kw = {}",
            w.cols,
            shape.patch_len()
        )));
    }
    if !w.rows.is_multiple_of(shape.groups) {
        return Err(NuqError::InvalidConv(format!(
            "out_channels {} must be a multiple of groups {}",
            w.rows, shape.groups
        )));
    }
    let image = [shape.in_channels, shape.height, shape.width];
    let x_len = image.iter().try_fold(shape.batch, |a, &b| a.checked_mul(b));
    check_len("x", x_len, x.len())?;
    let y_len = [w.rows, oh, ow]
        .iter()
        .try_fold(shape.batch, |a, &b| a.checked_mul(b));
    check_len("y", y_len, y.len())?;
    if let Some(b) = bias {
        check_len("bias", Some(w.rows), b.len())?;
    }
    Ok([oh, ow])
}

/// Group `g` of every image: per chunk of `MC` output positions (counted
/// across the batch, so small images still fill whole chunks), the
/// offset-free products `[wg.rows, chunk]` and the patch sums `[chunk]`
/// (zeros, without a pass over the patches, when no row has an offset).
fn group_products(
    (exec, isa, prefill): (Exec, Isa, Prefill),
    shape: &ConvShape,
    out_hw: [usize; 2],
    (x, g): (&[f32], usize),
    wg: &PackedWeights,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let total = shape.batch * out_hw[0] * out_hw[1];
    let offsets = wg.loc.iter().any(|&l| l != 0.0);
    exec.map(
        total.div_ceil(MC),
        || (vec![0.0f32; TILE_N * TILE_K], Vec::new()),
        |(tile, storage), c| {
            let q0 = c * MC;
            let chunk = q0..q0 + MC.min(total - q0);
            let scratch = std::mem::take(storage);
            let width = match prefill {
                Prefill::Micro => isa.panel_width(),
                Prefill::Gemm => chunk.len(),
            };
            let panels = patches((exec, width), shape, out_hw, (x, g, scratch), chunk);
            let sums = if offsets {
                panels.row_sums()
            } else {
                vec![0.0; panels.m]
            };
            let dots = match prefill {
                Prefill::Micro => (0..wg.rows)
                    .step_by(TILE_N)
                    .flat_map(|r0| products(isa, wg, &panels, r0, tile))
                    .collect(),
                Prefill::Gemm => dense::panel_products(isa, wg, &panels, tile),
            };
            *storage = panels.into_data();
            (dots, sums)
        },
    )
}

/// Output channel `r` (row `t` of its group) of the image whose first
/// position has batch-wide index `q0`.
fn write_row(
    w: &PackedWeights,
    (r, t): (usize, usize),
    blocks: &[(Vec<f32>, Vec<f32>)],
    q0: usize,
    bias: Option<&[f32]>,
    y_r: &mut [f32],
) {
    let mut p = 0;
    while p < y_r.len() {
        let q = q0 + p;
        let (dots, sums) = &blocks[q / MC];
        let (off, mc) = (q % MC, sums.len());
        let end = p + (mc - off).min(y_r.len() - p);
        let run = &mut y_r[p..end];
        let dots = &dots[t * mc + off..];
        for ((out, &dot), &sum) in run.iter_mut().zip(dots).zip(&sums[off..]) {
            *out = output(w, r, dot, sum, bias);
        }
        p += run.len();
    }
}

/// The im2col columns of the batch-wide output positions `chunk` (group
/// `g`) as panels (in the recycled `storage`).
fn patches(
    (exec, width): (Exec, usize),
    shape: &ConvShape,
    [oh, ow]: [usize; 2],
    (x, g, storage): (&[f32], usize, Vec<f32>),
    chunk: std::ops::Range<usize>,
) -> Panels {
    let plane = shape.height * shape.width;
    let c_g = shape.in_channels / shape.groups;
    let mc = chunk.len();
    Panels::build(exec, (width, mc, shape.patch_len()), storage, |p, panel| {
        let first = chunk.start + p * width;
        let count = width.min(mc - p * width);
        let mut runs = Vec::new();
        let mut l = 0;
        while l < count {
            let (b, pos) = ((first + l) / (oh * ow), (first + l) % (oh * ow));
            let (oy, ox) = (pos / ow, pos % ow);
            let len = (ow - ox).min(count - l);
            runs.push(Run {
                l0: l,
                len,
                base: (b * shape.in_channels + g * c_g) * plane,
                y: (oy * shape.stride[0]) as isize - shape.padding[0] as isize,
                x: (ox * shape.stride[1]) as isize - shape.padding[1] as isize,
            });
            l += len;
        }
        fill_patches(shape, x, &runs, width, panel);
    })
}

/// Panel rows `l0..l0 + len`: consecutive positions of one output row of one
/// image. `base` is the group's first input plane in `x`; `(y, x)` the
/// top-left input coordinate of the first patch (negative in the padding).
struct Run {
    l0: usize,
    len: usize,
    base: usize,
    y: isize,
    x: isize,
}

/// Writes the patches of `runs` into one panel (rows `(c, dy, dx)`): per
/// run, one input row segment, copied whole when the stride is 1; outside the
/// input stays zero (padding).
fn fill_patches(shape: &ConvShape, x: &[f32], runs: &[Run], width: usize, panel: &mut [f32]) {
    let (h, w, step) = (shape.height, shape.width, shape.stride[1]);
    let c_g = shape.in_channels / shape.groups;
    let taps = (0..shape.kernel[0]).flat_map(|dy| (0..shape.kernel[1]).map(move |dx| (dy, dx)));
    let rows = (0..c_g).flat_map(|c| taps.clone().map(move |t| (c, t)));
    for ((c, (dy, dx)), dst_row) in rows.zip(panel.chunks_exact_mut(width)) {
        let (oy, ox) = (
            (dy * shape.dilation[0]) as isize,
            (dx * shape.dilation[1]) as isize,
        );
        for run in runs {
            // A negative row wraps to a huge value: one compare.
            let iy = (run.y + oy) as usize;
            if iy >= h {
                continue;
            }
            let src = &x[run.base + (c * h + iy) * w..][..w];
            let dst = &mut dst_row[run.l0..run.l0 + run.len];
            let x0 = run.x + ox;
            if step == 1 {
                // Position i reads src[x0 + i]: the part inside 0..w.
                let lo = (-x0).clamp(0, run.len as isize) as usize;
                let hi = (w as isize - x0).clamp(0, run.len as isize) as usize;
                if lo < hi {
                    let s0 = (x0 + lo as isize) as usize;
                    dst[lo..hi].copy_from_slice(&src[s0..s0 + hi - lo]);
                }
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    let ix = (x0 + (i * step) as isize) as usize;
                    if ix < w {
                        *d = src[ix];
                    }
                }
            }
        }
    }
}

mod depthwise;
#[cfg(test)]
mod tests;
