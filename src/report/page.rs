//! The page itself: a maud template (every spliced value is HTML-escaped; only the plots'
//! SVG, which this crate draws, is spliced raw) with inline CSS and a strict
//! Content-Security-Policy.

use std::collections::HashMap;
use std::path::Path;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::load::{not_run, Data, DupGroup, Metrics, Pair, Stage};
use super::plot::{self, Marker};
use super::ReportOptions;
use crate::store::Run;

/// Nothing but inline styles, inline SVG and `data:` images may load.
pub(crate) const CSP: &str =
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

const CSS: &str = r#"
:root { --fg:#1d2330; --muted:#5d6675; --line:#e2e5ea; --bg:#f6f7f9; --card:#fff; --accent:#3f6fb6; --warn:#c96a12; --kept:#1f8a4c; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; color:var(--fg); background:var(--bg); }
header { background:#1f2a3c; color:#fff; padding:20px 32px 14px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .sub { color:#c6cfdc; margin:0 0 10px; font-size:14px; word-break:break-all; }
nav a { color:#dce6f5; margin-right:18px; text-decoration:none; font-size:14px; }
nav a:hover { text-decoration:underline; }
main { max-width:1180px; margin:0 auto; padding:8px 32px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:18px 22px; margin:22px 0; }
h2 { margin:0 0 12px; font-size:19px; }
h3 { margin:20px 0 8px; font-size:16px; }
.note, .muted { color:var(--muted); }
.notrun { color:var(--muted); font-style:italic; }
.failed { color:var(--warn); }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(165px,1fr)); gap:12px; margin-bottom:14px; }
.card { border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.card .v { font-size:22px; font-weight:600; }
.card .l { color:var(--muted); font-size:13px; }
.cols { display:grid; grid-template-columns:repeat(auto-fit,minmax(320px,1fr)); gap:8px 28px; }
table { border-collapse:collapse; width:100%; font-size:14px; margin:4px 0 10px; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
td.n { white-space:nowrap; }
td.u { word-break:break-all; }
.group { border:1px solid var(--line); border-radius:6px; padding:8px 10px; margin:10px 0; }
.group .h { font-size:14px; margin-bottom:6px; }
.strip { display:flex; gap:8px; overflow-x:auto; padding-bottom:4px; }
figure { margin:0; width:132px; flex:none; }
figure img, .ph { width:128px; height:128px; object-fit:contain; background:#eef0f3; border:2px solid transparent; border-radius:4px; display:block; }
figure.kept img, figure.kept .ph { border-color:var(--kept); }
figcaption { font-size:12px; color:var(--muted); overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.ph { display:flex; align-items:center; justify-content:center; text-align:center; font-size:11px; color:var(--muted); padding:6px; overflow:hidden; }
.badge { display:inline-block; font-size:11px; font-weight:600; padding:0 6px; border-radius:9px; color:#fff; background:var(--accent); margin-right:4px; }
.badge.kept { background:var(--kept); }
.badge.flag { background:var(--warn); }
.pairs { display:grid; grid-template-columns:repeat(auto-fill,minmax(480px,1fr)); gap:12px; }
.pair { display:flex; gap:12px; border:1px solid var(--line); border-radius:6px; padding:10px; }
.pair .t { flex:1; min-width:0; }
.pair .cap { font-size:15px; margin:0 0 6px; overflow-wrap:anywhere; }
.pair .meta { font-size:13px; color:var(--muted); }
.pair .sugg { font-size:13px; margin-top:6px; padding:6px 8px; background:#f1f6ee; border-radius:4px; overflow-wrap:anywhere; }
svg.plot { width:100%; max-width:900px; height:auto; display:block; }
.plots h3 { margin-top:8px; }
.bar { background:#dbe5f3; height:14px; border-radius:2px; }
.bar span { display:block; height:14px; background:var(--accent); border-radius:2px; }
footer { color:var(--muted); font-size:13px; text-align:center; padding:10px 0 30px; }
"#;

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

/// A summary's string, or "–" where an older sieve did not write it.
fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "–"
    } else {
        s
    }
}

fn share(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

fn file_name(uri: &str) -> &str {
    Path::new(uri).file_name().and_then(|n| n.to_str()).unwrap_or(uri)
}

/// Longest caption or path shown, in characters (the metadata keeps them whole).
pub const MAX_SHOWN_CHARS: usize = 300;

/// Text from the data as the page shows it: control characters (NUL included) and the bidi
/// embedding, override and isolate characters removed, so a caption cannot reorder the text
/// around it or hide what it says, and at most `max` characters (then `…`).
pub fn shown(text: &str, max: usize) -> String {
    let bidi =
        |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}');
    let mut out = String::new();
    let chars = text.chars().filter_map(|c| match c {
        '\n' | '\r' | '\t' => Some(' '),
        c if c.is_control() || bidi(c) => None,
        c => Some(c),
    });
    for (n, c) in chars.enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// [`shown`] text in its own bidi isolate: right-to-left text stays inside its element.
fn isolated(text: &str) -> Markup {
    html! { bdi { (shown(text, MAX_SHOWN_CHARS)) } }
}

/// The `<head>` of every page sieve writes (the report, `sieve search --html`, `sieve compare`):
/// UTF-8, the Content-Security-Policy (nothing is fetched), no referrer, the title and the style.
pub(crate) fn head(title: &str, style: impl maud::Render) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta http-equiv="Content-Security-Policy" content=(CSP);
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="no-referrer";
            title { (title) }
            style { (style) }
        }
    }
}

pub(crate) type Thumbs = HashMap<String, Result<String, String>>;

/// A record's thumbnail from `thumbs` (`report::thumbs`' `make_all`), or why there is none: the
/// report's, `sieve search`'s and `sieve compare`'s pages show pictures the same way.
pub(crate) fn thumb(uri: &str, thumbs: &Thumbs) -> Markup {
    match thumbs.get(uri) {
        Some(Ok(data)) => {
            html! { img src=(data) alt=(shown(file_name(uri), MAX_SHOWN_CHARS)) title=(shown(uri, MAX_SHOWN_CHARS)); }
        }
        Some(Err(why)) => html! {
            div.ph title=(shown(&format!("{uri}: {why}"), MAX_SHOWN_CHARS)) { "no preview" br; (isolated(why)) }
        },
        None => html! { div.ph title=(shown(uri, MAX_SHOWN_CHARS)) { "no preview (thumbnail cap reached)" } },
    }
}

fn stage_note<T>(stage: &Stage<T>, cmd: &str) -> Markup {
    match stage {
        Stage::NotRun => html! { p.notrun { (not_run(cmd)) } },
        Stage::Failed(e) => html! { p.failed { (e) } },
        Stage::Ready(_) => html! {},
    }
}

fn card(value: String, label: &str) -> Markup {
    html! { div.card { div.v { (value) } div.l { (label) } } }
}

pub fn render(run: &Run, data: &Data, thumbs: &Thumbs, opts: &ReportOptions) -> String {
    let m = &run.manifest;
    let c = &m.counts;
    let name = run.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("sieve report: {name}"), PreEscaped(CSS)))
            body {
                header {
                    h1 { "sieve report: " (name) }
                    p.sub {
                        (run.dir.display()) " · model " (m.model.id) " · "
                        (count(c.records)) " records · sieve " (m.sieve_version)
                    }
                    nav {
                        a href="#summary" { "Summary" }
                        a href="#duplicates" { "Duplicates" }
                        a href="#pairs" { "Caption fit" }
                        a href="#plots" { "Distributions" }
                        a href="#diversity" { "Diversity" }
                        a href="#quality" { "Quality" }
                        @if !matches!(data.audit, Stage::NotRun) { a href="#audit" { "Concepts" } }
                        a href="#skipped" { "Skipped" }
                    }
                }
                main {
                    (summary(run, data))
                    (duplicates(data, thumbs))
                    (pairs(data, thumbs))
                    (plots(data))
                    (diversity(data))
                    (quality(data))
                    (audit(data, thumbs))
                    (skipped(run, data, opts))
                }
                footer {
                    "Made by sieve " (env!("CARGO_PKG_VERSION")) " from " (run.dir.display())
                    ". Samples and aggregates only; the full results are in the run's parquet and JSON files."
                }
            }
        }
    };
    page.into_string()
}

fn summary(run: &Run, data: &Data) -> Markup {
    let m = &run.manifest;
    let c = &m.counts;
    let dedup = data.dedup.ready();
    let pairs = data.pairs.ready();
    let dv = data.diversity.ready();
    html! {
        section #summary {
            h2 { "Summary" }
            div.cards {
                (card(count(c.records), "records in"))
                (card(count(c.embedded), "embedded"))
                (card(count(c.with_caption), "with a caption"))
                (card(count(c.skipped), "skipped"))
                (card(dedup.map_or("–".into(), |d| count(d.summary.removed as u64)),
                      "duplicates to remove"))
                (card(pairs.map_or("–".into(), |p| count(p.summary.flagged as u64)), "pairs flagged"))
                (card(num(dv.and_then(|d| d.overall.image.as_ref()).map(|i| i.vendi.q1), 1),
                      "Vendi score (images)"))
            }
            div.cols {
                div {
                    h3 { "Skipped by reason" }
                    @if c.skipped_by_reason.is_empty() {
                        p.muted { "Nothing skipped: every record was embedded." }
                    } @else {
                        table {
                            tr { th { "reason" } th.n { "records" } th.n { "share" } }
                            @for (reason, n) in &c.skipped_by_reason {
                                tr { td { (reason) } td.n { (count(*n)) } td.n { (share(*n, c.records)) } }
                            }
                        }
                    }
                    h3 { "Duplicates by kind" }
                    @match &data.dedup {
                        Stage::Ready(d) => {
                            table {
                                tr {
                                    th { "kind" } th.n { "groups" } th.n { "items in groups" } th.n { "duplicates" } th.n { "largest" }
                                    th.n title="pairs of the kind between two of its groups: what chaining would have joined (dedup/bridges.parquet)" { "bridging pairs" }
                                }
                                @for (kind, k) in &d.summary.kinds {
                                    tr {
                                        td { (kind) @if d.summary.remove_kinds.contains(kind) { " " span.badge { "removed" } } }
                                        td.n { (count(k.groups as u64)) } td.n { (count(k.items_in_groups as u64)) }
                                        td.n { (count(k.duplicates as u64)) } td.n { (count(k.largest_group as u64)) } td.n { (count(k.bridges as u64)) }
                                    }
                                }
                            }
                            p.muted {
                                "Keep " (count(d.summary.kept as u64)) ", remove "
                                (count(d.summary.removed as u64)) " ("
                                (num(Some(100.0 * d.summary.duplicate_rate), 2)) "% of the embedded items; "
                                "dedup/remove.txt lists them)."
                            }
                            // Summaries of sieves before --caption-policy have none: no line.
                            @if !d.summary.caption_policy.is_empty() {
                                p.muted {
                                    "Captions (--caption-policy " (d.summary.caption_policy) "): "
                                    (count(d.summary.captions_replaced as u64)) " kept images carry a removed copy's better-fitting caption "
                                    "(dedup/captions.parquet); " (count(d.summary.captions_dropped as u64)) " captions of removed copies are dropped."
                                }
                                @if !d.captions.is_empty() {
                                    table {
                                        tr { th { "kept image" } th { "its own caption (dropped)" } th { "the caption it keeps, from" } }
                                        @for (uri, own, caption, from) in &d.captions {
                                            tr {
                                                td { (isolated(file_name(uri))) }
                                                td { @if let Some(o) = own { (isolated(o)) } @else { span.muted { "none" } } }
                                                td { (isolated(caption)) br; span.muted { (isolated(file_name(from))) } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        other => { (stage_note(other, "dedup")) }
                    }
                    h3 { "Caption fit" }
                    @match &data.pairs {
                        Stage::Ready(p) => {
                            @let s = &p.summary;
                            table {
                                tr { th { "flag" } th.n { "pairs" } th.n { "share" } }
                                @let n = s.pairs as u64;
                                tr { td { "low_score (cosine under " (num(Some(f64::from(s.min_cosine)), 4)) ")" } td.n { (count(s.low_score as u64)) } td.n { (share(s.low_score as u64, n)) } }
                                tr { td { "outranked (top " (s.top_k) ")" } td.n { (count(s.outranked as u64)) } td.n { (share(s.outranked as u64, n)) } }
                                tr { td { "both" } td.n { (count(s.both as u64)) } td.n { (share(s.both as u64, n)) } }
                                tr { td { "flagged (either)" } td.n { (count(s.flagged as u64)) } td.n { (share(s.flagged as u64, n)) } }
                                tr { td { "a better caption found" } td.n { (count(s.better_caption_found as u64)) } td.n { (share(s.better_caption_found as u64, n)) } }
                            }
                            p.muted { (count(n)) " pairs scored; " (count(s.no_caption as u64)) " images without a caption; median cosine "
                                (num(s.cosine.percentiles.get("p50").copied().map(f64::from), 4)) "." }
                        }
                        other => { (stage_note(other, "score")) }
                    }
                }
                div {
                    h3 { "Diversity" }
                    @match &data.diversity {
                        Stage::Ready(d) => {
                            table {
                                tr { th { "embedding" } th.n { "items" } th.n { "Vendi q=1" } th.n { "effective rank" } th.n { "coverage" } th.n { "NN sim. mean" } }
                                @for (label, mm) in [("images", &d.overall.image), ("captions", &d.overall.text), ("joint", &d.overall.joint)] {
                                    @if let Some(mm) = mm { (metrics_row(label, mm)) }
                                }
                            }
                            p.muted { "Vendi score: an effective number of distinct items; coverage: share of "
                                (d.clusters) " k-means clusters holding at least "
                                (num(Some(d.coverage_min_share), 2)) " of an even share." }
                        }
                        other => { (stage_note(other, "diversity")) }
                    }
                    h3 { "Model and settings" }
                    table {
                        tr { td { "model" } td.u { (m.model.id) @if let Some(r) = &m.model.revision { " @ " (r) } } }
                        tr { td { "weights sha256" } td.u { (m.model.weights_sha256.get(..16).unwrap_or(&m.model.weights_sha256)) "…" } }
                        tr { td { "embedding" } td { (m.embed_dim) "-d, " (m.storage_dtype) ", computed in " (m.compute_dtype) " on " (m.device) } }
                        tr { td { "input" } td.u { (m.input.format) ": " (m.input.paths.join(", ")) } }
                        @if let Some(d) = dedup {
                            @let t = &d.summary.thresholds;
                            tr { td { "dedup" } td {
                                "image ≥ " (num(Some(f64::from(t.image)), 3)) ", caption ≥ " (num(Some(f64::from(t.caption)), 3))
                                ", perceptual ≤ " (t.perceptual_distance) " bits; "
                                (or_dash(&d.summary.grouping)) " grouping, keep "
                                (or_dash(&d.summary.keep)) ", index " (or_dash(&d.summary.index))
                                @if let Some(a) = &d.summary.against { "; against " (a) }
                            } }
                        }
                        @if let Some(p) = pairs {
                            tr { td { "score" } td {
                                "low_score under " (num(Some(f64::from(p.summary.min_cosine)), 4)) " ("
                                (or_dash(&p.summary.threshold_source)) "), rank test top "
                                (p.summary.top_k)
                            } }
                        }
                    }
                }
            }
        }
    }
}

fn metrics_row(label: &str, m: &Metrics) -> Markup {
    html! {
        tr {
            td { (label) } td.n { (count(m.items as u64)) } td.n { (num(Some(m.vendi.q1), 2)) }
            td.n { (num(Some(m.effective_rank), 2)) } td.n { (num(Some(m.clusters.coverage), 2)) }
            td.n { (num(m.nn_similarity.as_ref().map(|n| n.mean), 4)) }
        }
    }
}

fn group(g: &DupGroup, thumbs: &Thumbs) -> Markup {
    html! {
        div.group {
            div.h {
                strong { (g.kind) } " group " (g.group_id) " · " (g.size) " items"
                @if let Some((t, margin)) = g.margin {
                    " · threshold " (format!("{t:.3}")) ", least similar member " (format!("{:+.4}", margin)) " from it"
                }
                @if let Some(d) = g.diameter.filter(|_| g.size > 2) {
                    " · least similar two members " (format!("{d:.3}"))
                }
                @if g.size > g.members.len() { span.muted { " · first " (g.members.len()) " shown" } }
            }
            div.strip {
                @for mem in &g.members {
                    figure class=[mem.kept.then_some("kept")] {
                        (thumb(&mem.uri, thumbs))
                        figcaption {
                            @if mem.kept { span.badge.kept { "kept" } } @else { (format!("{:.4}", mem.similarity)) }
                            @if mem.source != "run" { " " span.badge { (mem.source) } }
                        }
                        figcaption title=(shown(&mem.uri, MAX_SHOWN_CHARS)) { (isolated(file_name(&mem.uri))) }
                    }
                }
            }
        }
    }
}

fn duplicates(data: &Data, thumbs: &Thumbs) -> Markup {
    html! {
        section #duplicates {
            h2 { "Duplicate groups" }
            @match &data.dedup {
                Stage::Ready(d) => {
                    @if d.total_groups == 0 {
                        p.muted { "No duplicates found." }
                    } @else {
                        p.muted { (count(d.total_groups as u64)) " groups in all. The kept item is framed in green; "
                            "the number under each other item is its similarity to the kept one "
                            "(perceptual: 1 − Hamming distance / 64)." }
                        h3 { "Largest groups" }
                        @for g in &d.largest { (group(g, thumbs)) }
                        h3 { "Nearest the threshold" }
                        @if d.borderline.is_empty() {
                            p.muted { "No other groups with a similarity threshold (exact groups have none)." }
                        }
                        @for g in &d.borderline { (group(g, thumbs)) }
                    }
                }
                other => { (stage_note(other, "dedup")) }
            }
        }
    }
}

fn pair_card(p: &Pair, thumbs: &Thumbs) -> Markup {
    html! {
        div.pair {
            figure { (thumb(&p.uri, thumbs)) figcaption title=(shown(&p.uri, MAX_SHOWN_CHARS)) { (isolated(file_name(&p.uri))) } }
            div.t {
                p.cap {
                    @match &p.caption { Some(c) => { "“" (isolated(c)) "”" } None => { span.muted { "(caption not found)" } } }
                }
                div.meta {
                    @if p.low_score { span.badge.flag { "low_score" } }
                    @if p.outranked { span.badge.flag { "outranked" } }
                    "cosine " (format!("{:.4}", p.cosine)) " · CLIPScore " (format!("{:.1}", p.clip_score))
                    " · own caption's rank " (p.caption_rank.map_or("beyond top k".into(), |r| r.to_string()))
                }
                @if let Some(s) = &p.suggested_caption {
                    div.sugg {
                        "Better fit: “" (isolated(s)) "” (cosine " (num(p.suggested_cosine.map(f64::from), 4))
                        @if let Some(id) = p.suggested_id { ", item " (id) } ")"
                    }
                }
            }
        }
    }
}

fn pairs(data: &Data, thumbs: &Thumbs) -> Markup {
    html! {
        section #pairs {
            h2 { "Caption fit" }
            @match &data.pairs {
                Stage::Ready(p) => {
                    h3 { "Lowest-scoring pairs" }
                    @if p.lowest.is_empty() { p.muted { "No pairs scored (no captions)." } }
                    div.pairs { @for x in &p.lowest { (pair_card(x, thumbs)) } }
                    h3 { "Outranked: other captions fit the image better" }
                    @if p.outranked.is_empty() {
                        p.muted { @if p.summary.outranked == 0 { "No pair is outranked." } @else { "All outranked pairs are shown above." } }
                    }
                    div.pairs { @for x in &p.outranked { (pair_card(x, thumbs)) } }
                }
                other => { (stage_note(other, "score")) }
            }
        }
    }
}

fn plots(data: &Data) -> Markup {
    html! {
        section #plots {
            h2 { "Distributions" }
            div.plots {
                div {
                    h3 { "CLIP score of each pair" }
                    @match &data.pairs {
                        Stage::Ready(p) => {
                            @let h = &p.summary.cosine.histogram;
                            @let edges = &h.edges;
                            @let marker = Some(p.summary.min_cosine).filter(|t| t.is_finite()).map(|t| Marker {
                                at: t, label: format!("low_score < {t:.3}"), highlight_below: true });
                            (PreEscaped(plot::histogram(edges, &h.counts, marker.as_ref(), "image–caption cosine (CLIPScore = 100 × cosine)", "pairs")))
                            p.muted { "Pairs left of the red line are flagged low_score (orange)." }
                        }
                        other => { (stage_note(other, "score")) }
                    }
                }
                div {
                    h3 { "Nearest-neighbour similarity of images" }
                    @match &data.nn {
                        Some(nn) => {
                            @let h = &nn.distribution.histogram;
                            @let marker = Marker { at: nn.threshold, label: format!("dedup ≥ {:.3}", nn.threshold), highlight_below: false };
                            (PreEscaped(plot::histogram(&h.edges, &h.counts, Some(&marker), "cosine to the most similar other image", "images")))
                            p.muted {
                                "Each image's similarity to its nearest other image ("
                                @if nn.queries == nn.items { "all " (count(nn.items as u64)) " images" }
                                @else { "a seeded sample of " (count(nn.queries as u64)) " of " (count(nn.items as u64)) }
                                ", exact search). The red line is the image dedup threshold"
                                @if !nn.threshold_from_dedup { " (the model's default; `sieve dedup` has not been run)" }
                                "; images right of it have a near-duplicate."
                            }
                        }
                        None => { p.muted { "Fewer than two embedded images." } }
                    }
                }
            }
        }
    }
}

fn diversity(data: &Data) -> Markup {
    const MAX_ROWS: usize = 60;
    html! {
        section #diversity {
            h2 { "Diversity per group" }
            @match &data.diversity {
                Stage::Ready(d) => {
                    @match &d.by {
                        None => { p.notrun { "No groups measured (run `sieve diversity RUN --by folder`, or another metadata column)." } }
                        Some(by) => {
                            @let top = d.groups.iter().filter_map(|g| Some(g.metrics.image.as_ref()?.vendi.q1)).fold(0.0f64, f64::max);
                            p.muted { (d.groups.len()) " groups by " code { (by) } ". The bar is the images' Vendi score (an effective number of distinct images)." }
                            table {
                                tr { th { (by) } th.n { "items" } th { "Vendi (images)" } th.n { "" } th.n { "Vendi (captions)" } th.n { "coverage" } th.n { "NN sim. mean" } }
                                @for g in d.groups.iter().take(MAX_ROWS) {
                                    @let img = g.metrics.image.as_ref();
                                    @let v = img.map(|i| i.vendi.q1).filter(|v| v.is_finite());
                                    tr {
                                        td.u { (g.value.as_deref().unwrap_or("(none)")) }
                                        td.n { (count(g.metrics.items as u64)) }
                                        td style="width:30%" {
                                            div.bar { span style=(format!("width:{:.1}%", if top > 0.0 { 100.0 * v.unwrap_or(0.0) / top } else { 0.0 })) {} }
                                        }
                                        td.n { (num(v, 2)) }
                                        td.n { (num(g.metrics.text.as_ref().map(|t| t.vendi.q1), 2)) }
                                        td.n { (num(img.map(|i| i.clusters.coverage), 2)) }
                                        td.n { (num(img.and_then(|i| i.nn_similarity.as_ref()).map(|n| n.mean), 4)) }
                                    }
                                }
                            }
                            @if d.groups.len() > MAX_ROWS { p.muted { "First " (MAX_ROWS) " groups shown; diversity.json has all." } }
                        }
                    }
                }
                other => { (stage_note(other, "diversity")) }
            }
        }
    }
}

fn quality(data: &Data) -> Markup {
    html! {
        section #quality {
            h2 { "Quality flags" }
            @match &data.quality {
                Stage::Ready(q) => {
                    @if q.with_caption == 0 {
                        p.muted { (count(q.flagged_image as u64)) " items flagged for the image; no captions in this run, "
                            "so no caption flags." }
                    } @else {
                        p.muted { (count(q.flagged as u64)) " items flagged (" (count(q.flagged_image as u64)) " for the image, "
                            (count(q.flagged_caption as u64)) " for the caption)." }
                    }
                    table {
                        tr { th { "flag" } th { "rule" } th.n { "items" } th.n { "of measured" } th.n { "share" } }
                        @for f in &q.flags {
                            tr { td { (f.name) " " span.muted { (f.modality) } } td { (f.rule) } td.n { (count(f.count as u64)) }
                                 td.n { (count(f.measured as u64)) } td.n { (share(f.count as u64, f.measured as u64)) } }
                        }
                    }
                }
                other => { (stage_note(other, "quality")) }
            }
        }
    }
}

/// The concept audit (only when it was run): per group, each concept's share of the images
/// (and captions), under-represented ones marked, and a few example thumbnails.
fn audit(data: &Data, thumbs: &Thumbs) -> Markup {
    if matches!(data.audit, Stage::NotRun) {
        return html! {};
    }
    html! {
        section #audit {
            h2 { "Concept coverage" }
            @match &data.audit {
                Stage::Ready(a) => {
                    p.muted { "Zero-shot, by the run's model (" (a.templates) " prompts), from " code { (shown(&a.concepts_file, MAX_SHOWN_CHARS)) }
                        ": an item gets a concept when it leads the next by a cosine of at least " (format!("{}", a.margin))
                        ", else none. Under-represented: under " (format!("{}", a.under_represented_below)) " of an even share." }
                    @for g in &a.audit {
                        h3 { (isolated(&g.group)) }
                        @if let Some(ag) = &g.agreement {
                            p.muted { "Image and caption agree on " (share(ag.agree as u64, ag.items as u64)) " of "
                                (count(ag.items as u64)) " captioned items; " (count(ag.disagree as u64)) " name two different concepts." }
                        }
                        table {
                            tr { th { "concept" } th.n { "images" } th style="width:25%" { "" } th.n { "share" } th.n { "captions" } th { "examples" } }
                            @for (i, c) in g.image.concepts.iter().enumerate() {
                                @let under = g.image.under_represented.contains(&c.concept);
                                tr {
                                    td style="white-space:nowrap" { (isolated(&c.concept)) @if under { " " span.badge.flag { "under-represented" } } }
                                    td.n { (count(c.count as u64)) }
                                    td { div.bar { span style=(format!("width:{:.1}%", 100.0 * c.share)) {} } }
                                    td.n { (format!("{:.1}%", 100.0 * c.share)) }
                                    td.n { (g.caption.as_ref().and_then(|s| s.concepts.get(i)).map(|x| format!("{:.1}%", 100.0 * x.share)).unwrap_or_else(|| "–".into())) }
                                    td { div.strip { @for e in g.examples.get(&c.concept).into_iter().flatten() { figure { (thumb(&e.uri, thumbs)) } } } }
                                }
                            }
                        }
                        @if !g.disagreements.is_empty() {
                            p.muted { "Where image and caption name different concepts (image / caption):" }
                            div.strip {
                                @for d in &g.disagreements {
                                    figure { (thumb(&d.uri, thumbs)) figcaption { (isolated(&d.image_concept)) " / " (isolated(&d.caption_concept)) } }
                                }
                            }
                        }
                    }
                }
                other => { (stage_note(other, "audit")) }
            }
        }
    }
}

fn skipped(run: &Run, data: &Data, opts: &ReportOptions) -> Markup {
    let c = &run.manifest.counts;
    html! {
        section #skipped {
            h2 { "Skipped files" }
            @if c.skipped == 0 {
                p.muted { "None: every record was embedded." }
            } @else {
                p.muted {
                    (count(c.skipped)) " records were not embedded: "
                    @for (i, (reason, n)) in c.skipped_by_reason.iter().enumerate() {
                        @if i > 0 { ", " } (reason) " " (count(*n))
                    }
                    "." @if c.skipped as usize > data.skipped.len() { " The first " (data.skipped.len()) " are listed (--skipped " (opts.skipped) "); RUN/metadata has them all." }
                }
                table {
                    tr { th { "uri" } th { "reason" } th { "detail" } }
                    @for s in &data.skipped {
                        tr {
                            td.u { (isolated(&s.uri)) }
                            td { (isolated(&s.reason)) }
                            td.u { (isolated(s.error.as_deref().unwrap_or(""))) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captions reach the page without NULs or bidi controls (an RLO could make `gpj.exe` read
    /// as `exe.jpg`), and shortened: the report stays bounded whatever the captions.
    #[test]
    fn shown_text_is_clean_and_bounded() {
        assert_eq!(shown("a\u{0}b\u{202E}gpj.exe\u{2066}x\u{2069}\nnext", 100), "abgpj.exex next");
        let long = "é".repeat(50_000_000 / 2);
        let s = shown(&long, MAX_SHOWN_CHARS);
        assert_eq!(s.chars().count(), MAX_SHOWN_CHARS + 1);
        assert!(s.ends_with('…'));
        let html = isolated("\u{5e9}\u{5dc}\u{5d5}\u{5dd}").into_string();
        assert_eq!(html, "<bdi>\u{5e9}\u{5dc}\u{5d5}\u{5dd}</bdi>");
    }
}
