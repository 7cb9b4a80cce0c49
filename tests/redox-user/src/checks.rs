//! What the user program checks, as functions of the text of the kernel's `sys:` files, so that
//! they are tested on the host (`tests/runner/tests/redox_user.rs` includes this file) and the
//! program itself only reads the files and reports.
//!
//! `sys:kthread` is the text of `kthreadd::registry::ps()` (format in `kernel-patch/README.md`,
//! "sys:kthread"): a header, then one line per kernel thread, eight whitespace-separated fields
//! and the name (which may contain spaces). `sys:cpu` starts with `CPUs: N`. `sys:context` is
//! Redox's own listing of every context, one per line, the name last.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The column names of `sys:kthread`'s header, in order.
pub const HEADER: [&str; 9] = ["PID", "PPID", "S", "CPU", "AFFINITY", "%CPU", "TIME_US", "WCHAN", "NAME"];

/// The states a kernel thread is listed in: running/runnable, sleeping, uninterruptible (or
/// never woken), parked, idle (a workqueue worker waiting for work), exited.
pub const STATES: &str = "RSDPIZ";

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
    /// `%CPU` over the last interval, in tenths of a percent (`12.5` is 125).
    pub pcpu_permille: u64,
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
        let mut fields = [""; 8];
        for f in &mut fields {
            let end = rest
                .find(char::is_whitespace)
                .ok_or_else(|| format!("sys:kthread line {n}: fewer than 9 columns in `{}`", line.trim()))?;
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
        let pcpu_permille = match fields[5].split_once('.') {
            Some((whole, tenth)) if tenth.len() == 1 => number(whole, "%CPU", n)? * 10 + number(tenth, "%CPU", n)?,
            _ => return Err(format!("sys:kthread line {n}: %CPU `{}` is not a number with one decimal", fields[5])),
        };
        rows.push(Row {
            pid: number(fields[0], "PID", n)?,
            ppid: number(fields[1], "PPID", n)?,
            state: s,
            cpu: number(fields[3], "CPU", n)?,
            affinity,
            pcpu_permille,
            time_us: number(fields[6], "TIME_US", n)?,
            wchan: fields[7],
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

/// Every row has a known state, a CPU below `cpus`, a non-empty affinity and a `%CPU` of at
/// most one CPU; ids are unique.
pub fn rows_are_consistent(rows: &[Row<'_>], cpus: usize) -> Result<(), String> {
    for (i, r) in rows.iter().enumerate() {
        if !STATES.contains(r.state) {
            return Err(format!("{} is in state `{}`, not one of {STATES}", r.name, r.state));
        }
        if r.pcpu_permille > 1000 {
            return Err(format!("{} uses {}.{}% of one CPU", r.name, r.pcpu_permille / 10, r.pcpu_permille % 10));
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

/// Idle kernel threads are listed asleep with what they wait on: kthreadd runs or sleeps
/// interruptibly (`S`, as on Linux), and at least one workqueue worker waits for work idle (`I`,
/// Linux's `TASK_IDLE`) in `worker_thread`; no worker waits for work in `S` or `D`.
pub fn idle_threads_sleep(rows: &[Row<'_>]) -> Result<(), String> {
    let kthreadd = rows.iter().find(|r| r.name == "[kthreadd]").ok_or("no [kthreadd] row")?;
    if !matches!(kthreadd.state, 'R' | 'S') {
        return Err(format!("[kthreadd] is in state {}, expected R or S", kthreadd.state));
    }
    if kthreadd.state == 'S' && kthreadd.wchan == "-" {
        return Err(String::from("[kthreadd] sleeps on nothing (WCHAN `-`)"));
    }
    if !rows.iter().any(|r| r.state == 'I' && r.wchan == "worker_thread") {
        return Err(String::from("no worker waits idle in worker_thread (state I, WCHAN worker_thread)"));
    }
    if let Some(r) = rows.iter().find(|r| r.wchan == "worker_thread" && r.state != 'I') {
        return Err(format!("{} waits for work in state {}, expected I", r.name, r.state));
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

/// Linux's ten softirq vectors, as `sys:softirqs` names its rows.
pub const SOFTIRQ_VECTORS: [&str; 10] =
    ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU"];

/// The header of a `/proc`-style per-CPU table has exactly the columns `CPU0` to `CPU{cpus-1}`.
fn cpu_header(file: &str, text: &str, cpus: usize) -> Result<(), String> {
    let header: Vec<&str> = text.lines().next().unwrap_or("").split_whitespace().collect();
    let want: Vec<String> = (0..cpus).map(|c| format!("CPU{c}")).collect();
    if header != want {
        return Err(format!("{file} header is `{}`, expected {}", header.join(" "), want.join(" ")));
    }
    Ok(())
}

/// `sys:softirqs` is Linux's `/proc/softirqs`: a header of CPUs, then one row per vector, in
/// Linux's order, with a count per CPU. TIMER has run somewhere (delayed work and the
/// workqueues' timers go through it).
pub fn softirqs_table(text: &str, cpus: usize) -> Result<(), String> {
    cpu_header("sys:softirqs", text, cpus)?;
    let rows: Vec<&str> = text.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
    if rows.len() != SOFTIRQ_VECTORS.len() {
        return Err(format!("sys:softirqs has {} rows, expected the {} vectors", rows.len(), SOFTIRQ_VECTORS.len()));
    }
    let mut timer_runs = 0u64;
    for (row, want) in rows.iter().zip(SOFTIRQ_VECTORS) {
        let (name, counts) =
            row.split_once(':').ok_or_else(|| format!("sys:softirqs row `{}` has no `:`", row.trim()))?;
        if name.trim() != want {
            return Err(format!("sys:softirqs row `{}` where {want} was expected", name.trim()));
        }
        let counts: Vec<u64> = counts
            .split_whitespace()
            .map(|c| c.parse().map_err(|_| format!("sys:softirqs {want}: `{c}` is not a count")))
            .collect::<Result<_, _>>()?;
        if counts.len() != cpus {
            return Err(format!("sys:softirqs {want} has {} counts for {cpus} CPUs", counts.len()));
        }
        if want == "TIMER" {
            timer_runs = counts.iter().sum();
        }
    }
    if timer_runs == 0 {
        return Err(String::from("sys:softirqs: TIMER never ran"));
    }
    Ok(())
}

/// `sys:interrupts` is Linux's `/proc/interrupts` for the lines with kernel handlers and those
/// delivered to the `irq:` scheme (`N: counts... chip name`), then the delivery counters.
pub fn interrupts_table(text: &str, cpus: usize) -> Result<(), String> {
    cpu_header("sys:interrupts", text, cpus)?;
    for row in text.lines().skip(1).take_while(|l| !l.starts_with("irq-scheme delivery:")) {
        let (line, rest) =
            row.split_once(':').ok_or_else(|| format!("sys:interrupts row `{}` has no `:`", row.trim()))?;
        line.trim().parse::<u32>().map_err(|_| format!("sys:interrupts row `{}`: no line number", row.trim()))?;
        let counts = rest.split_whitespace().take(cpus).filter(|c| c.parse::<u64>().is_ok()).count();
        if counts != cpus {
            return Err(format!("sys:interrupts row `{}`: {counts} counts for {cpus} CPUs", row.trim()));
        }
    }
    let delivery = text.lines().find(|l| l.starts_with("irq-scheme delivery:"));
    let Some(delivery) = delivery else {
        return Err(String::from("sys:interrupts has no `irq-scheme delivery:` counters"));
    };
    if !delivery.contains("hard-irq") && !delivery.contains("softirq") {
        return Err(format!("sys:interrupts: `{delivery}` names no delivery mode"));
    }
    Ok(())
}

/// Every CPU has its `[ksoftirqd/N]`, alive and bound to that CPU alone.
pub fn ksoftirqd_per_cpu(rows: &[Row<'_>], cpus: usize) -> Result<(), String> {
    for cpu in 0..cpus.min(64) {
        let name = format!("[ksoftirqd/{cpu}]");
        match rows.iter().find(|r| r.name == name && r.state != 'Z') {
            None => return Err(format!("no live {name}")),
            Some(r) if r.affinity != 1u64 << cpu => {
                return Err(format!("{name} has affinity {:#x}, expected CPU {cpu} alone", r.affinity));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The checks of the bottom-half files, by name, in the order the program reports them.
pub fn check_bottom_halves(
    sys_softirqs: &str,
    sys_interrupts: &str,
    sys_kthread: &str,
    sys_cpu: &str,
) -> Vec<(&'static str, Result<(), String>)> {
    let cpus = cpu_count(sys_cpu);
    let with = |f: &dyn Fn(usize) -> Result<(), String>| match &cpus {
        Ok(n) => f(*n),
        Err(e) => Err(format!("not checked: {e}")),
    };
    alloc::vec![
        ("sys_softirqs_is_linux_table", with(&|n| softirqs_table(sys_softirqs, n))),
        ("sys_interrupts_is_linux_table", with(&|n| interrupts_table(sys_interrupts, n))),
        ("ksoftirqd_per_cpu", with(&|n| parse_sys_kthread(sys_kthread).and_then(|rows| ksoftirqd_per_cpu(&rows, n)))),
    ]
}

/// The runner's disk-image pattern (`tests/runner/src/disks.rs`): byte `i` of 512-byte sector
/// `s` is byte `i` of `s` little-endian for `i < 8`, else `(31·s + i) mod 256`.
pub fn image_byte(sector: u64, i: usize) -> u8 {
    if i < 8 { sector.to_le_bytes()[i] } else { (sector.wrapping_mul(31).wrapping_add(i as u64) & 0xff) as u8 }
}

/// `len` bytes of the pattern from byte offset `pos`.
pub fn image_bytes(pos: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|k| image_byte((pos + k) / 512, ((pos + k) % 512) as usize)).collect()
}

/// FNV-1a, 64 bits (the runner's `block-image` hash).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Names `sys:vmstat` must have (Linux's `/proc/vmstat` names for the page cache and reclaim).
pub const VMSTAT_NAMES: [&str; 10] = [
    "nr_free_pages",
    "nr_file_pages",
    "nr_dirty",
    "nr_writeback",
    "pgscan_kswapd",
    "pgsteal_kswapd",
    "pgscan_direct",
    "pgsteal_direct",
    "pageoutrun",
    "allocstall",
];

/// `sys:vmstat` is `name value` lines with at least [`VMSTAT_NAMES`]; `sys:meminfo` is
/// `Name: N kB` lines with `MemTotal`, `MemFree` (not above the total) and `Cached`; and the two
/// agree on free memory (`nr_free_pages` pages against `MemFree` kB, read a moment apart: within
/// 1 MiB).
pub fn memory_tables(sys_vmstat: &str, sys_meminfo: &str) -> Result<(), String> {
    let mut vm = Vec::new();
    for (n, line) in sys_vmstat.lines().enumerate() {
        let mut f = line.split_whitespace();
        let (Some(name), Some(value), None) = (f.next(), f.next(), f.next()) else {
            return Err(format!("sys:vmstat line {}: `{line}` is not `name value`", n + 1));
        };
        let value: u64 = value.parse().map_err(|_| format!("sys:vmstat line {}: `{value}` is not a number", n + 1))?;
        vm.push((name, value));
    }
    let get = |name: &str| vm.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    if let Some(missing) = VMSTAT_NAMES.iter().find(|n| get(n).is_none()) {
        return Err(format!("sys:vmstat has no {missing}"));
    }
    let mut mi = Vec::new();
    for (n, line) in sys_meminfo.lines().enumerate() {
        let parsed = line.split_once(':').and_then(|(name, rest)| {
            let rest = rest.trim();
            let kb = rest.strip_suffix(" kB")?.trim().parse::<u64>().ok()?;
            Some((name.trim(), kb))
        });
        mi.push(parsed.ok_or_else(|| format!("sys:meminfo line {}: `{line}` is not `Name: N kB`", n + 1))?);
    }
    let kb = |name: &str| {
        mi.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| format!("sys:meminfo has no {name}"))
    };
    let (total, free) = (kb("MemTotal")?, kb("MemFree")?);
    kb("Cached")?;
    if total == 0 || free > total {
        return Err(format!("sys:meminfo: MemFree {free} kB against MemTotal {total} kB"));
    }
    let vm_free_kb = get("nr_free_pages").unwrap_or(0) * 4;
    if vm_free_kb.abs_diff(free) > 1024 {
        return Err(format!("sys:vmstat nr_free_pages is {vm_free_kb} kB, sys:meminfo MemFree {free} kB"));
    }
    Ok(())
}

/// Settings `sys:sysctl` must list (the detectors' and the memory layers').
pub const SYSCTL_NAMES: [&str; 8] = [
    "kernel.hung_task_timeout_secs",
    "kernel.hung_task_warnings",
    "kernel.watchdog_thresh",
    "kernel.nmi_watchdog",
    "vm.dirty_ratio",
    "vm.dirty_expire_centisecs",
    "vm.min_free_kbytes",
    "vm.watermark_scale_factor",
];

/// `sys:sysctl` as `name = value` lines (`sysctl -a`), sorted by name, every value an integer,
/// with at least [`SYSCTL_NAMES`]. Returns the entries.
pub fn sysctl_table(text: &str) -> Result<Vec<(&str, i64)>, String> {
    let mut out: Vec<(&str, i64)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some((name, value)) = line.split_once(" = ") else {
            return Err(format!("sys:sysctl line {}: `{line}` is not `name = value`", n + 1));
        };
        let value: i64 =
            value.parse().map_err(|_| format!("sys:sysctl line {}: `{value}` is not an integer", n + 1))?;
        if out.last().is_some_and(|(prev, _)| *prev >= name) {
            return Err(format!("sys:sysctl line {}: `{name}` is out of order", n + 1));
        }
        out.push((name, value));
    }
    if let Some(missing) = SYSCTL_NAMES.iter().find(|n| !out.iter().any(|(name, _)| name == *n)) {
        return Err(format!("sys:sysctl has no {missing}"));
    }
    Ok(out)
}
