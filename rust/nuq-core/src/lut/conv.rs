//! 2-D convolution on packed weights by implicit im2col: the patches of each
//! chunk of output positions are written straight into the panels of the
//! prefill kernel (`tile`), so the `[positions, C·kh·kw]` matrix of an
//! explicit im2col is never materialized, and the products come out as
//! `[out channels, positions]`, which is already the NCHW output layout.

use rayon::prelude::*;

use super::kernel::{Isa, Kernel};
use super::output;
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
    let [oh, ow] = check(shape, x, w, bias, y)?;
    if y.is_empty() {
        return Ok(());
    }
    let (isa, n, positions) = (kernel.isa(), w.rows, oh * ow);
    let image = shape.in_channels * shape.height * shape.width;
    let per_out = n / shape.groups;
    let x_per_group = image / shape.groups;
    y.par_chunks_mut(n * positions)
        .zip(x.par_chunks(image.max(1)))
        .for_each(|(y_b, x_b)| {
            for g in 0..shape.groups {
                let x_g = &x_b[g * x_per_group..(g + 1) * x_per_group];
                let wg = w.row_range(g * per_out, (g + 1) * per_out);
                let blocks = group_products(isa, shape, [oh, ow], x_g, &wg);
                for (t, y_r) in y_b[g * per_out * positions..]
                    .chunks_exact_mut(positions)
                    .take(per_out)
                    .enumerate()
                {
                    write_row(w, g * per_out + t, t, &blocks, bias, y_r);
                }
            }
        });
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

/// One group of one image: per chunk of `MC` output positions, the
/// offset-free products `[wg.rows, chunk]` and the patch sums `[chunk]`.
fn group_products(
    isa: Isa,
    shape: &ConvShape,
    out_hw: [usize; 2],
    x_g: &[f32],
    wg: &PackedWeights,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let positions = out_hw[0] * out_hw[1];
    (0..positions.div_ceil(MC))
        .into_par_iter()
        .map_init(
            || vec![0.0f32; TILE_N * TILE_K],
            |tile, c| {
                let p0 = c * MC;
                let mc = MC.min(positions - p0);
                let (panels, sums) = patches(isa.panel_width(), shape, out_hw, x_g, p0..p0 + mc);
                let mut dots = Vec::with_capacity(wg.rows * mc);
                for r0 in (0..wg.rows).step_by(TILE_N) {
                    dots.extend(products(isa, wg, &panels, r0, tile));
                }
                (dots, sums)
            },
        )
        .collect()
}

/// Output channel `r` (row `t` of its group) over every position.
fn write_row(
    w: &PackedWeights,
    r: usize,
    t: usize,
    blocks: &[(Vec<f32>, Vec<f32>)],
    bias: Option<&[f32]>,
    y_r: &mut [f32],
) {
    for ((dots, sums), y_c) in blocks.iter().zip(y_r.chunks_mut(MC)) {
        let mc = y_c.len();
        for ((out, &dot), &sum) in y_c.iter_mut().zip(&dots[t * mc..]).zip(sums) {
            *out = output(w, r, dot, sum, bias);
        }
    }
}

/// The im2col columns of output positions `pos` as panels, and the sum of
/// each column (for the `loc · Σx` term), accumulated in f64.
fn patches(
    width: usize,
    shape: &ConvShape,
    [_, ow]: [usize; 2],
    x_g: &[f32],
    pos: std::ops::Range<usize>,
) -> (Panels, Vec<f32>) {
    let (c_g, [kh, kw]) = (shape.in_channels / shape.groups, shape.kernel);
    let (h, wd) = (shape.height as isize, shape.width as isize);
    let origin = |p: usize, a: usize| {
        let o = [p / ow, p % ow][a];
        (o * shape.stride[a]) as isize - shape.padding[a] as isize
    };
    let mc = pos.len();
    let panels = Panels::build(width, mc, shape.patch_len(), |p, panel| {
        for l in 0..width.min(mc - p * width) {
            let q = pos.start + p * width + l;
            let (y0, x0) = (origin(q, 0), origin(q, 1));
            let mut j = 0;
            for c in 0..c_g {
                let plane = &x_g[c * shape.height * shape.width..];
                for dy in 0..kh {
                    let iy = y0 + (dy * shape.dilation[0]) as isize;
                    for dx in 0..kw {
                        let ix = x0 + (dx * shape.dilation[1]) as isize;
                        if (0..h).contains(&iy) && (0..wd).contains(&ix) {
                            panel[j * width + l] = plane[(iy * wd + ix) as usize];
                        }
                        j += 1;
                    }
                }
            }
        }
    });
    let sums = (0..mc).map(|i| panels.column_sum(i)).collect();
    (panels, sums)
}

#[cfg(test)]
mod tests;
