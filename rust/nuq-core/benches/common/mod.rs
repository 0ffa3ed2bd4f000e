//! Weights and inputs shared by the LUT benches: deterministic data and
//! packed weights of random codes.

use nuq_core::lut::PackedWeights;
use nuq_core::pack::{packed_len, scalar::pack};

/// Deterministic test data (xorshift64*), uniform in [-1, 1).
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            2.0 * u - 1.0
        })
        .collect()
}

/// Packed codes plus metadata, owned by the bench.
pub struct Quantized {
    pub n: usize,
    pub k: usize,
    pub bits: u32,
    pub group: Option<usize>,
    pub packed: Vec<u8>,
    pub levels: Vec<f32>,
    pub loc: Vec<f32>,
    pub scale: Vec<f32>,
}

impl Quantized {
    pub fn new(n: usize, k: usize, bits: u32, group: Option<usize>) -> Self {
        let row_bytes = packed_len(k, bits);
        let mut packed = vec![0u8; n * row_bytes];
        let codes: Vec<u8> = data(n * k, 11)
            .iter()
            .map(|v| ((v + 1.0) * 0.5 * (1 << bits) as f32) as u8 % (1 << bits))
            .collect();
        for (row, c) in packed
            .chunks_exact_mut(row_bytes)
            .zip(codes.chunks_exact(k))
        {
            pack(c, bits, row);
        }
        let levels = (0..1 << bits)
            .map(|i| i as f32 - (1 << (bits - 1)) as f32)
            .collect();
        let (loc, scale) = match group {
            Some(g) => (vec![], vec![0.01; n * k.div_ceil(g)]),
            None => (vec![0.001; n], vec![0.01; n]),
        };
        Quantized {
            n,
            k,
            bits,
            group,
            packed,
            levels,
            loc,
            scale,
        }
    }

    pub fn view(&self) -> PackedWeights<'_> {
        PackedWeights {
            rows: self.n,
            cols: self.k,
            bits: self.bits,
            packed: &self.packed,
            levels: &self.levels,
            loc: &self.loc,
            scale: &self.scale,
            group_size: self.group,
        }
    }
}
