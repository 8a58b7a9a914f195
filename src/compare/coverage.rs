//! Coverage of one sample by another: each item's most similar item on the other side (exact
//! search, `index::topk::exact_knn_cpu`), and the share of items whose nearest other item is at
//! or above a cosine threshold.

use serde::Serialize;

use crate::analyze::common::percentile;
use crate::index::topk::exact_knn_cpu;
use crate::index::Matrix;

/// The cosine of each row of `queries` to its most similar row of `data` (exact).
pub fn nearest(queries: &Matrix, data: &Matrix) -> Vec<f32> {
    if data.rows() == 0 {
        return vec![f32::NEG_INFINITY; queries.rows()];
    }
    exact_knn_cpu(queries, data, 1, None).into_iter().map(|n| n.first().map_or(f32::NEG_INFINITY, |p| p.1)).collect()
}

/// How well one sample covers another.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Coverage {
    /// Items of the covered sample.
    pub items: usize,
    /// Of them, those whose nearest item on the other side has cosine ≥ the threshold.
    pub covered: usize,
    /// `covered / items` (1 for no items).
    pub share: f64,
    /// Percentiles 10, 50 and 90 of the nearest cosine.
    pub nearest_p10: f32,
    pub nearest_p50: f32,
    pub nearest_p90: f32,
}

/// Coverage from the nearest cosines of the covered items.
pub fn coverage(nearest: &[f32], threshold: f32) -> Coverage {
    let covered = nearest.iter().filter(|&&s| s >= threshold).count();
    let mut sorted = nearest.to_vec();
    sorted.sort_by(f32::total_cmp);
    Coverage {
        items: nearest.len(),
        covered,
        share: if nearest.is_empty() { 1.0 } else { covered as f64 / nearest.len() as f64 },
        nearest_p10: percentile(&sorted, 10.0),
        nearest_p50: percentile(&sorted, 50.0),
        nearest_p90: percentile(&sorted, 90.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_covers_itself_and_not_an_orthogonal_one() {
        let a = Matrix::new(3, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
        let b = Matrix::new(3, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]).unwrap();
        let c = coverage(&nearest(&b, &a), 0.9);
        assert_eq!((c.items, c.covered, c.share), (2, 1, 0.5));
        assert_eq!(coverage(&nearest(&a, &a), 0.999).share, 1.0);
    }
}
