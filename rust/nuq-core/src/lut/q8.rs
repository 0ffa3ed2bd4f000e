//! Int8-activation prefill, an opt-in approximation of the fp32 LUT matmul
//! for integer dot-product units (AVX512-VNNI `vpdpbusd`: 64 multiply-adds
//! per instruction where an fp32 FMA does 16).
//!
//! Both operands become bytes:
//! - the codebook, once per call: `levels[c] ≈ sl · lq[c]` with
//!   `sl = max|levels| / 127` and `lq[c] = round(levels[c] / sl)`, stored as
//!   the unsigned byte `lq[c] + 128` (the instruction multiplies u8 by s8);
//! - `x`, per row and per block of columns (the weight group, else
//!   [`BLOCK`]): `x ≈ sx · xq` with `sx = max|x| / 127`, `xq = round(x / sx)`.
//!
//! Per block the integer sum `Σ (lq + 128) · xq` is exact in i32; subtracting
//! `128 · Σ xq` (prefix sums of `xq`) leaves `Σ lq · xq`, which is scaled by
//! `scale · sl · sx` into an f32 accumulator. The offset term `loc · Σx` and
//! the bias stay exact. The error against the product with the dequantized
//! weights `loc + scale · levels[c]` is therefore at most, per output,
//! `Σ_j scale_j · (sx_j / 2 · |levels[c_j]| + (|x_j| + sx_j / 2) · sl / 2)`
//! plus f32 rounding; the tests check that bound.

use rayon::prelude::*;

use super::exec::Exec;
use super::output;
use super::tile::{prefetch_codes, MC, TILE_K, TILE_N};
use crate::error::{NuqError, Result};
use crate::pack::{self, packed_len};
use crate::weights::PackedWeights;

/// Rows of `x` per panel: two vectors of 16 i32 lanes.
pub(crate) const ROWS: usize = 32;
/// Columns sharing one activation scale when W has no groups.
pub const BLOCK: usize = 128;
/// Makes the weight bytes unsigned: `vpdpbusd` multiplies u8 by s8.
const OFFSET: i32 = 128;

/// The int8 kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Q8 {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Q8 {
    /// The VNNI kernel if this CPU has AVX-512 F, BW and VNNI.
    pub(crate) fn vnni() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
        {
            return Some(Q8::Vnni);
        }
        None
    }

    /// Adds the products of the `TILE_N` decoded weight rows with the `ROWS`
    /// rows of one panel over the quads `qa..qe` of a block (`xq` holds those
    /// quads, `[quad][ROWS][4]`), scaled by `f`, to `out` (`[TILE_N][m]`, the
    /// panel's rows at `i0`):
    /// `out[t, i0 + l] += (Σ_q tile[t, q] · xq[q, l] - corr[l]) · rs[l] · mult[t]`.
    fn panel(self, tile: &[u8], (qa, qe): (usize, usize), xq: &[i8], f: &Flush, out: Out) {
        assert!(qa <= qe && qe <= TILE_K / 4 && tile.len() >= TILE_N * TILE_K);
        assert!(xq.len() == (qe - qa) * ROWS * 4);
        assert!(out.i0 + ROWS <= out.m && out.data.len() >= TILE_N * out.m);
        match self {
            Q8::Scalar => panel_scalar(tile, (qa, qe), xq, f, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Q8::Vnni` only comes from `Q8::vnni`, which checked the
            // features; the asserts above prove the bounds the kernel relies on.
            Q8::Vnni => unsafe { super::x86_avx512_q8::panel(tile, (qa, qe), xq, f, out) },
        }
    }

    /// Decodes columns `k0..k1` of weight rows `r0..r0 + rows` into `tile`
    /// (`[TILE_N][TILE_K]` bytes `lq + 128`). Rows past `rows` and columns
    /// past `k1` (up to the quad) hold some valid byte: they meet zero
    /// activations or are never stored.
    fn decode_tile(
        self,
        w: &PackedWeights,
        rows: (usize, usize),
        cols: (usize, usize),
        table: &[u8; 256],
        tile: &mut [u8],
    ) {
        assert!(tile.len() >= TILE_N * TILE_K);
        assert!(rows.0 + rows.1 <= w.rows && rows.1 <= TILE_N);
        assert!(cols.0 <= cols.1 && cols.1 - cols.0 <= TILE_K && cols.1 <= w.cols);
        for (t, dst) in tile.chunks_exact_mut(TILE_K).take(TILE_N).enumerate() {
            let (k0, k1) = cols;
            if t >= rows.1 {
                dst.fill(OFFSET as u8);
                continue;
            }
            match self {
                Q8::Scalar => {
                    row_codes(w, rows.0 + t, cols, &mut dst[..k1 - k0]);
                    dst[..k1 - k0]
                        .iter_mut()
                        .for_each(|b| *b = table[usize::from(*b)]);
                }
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above; `dst` holds the row's `k1 - k0` columns.
                Q8::Vnni => unsafe {
                    super::x86_avx512_q8::decode_row(w, rows.0 + t, cols, table, dst)
                },
            }
            dst[k1 - k0..].fill(OFFSET as u8);
        }
    }
}

/// How one block's integer sums become floats: for panel row `l`,
/// `corr[l] = 128 · Σ xq` over the block and `rs[l]` its activation scale;
/// `mult[t]` is weight row `t`'s `scale · sl`.
pub(crate) struct Flush {
    pub corr: [i32; ROWS],
    pub rs: [f32; ROWS],
    pub mult: [f32; TILE_N],
}

/// The output of one tile task: `[TILE_N][m]` floats, of which a panel
/// writes columns `i0..i0 + ROWS`.
pub(crate) struct Out<'a> {
    pub data: &'a mut [f32],
    pub m: usize,
    pub i0: usize,
}

/// The rejection of a group size the int8 path cannot split into quads.
pub(crate) fn check(w: &PackedWeights) -> Result<()> {
    match w.group_size {
        Some(g) if !g.is_multiple_of(4) => Err(NuqError::Int8GroupSize(g)),
        _ => Ok(()),
    }
}

/// Writes `y ≈ x · Wᵀ + loc · Σx + bias` (row-major `[m, w.rows]`) through the
/// int8 kernels; `sumx[i]` is the exact sum of row `i` of `x`. `w` is valid and
/// passed [`check`].
pub(crate) fn run(
    (exec, kern): (Exec, Q8),
    x: &[f32],
    w: &PackedWeights,
    (sumx, bias): (&[f32], Option<&[f32]>),
    y: &mut [f32],
) {
    let (k, n) = (w.cols, w.rows);
    let block = w.group_size.unwrap_or(BLOCK);
    let book = Codebook::new(w.levels);
    exec.chunks(
        y,
        MC * n,
        || (),
        |_, c, y_chunk| {
            let i0 = c * MC;
            let rows = y_chunk.len() / n;
            let act = Activations::new(exec, &x[i0 * k..(i0 + rows) * k], rows, k, block);
            let blocks = exec.map(
                n.div_ceil(TILE_N),
                || vec![0u8; TILE_N * TILE_K],
                |tile, b| products(kern, w, (&act, &book), b * TILE_N, tile),
            );
            let m = act.padded_rows();
            exec.chunks(
                y_chunk,
                n,
                || (),
                |_, i, y_row| {
                    let sx = sumx[i0 + i];
                    for (b, block) in blocks.iter().enumerate() {
                        let r0 = b * TILE_N;
                        let outs = &mut y_row[r0..(r0 + TILE_N).min(n)];
                        for (t, out) in outs.iter_mut().enumerate() {
                            *out = output(w, r0 + t, block[t * m + i], sx, bias);
                        }
                    }
                },
            );
        },
    );
}

/// Offset-free products of weight rows `r0..r0 + TILE_N` (clipped to
/// `w.rows`) with every row of `act`: `[TILE_N, act.padded_rows()]`.
fn products(
    kern: Q8,
    w: &PackedWeights,
    (act, book): (&Activations, &Codebook),
    r0: usize,
    tile: &mut [u8],
) -> Vec<f32> {
    let rows = TILE_N.min(w.rows - r0);
    let m = act.padded_rows();
    let mut out = vec![0.0f32; TILE_N * m];
    let mut flush = Flush {
        corr: [0; ROWS],
        rs: [0.0; ROWS],
        mult: [0.0; TILE_N],
    };
    let groups = w.group_size.map(|g| (g, w.cols.div_ceil(g)));
    if groups.is_none() {
        for (t, mult) in flush.mult.iter_mut().enumerate().take(rows) {
            *mult = w.scale_of(r0 + t, 0) * book.sl;
        }
    }
    for k0 in (0..w.cols).step_by(TILE_K) {
        let k1 = (k0 + TILE_K).min(w.cols);
        kern.decode_tile(w, (r0, rows), (k0, k1), &book.bytes, tile);
        prefetch_codes(w, r0..r0 + rows, k0 + TILE_K);
        // Blocks of the activation scale (and of the weight groups): `a` and
        // `e` are multiples of 4 except `e == cols`, whose quad is zero-padded.
        let mut a = k0;
        while a < k1 {
            let (b, e) = (a / act.block, ((a / act.block + 1) * act.block).min(k1));
            if let Some((g, per_row)) = groups {
                let scales = &w.scale[r0 * per_row + a / g..];
                for (t, mult) in flush.mult.iter_mut().enumerate().take(rows) {
                    *mult = scales[t * per_row] * book.sl;
                }
            }
            let (qa, qe) = (a / 4, e.div_ceil(4));
            for p in 0..act.panels() {
                act.flush_terms(p, (qa, qe), b, &mut flush);
                let out_p = Out {
                    data: &mut out,
                    m,
                    i0: p * ROWS,
                };
                let tq = (qa - k0 / 4, qe - k0 / 4);
                kern.panel(tile, tq, act.panel(p, qa, qe), &flush, out_p);
            }
            a = e;
        }
    }
    out
}

/// Codes of columns `k0..k1` of weight row `r` into `out` (`k1 - k0` bytes).
pub(crate) fn row_codes(w: &PackedWeights, r: usize, (k0, k1): (usize, usize), out: &mut [u8]) {
    let off = k0 * w.bits as usize / 8;
    pack::unpack(
        &w.row(r)[off..off + packed_len(k1 - k0, w.bits)],
        w.bits,
        out,
    );
}

/// The codebook as bytes: `levels[c] ≈ sl · (bytes[c] - 128)`.
struct Codebook {
    bytes: [u8; 256],
    sl: f32,
}

impl Codebook {
    fn new(levels: &[f32]) -> Self {
        let amax = levels.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        let sl = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        let mut bytes = [OFFSET as u8; 256];
        for (b, &v) in bytes.iter_mut().zip(levels) {
            *b = ((v / sl).round().clamp(-127.0, 127.0) as i32 + OFFSET) as u8;
        }
        Codebook { bytes, sl }
    }
}

/// Rows of `x` as int8 panels of `ROWS` rows, with per-block scales; every
/// array is zero past the last row and column.
struct Activations {
    rows: usize,
    quads: usize,
    blocks: usize,
    block: usize,
    /// `[panel][quad][ROWS][4]`.
    xq: Vec<i8>,
    /// `[panel][block][ROWS]`.
    scales: Vec<f32>,
    /// `[panel][quad + 1][ROWS]`: Σ `xq` over the first `q` quads.
    prefix: Vec<i32>,
}

impl Activations {
    /// Quantizes the row-major `[rows, k]` matrix `x` in blocks of `block`
    /// columns (a multiple of 4).
    fn new(exec: Exec, x: &[f32], rows: usize, k: usize, block: usize) -> Self {
        let (quads, blocks) = (k.div_ceil(4), k.div_ceil(block));
        let panels = rows.div_ceil(ROWS);
        let mut xq = vec![0i8; panels * quads * ROWS * 4];
        let mut scales = vec![0.0f32; panels * blocks * ROWS];
        let mut prefix = vec![0i32; panels * (quads + 1) * ROWS];
        let fill = |p: usize, ((panel, sc), pre): ((&mut [i8], &mut [f32]), &mut [i32])| {
            let first = p * ROWS;
            let own = &x[first * k..rows.min(first + ROWS) * k];
            for (l, row) in own.chunks_exact(k).enumerate() {
                quantize_row(
                    row,
                    block,
                    |b, s| sc[b * ROWS + l] = s,
                    |j, v| {
                        panel[((j / 4) * ROWS + l) * 4 + j % 4] = v;
                        pre[(j / 4 + 1) * ROWS + l] += i32::from(v);
                    },
                );
            }
            for q in 0..quads {
                for l in 0..ROWS {
                    pre[(q + 1) * ROWS + l] += pre[q * ROWS + l];
                }
            }
        };
        let sizes = (quads * ROWS * 4, blocks * ROWS, (quads + 1) * ROWS);
        if k > 0 {
            match exec {
                Exec::Serial => xq
                    .chunks_mut(sizes.0)
                    .zip(scales.chunks_mut(sizes.1))
                    .zip(prefix.chunks_mut(sizes.2))
                    .enumerate()
                    .for_each(|(p, bufs)| fill(p, bufs)),
                Exec::Rayon => xq
                    .par_chunks_mut(sizes.0)
                    .zip(scales.par_chunks_mut(sizes.1))
                    .zip(prefix.par_chunks_mut(sizes.2))
                    .enumerate()
                    .for_each(|(p, bufs)| fill(p, bufs)),
            }
        }
        Activations {
            rows,
            quads,
            blocks,
            block,
            xq,
            scales,
            prefix,
        }
    }

    fn panels(&self) -> usize {
        self.rows.div_ceil(ROWS)
    }

    /// Rows including the zero padding of the last panel.
    fn padded_rows(&self) -> usize {
        self.panels() * ROWS
    }

    /// Quads `qa..qe` of panel `p`.
    fn panel(&self, p: usize, qa: usize, qe: usize) -> &[i8] {
        let base = p * self.quads;
        &self.xq[(base + qa) * ROWS * 4..(base + qe) * ROWS * 4]
    }

    /// Sets `f.corr` and `f.rs` for panel `p`, quads `qa..qe` of block `b`.
    fn flush_terms(&self, p: usize, (qa, qe): (usize, usize), b: usize, f: &mut Flush) {
        let pre = &self.prefix[p * (self.quads + 1) * ROWS..];
        let (lo, hi) = (&pre[qa * ROWS..][..ROWS], &pre[qe * ROWS..][..ROWS]);
        for ((c, &h), &l) in f.corr.iter_mut().zip(hi).zip(lo) {
            *c = OFFSET * (h - l);
        }
        f.rs.copy_from_slice(&self.scales[(p * self.blocks + b) * ROWS..][..ROWS]);
    }
}

/// Quantizes one row block by block: `scale(b, max|x| / 127)` over block
/// `b`, and `put(j, round(x[j] / scale))` for every column. A block holding
/// NaN or infinity gets that scale and zero codes, so the output is not
/// finite, as the fp32 path's would be.
fn quantize_row(
    row: &[f32],
    block: usize,
    mut scale: impl FnMut(usize, f32),
    mut put: impl FnMut(usize, i8),
) {
    for (b, vals) in row.chunks(block).enumerate() {
        let amax = vals.iter().fold(0.0f32, |a, &v| {
            if v.abs() > a || v.is_nan() {
                v.abs()
            } else {
                a
            }
        });
        scale(b, amax / 127.0);
        let inv = if amax > 0.0 && amax.is_finite() {
            127.0 / amax
        } else {
            0.0
        };
        for (j, &v) in vals.iter().enumerate() {
            put(b * block + j, (v * inv).round().clamp(-127.0, 127.0) as i8);
        }
    }
}

/// Scalar reference of [`Q8::panel`]: the same integer sums, and the same f32
/// operations in the same order, as the VNNI kernel.
fn panel_scalar(tile: &[u8], (qa, qe): (usize, usize), xq: &[i8], f: &Flush, out: Out) {
    for (t, &mult) in f.mult.iter().enumerate() {
        let wrow = &tile[t * TILE_K + qa * 4..t * TILE_K + qe * 4];
        let mut acc = [0i32; ROWS];
        for (wq, xs) in wrow.chunks_exact(4).zip(xq.chunks_exact(ROWS * 4)) {
            for (a, xl) in acc.iter_mut().zip(xs.chunks_exact(4)) {
                *a += wq
                    .iter()
                    .zip(xl)
                    .map(|(&u, &v)| i32::from(u) * i32::from(v))
                    .sum::<i32>();
            }
        }
        let dst = &mut out.data[t * out.m + out.i0..][..ROWS];
        for (l, (d, &a)) in dst.iter_mut().zip(&acc).enumerate() {
            *d = ((a - f.corr[l]) as f32).mul_add(f.rs[l] * mult, *d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codebook_bytes_round_levels_to_127_steps() {
        let book = Codebook::new(&[-2.0, -0.5, 0.5, 2.0]);
        assert_eq!(book.sl, 2.0 / 127.0);
        assert_eq!(&book.bytes[..4], &[1, 96, 160, 255]);
        // Unused codes map to level 0; an all-zero codebook keeps sl finite.
        assert_eq!(book.bytes[4], 128);
        assert_eq!(Codebook::new(&[0.0, 0.0]).sl, 1.0);
    }

    #[test]
    fn activations_interleave_rows_and_keep_exact_quad_sums() {
        // 2 rows of 6 columns, blocks of 4: row 0 block 0 has max 127.
        let x = [
            127.0, -1.0, 2.0, 3.0, 0.5, -0.25, //
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        let act = Activations::new(Exec::Serial, &x, 2, 6, 4);
        let terms = |qa, qe, b| {
            let mut f = Flush {
                corr: [0; ROWS],
                rs: [0.0; ROWS],
                mult: [0.0; TILE_N],
            };
            act.flush_terms(0, (qa, qe), b, &mut f);
            (f.corr, f.rs)
        };
        let (corr, rs) = terms(0, 1, 0);
        assert_eq!(rs[..3], [1.0, 0.0, 0.0]);
        assert_eq!(corr[..2], [OFFSET * (127 - 1 + 2 + 3), 0]);
        let (corr, rs) = terms(1, 2, 1);
        assert_eq!(rs[0], 0.5 / 127.0);
        // 0.5 -> 127, -0.25 -> round(-63.5) = -64, then padding.
        assert_eq!(corr[0], OFFSET * 63);
        // Quad 0 of panel 0: row 0's first 4 columns, then row 1's.
        assert_eq!(&act.panel(0, 0, 1)[..8], &[127, -1, 2, 3, 0, 0, 0, 0]);
        assert_eq!(&act.panel(0, 1, 2)[..4], &[127, -64, 0, 0]);
    }

    #[test]
    fn non_finite_blocks_get_a_non_finite_scale() {
        let act = Activations::new(Exec::Serial, &[1.0, f32::NAN, 2.0, 3.0, 1.0, 1.0], 1, 6, 4);
        let mut f = Flush {
            corr: [0; ROWS],
            rs: [0.0; ROWS],
            mult: [0.0; TILE_N],
        };
        act.flush_terms(0, (0, 1), 0, &mut f);
        assert!(f.rs[0].is_nan());
        assert_eq!(f.corr[0], 0);
        act.flush_terms(0, (1, 2), 1, &mut f);
        assert_eq!(f.rs[0], 1.0 / 127.0);
    }
}
