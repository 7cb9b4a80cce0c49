//! What the user program checks, as functions of the text of the kernel's `sys:` files, so that
//! they are tested on the host (`tests/runner/tests/redox_user.rs` includes this file) and the
//! program itself only reads the files and reports.
//!
//! `sys:kthread` is the text of `kthreadd::registry::ps()` (format in `kernel-patch/README.md`,
//! "sys:kthread"): a header, then one line per kernel thread, seven whitespace-separated fields
//! and the name (which may contain spaces). `sys:cpu` starts with `CPUs: N`. `sys:context` is
//! Redox's own listing of every context, one per line, the name last.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The column names of `sys:kthread`'s header, in order.
pub const HEADER: [&str; 8] = ["PID", "PPID", "S", "CPU", "AFFINITY", "TIME_US", "WCHAN", "NAME"];

/// The states a kernel thread is listed in: running/runnable, sleeping, uninterruptible (or
/// never woken), parked, exited.
pub const STATES: &str = "RSDPZ";

/// One line of `sys:kthread`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    /// Context id.
    pub pid: u64,
    /// Creator's id (kthreadd's; 0 for kthreadd).
    pub ppid: u64,
    /// State letter, one of [`STATES`].
    pub state: char,
    /// CPU it runs or last ran on.
    pub cpu: u64,
    /// CPUs it may run on (bit n = CPU n).
    pub affinity: u64,
    /// CPU time in microseconds.
    pub time_us: u64,
    /// What it waits on (`-` when running).
    pub wchan: &'a str,
    /// `[name]`.
    pub name: &'a str,
}

fn number(field: &str, what: &str, line: usize) -> Result<u64, String> {
    field.parse().map_err(|_| format!("sys:kthread line {line}: {what} `{field}` is not a number"))
}

/// Parse `sys:kthread`: the header and every row; the first malformed line is the error.
pub fn parse_sys_kthread(text: &str) -> Result<Vec<Row<'_>>, String> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let Some((_, header)) = lines.next() else {
        return Err(String::from("sys:kthread is empty (is the subsystem started?)"));
    };
    let words: Vec<&str> = header.split_whitespace().collect();
    if words != HEADER {
        return Err(format!("sys:kthread header is `{}`, expected the columns {}", header.trim(), HEADER.join(" ")));
    }
    let mut rows = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let mut rest = line.trim_start();
        let mut fields = [""; 7];
        for f in &mut fields {
            let end = rest
                .find(char::is_whitespace)
                .ok_or_else(|| format!("sys:kthread line {n}: fewer than 8 columns in `{}`", line.trim()))?;
            *f = &rest[..end];
            rest = rest[end..].trim_start();
        }
        let name = rest.trim_end();
        if name.is_empty() {
            return Err(format!("sys:kthread line {n}: no name in `{}`", line.trim()));
        }
        let mut state = fields[2].chars();
        let (Some(s), None) = (state.next(), state.next()) else {
            return Err(format!("sys:kthread line {n}: state `{}` is not one letter", fields[2]));
        };
        let affinity = fields[4]
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("sys:kthread line {n}: affinity `{}` is not a 0x mask", fields[4]))?;
        rows.push(Row {
            pid: number(fields[0], "PID", n)?,
            ppid: number(fields[1], "PPID", n)?,
            state: s,
            cpu: number(fields[3], "CPU", n)?,
            affinity,
            time_us: number(fields[5], "TIME_US", n)?,
            wchan: fields[6],
            name,
        });
    }
    Ok(rows)
}

/// The CPU count in `sys:cpu` (its first line, `CPUs: N`).
pub fn cpu_count(sys_cpu: &str) -> Result<usize, String> {
    let first = sys_cpu.lines().next().unwrap_or("");
    first
        .strip_prefix("CPUs:")
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("sys:cpu does not start with `CPUs: N` but with `{first}`"))
}

/// `[kthreadd]` is the first row, has no parent, and is the parent of every other row.
pub fn kthreadd_parents_all(rows: &[Row<'_>]) -> Result<(), String> {
    let Some(first) = rows.first() else {
        return Err(String::from("sys:kthread lists no kernel thread"));
    };
    if first.name != "[kthreadd]" || first.ppid != 0 {
        return Err(format!(
            "the first row is {} with PPID {}, expected [kthreadd] with PPID 0",
            first.name, first.ppid
        ));
    }
    match rows.iter().find(|r| r.ppid != first.pid && r.pid != first.pid) {
        Some(r) => Err(format!("{} (PID {}) has PPID {}, not kthreadd's {}", r.name, r.pid, r.ppid, first.pid)),
        None => Ok(()),
    }
}

/// Every row has a known state, a CPU below `cpus` and a non-empty affinity; ids are unique.
pub fn rows_are_consistent(rows: &[Row<'_>], cpus: usize) -> Result<(), String> {
    for (i, r) in rows.iter().enumerate() {
        if !STATES.contains(r.state) {
            return Err(format!("{} is in state `{}`, not one of {STATES}", r.name, r.state));
        }
        if r.cpu >= cpus as u64 {
            return Err(format!("{} is on CPU {} of {cpus}", r.name, r.cpu));
        }
        if r.affinity == 0 {
            return Err(format!("{} may run on no CPU (affinity 0x0)", r.name));
        }
        if rows[..i].iter().any(|o| o.pid == r.pid) {
            return Err(format!("PID {} is listed twice", r.pid));
        }
    }
    Ok(())
}

/// Each of the `cpus` CPUs has a live workqueue worker bound to it alone (`[kworker/N:...]`,
/// affinity exactly CPU N), as Linux lists its per-CPU kworkers.
pub fn per_cpu_workers_bound(rows: &[Row<'_>], cpus: usize) -> Result<(), String> {
    for cpu in 0..cpus.min(64) {
        let prefix = format!("[kworker/{cpu}:");
        let bound = rows.iter().any(|r| r.name.starts_with(&prefix) && r.state != 'Z' && r.affinity == 1u64 << cpu);
        if !bound {
            return Err(format!("no live [kworker/{cpu}:*] bound to CPU {cpu} alone"));
        }
    }
    Ok(())
}

/// Idle kernel threads are listed asleep with what they wait on: kthreadd runs or sleeps, and
/// at least one workqueue worker sleeps in `worker_thread`.
pub fn idle_threads_sleep(rows: &[Row<'_>]) -> Result<(), String> {
    let kthreadd = rows.iter().find(|r| r.name == "[kthreadd]").ok_or("no [kthreadd] row")?;
    if !matches!(kthreadd.state, 'R' | 'S') {
        return Err(format!("[kthreadd] is in state {}, expected R or S", kthreadd.state));
    }
    if kthreadd.state == 'S' && kthreadd.wchan == "-" {
        return Err(String::from("[kthreadd] sleeps on nothing (WCHAN `-`)"));
    }
    if !rows.iter().any(|r| r.state == 'S' && r.wchan == "worker_thread") {
        return Err(String::from("no worker sleeps in worker_thread (state S, WCHAN worker_thread)"));
    }
    Ok(())
}

/// The bracketed context names of Redox's `sys:context` (`[kmain]`, `[kthreadd]`, ...): the
/// name is the last column, and the memory columns before it contain spaces (`64.5 KB`), so the
/// name is taken from the line's last ` [`.
pub fn kernel_context_names(sys_context: &str) -> Vec<&str> {
    sys_context
        .lines()
        .filter_map(|l| {
            let l = l.trim_end();
            let at = l.rfind(" [")?;
            l.ends_with(']').then(|| &l[at + 1..])
        })
        .collect()
}

/// Is `row_name` (from `sys:kthread`) the context named `context_name`? A workqueue worker is
/// listed with what it last worked for, as Linux's `ps` shows it (`[kworker/1:0-events]` for the
/// context `[kworker/1:0]`).
pub fn same_thread(row_name: &str, context_name: &str) -> bool {
    if row_name == context_name {
        return true;
    }
    let base = context_name.strip_suffix(']').unwrap_or(context_name);
    row_name.strip_prefix(base).is_some_and(|rest| rest.starts_with('-') && rest.ends_with(']'))
}

/// Every live kernel thread of `sys:kthread` is a context of Redox's own `sys:context` listing
/// under its name (exited ones may already be gone from it).
pub fn listed_in_sys_context(rows: &[Row<'_>], sys_context: &str) -> Result<(), String> {
    let names = kernel_context_names(sys_context);
    for r in rows.iter().filter(|r| r.state != 'Z') {
        if !names.iter().any(|c| same_thread(r.name, c)) {
            return Err(format!("{} (PID {}) is not in sys:context", r.name, r.pid));
        }
    }
    Ok(())
}

/// A check of the parsed rows against the CPU count.
type RowCheck<'r, 'a> = &'r dyn Fn(&[Row<'a>], usize) -> Result<(), String>;

/// The checks on the three files' text, by name, in the order the program reports them.
pub fn check_listings<'a>(
    sys_kthread: &'a str,
    sys_cpu: &str,
    sys_context: &str,
) -> Vec<(&'static str, Result<(), String>)> {
    let cpus = cpu_count(sys_cpu);
    let rows = parse_sys_kthread(sys_kthread);
    let with = |f: RowCheck<'_, 'a>| match (&rows, &cpus) {
        (Ok(rows), Ok(cpus)) => f(rows, *cpus),
        (Err(e), _) | (_, Err(e)) => Err(format!("not checked: {e}")),
    };
    alloc::vec![
        ("sys_cpu_counts_the_cpus", cpus.as_ref().map(|_| ()).map_err(Clone::clone)),
        ("sys_kthread_parses", rows.as_ref().map(|_| ()).map_err(Clone::clone)),
        ("kthreadd_is_first_and_parent_of_all", with(&|r, _| kthreadd_parents_all(r))),
        ("rows_are_consistent", with(&rows_are_consistent)),
        ("per_cpu_workers_are_bound", with(&per_cpu_workers_bound)),
        ("idle_threads_sleep", with(&|r, _| idle_threads_sleep(r))),
        ("kernel_threads_are_redox_contexts", with(&|r, _| listed_in_sys_context(r, sys_context))),
    ]
}
