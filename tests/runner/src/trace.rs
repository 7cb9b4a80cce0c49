//! The guest's trace and histogram dumps (`trace_dump=`, `docs/observe.md`):
//! [`extract`] finds a dump between `# trace-dump: begin` and
//! `# trace-dump: end` in a boot's serial log; [`finish`] writes
//! `trace.json`, `hist.json` and the chart `hist.svg` for a run and returns
//! its one-line summary.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::compare::{COLORS, esc, title_lines};

/// One boot's dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dump {
    /// The records (`# trace-json:` lines), as the guest wrote them.
    pub events: Vec<Value>,
    /// The histograms (`# hist-json:` lines).
    pub hists: Vec<Value>,
    /// The text lines (`# trace-text:` and `# hist-text:`), in order.
    pub text: Vec<String>,
    /// Records written in the guest since boot (`recorded=` of the summary).
    pub recorded: u64,
    /// Records overwritten or torn before the dump (`lost=`).
    pub lost: u64,
    /// Lines that did not parse (a JSON line cut by the console, say).
    pub bad_lines: usize,
}

/// The dump in a boot's serial log, if it has one. `None` also when the
/// begin marker has no end (the guest died mid-dump): then the caller says so.
pub fn extract(raw: &str) -> Option<Result<Dump, String>> {
    let mut inside = false;
    let mut seen = false;
    let mut d = Dump::default();
    for line in raw.lines() {
        let body = line.trim_start();
        let Some(text) = body.strip_prefix('#').map(str::trim_start) else { continue };
        if text == "trace-dump: begin" {
            inside = true;
            seen = true;
            d = Dump::default();
            continue;
        }
        if !inside {
            continue;
        }
        if text == "trace-dump: end" {
            return Some(Ok(d));
        }
        if let Some(j) = text.strip_prefix("trace-json: ") {
            match serde_json::from_str(j) {
                Ok(v) => d.events.push(v),
                Err(_) => d.bad_lines += 1,
            }
        } else if let Some(j) = text.strip_prefix("hist-json: ") {
            match serde_json::from_str(j) {
                Ok(v) => d.hists.push(v),
                Err(_) => d.bad_lines += 1,
            }
        } else if let Some(t) = text.strip_prefix("trace-text: ").or_else(|| text.strip_prefix("hist-text: ")) {
            d.text.push(t.to_string());
        } else if text == "trace-text:" || text == "hist-text:" {
            d.text.push(String::new());
        } else if let Some(s) = text.strip_prefix("trace-summary:") {
            for (k, v) in s.split_whitespace().filter_map(|w| w.split_once('=')) {
                let n = v.parse().unwrap_or(0);
                match k {
                    "recorded" => d.recorded = n,
                    "lost" => d.lost = n,
                    _ => {}
                }
            }
        }
    }
    seen.then(|| Err("trace dump without its end marker (the guest stopped during the dump)".to_string()))
}

/// A boot's label in the reports.
pub struct BootTag<'a> {
    /// CPUs.
    pub smp: u32,
    /// Preemption model.
    pub preempt: &'a str,
}

/// Write `trace.json` (per boot: recorded, lost, events) and `hist.json`
/// (per boot: histograms) and `hist.svg` into `dir` for the boots that
/// dumped; returns the summary line, or `None` when no boot dumped.
pub fn finish(dir: &Path, boots: &[(BootTag<'_>, &Dump)]) -> std::io::Result<Option<String>> {
    if boots.is_empty() {
        return Ok(None);
    }
    let trace: Vec<Value> = boots
        .iter()
        .map(|(t, d)| {
            json!({"smp": t.smp, "preempt": t.preempt, "recorded": d.recorded, "lost": d.lost,
                   "bad_lines": d.bad_lines, "events": d.events})
        })
        .collect();
    let hist: Vec<Value> =
        boots.iter().map(|(t, d)| json!({"smp": t.smp, "preempt": t.preempt, "histograms": d.hists})).collect();
    std::fs::write(dir.join("trace.json"), serde_json::to_string_pretty(&trace).expect("serializable") + "\n")?;
    std::fs::write(dir.join("hist.json"), serde_json::to_string_pretty(&hist).expect("serializable") + "\n")?;
    let charts: Vec<(String, &Value)> = boots
        .iter()
        .flat_map(|(t, d)| d.hists.iter().map(move |h| (format!("smp={} {}", t.smp, t.preempt), h)))
        .collect();
    std::fs::write(dir.join("hist.svg"), svg(&charts))?;
    let events: usize = boots.iter().map(|(_, d)| d.events.len()).sum();
    let recorded: u64 = boots.iter().map(|(_, d)| d.recorded).sum();
    let lost: u64 = boots.iter().map(|(_, d)| d.lost).sum();
    let hists: usize = boots.iter().map(|(_, d)| d.hists.len()).sum();
    let bad: usize = boots.iter().map(|(_, d)| d.bad_lines).sum();
    let mut line = format!(
        "ktest: trace: {recorded} events recorded, {events} dumped, {lost} lost; {hists} histograms (trace.json, hist.json, hist.svg in {})",
        dir.display()
    );
    if bad > 0 {
        let _ = write!(line, "; {bad} dump lines did not parse");
    }
    Ok(Some(line))
}

/// The non-empty buckets of a histogram object: (lowest ns, count).
pub fn buckets(h: &Value) -> Vec<(u64, u64)> {
    h["buckets"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| Some((p.get(0)?.as_u64()?, p.get(1)?.as_u64()?))).collect())
        .unwrap_or_default()
}

fn ns_label(v: u64) -> String {
    match v {
        v if v >= 1 << 30 => format!("{}G", v >> 30),
        v if v >= 1 << 20 => format!("{}M", v >> 20),
        v if v >= 1 << 10 => format!("{}K", v >> 10),
        v => v.to_string(),
    }
}

/// The histograms as one SVG: a panel per histogram (title: boot, kind and
/// name, count), a bar per log2 bucket from the first to the last non-empty
/// one, heights relative to the panel's largest bucket.
pub fn svg(hists: &[(String, &Value)]) -> String {
    let (panel_w, panel_h, cols) = (420.0, 150.0, 2usize);
    let rows = hists.len().div_ceil(cols).max(1);
    let width = panel_w * cols as f64 + 20.0;
    let height = 40.0 + panel_h * rows as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">Latency histograms (log2 buckets of ns; bar height: share of the largest bucket)</text>"#
    );
    if hists.is_empty() {
        let _ = writeln!(s, r#"<text x="10" y="50">no histograms were recorded (latency_hist= off)</text>"#);
    }
    for (i, (boot, h)) in hists.iter().enumerate() {
        let x0 = 10.0 + panel_w * (i % cols) as f64;
        let y0 = 40.0 + panel_h * (i / cols) as f64;
        let title = format!(
            "{boot}: {}[{}] n={}",
            h["kind"].as_str().unwrap_or("?"),
            h["name"].as_str().unwrap_or("?"),
            h["count"].as_u64().unwrap_or(0)
        );
        for (k, l) in title_lines(&title).iter().take(2).enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{x0}" y="{}" font-weight="bold">{}</text>"#,
                y0 + 10.0 + 12.0 * k as f64,
                esc(l)
            );
        }
        let b = buckets(h);
        let (Some(first), Some(last)) = (b.first(), b.last()) else { continue };
        let lo = if first.0 == 0 { 0 } else { 64 - first.0.leading_zeros() };
        let hi = if last.0 == 0 { 0 } else { 64 - last.0.leading_zeros() };
        let n = (hi - lo + 1) as f64;
        let max = b.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64;
        let (plot_x, plot_y, plot_w, plot_h) = (x0 + 5.0, y0 + 32.0, panel_w - 30.0, panel_h - 62.0);
        let bw = plot_w / n;
        let color = COLORS[i % COLORS.len()];
        for (low, count) in &b {
            let idx = if *low == 0 { 0 } else { 64 - low.leading_zeros() } - lo;
            let bh = (*count as f64 / max * plot_h).max(1.0);
            let bx = plot_x + bw * idx as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"><title>[{}, {}): {count}</title></rect>"#,
                plot_y + plot_h - bh,
                (bw - 1.0).max(1.0),
                ns_label(*low),
                ns_label(if *low == 0 { 1 } else { low * 2 })
            );
        }
        let _ = writeln!(
            s,
            r##"<line x1="{plot_x}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000"/>"##,
            plot_y + plot_h,
            plot_x + plot_w,
            plot_y + plot_h
        );
        let step = ((n / 8.0).ceil() as u32).max(1);
        for k in (0..(hi - lo + 1)).step_by(step as usize) {
            let e = lo + k;
            let v = if e == 0 { 0 } else { 1u64 << (e - 1) };
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                plot_x + bw * (k as f64 + 0.5),
                plot_y + plot_h + 12.0,
                ns_label(v)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
