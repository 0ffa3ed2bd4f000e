//! Convolutions with one input channel per group (depthwise, with any channel
//! multiplier): each output plane reads one input plane through `kh · kw`
//! taps, far too few columns for a matmul tile. Each task owns one output
//! plane: it decodes that channel's taps (one weight row, `kh · kw` floats)
//! and, output row by output row, adds each tap times the input row segment
//! that lies inside the image (padding adds nothing, so it is skipped).
//!
//! Every output element is written by one task, in a fixed order (bias, then
//! the taps in weight order), so results do not depend on the thread count.

use rayon::prelude::*;

use super::ConvShape;
use crate::lut::{decode_row, Kernel};
use crate::weights::PackedWeights;

/// Whether this driver serves `shape`: one input channel per group.
pub(super) fn applies(shape: &ConvShape) -> bool {
    shape.groups == shape.in_channels
}

/// Writes `y` (`[batch, w.rows, oh, ow]`); the geometry and every length
/// were checked by the caller.
pub(super) fn run(
    kernel: Kernel,
    shape: &ConvShape,
    [oh, ow]: [usize; 2],
    (x, w, bias): (&[f32], &PackedWeights, Option<&[f32]>),
    y: &mut [f32],
) {
    let plane = shape.height * shape.width;
    let per_out = w.rows / shape.groups;
    y.par_chunks_mut(oh * ow).enumerate().for_each_init(
        || vec![0.0f32; w.cols],
        |taps, (i, out)| {
            let (b, r) = (i / w.rows, i % w.rows);
            decode_row(kernel, w, r, taps);
            out.fill(bias.map_or(0.0, |v| v[r]));
            let c = r / per_out;
            let src = &x[(b * shape.in_channels + c) * plane..][..plane];
            for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
                add_taps(shape, oy, src, taps, out_row);
            }
        },
    );
}

/// Adds every tap's contribution to output row `oy`.
fn add_taps(shape: &ConvShape, oy: usize, src: &[f32], taps: &[f32], out: &mut [f32]) {
    let (h, width) = (shape.height, shape.width);
    let [kh, kw] = shape.kernel;
    let step = shape.stride[1];
    for ky in 0..kh {
        // A row in the padding wraps to a huge value: one compare.
        let iy = (oy * shape.stride[0] + ky * shape.dilation[0]).wrapping_sub(shape.padding[0]);
        if iy >= h {
            continue;
        }
        let row = &src[iy * width..][..width];
        for kx in 0..kw {
            let t = taps[ky * kw + kx];
            let offset = (kx * shape.dilation[1]) as isize - shape.padding[1] as isize;
            let (lo, hi) = inside(offset, step, width, out.len());
            if lo >= hi {
                continue;
            }
            // Output column `ox` reads input column `ox * step + offset`.
            let first = (lo * step) as isize + offset;
            let dst = &mut out[lo..hi];
            if step == 1 {
                let seg = &row[first as usize..][..dst.len()];
                for (d, &v) in dst.iter_mut().zip(seg) {
                    *d += t * v;
                }
            } else {
                let seg = row[first as usize..].iter().step_by(step);
                for (d, &v) in dst.iter_mut().zip(seg) {
                    *d += t * v;
                }
            }
        }
    }
}

/// The output columns `lo..hi` (of `ow`) whose input column
/// `ox · step + offset` lies in `0..width`.
fn inside(offset: isize, step: usize, width: usize, ow: usize) -> (usize, usize) {
    let step = step as isize;
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + step - 1) / step
    };
    let last = width as isize - 1 - offset;
    let hi = if last < 0 { 0 } else { last / step + 1 };
    ((lo as usize).min(ow), (hi as usize).min(ow))
}

#[cfg(test)]
mod tests {
    use super::inside;

    /// The range is exactly the columns a direct scan finds inside the image.
    #[test]
    fn inside_is_the_direct_scan() {
        for width in 1..9usize {
            for ow in 0..10usize {
                for step in 1..4usize {
                    for offset in -5isize..6 {
                        let want: Vec<usize> = (0..ow)
                            .filter(|&o| {
                                (0..width as isize).contains(&(o as isize * step as isize + offset))
                            })
                            .collect();
                        let (lo, hi) = inside(offset, step, width, ow);
                        let got: Vec<usize> = (lo..hi.max(lo)).collect();
                        assert_eq!(
                            got, want,
                            "width {width} ow {ow} step {step} offset {offset}"
                        );
                    }
                }
            }
        }
    }
}
