//! `sieve search`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sieve::device::DeviceSpec;
use sieve::model::ModelSpec;
use sieve::search::{Query, SearchOptions, Space};
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Run;

use super::common::device;
use super::{print_json, Global};

/// Which stored embeddings `sieve search` compares the query with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpaceArg {
    /// The images' embeddings (text→image, image→image).
    Image,
    /// The captions' embeddings (text→caption, image→caption).
    Caption,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("query").required(true).args(["text", "image", "id", "queries"]))]
pub struct SearchArgs {
    /// Run directory to search.
    pub run: PathBuf,

    /// Find the items nearest this text, embedded by the run's caption tower.
    #[arg(long)]
    pub text: Option<String>,

    /// Find the items nearest this picture, embedded by the run's image tower.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,

    /// Find the items nearest this record of the run (its stored embedding; no model is loaded).
    #[arg(long)]
    pub id: Option<u64>,

    /// Many text queries, one a line (blank lines skipped): embedded in batches and searched in
    /// one pass over the run, through dedup's exact index on --device; the answer for each is
    /// what --text gives for it alone. Not with --by or --html.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["by", "html"])]
    pub queries: Option<PathBuf>,

    /// Search the image embeddings or the caption embeddings.
    #[arg(long, value_enum, default_value_t = SpaceArg::Image)]
    pub space: SpaceArg,

    /// How many items to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,

    /// The model for a --text or --image query [default: the run's, from run.json]; its weights
    /// must be the run's.
    #[arg(long)]
    pub model: Option<String>,

    /// Hub revision of --model.
    #[arg(long)]
    pub revision: Option<String>,

    /// List the top N within each value of this metadata column (e.g. `folder`, the uri's
    /// folder, or `key`, `reason`…) instead of overall.
    #[arg(long, value_name = "COLUMN")]
    pub by: Option<String>,

    /// Also write the hits as an HTML page with thumbnails (self-contained, like the report).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Compute device for the query: auto, cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto", value_parser = device)]
    pub device: DeviceSpec,
}

pub fn execute(args: SearchArgs, g: Global) -> anyhow::Result<()> {
    let query = match (args.text, args.image, args.id, &args.queries) {
        (Some(t), _, _, _) => Query::Text(t),
        (_, Some(p), _, _) => Query::Image(p),
        (_, _, Some(id), _) => Query::Id(id),
        (_, _, _, Some(_)) => Query::Text(String::new()),
        _ => unreachable!("clap requires one query"),
    };
    let opts = SearchOptions {
        query,
        space: match args.space {
            SpaceArg::Image => Space::Image,
            SpaceArg::Caption => Space::Caption,
        },
        top: args.top,
        model: args.model.map(|m| ModelSpec::new(m, args.revision)),
        device: args.device,
        by: args.by,
    };
    let _lock = RunLock::acquire(&args.run, Mode::Shared, "sieve search")?;
    let run = Run::open(&args.run)?;
    if let Some(file) = &args.queries {
        let texts = sieve::search::read_queries(file)?;
        let all = sieve::search::search_many(&run, &texts, &opts)?;
        eprintln!(
            "sieve search: {} queries, {} nearest each of {} {} embeddings",
            all.len(),
            opts.top,
            all.first().map_or(0, |f| f.searched),
            if opts.space == Space::Caption { "caption" } else { "image" }
        );
        if !g.json {
            let mut out = String::from("query  rank  similarity  id  uri  caption\n");
            for (q, found) in all.iter().enumerate() {
                out.push_str(&table(&found.hits, &format!("{}  ", q + 1), false));
            }
            print!("{out}");
        }
        return print_json(g, &all);
    }
    let found = sieve::search::search(&run, &opts)?;
    eprintln!(
        "sieve search: {} nearest of {} {} embeddings to {}",
        found.hits.len(),
        found.searched,
        if opts.space == Space::Caption { "caption" } else { "image" },
        found.query
    );
    if let Some(path) = &args.html {
        let page = sieve::search::html(&found, &run, 160);
        sieve::store::write_atomic(path, |w| std::io::Write::write_all(w, page.as_bytes()))?;
        eprintln!("  page with thumbnails -> {}", path.display());
    }
    if !g.json {
        let by = opts.by.is_some();
        let mut out = format!("{}rank  similarity  id  uri  caption\n", if by { "group  " } else { "" });
        out.push_str(&table(&found.hits, "", by));
        print!("{out}");
    }
    print_json(g, &found)
}

/// The hits as table rows, each after `lead` (and its group, `-` for none, with `by`).
fn table(hits: &[sieve::search::Hit], lead: &str, by: bool) -> String {
    let mut out = String::new();
    for h in hits {
        out.push_str(&format!(
            "{lead}{}{:>4}  {:>10.4}  {}  {}  {}\n",
            if by { format!("{}  ", h.group.as_deref().unwrap_or("-")) } else { String::new() },
            h.rank,
            h.similarity,
            h.id,
            h.uri,
            h.caption.as_deref().map(|c| format!("{c:?}")).unwrap_or_else(|| "-".into())
        ));
    }
    out
}
