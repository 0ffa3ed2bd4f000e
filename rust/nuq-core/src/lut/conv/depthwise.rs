//! Convolutions with one input channel per group (depthwise, with any channel
//! multiplier): each output plane reads one input plane through `kh · kw`
//! taps, far too few columns for a matmul tile. Each task owns one output
//! plane: it decodes that channel's taps (one weight row, `kh · kw` floats)
//! and, output row by output row, adds each tap times the input row segment
//! that lies inside the image (padding adds nothing, so it is skipped).
//!
//! Every output element is written by one task, in a fixed order (bias, then
//! the taps in weight order), so results do not depend on the thread count.

use super::ConvShape;
use crate::lut::exec::Exec;
use crate::lut::{decode_row, Kernel};
use crate::weights::PackedWeights;

/// Whether this driver serves `shape`: one input channel per group.
pub(super) fn applies(shape: &ConvShape) -> bool {
    shape.groups == shape.in_channels
}

/// Writes `y` (`[batch, w.rows, oh, ow]`); the geometry and every length
/// were checked by the caller.
pub(super) fn run(
    (exec, kernel): (Exec, Kernel),
    shape: &ConvShape,
    [oh, ow]: [usize; 2],
    (x, w, bias): (&[f32], &PackedWeights, Option<&[f32]>),
    y: &mut [f32],
) {
    let plane = shape.height * shape.width;
    let per_out = w.rows / shape.groups;
    // Per tap column: the output columns that read inside the image, and
    // the input column of the first (the same for every row and plane).
    let spans: Vec<Span> = (0..shape.kernel[1])
        .map(|kx| Span::of(shape, kx, ow))
        .collect();
    exec.chunks(
        y,
        oh * ow,
        || vec![0.0f32; w.cols],
        |taps, i, out| {
            let (b, r) = (i / w.rows, i % w.rows);
            decode_row(kernel, w, r, taps);
            out.fill(bias.map_or(0.0, |v| v[r]));
            let c = r / per_out;
            let src = &x[(b * shape.in_channels + c) * plane..][..plane];
            for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
                add_taps(shape, oy, src, (taps, &spans), out_row);
            }
        },
    );
}

/// Output columns `lo..hi` read input columns `first`, `first + step`, ...
/// of one tap column, all inside the image.
struct Span {
    lo: usize,
    hi: usize,
    first: usize,
}

impl Span {
    fn of(shape: &ConvShape, kx: usize, ow: usize) -> Span {
        let step = shape.stride[1];
        let offset = (kx * shape.dilation[1]) as isize - shape.padding[1] as isize;
        let (lo, hi) = inside(offset, step, shape.width, ow);
        // Only read when lo < hi, and then the first column is inside.
        let first = ((lo * step) as isize + offset).max(0) as usize;
        Span { lo, hi, first }
    }
}

/// Adds every tap's contribution to output row `oy`.
fn add_taps(
    shape: &ConvShape,
    oy: usize,
    src: &[f32],
    (taps, spans): (&[f32], &[Span]),
    out: &mut [f32],
) {
    let (h, width) = (shape.height, shape.width);
    let step = shape.stride[1];
    for (ky, row_taps) in taps.chunks_exact(spans.len()).enumerate() {
        // A row in the padding wraps to a huge value: one compare.
        let iy = (oy * shape.stride[0] + ky * shape.dilation[0]).wrapping_sub(shape.padding[0]);
        if iy >= h {
            continue;
        }
        let row = &src[iy * width..][..width];
        for (&t, span) in row_taps.iter().zip(spans) {
            if span.lo >= span.hi {
                continue;
            }
            let dst = &mut out[span.lo..span.hi];
            if step == 1 {
                let seg = &row[span.first..][..dst.len()];
                for (d, &v) in dst.iter_mut().zip(seg) {
                    *d += t * v;
                }
            } else {
                let seg = row[span.first..].iter().step_by(step);
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
