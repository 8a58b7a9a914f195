//! The items `sieve dedup` compares: this run's embedded rows (and an `--against` run's), and
//! their keep order.

use super::KeepPolicy;
use crate::analyze::common::Embedded;
use crate::error::Result;
use crate::index::{dot, Matrix};
use crate::media::fingerprint::Fingerprint;
use crate::store::Run;

/// One item: an embedded row of this run or of the `--against` run.
pub(crate) struct Items {
    /// Items `0..n_new` are this run's, the rest the old run's.
    pub(crate) n_new: usize,
    pub(crate) id: Vec<u64>,
    pub(crate) uri: Vec<String>,
    pub(crate) sha256: Vec<Option<String>>,
    pub(crate) fingerprint: Vec<Option<Fingerprint>>,
    pub(crate) pixels: Vec<u64>,
    pub(crate) has_caption: Vec<bool>,
    pub(crate) image: Matrix,
    /// Caption vectors (zero rows for items without one).
    pub(crate) text: Option<Matrix>,
}

impl Items {
    pub(crate) fn len(&self) -> usize {
        self.id.len()
    }

    pub(crate) fn is_old(&self, i: u32) -> bool {
        i as usize >= self.n_new
    }
}

/// This run's embedded items, then the `--against` run's (read with the loader every stage
/// shares, [`Embedded`]), with what dedup needs of their metadata.
pub(crate) fn load_items(new: &Run, old: Option<&Run>, need_text: bool) -> Result<Items> {
    let d = new.manifest.embed_dim;
    let mut items = Items {
        n_new: 0,
        id: Vec::new(),
        uri: Vec::new(),
        sha256: Vec::new(),
        fingerprint: Vec::new(),
        pixels: Vec::new(),
        has_caption: Vec::new(),
        image: Matrix::new(d, Vec::new())?,
        text: None,
    };
    let mut img = Vec::new();
    let mut txt = Vec::new();
    for (k, run) in std::iter::once(new).chain(old).enumerate() {
        let Embedded { rows, image, text, has_caption } = Embedded::load_with(run, need_text)?;
        if k == 0 {
            items.n_new = rows.len();
        }
        // The first run's vectors as loaded (no copy), the other's after them.
        if img.is_empty() {
            img = image.into_vec();
        } else {
            img.extend_from_slice(image.as_slice());
        }
        if txt.is_empty() {
            txt = text.into_vec();
        } else {
            txt.extend_from_slice(text.as_slice());
        }
        let m = &run.meta;
        for &r in &rows {
            items.id.push(m.id[r]);
            items.uri.push(m.uri[r].clone());
            items.sha256.push(m.sha256[r].clone());
            items.fingerprint.push(m.fingerprint.as_ref().and_then(|f| f[r]));
            items.pixels.push(m.width[r].unwrap_or(0) as u64 * m.height[r].unwrap_or(0) as u64);
        }
        items.has_caption.extend(has_caption);
    }
    items.image = Matrix::new(d, img)?;
    if need_text {
        items.text = Some(Matrix::new(d, txt)?);
    }
    Ok(items)
}

/// Global keep order: old items first (they are already in the corpus), then by policy.
pub(crate) fn keep_rank(items: &Items, policy: KeepPolicy, centrality: Option<&[f32]>) -> Vec<u32> {
    let n = items.len();
    let score: Vec<f32> = (0..n)
        .map(|i| match (&items.text, items.has_caption[i]) {
            (Some(t), true) => dot(items.image.row(i), t.row(i)),
            _ => f32::NEG_INFINITY,
        })
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    let key_id = |i: usize| (items.is_old(i as u32) as u8 ^ 1, items.id[i]);
    order.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        let old = (!items.is_old(b as u32)).cmp(&!items.is_old(a as u32)).reverse();
        let by_policy = match policy {
            KeepPolicy::First | KeepPolicy::Auto => std::cmp::Ordering::Equal,
            KeepPolicy::Largest => items.pixels[b].cmp(&items.pixels[a]),
            KeepPolicy::BestScore => score[b].total_cmp(&score[a]).then(items.pixels[b].cmp(&items.pixels[a])),
            KeepPolicy::Central => {
                let c = centrality.expect("central needs centrality");
                c[b].total_cmp(&c[a])
            }
        };
        old.then(by_policy).then(key_id(a).cmp(&key_id(b)))
    });
    let mut rank = vec![0u32; n];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    rank
}
