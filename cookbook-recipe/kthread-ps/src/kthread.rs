//! `sys:kthread`: one row per kernel thread, as `kthreadd::registry::ps()`
//! writes it (`{:>6} {:>6} {} {:>3} {:#18x} {:>5} {:>12} {:<16} {}`: PID,
//! PPID, state letter, CPU, affinity mask, `%CPU` over the last interval
//! with one decimal, CPU time in µs, wait channel or `-`, then `[name]`,
//! which may contain spaces).
//!
//! The format before `%CPU` (eight columns, header `PID PPID S CPU AFFINITY
//! TIME_US WCHAN NAME`) is still read: its rows have no `%CPU` (`-` in the
//! table, `null` in JSON).

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::json;
use crate::listing::{Listing, num};

/// One kernel thread: a data line of `sys:kthread`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kthread {
    /// Context id (Redox's `Context::debug_id`).
    pub pid: u64,
    /// Creator's id: kthreadd's, or 0 for kthreadd itself.
    pub ppid: u64,
    /// `R` running, `S` sleeping, `D` uninterruptible, `P` parked, `I`
    /// idle (a workqueue worker waiting for work), `Z` exited.
    pub state: char,
    /// CPU it runs or last ran on.
    pub cpu: u32,
    /// CPUs it may run on, bit n for CPU n (all ones: unbound).
    pub affinity: u64,
    /// `%CPU` over the kernel's last interval in tenths of a percent
    /// (`12.5` is 125); `None` in the eight-column format.
    pub pcpu: Option<u32>,
    /// CPU time, µs.
    pub time_us: u64,
    /// What it waits on (`None` for the file's `-`).
    pub wchan: Option<String>,
    /// Name as listed, with its brackets: `[kworker/0:0]`.
    pub name: String,
}

/// The header of the format before `%CPU`.
const HEADER_8: &[&str] = &["PID", "PPID", "S", "CPU", "AFFINITY", "TIME_US", "WCHAN", "NAME"];

impl Listing for Kthread {
    const HEADER: &'static [&'static str] =
        &["PID", "PPID", "S", "CPU", "AFFINITY", "%CPU", "TIME_US", "WCHAN", "NAME"];
    const OLD_HEADERS: &'static [&'static [&'static str]] = &[HEADER_8];

    fn parse_row(line: &str) -> Result<Self, String> {
        parse_kthread(line, Self::HEADER)
    }

    fn parse_old_row(line: &str, _format: usize) -> Result<Self, String> {
        parse_kthread(line, HEADER_8)
    }
}

/// `%CPU` with one decimal (`12.5`) in tenths of a percent.
fn pcpu(word: &str) -> Result<u32, String> {
    let bad = || format!("%CPU: `{word}` is not a number with one decimal");
    let (whole, tenth) = word.split_once('.').ok_or_else(bad)?;
    if tenth.len() != 1 || whole.is_empty() {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let tenth: u32 = tenth.parse().map_err(|_| bad())?;
    whole.checked_mul(10).and_then(|w| w.checked_add(tenth)).ok_or_else(bad)
}

/// One line with the columns of `header`: all but the last are words, the
/// name is the rest of the line.
fn parse_kthread(line: &str, header: &[&str]) -> Result<Kthread, String> {
    let columns = header.len();
    let expected = |found| format!("expected {columns} columns ({}), found {found}", header.join(" "));
    let mut words = Vec::with_capacity(columns - 1);
    let mut rest = line;
    for i in 0..columns - 1 {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if end == 0 {
            return Err(expected(i));
        }
        let (w, r) = rest.split_at(end);
        words.push(w);
        rest = r;
    }
    let name = rest.trim();
    if name.is_empty() {
        return Err(expected(columns - 1));
    }
    // %CPU is the sixth word of the current format (the old one has none).
    let pcpu = if columns == 9 { Some(pcpu(words.remove(5))?) } else { None };
    let [pid, ppid, state, cpu, affinity, time, wchan] = words[..] else {
        unreachable!("seven words besides %CPU and the name")
    };
    let mut letters = state.chars();
    let state = match (letters.next(), letters.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => c,
        _ => return Err(format!("S: `{state}` is not a state letter")),
    };
    let affinity = affinity
        .strip_prefix("0x")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| format!("AFFINITY: `{affinity}` is not a 0x-prefixed hex mask"))?;
    Ok(Kthread {
        pid: num("PID", pid)?,
        ppid: num("PPID", ppid)?,
        state,
        cpu: num("CPU", cpu)?,
        affinity,
        pcpu,
        time_us: num("TIME_US", time)?,
        wchan: (wchan != "-").then(|| wchan.to_string()),
        name: name.to_string(),
    })
}

/// Order of the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// By id, ascending.
    Pid,
    /// By `%CPU`, most first (ties, and rows without `%CPU`, by CPU time,
    /// then id), as `top` orders.
    Cpu,
    /// By CPU time, most first (ties by id).
    Time,
}

/// Sort `rows` in place.
pub fn sort(rows: &mut [Kthread], by: Sort) {
    use std::cmp::Reverse;
    match by {
        Sort::Pid => rows.sort_by_key(|r| r.pid),
        Sort::Cpu => rows.sort_by_key(|r| (Reverse(r.pcpu), Reverse(r.time_us), r.pid)),
        Sort::Time => rows.sort_by_key(|r| (Reverse(r.time_us), r.pid)),
    }
}

/// `%CPU` as printed: one decimal, or `-` when the file had none.
pub fn pcpu_text(pcpu: Option<u32>) -> String {
    pcpu.map_or("-".into(), |p| format!("{}.{}", p / 10, p % 10))
}

/// The rows as a forest, each with its depth: every row whose parent is
/// not listed is a root, and children follow their parent (in the order of
/// `rows`). Every row appears once, even in a (malformed) parent cycle.
pub fn tree(rows: &[Kthread]) -> Vec<(&Kthread, usize)> {
    let ids: BTreeSet<u64> = rows.iter().map(|r| r.pid).collect();
    let mut out = Vec::with_capacity(rows.len());
    let mut done = vec![false; rows.len()];
    let roots = (0..rows.len()).filter(|&i| rows[i].ppid == rows[i].pid || !ids.contains(&rows[i].ppid));
    // Roots first; then whatever a cycle kept unreachable.
    for root in roots.chain(0..rows.len()).collect::<Vec<_>>() {
        let mut stack = vec![(root, 0)];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut done[i], true) {
                continue;
            }
            out.push((&rows[i], depth));
            let kids = (0..rows.len()).filter(|&k| !done[k] && rows[k].ppid == rows[i].pid && k != i);
            stack.extend(kids.rev().map(|k| (k, depth + 1)).collect::<Vec<_>>());
        }
    }
    out
}

/// CPUs of a mask as a list: `all` (all ones), `none`, or ranges (`0-3,6`).
pub fn cpu_list(mask: u64) -> String {
    match mask {
        u64::MAX => return "all".into(),
        0 => return "none".into(),
        _ => {}
    }
    let mut s = String::new();
    let mut cpu = 0;
    while cpu < 64 {
        if mask >> cpu & 1 == 0 {
            cpu += 1;
            continue;
        }
        let start = cpu;
        while cpu < 64 && mask >> cpu & 1 == 1 {
            cpu += 1;
        }
        let sep = if s.is_empty() { "" } else { "," };
        match cpu - start {
            1 => write!(s, "{sep}{start}"),
            _ => write!(s, "{sep}{start}-{}", cpu - 1),
        }
        .unwrap();
    }
    s
}

/// CPU time as `M:SS.uuuuuu` (minutes, seconds, microseconds).
pub fn cpu_time(us: u64) -> String {
    format!("{}:{:02}.{:06}", us / 60_000_000, us / 1_000_000 % 60, us % 1_000_000)
}

/// The `ps`-like table: a header, then a line per row; a row's depth (from
/// [`tree`]; 0 for a flat list) indents its name as `ps f` does.
pub fn table(rows: &[(&Kthread, usize)]) -> String {
    let mut s = format!(
        "{:>5} {:>5} S {:>3} {:<8} {:>5} {:>11} {:<16} NAME\n",
        "PID", "PPID", "CPU", "AFFINITY", "%CPU", "TIME", "WCHAN"
    );
    for &(r, depth) in rows {
        let indent = if depth == 0 { String::new() } else { format!("{} \\_ ", "    ".repeat(depth - 1)) };
        writeln!(
            s,
            "{:>5} {:>5} {} {:>3} {:<8} {:>5} {:>11} {:<16} {indent}{}",
            r.pid,
            r.ppid,
            r.state,
            r.cpu,
            cpu_list(r.affinity),
            pcpu_text(r.pcpu),
            cpu_time(r.time_us),
            r.wchan.as_deref().unwrap_or("-"),
            r.name
        )
        .unwrap();
    }
    s
}

/// The rows as a JSON array, one object per line. The mask is a hex string
/// (all ones does not fit a double); `pcpu` is a number with one decimal
/// (`null` for the eight-column format); `wchan` is `null` for the file's
/// `-`.
pub fn to_json(rows: &[Kthread]) -> String {
    json::array(rows.iter().map(|r| {
        let wchan = r.wchan.as_deref().map_or("null".into(), json::string);
        format!(
            "{{\"pid\":{},\"ppid\":{},\"state\":{},\"cpu\":{},\"affinity\":\"{:#x}\",\"pcpu\":{},\"time_us\":{},\"wchan\":{wchan},\"name\":{}}}",
            r.pid,
            r.ppid,
            json::string(&r.state.to_string()),
            r.cpu,
            r.affinity,
            r.pcpu.map_or("null".into(), |p| pcpu_text(Some(p))),
            r.time_us,
            json::string(&r.name)
        )
    }))
}
