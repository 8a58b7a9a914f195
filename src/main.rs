//! The `sieve` binary: parse arguments, run, print errors with their causes, map to exit codes
//! (0 done, even with skipped files; 1 the run could not be done; 2 bad usage).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sieve::cli::{Cli, Command};
use sieve::store::lock::{Mode, RunLock};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("error: {err:#}");
            match err.downcast_ref::<sieve::Error>() {
                Some(sieve::Error::InvalidArg { .. }) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn print_run_summary(what: &str, m: &sieve::store::RunManifest, out: &std::path::Path) {
    let c = &m.counts;
    eprintln!(
        "{what} {} records, {} embedded ({} with captions), {} skipped -> {}",
        c.records,
        c.embedded,
        c.with_caption,
        c.skipped,
        out.display()
    );
    for (reason, n) in &c.skipped_by_reason {
        eprintln!("  skipped {n:>8}  {reason}");
    }
    if c.captions_truncated > 0 || c.captions_lossy > 0 {
        eprintln!(
            "  captions truncated to {} tokens: {}, not UTF-8 (decoded lossily): {}",
            m.text_max_tokens, c.captions_truncated, c.captions_lossy
        );
    }
}

/// With `--json`, prints `value` as one line of JSON on stdout.
fn print_json(json: bool, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(value)?)?;
    }
    Ok(())
}

fn print_dedup_summary(what: &str, s: &sieve::analyze::dedup::Summary, run: &std::path::Path) {
    eprintln!(
        "{what}: {} embedded, keep {}, remove {} ({:.2}%) -> {}",
        s.embedded,
        s.kept,
        s.removed,
        100.0 * s.duplicate_rate,
        run.join("dedup").display()
    );
    for (kind, k) in &s.kinds {
        eprintln!("  {kind:<10} {:>8} groups {:>8} duplicates", k.groups, k.duplicates);
    }
}

fn print_score_summary(s: &sieve::analyze::pairs::Summary, run: &std::path::Path) {
    if s.pairs == 0 {
        eprintln!(
            "sieve score: no image-caption pairs (no embedded item has a caption) -> {}",
            run.join("pairs.parquet").display()
        );
        return;
    }
    eprintln!(
        "sieve score: {} pairs, median cosine {:.4}; flagged {} (low_score {} under {:.4}, outranked {}) -> {}",
        s.pairs,
        s.cosine.percentiles.get("p50").copied().unwrap_or(f32::NAN),
        s.flagged,
        s.low_score,
        s.min_cosine,
        s.outranked,
        run.join("pairs.parquet").display()
    );
}

fn print_quality_summary(s: &sieve::analyze::quality::Summary, run: &std::path::Path) {
    // Image and caption problems apart, each with its flags' counts; a run without captions
    // says so instead of counting every item as missing one.
    let counts = |modality: &str| {
        let parts: Vec<String> = s
            .flags
            .iter()
            .filter(|f| f.modality == modality && f.count > 0)
            .map(|f| format!("{} {}", f.name, f.count))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let captions = if s.with_caption == 0 {
        "no captions in this run, caption flags not applied".to_string()
    } else {
        format!("{} with a caption problem{}", s.flagged_caption, counts("caption"))
    };
    eprintln!(
        "sieve quality: {} records, {} embedded; {} with an image problem{}; {} -> {}",
        s.records,
        s.embedded,
        s.flagged_image,
        counts("image"),
        captions,
        run.join("quality.parquet").display()
    );
    for f in &s.flags {
        eprintln!("  {:<16} {:>8} of {:>8}  {}", f.name, f.count, f.measured, f.rule);
    }
}

fn print_diversity_summary(r: &sieve::analyze::diversity::Report, run: &std::path::Path) {
    eprintln!(
        "sieve diversity: {} embedded ({} with captions) -> {}",
        r.embedded,
        r.with_caption,
        run.join("diversity.json").display()
    );
    for (name, m) in [("image", &r.overall.image), ("caption", &r.overall.text), ("joint", &r.overall.joint)] {
        if let Some(m) = m {
            eprintln!(
                "  {name:<8} Vendi {:>9.2}  effective rank {:>7.2}  coverage {:.2}  NN similarity mean {}",
                m.vendi.q1,
                m.effective_rank,
                m.clusters.coverage,
                m.nn_similarity.as_ref().map(|s| format!("{:.4}", s.mean)).unwrap_or_else(|| "-".into())
            );
        }
    }
    if let Some(by) = &r.by {
        eprintln!("  {} groups by {by}", r.groups.len());
    }
}

fn print_report_summary(s: &sieve::report::ReportSummary) {
    eprintln!(
        "sieve report: {} KB, {} thumbnails ({} placeholders) in {:.1}s -> {}",
        s.bytes.div_ceil(1024),
        s.thumbnails,
        s.placeholders,
        s.seconds,
        s.path.display()
    );
    for section in s.sections.iter().filter(|s| !s.present) {
        eprintln!("  {:<11} {}", section.name, section.note.as_deref().unwrap_or("empty"));
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    sieve::progress::set_quiet(cli.quiet);
    let json = cli.json;
    match cli.command {
        Command::Run(args) => {
            let opts = args.to_options(cli.quiet)?;
            let run = opts.embed.out.clone();
            let _lock = RunLock::acquire(&run, Mode::Exclusive, "sieve run")?;
            let s = sieve::run::run(&opts, |stage, status| {
                use sieve::run::StageStatus;
                match status {
                    StageStatus::Ran => eprintln!("sieve run: {stage}…"),
                    StageStatus::Done => eprintln!("sieve run: {stage} already done with these options; skipped"),
                    StageStatus::Skipped => eprintln!("sieve run: {stage} left out (--skip)"),
                }
            })?;
            if s.embed.resumed_rows > 0 {
                eprintln!("sieve run: embedding resumed after {} records already written", s.embed.resumed_rows);
            }
            print_run_summary("sieve embed", &s.embed.manifest, &run);
            if let Some(d) = &s.dedup.summary {
                print_dedup_summary("sieve dedup", d, &run);
            }
            if let Some(p) = &s.score.summary {
                print_score_summary(p, &run);
            }
            if let Some(q) = &s.quality.summary {
                print_quality_summary(q, &run);
            }
            if let Some(r) = &s.diversity.summary {
                print_diversity_summary(r, &run);
            }
            if let Some(r) = &s.report.summary {
                print_report_summary(r);
            }
            print_json(json, &s)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed(args) => {
            let opts = args.to_options(cli.quiet)?;
            let _lock = RunLock::acquire(&opts.out, Mode::Exclusive, "sieve embed")?;
            let outcome = sieve::pipeline::embed(&opts)?;
            if outcome.already_complete {
                eprintln!("sieve embed: {} already holds this run, finished; nothing to do", opts.out.display());
            } else if outcome.resumed_rows > 0 {
                eprintln!("sieve embed: resumed after {} records already written", outcome.resumed_rows);
            }
            print_run_summary("sieve embed", &outcome.manifest, &opts.out);
            print_json(json, &outcome.manifest)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge(args) => {
            let opts = args.to_options()?;
            let _lock = RunLock::acquire(&opts.out, Mode::Exclusive, "sieve merge")?;
            let outcome = sieve::store::merge::merge_run(&opts)?;
            if outcome.already_complete {
                eprintln!("sieve merge: {} already holds this merge, finished; nothing to do", opts.out.display());
            } else if outcome.resumed_rows > 0 {
                eprintln!("sieve merge: resumed after {} records already written", outcome.resumed_rows);
            }
            let m = outcome.manifest;
            print_run_summary(&format!("sieve merge: {} runs,", opts.runs.len()), &m, &opts.out);
            print_json(json, &m)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dedup(args) if args.calibrate => {
            let opts = args.to_options()?;
            let c = sieve::analyze::calibrate::calibrate(&opts)?;
            eprintln!(
                "sieve dedup --calibrate: {} embedded, {} removed at the default thresholds; removal rate by threshold \
                 (* default):",
                c.embedded, c.removed_at_defaults
            );
            for line in sieve::analyze::calibrate::sweep_lines(&c) {
                eprintln!("{line}");
            }
            eprintln!("  see {}", opts.run.join("dedup/calibrate.html").display());
            print_json(json, &c)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dedup(args) => {
            let opts = args.to_options()?;
            let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve dedup")?;
            let s = sieve::analyze::dedup::dedup(&opts)?;
            print_dedup_summary("sieve dedup", &s, &opts.run);
            print_json(json, &s)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DedupCentroids(args) => {
            let (opts, out) = args.to_options()?;
            let m = sieve::analyze::partition::compute_centroids(&opts, &out)?;
            for (space, c) in &m.spaces {
                eprintln!("sieve dedup-centroids: {space}: {} clusters of {} vectors", c.clusters, c.vectors);
            }
            eprintln!("  -> {}", out.display());
            print_json(json, &m)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DedupPartition(args) => {
            let (opts, centroids, part, out) = args.to_options()?;
            let info = sieve::analyze::partition::partition(&opts, &centroids, part, &out)?;
            let counts: Vec<String> = info.pairs.iter().map(|(k, n)| format!("{n} {k}")).collect();
            eprintln!(
                "sieve dedup-partition {part}: {} pairs -> {}",
                if counts.is_empty() { "no".into() } else { counts.join(", ") },
                out.join(&info.file).display()
            );
            print_json(json, &info)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DedupCombine(args) => {
            let opts = args.to_options()?;
            let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve dedup-combine")?;
            let s = sieve::analyze::dedup::dedup(&opts)?;
            print_dedup_summary("sieve dedup-combine", &s, &opts.run);
            print_json(json, &s)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Score(args) => {
            let opts = args.to_options()?;
            let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve score")?;
            let s = sieve::analyze::pairs::score(&opts)?;
            print_score_summary(&s, &opts.run);
            print_json(json, &s)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diversity(args) => {
            let opts = args.to_options()?;
            let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve diversity")?;
            let r = sieve::analyze::diversity::diversity(&opts)?;
            print_diversity_summary(&r, &opts.run);
            print_json(json, &r)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quality(args) => {
            let opts = args.to_options()?;
            let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve quality")?;
            let s = sieve::analyze::quality::quality(&opts)?;
            print_quality_summary(&s, &opts.run);
            print_json(json, &s)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Select(args) => {
            let opts = args.to_options()?;
            let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve select")?;
            let s = sieve::analyze::select::select(&opts)?;
            eprintln!(
                "sieve select: {} of a pool of {} ({} embedded, {} duplicates, {} flagged pairs and {} of low \
                 quality dropped) -> {}",
                s.selected,
                s.pool,
                s.embedded,
                s.dropped_duplicates,
                s.dropped_flagged,
                s.dropped_quality,
                opts.run.join("selection/keep.txt").display()
            );
            let (a, b) = (&s.selection_diversity, &s.random_diversity);
            eprintln!(
                "  Vendi {:.2} vs {:.2} for a random subset; coverage {:.2} vs {:.2}",
                a.vendi_q1, b.vendi_q1, a.coverage, b.coverage
            );
            print_json(json, &s)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            let opts = args.to_options()?;
            let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve report")?;
            let s = sieve::report::report(&opts)?;
            print_report_summary(&s);
            print_json(json, &s)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            let _lock = RunLock::acquire(&args.run, Mode::Shared, "sieve verify")?;
            let s = sieve::store::read::verify(&args.run)?;
            eprintln!(
                "sieve verify: {} ok: {} parts, {} rows, {} files matched their checksums",
                args.run.display(),
                s.parts,
                s.rows,
                s.checksums
            );
            print_json(json, &s)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            let mut out = std::io::stdout().lock();
            if let Some(dir) = &args.write_jpegs {
                sieve::bench::write_jpegs(dir, args.count)?;
                eprintln!("sieve bench: wrote {} JPEGs to {}", args.count, dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(dir) = &args.decode {
                let model = sieve::model::ModelSpec::new(args.model.clone(), None);
                let r = sieve::pipeline::cpu_stage_rate(dir, &model, Default::default(), args.batch_size)?;
                if json {
                    writeln!(out, "{}", serde_json::to_string(&r)?)?;
                } else {
                    writeln!(
                        out,
                        "CPU stage: {} records ({} decoded) on {} threads: {:.1} images/s with quality signals \
                         ({:.2}s), {:.1} images/s without ({:.2}s): ratio {:.3} ({:+.1}%)",
                        r.records,
                        r.decoded,
                        r.threads,
                        r.images_per_s,
                        r.seconds,
                        r.images_per_s_without_signals,
                        r.seconds_without_signals,
                        r.signals_ratio,
                        100.0 * (r.signals_ratio - 1.0)
                    )?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let config = sieve::model::ClipConfig::from_file(&args.config)?;
            let device = sieve::device::open(args.device.parse()?)?;
            let t = if args.stock {
                sieve::bench::run_stock(&config, &device, args.batch_size, args.iters)
            } else {
                sieve::bench::run(&config, &device, args.batch_size, args.iters, args.parity)
            }
            .with_context(|| format!("benchmarking {}", args.config.display()))?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&t)?)?;
            } else {
                writeln!(
                    out,
                    "{} {} batch {}: {:.1} images/s, {:.1} captions/s (text length {})",
                    t.device, t.dtype, t.batch_size, t.images_per_s, t.captions_per_s, t.text_seq_len
                )?;
                if let Some(p) = &t.parity {
                    writeln!(
                        out,
                        "parity with f32 on the CPU ({} items): lowest cosine {:.6} images, {:.6} captions",
                        p.items, p.min_cosine_images, p.min_cosine_captions
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
