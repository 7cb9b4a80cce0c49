//! Per-queue statistics (Linux `PWQ_STAT_*` and `tools/workqueue/
//! wq_monitor.py`) and a readable dump of pools, workers and queues (Linux
//! `tools/workqueue/wq_dump.py`).

use alloc::format;
use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::wq::{WqInner, all_wqs};

/// The counters of a pool workqueue (Linux `PWQ_STAT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PwqStat {
    /// Items started.
    Started,
    /// Items completed.
    Completed,
    /// CPU time of items, ns.
    CpuTime,
    /// Items run outside concurrency management (CPU-intensive queue).
    CpuIntensive,
    /// Workers woken because a worker blocked (concurrency management).
    CmWakeup,
    /// Mayday calls sent for the queue.
    Mayday,
    /// Items run by the rescuer.
    Rescued,
}

impl PwqStat {
    /// Number of counters.
    pub(crate) const COUNT: usize = 7;
}

/// One pwq's counters, indexed by [`PwqStat`]. Plain statistics, not part
/// of any protocol: core atomics even in loom models.
pub(crate) struct PwqStats([AtomicU64; PwqStat::COUNT]);

impl PwqStats {
    pub(crate) const fn new() -> Self {
        PwqStats([const { AtomicU64::new(0) }; PwqStat::COUNT])
    }

    /// Count one event.
    pub(crate) fn inc(&self, s: PwqStat) {
        self.add(s, 1);
    }

    /// Add `v` to a counter.
    pub(crate) fn add(&self, s: PwqStat, v: u64) {
        self.0[s as usize].fetch_add(v, Ordering::Relaxed);
    }

    /// Add `v` to a counter that only holders of the pwq's pool lock
    /// change (`_held` proves the caller is one): a plain load and store,
    /// where [`PwqStats::add`]'s locked add costs an atomic operation on
    /// the path every item takes.
    pub(crate) fn add_locked(&self, _held: &kport::sync::Held<'_>, s: PwqStat, v: u64) {
        let c = &self.0[s as usize];
        c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
    }

    /// Read a counter.
    pub(crate) fn get(&self, s: PwqStat) -> u64 {
        self.0[s as usize].load(Ordering::Relaxed)
    }
}

/// A queue's counters, summed over its pool workqueues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WqStats {
    /// Items started.
    pub started: u64,
    /// Items completed.
    pub completed: u64,
    /// CPU time of items, ns.
    pub cpu_time_ns: u64,
    /// Items run as CPU-intensive.
    pub cpu_intensive: u64,
    /// Concurrency-management wake-ups.
    pub cm_wakeups: u64,
    /// Mayday calls.
    pub mayday: u64,
    /// Items run by the rescuer.
    pub rescued: u64,
}

pub(crate) fn of(wq: &WqInner) -> WqStats {
    let sum = |s: PwqStat| wq.all_pwqs().iter().map(|p| p.stats.get(s)).sum::<u64>();
    WqStats {
        started: sum(PwqStat::Started),
        completed: sum(PwqStat::Completed),
        cpu_time_ns: sum(PwqStat::CpuTime),
        cpu_intensive: sum(PwqStat::CpuIntensive),
        cm_wakeups: sum(PwqStat::CmWakeup),
        mayday: sum(PwqStat::Mayday),
        rescued: sum(PwqStat::Rescued),
    }
}

/// One line per queue with its counters, like `wq_monitor.py`: total
/// started, in flight, CPU time (ms), CPU-intensive, CM wake-ups, mayday,
/// rescued.
pub fn monitor() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:>9} {:>6} {:>9} {:>7} {:>6} {:>6} {:>6}",
        "", "total", "infl", "CPUtime", "CPUitsv", "CMW", "MD", "RSC"
    );
    for wq in all_wqs() {
        let st = of(&wq);
        let _ = writeln!(
            s,
            "{:<24} {:>9} {:>6} {:>9} {:>7} {:>6} {:>6} {:>6}",
            wq.name,
            st.started,
            // The two sums are read at different moments: an item may
            // complete between them.
            st.started.saturating_sub(st.completed),
            st.cpu_time_ns / 1_000_000,
            st.cpu_intensive,
            st.cm_wakeups,
            st.mayday,
            st.rescued
        );
    }
    s
}

/// Pools with their workers, then queues with the pools they feed, like
/// `wq_dump.py`.
pub fn dump() -> String {
    let mut s = String::from("Worker Pools\n");
    for p in crate::pools() {
        let idle = p.workers.iter().filter(|w| w.idle).count();
        let _ = writeln!(
            s,
            "pool[{:02}] {} prio={} workers={} idle={} running={} pending={}",
            p.id,
            match p.cpu {
                Some(c) => format!("cpu={c:>2}"),
                None => format!("cpus={:#x}", p.mask.0),
            },
            if p.highpri { "high" } else { "normal" },
            p.workers.len(),
            idle,
            p.nr_running,
            p.pending
        );
        for w in p.workers.iter() {
            let _ = writeln!(
                s,
                "    {:<16} pid={:<5} {}",
                w.name,
                w.id,
                match w.current {
                    Some(f) => format!("running {f}"),
                    None if w.idle => String::from("idle"),
                    None => String::from("-"),
                }
            );
        }
    }
    s.push_str("Workqueues\n");
    for wq in all_wqs() {
        let pools: String = wq.all_pwqs().iter().map(|p| format!(" {}", p.pool.id)).collect();
        let _ = writeln!(
            s,
            "{:<24} flags={:?} max_active={} pools:{}",
            wq.name,
            wq.flags,
            wq.max_active.load(core::sync::atomic::Ordering::Relaxed),
            pools
        );
    }
    s
}

/// Work functions flagged CPU-intensive by the tick, with how often.
static HOGS: kport::sync::SpinLock<alloc::vec::Vec<(&'static str, u32)>> =
    kport::sync::SpinLock::ranked("cpu hogs", crate::RANK_LEAF, alloc::vec::Vec::new());

/// The tick flagged an item of `name` as a CPU hog: count it, and report it
/// from the [`crate::CPU_INTENSIVE_REPORT_AFTER`]th time on, then at every
/// power of two (Linux's `CONFIG_WQ_CPU_INTENSIVE_REPORT`).
pub(crate) fn cpu_hog(name: &'static str) {
    let n = {
        let mut h = HOGS.lock();
        match h.iter_mut().find(|(f, _)| *f == name) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                h.push((name, 1));
                1
            }
        }
    };
    if n >= crate::CPU_INTENSIVE_REPORT_AFTER && n.is_power_of_two() {
        kport::warn::warn(&format!(
            "workqueue: {name} hogged CPU for >{}us {n} times, consider switching to WQ_UNBOUND",
            crate::cpu_intensive_thresh_us()
        ));
    }
}

/// How many times the tick flagged items of `name` as CPU hogs.
pub fn cpu_hogs(name: &str) -> u32 {
    HOGS.lock().iter().find(|(f, _)| *f == name).map_or(0, |(_, n)| *n)
}
