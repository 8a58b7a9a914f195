//! `audit_summary.json`: counts and shares per concept, per group, overall and per `--by`
//! value, the under-represented concepts, image–caption agreement and a few examples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::concepts::NONE;
use crate::analyze::common::lenient;

/// A concept is under-represented when its share of the audited items is below this fraction
/// of an even share (`1 / concepts in its group`).
pub const UNDER_REPRESENTED: f64 = 0.5;

/// `audit_summary.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Summary {
    pub sieve_version: String,
    pub run: String,
    /// The fingerprint of the run this was computed from.
    pub run_fingerprint: String,
    pub model: String,
    /// The concept file as given, and the SHA-256 of its bytes (a changed file means a stale audit).
    pub concepts_file: String,
    pub concepts_sha256: String,
    /// The prompt templates (`clip` or `siglip`) and how many each concept without its own
    /// prompt was embedded with.
    pub templates: String,
    pub prompts_per_concept: usize,
    /// The margin threshold (cosine): below it an item is `none`.
    #[serde(deserialize_with = "lenient::f32")]
    pub margin: f32,
    /// A concept under this fraction of an even share is under-represented.
    #[serde(deserialize_with = "lenient::f64")]
    pub under_represented_below: f64,
    pub by: Option<String>,
    pub embedded: usize,
    pub with_caption: usize,
    /// For other tools: group → concept (and `none`) → share of the embedded items, image side,
    /// overall.
    pub groups: BTreeMap<String, BTreeMap<String, f64>>,
    /// Everything, per group in file order.
    pub audit: Vec<GroupAudit>,
}

/// One group's results.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GroupAudit {
    pub group: String,
    pub concepts: Vec<String>,
    /// From the image embeddings, every embedded item.
    pub image: Side,
    /// From the caption embeddings, every embedded item with a caption (absent without captions).
    pub caption: Option<Side>,
    /// Items with a caption: both sides name the same concept (or both `none`), or two
    /// different concepts.
    pub agreement: Option<Agreement>,
    /// Per value of `--by` (at most 1,000 values; null last).
    pub by: Vec<ByValue>,
    /// Per concept, the items assigned to it with the largest image-side margins.
    pub examples: BTreeMap<String, Vec<Example>>,
    /// Items whose image and caption name two different concepts, the clearest first (the
    /// smaller of the two margins, largest first), as many as `examples`.
    pub disagreements: Vec<Disagreement>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Disagreement {
    pub id: u64,
    pub uri: String,
    pub image_concept: String,
    pub caption_concept: String,
}

/// Counts on one side (image or caption) of one set of items.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Side {
    pub items: usize,
    /// Each concept in file order, then `none`.
    pub concepts: Vec<Count>,
    /// Concepts whose share is under [`UNDER_REPRESENTED`] of an even share.
    pub under_represented: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Count {
    pub concept: String,
    pub count: usize,
    /// `count / items` (0 when there are no items).
    #[serde(deserialize_with = "lenient::f64")]
    pub share: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Agreement {
    pub items: usize,
    pub agree: usize,
    /// Both sides assigned, to different concepts.
    pub disagree: usize,
    #[serde(deserialize_with = "lenient::f64")]
    pub agree_share: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ByValue {
    pub value: Option<String>,
    pub image: Side,
    pub caption: Option<Side>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Example {
    pub id: u64,
    pub uri: String,
    #[serde(deserialize_with = "lenient::f32")]
    pub margin: f32,
}

fn share(count: usize, items: usize) -> f64 {
    if items == 0 {
        0.0
    } else {
        count as f64 / items as f64
    }
}

impl Side {
    /// Tallies `assigned` (a concept index, or `None` for none) over `names`' concepts.
    pub fn tally(names: &[String], assigned: impl Iterator<Item = Option<u32>>) -> Self {
        let mut counts = vec![0usize; names.len() + 1];
        let mut items = 0;
        for a in assigned {
            items += 1;
            counts[a.map_or(names.len(), |k| k as usize)] += 1;
        }
        let even = 1.0 / names.len() as f64;
        let concepts: Vec<Count> = names
            .iter()
            .map(String::as_str)
            .chain([NONE])
            .zip(&counts)
            .map(|(c, &n)| Count { concept: c.to_string(), count: n, share: share(n, items) })
            .collect();
        let under_represented = if items == 0 {
            Vec::new()
        } else {
            concepts[..names.len()]
                .iter()
                .filter(|c| c.share < UNDER_REPRESENTED * even)
                .map(|c| c.concept.clone())
                .collect()
        };
        Self { items, concepts, under_represented }
    }

    /// Concept (and `none`) → share.
    pub fn shares(&self) -> BTreeMap<String, f64> {
        self.concepts.iter().map(|c| (c.concept.clone(), c.share)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_shares_and_under_represented() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // 10 items: a 6, b 3, c 0, none 1. Even share 1/3; under 1/6: c.
        let seq = [0, 0, 0, 0, 0, 0, 1, 1, 1].map(Some).into_iter().chain([None]);
        let s = Side::tally(&names, seq);
        assert_eq!(s.items, 10);
        let counts: Vec<(&str, usize)> = s.concepts.iter().map(|c| (c.concept.as_str(), c.count)).collect();
        assert_eq!(counts, [("a", 6), ("b", 3), ("c", 0), ("none", 1)]);
        assert_eq!(s.under_represented, ["c"]);
        assert_eq!(s.shares()["a"], 0.6);
        assert!(Side::tally(&names, std::iter::empty()).under_represented.is_empty());
    }
}
