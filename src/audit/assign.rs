//! Zero-shot assignment, pure: an item's best concept of a group, its cosine and its margin
//! over the runner-up; below the margin threshold the item fits none of them.

/// One item's answer for one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    /// Index of the concept with the highest cosine (the first of equals).
    pub best: u32,
    /// Its cosine with the item.
    pub cosine: f32,
    /// `best`'s cosine minus the second-best concept's.
    pub margin: f32,
    /// `margin` reached the threshold: the item is `best`; otherwise it is "none of these".
    pub assigned: bool,
}

impl Assignment {
    /// The concept index, or `None` for "none of these".
    pub fn concept(&self) -> Option<u32> {
        self.assigned.then_some(self.best)
    }
}

/// Assigns `item` (a unit row of `d` values) to one of the `directions` (unit rows, `d` values
/// each, at least two): the best concept, assigned when its lead over the second is at least
/// `margin`.
pub fn assign(item: &[f32], directions: &[f32], margin: f32) -> Assignment {
    let d = item.len();
    let (mut best, mut first, mut second) = (0u32, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (k, dir) in directions.chunks_exact(d).enumerate() {
        let c: f32 = item.iter().zip(dir).map(|(a, b)| a * b).sum();
        if c > first {
            second = first;
            first = c;
            best = k as u32;
        } else if c > second {
            second = c;
        }
    }
    let lead = first - second;
    Assignment { best, cosine: first, margin: lead, assigned: lead >= margin }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_margin_and_none() {
        // Three directions along the axes of R³.
        let dirs = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let a = assign(&[0.8, 0.6, 0.0], &dirs, 0.1);
        assert_eq!((a.best, a.assigned), (0, true));
        assert!((a.cosine - 0.8).abs() < 1e-6 && (a.margin - 0.2).abs() < 1e-6);
        // Halfway between the first two: a lead of 0, none of these.
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let b = assign(&[h, h, 0.0], &dirs, 0.1);
        assert_eq!((b.best, b.margin, b.concept()), (0, 0.0, None));
        let c = assign(&[0.0, 0.0, 1.0], &dirs, 0.1);
        assert_eq!((c.concept(), c.margin), (Some(2), 1.0));
    }
}
