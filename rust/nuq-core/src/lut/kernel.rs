//! Run-time choice of the instruction set, and the dispatch of the three kernel
//! primitives every architecture provides.

use std::sync::OnceLock;

use super::tile::TILE_K;

use crate::weights::PackedWeights;

/// Instruction sets with a kernel file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// A kernel family that this CPU can run. The only constructors check the CPU,
/// so holding a `Kernel` proves its instructions are available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel(Isa);

impl Kernel {
    /// Portable scalar kernels, always available.
    pub fn scalar() -> Self {
        Kernel(Isa::Scalar)
    }

    /// AVX2 + FMA kernels, if this CPU has them.
    pub fn avx2() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(Kernel(Isa::Avx2));
        }
        None
    }

    /// AVX-512F kernels, if this CPU has them.
    pub fn avx512() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            return Some(Kernel(Isa::Avx512));
        }
        None
    }

    /// The kernel called `name` ("scalar", "avx2", "avx512") if available.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "scalar" => Some(Self::scalar()),
            "avx2" => Self::avx2(),
            "avx512" => Self::avx512(),
            _ => None,
        }
    }

    /// The name accepted by [`Kernel::from_name`].
    pub fn name(self) -> &'static str {
        match self.0 {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
        }
    }

    /// Every kernel this CPU can run, slowest first.
    pub fn available() -> Vec<Self> {
        [Some(Self::scalar()), Self::avx2(), Self::avx512()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The kernel of the instruction set selected for the whole crate
    /// (`crate::pack::Kernel::selected`: the fastest, or the one `NUQ_ISA`
    /// names).
    pub fn detect() -> Self {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| Self::for_isa(crate::pack::Kernel::selected()))
    }

    /// The LUT kernel of the instruction set `isa`, or the best one below it
    /// that this CPU runs (AVX2 also needs FMA here).
    pub fn for_isa(isa: crate::pack::Kernel) -> Self {
        Self::available()
            .into_iter()
            .rev()
            .find(|k| crate::pack::Kernel::from_name(k.name()).is_some_and(|p| p <= isa))
            .unwrap_or(Self::scalar())
    }

    pub(crate) fn isa(self) -> Isa {
        self.0
    }
}

impl Isa {
    /// `out[i] = Σ_j x[i, j] · scale · levels[code(r, j)]` for the `out.len()`
    /// rows of `x` (row-major, `w.cols` wide): the offset-free dot products of
    /// weight row `r`.
    pub(crate) fn dot_rows(self, w: &PackedWeights, r: usize, x: &[f32], out: &mut [f32]) {
        match self {
            Isa::Scalar => super::scalar::dot_rows(w, r, x, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an `Isa::Avx2` only exists inside a `Kernel` built by
            // `Kernel::avx2`, which checked AVX2 and FMA on this CPU.
            Isa::Avx2 => unsafe { super::x86_avx2::dot_rows(w, r, x, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx512` only comes from `Kernel::avx512`, which
            // checked AVX-512F on this CPU.
            Isa::Avx512 => unsafe { super::x86_avx512::dot_rows(w, r, x, out) },
        }
    }

    /// Units per vector of the phase-split decode (`super::phased`), if this
    /// kernel has one.
    pub(crate) fn phased_lanes(self) -> Option<usize> {
        match self {
            Isa::Scalar => None,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(8),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(16),
        }
    }

    /// [`Isa::dot_rows`] of the weight rows `r0..r0 + out.len() / m` (`out`
    /// is `[rows, m]`) through the phase-split decode: `xp` is `x` permuted
    /// by the `Layout` built from [`Isa::phased_lanes`].
    pub(crate) fn dot_rows_phased(
        self,
        w: &PackedWeights,
        r0: usize,
        (x, xp, m): (&[f32], &[f32], usize),
        out: &mut [f32],
    ) {
        match self {
            Isa::Scalar => {
                for (t, out_r) in out.chunks_mut(m).enumerate() {
                    super::scalar::dot_rows(w, r0 + t, x, out_r);
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` implies AVX2 + FMA were detected (see above).
            Isa::Avx2 => unsafe { super::x86_avx2_phased::dot_rows(w, r0, x, xp, m, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx512` implies AVX-512F was detected (see above).
            Isa::Avx512 => unsafe { super::x86_avx512_phased::dot_rows(w, r0, x, xp, m, out) },
        }
    }

    /// Writes `scale · levels[code(r, j)]` for `j in k0..k0 + out.len()`.
    pub(crate) fn decode_row(self, w: &PackedWeights, r: usize, k0: usize, out: &mut [f32]) {
        match self {
            Isa::Scalar => super::scalar::decode_row(w, r, k0, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` implies AVX2 + FMA were detected (see above).
            Isa::Avx2 => unsafe { super::x86_avx2::decode_row(w, r, k0, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx512` implies AVX-512F was detected (see above).
            Isa::Avx512 => unsafe { super::x86_avx512::decode_row(w, r, k0, out) },
        }
    }

    /// Rows of `x` per panel of the prefill kernel ([`Isa::gemm_panel`]):
    /// two vectors' worth.
    pub(crate) fn panel_width(self) -> usize {
        match self {
            Isa::Scalar => 8,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 16,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 32,
        }
    }

    /// Adds `Σ_{k < klen} x[i0 + l, k0 + k] · tile[t, k]` to
    /// `out[t * m + i0 + l]` for every decoded row `t < g.rows` and every
    /// valid panel row `l < g.mlen`.
    pub(crate) fn gemm_panel(self, g: &PanelArgs, out: &mut [f32]) {
        g.check(self.panel_width(), out.len());
        match self {
            Isa::Scalar => super::scalar::gemm_panel(g, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` implies AVX2 + FMA were detected (see above);
            // `check` proved the lengths the kernel relies on.
            Isa::Avx2 => unsafe { super::x86_avx2::gemm_panel(g, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx512` implies AVX-512F was detected (see above);
            // `check` proved the lengths the kernel relies on.
            Isa::Avx512 => unsafe { super::x86_avx512::gemm_panel(g, out) },
        }
    }
}

/// Operands of one panel product (see [`Isa::gemm_panel`]).
pub(crate) struct PanelArgs<'a> {
    /// `klen` steps of `width` rows of `x`: `x[i0 + l, k0 + k]` at
    /// `xp[k * width + l]`, zero for `l >= mlen`.
    pub xp: &'a [f32],
    pub klen: usize,
    /// Decoded weights: `rows` rows of stride [`TILE_K`] (a constant, so the
    /// kernels address the rows with immediate offsets), `klen` valid columns.
    pub tile: &'a [f32],
    pub rows: usize,
    /// Row length of `out` (`[rows, m]`), and the rows of `x` in this panel.
    pub m: usize,
    pub i0: usize,
    pub mlen: usize,
}

impl PanelArgs<'_> {
    /// The kernels read and write unchecked inside these bounds.
    fn check(&self, width: usize, out_len: usize) {
        assert!(self.xp.len() >= self.klen * width && self.mlen <= width);
        assert!(self.klen <= TILE_K && self.rows * TILE_K <= self.tile.len());
        assert!(self.i0 + self.mlen <= self.m && self.rows * self.m <= out_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_for_available_kernels() {
        for k in Kernel::available() {
            assert_eq!(Kernel::from_name(k.name()), Some(k));
        }
        assert_eq!(Kernel::from_name("neon9000"), None);
        assert_eq!(Kernel::available()[0], Kernel::scalar());
    }

    #[test]
    fn each_instruction_set_maps_to_its_kernel() {
        use crate::pack::Kernel as Isa;
        assert_eq!(Kernel::for_isa(Isa::Scalar), Kernel::scalar());
        for k in Kernel::available() {
            assert_eq!(Kernel::for_isa(Isa::from_name(k.name()).unwrap()), k);
        }
        assert_eq!(Kernel::detect().name(), Isa::selected().name());
    }

    #[test]
    fn detect_is_available() {
        assert!(Kernel::available().contains(&Kernel::detect()));
    }
}
