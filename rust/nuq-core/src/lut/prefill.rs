//! Which product runs the prefill (`m > 16`) and convolutions: the
//! hand-written outer-product micro-kernel over decoded tiles (`tile`), or
//! the `gemm` crate over decoded tiles (`dense`).
//!
//! `NUQ_PREFILL` (read once, at first use) forces one: `micro` or `gemm`;
//! unset, empty or `auto` is the default, `micro`. Any other value is an
//! error ([`Prefill::requested`]; [`Prefill::selected`] panics with its
//! message, and the Python module refuses to import).
//!
//! Both decode W with the kernels of the selected instruction set
//! (`NUQ_ISA`). The `gemm` crate picks its own f32 kernel from the CPU at
//! run time (AVX-512F, else FMA, else its portable one); `NUQ_ISA` does not
//! cap that choice, so `NUQ_ISA=scalar` runs the portable references
//! everywhere only with the default `micro`.

use std::sync::OnceLock;

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

    /// The choice of [`super::linear`] and [`super::conv2d`] (see the module
    /// doc).
    ///
    /// # Panics
    /// When `NUQ_PREFILL` holds an unknown value.
    pub fn selected() -> Self {
        static SELECTED: OnceLock<Prefill> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            Self::requested()
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or(Prefill::Micro)
        })
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
    fn selected_follows_the_environment() {
        let want = Prefill::requested().unwrap().unwrap_or(Prefill::Micro);
        assert_eq!(Prefill::selected(), want);
    }
}
