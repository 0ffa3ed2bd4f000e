//! The boundaries as an implicit binary search tree (Eytzinger / heap order),
//! so a search is `depth` steps of "compare, then go to child 2i or 2i+1"
//! with no branches, and the nodes of one tree level are contiguous: level `l`
//! is `nodes[2^l .. 2^(l+1)]`, small enough for SIMD kernels to hold levels in
//! registers and look nodes up with permutes.

/// Boundaries padded with `+inf` to `2^depth - 1` entries (a `+inf` node is
/// never `< z`, so padding never changes a count) and laid out level by level.
#[repr(C, align(64))]
pub(super) struct SearchTree {
    /// `nodes[1]` is the root; `nodes[0]` and nodes past the last level are `+inf`.
    pub nodes: [f32; 256],
    /// Number of levels, 1..=8: codes are `0 .. 2^depth`.
    pub depth: usize,
}

// Levels 4.. start on 64-byte boundaries; the kernels load them whole.
const _: () = assert!(std::mem::size_of::<SearchTree>() == 1024 + 64);
const _: () = assert!(std::mem::align_of::<SearchTree>() == 64);

impl SearchTree {
    /// Builds the tree of `boundaries` (ascending, 1..=255 of them, no NaN).
    pub fn new(boundaries: &[f32]) -> SearchTree {
        let nb = boundaries.len();
        debug_assert!((1..=255).contains(&nb));
        let depth = (usize::BITS - nb.leading_zeros()) as usize; // 2^depth - 1 >= nb
        let padded = |j: usize| boundaries.get(j).copied().unwrap_or(f32::INFINITY);
        let mut nodes = [f32::INFINITY; 256];
        for l in 0..depth {
            let span = 1 << (depth - l); // padded entries under a node of level l, + 1
            for m in 0..1 << l {
                nodes[(1 << l) + m] = padded(m * span + span / 2 - 1);
            }
        }
        SearchTree { nodes, depth }
    }

    /// Number of boundaries `b` with `b < z` (NaN: 0), by descending the tree.
    #[inline]
    pub fn count_below(&self, z: f32) -> u8 {
        let mut i = 1usize;
        for _ in 0..self.depth {
            i = 2 * i + usize::from(self.nodes[i & 255] < z);
        }
        (i - (1 << self.depth)) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(boundaries: &[f32], z: f32) -> u8 {
        boundaries.iter().filter(|&&b| b < z).count() as u8
    }

    #[test]
    fn depth_fits_the_boundary_count() {
        for (nb, depth) in [
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 3),
            (7, 3),
            (15, 4),
            (16, 5),
            (255, 8),
        ] {
            let b: Vec<f32> = (0..nb).map(|j| j as f32).collect();
            assert_eq!(SearchTree::new(&b).depth, depth, "nb {nb}");
        }
    }

    #[test]
    fn three_boundaries_layout() {
        let t = SearchTree::new(&[-1.0, 0.0, 1.0]);
        assert_eq!(&t.nodes[1..4], &[0.0, -1.0, 1.0]);
        assert_eq!(t.count_below(-5.0), 0);
        assert_eq!(t.count_below(-1.0), 0); // equal goes to the lower cell
        assert_eq!(t.count_below(0.5), 2);
        assert_eq!(t.count_below(f32::INFINITY), 3);
        assert_eq!(t.count_below(f32::NAN), 0);
    }

    proptest! {
        #[test]
        fn counts_like_a_linear_scan(
            mut b in proptest::collection::vec(-100.0f32..100.0, 1..=255),
            zs in proptest::collection::vec(-120.0f32..120.0, 1..50),
        ) {
            b.sort_by(f32::total_cmp);
            let t = SearchTree::new(&b);
            for z in zs.into_iter().chain(b.iter().copied()) {
                prop_assert_eq!(t.count_below(z), naive(&b, z), "z {}", z);
            }
        }
    }
}
