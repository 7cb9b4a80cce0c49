//! The kernel's watchdog reports in a boot's serial log (`docs/observe.md`): the hung-task
//! detector's `INFO: task NAME:ID blocked for more than N seconds.`, the soft-lockup detector's
//! `BUG: soft lockup - CPU#N stuck for Ns! [NAME:ID]`, the buddy check's `Watchdog detected
//! hard LOCKUP on cpu N`, and the workqueue's `BUG: workqueue lockup - pool ...`. The runner
//! counts them per boot, writes them to `watchdogs.json` and summarizes them at the end of a run.
//! A report is not a failure by itself: the guest fails the case during which one was made,
//! unless the case made it on purpose.

use serde_json::{Value, json};

/// The kinds of report, with the line each starts with.
pub const KINDS: [(&str, &str); 4] = [
    ("hung_task", "INFO: task "),
    ("soft_lockup", "BUG: soft lockup - CPU#"),
    ("hard_lockup", "Watchdog detected hard LOCKUP on cpu "),
    ("wq_lockup", "BUG: workqueue lockup - "),
];

/// One boot's reports: the first line of each, by kind (in [`KINDS`] order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reports {
    /// The report lines, per kind.
    pub lines: [Vec<String>; 4],
}

impl Reports {
    /// Reports of every kind.
    pub fn total(&self) -> usize {
        self.lines.iter().map(Vec::len).sum()
    }
}

/// The reports in `raw` (a serial log). A hung-task line must also say "blocked for more than",
/// so a thread that happens to be named like the prefix is not counted.
pub fn scan(raw: &str) -> Reports {
    let mut r = Reports::default();
    for line in raw.lines() {
        // The workqueue prints its report as a diagnostic (`# BUG: ...`).
        let line = line.trim();
        let line = line.strip_prefix("# ").unwrap_or(line);
        for (i, (kind, prefix)) in KINDS.iter().enumerate() {
            if line.starts_with(prefix) && (*kind != "hung_task" || line.contains(" blocked for more than ")) {
                r.lines[i].push(line.to_string());
            }
        }
    }
    r
}

/// `watchdogs.json`'s entry for a boot.
pub fn json(smp: u32, preempt: &str, r: &Reports) -> Value {
    let mut v = json!({"smp": smp, "preempt": preempt});
    for (i, (kind, _)) in KINDS.iter().enumerate() {
        v[*kind] = json!(r.lines[i]);
    }
    v
}

/// The run's one-line summary, or `None` when no boot reported anything.
pub fn summary(all: &[&Reports]) -> Option<String> {
    let count = |i: usize| all.iter().map(|r| r.lines[i].len()).sum::<usize>();
    if all.iter().all(|r| r.total() == 0) {
        return None;
    }
    let parts: Vec<String> = KINDS.iter().enumerate().map(|(i, (kind, _))| format!("{} {kind}", count(i))).collect();
    let first = all.iter().flat_map(|r| r.lines.iter().flatten()).next().cloned().unwrap_or_default();
    Some(format!("ktest: watchdog reports: {} (watchdogs.json; first: {first})", parts.join(", ")))
}
