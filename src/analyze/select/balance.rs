//! `sieve select --balance-by GROUP [--balance-to SHARES]`: a selection whose concept shares
//! follow a target instead of the pool's. The concepts are `sieve audit`'s image-side answers for
//! one group of its concept file (`RUN/audit.parquet`). The budget is split over the concepts by
//! the target shares (even by default), water-filling: a concept with fewer items than its share
//! gives all it has and the others share the rest in proportion. Items the audit left as "none"
//! keep their share of the pool unless the target names `none`. Inside each concept the
//! strategy picks as usual. When the concepts the target weighs hold fewer items than their part
//! of the budget, fewer than the budget are selected (and `sieve select` says so): filling up
//! from other concepts would undo the balance asked for.

use std::collections::{BTreeMap, HashMap};

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use serde::Serialize;

use crate::audit::concepts::NONE;
use crate::error::{Error, Result};
use crate::store::layout::{self, Layout};
use crate::store::Run;

/// `--balance-by` and `--balance-to`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceOptions {
    pub group: String,
    /// Concept → weight; `None` for even shares over the group's concepts.
    pub target: Option<Vec<(String, f64)>>,
}

/// Parses `--balance-to`: `uniform`, or `concept=weight,...` (weights ≥ 0, normalised).
pub fn parse_target(text: &str) -> Result<Option<Vec<(String, f64)>>> {
    let bad = |reason: String| Error::InvalidArg { what: "--balance-to", reason };
    if text.trim() == "uniform" {
        return Ok(None);
    }
    let mut out: Vec<(String, f64)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = part.rsplit_once('=').ok_or_else(|| {
            bad(format!("`{part}`: expected CONCEPT=WEIGHT (e.g. night=0.5,daylight=0.5) or uniform"))
        })?;
        let name = name.trim();
        let w: f64 = w.trim().parse().map_err(|_| bad(format!("`{part}`: the weight is not a number")))?;
        if !w.is_finite() || w < 0.0 {
            return Err(bad(format!("`{part}`: weights must be finite and at least 0")));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad(format!("`{name}` is given twice")));
        }
        out.push((name.to_string(), w));
    }
    if out.is_empty() {
        return Err(bad("is empty: give CONCEPT=WEIGHT pairs or uniform".into()));
    }
    if out.iter().map(|p| p.1).sum::<f64>() <= 0.0 {
        return Err(bad("the weights sum to 0".into()));
    }
    Ok(Some(out))
}

/// The `balance` object of `selection/summary.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BalanceSummary {
    pub group: String,
    /// The audit side the concepts come from.
    pub side: &'static str,
    /// Target share of the budget per concept (`none` included when it was given or kept its
    /// pool share).
    pub target: BTreeMap<String, f64>,
    /// Items of each concept in the pool the strategy picks from.
    pub available: BTreeMap<String, usize>,
    /// Items selected of each concept.
    pub selected: BTreeMap<String, usize>,
}

/// The group's concepts (in the audit's order) and each audited item's concept by id.
pub fn read_audit(run: &Run, group: &str) -> Result<(Vec<String>, HashMap<u64, String>)> {
    let files = Layout::new(&run.dir);
    let (summary_path, parquet_path) = (files.audit_summary(), files.audit());
    if !summary_path.is_file() || !parquet_path.is_file() {
        return Err(Error::RunDir {
            path: run.dir.clone(),
            reason: "--balance-by needs audit.parquet; make it with `sieve audit RUN --concepts FILE` first".into(),
        });
    }
    run.check_provenance(layout::AUDIT_SUMMARY, "audit")?;
    let text = std::fs::read_to_string(&summary_path).map_err(|e| Error::io("reading", &summary_path, e))?;
    let summary: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::RunDir { path: summary_path.clone(), reason: format!("is not valid JSON: {e}") })?;
    let groups = summary["audit"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = groups.iter().filter_map(|g| g["group"].as_str().map(str::to_string)).collect();
    let Some(entry) = groups.iter().find(|g| g["group"] == group) else {
        return Err(Error::InvalidArg {
            what: "--balance-by",
            reason: format!("the audit has no group `{group}`; it has: {}", names.join(", ")),
        });
    };
    let concepts: Vec<String> = entry["concepts"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let mut by_id = HashMap::new();
    crate::store::for_each_batch(&parquet_path, |batch| {
        let bad = || Error::RunDir {
            path: parquet_path.clone(),
            reason: "expected `id` (uint64), `group` and `image_concept` (utf8) columns".into(),
        };
        let ids = batch.column_by_name("id").and_then(|c| c.as_primitive_opt::<UInt64Type>()).ok_or_else(bad)?;
        let g = batch.column_by_name("group").and_then(|c| c.as_string_opt::<i32>()).ok_or_else(bad)?;
        let c = batch.column_by_name("image_concept").and_then(|c| c.as_string_opt::<i32>()).ok_or_else(bad)?;
        for i in 0..batch.num_rows() {
            if g.value(i) == group {
                let concept = c.value(i);
                if concept != NONE && !concepts.iter().any(|k| k == concept) {
                    return Err(Error::RunDir {
                        path: parquet_path.clone(),
                        reason: format!(
                            "names concept `{concept}`, which audit_summary.json does not list for `{group}`"
                        ),
                    });
                }
                by_id.insert(ids.value(i), concept.to_string());
            }
        }
        Ok(())
    })?;
    Ok((concepts, by_id))
}

/// Target weights per bucket (the group's concepts, then `none`), and whether `none` keeps its
/// pool share instead of a weight.
pub fn weights(concepts: &[String], target: Option<&[(String, f64)]>) -> Result<(Vec<f64>, bool)> {
    let Some(target) = target else {
        let mut w = vec![1.0; concepts.len()];
        w.push(0.0);
        return Ok((w, true));
    };
    let mut w = vec![0.0; concepts.len() + 1];
    let mut none_named = false;
    for (name, weight) in target {
        if name == NONE {
            w[concepts.len()] = *weight;
            none_named = true;
        } else if let Some(k) = concepts.iter().position(|c| c == name) {
            w[k] = *weight;
        } else {
            return Err(Error::InvalidArg {
                what: "--balance-to",
                reason: format!("`{name}` is not a concept of the group; it has: {}, and {NONE}", concepts.join(", ")),
            });
        }
    }
    Ok((w, !none_named))
}

/// Splits `budget` over buckets of `sizes` in proportion to `weights`, water-filling: a bucket
/// with fewer items than its share gives them all and the rest is shared again by the others'
/// weights. Whole items: floors first, then the largest remainders (ties: the lower bucket).
/// Buckets of weight 0 get nothing; the total is `budget`, or everything the weighted buckets
/// hold when that is less.
pub fn weighted_quota(sizes: &[usize], weights: &[f64], budget: usize) -> Vec<usize> {
    let mut quota = vec![0usize; sizes.len()];
    let mut open: Vec<usize> = (0..sizes.len()).filter(|&b| weights[b] > 0.0 && sizes[b] > 0).collect();
    let mut left = budget.min(open.iter().map(|&b| sizes[b]).sum());
    // Saturate the buckets whose share exceeds what they hold, until none does.
    loop {
        let total: f64 = open.iter().map(|&b| weights[b]).sum();
        let full: Vec<usize> =
            open.iter().copied().filter(|&b| sizes[b] as f64 <= left as f64 * weights[b] / total).collect();
        if full.is_empty() {
            break;
        }
        for &b in &full {
            quota[b] = sizes[b];
            left -= sizes[b];
        }
        open.retain(|b| !full.contains(b));
    }
    let total: f64 = open.iter().map(|&b| weights[b]).sum();
    let mut rest: Vec<(usize, f64)> = Vec::with_capacity(open.len());
    for &b in &open {
        let exact = left as f64 * weights[b] / total;
        quota[b] = (exact.floor() as usize).min(sizes[b]);
        rest.push((b, exact - quota[b] as f64));
    }
    let mut short = left - open.iter().map(|&b| quota[b]).sum::<usize>();
    rest.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    for &(b, _) in rest.iter().cycle().take(rest.len() * 2) {
        if short == 0 {
            break;
        }
        if quota[b] < sizes[b] {
            quota[b] += 1;
            short -= 1;
        }
    }
    quota
}

/// The buckets of the candidates (concepts in order, then `none`) and each one's quota, with the
/// summary's target. `concept_of(i)` is candidate `i`'s concept index (`concepts.len()` for none).
pub fn plan(
    concepts: &[String],
    bucket_of: &[usize],
    opts: &BalanceOptions,
    budget: usize,
) -> Result<(Vec<Vec<usize>>, Vec<usize>, BalanceSummary)> {
    let (mut w, none_keeps_share) = weights(concepts, opts.target.as_deref())?;
    let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); concepts.len() + 1];
    for (i, &b) in bucket_of.iter().enumerate() {
        buckets[b].push(i);
    }
    let sizes: Vec<usize> = buckets.iter().map(Vec::len).collect();
    let budget = budget.min(bucket_of.len());
    let none = concepts.len();
    let quota = if none_keeps_share {
        // `none` keeps its share of the pool; the concepts share the rest.
        let keep = (budget as f64 * sizes[none] as f64 / bucket_of.len().max(1) as f64).round() as usize;
        w[none] = 0.0;
        let mut q = weighted_quota(&sizes, &w, budget - keep.min(budget));
        q[none] = keep.min(sizes[none]);
        q
    } else {
        weighted_quota(&sizes, &w, budget)
    };
    if quota.iter().sum::<usize>() == 0 && budget > 0 {
        return Err(Error::InvalidArg {
            what: "--balance-to",
            reason: format!(
                "gives weight only to concepts with no items in the pool (pool: {})",
                names(concepts).zip(&sizes).map(|(n, s)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let total_w: f64 = w.iter().sum();
    let mut target = BTreeMap::new();
    for (k, name) in names(concepts).enumerate() {
        if k == none && none_keeps_share {
            target.insert(name.to_string(), sizes[none] as f64 / bucket_of.len().max(1) as f64);
        } else if w[k] > 0.0 || k < none {
            let share = if none_keeps_share {
                (1.0 - sizes[none] as f64 / bucket_of.len().max(1) as f64) * w[k] / total_w
            } else {
                w[k] / total_w
            };
            target.insert(name.to_string(), share);
        }
    }
    let summary = BalanceSummary {
        group: opts.group.clone(),
        side: "image",
        target,
        available: names(concepts).zip(&sizes).map(|(n, &s)| (n.to_string(), s)).collect(),
        selected: BTreeMap::new(),
    };
    Ok((buckets, quota, summary))
}

fn names(concepts: &[String]) -> impl Iterator<Item = &str> {
    concepts.iter().map(String::as_str).chain(std::iter::once(NONE))
}

/// Each candidate's bucket: its concept's index, or `concepts.len()` for none (or no audit row).
pub fn buckets_of(concepts: &[String], by_id: &HashMap<u64, String>, ids: impl Iterator<Item = u64>) -> Vec<usize> {
    ids.map(|id| by_id.get(&id).and_then(|c| concepts.iter().position(|k| k == c)).unwrap_or(concepts.len())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_quota_follows_weights_and_water_fills() {
        // Even weights, one small bucket: it gives all 2, the others share 8.
        assert_eq!(weighted_quota(&[2, 10, 10], &[1.0, 1.0, 1.0], 10), vec![2, 4, 4]);
        // 3:1 over 8.
        assert_eq!(weighted_quota(&[100, 100], &[3.0, 1.0], 8), vec![6, 2]);
        // Remainders go to the largest fraction, then the lower bucket.
        assert_eq!(weighted_quota(&[10, 10, 10], &[1.0, 1.0, 1.0], 10), vec![4, 3, 3]);
        // Weight 0 gets nothing; a budget beyond the weighted items gives them all.
        assert_eq!(weighted_quota(&[5, 5, 5], &[1.0, 0.0, 1.0], 100), vec![5, 0, 5]);
        // A cascade: saturating one bucket pushes another over its size.
        assert_eq!(weighted_quota(&[1, 3, 100], &[1.0, 1.0, 1.0], 12), vec![1, 3, 8]);
        for budget in 0..40 {
            let q = weighted_quota(&[1, 3, 7, 20], &[1.0, 2.0, 0.5, 1.0], budget);
            assert_eq!(q.iter().sum::<usize>(), budget.min(31), "{budget}: {q:?}");
            assert!(q.iter().zip([1, 3, 7, 20]).all(|(a, b)| *a <= b), "{q:?}");
        }
    }

    #[test]
    fn targets_parse_and_refuse_nonsense() {
        assert_eq!(parse_target("uniform").unwrap(), None);
        assert_eq!(
            parse_target(" night = 0.5, day=1 ").unwrap(),
            Some(vec![("night".to_string(), 0.5), ("day".to_string(), 1.0)])
        );
        for bad in ["", "night", "night=x", "night=-1", "night=inf", "a=1,a=2", "a=0,b=0", "a=NaN"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        let concepts = vec!["day".to_string(), "night".to_string()];
        assert!(weights(&concepts, Some(&[("dusk".to_string(), 1.0)])).is_err());
        assert_eq!(weights(&concepts, Some(&[("none".to_string(), 1.0)])).unwrap(), (vec![0.0, 0.0, 1.0], false));
    }

    #[test]
    fn none_keeps_its_pool_share_by_default() {
        let concepts = vec!["day".to_string(), "night".to_string()];
        // 80 day, 10 night, 10 none; budget 20: none keeps 2, day and night share 18 evenly.
        let bucket_of: Vec<usize> = (0..100)
            .map(|i| {
                if i < 80 {
                    0
                } else if i < 90 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let opts = BalanceOptions { group: "lighting".into(), target: None };
        let (buckets, quota, s) = plan(&concepts, &bucket_of, &opts, 20).unwrap();
        assert_eq!(quota, vec![9, 9, 2]);
        assert_eq!(buckets[1].len(), 10);
        assert!((s.target["none"] - 0.1).abs() < 1e-12 && (s.target["day"] - 0.45).abs() < 1e-12, "{s:?}");
        // Night holds only 10: budget 60 gives night 10, day the rest but none's 6.
        let (_, quota, _) = plan(&concepts, &bucket_of, &opts, 60).unwrap();
        assert_eq!(quota, vec![44, 10, 6]);
        // A target weighing only a concept absent from the pool is refused; unless `none` keeps
        // its share, which is then all that is selected.
        let night = |none: Option<f64>| BalanceOptions {
            group: "g".into(),
            target: Some(
                [("night".to_string(), 1.0)].into_iter().chain(none.map(|w| ("none".to_string(), w))).collect(),
            ),
        };
        assert!(plan(&concepts, &[0, 0, 2], &night(Some(0.0)), 2).is_err());
        assert_eq!(plan(&concepts, &[0, 0, 2], &night(None), 2).unwrap().1, vec![0, 0, 1]);
    }
}
