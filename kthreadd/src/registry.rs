//! The registry of every kernel thread, and the `ps`-like listing of it
//! (kthreadd first, as PID 2 is on Linux).
//!
//! # %CPU
//! The listing's `%CPU` is the share of one CPU a thread used over a recent
//! window, as `top` shows it (Linux's `ps` divides the total CPU time by the
//! thread's lifetime instead, which hides a thread that only just started
//! spinning). There is no sampling timer: each thread keeps two samples
//! (time, CPU time) in its record ([`CpuUsage`]), and reading the listing
//! ([`rows`], [`ps`]) takes a new one whenever the newer is at least
//! [`CPU_USAGE_INTERVAL_NS`] old. The figure is the CPU-time delta from the
//! older sample to now over the time between them: a window of one to two
//! intervals ending at the read when the listing is read often, and since
//! the previous read otherwise. The first samples are taken at creation (CPU
//! time 0), so a thread's first figure covers its life so far. Nothing is
//! allocated and nothing runs while nobody reads the listing.

use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::kthread::{Inner, Kthread};
use kport::sync::SpinLock;

/// Room reserved in the registry so registering rarely allocates (and
/// create/stop cycles leave the heap where it was).
const RESERVE: usize = 256;

static THREADS: SpinLock<Vec<Weak<Inner>>> = SpinLock::ranked("kthread registry", crate::RANK_LEAF, Vec::new());

/// The registry's length at which the next registration drops the entries
/// of threads gone: twice what the last pass left (at least [`RESERVE`]),
/// so that registering is O(1) amortized however many threads are alive
/// (a pass at each registration made creation O(n) in the live threads).
/// Only written under the registry's lock.
static PRUNE_AT: AtomicUsize = AtomicUsize::new(RESERVE);

/// Drop the entries of threads gone, and set the next pass's length.
fn prune_locked(v: &mut Vec<Weak<Inner>>) {
    v.retain(|w| w.strong_count() > 0);
    PRUNE_AT.store((2 * v.len()).max(RESERVE), Ordering::Relaxed);
}

/// Record a new thread (dropping entries of threads gone since, once the
/// list has doubled).
pub(crate) fn add(k: &Arc<Inner>) {
    let mut v = THREADS.lock();
    if v.capacity() == 0 {
        v.reserve(RESERVE);
    }
    if v.len() >= PRUNE_AT.load(Ordering::Relaxed) {
        prune_locked(&mut v);
    }
    v.push(Arc::downgrade(k));
}

/// Forget threads that are gone (no handle left and reaped). Registration
/// does this as the list grows; call it before measuring memory (an entry
/// keeps its thread's record allocated until then).
pub fn prune() {
    prune_locked(&mut THREADS.lock());
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

/// How often a thread's CPU-time sample is renewed, at most: the `%CPU`
/// window is one to two of these long when the listing is read often. One
/// second, the refresh of `top -d 1`: long enough that a thread woken a few
/// times per tick shows a stable figure, short enough that a thread that
/// starts spinning is visible at the next read.
pub const CPU_USAGE_INTERVAL_NS: u64 = 1_000_000_000;

/// A thread's two most recent CPU-time samples (see the module
/// documentation): `(time, CPU time)` in ns of [`kport::Port::now_ns`] and
/// [`kport::PortTask::cpu_time_ns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuUsage {
    older: (u64, u64),
    newer: (u64, u64),
}

impl CpuUsage {
    /// Both samples at the current time with no CPU time (a new thread).
    ///
    /// Context: any.
    pub fn since_now() -> Self {
        let now = kport::port().now_ns();
        CpuUsage { older: (now, 0), newer: (now, 0) }
    }

    /// Take the reading `(now, cpu)`: renew the samples if the newer is at
    /// least [`CPU_USAGE_INTERVAL_NS`] old, then answer the share of one CPU
    /// used since the older, in tenths of a percent (0 to 1000).
    pub fn update(&mut self, now: u64, cpu: u64) -> u32 {
        if now.saturating_sub(self.newer.0) >= CPU_USAGE_INTERVAL_NS {
            self.older = self.newer;
            self.newer = (now, cpu);
        }
        let span = now.saturating_sub(self.older.0);
        if span == 0 {
            return 0;
        }
        let used = cpu.saturating_sub(self.older.1);
        // The clock and the CPU-time counters are read separately (and, on
        // some ports, from different clocks): clamp to one whole CPU.
        (u128::from(used) * 1000 / u128::from(span)).min(1000) as u32
    }
}

/// One row of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Context id.
    pub id: usize,
    /// Parent id (kthreadd's, 0 for kthreadd).
    pub parent: usize,
    /// `R` running, `S` sleeping, `D` uninterruptible, `P` parked, `I`
    /// idle (waiting for work), `Z` exited.
    pub state: char,
    /// CPU it runs or last ran on.
    pub cpu: usize,
    /// Allowed CPUs.
    pub affinity: u64,
    /// `%CPU` in tenths of a percent of one CPU (0 to 1000) over the recent
    /// window (module documentation).
    pub cpu_permille: u32,
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

/// A row per thread, in listing order. Renews the threads' CPU-time
/// samples that are due (module documentation).
///
/// Context: any task context (the port calls may need one).
pub fn rows() -> Vec<Row> {
    let p = kport::port();
    all()
        .iter()
        .map(|k| {
            let t = k.task();
            let state = k.0.state_letter();
            // Read outside the sample's lock: the port may take its own locks.
            let cpu_time_ns = t.cpu_time_ns();
            let now = p.now_ns();
            let cpu_permille = k.0.usage.lock().update(now, cpu_time_ns);
            Row {
                id: k.id(),
                parent: k.parent_id(),
                state,
                cpu: t.cpu(),
                affinity: t.affinity().0,
                cpu_permille,
                cpu_time_ns,
                wchan: if state == 'R' { "" } else { t.wait_channel() },
                name: alloc::format!("[{}]", listed_name(k)),
            }
        })
        .collect()
}

/// The listing as text, like `ps -eo pid,ppid,stat,psr,pcpu,time,wchan,comm`:
/// a header line, then one line per thread. Columns: PID, PPID, S (state
/// letter), CPU, AFFINITY (hex mask), %CPU (one decimal), TIME_US (total
/// CPU time in µs), WCHAN (`-` when running), NAME (in brackets, may
/// contain spaces).
///
/// Context: any task context.
pub fn ps() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>6} {:>6} S {:>3} {:>18} {:>5} {:>12} {:<16} NAME",
        "PID", "PPID", "CPU", "AFFINITY", "%CPU", "TIME_US", "WCHAN"
    );
    for r in rows() {
        let _ = writeln!(
            s,
            "{:>6} {:>6} {} {:>3} {:#18x} {:>3}.{} {:>12} {:<16} {}",
            r.id,
            r.parent,
            r.state,
            r.cpu,
            r.affinity,
            r.cpu_permille / 10,
            r.cpu_permille % 10,
            r.cpu_time_ns / 1000,
            if r.wchan.is_empty() { "-" } else { r.wchan },
            r.name
        );
    }
    s
}
