//! Prefill through the `gemm` crate ([`super::Prefill::Gemm`]): a tile of
//! `ROWS` weight rows by `DEPTH` columns is decoded to f32 with the kernels'
//! `decode_row` (offset-free: `scale · level`) and multiplied by `gemm::gemm`,
//! accumulating over the tiles along `k`; the `loc · Σx` and bias terms are
//! added once at the end, as the micro-kernel driver (`tile`) does.
//!
//! The decoded tile is at most `ROWS · DEPTH` floats (256 KiB) per task,
//! whatever the shape: a quarter of a 1 MiB L2, so it stays in L2 while gemm
//! packs it into its own L2-sized buffer, beside the slice of `x` it streams.
//!
//! Rayon owns the threads (gemm runs with `Parallelism::None`). Tasks are
//! (chunk of rows of `x`, block of weight rows) pairs fixed by the shape, and
//! each output element is written by one task in a fixed order of tiles, so
//! results are bit-identical for any thread count.

use gemm::Parallelism;

use super::exec::Exec;
use super::kernel::Isa;
use super::output;
use super::tile::Panels;
use crate::weights::PackedWeights;

/// Weight rows per decoded tile.
pub(super) const ROWS: usize = 128;
/// Columns per decoded tile: a multiple of 8, so every tile starts on a byte
/// boundary of the packed codes at any width.
pub(super) const DEPTH: usize = 512;
/// Rows of `x` per task of [`linear`]; the tile is decoded once per chunk.
const CHUNK: usize = 512;

/// A read-only matrix: element `(i, j)` at `ptr + i · rs + j · cs`.
#[derive(Clone, Copy)]
pub(super) struct Mat {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

/// A writable matrix, addressed like [`Mat`].
#[derive(Clone, Copy)]
pub(super) struct MatMut {
    pub ptr: *mut f32,
    pub rs: usize,
    pub cs: usize,
}

impl MatMut {
    /// The matrix whose `(0, 0)` is this one's `(i, j)`, with strides swapped
    /// when `transpose` (a method, so closures capture the whole `MatMut`).
    fn view(self, (i, j): (usize, usize), transpose: bool) -> Self {
        let ptr = self.ptr.wrapping_add(i * self.rs + j * self.cs);
        let (rs, cs) = if transpose {
            (self.cs, self.rs)
        } else {
            (self.rs, self.cs)
        };
        MatMut { ptr, rs, cs }
    }
}

// SAFETY: a `MatMut` is only dereferenced by the task that owns the elements
// it addresses (see `linear`); tasks write disjoint elements.
unsafe impl Send for MatMut {}
// SAFETY: as above.
unsafe impl Sync for MatMut {}

/// Writes `y = x · Wᵀ + loc · Σx + bias` (row-major `[m, w.rows]`);
/// `sumx[i]` is the sum of row `i` of `x`.
pub(super) fn linear(
    (exec, isa): (Exec, Isa),
    x: &[f32],
    w: &PackedWeights,
    (sumx, bias): (&[f32], Option<&[f32]>),
    y: &mut [f32],
) {
    let (k, n) = (w.cols, w.rows);
    let m = y.len() / n;
    let blocks = n.div_ceil(ROWS);
    let out = MatMut {
        ptr: y.as_mut_ptr(),
        rs: n,
        cs: 1,
    };
    let tasks = m.div_ceil(CHUNK) * blocks;
    exec.map(tasks, Vec::new, |tile, task| {
        let (i0, r0) = (task / blocks * CHUNK, task % blocks * ROWS);
        let (mc, rows) = (CHUNK.min(m - i0), ROWS.min(n - r0));
        let xs = Mat {
            ptr: x[i0 * k..].as_ptr(),
            rs: k,
            cs: 1,
        };
        // Output (t, i) of the block is y[i0 + i, r0 + t].
        let d = out.view((i0, r0), true);
        // SAFETY: `x` holds `m · k` floats (checked by the caller), so
        // rows `i0..i0 + mc` are readable; task `(i0, r0)` alone touches
        // the rows `i0..i0 + mc` and columns `r0..r0 + rows` of `y`
        // (`m · n` floats), and `y` is not used otherwise meanwhile.
        unsafe {
            products(isa, w, (r0, rows), (xs, mc), d, tile);
            for i in 0..mc {
                let yi = d.ptr.add(i * n);
                for t in 0..rows {
                    let v = yi.add(t);
                    *v = output(w, r0 + t, *v, sumx[i0 + i], bias);
                }
            }
        }
    });
}

/// `d[t, i] = Σ_j scale · levels[code(r0 + t, j)] · xs[i, j]` for `t < rows`
/// and `i < m` (`j < w.cols`), tile by tile along `j`, in the reusable
/// buffer `tile`.
///
/// # Safety
/// `xs` must address `m x w.cols` readable floats and `d` `rows x m`
/// writable ones that nothing else reads or writes during the call;
/// `r0 + rows <= w.rows` and `rows <= ROWS`.
pub(super) unsafe fn products(
    isa: Isa,
    w: &PackedWeights,
    (r0, rows): (usize, usize),
    (xs, m): (Mat, usize),
    d: MatMut,
    tile: &mut Vec<f32>,
) {
    if m == 0 || rows == 0 {
        return;
    }
    if w.cols == 0 {
        for (t, i) in (0..rows).flat_map(|t| (0..m).map(move |i| (t, i))) {
            // SAFETY: inside the `rows x m` matrix the caller provides.
            unsafe { *d.ptr.add(t * d.rs + i * d.cs) = 0.0 };
        }
        return;
    }
    tile.resize(ROWS * DEPTH, 0.0);
    for k0 in (0..w.cols).step_by(DEPTH) {
        let klen = DEPTH.min(w.cols - k0);
        for t in 0..rows {
            isa.decode_row(w, r0 + t, k0, &mut tile[t * klen..(t + 1) * klen]);
        }
        // SAFETY: `tile` holds `rows x klen` floats at row stride `klen`;
        // columns `k0..k0 + klen` of `xs` and all of `d` are in the bounds
        // the caller promised. `d` is read only from the second tile on,
        // after the first one wrote it.
        unsafe {
            gemm::gemm(
                rows,
                m,
                klen,
                d.ptr,
                d.cs as isize,
                d.rs as isize,
                k0 > 0,
                tile.as_ptr(),
                1,
                klen as isize,
                xs.ptr.add(k0 * xs.cs),
                xs.rs as isize,
                xs.cs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    }
}

/// The offset-free products `[w.rows, panels.m]` of every weight row with
/// the rows of `panels` built as one panel (`width == m`: row `i` of `x` is
/// column `i` of a row-major `[k, m]` matrix), as `tile::products` gives them
/// for the micro-kernel.
pub(super) fn panel_products(
    isa: Isa,
    w: &PackedWeights,
    panels: &Panels,
    tile: &mut Vec<f32>,
) -> Vec<f32> {
    let m = panels.m;
    assert!(panels.count() <= 1 && panels.width == m.max(1));
    assert_eq!(panels.data().len(), m * w.cols);
    let mut dots = vec![0.0f32; w.rows * m];
    let xs = Mat {
        ptr: panels.data().as_ptr(),
        rs: 1,
        cs: m,
    };
    for (b, block) in dots.chunks_mut(ROWS * m.max(1)).enumerate() {
        let d = MatMut {
            ptr: block.as_mut_ptr(),
            rs: m,
            cs: 1,
        };
        let rows = ROWS.min(w.rows - b * ROWS);
        // SAFETY: the asserts above: `xs` is `m x w.cols` inside the panel;
        // `block` is `rows x m` and owned here.
        unsafe { products(isa, w, (b * ROWS, rows), (xs, m), d, tile) };
    }
    dots
}
