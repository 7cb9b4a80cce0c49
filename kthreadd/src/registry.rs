//! The registry of every kernel thread, and the `ps`-like listing of it
//! (kthreadd first, as PID 2 is on Linux).

use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::fmt::Write;

use crate::kthread::{Inner, Kthread};
use kport::sync::SpinLock;

/// Room reserved in the registry so registering rarely allocates (and
/// create/stop cycles leave the heap where it was).
const RESERVE: usize = 256;

static THREADS: SpinLock<Vec<Weak<Inner>>> = SpinLock::ranked("kthread registry", crate::RANK_LEAF, Vec::new());

/// Record a new thread (dropping entries of threads gone since).
pub(crate) fn add(k: &Arc<Inner>) {
    let mut v = THREADS.lock();
    if v.capacity() == 0 {
        v.reserve(RESERVE);
    }
    v.retain(|w| w.strong_count() > 0);
    v.push(Arc::downgrade(k));
}

/// Forget threads that are gone (no handle left and reaped). Registration
/// does this as it goes; call it before measuring memory.
pub fn prune() {
    THREADS.lock().retain(|w| w.strong_count() > 0);
}

/// Every kernel thread still known (alive, or exited with a handle left),
/// kthreadd first, then by id.
pub fn all() -> Vec<Kthread> {
    let mut out: Vec<Kthread> =
        THREADS.lock().iter().filter_map(|w| w.upgrade()).filter(|k| k.task.get().is_some()).map(Kthread).collect();
    out.sort_by_key(|k| (k.parent_id() != 0, k.id()));
    out
}

/// The kernel thread with context id `id`.
pub fn find(id: usize) -> Option<Kthread> {
    all().into_iter().find(|k| k.id() == id)
}

/// One row of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Context id.
    pub id: usize,
    /// Parent id (kthreadd's, 0 for kthreadd).
    pub parent: usize,
    /// `R`, `S`, `D`, `P` or `Z`.
    pub state: char,
    /// CPU it runs or last ran on.
    pub cpu: usize,
    /// Allowed CPUs.
    pub affinity: u64,
    /// CPU time in ns.
    pub cpu_time_ns: u64,
    /// What it waits on ("" when running).
    pub wchan: &'static str,
    /// Name as listed, in brackets.
    pub name: String,
}

/// How a listing names a thread when the thread's owner has more to say
/// than its `comm`: the workqueue lists a worker as `kworker/N:M+queue`
/// while it runs an item of `queue` and `kworker/N:M-queue` after (Linux's
/// `wq_worker_comm`). Set once; the first setter wins.
pub type NameHook = fn(&Kthread) -> Option<String>;

static NAME_HOOK: spin::Once<NameHook> = spin::Once::new();

/// Install the [`NameHook`] (once; later calls are ignored).
///
/// Context: any.
pub fn set_name_hook(hook: NameHook) {
    NAME_HOOK.call_once(|| hook);
}

/// The name a listing shows for `k`, without the brackets.
///
/// Context: any.
pub fn listed_name(k: &Kthread) -> String {
    NAME_HOOK.get().and_then(|h| h(k)).unwrap_or_else(|| String::from(k.comm()))
}

/// A row per thread, in listing order.
pub fn rows() -> Vec<Row> {
    all()
        .iter()
        .map(|k| {
            let t = k.task();
            let state = k.0.state_letter();
            Row {
                id: k.id(),
                parent: k.parent_id(),
                state,
                cpu: t.cpu(),
                affinity: t.affinity().0,
                cpu_time_ns: t.cpu_time_ns(),
                wchan: if state == 'R' { "" } else { t.wait_channel() },
                name: alloc::format!("[{}]", listed_name(k)),
            }
        })
        .collect()
}

/// The listing as text, like `ps -eo pid,ppid,stat,psr,time,wchan,comm`:
/// a header line, then one line per thread.
pub fn ps() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>6} {:>6} S {:>3} {:>18} {:>12} {:<16} NAME",
        "PID", "PPID", "CPU", "AFFINITY", "TIME_US", "WCHAN"
    );
    for r in rows() {
        let _ = writeln!(
            s,
            "{:>6} {:>6} {} {:>3} {:#18x} {:>12} {:<16} {}",
            r.id,
            r.parent,
            r.state,
            r.cpu,
            r.affinity,
            r.cpu_time_ns / 1000,
            if r.wchan.is_empty() { "-" } else { r.wchan },
            r.name
        );
    }
    s
}
