//! A random draw by weight, shared by the traffic split (which backend) and routes (which of
//! their `backendRefs`).

/// The index of the item a random draw lands on, each item's chance its weight over `total`
/// (their sum); `None` when `total` is 0.
pub(crate) fn draw(weights: impl IntoIterator<Item = u32>, total: u32) -> Option<usize> {
    if total == 0 {
        return None;
    }
    let mut ticket = fastrand::u32(0..total);
    weights.into_iter().position(|weight| {
        let hit = ticket < weight;
        ticket = ticket.saturating_sub(weight);
        hit
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_lands_by_weight_and_never_on_nothing() {
        assert_eq!(draw([0, 0], 0), None);
        for _ in 0..100 {
            assert_eq!(draw([0, 5, 0], 5), Some(1));
        }
        let hits = (0..10_000).filter(|_| draw([1, 3], 4) == Some(1)).count();
        assert!((7_000..=8_000).contains(&hits), "{hits}");
    }
}
