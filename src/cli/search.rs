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
#[command(group = clap::ArgGroup::new("query").required(true).args(["text", "image", "id"]))]
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
    let query = match (args.text, args.image, args.id) {
        (Some(t), _, _) => Query::Text(t),
        (_, Some(p), _) => Query::Image(p),
        (_, _, Some(id)) => Query::Id(id),
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
        for h in &found.hits {
            out.push_str(&format!(
                "{}{:>4}  {:>10.4}  {}  {}  {}\n",
                if by { format!("{}  ", h.group.as_deref().unwrap_or("-")) } else { String::new() },
                h.rank,
                h.similarity,
                h.id,
                h.uri,
                h.caption.as_deref().map(|c| format!("{c:?}")).unwrap_or_else(|| "-".into())
            ));
        }
        print!("{out}");
    }
    print_json(g, &found)
}
