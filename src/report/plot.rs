//! The report's plots, drawn by plotters' SVG backend into a string and inlined in the page.
//! plotters is built without its font features: the SVG backend writes `<text>` elements that
//! the browser lays out with its own fonts, so no font files or fontconfig are needed.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Plot size in SVG pixels (the page scales it to its column).
const WIDTH: u32 = 900;
const HEIGHT: u32 = 300;
const BAR: RGBColor = RGBColor(74, 122, 191);
const FLAGGED: RGBColor = RGBColor(230, 145, 56);
const MARKER: RGBColor = RGBColor(200, 40, 40);

/// A vertical line drawn over a histogram (a threshold), and which side of it is highlighted.
#[derive(Debug, Clone)]
pub struct Marker {
    pub at: f32,
    pub label: String,
    /// Bins wholly below the line are highlighted (else bins reaching it or above).
    pub highlight_below: bool,
}

/// A histogram over equal-width bins (`edges` has one more entry than `counts`) as an inline
/// SVG element; on failure, a short note saying why there is no plot.
pub fn histogram(edges: &[f32], counts: &[u64], marker: Option<&Marker>, x_desc: &str, y_desc: &str) -> String {
    if counts.is_empty() || edges.len() != counts.len() + 1 || edges.iter().any(|e| !e.is_finite()) {
        return "<p class=\"note\">no values to plot</p>".into();
    }
    let mut svg = String::new();
    let drawn = draw_histogram(&mut svg, edges, counts, marker, x_desc, y_desc);
    match drawn {
        Ok(()) => inline(svg),
        Err(e) => maud::html! { p.note { "plot failed: " (e) } }.into_string(),
    }
}

fn draw_histogram(
    svg: &mut String,
    edges: &[f32],
    counts: &[u64],
    marker: Option<&Marker>,
    x_desc: &str,
    y_desc: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut lo = edges[0] as f64;
    let mut hi = *edges.last().expect("non-empty") as f64;
    if let Some(m) = marker.filter(|m| m.at.is_finite()) {
        lo = lo.min(m.at as f64);
        hi = hi.max(m.at as f64);
    }
    let pad = ((hi - lo) * 0.03).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    // Integer counts on the y axis, with headroom for the marker's label.
    let top = ((counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.15).ceil() as u64).max(2);
    {
        let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d(lo..hi, 0u64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 228, 232))
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(9)
            .y_labels(5)
            .x_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        let highlighted = |a: f32, b: f32| match marker {
            Some(m) if m.highlight_below => b <= m.at,
            Some(m) => a >= m.at || b > m.at,
            None => false,
        };
        chart.draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| {
            let (a, b) = (edges[i], edges[i + 1]);
            let colour = if highlighted(a, b) { FLAGGED } else { BAR };
            Rectangle::new([(a as f64, 0), (b as f64, c)], colour.filled())
        }))?;
        if let Some(m) = marker.filter(|m| m.at.is_finite()) {
            let x = m.at as f64;
            chart.draw_series(std::iter::once(PathElement::new(vec![(x, 0), (x, top)], MARKER.stroke_width(2))))?;
            let right_half = x > (lo + hi) / 2.0;
            let pos = if right_half { Pos::new(HPos::Right, VPos::Top) } else { Pos::new(HPos::Left, VPos::Top) };
            let dx = if right_half { -(hi - lo) * 0.008 } else { (hi - lo) * 0.008 };
            let style = ("sans-serif", 15).into_font().color(&MARKER).pos(pos);
            chart.draw_series(std::iter::once(Text::new(m.label.clone(), (x + dx, top), style)))?;
        }
        root.present()?;
    }
    Ok(())
}

/// plotters writes a standalone SVG document; inside HTML the namespace is implied, and dropping
/// it keeps the page free of any `http://` string a reader might take for a request.
fn inline(svg: String) -> String {
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1).replacen(
        "<svg ",
        "<svg class=\"plot\" role=\"img\" preserveAspectRatio=\"xMinYMin meet\" ",
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_inline_svg_with_the_marker_and_no_namespace_url() {
        let edges: Vec<f32> = (0..=10).map(|i| i as f32 / 10.0).collect();
        let counts = vec![1, 2, 3, 4, 5, 6, 5, 4, 3, 2];
        let m = Marker { at: 0.25, label: "threshold 0.25".into(), highlight_below: true };
        let svg = histogram(&edges, &counts, Some(&m), "cosine", "pairs");
        assert!(svg.starts_with("<svg class=\"plot\""), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.contains("threshold 0.25") && svg.contains("cosine"));
        assert!(!svg.contains("http"), "{svg}");
        assert!(histogram(&[], &[], None, "x", "y").contains("no values"));
    }
}
