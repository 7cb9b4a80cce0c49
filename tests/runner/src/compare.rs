//! Side-by-side tables: the figures of several kernels ("sides": the
//! testkernel, Linux, and any further column such as a Redox kernel) over
//! several rounds, reduced to one row per benchmark, and written as a
//! terminal/Markdown table, JSON and an SVG chart (drawn here: no plotting
//! dependency).
//!
//! The rule of docs/benchmarks.md: a side's figure is the median of its
//! per-round medians, and its spread the min–max of those per-round figures.
//! A ratio compares a side with the baseline (Linux) so that below 1.0
//! always means that side is better: side ÷ Linux for latencies, counts and
//! bytes, Linux ÷ side for throughputs. The ratio's spread is the min–max of
//! the per-round ratios (the rounds alternate, so round k of each side was
//! taken in the same stretch of time).

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One `# bench:` figure: its name and numeric fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Benchmark name.
    pub name: String,
    /// Numeric `key=value` fields (`median_ns`, `p99_ns`, `items_per_s`, …).
    pub fields: BTreeMap<String, f64>,
}

/// The figures of a `bench.json` / `bench-linux.json` array.
pub fn figures_from_json(text: &str) -> Result<Vec<Figure>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let arr = v.as_array().ok_or("expected a JSON array of benchmark objects")?;
    let mut out = Vec::new();
    for o in arr {
        let obj = o.as_object().ok_or("expected objects in the array")?;
        let name = obj.get("name").and_then(Value::as_str).ok_or("an object has no \"name\"")?;
        let fields = obj.iter().filter_map(|(k, v)| v.as_f64().map(|n| (k.clone(), n))).collect();
        out.push(Figure { name: name.to_string(), fields });
    }
    Ok(out)
}

/// What a benchmark measures, from its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `median_ns`/`p99_ns`: lower is better.
    Latency,
    /// `items_per_s`: higher is better.
    Throughput,
    /// `count`: compared as lower is better (fewer workers for the same load).
    Count,
    /// `bytes`: lower is better.
    Bytes,
}

impl Metric {
    /// The metric of a figure, if it has one of the known shapes.
    pub fn of(f: &Figure) -> Option<Metric> {
        [
            ("median_ns", Metric::Latency),
            ("items_per_s", Metric::Throughput),
            ("count", Metric::Count),
            ("bytes", Metric::Bytes),
        ]
        .into_iter()
        .find(|(k, _)| f.fields.contains_key(*k))
        .map(|(_, m)| m)
    }

    /// The field holding the figure.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Latency => "median_ns",
            Metric::Throughput => "items_per_s",
            Metric::Count => "count",
            Metric::Bytes => "bytes",
        }
    }

    /// Is a larger value better?
    pub fn higher_is_better(self) -> bool {
        self == Metric::Throughput
    }

    /// The ratio of `side` to `base` oriented so that below 1 means `side` is better.
    pub fn ratio(self, side: f64, base: f64) -> Option<f64> {
        let (num, den) = if self.higher_is_better() { (base, side) } else { (side, base) };
        (den > 0.0 && num.is_finite()).then(|| num / den)
    }
}

/// The median of `v` (mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 })
}

/// A side's figures for one benchmark over the rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stat {
    /// Median of the per-round figures.
    pub median: f64,
    /// Smallest per-round figure.
    pub min: f64,
    /// Largest per-round figure.
    pub max: f64,
    /// Median of the per-round p99s (latencies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// The per-round figures (`None`: the round has none).
    pub rounds: Vec<Option<f64>>,
}

/// A side against the baseline for one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// Ratio of the medians (below 1: the side is better).
    pub median: f64,
    /// Ratio of the p99 medians (latencies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// Smallest per-round ratio.
    pub min: f64,
    /// Largest per-round ratio.
    pub max: f64,
}

/// One benchmark across the sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Benchmark name.
    pub name: String,
    /// What it measures.
    pub metric: Metric,
    /// Per side (in [`Table::sides`] order).
    pub stats: Vec<Option<Stat>>,
    /// Per side against the baseline (`None` for the baseline itself, or
    /// where either has no figure).
    pub ratios: Vec<Option<Ratio>>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    /// Side names, e.g. `["ours", "linux", "redox"]`.
    pub sides: Vec<String>,
    /// Index of the baseline side in `sides`.
    pub baseline: usize,
    /// Rounds taken.
    pub rounds: usize,
    /// One row per benchmark, in order of first appearance.
    pub rows: Vec<Row>,
}

/// One side's figures: `rounds[k]` is round k's figures (empty if it failed).
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// Name (`ours`, `linux`, …).
    pub name: String,
    /// Figures per round.
    pub rounds: Vec<Vec<Figure>>,
}

fn value_in(round: &[Figure], name: &str, key: &str) -> Option<f64> {
    round.iter().find(|f| f.name == name).and_then(|f| f.fields.get(key).copied())
}

/// Reduce the sides to a table against `baseline` (a side name).
pub fn build(sides: &[Side], baseline: &str) -> Table {
    let rounds = sides.iter().map(|s| s.rounds.len()).max().unwrap_or(0);
    let base = sides.iter().position(|s| s.name == baseline).unwrap_or(0);
    let mut names: Vec<(String, Metric)> = Vec::new();
    for s in sides {
        for round in &s.rounds {
            for f in round {
                if let Some(m) = Metric::of(f)
                    && !names.iter().any(|(n, _)| *n == f.name)
                {
                    names.push((f.name.clone(), m));
                }
            }
        }
    }
    // Rows in the baseline's order (kbench follows the documented list),
    // then what only other sides have.
    names.sort_by_key(|(n, _)| {
        let first = |s: &Side| s.rounds.iter().find_map(|r| r.iter().position(|f| f.name == *n));
        match sides.get(base).and_then(first) {
            Some(i) => (0, i),
            None => (1, 0),
        }
    });
    let rows = names
        .into_iter()
        .map(|(name, metric)| {
            let per_round = |s: &Side, key: &str| -> Vec<Option<f64>> {
                (0..rounds).map(|k| s.rounds.get(k).and_then(|r| value_in(r, &name, key))).collect()
            };
            let stats: Vec<Option<Stat>> = sides
                .iter()
                .map(|s| {
                    let vals = per_round(s, metric.key());
                    let present: Vec<f64> = vals.iter().flatten().copied().collect();
                    let med = median(&present)?;
                    let p99 = if metric == Metric::Latency {
                        median(&per_round(s, "p99_ns").into_iter().flatten().collect::<Vec<_>>())
                    } else {
                        None
                    };
                    Some(Stat {
                        median: med,
                        min: present.iter().copied().fold(f64::INFINITY, f64::min),
                        max: present.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        p99,
                        rounds: vals,
                    })
                })
                .collect();
            let ratios = stats
                .iter()
                .enumerate()
                .map(|(i, st)| {
                    if i == base {
                        return None;
                    }
                    let (st, bs) = (st.as_ref()?, stats[base].as_ref()?);
                    let med = metric.ratio(st.median, bs.median)?;
                    let p99 = match (st.p99, bs.p99) {
                        (Some(a), Some(b)) => metric.ratio(a, b),
                        _ => None,
                    };
                    let per: Vec<f64> =
                        st.rounds.iter().zip(&bs.rounds).filter_map(|(a, b)| metric.ratio((*a)?, (*b)?)).collect();
                    let (min, max) = if per.is_empty() {
                        (med, med)
                    } else {
                        (
                            per.iter().copied().fold(f64::INFINITY, f64::min),
                            per.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        )
                    };
                    Some(Ratio { median: med, p99, min, max })
                })
                .collect();
            Row { name, metric, stats, ratios }
        })
        .collect();
    Table { sides: sides.iter().map(|s| s.name.clone()).collect(), baseline: base, rounds, rows }
}

/// A figure for people: latencies in µs (3 significant digits), throughputs
/// in items/s with thousands separated, counts and bytes as integers.
pub fn human(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Latency => {
            let us = v / 1000.0;
            if us >= 100.0 {
                format!("{us:.0}")
            } else if us >= 10.0 {
                format!("{us:.1}")
            } else {
                format!("{us:.2}")
            }
        }
        _ => thousands(v.round() as u64),
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The unit of a metric's column.
pub fn unit(metric: Metric) -> &'static str {
    match metric {
        Metric::Latency => "µs",
        Metric::Throughput => "items/s",
        Metric::Count => "count",
        Metric::Bytes => "bytes",
    }
}

fn side_label(name: &str) -> String {
    match name {
        "ours" => "ours".into(),
        "linux" => "Linux".into(),
        other => other.to_string(),
    }
}

fn cell(row: &Row, st: &Option<Stat>) -> (String, String) {
    match st {
        None => ("—".into(), "".into()),
        Some(s) => {
            let main = match s.p99 {
                Some(p) => format!("{} / {}", human(row.metric, s.median), human(row.metric, p)),
                None => human(row.metric, s.median),
            };
            let spread = format!("{}–{}", human(row.metric, s.min), human(row.metric, s.max));
            (main, spread)
        }
    }
}

fn ratio_cells(r: &Option<Ratio>) -> (String, String) {
    match r {
        None => ("".into(), "".into()),
        Some(r) => {
            let main = match r.p99 {
                Some(p) => format!("{:.2} / {:.2}", r.median, p),
                None => format!("{:.2}", r.median),
            };
            (main, format!("{:.2}–{:.2}", r.min, r.max))
        }
    }
}

/// The table as Markdown (also what the terminal shows): one column pair
/// (figure, spread) per side, then per non-baseline side its ratio and the
/// ratio's spread.
pub fn markdown(t: &Table) -> String {
    let base = side_label(&t.sides[t.baseline]);
    let mut head = vec!["benchmark".to_string(), "unit".to_string()];
    for s in &t.sides {
        head.push(format!("{} median / p99", side_label(s)));
        head.push(format!("{} spread", side_label(s)));
    }
    for (i, s) in t.sides.iter().enumerate() {
        if i != t.baseline {
            head.push(format!("{} ÷ {base} (median / p99)", side_label(s)));
            head.push("ratio spread".into());
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
    for row in &t.rows {
        let mut cells = vec![format!("`{}`", row.name), unit(row.metric).to_string()];
        for st in &row.stats {
            let (a, b) = cell(row, st);
            cells.push(a);
            cells.push(b);
        }
        for (i, r) in row.ratios.iter().enumerate() {
            if i != t.baseline {
                let (a, b) = ratio_cells(r);
                cells.push(if row.metric == Metric::Throughput && !a.is_empty() {
                    format!("{a} (inverse)")
                } else {
                    a
                });
                cells.push(b);
            }
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// The note printed above the table.
pub fn legend(t: &Table) -> String {
    let base = side_label(&t.sides[t.baseline]);
    format!(
        "{} round(s). Figures: median of the per-round medians (latencies: median / p99 in µs). \
         Spread: min–max of the per-round figures. Ratio: side ÷ {base} for latencies, counts and bytes, \
         {base} ÷ side for throughputs (marked \"inverse\"), so below 1.0 always means the side does better \
         than {base}; its spread is the min–max of the per-round ratios.",
        t.rounds
    )
}

/// The table as JSON (the [`Table`] with a `legend`).
pub fn json(t: &Table, extra: &[(&str, Value)]) -> String {
    let mut v = serde_json::to_value(t).expect("serializable");
    if let Value::Object(m) = &mut v {
        m.insert("legend".into(), Value::from(legend(t)));
        for (k, x) in extra {
            m.insert((*k).into(), x.clone());
        }
    }
    serde_json::to_string_pretty(&v).expect("serializable") + "\n"
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub(crate) const COLORS: [&str; 4] = ["#2b6cb0", "#dd6b20", "#2f855a", "#805ad5"];

/// A chart's title in lines of at most about 90 characters, broken after commas.
pub(crate) fn title_lines(title: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    for part in title.split_inclusive(", ") {
        let cur = lines.last_mut().expect("one line");
        if !cur.is_empty() && cur.len() + part.len() > 90 {
            lines.push(part.to_string());
        } else {
            cur.push_str(part);
        }
    }
    lines.iter().map(|l| l.trim_end_matches([',', ' ']).to_string()).collect()
}

/// The ratios with their spreads as an SVG chart: one band per benchmark,
/// a bar per non-baseline side from 1.0 to its ratio on a log scale
/// (0.1 to 10), a whisker for the min–max of the per-round ratios.
pub fn svg(t: &Table, title: &str) -> String {
    let others: Vec<usize> = (0..t.sides.len()).filter(|&i| i != t.baseline).collect();
    let rows: Vec<&Row> = t.rows.iter().filter(|r| r.ratios.iter().any(Option::is_some)).collect();
    let (label_w, plot_w, right) = (300.0, 520.0, 70.0);
    let band = 10.0 + 12.0 * others.len() as f64;
    let lines = title_lines(title);
    let extra = 18.0 * (lines.len() as f64 - 1.0);
    let top = 70.0 + extra;
    let height = top + band * rows.len() as f64 + 50.0;
    let width = label_w + plot_w + right;
    let (lo, hi) = (0.1f64.log10(), 10f64.log10());
    let x = |r: f64| label_w + (r.clamp(0.1, 10.0).log10() - lo) / (hi - lo) * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (k, l) in lines.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-size="15" font-weight="bold">{}</text>"#,
            20.0 + 18.0 * k as f64,
            esc(l)
        );
    }
    let base = side_label(&t.sides[t.baseline]);
    let _ = writeln!(
        s,
        r#"<text x="10" y="{}">ratio to {base}, log scale; below 1.0 = better than {base} (throughputs inverted); whisker = min–max of the per-round ratios</text>"#,
        38.0 + extra
    );
    for (j, &i) in others.iter().enumerate() {
        let lx = label_w + 160.0 * j as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="10" fill="{}"/>"#,
            48.0 + extra,
            COLORS[j % COLORS.len()]
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{} ÷ {base}</text>"#,
            lx + 16.0,
            57.0 + extra,
            esc(&side_label(&t.sides[i]))
        );
    }
    let bottom = top + band * rows.len() as f64;
    for g in [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0] {
        let gx = x(g);
        let (stroke, w) = if g == 1.0 { ("#000", 1.5) } else { ("#ccc", 1.0) };
        let _ = writeln!(
            s,
            r#"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{bottom}" stroke="{stroke}" stroke-width="{w}"/>"#
        );
        let _ = writeln!(s, r#"<text x="{gx:.1}" y="{}" text-anchor="middle">{g}</text>"#, bottom + 16.0);
    }
    for (k, row) in rows.iter().enumerate() {
        let y0 = top + band * k as f64;
        if k % 2 == 1 {
            let _ = writeln!(
                s,
                r##"<rect x="0" y="{y0}" width="{}" height="{band}" fill="#f4f4f4" opacity="0.6"/>"##,
                label_w + plot_w
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y0 + band / 2.0 + 4.0,
            esc(&row.name)
        );
        for (j, &i) in others.iter().enumerate() {
            let Some(r) = &row.ratios[i] else { continue };
            let yc = y0 + 5.0 + 12.0 * j as f64 + 5.0;
            let (a, b) = (x(1.0), x(r.median));
            let color = COLORS[j % COLORS.len()];
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="8" fill="{color}"/>"#,
                a.min(b),
                yc - 4.0,
                (b - a).abs().max(1.0)
            );
            let (m0, m1) = (x(r.min), x(r.max));
            let _ = writeln!(
                s,
                r##"<line x1="{m0:.1}" y1="{yc:.1}" x2="{m1:.1}" y2="{yc:.1}" stroke="#000" stroke-width="1"/>"##
            );
            for m in [m0, m1] {
                let _ = writeln!(
                    s,
                    r##"<line x1="{m:.1}" y1="{:.1}" x2="{m:.1}" y2="{:.1}" stroke="#000" stroke-width="1"/>"##,
                    yc - 4.0,
                    yc + 4.0
                );
            }
            let _ = writeln!(s, r#"<text x="{}" y="{:.1}">{:.2}</text>"#, label_w + plot_w + 6.0, yc + 4.0, r.median);
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Lines for a chart: (benchmark or family, side, [(x, y)]), x ascending.
pub type ScaleSeries = Vec<(String, String, Vec<(u32, f64)>)>;

/// Keep one order: by benchmark, ours before Linux before the rest; points by x.
fn sort_series(out: &mut ScaleSeries) {
    let rank = |s: &str| match s {
        "ours" => 0,
        "linux" => 1,
        _ => 2,
    };
    out.sort_by(|a, b| a.0.cmp(&b.0).then(rank(&a.1).cmp(&rank(&b.1))).then(a.1.cmp(&b.1)));
    for (_, _, pts) in out.iter_mut() {
        pts.sort_by_key(|p| p.0);
    }
}

fn push_point(out: &mut ScaleSeries, name: &str, side: &str, point: (u32, f64)) {
    match out.iter_mut().find(|(b, s, _)| b == name && s == side) {
        Some((_, _, pts)) => pts.push(point),
        None => out.push((name.to_string(), side.to_string(), vec![point])),
    }
}

/// Items/s per CPU of the throughput benchmarks of `runs` (side, CPUs,
/// figures of that boot), per benchmark and side.
pub fn scale_series(runs: &[(String, u32, Vec<Figure>)]) -> ScaleSeries {
    let mut out: ScaleSeries = Vec::new();
    for (side, cpus, figs) in runs {
        for f in figs {
            if let Some(v) = f.fields.get("items_per_s") {
                push_point(&mut out, &f.name, side, (*cpus, v / f64::from((*cpus).max(1))));
            }
        }
    }
    sort_series(&mut out);
    out
}

/// How latencies grow with the load: for each family of benchmarks named
/// `FAMILY_N` (`kthread_create_run_alive_10`, `_1000`, …) with a median, the
/// median at load N divided by the median at the family's smallest load, per
/// side (1.0 throughout means the cost does not grow).
pub fn growth_series(sides: &[(String, Vec<Figure>)]) -> ScaleSeries {
    let mut out: ScaleSeries = Vec::new();
    for (side, figs) in sides {
        for f in figs {
            let (Some((family, n)), Some(v)) = (f.name.rsplit_once('_'), f.fields.get("median_ns")) else { continue };
            if let Ok(n) = n.parse::<u32>() {
                push_point(&mut out, family, side, (n, *v));
            }
        }
    }
    out.retain(|(_, _, pts)| pts.len() > 1);
    sort_series(&mut out);
    for (_, _, pts) in &mut out {
        let base = pts[0].1;
        for p in pts.iter_mut() {
            p.1 = if base > 0.0 { p.1 / base } else { f64::NAN };
        }
    }
    out.retain(|(_, _, pts)| pts.iter().all(|p| p.1.is_finite()));
    out
}

fn value_text(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() < 100.0 {
        format!("{v:.2}")
    } else {
        thousands(v.round() as u64)
    }
}

/// A series table as Markdown: a row per x (headed `x_head`), a column per
/// (benchmark, side).
pub fn scale_markdown(series: &ScaleSeries, x_head: &str) -> String {
    let mut xs: Vec<u32> = series.iter().flat_map(|(_, _, p)| p.iter().map(|x| x.0)).collect();
    xs.sort_unstable();
    xs.dedup();
    let mut out = String::new();
    let head: Vec<String> = series.iter().map(|(b, s, _)| format!("`{b}` {}", side_label(s))).collect();
    let _ = writeln!(out, "| {x_head} | {} |", head.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(head.len()));
    for c in xs {
        let cells: Vec<String> = series
            .iter()
            .map(|(_, _, p)| p.iter().find(|x| x.0 == c).map_or("—".into(), |x| value_text(x.1)))
            .collect();
        let _ = writeln!(out, "| {} | {} |", thousands(u64::from(c)), cells.join(" | "));
    }
    out
}

/// The smallest round figure (1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6 or 8 times a
/// power of ten: each divides into round quarters) at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.6, 2.0, 2.4, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * p)
}

/// Series as an SVG line chart: x on a log₂ axis, y linear from 0; a colour
/// per benchmark, Linux dashed.
pub fn line_svg(series: &ScaleSeries, title: &str, subtitle: &str) -> String {
    let (left, top, w, h) = (80.0, 50.0, 560.0, 300.0);
    let width = left + w + 300.0;
    let height = top + h + 50.0;
    let mut xs: Vec<u32> = series.iter().flat_map(|(_, _, p)| p.iter().map(|x| x.0)).collect();
    xs.sort_unstable();
    xs.dedup();
    let ymax = nice_ceiling(series.iter().flat_map(|(_, _, p)| p.iter().map(|x| x.1)).fold(0.0f64, f64::max));
    let lo = f64::from(*xs.first().unwrap_or(&1)).log2();
    let hi = f64::from(*xs.last().unwrap_or(&1)).log2().max(lo + 1.0);
    let x = |c: u32| left + (f64::from(c).log2() - lo) / (hi - lo) * w;
    let y = |v: f64| top + h - v.min(ymax) / ymax * h;
    let mut names: Vec<&str> = series.iter().map(|(b, _, _)| b.as_str()).collect();
    names.dedup();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#, esc(title));
    let _ = writeln!(s, r#"<text x="10" y="38">{}</text>"#, esc(subtitle));
    for k in 0..=4 {
        let v = ymax * f64::from(k) / 4.0;
        let _ =
            writeln!(s, r##"<line x1="{left}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ddd"/>"##, y(v), left + w, y(v));
        let _ =
            writeln!(s, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, left - 6.0, y(v) + 4.0, value_text(v));
    }
    for &c in &xs {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(c),
            top + h + 18.0,
            thousands(u64::from(c))
        );
    }
    for (k, (b, side, pts)) in series.iter().enumerate() {
        let color = COLORS[names.iter().position(|n| n == b).unwrap_or(0) % COLORS.len()];
        let dash = if side == "linux" { r#" stroke-dasharray="6 4""# } else { "" };
        let path: Vec<String> = pts.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            path.join(" ")
        );
        for p in pts {
            let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#, x(p.0), y(p.1));
        }
        let ly = top + 16.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>"#,
            left + w + 20.0,
            left + w + 44.0
        );
        let _ = writeln!(s, r#"<text x="{}" y="{}">{} {}</text>"#, left + w + 50.0, ly + 4.0, esc(b), side_label(side));
    }
    s.push_str("</svg>\n");
    s
}
