//! Which product runs the prefill (`m > 16`) and convolutions: the
//! hand-written outer-product micro-kernel over decoded tiles (`tile`), or
//! the `gemm` crate over decoded tiles (`dense`).
//!
//! The default (`NUQ_PREFILL` unset, empty or `auto`): `micro` for
//! matmuls and `gemm` for convolutions, except under the scalar instruction
//! set, which runs `micro` everywhere (the portable reference). That is what
//! `cargo bench -p nuq-core --bench prefill` measured: the micro-kernel
//! ahead for matmuls at 64 rows and level at 512, `gemm` ahead on
//! convolutions (benches/README.md).
//!
//! `NUQ_PREFILL` (read once, at first use) forces one for both: `micro` or
//! `gemm`. Any other value is an error ([`Prefill::requested`];
//! [`Prefill::for_linear`] and [`Prefill::for_conv`] panic with its message,
//! and the Python module refuses to import).
//!
//! Both decode W with the kernels of the selected instruction set
//! (`NUQ_ISA`). The `gemm` crate picks its own f32 kernel from the CPU at
//! run time (AVX-512F, else FMA, else its portable one); `NUQ_ISA` does not
//! cap that choice, so `NUQ_ISA=scalar` runs the portable references
//! everywhere only with `micro` (the default there).

use std::sync::OnceLock;

use super::Kernel;

/// The environment variable naming the prefill product.
pub const PREFILL_VAR: &str = "NUQ_PREFILL";

/// The product of decoded weight tiles with `x` (or im2col patches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefill {
    /// The per-instruction-set outer-product micro-kernel on 48 x 256 tiles.
    Micro,
    /// `gemm::gemm` on tiles of at most `dense::ROWS x dense::DEPTH` floats.
    Gemm,
}

impl Prefill {
    /// Every choice, the default first.
    pub const ALL: [Prefill; 2] = [Prefill::Micro, Prefill::Gemm];

    /// `"micro"` or `"gemm"`.
    pub fn name(self) -> &'static str {
        match self {
            Prefill::Micro => "micro",
            Prefill::Gemm => "gemm",
        }
    }

    /// The choice called `name` (see [`Prefill::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// What `NUQ_PREFILL` asks for; `None` for the default.
    ///
    /// # Errors
    /// A message naming the variable and the accepted values when it holds
    /// anything else.
    pub fn requested() -> Result<Option<Self>, String> {
        parse(std::env::var(PREFILL_VAR).ok().as_deref())
    }

    /// The product of [`super::linear`]: the forced one, else `micro`.
    ///
    /// # Panics
    /// When `NUQ_PREFILL` holds an unknown value.
    pub fn for_linear() -> Self {
        Self::forced().unwrap_or(Prefill::Micro)
    }

    /// The product of [`super::conv2d`] with `kernel`: the forced one, else
    /// `gemm`, or `micro` under the scalar kernel.
    ///
    /// # Panics
    /// When `NUQ_PREFILL` holds an unknown value.
    pub fn for_conv(kernel: Kernel) -> Self {
        let portable = kernel == Kernel::scalar();
        Self::forced().unwrap_or(if portable {
            Prefill::Micro
        } else {
            Prefill::Gemm
        })
    }

    /// What `NUQ_PREFILL` forces, read once.
    fn forced() -> Option<Self> {
        static FORCED: OnceLock<Option<Prefill>> = OnceLock::new();
        *FORCED.get_or_init(|| Self::requested().unwrap_or_else(|e| panic!("{e}")))
    }
}

/// The request of `NUQ_PREFILL` = `value`.
fn parse(value: Option<&str>) -> Result<Option<Prefill>, String> {
    match value.map(str::trim) {
        None | Some("" | "auto") => Ok(None),
        Some(name) => Prefill::from_name(name)
            .map(Some)
            .ok_or_else(|| format!("{PREFILL_VAR}={name:?} is not one of auto, micro, gemm")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_others() {
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some(" ")), Ok(None));
        assert_eq!(parse(Some("auto")), Ok(None));
        assert_eq!(parse(Some("gemm")), Ok(Some(Prefill::Gemm)));
        assert_eq!(parse(Some("micro ")), Ok(Some(Prefill::Micro)));
        let err = parse(Some("blas")).unwrap_err();
        assert!(err.contains("NUQ_PREFILL") && err.contains("gemm"), "{err}");
        for p in Prefill::ALL {
            assert_eq!(Prefill::from_name(p.name()), Some(p));
        }
    }

    #[test]
    fn the_default_follows_the_op_and_forcing_covers_both() {
        let forced = Prefill::requested().unwrap();
        assert_eq!(Prefill::for_linear(), forced.unwrap_or(Prefill::Micro));
        assert_eq!(
            Prefill::for_conv(Kernel::scalar()),
            forced.unwrap_or(Prefill::Micro)
        );
        for k in Kernel::available()
            .into_iter()
            .filter(|&k| k != Kernel::scalar())
        {
            assert_eq!(Prefill::for_conv(k), forced.unwrap_or(Prefill::Gemm));
        }
    }
}
