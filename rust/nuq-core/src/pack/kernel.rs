//! Which SIMD code path runs: detected once at run time, overridable for users
//! and tests by the environment (`NUQ_ISA`), and selectable by name so tests
//! can compare every path the machine supports against the scalar reference.
//!
//! `NUQ_ISA` (read once, at first use) names the instruction set of every
//! dispatching entry point: packing, encoding, the LUT kernels and the
//! statistics passes. `scalar` runs the portable references everywhere (the
//! int8-activation path's included, see `lut::linear_int8`); `avx2` and
//! `avx512` cap the choice at that level; unset, empty or `auto` takes the
//! fastest. An instruction set this CPU lacks falls back to the best one below
//! it, with a warning on stderr; any other value is an error
//! ([`Kernel::requested`]; `Kernel::selected` panics with its message, and the
//! Python module refuses to import). `NUQ_FORCE_SCALAR=1`, the older name, is
//! `NUQ_ISA=scalar` when `NUQ_ISA` is unset or empty.

use std::sync::OnceLock;

/// The environment variable naming the instruction set.
pub const ISA_VAR: &str = "NUQ_ISA";

/// A family of kernels. `encode` uses the same levels as `pack`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kernel {
    /// Portable reference code; always available.
    Scalar,
    /// x86-64 AVX2 (256-bit integer and float vectors).
    Avx2,
    /// x86-64 AVX-512 F + BW (512-bit vectors, byte/word ops, mask registers).
    Avx512,
}

impl Kernel {
    /// Every kernel, fastest last.
    pub const ALL: [Kernel; 3] = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512];

    /// Short lowercase name, for benchmark ids and messages.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }

    /// The kernel called `name` (see [`Kernel::name`]), available or not.
    pub fn from_name(name: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The kernel the environment asks for: `NUQ_ISA`, else scalar when
    /// `NUQ_FORCE_SCALAR` is `1`; `None` for the fastest.
    ///
    /// # Errors
    /// A message naming the variable and the accepted values when `NUQ_ISA`
    /// holds anything else.
    pub fn requested() -> Result<Option<Kernel>, String> {
        let isa = std::env::var(ISA_VAR).ok();
        let force = std::env::var("NUQ_FORCE_SCALAR").ok();
        parse_request(isa.as_deref(), force.as_deref())
    }

    /// The kernel the dispatching entry points use (see the module doc).
    ///
    /// # Panics
    /// When `NUQ_ISA` holds an unknown value.
    pub fn selected() -> Kernel {
        static SELECTED: OnceLock<Kernel> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let request = Kernel::requested().unwrap_or_else(|e| panic!("{e}"));
            let (kernel, warning) = resolve(request, &available_kernels());
            if let Some(w) = warning {
                eprintln!("nuq-rs: {w}");
            }
            kernel
        })
    }

    /// Whether code specialised for this kernel's instructions may run: the
    /// selected kernel is this one or a faster one, so the CPU has them.
    pub fn is_allowed(self) -> bool {
        self <= Kernel::selected()
    }
}

/// The kernels this CPU can run, `Scalar` first.
pub fn available_kernels() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
}

/// The request of `NUQ_ISA` = `isa` and `NUQ_FORCE_SCALAR` = `force`.
fn parse_request(isa: Option<&str>, force: Option<&str>) -> Result<Option<Kernel>, String> {
    match isa.map(str::trim) {
        None | Some("") => Ok((force == Some("1")).then_some(Kernel::Scalar)),
        Some("auto") => Ok(None),
        Some(name) => Kernel::from_name(name)
            .map(Some)
            .ok_or_else(|| format!("{ISA_VAR}={name:?} is not one of auto, scalar, avx2, avx512")),
    }
}

/// The kernel for `request` among `available` (ascending), and a warning when
/// the request had to be lowered.
fn resolve(request: Option<Kernel>, available: &[Kernel]) -> (Kernel, Option<String>) {
    let best = |cap: Kernel| {
        available
            .iter()
            .copied()
            .filter(|&k| k <= cap)
            .max()
            .unwrap_or(Kernel::Scalar)
    };
    match request {
        None => (best(Kernel::Avx512), None),
        Some(want) => {
            let got = best(want);
            let warning = (got != want).then(|| {
                format!(
                    "{ISA_VAR}={} but this CPU lacks it: using {}",
                    want.name(),
                    got.name()
                )
            });
            (got, warning)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_always_available_and_first() {
        let ks = available_kernels();
        assert_eq!(ks[0], Kernel::Scalar);
        assert!(ks.contains(&Kernel::selected()));
    }

    #[test]
    fn the_environment_names_the_kernel() {
        use Kernel::*;
        assert_eq!(parse_request(None, None), Ok(None));
        assert_eq!(parse_request(Some("auto"), Some("1")), Ok(None));
        assert_eq!(parse_request(None, Some("1")), Ok(Some(Scalar)));
        assert_eq!(parse_request(Some(""), Some("1")), Ok(Some(Scalar)));
        assert_eq!(parse_request(None, Some("0")), Ok(None));
        assert_eq!(parse_request(Some("avx2"), Some("1")), Ok(Some(Avx2)));
        assert_eq!(parse_request(Some(" avx512"), None), Ok(Some(Avx512)));
        let err = parse_request(Some("avx-512"), None).unwrap_err();
        assert!(err.contains("NUQ_ISA=\"avx-512\"") && err.contains("avx512"));
    }

    #[test]
    fn a_missing_instruction_set_falls_back_with_a_warning() {
        use Kernel::*;
        let all = [Scalar, Avx2, Avx512];
        assert_eq!(resolve(None, &all), (Avx512, None));
        assert_eq!(resolve(Some(Scalar), &all), (Scalar, None));
        assert_eq!(resolve(Some(Avx2), &all), (Avx2, None));
        let (k, warning) = resolve(Some(Avx512), &[Scalar, Avx2]);
        assert_eq!(k, Avx2);
        assert!(warning
            .unwrap()
            .contains("NUQ_ISA=avx512 but this CPU lacks it: using avx2"));
        assert_eq!(resolve(Some(Avx2), &[Scalar]).0, Scalar);
        assert_eq!(resolve(None, &[Scalar]), (Scalar, None));
    }

    #[test]
    fn names_round_trip() {
        for k in Kernel::ALL {
            assert_eq!(Kernel::from_name(k.name()), Some(k));
        }
        assert_eq!(Kernel::from_name("neon9000"), None);
    }

    #[test]
    fn avx512_implies_avx2_here() {
        // `is_allowed` orders the kernels; on x86 every AVX-512 machine also
        // has AVX2, so the order matches what the CPU can run.
        if Kernel::Avx512.is_available() {
            assert!(Kernel::Avx2.is_available());
        }
    }
}
