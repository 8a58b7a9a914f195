//! The comparison as one self-contained HTML page, like the report: thumbnails of each region's
//! examples embedded as `data:` URIs (made as the report makes them), the report's
//! Content-Security-Policy, nothing fetched.

use maud::{html, Markup, DOCTYPE};

use super::{Comparison, Modality, Region};
use crate::report::page::{head, shown, thumb, Thumbs, MAX_SHOWN_CHARS};
use crate::report::thumbs::Thumbnailer;
use crate::store::Run;

/// Thumbnail size, px.
const THUMB: u32 = 128;

/// The page for `c`, with thumbnails of the novel regions' examples read from `b` and the
/// vanished regions' from `a`.
pub fn page(c: &Comparison, a: &Run, b: &Run) -> String {
    let uris = |f: fn(&Modality) -> &Vec<Region>| -> Vec<String> {
        c.modalities.iter().flat_map(|m| f(m).iter().flat_map(|r| r.examples.iter().map(|e| e.uri.clone()))).collect()
    };
    let thumbs_b = Thumbnailer::new(b.manifest.limits, THUMB).make_all(&uris(|m| &m.novel));
    let thumbs_a = Thumbnailer::new(a.manifest.limits, THUMB).make_all(&uris(|m| &m.vanished));
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let regions = |title: &str, list: &[Region], thumbs: &Thumbs| -> Markup {
        html! {
            h3 { (title) " (" (list.len()) ")" }
            @if list.is_empty() { p.muted { "none" } }
            @for r in list {
                div.region {
                    p { "cluster " (r.cluster.cluster) ": " (pct(r.cluster.share_a)) " of A's sample, "
                        (pct(r.cluster.share_b)) " of B's (" (r.cluster.items_a) " and " (r.cluster.items_b)
                        " items); " (pct(r.covered)) " of its items covered by the other run" }
                    @for e in &r.examples {
                        figure {
                            (thumb(&e.uri, thumbs))
                            figcaption {
                                "id " (e.id) br;
                                bdi title=(shown(&e.uri, MAX_SHOWN_CHARS)) { (shown(&e.uri, 80)) }
                                @if let Some(cap) = &e.caption { br; "“" bdi { (shown(cap, MAX_SHOWN_CHARS)) } "”" }
                            }
                        }
                    }
                }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("sieve compare", format!(
                "body{{font:14px system-ui,sans-serif;margin:1.5em;max-width:70em}}\
                 table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.2em .6em;text-align:left}}\
                 figure{{display:inline-block;width:{}px;vertical-align:top;margin:.4em}}\
                 figcaption{{font-size:12px;overflow-wrap:anywhere}}\
                 .ph{{width:{THUMB}px;height:{THUMB}px;background:#eee;font-size:11px}}.muted{{color:#666}}\
                 .verdict{{font-size:1.2em;font-weight:600}}",
                THUMB + 16
            )))
            body {
                h1 { "sieve compare" }
                p.verdict { (c.verdict) }
                table {
                    tr { th { "" } th { "run" } th { "embedded" } th { "with caption" } }
                    tr { td { "A" } td { bdi { (shown(&c.a.run, MAX_SHOWN_CHARS)) } } td { (c.a.embedded) } td { (c.a.with_caption) } }
                    tr { td { "B" } td { bdi { (shown(&c.b.run, MAX_SHOWN_CHARS)) } } td { (c.b.embedded) } td { (c.b.with_caption) } }
                }
                p.muted { "model " bdi { (shown(&c.model, MAX_SHOWN_CHARS)) } "; at most " (c.options.sample)
                    " items sampled per run and modality (seed " (c.options.seed) "); " (c.options.permutations)
                    " permutations; " (c.options.clusters) " clusters" }
                @for n in &c.notes { p.muted { (n) } }
                @for m in &c.modalities {
                    h2 { (m.space) " embeddings" }
                    table {
                        tr { th { "CMMD (unbiased)" } td { (format!("{:.4}", m.cmmd)) } }
                        tr { th { "CMMD (biased, as google-research/cmmd)" } td { (format!("{:.4}", m.cmmd_biased)) } }
                        tr { th { "permutation p-value" } td { (format!("{:.4}", m.test.p_value)) " (" (m.test.permutations)
                            " permutations of " (m.test.items_a) " + " (m.test.items_b) " items)" } }
                        tr { th { "B covered by A" } td { (pct(m.coverage_b_by_a.share)) " (nearest cosine ≥ "
                            (format!("{:.3}", m.threshold)) "; median nearest " (format!("{:.3}", m.coverage_b_by_a.nearest_p50)) ")" } }
                        tr { th { "A covered by B" } td { (pct(m.coverage_a_by_b.share)) " (median nearest "
                            (format!("{:.3}", m.coverage_a_by_b.nearest_p50)) ")" } }
                        tr { th { "sampled" } td { (m.sampled_a) " from A, " (m.sampled_b) " from B" } }
                    }
                    (regions("Novel regions: B holds them, A does not", &m.novel, &thumbs_b))
                    (regions("Vanished regions: A holds them, B does not", &m.vanished, &thumbs_a))
                }
                @if let Some(concepts) = &c.concepts {
                    h2 { "Concepts (sieve audit)" }
                    table {
                        tr { th { "concept" } th { "A" } th { "B" } }
                        @for k in concepts {
                            tr { td { bdi { (shown(&k.concept, MAX_SHOWN_CHARS)) } }
                                td { (k.a.map(pct).unwrap_or_else(|| "–".into())) }
                                td { (k.b.map(pct).unwrap_or_else(|| "–".into())) } }
                        }
                    }
                }
            }
        }
    }
    .into_string()
}
