//! Prefill driver (`m > 16`): compute-bound, so W is decoded tile by tile into
//! a small f32 buffer that stays in cache, and an outer-product micro-kernel
//! runs every row of `x` against it.
//!
//! `x` is repacked once per chunk of `MC` rows into panels (`Panels`): `width`
//! rows of `x` interleaved along `k`, so the kernel loads a whole vector of
//! rows at each `k` and broadcasts one decoded weight against it. Tasks are
//! (chunk of `x` rows, tile of weight rows) pairs, so both a tall `x`
//! (im2col) and a wide `W` (LLM layers) spread over the cores.

use super::exec::Exec;
use super::kernel::{Isa, PanelArgs};
use super::output;
use crate::weights::PackedWeights;

/// Rows of `x` per chunk: a multiple of every panel width.
pub(super) const MC: usize = 256;
/// Weight rows per tile: a multiple of every kernel's register tile (12, 6, 4).
pub(crate) const TILE_N: usize = 48;
/// Columns per tile: a decoded tile is `TILE_N * TILE_K` floats (48 KiB, in
/// L2), a panel slice `TILE_K * width` floats (at most 32 KiB: streamed from
/// L2 on a 32 KiB L1d; `TILE_K` 128 and 64 measured no faster).
pub(crate) const TILE_K: usize = 256;
/// Rows of `y` per output task.
const OUT_ROWS: usize = 8;

/// Writes `y = x · Wᵀ + loc · Σx + bias` (row-major `[m, w.rows]`);
/// `sumx[i]` is the sum of row `i` of `x`.
pub(crate) fn run(
    (exec, isa): (Exec, Isa),
    x: &[f32],
    w: &PackedWeights,
    (sumx, bias): (&[f32], Option<&[f32]>),
    y: &mut [f32],
) {
    let (k, n) = (w.cols, w.rows);
    exec.chunks(
        y,
        MC * n,
        || (),
        |_, c, y_chunk| {
            let i0 = c * MC;
            let rows = y_chunk.len() / n;
            let x_chunk = &x[i0 * k..(i0 + rows) * k];
            let panels = Panels::pack(exec, isa.panel_width(), x_chunk, rows, k);
            let blocks = exec.map(
                n.div_ceil(TILE_N),
                || vec![0.0f32; TILE_N * TILE_K],
                |tile, b| products(isa, w, &panels, b * TILE_N, tile),
            );
            // Block-major within a few rows of y: the `TILE_N` lines of a
            // block that a row reads are still in L1 for the next rows.
            exec.chunks(
                y_chunk,
                OUT_ROWS * n,
                || (),
                |_, c, y_rows| {
                    let first = c * OUT_ROWS;
                    for (b, block) in blocks.iter().enumerate() {
                        let r0 = b * TILE_N;
                        for (di, y_row) in y_rows.chunks_exact_mut(n).enumerate() {
                            let (i, sx) = (first + di, sumx[i0 + first + di]);
                            let outs = &mut y_row[r0..r0 + block.len() / rows];
                            for (t, out) in outs.iter_mut().enumerate() {
                                *out = output(w, r0 + t, block[t * rows + i], sx, bias);
                            }
                        }
                    }
                },
            );
        },
    );
}

/// Offset-free dot products of weight rows `r0..r0 + TILE_N` (clipped to
/// `w.rows`) with every row of the chunk: `[tile rows, panels.m]`.
pub(super) fn products(
    isa: Isa,
    w: &PackedWeights,
    panels: &Panels,
    r0: usize,
    tile: &mut [f32],
) -> Vec<f32> {
    let rows = TILE_N.min(w.rows - r0);
    let mut out = vec![0.0f32; rows * panels.m];
    for k0 in (0..w.cols).step_by(TILE_K) {
        let klen = TILE_K.min(w.cols - k0);
        for t in 0..rows {
            isa.decode_row(w, r0 + t, k0, &mut tile[t * TILE_K..t * TILE_K + klen]);
        }
        prefetch_codes(w, r0..r0 + rows, k0 + TILE_K);
        for p in 0..panels.count() {
            let args = PanelArgs {
                xp: panels.slice(p, k0, klen),
                klen,
                tile,
                rows,
                m: panels.m,
                i0: p * panels.width,
                mlen: panels.width.min(panels.m - p * panels.width),
            };
            isa.gemm_panel(&args, &mut out);
        }
    }
    out
}

/// Asks for the packed codes (and group scales) of columns `k0..k0 + TILE_K`
/// of weight rows `rows`, to be decoded next. Rows are `row_bytes` apart, so
/// the hardware prefetcher does not follow them from one tile to the next;
/// without this, decoding a row's first line waits on memory (most of the
/// decode's `perf` samples sat on that load).
pub(super) fn prefetch_codes(w: &PackedWeights, rows: std::ops::Range<usize>, k0: usize) {
    #[cfg(target_arch = "x86_64")]
    if k0 < w.cols {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let (stride, bits) = (w.row_bytes(), w.bits as usize);
        let (b0, b1) = (k0 * bits / 8, (k0 + TILE_K).min(w.cols) * bits / 8);
        let groups = w.group_size.map(|g| (w.cols.div_ceil(g), g));
        for r in rows {
            let row = w.packed.as_ptr().wrapping_add(r * stride);
            for b in (b0..=b1).step_by(64) {
                // SAFETY: SSE is part of the x86-64 baseline, and a prefetch
                // never faults, so the address may run past the row.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(b).cast()) };
            }
            if let Some((per_row, g)) = groups {
                let s = w.scale.as_ptr().wrapping_add(r * per_row + k0 / g);
                // SAFETY: as above.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(s.cast()) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, rows, k0);
}

/// Rows of `x` regrouped by `width`: panel `p` holds rows
/// `p * width..(p + 1) * width` interleaved along `k` (element `(k, l)` at
/// `k * width + l`), zero past the last row.
pub(super) struct Panels {
    pub width: usize,
    pub m: usize,
    k: usize,
    data: Vec<f32>,
}

impl Panels {
    /// Panels of `m` rows of `k` values, each filled (as a task of `exec`) by
    /// `fill(p, panel)` on a zeroed `[k, width]` buffer. `data` is recycled
    /// storage (see [`Panels::into_data`]), so repeated calls skip the
    /// allocator and its page faults.
    pub(super) fn build<F>(
        exec: Exec,
        (width, m, k): (usize, usize, usize),
        mut data: Vec<f32>,
        fill: F,
    ) -> Self
    where
        F: Fn(usize, &mut [f32]) + Sync + Send,
    {
        data.clear();
        data.resize(m.div_ceil(width) * k * width, 0.0);
        if k > 0 {
            exec.chunks(&mut data, k * width, || (), |_, p, panel| fill(p, panel));
        }
        Panels { width, m, k, data }
    }

    /// Panels of the row-major `[m, k]` matrix `x`.
    fn pack(exec: Exec, width: usize, x: &[f32], m: usize, k: usize) -> Self {
        Self::build(exec, (width, m, k), Vec::new(), |p, panel| {
            let rows = &x[p * width * k..m.min((p + 1) * width) * k];
            for (l, row) in rows.chunks_exact(k).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    panel[j * width + l] = v;
                }
            }
        })
    }

    /// Σ over `k` of every row (the `loc · Σx` term of a convolution's
    /// patches), accumulated in f64.
    pub(super) fn row_sums(&self) -> Vec<f32> {
        let mut sums = Vec::with_capacity(self.count() * self.width);
        for panel in self.data.chunks_exact((self.k * self.width).max(1)) {
            let mut acc = vec![0.0f64; self.width];
            for step in panel.chunks_exact(self.width) {
                acc.iter_mut()
                    .zip(step)
                    .for_each(|(a, &v)| *a += f64::from(v));
            }
            sums.extend(acc.iter().map(|&a| a as f32));
        }
        sums.resize(self.m, 0.0);
        sums
    }

    /// Every panel, one after the other.
    pub(super) fn data(&self) -> &[f32] {
        &self.data
    }

    /// The storage, for the next [`Panels::build`].
    pub(super) fn into_data(self) -> Vec<f32> {
        self.data
    }

    pub(super) fn count(&self) -> usize {
        self.m.div_ceil(self.width)
    }

    /// Columns `k0..k0 + klen` of panel `p`.
    fn slice(&self, p: usize, k0: usize, klen: usize) -> &[f32] {
        let start = (p * self.k + k0) * self.width;
        &self.data[start..start + klen * self.width]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_interleave_rows_and_zero_pad() {
        // x: 3 rows of 2 columns, panel width 2 -> 2 panels, the last half empty.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let p = Panels::pack(Exec::Serial, 2, &x, 3, 2);
        assert_eq!(p.count(), 2);
        assert_eq!(p.slice(0, 0, 2), &[1.0, 3.0, 2.0, 4.0]);
        assert_eq!(p.slice(1, 0, 2), &[5.0, 0.0, 6.0, 0.0]);
        assert_eq!(p.slice(1, 1, 1), &[6.0, 0.0]);
    }
}
