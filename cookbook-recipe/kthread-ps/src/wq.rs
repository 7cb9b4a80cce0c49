//! Workqueue statistics: one row per queue, as `workqueue::monitor()`
//! writes them (`{:<24} {:>9} {:>6} {:>9} {:>7} {:>6} {:>6} {:>6}`: name,
//! items started, in flight, CPU time in ms, CPU-intensive items,
//! concurrency-management wake-ups, mayday calls, rescued items), like
//! Linux's `tools/workqueue/wq_monitor.py`. The header's first column is
//! blank.

use std::fmt::Write;

use crate::json;
use crate::listing::{Listing, num};

/// One workqueue's counters: a data line of the statistics file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WqStat {
    /// Queue name (may contain spaces).
    pub name: String,
    /// Items started (`total`).
    pub total: u64,
    /// Items started and not completed (`infl`).
    pub in_flight: u64,
    /// CPU time of its items, ms (`CPUtime`).
    pub cpu_time_ms: u64,
    /// Items run outside concurrency management (`CPUitsv`).
    pub cpu_intensive: u64,
    /// Workers woken because a worker blocked (`CMW`).
    pub cm_wakeups: u64,
    /// Mayday calls (`MD`).
    pub mayday: u64,
    /// Items run by the rescuer (`RSC`).
    pub rescued: u64,
}

impl Listing for WqStat {
    const HEADER: &'static [&'static str] = &["total", "infl", "CPUtime", "CPUitsv", "CMW", "MD", "RSC"];

    fn parse_row(line: &str) -> Result<Self, String> {
        // Seven counters from the right; the name is what is left.
        let mut counters = [0u64; 7];
        let mut rest = line.trim_end();
        for i in (0..7).rev() {
            let start = rest.char_indices().rev().find(|(_, c)| c.is_whitespace()).map_or(0, |(p, c)| p + c.len_utf8());
            let word = &rest[start..];
            if start == 0 {
                return Err(format!(
                    "expected a name and 7 counters ({}), found {} words",
                    Self::HEADER.join(" "),
                    7 - i
                ));
            }
            counters[i] = num(Self::HEADER[i], word)?;
            rest = rest[..start].trim_end();
        }
        let name = rest.trim_start();
        if name.is_empty() {
            return Err("no queue name before the counters".into());
        }
        let [total, in_flight, cpu_time_ms, cpu_intensive, cm_wakeups, mayday, rescued] = counters;
        Ok(WqStat { name: name.into(), total, in_flight, cpu_time_ms, cpu_intensive, cm_wakeups, mayday, rescued })
    }
}

/// Order of the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// As in the file (the kernel's order: creation).
    File,
    /// By name.
    Name,
    /// By items started, most first.
    Total,
    /// By CPU time, most first.
    Time,
}

/// Sort `rows` in place (stable: ties keep file order).
pub fn sort(rows: &mut [WqStat], by: Sort) {
    match by {
        Sort::File => {}
        Sort::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        Sort::Total => rows.sort_by_key(|r| std::cmp::Reverse(r.total)),
        Sort::Time => rows.sort_by_key(|r| std::cmp::Reverse(r.cpu_time_ms)),
    }
}

/// The table: the name column as wide as the longest name (at least 24),
/// then the counters under `wq_monitor.py`-like headings.
pub fn table(rows: &[WqStat]) -> String {
    let w = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(0).max(24);
    let mut s = format!(
        "{:<w$} {:>9} {:>6} {:>9} {:>7} {:>6} {:>6} {:>6}\n",
        "WORKQUEUE", "TOTAL", "INFL", "CPU_MS", "CPUITSV", "CMW", "MD", "RSC"
    );
    for r in rows {
        writeln!(
            s,
            "{:<w$} {:>9} {:>6} {:>9} {:>7} {:>6} {:>6} {:>6}",
            r.name, r.total, r.in_flight, r.cpu_time_ms, r.cpu_intensive, r.cm_wakeups, r.mayday, r.rescued
        )
        .unwrap();
    }
    s
}

/// The rows as a JSON array, one object per line.
pub fn to_json(rows: &[WqStat]) -> String {
    json::array(rows.iter().map(|r| {
        format!(
            "{{\"name\":{},\"total\":{},\"in_flight\":{},\"cpu_time_ms\":{},\"cpu_intensive\":{},\"cm_wakeups\":{},\"mayday\":{},\"rescued\":{}}}",
            json::string(&r.name),
            r.total,
            r.in_flight,
            r.cpu_time_ms,
            r.cpu_intensive,
            r.cm_wakeups,
            r.mayday,
            r.rescued
        )
    }))
}
