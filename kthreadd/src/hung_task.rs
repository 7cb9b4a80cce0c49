//! The hung-task detector (Linux `kernel/hung_task.c`): `khungtaskd` wakes
//! every check interval and reports each kernel thread that sat in
//! uninterruptible sleep (`D`) without a single context switch for
//! `hung_task_timeout_secs`:
//!
//! ```text
//! INFO: task NAME:ID blocked for more than N seconds.
//! ```
//!
//! followed by the thread's line and its stack ([`crate::sysrq::show_task`]).
//!
//! The rules are Linux's:
//! * a thread counts as blocked from the first check that sees its switch
//!   count unchanged; any switch restarts its clock;
//! * a thread created and never woken is not checked (Linux skips a task
//!   that never switched), nor a frozen one, nor one in `I` (idle) or `S`;
//! * each report uses one of `hung_task_warnings` (10; -1 means no limit);
//!   at 0 the detector still checks but prints nothing. A thread still
//!   blocked at the next check is reported again;
//! * `hung_task_timeout_secs` 0 turns checking off; `hung_task_check_interval_secs`
//!   0 means "the timeout";
//! * `hung_task_panic` 1 panics after the report.
//!
//! Settings are in [`kport::sysctl`] under `kernel.` (registered by
//! [`init`]). Linux walks every task; this detector sees the kernel
//! threads of [`crate::registry`], which is every thread this subsystem
//! knows.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use kport::sync::SpinLock;
use kport::sysctl::{Bounded, Kind, Sysctl};
use kport::{Result, SleepState, TaskState, port};

use crate::kthread::{self, Builder, Kthread};
use crate::registry;

/// `kernel.hung_task_timeout_secs` (Linux default 120; 0: no checks).
pub static TIMEOUT_SECS: Bounded = Bounded::new(120, 0, i64::MAX / 1_000_000_000);
/// `kernel.hung_task_check_interval_secs` (0: the timeout).
pub static CHECK_INTERVAL_SECS: Bounded = Bounded::new(0, 0, i64::MAX / 1_000_000_000);
/// `kernel.hung_task_warnings` (Linux default 10; -1: no limit).
pub static WARNINGS: Bounded = Bounded::new(10, -1, i64::MAX);
/// `kernel.hung_task_panic` (0 or 1).
pub static PANIC: Bounded = Bounded::new(0, 0, 1);

static SYSCTLS: [Sysctl; 4] = [
    Sysctl { name: "kernel.hung_task_timeout_secs", kind: Kind::Bounded(&TIMEOUT_SECS, Some(settings_changed)) },
    Sysctl {
        name: "kernel.hung_task_check_interval_secs",
        kind: Kind::Bounded(&CHECK_INTERVAL_SECS, Some(settings_changed)),
    },
    Sysctl { name: "kernel.hung_task_warnings", kind: Kind::Bounded(&WARNINGS, None) },
    Sysctl { name: "kernel.hung_task_panic", kind: Kind::Bounded(&PANIC, None) },
];

/// Reports kept for [`reports_since`].
const KEPT: usize = 16;

/// One report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Sequence number (1 for the first report since boot).
    pub seq: u64,
    /// Thread id.
    pub id: usize,
    /// Thread name, as listed.
    pub name: String,
    /// The whole seconds it was blocked for, as printed.
    pub secs: u64,
    /// Where it sleeps.
    pub wchan: &'static str,
    /// Return addresses of its stack dump.
    pub frames: usize,
    /// The report's text, as printed.
    pub text: String,
}

static REPORTS: AtomicU64 = AtomicU64::new(0);
static CHECKS: AtomicU64 = AtomicU64::new(0);
static LOG: SpinLock<Vec<Report>> = SpinLock::ranked("hung task reports", crate::RANK_LEAF, Vec::new());
static THREAD: SpinLock<Option<Kthread>> = SpinLock::ranked("khungtaskd", crate::RANK_LEAF, None);

/// Reports printed since boot.
pub fn reports() -> u64 {
    REPORTS.load(Ordering::Relaxed)
}

/// Checks done since boot (a test waits for one to pass).
pub fn checks() -> u64 {
    CHECKS.load(Ordering::Relaxed)
}

/// The kept reports whose sequence number is above `seq` (at most the last
/// 16).
pub fn reports_since(seq: u64) -> Vec<Report> {
    LOG.lock().iter().filter(|r| r.seq > seq).cloned().collect()
}

/// Start `khungtaskd` and register the settings (once; later calls return
/// the same thread).
///
/// Context: may sleep.
pub fn init() -> Result<Kthread> {
    kport::might_sleep();
    kport::sysctl::register(&SYSCTLS);
    if let Some(k) = THREAD.lock().as_ref() {
        return Ok(k.clone());
    }
    // Created with no lock held (creation sleeps); a racing second caller
    // stops the thread it made and takes the first one.
    let k = Builder::new(format_args!("khungtaskd"), khungtaskd).run()?;
    let mut t = THREAD.lock();
    if let Some(first) = t.as_ref() {
        let first = first.clone();
        drop(t);
        let _ = k.stop();
        return Ok(first);
    }
    *t = Some(k.clone());
    Ok(k)
}

/// A setting changed: the detector recomputes its next check now (Linux
/// wakes `khungtaskd` from the sysctl handler).
fn settings_changed() {
    let k = THREAD.lock().clone();
    if let Some(k) = k {
        k.wake();
    }
}

fn interval_ns() -> u64 {
    let timeout = TIMEOUT_SECS.get() as u64;
    let interval = match CHECK_INTERVAL_SECS.get() as u64 {
        0 => timeout,
        i => i.min(timeout),
    };
    interval.saturating_mul(1_000_000_000)
}

fn khungtaskd() -> i32 {
    let p = port();
    // Per thread: the switch count last seen and when it last changed.
    let mut seen: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    let mut last_check = p.now_ns();
    loop {
        // Sleeping state first, settings second: a sysctl write that wakes
        // this thread after the state is set makes the sleep below return at
        // once, so a new timeout cannot be missed until the old deadline.
        p.set_current_state(SleepState::Interruptible, "khungtaskd");
        if kthread::should_stop() {
            p.set_current_running();
            break;
        }
        let interval = interval_ns();
        let deadline = if interval == 0 { u64::MAX } else { last_check.saturating_add(interval) };
        if p.now_ns() < deadline {
            if deadline == u64::MAX {
                p.schedule();
            } else {
                p.schedule_until(deadline);
            }
            continue;
        }
        p.set_current_running();
        last_check = p.now_ns();
        check(&mut seen, last_check);
    }
    0
}

/// One pass over every kernel thread (Linux `check_hung_uninterruptible_tasks`).
fn check(seen: &mut BTreeMap<usize, (u64, u64)>, now: u64) {
    let timeout_ns = (TIMEOUT_SECS.get() as u64).saturating_mul(1_000_000_000);
    let threads = registry::all();
    seen.retain(|id, _| threads.iter().any(|k| k.id() == *id));
    for k in &threads {
        let t = k.task();
        if k.state() != TaskState::DiskSleep || k.is_frozen() {
            seen.remove(&k.id());
            continue;
        }
        // A thread created and never woken is `New`, not `D`: Linux's rule
        // of skipping a task that never switched is the state test above.
        let switches = t.nr_switches();
        let entry = seen.entry(k.id()).or_insert((u64::MAX, now));
        if entry.0 != switches {
            *entry = (switches, now);
            continue;
        }
        if now < entry.1.saturating_add(timeout_ns) {
            continue;
        }
        report(k, timeout_ns / 1_000_000_000);
    }
    CHECKS.fetch_add(1, Ordering::Relaxed);
}

fn report(k: &Kthread, secs: u64) {
    let left = WARNINGS.get();
    if left == 0 {
        return;
    }
    if left > 0 {
        // Only khungtaskd writes the count down; a concurrent sysctl write
        // wins over this decrement, as Linux's does.
        let _ = WARNINGS.value.compare_exchange(left, left - 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    let name = String::from(k.comm());
    let id = k.id();
    let mut text = format!(
        "INFO: task {name}:{id} blocked for more than {secs} seconds.\n      \
         \"sysctl.kernel.hung_task_timeout_secs=0\" (sys:sysctl inside Redox) disables this message.\n"
    );
    let mut frames = [0usize; crate::sysrq::MAX_FRAMES];
    let n = k.task().stack_trace(&mut frames);
    text.push_str(&crate::sysrq::task_text(k, &frames[..n]));
    for line in text.lines() {
        port().console_line(line);
    }
    let seq = REPORTS.fetch_add(1, Ordering::Relaxed) + 1;
    let r = Report { seq, id: k.id(), name, secs, wchan: k.task().wait_channel(), frames: n, text };
    let mut log = LOG.lock();
    if log.len() == KEPT {
        log.remove(0);
    }
    log.push(r);
    drop(log);
    if PANIC.get() == 1 {
        panic!("hung_task: blocked tasks");
    }
}
