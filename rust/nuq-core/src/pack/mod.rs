//! Bit-packing of cell indices ("codes"), any width 1..=8.
//!
//! Layout: a row of `n` codes of `bits` bits is an LSB-first bit stream of
//! `packed_len(n, bits)` bytes: code `j` occupies stream bits `j*bits ..
//! (j+1)*bits`, and stream bit `k` is bit `k % 8` of byte `k / 8`. At 4 bits a
//! byte holds `c0 | c1 << 4`. Unused high bits of the last byte are zero. A
//! weight matrix is packed row by row, each row starting on a byte boundary.
//!
//! `pack`/`unpack` pick the fastest kernel the CPU supports at run time
//! (`Kernel::selected`; `NUQ_ISA=scalar|avx2|avx512` forces one); the
//! `*_with` variants name the kernel, so tests compare every path.

mod dispatch;
mod kernel;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod shuffle;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

pub use dispatch::{pack, pack_with, unpack, unpack_with};
pub use kernel::{available_kernels, Kernel, ISA_VAR};

/// Bytes needed for `n` codes of `bits` bits.
pub fn packed_len(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}
