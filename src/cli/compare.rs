//! `sieve compare`.

use std::path::PathBuf;

use clap::Args;
use sieve::compare::{cmmd, regions, CompareOptions, DEFAULT_SAMPLE};
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Run;

use super::{print_json, Global};

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The run compared against (the reference).
    pub a: PathBuf,

    /// The run compared with it.
    pub b: PathBuf,

    /// Also write DIR/compare.json and DIR/compare.html (self-contained, with thumbnails of the
    /// novel and vanished regions).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Items sampled (seeded) from each run per modality; every figure is taken on the samples,
    /// so runs of any size compare in the same time.
    #[arg(long, default_value_t = DEFAULT_SAMPLE)]
    pub sample: usize,

    /// Relabellings in the CMMD permutation test (the smallest p-value is 1/(1 + N)).
    #[arg(long, default_value_t = cmmd::DEFAULT_PERMUTATIONS)]
    pub permutations: usize,

    /// Cosine at or above which an item counts as covered by the other run [default: the
    /// model's semantic-duplicate threshold, image or caption, from models/registry.json].
    #[arg(long)]
    pub threshold: Option<f32>,

    /// k-means clusters of the pooled samples, for the novel and vanished regions (at most one
    /// per 20 pooled items).
    #[arg(long, default_value_t = regions::DEFAULT_CLUSTERS)]
    pub clusters: usize,

    /// List the items of B (an evaluation set) that duplicate items of A (a training set), by
    /// kind (exact, perceptual, image, caption, joint), instead of comparing distributions. The
    /// matching is `sieve dedup B --against A`'s: run that first (its --kinds and thresholds
    /// apply). --out DIR writes DIR/overlap.json.
    #[arg(long)]
    pub overlap: bool,

    /// Seed of the samples, the permutations and the clusters.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn execute(args: CompareArgs, g: Global) -> anyhow::Result<()> {
    let opts = CompareOptions {
        sample: args.sample,
        permutations: args.permutations,
        threshold: args.threshold,
        clusters: args.clusters,
        seed: args.seed,
    };
    let _lock_a = RunLock::acquire(&args.a, Mode::Shared, "sieve compare")?;
    let _lock_b = RunLock::acquire(&args.b, Mode::Shared, "sieve compare")?;
    let a = Run::open(&args.a)?;
    let b = Run::open(&args.b)?;
    if args.overlap {
        return overlap(&a, &b, args.out.as_deref(), g);
    }
    let c = sieve::compare::compare(&a, &b, &opts)?;
    eprintln!("sieve compare: {}", c.verdict);
    if let Some(dir) = &args.out {
        sieve::compare::write(dir, &c, &a, &b)?;
        eprintln!("  compare.json, compare.html -> {}", dir.display());
    }
    if !g.json {
        print!("{}", human(&c));
    }
    print_json(g, &c)
}

fn overlap(a: &Run, b: &Run, out: Option<&std::path::Path>, g: Global) -> anyhow::Result<()> {
    let o = sieve::compare::overlap::overlap(a, b)?;
    let kinds: Vec<String> = o.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!(
        "sieve compare --overlap: {} of {} items of {} duplicate {} ({:.1}%){}",
        o.overlapping,
        o.eval_items,
        o.eval,
        o.train,
        100.0 * o.share,
        if kinds.is_empty() { String::new() } else { format!(": {}", kinds.join(", ")) }
    );
    if let Some(dir) = out {
        sieve::compare::overlap::write(dir, &o)?;
        eprintln!("  overlap.json -> {}", dir.display());
    }
    if !g.json {
        let mut s = String::from("kind  similarity  id  uri  duplicates\n");
        for it in &o.items {
            let train: Vec<&str> = it.train.iter().map(|m| m.uri.as_str()).collect();
            s.push_str(&format!("{}  {:.4}  {}  {}  {}\n", it.kind, it.similarity, it.id, it.uri, train.join(", ")));
        }
        print!("{s}");
    }
    print_json(g, &o)
}

fn human(c: &sieve::compare::Comparison) -> String {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let mut out = format!("A: {} ({} embedded)\nB: {} ({} embedded)\n", c.a.run, c.a.embedded, c.b.run, c.b.embedded);
    for m in &c.modalities {
        out.push_str(&format!(
            "{}: CMMD {:.4} (biased {:.4}), p = {:.4} ({} permutations); B covered by A {}, A by B {} (cosine ≥ {:.3}); \
             sampled {} / {}\n",
            m.space,
            m.cmmd,
            m.cmmd_biased,
            m.test.p_value,
            m.test.permutations,
            pct(m.coverage_b_by_a.share),
            pct(m.coverage_a_by_b.share),
            m.threshold,
            m.sampled_a,
            m.sampled_b
        ));
        for (what, list) in [("novel", &m.novel), ("vanished", &m.vanished)] {
            for r in list {
                out.push_str(&format!(
                    "  {what} region (cluster {}): {} of A, {} of B; e.g. {}\n",
                    r.cluster.cluster,
                    pct(r.cluster.share_a),
                    pct(r.cluster.share_b),
                    r.examples.iter().take(3).map(|e| e.uri.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    for n in &c.notes {
        out.push_str(&format!("{n}\n"));
    }
    if let Some(concepts) = &c.concepts {
        out.push_str("concept  A  B\n");
        for k in concepts {
            let s = |v: Option<f64>| v.map(pct).unwrap_or_else(|| "-".into());
            out.push_str(&format!("{}  {}  {}\n", k.concept, s(k.a), s(k.b)));
        }
    }
    out.push_str(&format!("verdict: {}\n", c.verdict));
    out
}
