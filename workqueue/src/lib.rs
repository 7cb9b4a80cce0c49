//! Concurrency-managed workqueues (Linux's CMWQ, `kernel/workqueue.c`).
//!
//! # The model
//! A *work item* ([`Work`]) is a function to run later in a kernel thread.
//! Items are queued on a *workqueue* ([`Workqueue`]), which is only a front:
//! the threads that run items (*workers*, kernel threads named
//! `kworker/N:M`) belong to *pools*, shared by every workqueue.
//!
//! * Each CPU has two bound pools, normal and high priority (`kworker/N:M`
//!   and `kworker/N:MH`), whose workers run only on that CPU.
//! * Unbound pools are keyed by their attributes (priority, CPU mask); every
//!   unbound queue with the same attributes shares one (`kworker/uP:M`).
//! * A queue reaches a pool through a *pool workqueue* ([`Pwq`]): per CPU for
//!   a bound queue, one for an unbound queue. The pwq enforces the queue's
//!   `max_active` (excess items wait on the pwq's inactive list) and counts
//!   the items in flight for flushing.
//!
//! # Concurrency management
//! A bound pool keeps exactly enough workers running: `nr_running` counts
//! its workers that are on a CPU and not flagged as outside the count. A
//! worker that blocks while the pool has pending items drops the count to
//! zero, and the scheduler's *about to block* hook wakes an idle worker;
//! when the blocked worker runs again the *running* hook counts it back in.
//! A worker that keeps its CPU (a CPU-bound item) keeps the count at one, so
//! no other worker is started for the pool. Items of `CPU_INTENSIVE` queues,
//! and all unbound workers, are kept out of the count.
//!
//! Workers are created by a *manager*: a worker that wakes to find no idle
//! spare makes one before it starts on the worklist (never `queue`, which
//! may run in atomic context). If creation keeps failing, a *mayday* timer
//! hands the pending items of `MEM_RECLAIM` queues to the queue's *rescuer*
//! thread, so they complete even when no worker can be made. Idle workers
//! beyond [`MAX_IDLE_WORKERS_RATIO`] are reaped after an idle timeout.
//!
//! # Guarantees
//! * `queue` returns false when the item is already pending.
//! * Non-reentrancy: an item is never run by two workers at once, anywhere.
//!   Requeued while it runs on a pool, it is queued on that pool again and,
//!   inside a pool, handed to the worker already running it.
//! * Flushing an item waits for its last queued instance; flushing a queue
//!   waits for everything queued before the call; draining repeats that
//!   while the queue's own items requeue themselves; cancelling reports
//!   whether the item was pending and waits for a running instance.
//! * Nothing is lost: every queued item runs exactly once or is reported
//!   cancelled. Misuse (a destroyed queue, a bad CPU, a self-flush) gets a
//!   one-line warning and an error, never a silent hang.
//!
//! Locking: each pool's lock protects its worklist, its busy list (which
//! worker runs which item), its workers' lists, and — through inner locks
//! taken only while it is held — the state of the pwqs that feed it and its
//! workers' scheduled lists. It is taken with interrupts off (timers use it)
//! and never held across a sleep. An item's `run` lock (its run claim,
//! deferred instances and flushers) nests inside a pool lock or is taken
//! alone. No two pool locks are ever held together.
#![no_std]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

mod pool;
mod stats;
mod watchdog;
mod work;
mod wq;

pub use pool::{PoolInfo, WorkerInfo, pools};
pub use stats::{WqStats, dump, monitor};
pub use watchdog::{last_lockup_report, lockup_reports, set_watchdog_thresh_ns, watchdog_thresh_ns};
pub use work::{DelayedWork, Work};
pub use wq::{QueueError, Workqueue};

use bitflags::bitflags;

bitflags! {
    /// Workqueue flags (Linux `WQ_*`, same bit values).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct WqFlags: u32 {
        /// Items run in unbound pools (any CPU of the attributes' mask).
        const UNBOUND = 1 << 1;
        /// Items are held while the system is frozen.
        const FREEZABLE = 1 << 2;
        /// May be needed to free memory: gets a rescuer thread.
        const MEM_RECLAIM = 1 << 3;
        /// Items run in high-priority pools.
        const HIGHPRI = 1 << 4;
        /// Items do not take part in concurrency management.
        const CPU_INTENSIVE = 1 << 5;
        /// Unbound when the system prefers saving power (it does not here:
        /// the queue behaves per-CPU, as Linux's default
        /// `workqueue.power_efficient=0`).
        const POWER_EFFICIENT = 1 << 7;
        /// One item at a time, in queue order (`alloc_ordered_workqueue`,
        /// Linux's internal `__WQ_ORDERED`).
        const ORDERED = 1 << 17;
    }
}

/// Most items a pool workqueue runs at once (Linux `WQ_MAX_ACTIVE`).
pub const WQ_MAX_ACTIVE: usize = 512;
/// `max_active` when 0 is given (Linux `WQ_DFL_ACTIVE`, half the maximum).
pub const WQ_DFL_ACTIVE: usize = WQ_MAX_ACTIVE / 2;
/// Idle workers kept per busy worker before the rest are reaped (Linux
/// `MAX_IDLE_WORKERS_RATIO`: a pool with many idle workers and few busy
/// ones is wasting threads).
pub const MAX_IDLE_WORKERS_RATIO: usize = 4;
/// Idle workers a pool always keeps (Linux keeps two before culling).
pub const MIN_IDLE_WORKERS: usize = 2;
/// How long a worker may sit idle before it is reaped (Linux
/// `IDLE_WORKER_TIMEOUT`, 300 s: creating a worker is cheap but not free,
/// and bursts recur). Settable with [`set_idle_timeout_ns`].
pub const IDLE_WORKER_TIMEOUT_NS: u64 = 300_000_000_000;
/// Delay before the first mayday call when a pool cannot create a worker
/// (Linux `MAYDAY_INITIAL_TIMEOUT`, 10 ms: long enough for a normal
/// creation, short enough that reclaim work is not held up).
pub const MAYDAY_INITIAL_TIMEOUT_NS: u64 = 10_000_000;
/// Interval of further mayday calls while the pool is still short (Linux
/// `MAYDAY_INTERVAL`, 100 ms).
pub const MAYDAY_INTERVAL_NS: u64 = 100_000_000;
/// Wait between failed worker creations (Linux `CREATE_COOLDOWN`, 1 s: the
/// allocator needs time to recover; retrying at once would spin).
pub const CREATE_COOLDOWN_NS: u64 = 1_000_000_000;
/// Default lockup-watchdog threshold (Linux `workqueue.watchdog_thresh`,
/// 30 s). Settable with [`set_watchdog_thresh_ns`].
pub const WATCHDOG_THRESH_NS: u64 = 30_000_000_000;
/// Flush colours (Linux `WORK_NR_COLORS` is 16 minus one reserved): how
/// many flushes of one queue can be told apart.
pub const NR_COLORS: usize = 16;
/// Times `drain` flushes before it warns that the queue is not draining
/// (Linux warns after 10 and every 100 after that).
pub const DRAIN_WARN_AFTER: usize = 10;

static IDLE_TIMEOUT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(IDLE_WORKER_TIMEOUT_NS);

/// Change how long idle workers are kept (tests shorten it).
pub fn set_idle_timeout_ns(ns: u64) {
    IDLE_TIMEOUT.store(ns, core::sync::atomic::Ordering::Relaxed);
    pool::rearm_idle_timers();
}

/// How long idle workers are kept.
pub fn idle_timeout_ns() -> u64 {
    IDLE_TIMEOUT.load(core::sync::atomic::Ordering::Relaxed)
}

/// Start the workqueue subsystem (once, at boot, after `kthreadd`): the
/// per-CPU pools with one worker each, the scheduler hooks, the lockup
/// watchdog and the system queues.
pub fn init() -> kport::Result<()> {
    pool::init()?;
    watchdog::start();
    wq::init_system_queues()
}

/// The system queues (Linux `system_wq` and friends), created by [`init`].
pub mod system {
    use crate::Workqueue;

    /// `events`: the default bound queue (Linux `system_wq`).
    pub fn wq() -> &'static Workqueue {
        crate::wq::system(0)
    }
    /// `events_highpri` (Linux `system_highpri_wq`).
    pub fn highpri() -> &'static Workqueue {
        crate::wq::system(1)
    }
    /// `events_long`, for items that may run long (Linux `system_long_wq`).
    pub fn long() -> &'static Workqueue {
        crate::wq::system(2)
    }
    /// `events_unbound` (Linux `system_unbound_wq`).
    pub fn unbound() -> &'static Workqueue {
        crate::wq::system(3)
    }
    /// `events_freezable` (Linux `system_freezable_wq`).
    pub fn freezable() -> &'static Workqueue {
        crate::wq::system(4)
    }
    /// `events_power_efficient` (Linux `system_power_efficient_wq`).
    pub fn power_efficient() -> &'static Workqueue {
        crate::wq::system(5)
    }
}

/// Hold the items of freezable queues (system suspend, Linux
/// `freeze_workqueues_begin`); running items finish.
pub fn freeze() {
    wq::set_frozen(true);
}

/// Let frozen items run again (Linux `thaw_workqueues`).
pub fn thaw() {
    wq::set_frozen(false);
}
