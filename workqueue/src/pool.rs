//! Worker pools and their workers (Linux `struct worker_pool`,
//! `struct worker`, `worker_thread`, `manage_workers`, the idle and mayday
//! timers, and the concurrency-management hooks).

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use kport::sync::{LockedBy, SpinLock, SpinLockGuard};
use kport::trace;
use kport::{CpuMask, PortTimer, Priority, Result, SchedHooks, SleepState, TaskData, port};
use kthreadd::kthread::{self, Builder, Kthread};

use crate::stats::PwqStat;
use crate::wq::{Pwq, pwq_done};
use crate::{CREATE_COOLDOWN_NS, MAYDAY_INITIAL_TIMEOUT_NS, MAYDAY_INTERVAL_NS};
use crate::{MAX_IDLE_WORKERS_RATIO, MIN_IDLE_WORKERS, idle_timeout_ns};

/// Worker flags (Linux `WORKER_*`).
pub(crate) mod wf {
    /// On the idle list.
    pub const IDLE: u32 = 1 << 0;
    /// Preparing or between batches: not counted as running.
    pub const PREP: u32 = 1 << 1;
    /// Running an item of a CPU-intensive queue: not counted.
    pub const CPU_INTENSIVE: u32 = 1 << 2;
    /// Worker of an unbound pool: never counted.
    pub const UNBOUND: u32 = 1 << 3;
    /// Asked to exit.
    pub const DIE: u32 = 1 << 4;
    /// A queue's rescuer: never counted.
    pub const RESCUER: u32 = 1 << 5;
    /// Bound again after its CPU came back, not yet counted: the worker
    /// clears it itself, with `PREP`, before its next item (Linux
    /// `WORKER_REBOUND`), so `nr_running` only changes by its own hand.
    pub const REBOUND: u32 = 1 << 6;
    /// Flags that keep a worker out of `nr_running`.
    pub const NOT_RUNNING: u32 = PREP | CPU_INTENSIVE | UNBOUND | RESCUER | REBOUND;
}

/// Capacity (entries) a pool's worklist or a pwq's inactive list keeps
/// once it is empty again. Beyond it the list gives the memory of a burst
/// back (a vector keeps what it grew to: 100 000 items queued at once on a
/// pool left 2.6 MiB there for the rest of the boot); below it, a list that
/// fills and empties again does not reallocate. Linux's lists are
/// intrusive and hold nothing of their own.
pub(crate) const LIST_KEEP: usize = 256;

/// Give back the capacity an empty list holds beyond [`LIST_KEEP`] (its
/// lock held).
pub(crate) fn trim(list: &mut VecDeque<Entry>) {
    if list.is_empty() && list.capacity() > LIST_KEEP {
        list.shrink_to(LIST_KEEP);
    }
}

/// An instance of an item on a pool's worklist, a worker's scheduled list,
/// a pwq's inactive list or an item's deferred list.
///
/// An entry is owned by the list that holds it (every field `I:`).
pub(crate) struct Entry {
    /// I: the pool workqueue it was queued through.
    pub(crate) pwq: Arc<Pwq>,
    /// I: the item.
    pub(crate) work: Arc<crate::work::WorkInner>,
    /// I: flush colour of its pwq when it was queued.
    pub(crate) color: usize,
    /// I: instance number (see `WorkInner::start_instance`).
    pub(crate) seq: u64,
    /// I: when it was queued ([`kport::Port::now_ns`]), for the
    /// queue→start histogram; 0 while workqueue histograms are off.
    pub(crate) queued_ns: u64,
}

impl Entry {
    pub(crate) fn is_work(&self, w: &Arc<crate::work::WorkInner>) -> bool {
        Arc::ptr_eq(&self.work, w)
    }
}

/// The item a worker is running (an element of the pool's busy list:
/// every field `L:`).
pub(crate) struct Current {
    /// L: the item.
    pub(crate) work: Arc<crate::work::WorkInner>,
    /// L: the pwq it runs for.
    pub(crate) pwq: Arc<Pwq>,
}

/// A worker's time stamp that is taken lazily: an item's start is not read
/// from the clock (under TCG the read was a twentieth of a short item's
/// cost), the first tick, sleep or reader that needs it stamps it, so it
/// is late by less than one tick while the item runs on its CPU.
pub(crate) const UNSTAMPED: u64 = 1;

/// Stamp `at` with `now` if it is [`UNSTAMPED`]; returns its value.
pub(crate) fn stamp(at: &AtomicU64, now: u64) -> u64 {
    let now = now.max(UNSTAMPED + 1);
    match at.compare_exchange(UNSTAMPED, now, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => now,
        Err(v) => v,
    }
}

/// A worker running an item (the pool's busy list; `L:`).
pub(crate) struct Busy {
    /// L: the worker.
    pub(crate) worker: Arc<Worker>,
    /// L: what it runs.
    pub(crate) cur: Current,
}

/// A worker's lists, in a [`LockedBy`] cell of its pool's lock (`L:`).
pub(crate) struct WorkerState {
    /// L: instances handed to this worker (non-reentrancy within the pool).
    pub(crate) scheduled: VecDeque<Entry>,
    /// L: when it last went idle.
    pub(crate) last_active: u64,
}

/// A worker thread.
pub(crate) struct Worker {
    /// I: its thread's name.
    pub(crate) name: String,
    /// A: `wf` flags; `IDLE` changes under the pool lock, the counted flags
    /// by the worker itself (with `nr_running` following them).
    pub(crate) flags: AtomicU32,
    /// A: blocked inside an item (counted out of `nr_running` by the hook);
    /// written by the worker's own scheduler hooks.
    pub(crate) sleeping: AtomicBool,
    /// I: its thread (set once, right after creation).
    pub(crate) task: spin::Once<Kthread>,
    /// L: its scheduled list and last-idle time, under the lock of the pool
    /// it serves (a rescuer's cell is attached to each pool it visits).
    pub(crate) st: LockedBy<WorkerState>,
    /// W: address of the item it runs (0: none); only compared, for the
    /// worker's own questions ("am I running this item, this queue's?")
    /// without taking the pool lock.
    pub(crate) current_work: AtomicUsize,
    /// W: address of the queue of the item it runs (0: none).
    pub(crate) current_wq: AtomicUsize,
    /// A: when the item it runs started or last resumed after sleeping (0:
    /// no item; [`UNSTAMPED`]: started, the first tick stamps it); the
    /// tick compares it with the CPU-intensive threshold.
    pub(crate) current_at: AtomicU64,
    /// A: when the item it runs started ([`UNSTAMPED`] until a tick, its
    /// first sleep or a report stamps it), for reports and listings.
    pub(crate) started_at: AtomicU64,
    /// A: when its CPU time in the current item was last counted (0: not
    /// yet; the first tick starts counting, as do its wake-ups and the
    /// ticks after).
    pub(crate) acct_at: AtomicU64,
    /// A: CPU time the ticks counted in the current item, not yet added to
    /// its pwq's statistics.
    pub(crate) cpu_acc: AtomicU64,
    /// Own lock (a leaf): what listings show after its name (Linux
    /// `worker->desc`): the queue of the item it runs or last ran, or what
    /// the item set with `set_worker_desc`.
    pub(crate) desc: SpinLock<String>,
    /// A: the queue whose name `desc` holds (0: a description an item set),
    /// so back-to-back items of one queue do not rewrite it.
    pub(crate) desc_wq: AtomicUsize,
    /// A: woken by a kick since it last went idle (further kicks skip the
    /// wake-up; cleared under the pool lock when it goes idle again).
    pub(crate) kicked: AtomicBool,
    /// A: its pool's CPU came back: it binds itself there again before its
    /// next item, so that it never runs an item outside its mask.
    pub(crate) rebind: AtomicBool,
    /// I: the pool (None for a rescuer, which visits pools).
    pub(crate) pool: Option<Arc<Pool>>,
}

impl Worker {
    pub(crate) fn new(name: String, flags: u32, pool: Option<Arc<Pool>>) -> Arc<Worker> {
        let lists = WorkerState { scheduled: VecDeque::new(), last_active: 0 };
        Arc::new(Worker {
            name,
            flags: AtomicU32::new(flags),
            sleeping: AtomicBool::new(false),
            task: spin::Once::new(),
            st: match &pool {
                Some(p) => LockedBy::new(&p.st, lists),
                None => LockedBy::detached(lists),
            },
            current_work: AtomicUsize::new(0),
            current_wq: AtomicUsize::new(0),
            kicked: AtomicBool::new(false),
            rebind: AtomicBool::new(false),
            current_at: AtomicU64::new(0),
            started_at: AtomicU64::new(0),
            acct_at: AtomicU64::new(0),
            cpu_acc: AtomicU64::new(0),
            desc: SpinLock::ranked("worker desc", crate::RANK_LEAF, String::new()),
            desc_wq: AtomicUsize::new(0),
            pool,
        })
    }

    fn wake(&self) {
        if let Some(t) = self.task.get() {
            t.task().wake();
        }
    }

    fn has(&self, f: u32) -> bool {
        self.flags.load(Ordering::Acquire) & f != 0
    }
}

/// The mutable part of a pool, inside its lock (every field `L:`).
pub(crate) struct PoolState {
    /// L: instances waiting for a worker.
    pub(crate) worklist: VecDeque<Entry>,
    /// L: every worker of the pool.
    pub(crate) workers: Vec<Arc<Worker>>,
    /// L: idle workers, least recently idle first.
    pub(crate) idle: Vec<Arc<Worker>>,
    /// L: workers running an item, with the item.
    pub(crate) busy: Vec<Busy>,
    /// L: a worker is creating workers for the pool.
    pub(crate) manager: bool,
    /// L: number of the next worker's name.
    pub(crate) next_id: usize,
    /// L: the pwqs that queue on this pool (pruned of dead ones as new ones
    /// come): where a cancel looks for an inactive instance.
    pub(crate) pwqs: Vec<alloc::sync::Weak<Pwq>>,
}

/// A pool of workers.
pub(crate) struct Pool {
    /// I: index in the pool registry.
    pub(crate) id: usize,
    /// I: a bound pool's CPU.
    pub(crate) cpu: Option<usize>,
    /// I: high priority?
    pub(crate) highpri: bool,
    /// I: CPUs its workers may use.
    pub(crate) mask: CpuMask,
    /// I: the CPUs whose items it serves (a bound pool: its CPU; an unbound
    /// pool: its affinity pod, see `WqAttrs`).
    pub(crate) pod: CpuMask,
    /// O: a BH pool's one pseudo-worker (a BH pool has no threads; its
    /// items run in the `TASKLET` or, high priority, `HI` softirq of its
    /// CPU, through `bh_worker`, on whatever context the softirq
    /// interrupted). Set once, right after the pool is made; the pool and
    /// it refer to each other for good (pools are never destroyed).
    pub(crate) bh: spin::Once<Arc<Worker>>,
    /// The pool lock (rank [`crate::RANK_POOL`]) and what it protects.
    pub(crate) st: SpinLock<PoolState>,
    /// A: workers on a CPU and counted (concurrency management); changed by
    /// the workers' flag changes and scheduler hooks, read under the lock
    /// to decide on wake-ups.
    pub(crate) nr_running: AtomicUsize,
    /// A: bumped under the pool lock when an item starts and when the
    /// worklist gets its first entry (Linux stamps `watchdog_ts` with
    /// `jiffies` at the same two places; a count costs no clock read).
    pub(crate) progress: AtomicU64,
    /// A (watchdog): the `progress` the watchdog last saw (see
    /// `watchdog::check`).
    pub(crate) watchdog_seen: AtomicU64,
    /// A (watchdog): when the watchdog first saw `watchdog_seen`.
    pub(crate) watchdog_ts: AtomicU64,
    /// A bound pool whose CPU is offline (Linux `POOL_DISASSOCIATED`): its
    /// workers may run on any online CPU and are not counted; a BH pool's
    /// items are run by the BH pools of the online CPUs. Written under the
    /// pool lock and [`ATTACH`] by the hot-plug callbacks.
    pub(crate) disassociated: AtomicBool,
    /// A BH pool is being run (by its CPU, or by another CPU draining it
    /// while its CPU is offline): one runner at a time, as a BH pool has a
    /// single pseudo-worker.
    bh_running: AtomicBool,
    /// A BH pool may have items on its worklist (Linux's `need_more_worker`
    /// test in `workqueue_softirq_action`): set by [`Pool::kick`] before it
    /// raises the softirq, cleared under the pool lock by a run that leaves
    /// the worklist empty. Every `TASKLET` and `HI` softirq on the CPU passes
    /// through the BH runner, and most have no BH work: this one load lets
    /// them skip the pool lock.
    bh_queued: AtomicBool,
    /// I: reaps idle workers.
    idle_timer: spin::Once<alloc::boxed::Box<dyn PortTimer>>,
    /// I: calls the rescuers when workers cannot be made.
    mayday_timer: spin::Once<alloc::boxed::Box<dyn PortTimer>>,
}

pub(crate) type Guard<'a> = SpinLockGuard<'a, PoolState>;

/// Every pool: the per-CPU ones first (id = 2 * cpu + highpri), then the
/// unbound ones in creation order. Pools are never destroyed.
static POOLS: SpinLock<Vec<Arc<Pool>>> = SpinLock::ranked("workqueue pools", crate::RANK_LEAF, Vec::new());

/// Pools with ids below this are also found without [`POOLS`]' lock: the
/// per-CPU and BH pools of 64 CPUs (256 ids) and the first 256 unbound
/// ones.
#[cfg(not(feature = "loom"))]
const FAST_POOLS: usize = 512;

/// [`POOLS`]' first [`FAST_POOLS`] entries, each set once as its pool is
/// added (pools are never destroyed): the queueing, cancelling and BH
/// softirq paths look pools up by id on every call, from every CPU, and a
/// global lock there would be shared by them all. The loom models reset
/// the pool list between iterations, so they use the locked list alone.
#[cfg(not(feature = "loom"))]
static FAST: [spin::Once<Arc<Pool>>; FAST_POOLS] = [const { spin::Once::new() }; FAST_POOLS];

pub(crate) fn pool_by_id(id: usize) -> Option<Arc<Pool>> {
    #[cfg(not(feature = "loom"))]
    if let Some(p) = FAST.get(id).and_then(spin::Once::get) {
        return Some(p.clone());
    }
    POOLS.lock().get(id).cloned()
}

/// Add `pool` to the list of every pool, where its id is its index.
fn add_pool(pool: &Arc<Pool>) {
    let mut all = POOLS.lock();
    debug_assert_eq!(all.len(), pool.id, "pool ids are their index in the list");
    all.push(pool.clone());
    drop(all);
    #[cfg(not(feature = "loom"))]
    if let Some(slot) = FAST.get(pool.id) {
        slot.call_once(|| pool.clone());
    }
}

pub(crate) fn all_pools() -> Vec<Arc<Pool>> {
    POOLS.lock().clone()
}

/// Idle and mayday timers of the pools that are armed now (see
/// [`crate::pool_timers_armed`]).
pub(crate) fn timers_armed() -> usize {
    all_pools()
        .iter()
        .flat_map(|p| [p.idle_timer.get(), p.mayday_timer.get()])
        .flatten()
        .filter(|t| t.is_pending())
        .count()
}

/// Forget every pool (loom models only: each iteration starts afresh).
#[cfg(feature = "loom")]
pub(crate) fn model_reset() {
    POOLS.lock().clear();
}

/// A bound pool without workers (loom models only).
#[cfg(feature = "loom")]
pub(crate) fn model_add_pool(cpu: usize, highpri: bool, mask: CpuMask) {
    let p = new_pool(Some(cpu), highpri, mask, mask, false);
    add_pool(&p);
}

/// The bound pool of `cpu`.
pub(crate) fn percpu_pool(cpu: usize, highpri: bool) -> Option<Arc<Pool>> {
    pool_by_id(2 * cpu + usize::from(highpri))
}

/// Serializes the creation of unbound pools (creating one sleeps).
static UNBOUND_LOCK: kport::sync::Mutex<()> = kport::sync::Mutex::new(());

/// The unbound pool with these attributes (priority, the CPUs its workers
/// may use, the pod whose items it serves), created with its first worker
/// on first use and shared by every queue that asks for the same.
///
/// Context: may sleep.
pub(crate) fn unbound_pool(highpri: bool, mask: CpuMask, pod: CpuMask) -> Result<Arc<Pool>> {
    let _g = UNBOUND_LOCK.lock();
    if let Some(p) =
        POOLS.lock().iter().find(|p| p.cpu.is_none() && p.highpri == highpri && p.mask == mask && p.pod == pod)
    {
        return Ok(p.clone());
    }
    let p = new_pool(None, highpri, mask, pod, false);
    create_worker(&p)?;
    add_pool(&p);
    Ok(p)
}

fn new_pool(cpu: Option<usize>, highpri: bool, mask: CpuMask, pod: CpuMask, bh: bool) -> Arc<Pool> {
    let id = POOLS.lock().len();
    let pool = Arc::new(Pool {
        id,
        cpu,
        highpri,
        mask,
        pod,
        bh: spin::Once::new(),
        st: SpinLock::ranked(
            "pool",
            crate::RANK_POOL,
            PoolState {
                worklist: VecDeque::new(),
                workers: Vec::new(),
                idle: Vec::new(),
                busy: Vec::new(),
                manager: false,
                next_id: 0,
                pwqs: Vec::new(),
            },
        ),
        nr_running: AtomicUsize::new(0),
        progress: AtomicU64::new(0),
        watchdog_seen: AtomicU64::new(0),
        watchdog_ts: AtomicU64::new(port().now_ns()),
        disassociated: AtomicBool::new(false),
        bh_running: AtomicBool::new(false),
        bh_queued: AtomicBool::new(false),
        idle_timer: spin::Once::new(),
        mayday_timer: spin::Once::new(),
    });
    let weak = Arc::downgrade(&pool);
    pool.idle_timer.call_once(|| {
        let w = weak.clone();
        kport::timers::new(Arc::new(move || {
            if let Some(p) = w.upgrade() {
                idle_timer_fired(&p);
            }
        }))
    });
    pool.mayday_timer.call_once(|| {
        let w = weak.clone();
        kport::timers::new(Arc::new(move || {
            if let Some(p) = w.upgrade() {
                mayday_timer_fired(&p);
            }
        }))
    });
    if bh {
        let name = format!("bh/{}{}", cpu.unwrap_or(0), if highpri { "H" } else { "" });
        pool.bh.call_once(|| Worker::new(name, wf::PREP, Some(pool.clone())));
    }
    pool
}

impl Pool {
    /// Is there work that no running worker will get to (Linux
    /// `need_more_worker`)?
    fn need_more_worker(&self, st: &PoolState) -> bool {
        !st.worklist.is_empty() && self.nr_running.load(Ordering::Acquire) == 0
    }

    /// Should a worker go on with the next item (`keep_working`)?
    fn keep_working(&self, st: &PoolState) -> bool {
        !st.worklist.is_empty() && self.nr_running.load(Ordering::Acquire) <= 1
    }

    /// Should a new worker be made (`need_to_create_worker`)?
    pub(crate) fn need_to_create(&self, st: &PoolState) -> bool {
        self.need_more_worker(st) && st.idle.is_empty()
    }

    /// Too many idle workers (`too_many_workers`)?
    fn too_many_workers(&self, st: &PoolState) -> bool {
        let idle = st.idle.len();
        let busy = st.workers.len() - idle;
        idle > MIN_IDLE_WORKERS && (idle - MIN_IDLE_WORKERS) * MAX_IDLE_WORKERS_RATIO >= busy
    }

    /// Wake an idle worker if the pool needs one (`kick_pool`); true if one
    /// was woken.
    pub(crate) fn kick(&self, st: &PoolState) -> bool {
        if self.bh.get().is_some() {
            // A BH pool has no workers to wake: raise its softirq on its CPU.
            if st.worklist.is_empty() {
                return false;
            }
            self.bh_queued.store(true, Ordering::Release);
            raise_bh(self);
            return true;
        }
        if !self.need_more_worker(st) {
            return false;
        }
        match st.idle.last() {
            Some(w) => {
                // Woken already and not yet back to sleep: once is enough.
                if !w.kicked.swap(true, Ordering::AcqRel) {
                    w.wake();
                }
                true
            }
            None => false,
        }
    }

    /// Count progress for the watchdog (under the lock: the only writer, so
    /// no locked instruction).
    pub(crate) fn note_progress(&self, _st: &PoolState) {
        self.progress.store(self.progress.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Put an entry at the end of the worklist (from a pwq).
    pub(crate) fn push_work(&self, st: &mut PoolState, e: Entry) {
        if st.worklist.is_empty() {
            self.note_progress(st);
        }
        st.worklist.push_back(e);
    }

    /// The worker running `work` in this pool, if any, and the pwq it runs
    /// it for (`find_worker_executing_work`).
    pub(crate) fn find_busy(
        &self,
        st: &PoolState,
        work: &Arc<crate::work::WorkInner>,
    ) -> Option<(Arc<Worker>, Arc<Pwq>)> {
        st.busy.iter().find(|b| Arc::ptr_eq(&b.cur.work, work)).map(|b| (b.worker.clone(), b.cur.pwq.clone()))
    }

    /// A short label: `cpus=N` or `unbound mask=...`.
    pub(crate) fn label(&self) -> String {
        match self.cpu {
            Some(c) => format!(
                "cpus={c}{}{}",
                if self.bh.get().is_some() { " bh" } else { "" },
                if self.highpri { " highpri" } else { "" }
            ),
            None if self.pod == self.mask => {
                format!("unbound mask={:#x}{}", self.mask.0, if self.highpri { " highpri" } else { "" })
            }
            None => format!(
                "unbound mask={:#x} pod={:#x}{}",
                self.mask.0,
                self.pod.0,
                if self.highpri { " highpri" } else { "" }
            ),
        }
    }
}

fn set_flags(pool: &Pool, w: &Worker, f: u32) {
    let old = w.flags.fetch_or(f, Ordering::AcqRel);
    if f & wf::NOT_RUNNING != 0 && old & wf::NOT_RUNNING == 0 {
        pool.nr_running.fetch_sub(1, Ordering::AcqRel);
    }
}

fn clr_flags(pool: &Pool, w: &Worker, f: u32) {
    let old = w.flags.fetch_and(!f, Ordering::AcqRel);
    let new = old & !f;
    if f & wf::NOT_RUNNING != 0 && old & wf::NOT_RUNNING != 0 && new & wf::NOT_RUNNING == 0 {
        pool.nr_running.fetch_add(1, Ordering::AcqRel);
    }
}

fn enter_idle(pool: &Pool, g: &mut Guard<'_>, w: &Arc<Worker>) {
    w.flags.fetch_or(wf::IDLE, Ordering::AcqRel);
    w.kicked.store(false, Ordering::Release);
    let (st, held) = g.split();
    w.st.borrow_mut(held).last_active = port().now_ns();
    st.idle.push(w.clone());
    if pool.too_many_workers(st)
        && let Some(t) = pool.idle_timer.get()
        && !t.is_pending()
    {
        t.arm(port().now_ns() + idle_timeout_ns(), None);
    }
}

fn leave_idle(st: &mut PoolState, w: &Arc<Worker>) {
    if w.flags.fetch_and(!wf::IDLE, Ordering::AcqRel) & wf::IDLE != 0 {
        st.idle.retain(|x| !Arc::ptr_eq(x, w));
    }
}

/// Make a worker for `pool`: its thread is created through kthreadd, put on
/// the idle list and woken (Linux `create_worker`).
pub(crate) fn create_worker(pool: &Arc<Pool>) -> Result<()> {
    // Creation and joining the pool against a hot-plug of its CPU (Linux's
    // `wq_pool_attach_mutex`): a worker made for a disassociated pool starts
    // unbound.
    let _attach = ATTACH.lock();
    let id = {
        let mut st = pool.st.lock();
        st.next_id += 1;
        st.next_id - 1
    };
    let name = match pool.cpu {
        Some(c) => format!("kworker/{c}:{id}{}", if pool.highpri { "H" } else { "" }),
        None => format!("kworker/u{}:{id}", pool.id),
    };
    let detached = pool.disassociated.load(Ordering::Acquire);
    let flags = wf::PREP | if pool.cpu.is_none() || detached { wf::UNBOUND } else { 0 };
    let w = Worker::new(name.clone(), flags, Some(pool.clone()));
    let wc = w.clone();
    let mut b = Builder::new(format_args!("{name}"), move || worker_thread(wc))
        .priority(if pool.highpri { Priority::High } else { Priority::Normal })
        .worker_hooks(true)
        .data(Arc::new(Arc::downgrade(&w)));
    b = match pool.cpu {
        Some(_) if detached => b.affinity(unbound_cpus()),
        Some(c) => b.on_cpu(c),
        None => b.affinity(pool.mask),
    };
    let t = b.create()?;
    w.task.call_once(|| t);
    {
        let mut st = pool.st.lock();
        st.workers.push(w.clone());
        enter_idle(pool, &mut st, &w);
    }
    w.wake();
    Ok(())
}

/// Ask an idle worker to exit (Linux `destroy_worker`).
fn destroy_worker(st: &mut PoolState, w: &Arc<Worker>) {
    st.idle.retain(|x| !Arc::ptr_eq(x, w));
    st.workers.retain(|x| !Arc::ptr_eq(x, w));
    w.flags.fetch_or(wf::DIE, Ordering::AcqRel);
    w.wake();
}

/// Re-arm every pending idle timer for a new timeout (a timer armed under
/// the old one would otherwise keep its old deadline).
pub(crate) fn rearm_idle_timers() {
    let now = port().now_ns();
    for pool in all_pools() {
        let st = pool.st.lock();
        if pool.too_many_workers(&st)
            && let Some(t) = pool.idle_timer.get()
        {
            t.arm(now + idle_timeout_ns(), None);
        }
    }
}

/// Reap workers that have been idle too long while there are too many.
fn idle_timer_fired(pool: &Arc<Pool>) {
    let mut st = pool.st.lock();
    let now = port().now_ns();
    while pool.too_many_workers(&st) {
        let oldest = st.idle[0].clone();
        let expires = oldest.st.borrow_mut(st.held()).last_active + idle_timeout_ns();
        if now < expires {
            if let Some(t) = pool.idle_timer.get() {
                t.arm(expires, None);
            }
            break;
        }
        destroy_worker(&mut st, &oldest);
    }
}

/// The pool could not make a worker in time: send the pending items'
/// queues to their rescuers.
fn mayday_timer_fired(pool: &Arc<Pool>) {
    let pwqs: Vec<Arc<Pwq>> = {
        let st = pool.st.lock();
        if !pool.need_to_create(&st) {
            return;
        }
        let mut v: Vec<Arc<Pwq>> = Vec::new();
        for e in st.worklist.iter() {
            if !v.iter().any(|p| Arc::ptr_eq(p, &e.pwq)) {
                v.push(e.pwq.clone());
            }
        }
        v
    };
    for p in pwqs {
        crate::wq::send_mayday(&p);
    }
    if let Some(t) = pool.mayday_timer.get() {
        t.arm(port().now_ns() + MAYDAY_INTERVAL_NS, None);
    }
}

/// Make a worker, retrying after a cooldown while creation fails and the
/// pool still needs one; meanwhile the mayday timer calls the rescuers
/// (Linux `maybe_create_worker`). Called by the manager without the lock.
fn maybe_create_worker(pool: &Arc<Pool>) {
    let p = port();
    if let Some(t) = pool.mayday_timer.get() {
        t.arm(p.now_ns() + MAYDAY_INITIAL_TIMEOUT_NS, None);
    }
    loop {
        if create_worker(pool).is_ok() || !pool.need_to_create(&pool.st.lock()) {
            break;
        }
        let deadline = p.now_ns() + CREATE_COOLDOWN_NS;
        while p.now_ns() < deadline {
            p.set_current_state(SleepState::Interruptible, "wq_create_cooldown");
            p.schedule_until(deadline);
        }
        if !pool.need_to_create(&pool.st.lock()) {
            break;
        }
    }
    if let Some(t) = pool.mayday_timer.get() {
        t.cancel();
    }
}

/// The tracepoint and histograms at an item's start (out of line: only
/// reached while one of them is on). Returns the start time for
/// [`trace_end`], 0 when the run-time histogram is off.
#[cold]
#[inline(never)]
fn trace_start(work: u64, name: &'static str, queued_ns: u64) -> u64 {
    if trace::on(trace::Event::WorkqueueExecuteStart) {
        trace::emit(trace::Event::WorkqueueExecuteStart, [work, 0, 0, 0, 0], name, "");
    }
    if !trace::any(trace::hist::HIST_WORKQUEUE) {
        return 0;
    }
    let now = port().now_ns();
    if queued_ns != 0 {
        trace::hist::record(trace::hist::Kind::WorkQueueLatency, 0, name, now.saturating_sub(queued_ns));
    }
    now
}

/// The tracepoint and run-time histogram at an item's end.
#[cold]
#[inline(never)]
fn trace_end(work: u64, name: &'static str, t0: u64) {
    if t0 != 0 {
        trace::hist::record(trace::hist::Kind::WorkRunTime, 0, name, port().now_ns().saturating_sub(t0));
    }
    if trace::on(trace::Event::WorkqueueExecuteEnd) {
        trace::emit(trace::Event::WorkqueueExecuteEnd, [work, 0, 0, 0, 0], name, "");
    }
}

/// Run one entry on `w` (Linux `process_one_work`). Takes the pool's lock
/// guard and gives it back; the lock is dropped while the item runs.
pub(crate) fn process_one_work<'a>(
    pool: &'a Pool,
    w: &Arc<Worker>,
    mut st: Guard<'a>,
    e: Entry,
    rescued: bool,
) -> Guard<'a> {
    let Entry { pwq, work, color, seq, queued_ns } = e;
    // Non-reentrancy inside the pool: hand it to the worker running it.
    if let Some((other, _)) = pool.find_busy(&st, &work)
        && !Arc::ptr_eq(&other, w)
    {
        other.st.borrow_mut(st.held()).scheduled.push_back(Entry { pwq, work, color, seq, queued_ns });
        return st;
    }
    // Anywhere else (another pool or queue)? Then this instance waits on
    // the item until that run ends. The claim is one exchange when nothing
    // runs; the lock only when something does.
    if !work.try_claim_run(seq) {
        let mut r = work.run.lock();
        if !work.claim_run_or_mark(seq) {
            r.defer(Entry { pwq, work: work.clone(), color, seq, queued_ns });
            return st;
        }
    }
    w.current_work.store(Arc::as_ptr(&work) as *const u8 as usize, Ordering::Release);
    let wq_addr = pwq.wq.as_ptr() as *const u8 as usize;
    w.current_wq.store(wq_addr, Ordering::Release);
    // Listings show the queue it runs for (Linux records the queue's name
    // in `worker->desc` for each item); rewritten only when it changes.
    // Only this worker writes it: a load saves the locked exchange on the
    // common path, the same queue as last time.
    if w.desc_wq.load(Ordering::Relaxed) != wq_addr
        && w.desc_wq.swap(wq_addr, Ordering::AcqRel) != wq_addr
        && let Some(q) = pwq.wq.upgrade()
    {
        let mut d = w.desc.lock();
        d.clear();
        d.push_str(&q.name);
    }
    if pwq.wq_flags().contains(crate::WqFlags::CPU_INTENSIVE) {
        set_flags(pool, w, wf::CPU_INTENSIVE);
        pwq.stats.inc(PwqStat::CpuIntensive);
    }
    // Its start is stamped by the first tick, sleep or report that needs it
    // (no clock read per item; see `UNSTAMPED`).
    w.started_at.store(UNSTAMPED, Ordering::Relaxed);
    w.acct_at.store(0, Ordering::Relaxed);
    w.current_at.store(UNSTAMPED, Ordering::Release);
    // Chain the pool's pending items to another worker if this one is out
    // of the count (Linux kicks here for every item): a no-op for a counted
    // worker, but unbound, CPU-intensive and rescuer workers never bring
    // nr_running above zero, so without it everything queued while one idle
    // worker was being woken would run behind it, one item at a time.
    pool.kick(&st);
    pool.note_progress(&st);
    pwq.stats.add_locked(&st.held(), PwqStat::Started, 1);
    if rescued {
        pwq.stats.add_locked(&st.held(), PwqStat::Rescued, 1);
    }
    // The busy list owns the pwq while the item runs (moved, not cloned:
    // nothing outside the lock needs it); the end takes it back.
    st.busy.push(Busy { worker: w.clone(), cur: Current { work: work.clone(), pwq } });
    work.release();
    drop(st);

    let work_addr = Arc::as_ptr(&work) as *const u8 as u64;
    let traced = trace::any(
        trace::Event::WorkqueueExecuteStart.bit()
            | trace::Event::WorkqueueExecuteEnd.bit()
            | trace::hist::HIST_WORKQUEUE,
    );
    let t0 = if traced { trace_start(work_addr, work.name, queued_ns) } else { 0 };
    (work.func)();
    if traced {
        trace_end(work_addr, work.name, t0);
    }
    // A kworker offers the CPU between items (Linux's `cond_resched` in
    // `process_one_work`); a BH pool's items run in softirq context, where
    // giving up the CPU would switch away from an interrupt's exit path.
    if pool.bh.get().is_none() {
        kport::local::cond_resched();
    }

    let mut st = pool.st.lock();
    let mine = st.busy.iter().position(|b| Arc::ptr_eq(&b.worker, w)).expect("a running worker is on the busy list");
    let Busy { cur: Current { pwq, .. }, .. } = st.busy.swap_remove(mine);
    w.current_at.store(0, Ordering::Release);
    pwq.stats.add_locked(&st.held(), PwqStat::Completed, 1);
    // Its CPU time, as the ticks counted it (Linux's `PWQ_STAT_CPU_TIME`
    // is sampled at the tick too): no clock is read per item.
    if w.cpu_acc.load(Ordering::Relaxed) != 0 {
        pwq.stats.add_locked(&st.held(), PwqStat::CpuTime, w.cpu_acc.swap(0, Ordering::Relaxed));
    }
    // Flagged by its queue, or by the tick for hogging the CPU.
    if w.has(wf::CPU_INTENSIVE) {
        clr_flags(pool, w, wf::CPU_INTENSIVE);
    }
    w.current_work.store(0, Ordering::Release);
    w.current_wq.store(0, Ordering::Release);
    // A worker's loop (and a BH pool's run, which raises itself again
    // for what is left) goes on with what this activates; a rescuer, which
    // serves only its own list, wakes a worker for it.
    let successor = pwq_done(pool, &mut st, &pwq, color, rescued);
    if let Some(s) = successor {
        // An ordered queue's old pwq ran its last item: its successor may
        // start (on another pool: this pool's lock is released first).
        drop(st);
        crate::wq::unplug(&s);
        st = pool.st.lock();
    }
    // Release the run claim: without the lock when nobody left the end
    // anything to do (no flusher, nothing deferred, no cancelled instance
    // ahead). Otherwise requeue what waited on it, at the head of its pool
    // (it was queued before anything behind it there). Instances for other
    // pools stay on the deferred list, where a canceller finds them, until
    // their pool's lock is taken: once this pool's lock is dropped an
    // interrupt may come, and one that cancelled an instance held in our
    // hands meanwhile would spin for ever on this CPU.
    if work.end_run_fast(seq) {
        return st;
    }
    let (here, remote, flushers) = {
        let mut r = work.run.lock();
        work.claim.fetch_and(crate::work::RUN_ATTN, Ordering::AcqRel);
        let flushers = r.end(seq, &work.ended);
        let here = r.take_deferred_for(pool);
        let mut remote: Vec<Arc<Pool>> = Vec::new();
        for e in r.deferred().into_iter().flatten() {
            if !remote.iter().any(|p| Arc::ptr_eq(p, &e.pwq.pool)) {
                remote.push(e.pwq.pool.clone());
            }
        }
        if r.quiet() {
            work.claim.fetch_and(!crate::work::RUN_ATTN, Ordering::AcqRel);
        }
        (here, remote, flushers)
    };
    for c in flushers {
        c.complete_all();
    }
    if here.is_empty() && remote.is_empty() {
        return st;
    }
    for e in here.into_iter().rev() {
        st.worklist.push_front(e);
    }
    pool.kick(&st);
    work.notify_grabbers();
    if !remote.is_empty() {
        drop(st);
        requeue_deferred(&work, remote);
        st = pool.st.lock();
    }
    st
}

/// Move `work`'s deferred instances for each of `pools` to the head of that
/// pool's worklist, keeping their order, under the pool's lock and then the
/// item's run lock (a canceller's order), so each is always on one list or
/// the other.
fn requeue_deferred(work: &Arc<crate::work::WorkInner>, pools: Vec<Arc<Pool>>) {
    for pool in pools {
        {
            let mut st = pool.st.lock();
            let mine: Vec<Entry> = work.run.lock().take_deferred_for(&pool);
            for e in mine.into_iter().rev() {
                st.worklist.push_front(e);
            }
            pool.kick(&st);
        }
        // A canceller that found it nowhere may look again.
        work.notify_grabbers();
    }
}

/// Run everything on `w`'s scheduled list (the pool lock is held).
pub(crate) fn process_scheduled<'a>(pool: &'a Pool, w: &Arc<Worker>, mut st: Guard<'a>, rescued: bool) -> Guard<'a> {
    loop {
        let e = w.st.borrow_mut(st.held()).scheduled.pop_front();
        let Some(e) = e else { return st };
        st = process_one_work(pool, w, st, e, rescued);
    }
}

/// The body of every worker (Linux `worker_thread`).
fn worker_thread(w: Arc<Worker>) -> i32 {
    let p = port();
    let pool = w.pool.clone().expect("a worker without a pool");
    let mut st = pool.st.lock();
    loop {
        leave_idle(&mut st, &w);
        if w.has(wf::DIE) {
            return 0;
        }
        if w.rebind.swap(false, Ordering::AcqRel) {
            drop(st);
            rebind_self(&pool);
            st = pool.st.lock();
        }
        if pool.need_more_worker(&st) {
            if st.idle.is_empty() && !st.manager {
                // No idle spare: become the manager and make one first.
                st.manager = true;
                drop(st);
                maybe_create_worker(&pool);
                st = pool.st.lock();
                st.manager = false;
                continue;
            }
            clr_flags(&pool, &w, wf::PREP | wf::REBOUND);
            // What was handed to this worker first; after each item, what
            // was handed to it meanwhile. The lock stays held from there
            // to the next item, so nothing can be handed over in between.
            st = process_scheduled(&pool, &w, st, false);
            loop {
                let Some(e) = st.worklist.pop_front() else { break };
                st = process_one_work(&pool, &w, st, e, false);
                st = process_scheduled(&pool, &w, st, false);
                if !pool.keep_working(&st) || w.rebind.load(Ordering::Acquire) {
                    break;
                }
            }
            set_flags(&pool, &w, wf::PREP);
            // What its items' ends activated and it leaves (it goes to
            // rebind, or others run) gets a worker now that it is out of
            // the count.
            pool.kick(&st);
        }
        trim(&mut st.worklist);
        // Sleep until kicked. The state is set before the lock is dropped:
        // a kick in between makes schedule() return at once. Idle ("I"),
        // as Linux's `worker_thread` sleeps in `TASK_IDLE`: waiting for
        // work is neither load nor a hung task.
        enter_idle(&pool, &mut st, &w);
        p.set_current_state(SleepState::Idle, "worker_thread");
        drop(st);
        if !kthread::should_stop() {
            p.schedule();
        }
        p.set_current_running();
        st = pool.st.lock();
    }
}

// ---------------------------------------------------------------- hooks

struct Hooks;

/// The worker whose thread's data is `d`. The thread holds its worker only
/// weakly: the worker holds the thread's handle, and a strong reference back
/// would keep every exited worker (and, inside Redox, its kernel stack)
/// alive for ever.
pub(crate) fn worker_of(d: &TaskData) -> Option<Arc<Worker>> {
    kthread::data_of(d)?.downcast_ref::<Weak<Worker>>()?.upgrade()
}

impl SchedHooks for Hooks {
    /// A worker is about to block (Linux `wq_worker_sleeping`).
    fn sleeping(&self, d: &TaskData) {
        let Some(w) = worker_of(d) else { return };
        // An item that sleeps before its first tick gets its start here
        // (its wake-up restarts `current_at`, not the start).
        if w.started_at.load(Ordering::Relaxed) == UNSTAMPED {
            stamp(&w.started_at, port().now_ns());
        }
        if w.has(wf::NOT_RUNNING) || w.sleeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(pool) = w.pool.as_ref() else { return };
        let st = pool.st.lock();
        if w.has(wf::NOT_RUNNING) {
            w.sleeping.store(false, Ordering::Release);
            return;
        }
        pool.nr_running.fetch_sub(1, Ordering::AcqRel);
        if pool.kick(&st)
            && let Some(b) = st.busy.iter().find(|b| Arc::ptr_eq(&b.worker, &w))
        {
            b.cur.pwq.stats.inc(PwqStat::CmWakeup);
        }
    }

    /// A worker runs again (Linux `wq_worker_running`).
    fn running(&self, d: &TaskData) {
        let Some(w) = worker_of(d) else { return };
        if !w.sleeping.load(Ordering::Acquire) {
            return;
        }
        // Under the pool lock: a CPU going down zeroes `nr_running` and
        // flags every worker unbound under it, from another CPU (Linux does
        // it on the outgoing CPU, where this hook cannot interleave).
        if let Some(pool) = w.pool.as_ref() {
            let _st = pool.st.lock();
            if !w.has(wf::NOT_RUNNING) {
                pool.nr_running.fetch_add(1, Ordering::AcqRel);
            }
        }
        // Its time without sleeping starts again (Linux resets
        // `current_at` here too).
        if w.current_at.load(Ordering::Acquire) != 0 {
            let now = port().now_ns();
            w.current_at.store(now.max(UNSTAMPED + 1), Ordering::Release);
            w.acct_at.store(now, Ordering::Relaxed);
        }
        w.sleeping.store(false, Ordering::Release);
    }

    /// The tick interrupted a worker (Linux `wq_worker_tick`): an item that
    /// has kept its CPU for longer than the CPU-intensive threshold without
    /// sleeping is taken out of concurrency management (flagged
    /// CPU-intensive until it ends) and the pool is kicked, so the items
    /// behind it get another worker.
    fn tick(&self, d: &TaskData) {
        let Some(w) = worker_of(d) else { return };
        let at = w.current_at.load(Ordering::Acquire);
        if at == 0 || w.sleeping.load(Ordering::Acquire) {
            return;
        }
        let now = port().now_ns();
        // The first tick of an item stamps its start (less than a tick
        // late: it began on this CPU since the last one), so the threshold
        // counts from here.
        let at = if at == UNSTAMPED {
            stamp(&w.started_at, now);
            stamp(&w.current_at, now)
        } else {
            at
        };
        // The item's CPU time since the first tick that saw it, its wake-up
        // or the last count (the tick runs on the worker's CPU, between its
        // instructions). Linux counts a whole tick per tick instead.
        let mark = w.acct_at.swap(now, Ordering::Relaxed);
        if mark != 0 {
            w.cpu_acc.fetch_add(now.saturating_sub(mark), Ordering::Relaxed);
        }
        if w.has(wf::NOT_RUNNING) {
            return;
        }
        if now.saturating_sub(at) < crate::cpu_intensive_thresh_ns() {
            return;
        }
        let Some(pool) = w.pool.as_ref() else { return };
        let st = pool.st.lock();
        if w.current_at.load(Ordering::Acquire) != at || w.has(wf::NOT_RUNNING) {
            return;
        }
        set_flags(pool, &w, wf::CPU_INTENSIVE);
        if let Some(b) = st.busy.iter().find(|b| Arc::ptr_eq(&b.worker, &w)) {
            b.cur.pwq.stats.inc(PwqStat::CpuIntensive);
            crate::stats::cpu_hog(b.cur.work.name);
        }
        pool.kick(&st);
    }
}

static HOOKS: Hooks = Hooks;

// ---------------------------------------------------------------- hot-plug

/// Serializes joining a pool (worker creation) with the hot-plug callbacks
/// (Linux `wq_pool_attach_mutex`).
static ATTACH: kport::sync::Mutex<()> = kport::sync::Mutex::new(());

/// BH pools of offline CPUs (a hint that makes the BH runners of the online
/// CPUs look for them).
static DEAD_BH_POOLS: AtomicUsize = AtomicUsize::new(0);

/// The CPUs a worker of a disassociated pool may use: every CPU (Linux's
/// `wq_unbound_cpumask`), the outgoing one included, so a worker still in
/// an item there is never outside its mask; the scheduler places nothing
/// on an offline CPU.
pub(crate) fn unbound_cpus() -> CpuMask {
    CpuMask::first(port().cpu_count())
}

/// The CPUs `pool`'s workers may use now: its own, or, while its CPU is
/// offline, the online ones.
pub(crate) fn current_mask(pool: &Pool) -> CpuMask {
    if pool.disassociated.load(Ordering::Acquire) { unbound_cpus() } else { pool.mask }
}

/// `cpu` is going down (Linux `workqueue_offline_cpu` → `unbind_workers`):
/// its two pools become disassociated. Every worker is flagged unbound and
/// leaves concurrency management (`nr_running` is zeroed), the pools are
/// kicked so their items keep running, and the workers may then run on
/// any online CPU. Items queued to these pools meanwhile run there too.
fn unbind_workers(cpu: usize) {
    let _attach = ATTACH.lock();
    let mask = unbound_cpus();
    for highpri in [false, true] {
        let Some(pool) = percpu_pool(cpu, highpri) else { continue };
        let workers = {
            let st = pool.st.lock();
            pool.disassociated.store(true, Ordering::Release);
            for w in &st.workers {
                w.flags.fetch_or(wf::UNBOUND, Ordering::AcqRel);
            }
            pool.nr_running.store(0, Ordering::Release);
            pool.kick(&st);
            st.workers.clone()
        };
        for w in workers {
            if let Some(t) = w.task.get() {
                let _ = t.task().set_affinity(mask);
            }
        }
    }
}

/// `cpu` is back (Linux `workqueue_online_cpu` → `rebind_workers`): each
/// worker of its pools is bound to it again and its `UNBOUND` flag becomes
/// `REBOUND`, which the worker clears itself before its next item, so the
/// count of running workers is only ever changed by the workers. Idle
/// workers are bound here; a worker in an item elsewhere finishes it and
/// binds itself before its next one (Linux's stopper moves it at once;
/// here nothing may move a running context), so no item ever runs on a
/// worker outside its mask.
fn rebind_workers(cpu: usize) {
    let _attach = ATTACH.lock();
    for highpri in [false, true] {
        let Some(pool) = percpu_pool(cpu, highpri) else { continue };
        let st = pool.st.lock();
        for w in &st.workers {
            let _ = w.flags.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                (f & wf::UNBOUND != 0).then_some((f & !wf::UNBOUND) | wf::REBOUND)
            });
            w.rebind.store(true, Ordering::Release);
        }
        let idle = st.idle.clone();
        pool.disassociated.store(false, Ordering::Release);
        pool.kick(&st);
        drop(st);
        for w in idle {
            if let Some(t) = w.task.get() {
                let _ = t.task().set_affinity(CpuMask::one(cpu));
            }
        }
    }
}

/// A worker of a bound pool whose CPU came back binds itself there (and
/// moves) before it takes another item.
fn rebind_self(pool: &Pool) {
    let Some(cpu) = pool.cpu else { return };
    let p = port();
    if pool.disassociated.load(Ordering::Acquire) {
        return;
    }
    let _ = p.current().set_affinity(CpuMask::one(cpu));
    while p.cpu_id() != cpu && !pool.disassociated.load(Ordering::Acquire) {
        p.yield_now();
    }
}

/// `cpu` is dead: its BH pools are run by the online CPUs until it comes
/// back (Linux `workqueue_softirq_dead` drains them once; here also what is
/// queued to them later, so nothing waits for a CPU that may never return).
fn bh_pools_dead(cpu: usize) {
    for highpri in [false, true] {
        let Some(pool) = bh_pool(cpu, highpri) else { continue };
        let st = pool.st.lock();
        if !pool.disassociated.swap(true, Ordering::AcqRel) {
            DEAD_BH_POOLS.fetch_add(1, Ordering::AcqRel);
        }
        pool.kick(&st);
    }
}

/// `cpu` is back: its BH pools are its own again.
fn bh_pools_back(cpu: usize) {
    for highpri in [false, true] {
        let Some(pool) = bh_pool(cpu, highpri) else { continue };
        let st = pool.st.lock();
        if pool.disassociated.swap(false, Ordering::AcqRel) {
            DEAD_BH_POOLS.fetch_sub(1, Ordering::AcqRel);
        }
        pool.kick(&st);
    }
}

struct Hotplug;

impl kport::HotplugHooks for Hotplug {
    fn cpu_going_down(&self, cpu: usize) {
        unbind_workers(cpu);
    }
    fn cpu_dead(&self, cpu: usize) {
        bh_pools_dead(cpu);
    }
    fn cpu_came_up(&self, cpu: usize) {
        bh_pools_back(cpu);
        rebind_workers(cpu);
    }
}

static HOTPLUG: Hotplug = Hotplug;

/// The per-CPU pools with one worker each, and the hooks.
pub(crate) fn init() -> Result<()> {
    let p = port();
    p.set_sched_hooks(&HOOKS);
    if !POOLS.lock().is_empty() {
        return Ok(());
    }
    for cpu in 0..p.cpu_count() {
        for highpri in [false, true] {
            let pool = new_pool(Some(cpu), highpri, CpuMask::one(cpu), CpuMask::one(cpu), false);
            add_pool(&pool);
            create_worker(&pool)?;
        }
    }
    // The BH pools after the bound ones (ids 2 * cpus + 2 * cpu + highpri).
    for cpu in 0..p.cpu_count() {
        for highpri in [false, true] {
            let pool = new_pool(Some(cpu), highpri, CpuMask::one(cpu), CpuMask::one(cpu), true);
            add_pool(&pool);
            #[cfg(not(feature = "loom"))]
            if let Some(pair) = BH_POOLS.get(cpu) {
                pair[usize::from(highpri)].call_once(|| pool.clone());
            }
        }
    }
    softirq::tasklet::set_bh_runner(bh_worker);
    p.add_hotplug_hooks(&HOTPLUG);
    Ok(())
}

/// The BH pool of `cpu`.
pub(crate) fn bh_pool(cpu: usize, highpri: bool) -> Option<Arc<Pool>> {
    #[cfg(not(feature = "loom"))]
    if let Some(p) = BH_POOLS.get(cpu).and_then(|pair| pair[usize::from(highpri)].get()) {
        return Some(p.clone());
    }
    let n = port().cpu_count();
    pool_by_id(2 * n + 2 * cpu + usize::from(highpri)).filter(|p| p.bh.get().is_some())
}

/// Is anything queued on `cpu`'s BH pool (a look, without a reference)?
fn bh_queued(cpu: usize, highpri: bool) -> bool {
    #[cfg(not(feature = "loom"))]
    if let Some(p) = BH_POOLS.get(cpu).and_then(|pair| pair[usize::from(highpri)].get()) {
        return p.bh_queued.load(Ordering::Acquire);
    }
    bh_pool(cpu, highpri).is_some_and(|p| p.bh_queued.load(Ordering::Acquire))
}

/// Each CPU's BH pools (normal, high priority), set at init: the `TASKLET`
/// and `HI` softirqs find theirs without the CPU count or an id.
#[cfg(not(feature = "loom"))]
static BH_POOLS: [[spin::Once<Arc<Pool>>; 2]; kport::MAX_CPUS] =
    [const { [const { spin::Once::new() }, const { spin::Once::new() }] }; kport::MAX_CPUS];

/// Items a BH pool runs in one softirq run before it gives the CPU back
/// (Linux `BH_WORKER_RESTARTS`, 10) ...
pub const BH_WORKER_RESTARTS: usize = 10;
/// ... or for this long (Linux `BH_WORKER_JIFFIES`, 2 ms): the rest runs
/// at the next softirq run, which the pool raises again.
pub const BH_WORKER_NS: u64 = 2_000_000;

/// Raise the softirq of a BH pool on the pool's CPU (Linux `kick_bh_pool`):
/// on another CPU, through an IPI, whose exit runs it there.
fn raise_bh(pool: &Pool) {
    let v = if pool.highpri { softirq::Vector::Hi } else { softirq::Vector::Tasklet };
    let p = port();
    let cpu = pool.cpu.unwrap_or(0);
    // A dead CPU's pool is run by whichever CPU raises for it.
    if cpu == kport::local::cpu_id() || pool.disassociated.load(Ordering::Acquire) {
        softirq::raise_softirq(v);
    } else {
        let _ = p.call_on_cpu(cpu, alloc::boxed::Box::new(move || softirq::raise_softirq(v)), false);
    }
}

/// Run this CPU's BH pool (Linux `bh_worker`), from the `TASKLET` (or
/// `HI`) softirq, before its tasklets: a budget of items and time, then the
/// softirq is raised again for the rest.
fn bh_worker(cpu: usize, highpri: bool) {
    // Nothing queued is the common case (a tasklet's softirq): one load,
    // no reference taken on the pool.
    if bh_queued(cpu, highpri)
        && let Some(pool) = bh_pool(cpu, highpri)
    {
        run_bh_pool(&pool);
    }
    if DEAD_BH_POOLS.load(Ordering::Acquire) != 0 {
        let n = port().cpu_count();
        for cpu in 0..n {
            if let Some(pool) = bh_pool(cpu, highpri)
                && pool.disassociated.load(Ordering::Acquire)
            {
                run_bh_pool(&pool);
            }
        }
    }
}

/// Run a BH pool's items within the budget; the softirq is raised again
/// for what is left. Another CPU already running the pool (a drain of a
/// dead CPU's pool that overlaps its return) keeps it: it raises again for
/// anything it leaves.
fn run_bh_pool(pool: &Arc<Pool>) {
    if pool.bh_running.swap(true, Ordering::AcqRel) {
        return;
    }
    let w = pool.bh.get().cloned().expect("a BH pool has its worker");
    let end = port().now_ns().saturating_add(BH_WORKER_NS);
    let mut left = BH_WORKER_RESTARTS;
    let mut st = pool.st.lock();
    loop {
        st = process_scheduled(pool, &w, st, false);
        let Some(e) = st.worklist.pop_front() else { break };
        st = process_one_work(pool, &w, st, e, false);
        left -= 1;
        if left == 0 || port().now_ns() >= end {
            break;
        }
    }
    pool.bh_running.store(false, Ordering::Release);
    // A budget that ran out may also leave flush barriers on the
    // pseudo-worker's own list: they need another run as much as the
    // worklist does.
    let scheduled = !w.st.borrow_mut(st.held()).scheduled.is_empty();
    if !st.worklist.is_empty() || scheduled {
        raise_bh(pool);
    } else {
        // Under the lock, so a queue (which sets it again in `kick`, also
        // under the lock) cannot be missed.
        pool.bh_queued.store(false, Ordering::Release);
        trim(&mut st.worklist);
    }
}

// ---------------------------------------------------------------- reports

/// A worker, for reports.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Thread name (`kworker/N:M`).
    pub name: String,
    /// Context id.
    pub id: usize,
    /// Idle?
    pub idle: bool,
    /// On a CPU right now (an idle worker that has not yet switched away
    /// still is)?
    pub running: bool,
    /// Name of the item it runs.
    pub current: Option<&'static str>,
    /// Since when it runs that item (ns, [`kport::Port::now_ns`]): taken
    /// at the first tick, sleep or look after the item's start, so it is
    /// late by less than one tick of the worker's CPU.
    pub current_since_ns: Option<u64>,
    /// Its description (Linux `worker->desc`): the queue it runs or last
    /// ran for, or what an item set with `set_worker_desc`.
    pub desc: String,
}

/// A pool, for reports.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    /// Pool id.
    pub id: usize,
    /// Bound CPU, or None for unbound.
    pub cpu: Option<usize>,
    /// High priority?
    pub highpri: bool,
    /// CPUs its workers may use.
    pub mask: CpuMask,
    /// CPUs whose items it serves (its affinity pod).
    pub pod: CpuMask,
    /// A BH pool (items run in softirq context, no threads)?
    pub bh: bool,
    /// Entries waiting on the worklist.
    pub pending: usize,
    /// Counted running workers.
    pub nr_running: usize,
    /// Its CPU is offline (Linux `POOL_DISASSOCIATED`): its items run on
    /// the online CPUs.
    pub disassociated: bool,
    /// Its workers.
    pub workers: Vec<WorkerInfo>,
}

/// A snapshot of every pool (Linux `wq_dump.py`'s pool section).
pub fn pools() -> Vec<PoolInfo> {
    all_pools()
        .iter()
        .map(|p| {
            let st = p.st.lock();
            PoolInfo {
                id: p.id,
                cpu: p.cpu,
                highpri: p.highpri,
                mask: p.mask,
                pod: p.pod,
                bh: p.bh.get().is_some(),
                pending: st.worklist.len(),
                nr_running: p.nr_running.load(Ordering::Relaxed),
                disassociated: p.disassociated.load(Ordering::Relaxed),
                workers: st
                    .workers
                    .iter()
                    .map(|w| {
                        let cur = st.busy.iter().find(|b| Arc::ptr_eq(&b.worker, w)).map(|b| &b.cur);
                        WorkerInfo {
                            name: w.name.clone(),
                            id: w.task.get().map_or(0, |t| t.id()),
                            idle: w.has(wf::IDLE),
                            running: w.task.get().is_some_and(|t| t.task().is_running()),
                            current: cur.map(|c| c.work.name),
                            current_since_ns: cur.map(|_| stamp(&w.started_at, port().now_ns())),
                            desc: w.desc.lock().clone(),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}
