//! The latency plot: empirical CDF of claim-to-Ready per scenario, as SVG.

use crate::report::Scenario;
use crate::stats;

pub fn svg(scenarios: &[Scenario]) -> String {
    // Empirical CDF of claim latency per scenario, log-scale x axis (1 ms .. 60 s).
    let (w, h, left, bottom) = (900.0, 500.0, 70.0, 50.0);
    let x = |ms: f64| left + (ms.max(1.0).log10() / 60_000f64.log10()) * (w - left - 20.0);
    let y = |q: f64| (h - bottom) - q * (h - bottom - 30.0);
    let colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a"];
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    out += r#"<text x="450" y="18" text-anchor="middle" font-size="14">Claim create -> Ready: cumulative distribution (warm vs cold)</text>"#;
    for ms in [1.0, 10.0, 100.0, 1000.0, 10_000.0, 60_000.0] {
        out += &format!(
            r##"<line x1="{0}" y1="30" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(ms),
            h - bottom,
            h - bottom + 16.0,
            if ms >= 1000.0 {
                format!("{} s", ms / 1000.0)
            } else {
                format!("{ms} ms")
            }
        );
    }
    for q in [0.0, 0.5, 0.95, 1.0] {
        out += &format!(
            r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/><text x="{2}" y="{3}" text-anchor="end">{4}</text>"##,
            y(q),
            w - 20.0,
            left - 6.0,
            y(q) + 4.0,
            q
        );
    }
    for (i, s) in scenarios.iter().enumerate() {
        let sorted = stats::sorted(&s.samples);
        let n = sorted.len().max(1) as f64;
        let points: Vec<String> = sorted
            .iter()
            .enumerate()
            .map(|(k, ms)| format!("{:.1},{:.1}", x(*ms), y((k + 1) as f64 / n)))
            .collect();
        let color = colors[i % colors.len()];
        out += &format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        out += &format!(
            r#"<text x="{}" y="{}" fill="{color}">{} (p50 {:.0} ms, p99 {:.0} ms)</text>"#,
            left + 10.0,
            40.0 + 16.0 * i as f64,
            s.name,
            s.p50_ms,
            s.p99_ms
        );
    }
    out += &format!(
        r#"<text x="{}" y="{}" text-anchor="middle">latency (log scale)</text></svg>"#,
        (w + left) / 2.0,
        h - 12.0
    );
    out
}
