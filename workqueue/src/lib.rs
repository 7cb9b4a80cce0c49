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
//! # Locking
//! Every field of every shared structure carries one of these tags (Linux's
//! `kernel/workqueue.c` legend):
//!
//! | tag | meaning |
//! |---|---|
//! | `I:` | set at creation, read-only after |
//! | `L:` | the pool's lock (`Pool::st`): the pool's own state is inside the lock; other objects' state under it is a [`kport::sync::LockedBy`] cell, checked to be that pool's |
//! | `A:` | atomic; the field's comment says who writes it and what it orders |
//! | `R:` | the item's run lock (`WorkInner::run`) |
//! | `M:` | the queue's mayday list lock |
//! | `W:` | written only by the worker's own thread |
//! | `G:` | a global registry's lock (a leaf) |
//! | `Q:` | the queue's flush mutex (flushes of one queue one at a time) |
//!
//! The lock order, highest-level first (each lock is a
//! [`kport::sync::SpinLock::ranked`]: debug builds panic on a violation):
//!
//! 1. the queue's flush mutex (`Q:`, sleeping; only around a flush);
//! 2. a pool's lock (rank [`RANK_POOL`]): one pool at a time, never two;
//!    taken with interrupts off (timers use it), never held across a sleep;
//! 3. an item's run lock (rank [`RANK_RUN`]): under a pool lock or alone;
//! 4. a queue's mayday list (rank [`RANK_MAYDAY`]): alone;
//! 5. leaves (rank [`RANK_LEAF`] and the port's wait-queue lists): the pool
//!    and queue registries, a delayed item's target, the watchdog's report,
//!    completions woken under a pool lock.
//!
//! [`LockedBy`](kport::sync::LockedBy) data take no lock of their own: a
//! pwq's counters and a worker's scheduled list are reached only with the
//! pool lock held.
#![no_std]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

#[cfg(feature = "loom")]
pub mod model;
mod pool;
mod stats;
mod watchdog;
mod work;
mod wq;

pub use pool::{PoolInfo, WorkerInfo, pools};
pub use stats::{WqStats, cpu_hogs, dump, monitor};
pub use watchdog::{last_lockup_report, lockup_reports, set_watchdog_thresh_ns, watchdog_thresh_ns};
pub use work::{DelayedWork, Work};
pub use wq::{
    QueueError, WORK_DISABLE_MAX, WORKER_DESC_LEN, Workqueue, WqAttrs, current_is_workqueue_rescuer, current_work,
    set_worker_desc, work_on_cpu,
};

use bitflags::bitflags;

bitflags! {
    /// Workqueue flags (Linux `WQ_*`, same bit values).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct WqFlags: u32 {
        /// Items run in softirq context on the CPU that queued them (Linux
        /// 6.9+ BH workqueues, the successor of tasklets): no threads, no
        /// sleeping. Only `HIGHPRI` may come with it, and `max_active` must
        /// be 0.
        const BH = 1 << 0;
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

/// Lock rank of a pool's lock (see the crate documentation's Locking).
pub(crate) const RANK_POOL: u8 = 20;
/// Lock rank of an item's run lock.
pub(crate) const RANK_RUN: u8 = 21;
/// Lock rank of a queue's mayday list.
pub(crate) const RANK_MAYDAY: u8 = 22;
/// Lock rank of the crate's leaf locks.
pub(crate) const RANK_LEAF: u8 = 28;

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

/// Default time an item may keep its CPU without sleeping before it is
/// taken out of concurrency management (Linux `wq_cpu_intensive_thresh_us`,
/// 10 ms since 6.5: long enough for ordinary items, short enough that one
/// hog does not hold up a CPU's other items for long). Settable with
/// [`set_cpu_intensive_thresh_us`].
pub const CPU_INTENSIVE_THRESH_US: u64 = 10_000;

/// Times a work function is flagged CPU-intensive before it is reported
/// (Linux reports from the fourth, then at each power of two).
pub const CPU_INTENSIVE_REPORT_AFTER: u32 = 4;

static CPU_INTENSIVE_THRESH: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(CPU_INTENSIVE_THRESH_US * 1000);

/// Change the CPU-intensive threshold, in µs (Linux's
/// `workqueue.cpu_intensive_thresh_us`).
pub fn set_cpu_intensive_thresh_us(us: u64) {
    CPU_INTENSIVE_THRESH.store(us.max(1) * 1000, core::sync::atomic::Ordering::Relaxed);
}

/// The CPU-intensive threshold, in µs.
pub fn cpu_intensive_thresh_us() -> u64 {
    cpu_intensive_thresh_ns() / 1000
}

pub(crate) fn cpu_intensive_thresh_ns() -> u64 {
    CPU_INTENSIVE_THRESH.load(core::sync::atomic::Ordering::Relaxed)
}

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

/// Work items in flight on every workqueue (there is no such count in
/// Linux): what a leak check compares before and after a test. An item
/// counts from the moment it is queued or its timer is armed until it has
/// run or was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InFlight {
    /// Instances queued on a pool's worklist, waiting for `max_active`,
    /// waiting for a run elsewhere to end, or running.
    pub queued: usize,
    /// Delayed items waiting for their timer (armed, or fired and not yet
    /// queued).
    pub delayed: usize,
}

impl InFlight {
    /// Both together.
    pub fn total(&self) -> usize {
        self.queued + self.delayed
    }
}

/// Work items in flight now, on every queue: each pool's pwqs' counts,
/// read under the pool's lock (exact while nothing is queued or retired).
///
/// Context: task context, holding no workqueue lock.
pub fn in_flight() -> InFlight {
    InFlight { queued: wq::queued_in_flight(), delayed: work::delayed_armed() }
}

/// The queues with items queued, deferred or running now, by name, with
/// how many (delayed items waiting for their timer are not on a queue yet
/// and are not listed).
///
/// Context: any.
pub fn busy_queues() -> alloc::vec::Vec<(alloc::string::String, usize)> {
    wq::busy_queues()
}

/// Pools' idle and mayday timers armed now. They belong to the pools (Linux
/// `idle_timer`, `mayday_timer`), which live on as a cache of workers, so a
/// leak check leaves them out of [`kport::timers::armed`].
///
/// Context: any task context.
pub fn pool_timers_armed() -> usize {
    pool::timers_armed()
}

/// Start the workqueue subsystem (once, at boot, after `kthreadd`): the
/// per-CPU pools with one worker each, the scheduler hooks, the lockup
/// watchdog and the system queues.
///
/// Context: may sleep (it creates workers); boot, after `kthreadd`.
#[track_caller]
pub fn init() -> kport::Result<()> {
    kport::might_sleep();
    // The bottom halves first: BH queues and delayed work stand on them.
    softirq::init()?;
    pool::init()?;
    kthreadd::registry::set_name_hook(wq::worker_comm);
    watchdog::start();
    wq::init_system_queues()
}

/// The system queues (Linux `system_wq` and friends), created by [`init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemWq {
    /// `events`: the default bound queue (Linux `system_wq`).
    Events,
    /// `events_highpri` (Linux `system_highpri_wq`).
    Highpri,
    /// `events_long`, for items that may run long (Linux `system_long_wq`).
    Long,
    /// `events_unbound` (Linux `system_unbound_wq`, `max_active`
    /// [`WQ_MAX_ACTIVE`]).
    Unbound,
    /// `events_freezable` (Linux `system_freezable_wq`).
    Freezable,
    /// `events_power_efficient` (Linux `system_power_efficient_wq`).
    PowerEfficient,
    /// `events_freezable_power_efficient` (Linux
    /// `system_freezable_power_efficient_wq`).
    FreezablePowerEfficient,
    /// `events_bh`: items run in the `TASKLET` softirq (Linux
    /// `system_bh_wq`).
    Bh,
    /// `events_bh_highpri`: items run in the `HI` softirq (Linux
    /// `system_bh_highpri_wq`).
    BhHighpri,
}

impl SystemWq {
    /// Every system queue, in creation order.
    pub const ALL: [SystemWq; 9] = [
        SystemWq::Events,
        SystemWq::Highpri,
        SystemWq::Long,
        SystemWq::Unbound,
        SystemWq::Freezable,
        SystemWq::PowerEfficient,
        SystemWq::FreezablePowerEfficient,
        SystemWq::Bh,
        SystemWq::BhHighpri,
    ];

    /// The queue's name (Linux's).
    pub fn name(self) -> &'static str {
        match self {
            SystemWq::Events => "events",
            SystemWq::Highpri => "events_highpri",
            SystemWq::Long => "events_long",
            SystemWq::Unbound => "events_unbound",
            SystemWq::Freezable => "events_freezable",
            SystemWq::PowerEfficient => "events_power_efficient",
            SystemWq::FreezablePowerEfficient => "events_freezable_power_efficient",
            SystemWq::Bh => "events_bh",
            SystemWq::BhHighpri => "events_bh_highpri",
        }
    }

    /// Its flags and `max_active` (0: the default).
    pub(crate) fn params(self) -> (WqFlags, usize) {
        match self {
            SystemWq::Events | SystemWq::Long => (WqFlags::empty(), 0),
            SystemWq::Highpri => (WqFlags::HIGHPRI, 0),
            SystemWq::Unbound => (WqFlags::UNBOUND, WQ_MAX_ACTIVE),
            SystemWq::Freezable => (WqFlags::FREEZABLE, 0),
            SystemWq::PowerEfficient => (WqFlags::POWER_EFFICIENT, 0),
            SystemWq::FreezablePowerEfficient => (WqFlags::FREEZABLE | WqFlags::POWER_EFFICIENT, 0),
            SystemWq::Bh => (WqFlags::BH, 0),
            SystemWq::BhHighpri => (WqFlags::BH | WqFlags::HIGHPRI, 0),
        }
    }
}

/// Named accessors of the system queues.
pub mod system {
    use crate::{SystemWq, Workqueue};

    /// Do the system queues exist yet (after [`crate::init`])?
    pub fn started() -> bool {
        crate::wq::started()
    }

    /// The system queue `which`. Panics before [`crate::init`].
    pub fn get(which: SystemWq) -> &'static Workqueue {
        crate::wq::system(which)
    }
    /// `events`: the default bound queue (Linux `system_wq`).
    pub fn wq() -> &'static Workqueue {
        get(SystemWq::Events)
    }
    /// `events_highpri` (Linux `system_highpri_wq`).
    pub fn highpri() -> &'static Workqueue {
        get(SystemWq::Highpri)
    }
    /// `events_long`, for items that may run long (Linux `system_long_wq`).
    pub fn long() -> &'static Workqueue {
        get(SystemWq::Long)
    }
    /// `events_unbound` (Linux `system_unbound_wq`).
    pub fn unbound() -> &'static Workqueue {
        get(SystemWq::Unbound)
    }
    /// `events_freezable` (Linux `system_freezable_wq`).
    pub fn freezable() -> &'static Workqueue {
        get(SystemWq::Freezable)
    }
    /// `events_power_efficient` (Linux `system_power_efficient_wq`).
    pub fn power_efficient() -> &'static Workqueue {
        get(SystemWq::PowerEfficient)
    }
    /// `events_freezable_power_efficient` (Linux
    /// `system_freezable_power_efficient_wq`).
    pub fn freezable_power_efficient() -> &'static Workqueue {
        get(SystemWq::FreezablePowerEfficient)
    }
    /// `events_bh` (Linux `system_bh_wq`).
    pub fn bh() -> &'static Workqueue {
        get(SystemWq::Bh)
    }
    /// `events_bh_highpri` (Linux `system_bh_highpri_wq`).
    pub fn bh_highpri() -> &'static Workqueue {
        get(SystemWq::BhHighpri)
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
