//! Scalar reference packing: the definition every SIMD path is tested against.

use super::packed_len;

/// Packs `codes` (each `< 2^bits`) into `out` (`packed_len(codes.len(), bits)` bytes).
pub fn pack(codes: &[u8], bits: u32, out: &mut [u8]) {
    debug_assert!((1..=8).contains(&bits));
    assert_eq!(
        out.len(),
        packed_len(codes.len(), bits),
        "pack: output length"
    );
    out.fill(0);
    let mask = ((1u16 << bits) - 1) as u8;
    for (j, &c) in codes.iter().enumerate() {
        let bit = j * bits as usize;
        let (byte, shift) = (bit / 8, bit % 8);
        let v = u16::from(c & mask) << shift;
        out[byte] |= v as u8;
        if shift + bits as usize > 8 {
            out[byte + 1] |= (v >> 8) as u8;
        }
    }
}

/// Unpacks `out.len()` codes of `bits` bits from `packed`.
pub fn unpack(packed: &[u8], bits: u32, out: &mut [u8]) {
    debug_assert!((1..=8).contains(&bits));
    assert_eq!(
        packed.len(),
        packed_len(out.len(), bits),
        "unpack: input length"
    );
    let mask = ((1u16 << bits) - 1) as u8;
    for (j, c) in out.iter_mut().enumerate() {
        let bit = j * bits as usize;
        let (byte, shift) = (bit / 8, bit % 8);
        let mut v = u16::from(packed[byte]) >> shift;
        if shift + bits as usize > 8 {
            v |= u16::from(packed[byte + 1]) << (8 - shift);
        }
        *c = v as u8 & mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bits_low_nibble_first() {
        let mut out = [0u8; 2];
        pack(&[0x1, 0x2, 0x3], 4, &mut out);
        assert_eq!(out, [0x21, 0x03]);
    }

    #[test]
    fn three_bits_cross_bytes() {
        // codes 7,0,5 -> bits 111 000 101 -> stream 0b1_0100_0111 -> [0x47, 0x01]
        let mut out = [0u8; 2];
        pack(&[7, 0, 5], 3, &mut out);
        assert_eq!(out, [0x47, 0x01]);
        let mut back = [0u8; 3];
        unpack(&out, 3, &mut back);
        assert_eq!(back, [7, 0, 5]);
    }

    #[test]
    fn round_trip_every_width() {
        for bits in 1..=8u32 {
            let n = 37;
            let codes: Vec<u8> = (0..n).map(|i| ((i * 7 + 3) % (1 << bits)) as u8).collect();
            let mut packed = vec![0u8; packed_len(n, bits)];
            pack(&codes, bits, &mut packed);
            let mut back = vec![0u8; n];
            unpack(&packed, bits, &mut back);
            assert_eq!(back, codes, "bits {bits}");
        }
    }
}
