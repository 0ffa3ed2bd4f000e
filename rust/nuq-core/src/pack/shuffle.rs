//! Byte and word shuffle tables shared by the x86 kernels.
//!
//! Both kernels first turn 8 codes into one 64-bit lane holding `8 * bits`
//! stream bits, i.e. `bits` bytes at the bottom of the lane (packing), or do
//! the reverse (unpacking). These tables move those bytes between the
//! "one group per 64-bit lane" form and the contiguous stream form.

/// Index for a 16-byte `pshufb` lane. Packing: bytes `0..bits` of each 8-byte
/// half are placed side by side at the start of the lane (`2 * bits` bytes).
/// Unpacking: the reverse. Unused positions are `0x80`, which zeroes a byte.
pub(super) fn lane_bytes(bits: usize, pack: bool) -> [u8; 16] {
    let (dst_hi, src_hi) = if pack { (bits, 8) } else { (8, bits) };
    let mut idx = [0x80u8; 16];
    for i in 0..bits {
        idx[i] = i as u8;
        idx[dst_hi + i] = (src_hi + i) as u8;
    }
    idx
}

/// Index for a 512-bit `vpermw` (32 words; a 16-byte lane holds 8 words).
/// Packing: the `bits` words at the start of each lane are gathered into one
/// run of `4 * bits` words. Unpacking: that run is split back into lanes.
/// Unused positions read word 0; the kernels never use them.
pub(super) fn lane_words(bits: usize, pack: bool) -> [u16; 32] {
    let mut idx = [0u16; 32];
    for lane in 0..4 {
        for q in 0..bits {
            let (stream, lanewise) = (lane * bits + q, lane * 8 + q);
            if pack {
                idx[stream] = lanewise as u16;
            } else {
                idx[lanewise] = stream as u16;
            }
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a pshufb-style index to a 16-byte array.
    fn shuffle(src: [u8; 16], idx: [u8; 16]) -> [u8; 16] {
        idx.map(|i| if i & 0x80 != 0 { 0 } else { src[i as usize] })
    }

    #[test]
    fn lane_bytes_round_trips_every_width() {
        for bits in 1..=7 {
            let mut grouped = [0u8; 16];
            for i in 0..bits {
                grouped[i] = 1 + i as u8;
                grouped[8 + i] = 101 + i as u8;
            }
            let packed = shuffle(grouped, lane_bytes(bits, true));
            assert_eq!(packed[bits], 101, "bits {bits}");
            assert!(packed[2 * bits..].iter().all(|&b| b == 0));
            assert_eq!(shuffle(packed, lane_bytes(bits, false)), grouped);
        }
    }

    #[test]
    fn lane_words_are_inverse_on_used_words() {
        for bits in 1..=7 {
            let (p, u) = (lane_words(bits, true), lane_words(bits, false));
            for lane in 0..4 {
                for q in 0..bits {
                    let w = lane * 8 + q;
                    assert_eq!(p[u[w] as usize] as usize, w, "bits {bits} word {w}");
                }
            }
        }
    }
}
