//! Which SIMD code path runs: detected once at run time, overridable for users
//! (`NUQ_FORCE_SCALAR=1`) and selectable by name so tests can compare every
//! path the machine supports against the scalar reference.

use std::sync::OnceLock;

/// A family of kernels. `encode` uses the same levels as `pack`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

    /// The kernel the dispatching entry points use: the fastest available one,
    /// or `Scalar` when the environment variable `NUQ_FORCE_SCALAR` is `1`
    /// (read once, on first use).
    pub fn selected() -> Kernel {
        static SELECTED: OnceLock<Kernel> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let forced = std::env::var("NUQ_FORCE_SCALAR").is_ok_and(|v| v == "1");
            choose(forced, &available_kernels())
        })
    }
}

/// The kernels this CPU can run, `Scalar` first.
pub fn available_kernels() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
}

/// The fastest of `available` unless scalar is forced.
fn choose(force_scalar: bool, available: &[Kernel]) -> Kernel {
    if force_scalar {
        return Kernel::Scalar;
    }
    available.last().copied().unwrap_or(Kernel::Scalar)
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
    fn force_scalar_wins_over_simd() {
        let all = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512];
        assert_eq!(choose(true, &all), Kernel::Scalar);
        assert_eq!(choose(false, &all), Kernel::Avx512);
        assert_eq!(choose(false, &[Kernel::Scalar]), Kernel::Scalar);
    }

    #[test]
    fn avx512_implies_avx2_here() {
        // The dispatcher prefers the last available kernel; on x86 every AVX-512
        // machine also has AVX2, so the order matches speed.
        if Kernel::Avx512.is_available() {
            assert!(Kernel::Avx2.is_available());
        }
    }
}
