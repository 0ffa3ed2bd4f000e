//! Scalar reference encode/decode: the definitions the SIMD kernels match.

use super::tree::SearchTree;

/// `codes[i]` = number of boundaries `< (x[i] - offset) * mul`, with the
/// subtraction and the multiplication each rounded in f32 (never fused).
pub(super) fn encode(x: &[f32], offset: f32, mul: f32, tree: &SearchTree, codes: &mut [u8]) {
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = tree.count_below((v - offset) * mul);
    }
}

/// `out[i] = levels[codes[i]]`; the caller has checked every code is in range.
pub(super) fn decode(codes: &[u8], levels: &[f32], out: &mut [f32]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = levels[usize::from(c)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_standardizes_then_counts() {
        let tree = SearchTree::new(&[-1.0, 0.0, 1.0]);
        let x = [10.0, 12.0, 14.0, 16.0, 7.0];
        let mut codes = [9u8; 5];
        // z = (x - 12) / 2: -1, 0, 1, 2, -2.5
        encode(&x, 12.0, 0.5, &tree, &mut codes);
        assert_eq!(codes, [0, 1, 2, 3, 0]);
    }

    #[test]
    fn decode_looks_up_levels() {
        let mut out = [0.0f32; 4];
        decode(&[3, 0, 1, 3], &[-1.5, -0.5, 0.5, 1.5], &mut out);
        assert_eq!(out, [1.5, -1.5, -0.5, 1.5]);
    }
}
