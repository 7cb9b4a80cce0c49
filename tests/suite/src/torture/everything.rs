//! `torture::everything`: every kind of the subsystem's work at once, from
//! every CPU and every context, with the invariants checked as it goes
//! (`docs/torture.md` describes the run, its invariants and its figures).
//!
//! Who does what:
//! - one *actor* per CPU (a thread bound there) picks operations at
//!   random: kthreads (create, wake, park, unpark, bind, stop), work items
//!   (queue, queue_on, queue_delayed, mod_delayed, cancel, cancel_sync,
//!   disable, flush) on queues of every kind (bound, unbound, ordered,
//!   highpri, `MEM_RECLAIM`, BH and BH highpri), queue flushes, queues made
//!   and destroyed, tasklets, the threaded test interrupt, block I/O
//!   through the page cache; it also keeps a port timer armed whose
//!   callback (hard-IRQ context) queues, cancels and `mod_delayed`s items
//!   and schedules tasklets;
//! - tasklets and BH items (softirq context) queue items in turn;
//! - a *controller* thread takes CPUs offline and back, makes memory
//!   pressure that wakes kswapd, and (with `torture_fault=P`) switches
//!   the fault-injection attributes on and off;
//! - the case's own thread watches the actors' heartbeats.
//!
//! Items, tasklets and timers reach the shared state through a `Weak`
//! reference, so nothing is kept alive by a cycle; the case holds the
//! `Arc` until everything has been quiesced.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use drivers::block::{BlockBuf, BlockDevice, SECTOR_SIZE};
use drivers::pagecache::{PAGE_SIZE, PageCache, WbCursor};
use kport::fault::{self, FAIL_KTHREAD_CREATE, FAIL_MAKE_REQUEST, FAIL_PAGE_ALLOC};
use kport::irq::TestIrq;
use kport::sync::SpinLock;
use kport::{CpuMask, EBUSY, EINTR, EINVAL, EIO, ENOMEM, PortTimer, mm, port};
use kthreadd::kthread::{self, Builder, Kthread};
use softirq::{IrqAction, IrqFlags, IrqReturn, Tasklet, free_irq, in_serving_softirq, request_threaded_irq};
use workqueue::{DelayedWork, Work, Workqueue, WqFlags};

use super::tracker::{Tracker, Violation, Violations, check_cpu};
use crate::rng::Rng;
use crate::{Ctx, Failure, err};

macro_rules! ops {
    ($($name:ident: $doc:literal,)*) => {
        /// What the run counts: operations done per kind. The figures'
        /// keys are these names.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op { $(#[doc = $doc] $name),* }

        impl Op {
            /// Every counter, in figure order.
            pub const ALL: &'static [Op] = &[$(Op::$name),*];

            /// Its key in the figures.
            pub fn name(self) -> &'static str {
                match self { $(Op::$name => stringify!($name)),* }
            }

            /// What it counts.
            pub fn doc(self) -> &'static str {
                match self { $(Op::$name => $doc),* }
            }
        }
    };
}

ops!(
    kthread_create: "kthreads created (per-CPU, with an affinity, bound or bound to a mask before the first wake-up; and short ones that return at once)",
    kthread_create_enomem: "kthread creations that returned ENOMEM (fault injection)",
    kthread_wake: "kthread wake-ups",
    kthread_park: "kthread parks",
    kthread_unpark: "kthread unparks",
    kthread_bind: "kthread binds (before the first wake-up, and now and then after it: EBUSY)",
    kthread_stop: "kthread stops (each checked: the thread's value, or EINTR if it never ran)",
    queue_bound: "queueings on the bound queue (plain, on a CPU, delayed, mod_delayed)",
    queue_unbound: "queueings on the unbound queue",
    queue_ordered: "queueings on the ordered queue",
    queue_highpri: "queueings on the highpri queue",
    queue_reclaim: "queueings on the MEM_RECLAIM (rescuer) queue",
    queue_bh: "queueings on the BH queue",
    queue_bh_highpri: "queueings on the BH highpri queue",
    queue_delayed: "queue_delayed calls",
    mod_delayed: "mod_delayed calls",
    queued_from_hardirq: "queueings from hard-IRQ context (port timers)",
    queued_from_softirq: "queueings from softirq context (tasklets, BH items)",
    cancel: "cancels without waiting (task, softirq and hard-IRQ context)",
    cancel_sync: "cancels that wait",
    disable: "disable_work (sync or not) and enable_work pairs",
    flush_work: "item flushes",
    flush_queue: "queue flushes",
    wq_alloc: "queues made, given an item and destroyed",
    wq_alloc_enomem: "queue creations that returned ENOMEM (fault injection)",
    item_runs: "work item runs",
    tasklet_schedule: "tasklet schedules (normal and HI)",
    tasklet_runs: "tasklet runs",
    tasklet_disable: "tasklet disable and enable pairs",
    irq_fire: "test interrupts fired",
    irq_hard: "hard handler runs",
    irq_thread: "IRQ thread function runs",
    irq_request: "free_irq and request_threaded_irq again of the test line",
    irq_request_enomem: "request_threaded_irq that returned ENOMEM (fault injection)",
    bio_write: "writes through the page cache",
    bio_read: "reads through the page cache (each compared with what was written)",
    bio_fsync: "fsyncs",
    bio_drop_caches: "drop_caches (the next reads come from the disk)",
    bio_eio: "page-cache calls that returned EIO (fault injection)",
    bio_enomem: "page-cache calls that returned ENOMEM",
    pressure_rounds: "memory-pressure rounds (free memory taken below the low watermark)",
    pressure_enomem: "pressure allocations that returned ENOMEM",
    kswapd_wakeups: "kswapd wake-ups during the run",
    cpu_down: "CPUs taken offline",
    cpu_up: "CPUs brought back",
    cpu_refused: "hot-plug calls refused with a documented error (EINVAL, EBUSY)",
    affinity_checks: "checks of a running thread's CPU against its affinity",
    affinity_broken: "checks that found a thread's affinity changed from what it was given (hot-plug may break it)",
    fault_phases: "fault-injection phases (each attribute switched on or off at random)",
);

/// Per-kind counters, usable from any context.
pub struct Counters(Vec<AtomicU64>);

impl Counters {
    fn new() -> Self {
        Counters(Op::ALL.iter().map(|_| AtomicU64::new(0)).collect())
    }

    fn add(&self, op: Op, n: u64) {
        self.0[op as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn inc(&self, op: Op) {
        self.add(op, 1);
    }

    /// The count of `op`.
    pub fn get(&self, op: Op) -> u64 {
        self.0[op as usize].load(Ordering::Relaxed)
    }
}

/// Shared work items of each class, and each actor's private ones.
const SHARED_PLAIN: usize = 40;
const SHARED_DELAYED: usize = 12;
const ORDERED_ITEMS: usize = 8;
const BH_ITEMS: usize = 12;
const PRIVATE_PLAIN: usize = 2;
const PRIVATE_DELAYED: usize = 1;
/// Tasklets (numbered in violations from [`TASKLET_BASE`]).
const TASKLETS: usize = 8;
const TASKLET_BASE: u64 = 1000;
/// Threads an actor keeps at once.
const OWN_THREADS: usize = 3;
/// Longest delay of a delayed item (ns): short, so that flushes and the
/// quiesce at the end do not wait long.
const MAX_DELAY_NS: u64 = 20_000_000;
/// An operation that takes longer than this is reported as a hang (TCG
/// with several guest CPUs on a loaded host is slow; a flush may wait out
/// the workqueue's 1 s creation cool-down several times under injection).
const STUCK_NS: u64 = 60_000_000_000;
/// Where on `kblk-main` the run writes (a megabyte no other suite uses),
/// and how much of it each actor owns.
pub const BIO_AREA: u64 = 12 << 20;
const BIO_SLICE: u64 = 64 << 10;
/// Pattern bytes the pressure rounds read into the cache (clean pages for
/// kswapd to reclaim), from the start of the disk, which nothing writes.
const PRESSURE_CACHE: u64 = 2 << 20;
/// Free memory the controller leaves above `high` while it holds its
/// baseline (pages), so each pressure round only has to take this much.
const PRESSURE_MARGIN: u64 = 4096;

/// Which queues an item may go to, and how its function behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Bound, unbound, highpri and reclaim queues; may sleep.
    Task,
    /// Only the ordered queue; checks that no other item of it runs.
    Ordered,
    /// The BH queues; runs in softirq context.
    Bh,
}

enum Handle {
    Plain(Work),
    Delayed(DelayedWork),
}

struct Item {
    class: Class,
    handle: Handle,
}

struct Queues {
    /// Bound, unbound, highpri, reclaim (bound with a rescuer), with their
    /// counters.
    task: Vec<(Workqueue, Op)>,
    ordered: Workqueue,
    bh: Vec<(Workqueue, Op)>,
}

impl Queues {
    fn new() -> Result<Queues, Failure> {
        let mk =
            |name: &str, flags: WqFlags, max: usize| Workqueue::new(name, flags, max).map_err(err("alloc_workqueue"));
        Ok(Queues {
            task: alloc::vec![
                (mk("tt-bound", WqFlags::empty(), 4)?, Op::queue_bound),
                (mk("tt-unbound", WqFlags::UNBOUND, 3)?, Op::queue_unbound),
                (mk("tt-highpri", WqFlags::HIGHPRI, 0)?, Op::queue_highpri),
                (mk("tt-reclaim", WqFlags::MEM_RECLAIM, 2)?, Op::queue_reclaim),
            ],
            ordered: Workqueue::ordered("tt-ordered", WqFlags::empty()).map_err(err("alloc_ordered_workqueue"))?,
            bh: alloc::vec![
                (mk("tt-bh", WqFlags::BH, 0)?, Op::queue_bh),
                (mk("tt-bh-hi", WqFlags::BH | WqFlags::HIGHPRI, 0)?, Op::queue_bh_highpri),
            ],
        })
    }

    fn all(&self) -> impl Iterator<Item = &Workqueue> {
        self.task.iter().map(|q| &q.0).chain(core::iter::once(&self.ordered)).chain(self.bh.iter().map(|q| &q.0))
    }
}

/// The threaded test interrupt's state (hard handler and thread share it).
struct IrqState {
    v: Arc<Violations>,
    ops: Arc<Counters>,
    /// Hard-handler runs.
    hard: AtomicU64,
    /// The hard-handler count the thread function last began with.
    seen: AtomicU64,
    /// The thread function is running.
    thread_running: AtomicBool,
    /// The action's thread, once known.
    thread_id: AtomicUsize,
}

struct IrqPart {
    line: &'static dyn TestIrq,
    action: SpinLock<Option<IrqAction>>,
    st: Arc<IrqState>,
    /// An actor is freeing and requesting the line again.
    cycling: AtomicBool,
}

impl IrqPart {
    fn start(v: &Arc<Violations>, ops: &Arc<Counters>) -> Result<Option<IrqPart>, Failure> {
        let Some(line) = kport::harness::installed().then(kport::harness::harness).and_then(|h| h.test_irq()) else {
            return Ok(None);
        };
        let st = Arc::new(IrqState {
            v: v.clone(),
            ops: ops.clone(),
            hard: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            thread_running: AtomicBool::new(false),
            thread_id: AtomicUsize::new(0),
        });
        let action = Self::request(line, &st).map_err(err("request_threaded_irq of the test line"))?;
        Ok(Some(IrqPart { line, action: SpinLock::new(Some(action)), st, cycling: AtomicBool::new(false) }))
    }

    /// Request the line: a one-shot action whose hard handler wakes its
    /// thread, both checking their context.
    fn request(line: &'static dyn TestIrq, st: &Arc<IrqState>) -> kport::Result<IrqAction> {
        let (h, t) = (st.clone(), st.clone());
        st.thread_id.store(0, Ordering::SeqCst);
        let action = request_threaded_irq(
            line.line(),
            Some(Box::new(move |_| {
                if !port().in_irq() {
                    h.v.record(Violation::Context, 3, 0, 0);
                }
                if h.thread_running.load(Ordering::SeqCst) {
                    h.v.record(Violation::IrqNotMasked, 0, 0, 0);
                }
                h.hard.fetch_add(1, Ordering::SeqCst);
                h.ops.inc(Op::irq_hard);
                IrqReturn::WakeThread
            })),
            Some(Box::new(move |_| {
                if t.thread_running.swap(true, Ordering::SeqCst) {
                    t.v.record(Violation::Context, 4, 0, 0);
                }
                t.seen.store(t.hard.load(Ordering::SeqCst), Ordering::SeqCst);
                let me = t.thread_id.load(Ordering::SeqCst);
                if me != 0 && port().current_id() != me {
                    t.v.record(Violation::Context, 4, 0, 0);
                }
                check_current_affinity(&t.v, &t.ops, None);
                spin_ns(20_000);
                t.ops.inc(Op::irq_thread);
                t.thread_running.store(false, Ordering::SeqCst);
                IrqReturn::Handled
            })),
            IrqFlags::ONESHOT,
            "tt-irq",
        )?;
        if let Some(k) = action.thread() {
            st.thread_id.store(k.id(), Ordering::SeqCst);
        }
        Ok(action)
    }

    /// Has the thread seen every hard-handler run, and is it idle?
    fn caught_up(&self) -> bool {
        let st = &self.st;
        !st.thread_running.load(Ordering::SeqCst) && st.seen.load(Ordering::SeqCst) == st.hard.load(Ordering::SeqCst)
    }

    /// Free the line and request it again (under injection the request
    /// may return ENOMEM: the line then stays free until the next try).
    fn cycle(&self, v: &Violations, ops: &Counters) {
        if self.cycling.swap(true, Ordering::SeqCst) {
            return;
        }
        ops.inc(Op::irq_request);
        let old = self.action.lock().take();
        if let Some(a) = old {
            if !crate::port_api::wait_for(10_000, || self.caught_up()) {
                v.record(
                    Violation::IrqLostWake,
                    self.st.hard.load(Ordering::SeqCst),
                    self.st.seen.load(Ordering::SeqCst),
                    1,
                );
            }
            match free_irq(a) {
                Ok(()) => {}
                Err((e, a)) => {
                    v.record(Violation::Teardown, 1, e.errno as u64, 0);
                    *self.action.lock() = Some(a);
                    self.cycling.store(false, Ordering::SeqCst);
                    return;
                }
            }
            // A fire that came after the catch-up may have woken the
            // thread that free_irq stopped: that wake-up goes with it (as
            // in Linux).
            let st = &self.st;
            st.seen.store(st.hard.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        match Self::request(self.line, &self.st) {
            Ok(a) => *self.action.lock() = Some(a),
            Err(e) if e.errno == ENOMEM => ops.inc(Op::irq_request_enomem),
            Err(e) => v.record(Violation::BadErrno, Op::irq_request as u64, e.errno as u64, 0),
        }
        self.cycling.store(false, Ordering::SeqCst);
    }

    /// Wait until the thread has seen every hard-handler run, check it,
    /// and free the line.
    fn finish(&self, v: &Violations) {
        let st = &self.st;
        if !crate::port_api::wait_for(10_000, || self.caught_up()) {
            v.record(Violation::IrqLostWake, st.hard.load(Ordering::SeqCst), st.seen.load(Ordering::SeqCst), 0);
        }
        let fired = st.ops.get(Op::irq_fire);
        if fired > 0 && (st.ops.get(Op::irq_hard) == 0 || st.ops.get(Op::irq_thread) == 0) {
            v.record(Violation::IrqLostWake, st.ops.get(Op::irq_hard), st.ops.get(Op::irq_thread), 0);
        }
        let action = self.action.lock().take();
        if let Some(a) = action
            && let Err((e, _)) = free_irq(a)
        {
            v.record(Violation::Teardown, 1, e.errno as u64, 0);
        }
    }
}

/// Block I/O through the page cache: each actor owns a slice of
/// [`BIO_AREA`] and a shadow of what the slice should hold.
struct Bio {
    dev: Arc<BlockDevice>,
    cache: Arc<PageCache>,
    shadow: Vec<SpinLock<Vec<u8>>>,
}

impl Bio {
    fn new(dev: Arc<BlockDevice>, actors: usize) -> Result<Bio, Failure> {
        let cache = PageCache::new(dev.clone()).map_err(err("page cache"))?;
        let shadow = (0..actors)
            .map(|a| {
                let start = BIO_AREA + a as u64 * BIO_SLICE;
                SpinLock::new(
                    (0..BIO_SLICE)
                        .map(|k| {
                            crate::block::pattern_byte(
                                (start + k) / SECTOR_SIZE as u64,
                                ((start + k) % SECTOR_SIZE as u64) as usize,
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        Ok(Bio { dev, cache, shadow })
    }

    fn slice_start(actor: usize) -> u64 {
        BIO_AREA + actor as u64 * BIO_SLICE
    }
}

/// An actor's heartbeat: the operation under way (0: none) and since when.
#[derive(Default)]
struct Beat {
    op: AtomicUsize,
    since: AtomicU64,
    reported: AtomicBool,
    /// The thread a stop under way waits for (0: none), for the report.
    waits_on: AtomicUsize,
}

/// Everything the actors, items, tasklets and timers share.
struct Shared {
    /// Itself, for the threads it makes.
    weak: Weak<Shared>,
    stop: AtomicBool,
    fault_pct: u8,
    v: Arc<Violations>,
    ops: Arc<Counters>,
    queues: Queues,
    items: Vec<Item>,
    track: Tracker,
    /// Where the shared plain task items and the BH items are in `items`
    /// (the shared delayed and the ordered items follow the first).
    shared_plain: core::ops::Range<usize>,
    bh: core::ops::Range<usize>,
    private_base: usize,
    ordered_running: AtomicU32,
    tasklets: Vec<Tasklet>,
    tasklet_track: Tracker,
    /// Random numbers for interrupt context (a counter run through a mixer).
    irq_rng: AtomicU64,
    irq: Option<IrqPart>,
    bio: Option<Bio>,
    beats: Vec<Beat>,
    actors_done: AtomicUsize,
    seq: AtomicU64,
    /// Pressure rounds that took free memory below the low watermark (an
    /// injected ENOMEM may end one before).
    below_low: AtomicU64,
}

/// The context an operation on items is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Task,
    Softirq,
    Hardirq,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finalizer.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Spin about `ns` nanoseconds (work that keeps its CPU).
fn spin_ns(ns: u64) {
    let p = port();
    let end = p.now_ns() + ns;
    while p.now_ns() < end {
        core::hint::spin_loop();
    }
}

/// Check that the calling thread runs on a CPU of its affinity (as the
/// port reports it, read with preemption off so the two belong together);
/// with `intended`, count it when the port's affinity is no longer what
/// the thread was given (a CPU going offline may break it, as Linux's
/// `select_fallback_rq` does).
fn check_current_affinity(v: &Violations, ops: &Counters, intended: Option<CpuMask>) {
    let p = port();
    p.preempt_disable();
    let cpu = p.cpu_id();
    let task = p.current();
    let mask = task.affinity();
    p.preempt_enable();
    ops.inc(Op::affinity_checks);
    check_cpu(cpu, mask, task.id(), v);
    if intended.is_some_and(|m| m != mask) {
        ops.inc(Op::affinity_broken);
    }
}

impl Shared {
    fn rand(&self) -> u64 {
        mix(self.irq_rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed))
    }

    fn cpus(&self) -> usize {
        port().cpu_count()
    }

    /// A random CPU that is online now (any CPU if none reads as online).
    fn online_cpu(&self, r: u64) -> usize {
        let m = port().online_mask().and(CpuMask::first(self.cpus()));
        let c = m.count().max(1);
        m.iter().nth((r % c as u64) as usize).unwrap_or(0)
    }

    fn item_body(&self, id: usize) {
        self.ops.inc(Op::item_runs);
        let item = &self.items[id];
        self.track.run(id, &self.v, || {
            let p = port();
            let r = self.rand();
            match item.class {
                Class::Task => {
                    if p.in_irq() || in_serving_softirq() {
                        self.v.record(Violation::Context, 1, id as u64, 0);
                    }
                    check_current_affinity(&self.v, &self.ops, None);
                    if r.is_multiple_of(16) {
                        kthread::msleep(1);
                    } else {
                        spin_ns(r % 20_000);
                    }
                }
                Class::Ordered => {
                    if self.ordered_running.fetch_add(1, Ordering::SeqCst) != 0 {
                        self.v.record(Violation::OrderedOverlap, id as u64, 0, 0);
                    }
                    if p.in_irq() || in_serving_softirq() {
                        self.v.record(Violation::Context, 1, id as u64, 0);
                    }
                    if r.is_multiple_of(8) {
                        kthread::msleep(1);
                    } else {
                        spin_ns(r % 20_000);
                    }
                    self.ordered_running.fetch_sub(1, Ordering::SeqCst);
                }
                Class::Bh => {
                    if p.in_irq() || !in_serving_softirq() {
                        self.v.record(Violation::Context, 2, id as u64, 0);
                    }
                    spin_ns(r % 5_000);
                    if r.is_multiple_of(2) {
                        // Queue a task-context item from softirq context.
                        let k = self.shared_plain.start + (mix(r) as usize % self.shared_plain.len());
                        self.queue_item(k, From::Softirq, mix(r ^ 1));
                    }
                }
            }
        });
    }

    fn tasklet_body(&self, i: usize) {
        self.ops.inc(Op::tasklet_runs);
        self.tasklet_track.run(i, &self.v, || {
            if port().in_irq() || !in_serving_softirq() {
                self.v.record(Violation::Context, 5, i as u64, 0);
            }
            let r = self.rand();
            match r % 4 {
                0 | 1 => {
                    let id = self.random_shared_item(mix(r));
                    self.queue_item(id, From::Softirq, mix(r ^ 2));
                }
                2 => {
                    let id = self.random_shared_item(mix(r));
                    self.cancel_item(id, false);
                }
                _ => {}
            }
        });
    }

    /// The port timer's callback: hard-IRQ context.
    fn timer_body(&self) {
        if !port().in_irq() {
            self.v.record(Violation::Context, 6, 0, 0);
        }
        let r = self.rand();
        match r % 8 {
            0..=3 => {
                let id = self.random_shared_item(mix(r));
                self.queue_item(id, From::Hardirq, mix(r ^ 4));
            }
            4 | 5 => {
                let id = self.random_shared_item(mix(r));
                self.cancel_item(id, false);
            }
            _ => self.schedule_tasklet((mix(r) % TASKLETS as u64) as usize, r & 1 == 0),
        }
    }

    /// A random shared item of any class (not an actor's private one).
    fn random_shared_item(&self, r: u64) -> usize {
        (r % self.private_base as u64) as usize
    }

    fn schedule_tasklet(&self, i: usize, hi: bool) {
        let t = &self.tasklets[i];
        self.tasklet_track.queue_with(i, || if hi { t.hi_schedule() } else { t.schedule() });
        self.ops.inc(Op::tasklet_schedule);
    }

    /// Queue item `id` on a random queue of its class, in a random way.
    /// Returns the index in [`Queues::task`] of the queue used, for a task
    /// item (a private item's queue flush needs it).
    fn queue_item(&self, id: usize, from: From, r: u64) -> Option<usize> {
        let item = &self.items[id];
        let cpus = self.cpus() as u64;
        // A CPU given half the time (any CPU that exists: one offline keeps
        // its pool here), else the calling CPU's pool.
        let cpu = (r & 1 == 0).then(|| ((r >> 1) % cpus) as usize);
        let pick = (r >> 8) as usize;
        let (q, op, task_index) = match item.class {
            Class::Task => {
                let i = pick % self.queues.task.len();
                (&self.queues.task[i].0, self.queues.task[i].1, Some(i))
            }
            Class::Ordered => (&self.queues.ordered, Op::queue_ordered, None),
            Class::Bh => {
                let i = pick % self.queues.bh.len();
                (&self.queues.bh[i].0, self.queues.bh[i].1, None)
            }
        };
        match &item.handle {
            Handle::Plain(w) => {
                self.track.queue_with(id, || match cpu {
                    Some(c) => q.queue_on(c, w),
                    None => q.queue(w),
                });
            }
            Handle::Delayed(d) => {
                let delay = (r >> 16) % MAX_DELAY_NS;
                if (r >> 12) & 1 == 0 {
                    self.track.queue_with(id, || q.queue_delayed_on(cpu, d, delay));
                    self.ops.inc(Op::queue_delayed);
                } else {
                    self.track.replace_with(id, || q.mod_delayed_on(cpu, d, delay), &self.v);
                    self.ops.inc(Op::mod_delayed);
                }
            }
        }
        self.ops.inc(op);
        match from {
            From::Task => {}
            From::Softirq => self.ops.inc(Op::queued_from_softirq),
            From::Hardirq => self.ops.inc(Op::queued_from_hardirq),
        }
        task_index
    }

    /// Cancel item `id` (`sync` only from task context). A shared delayed
    /// item is only ever cancelled without waiting: a `mod_delayed` racing
    /// a `cancel_delayed_work_sync` queues nothing and cannot say so (as in
    /// Linux), which would leave the counts unknown.
    fn cancel_item(&self, id: usize, sync: bool) {
        let item = &self.items[id];
        let was = match &item.handle {
            Handle::Plain(w) if sync => {
                self.ops.inc(Op::cancel_sync);
                w.cancel_sync()
            }
            Handle::Plain(w) => {
                self.ops.inc(Op::cancel);
                w.cancel()
            }
            Handle::Delayed(d) if sync && id >= self.private_base => {
                self.ops.inc(Op::cancel_sync);
                d.cancel_sync()
            }
            Handle::Delayed(d) => {
                self.ops.inc(Op::cancel);
                d.cancel()
            }
        };
        self.track.cancelled(id, was, &self.v);
    }

    fn flush_item(&self, id: usize) {
        self.ops.inc(Op::flush_work);
        match &self.items[id].handle {
            Handle::Plain(w) => w.flush(),
            Handle::Delayed(d) => d.flush(),
        };
    }

    fn is_pending(&self, id: usize) -> bool {
        match &self.items[id].handle {
            Handle::Plain(w) => w.is_pending(),
            Handle::Delayed(d) => d.is_pending(),
        }
    }

    /// Record an error that is not `ok` for operation `op`.
    fn errno(&self, op: Op, e: kport::Error, ok: &[i32]) {
        if !ok.contains(&e.errno) {
            self.v.record(Violation::BadErrno, op as u64, e.errno as u64, 0);
        }
    }

    fn begin(&self, actor: usize, op: Op) {
        let b = &self.beats[actor];
        b.since.store(port().now_ns(), Ordering::SeqCst);
        b.op.store(op as usize + 1, Ordering::SeqCst);
    }

    fn end(&self, actor: usize) {
        self.beats[actor].op.store(0, Ordering::SeqCst);
    }
}

/// A thread an actor made and looks after.
struct Owned {
    k: Kthread,
    /// Woken (or parked, which also starts it) by its actor: its stop
    /// may return its value; never started, the stop must be `EINTR`.
    started: bool,
    woken: bool,
    parked: bool,
    want: i32,
}

/// What the case made before the shared state: the queues, the interrupt
/// and the block I/O, and the run's settings.
struct Parts {
    actors: usize,
    fault_pct: u8,
    v: Arc<Violations>,
    ops: Arc<Counters>,
    queues: Queues,
    irq: Option<IrqPart>,
    bio: Option<Bio>,
    seed: u64,
}

/// Build the shared state, its items and tasklets.
fn build(parts: Parts) -> Arc<Shared> {
    let Parts { actors, fault_pct, v, ops, queues, irq, bio, seed } = parts;
    Arc::new_cyclic(|me: &Weak<Shared>| {
        let mut items: Vec<Item> = Vec::new();
        let mut add = |n: usize, class: Class, delayed: bool| {
            let start = items.len();
            for id in start..start + n {
                let w = me.clone();
                let f = move || {
                    if let Some(s) = w.upgrade() {
                        s.item_body(id);
                    }
                };
                let handle = if delayed {
                    Handle::Delayed(DelayedWork::named("torture_item", f))
                } else {
                    Handle::Plain(Work::named("torture_item", f))
                };
                items.push(Item { class, handle });
            }
            start..start + n
        };
        let shared_plain = add(SHARED_PLAIN, Class::Task, false);
        add(SHARED_DELAYED, Class::Task, true);
        add(ORDERED_ITEMS, Class::Ordered, false);
        let bh = add(BH_ITEMS, Class::Bh, false);
        let private_base = bh.end;
        for _ in 0..actors {
            add(PRIVATE_PLAIN, Class::Task, false);
            add(PRIVATE_DELAYED, Class::Task, true);
        }
        let tasklets = (0..TASKLETS)
            .map(|i| {
                let w = me.clone();
                Tasklet::named("torture_tasklet", move || {
                    if let Some(s) = w.upgrade() {
                        s.tasklet_body(i);
                    }
                })
            })
            .collect();
        let n_items = items.len();
        Shared {
            weak: me.clone(),
            stop: AtomicBool::new(false),
            fault_pct,
            v,
            ops,
            queues,
            items,
            track: Tracker::new(n_items),
            shared_plain,
            bh,
            private_base,
            ordered_running: AtomicU32::new(0),
            tasklets,
            tasklet_track: Tracker::with_base(TASKLETS, TASKLET_BASE),
            irq_rng: AtomicU64::new(seed | 1),
            irq,
            bio,
            beats: (0..=actors).map(|_| Beat::default()).collect(),
            actors_done: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            below_low: AtomicU64::new(0),
        }
    })
}

/// A random non-empty mask of the machine's CPUs.
fn random_mask(rng: &mut Rng, cpus: usize) -> CpuMask {
    let all = CpuMask::first(cpus);
    loop {
        let m = CpuMask(rng.next_u64()).and(all);
        if !m.is_empty() {
            return m;
        }
    }
}

/// The body of a thread an actor made: until stopped, check its CPU
/// against its affinity, park when asked, sleep a little; return `want`.
fn owned_body(w: Weak<Shared>, intended: CpuMask, want: i32) -> impl FnOnce() -> i32 + Send + 'static {
    move || {
        let mut n = 0u64;
        while !kthread::should_stop() {
            if let Some(s) = w.upgrade() {
                check_current_affinity(&s.v, &s.ops, Some(intended));
            }
            if kthread::should_park() {
                kthread::parkme();
                continue;
            }
            n += 1;
            kthread::sleep_ms_or_stop(1 + n % 3);
        }
        want
    }
}

impl Shared {
    /// Stop a thread an actor made, checking what the stop returns.
    fn stop_owned(&self, a: usize, o: Owned) {
        self.ops.inc(Op::kthread_stop);
        let began = o.k.has_started();
        self.beats[a].waits_on.store(o.k.id(), Ordering::SeqCst);
        let r = o.k.stop();
        self.beats[a].waits_on.store(0, Ordering::SeqCst);
        match r {
            Ok(v) if v == o.want && o.started => {}
            Ok(v) => self.v.record(Violation::StopValue, o.k.id() as u64, v as u64, o.want as u64),
            Err(e) if e.errno == EINTR && !began => {}
            Err(e) => self.v.record(Violation::StopValue, o.k.id() as u64, (-e.errno) as u64, o.want as u64),
        }
    }

    fn kthread_op(&self, a: usize, rng: &mut Rng, own: &mut Vec<Owned>) {
        let cpus = self.cpus();
        let choice = rng.below(12);
        if own.is_empty() || (choice < 3 && own.len() < OWN_THREADS) {
            self.begin(a, Op::kthread_create);
            let want = rng.below(1000) as i32;
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let target = rng.below(cpus as u64) as usize;
            let mask = random_mask(rng, cpus);
            let mode = rng.below(4);
            let intended = if mode == 0 || mode == 2 { CpuMask::one(target) } else { mask };
            let b = Builder::new(format_args!("tt-k{a}/{seq}"), owned_body(self.me(), intended, want));
            self.ops.inc(Op::kthread_create);
            let made = match mode {
                0 => b.on_cpu(target).create(),
                1 => b.affinity(mask).create(),
                _ => b.create(),
            };
            match made {
                Ok(k) => {
                    let bound = match mode {
                        2 => Some(k.bind(target)),
                        3 => Some(k.bind_mask(mask)),
                        _ => None,
                    };
                    if let Some(r) = bound {
                        self.ops.inc(Op::kthread_bind);
                        if let Err(e) = r {
                            // Before the first wake-up a bind to a CPU that exists succeeds.
                            self.errno(Op::kthread_bind, e, &[]);
                        }
                    }
                    own.push(Owned { k, started: false, woken: false, parked: false, want });
                }
                Err(e) if e.errno == ENOMEM => self.ops.inc(Op::kthread_create_enomem),
                Err(e) => self.errno(Op::kthread_create, e, &[]),
            }
            self.end(a);
            return;
        }
        let i = rng.below(own.len() as u64) as usize;
        match choice {
            3..=5 => {
                self.begin(a, Op::kthread_wake);
                let o = &mut own[i];
                o.k.wake();
                o.woken = true;
                o.started = true;
                self.ops.inc(Op::kthread_wake);
                self.end(a);
            }
            6..=7 => {
                let o = &mut own[i];
                if o.parked {
                    self.begin(a, Op::kthread_unpark);
                    o.k.unpark();
                    o.parked = false;
                    self.ops.inc(Op::kthread_unpark);
                } else {
                    self.begin(a, Op::kthread_park);
                    self.ops.inc(Op::kthread_park);
                    // Parking a thread that never ran starts it; it parks
                    // before its function. Nothing else parks it, and it
                    // does not exit by itself: the park must succeed.
                    match o.k.park() {
                        Ok(()) => {
                            o.parked = true;
                            o.started = true;
                            if !o.k.is_parked() {
                                self.v.record(Violation::BadErrno, Op::kthread_park as u64, 0, 1);
                            }
                        }
                        Err(e) => self.errno(Op::kthread_park, e, &[]),
                    }
                }
                self.end(a);
            }
            8..=9 => {
                self.begin(a, Op::kthread_stop);
                let o = own.swap_remove(i);
                self.stop_owned(a, o);
                self.end(a);
            }
            10 if rng.below(64) == 0 && own[i].woken => {
                // Linux's misuse: a bind after the first wake-up is refused
                // (EBUSY, with a warning line).
                self.begin(a, Op::kthread_bind);
                self.ops.inc(Op::kthread_bind);
                match own[i].k.bind(rng.below(cpus as u64) as usize) {
                    Err(e) if e.errno == EBUSY => {}
                    Err(e) => self.errno(Op::kthread_bind, e, &[]),
                    Ok(()) => self.v.record(Violation::BadErrno, Op::kthread_bind as u64, 0, 2),
                }
                self.end(a);
            }
            _ => {
                // A thread that returns at once: run, then stop; the stop
                // returns its value, or EINTR if it had not started yet.
                self.begin(a, Op::kthread_create);
                self.ops.inc(Op::kthread_create);
                let want = rng.below(1000) as i32;
                let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                match Builder::new(format_args!("tt-s{a}/{seq}"), move || want).run() {
                    Ok(k) => {
                        if rng.below(2) == 0 {
                            kthread::msleep(1);
                        }
                        self.stop_owned(a, Owned { k, started: true, woken: true, parked: false, want });
                    }
                    Err(e) if e.errno == ENOMEM => self.ops.inc(Op::kthread_create_enomem),
                    Err(e) => self.errno(Op::kthread_create, e, &[]),
                }
                self.end(a);
            }
        }
    }

    fn me(&self) -> Weak<Shared> {
        self.weak.clone()
    }
}

impl Shared {
    /// An actor's operation on a private item (only this actor touches
    /// it, so after a flush or `cancel_sync` its counts must be exact).
    fn private_op(&self, a: usize, rng: &mut Rng) {
        let per = PRIVATE_PLAIN + PRIVATE_DELAYED;
        let id = self.private_base + a * per + rng.below(per as u64) as usize;
        self.begin(a, Op::flush_work);
        if !self.track.is_settled(id) {
            self.flush_item(id);
            self.settled_after(id, "flush (before queueing)");
        }
        let before = self.track.counts(id).queued;
        let qi = self.queue_item(id, From::Task, rng.next_u64());
        let made = self.track.counts(id).queued > before;
        let plain = matches!(self.items[id].handle, Handle::Plain(_));
        match rng.below(4) {
            0 => {
                self.flush_item(id);
                self.settled_after(id, "flush");
            }
            1 => {
                self.cancel_item(id, true);
                self.settled_after(id, "cancel_sync");
            }
            2 if plain && made => {
                // flush_workqueue waits for what was queued on the queue
                // before it (not for a delayed item's timer, as in Linux).
                let q = &self.queues.task[qi.unwrap_or(0)].0;
                self.ops.inc(Op::flush_queue);
                if let Err(e) = q.flush() {
                    self.errno(Op::flush_queue, e, &[]);
                }
                self.settled_after(id, "flush_workqueue");
            }
            _ => {}
        }
        self.end(a);
    }

    /// [`Tracker::check_settled`] after `what` on private item `id`, and on
    /// a violation a note with what the item was doing then and 50 ms
    /// later (an instance that finishes later was still queued or running
    /// when the call returned; one that never does was lost).
    fn settled_after(&self, id: usize, what: &str) {
        if self.track.is_settled(id) {
            return;
        }
        self.track.check_settled(id, &self.v);
        let kind = if matches!(self.items[id].handle, Handle::Plain(_)) { "plain" } else { "delayed" };
        let (c, running, pending) = (self.track.counts(id), self.track.is_running(id), self.is_pending(id));
        kthread::msleep(50);
        let (l, later_running, later_pending) = (self.track.counts(id), self.track.is_running(id), self.is_pending(id));
        crate::diag!(
            "torture-note: {kind} item {} not settled after {what} on cpu {}: queued {} started {} done {} cancelled {} running {running} pending {pending}; 50 ms later: queued {} started {} done {} cancelled {} running {later_running} pending {later_pending}",
            self.track.name_of(id),
            port().cpu_id(),
            c.queued,
            c.started,
            c.done,
            c.cancelled,
            l.queued,
            l.started,
            l.done,
            l.cancelled
        );
    }

    fn disable_op(&self, a: usize, rng: &mut Rng) {
        let id = self.random_shared_item(rng.next_u64());
        let Handle::Plain(w) = &self.items[id].handle else {
            return;
        };
        self.begin(a, Op::disable);
        self.ops.inc(Op::disable);
        let was = if rng.below(2) == 0 { w.disable() } else { w.disable_sync() };
        self.track.cancelled(id, was, &self.v);
        if !w.is_disabled() {
            self.v.record(Violation::BadErrno, Op::disable as u64, 0, 3);
        }
        if rng.below(2) == 0 {
            kthread::msleep(1);
        }
        w.enable();
        self.end(a);
    }

    fn tasklet_op(&self, a: usize, rng: &mut Rng) {
        let i = rng.below(TASKLETS as u64) as usize;
        if rng.below(5) == 0 {
            self.begin(a, Op::tasklet_disable);
            self.ops.inc(Op::tasklet_disable);
            let t = &self.tasklets[i];
            t.disable();
            // The function must not be running: its body, as the tracker
            // sees it. The RUN bit (`is_running`) is no witness: a CPU
            // about to run the tasklet sets it, finds it disabled and clears
            // it again (Linux's `tasklet_trylock` before the count test),
            // without running anything.
            if self.tasklet_track.is_running(i) {
                self.v.record(Violation::Tasklet, TASKLET_BASE + i as u64, 0, 0);
            }
            if rng.below(2) == 0 {
                kthread::msleep(1);
            }
            t.enable();
        } else {
            self.begin(a, Op::tasklet_schedule);
            self.schedule_tasklet(i, rng.below(2) == 0);
        }
        self.end(a);
    }

    fn bio_op(&self, a: usize, rng: &mut Rng, cursor: &mut Option<WbCursor>) {
        let (Some(b), Some(cur)) = (&self.bio, cursor.as_mut()) else {
            return;
        };
        let start = Bio::slice_start(a);
        // Errors the calls document: ENOMEM always (a page cannot be
        // allocated); EIO only when requests fail on purpose (kblk-main
        // itself never fails one).
        let ok: &[i32] = if self.fault_pct > 0 { &[ENOMEM, EIO] } else { &[ENOMEM] };
        let count_err = |e: kport::Error, op: Op| {
            match e.errno {
                EIO => self.ops.inc(Op::bio_eio),
                ENOMEM => self.ops.inc(Op::bio_enomem),
                _ => {}
            }
            self.errno(op, e, ok);
        };
        match rng.below(20) {
            0..=9 => {
                // Inside one page: the write then either happens whole or
                // not at all.
                self.begin(a, Op::bio_write);
                self.ops.inc(Op::bio_write);
                let page = rng.below(BIO_SLICE / PAGE_SIZE as u64);
                let off = rng.below(PAGE_SIZE as u64);
                let len = 1 + rng.below((PAGE_SIZE as u64 - off).min(1024));
                let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                let rel = page * PAGE_SIZE as u64 + off;
                match b.cache.write(start + rel, &data) {
                    Ok(n) if n == data.len() => {
                        b.shadow[a].lock()[rel as usize..(rel + len) as usize].copy_from_slice(&data);
                    }
                    Ok(n) => self.v.record(Violation::BadErrno, Op::bio_write as u64, 0, n as u64),
                    Err(e) => count_err(e, Op::bio_write),
                }
            }
            10..=15 => {
                self.begin(a, Op::bio_read);
                self.ops.inc(Op::bio_read);
                let rel = rng.below(BIO_SLICE - 1);
                let len = 1 + rng.below((BIO_SLICE - rel).min(8192));
                let mut buf = alloc::vec![0u8; len as usize];
                match b.cache.read(start + rel, &mut buf) {
                    Ok(n) if n == buf.len() => {
                        let sh = b.shadow[a].lock();
                        let want = &sh[rel as usize..(rel + len) as usize];
                        if let Some(k) = (0..buf.len()).find(|&k| buf[k] != want[k]) {
                            self.v.record(Violation::Data, start + rel + k as u64, buf[k] as u64, want[k] as u64);
                        }
                    }
                    Ok(n) => self.v.record(Violation::BadErrno, Op::bio_read as u64, 0, n as u64),
                    Err(e) => count_err(e, Op::bio_read),
                }
            }
            16..=18 => {
                self.begin(a, Op::bio_fsync);
                self.ops.inc(Op::bio_fsync);
                if let Err(e) = b.cache.fsync_range(cur, start, start + BIO_SLICE) {
                    count_err(e, Op::bio_fsync);
                }
            }
            _ => {
                self.begin(a, Op::bio_drop_caches);
                self.ops.inc(Op::bio_drop_caches);
                drivers::vmscan::drop_caches();
            }
        }
        self.end(a);
    }

    /// Make a queue, queue an item on it, destroy it: the item ran once
    /// (`alloc_workqueue` and `destroy_workqueue` under the run's load,
    /// and under injection the creation's `ENOMEM`).
    fn wq_alloc_op(&self, a: usize, rng: &mut Rng) {
        self.begin(a, Op::wq_alloc);
        self.ops.inc(Op::wq_alloc);
        let flags = [
            WqFlags::empty(),
            WqFlags::UNBOUND,
            WqFlags::MEM_RECLAIM,
            WqFlags::UNBOUND | WqFlags::MEM_RECLAIM,
            WqFlags::ORDERED,
            WqFlags::HIGHPRI | WqFlags::CPU_INTENSIVE,
        ][rng.below(6) as usize];
        let mask = random_mask(rng, self.cpus());
        match Workqueue::with_mask("tt-tmp", flags, 1 + rng.below(4) as usize, mask) {
            Ok(q) => {
                let runs = Arc::new(AtomicU64::new(0));
                let r = runs.clone();
                let w = Work::named("torture_tmp", move || {
                    r.fetch_add(1, Ordering::SeqCst);
                });
                let queued = q.queue(&w);
                if let Err(e) = q.destroy() {
                    self.v.record(Violation::Teardown, 3, e.errno as u64, 0);
                }
                let n = runs.load(Ordering::SeqCst);
                if n != u64::from(queued) {
                    self.v.record(Violation::TmpQueue, n, u64::from(queued), 0);
                }
            }
            Err(e) if e.errno == ENOMEM => self.ops.inc(Op::wq_alloc_enomem),
            Err(e) => self.errno(Op::wq_alloc, e, &[]),
        }
        self.end(a);
    }

    fn flush_queue_op(&self, a: usize, rng: &mut Rng) {
        let all: Vec<&Workqueue> = self.queues.all().collect();
        let q = all[rng.below(all.len() as u64) as usize];
        self.begin(a, Op::flush_queue);
        self.ops.inc(Op::flush_queue);
        if let Err(e) = q.flush() {
            self.errno(Op::flush_queue, e, &[]);
        }
        self.end(a);
    }
}

/// One actor: bound to `cpu`, random operations until the run stops.
fn actor(s: Arc<Shared>, a: usize, cpu: usize, seed: u64) -> i32 {
    let p = port();
    let mut rng = Rng::new(seed ^ ((a as u64) << 32), "torture-actor");
    let mut own: Vec<Owned> = Vec::new();
    let w = s.me();
    let timer: Box<dyn PortTimer> = p.timer(Arc::new(move || {
        if let Some(s) = w.upgrade() {
            s.timer_body();
        }
    }));
    let mut cursor = s.bio.as_ref().map(|b| b.cache.cursor());
    let mut iter = 0u64;
    while !s.stop.load(Ordering::SeqCst) {
        check_current_affinity(&s.v, &s.ops, Some(CpuMask::one(cpu)));
        match rng.below(100) {
            0..=29 => {
                let id = s.random_shared_item(rng.next_u64());
                s.begin(a, Op::queue_bound);
                s.queue_item(id, From::Task, rng.next_u64());
                s.end(a);
            }
            30..=37 => {
                let id = s.random_shared_item(rng.next_u64());
                s.begin(a, Op::cancel);
                s.cancel_item(id, rng.below(2) == 0);
                s.end(a);
            }
            38..=41 => {
                let id = s.random_shared_item(rng.next_u64());
                s.begin(a, Op::flush_work);
                s.flush_item(id);
                s.end(a);
            }
            42..=43 => s.flush_queue_op(a, &mut rng),
            44..=45 => s.disable_op(a, &mut rng),
            46..=53 => s.private_op(a, &mut rng),
            54..=63 => s.kthread_op(a, &mut rng, &mut own),
            64..=68 => s.tasklet_op(a, &mut rng),
            69..=71 => {
                if let Some(irq) = &s.irq {
                    if rng.below(40) == 0 {
                        s.begin(a, Op::irq_request);
                        irq.cycle(&s.v, &s.ops);
                    } else if !irq.cycling.load(Ordering::SeqCst) {
                        s.begin(a, Op::irq_fire);
                        irq.line.fire();
                        s.ops.inc(Op::irq_fire);
                    }
                    s.end(a);
                }
            }
            72..=83 => s.bio_op(a, &mut rng, &mut cursor),
            84 => s.wq_alloc_op(a, &mut rng),
            _ => {}
        }
        if !timer.is_pending() && rng.below(2) == 0 {
            timer.arm(p.now_ns() + rng.below(2_000_000), Some(s.online_cpu(rng.next_u64())));
        }
        iter += 1;
        if iter.is_multiple_of(8) {
            kthread::msleep(1);
        } else {
            p.cond_resched();
        }
    }
    timer.cancel_sync();
    for o in own.drain(..) {
        s.stop_owned(a, o);
    }
    s.actors_done.fetch_add(1, Ordering::SeqCst);
    0
}

/// Page-sized DMA buffers held to make memory scarce; named in the
/// out-of-memory report.
struct Hog {
    bufs: Vec<BlockBuf>,
    held: Arc<AtomicU64>,
    user: usize,
}

impl Hog {
    fn new() -> Hog {
        let held = Arc::new(AtomicU64::new(0));
        let h = held.clone();
        let user = mm::register_user("torture hog", move || h.load(Ordering::Relaxed));
        Hog { bufs: Vec::new(), held, user }
    }

    /// Take pages while `more()` says so; the first error, if any.
    fn take_while(&mut self, mut more: impl FnMut(usize) -> bool) -> Option<kport::Error> {
        let p = port();
        let mut n = 0;
        while more(n) {
            match BlockBuf::new(PAGE_SIZE) {
                Ok(b) => self.bufs.push(b),
                Err(e) => return Some(e),
            }
            n += 1;
            self.held.store(self.bufs.len() as u64, Ordering::Relaxed);
            if n % 32 == 0 {
                p.yield_now();
            }
        }
        None
    }

    fn release_to(&mut self, keep: usize) {
        self.bufs.truncate(keep);
        self.held.store(self.bufs.len() as u64, Ordering::Relaxed);
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        mm::unregister_user(self.user);
        self.bufs.clear();
    }
}

impl Shared {
    fn hotplug_op(&self, rng: &mut Rng, c_idx: usize) {
        let p = port();
        let h = kport::harness::harness();
        let n = self.cpus();
        let c = rng.below(n as u64) as usize;
        let online = p.online_mask().and(CpuMask::first(n));
        // EINVAL: a bad, the last, an online (for cpu_up) or an offline
        // (for cpu_down) CPU; EBUSY: a hot-plug implementation that cannot
        // take this CPU down now. Both are counted, not failed.
        let refused = |e: kport::Error, op: Op| {
            if e.errno == EINVAL || e.errno == EBUSY {
                self.ops.inc(Op::cpu_refused);
            } else {
                self.errno(op, e, &[]);
            }
        };
        if online.contains(c) && online.count() >= 2 && rng.below(10) != 0 {
            self.begin(c_idx, Op::cpu_down);
            match h.cpu_down(c) {
                Ok(()) => self.ops.inc(Op::cpu_down),
                Err(e) => refused(e, Op::cpu_down),
            }
        } else {
            // Up an offline CPU; now and then also an online one (EINVAL).
            self.begin(c_idx, Op::cpu_up);
            match h.cpu_up(c) {
                Ok(()) if online.contains(c) => self.v.record(Violation::BadErrno, Op::cpu_up as u64, 0, 4),
                Ok(()) => self.ops.inc(Op::cpu_up),
                Err(e) => refused(e, Op::cpu_up),
            }
        }
        self.end(c_idx);
    }

    fn pressure_round(&self, hog: &mut Hog, c_idx: usize) {
        self.begin(c_idx, Op::pressure_rounds);
        // Clean pages for kswapd to reclaim: the pattern area through the cache.
        if let Some(b) = &self.bio {
            let mut buf = alloc::vec![0u8; 64 << 10];
            let mut at = 0;
            while at < PRESSURE_CACHE {
                let _ = b.cache.read(at, &mut buf);
                at += buf.len() as u64;
            }
        }
        let keep = hog.bufs.len();
        let w = mm::watermarks();
        let limit = (PRESSURE_MARGIN * 2 + (w.high - w.min)) as usize;
        // Below low: the allocator wakes kswapd (from the tick, or at once
        // in the slow path).
        let e = hog.take_while(|n| n < limit && mm::free_pages() >= w.low.saturating_sub(8));
        match e {
            Some(e) if e.errno == ENOMEM => self.ops.inc(Op::pressure_enomem),
            Some(e) => self.errno(Op::pressure_rounds, e, &[]),
            None => {}
        }
        if mm::free_pages() < w.low {
            self.below_low.fetch_add(1, Ordering::Relaxed);
        }
        kthread::msleep(20);
        hog.release_to(keep);
        self.ops.inc(Op::pressure_rounds);
        self.end(c_idx);
    }

    fn fault_phase(&self, rng: &mut Rng) {
        for a in [&FAIL_PAGE_ALLOC, &FAIL_MAKE_REQUEST, &FAIL_KTHREAD_CREATE] {
            let on = rng.below(2) == 0;
            let _ = a.probability.set(if on { i64::from(self.fault_pct) } else { 0 });
        }
        self.ops.inc(Op::fault_phases);
    }
}

/// Can this port make memory pressure (watermarks and DMA buffers)?
fn pressure_possible() -> bool {
    mm::active() && port().device_bus().is_some() && drivers::vmscan::kswapd().is_some()
}

/// The controller: CPUs offline and online, memory pressure, fault phases.
fn controller(s: Arc<Shared>, c_idx: usize, seed: u64) -> i32 {
    let p = port();
    let mut rng = Rng::new(seed, "torture-controller");
    let n = s.cpus();
    let pressure = pressure_possible();
    let mut hog = Hog::new();
    let wakeups0 = mm::stats().kswapd_wakeups;
    if pressure {
        // The baseline: hold memory down to `high` plus a margin for the
        // whole run, so each round has little to take.
        s.begin(c_idx, Op::pressure_rounds);
        let w = mm::watermarks();
        let floor = w.high + PRESSURE_MARGIN;
        if let Some(e) = hog.take_while(|_| mm::free_pages() > floor && !s.stop.load(Ordering::Relaxed)) {
            s.errno(Op::pressure_rounds, e, &[ENOMEM]);
        }
        s.end(c_idx);
    }
    let now = p.now_ns();
    let (mut next_hotplug, mut next_pressure, mut next_fault) = (now, now + 500_000_000, now);
    while !s.stop.load(Ordering::SeqCst) {
        let now = p.now_ns();
        if n > 1 && now >= next_hotplug {
            s.hotplug_op(&mut rng, c_idx);
            next_hotplug = now + 100_000_000 + rng.below(400_000_000);
        }
        if pressure && now >= next_pressure {
            s.pressure_round(&mut hog, c_idx);
            next_pressure = p.now_ns() + 1_000_000_000 + rng.below(2_000_000_000);
        }
        if s.fault_pct > 0 && now >= next_fault {
            s.fault_phase(&mut rng);
            next_fault = now + 200_000_000 + rng.below(800_000_000);
        }
        kthread::msleep(20);
    }
    fault::reset_all();
    let h = kport::harness::harness();
    for c in 0..n {
        if !p.online_mask().contains(c) {
            s.begin(c_idx, Op::cpu_up);
            match h.cpu_up(c) {
                Ok(()) => s.ops.inc(Op::cpu_up),
                Err(e) => s.v.record(Violation::Teardown, 4, e.errno as u64, c as u64),
            }
            s.end(c_idx);
        }
    }
    drop(hog);
    let woke = mm::stats().kswapd_wakeups - wakeups0;
    s.ops.add(Op::kswapd_wakeups, woke);
    let below = s.below_low.load(Ordering::Relaxed);
    if below > 0 && woke == 0 {
        s.v.record(Violation::KswapdNotWoken, below, 0, 0);
    }
    s.actors_done.fetch_add(1, Ordering::SeqCst);
    0
}

/// Memory in use at a moment (frames and heap bytes) and live threads.
struct MemMark {
    frames: u64,
    heap: u64,
    threads: u64,
}

fn mem_mark() -> Option<MemMark> {
    if !kport::harness::installed() {
        return None;
    }
    drivers::vmscan::drop_caches();
    let m = kport::harness::harness().mem_counters();
    (m.total_frames > 0).then(|| MemMark {
        frames: m.used_frames,
        heap: m.heap_used,
        threads: kthreadd::registry::rows().len() as u64,
    })
}

/// Memory back where it was, beside what new long-lived threads (a pool's
/// idle workers live on for minutes) and the pools' new bookkeeping hold.
fn check_memory(before: &MemMark, v: &Violations) {
    let mut last = (0, 0);
    let ok = crate::port_api::wait_for(5_000, || {
        drivers::vmscan::drop_caches();
        let m = kport::harness::harness().mem_counters();
        let new = (kthreadd::registry::rows().len() as u64).saturating_sub(before.threads);
        last = (m.used_frames, m.heap_used);
        m.used_frames <= before.frames + 256 + new * 24 && m.heap_used <= before.heap + (1 << 20) + new * (96 << 10)
    });
    if !ok {
        v.record(Violation::Leak, last.0.saturating_sub(before.frames), last.1.saturating_sub(before.heap), 0);
    }
}

/// Everything quiet again: tasklets killed (their scheduled runs happen
/// first), every item flushed (a delayed one's timer fired now) until no
/// instance is left, every queue flushed.
fn quiesce(s: &Shared) {
    for (i, t) in s.tasklets.iter().enumerate() {
        if let Err(e) = t.kill() {
            s.v.record(Violation::Teardown, 2, e.errno as u64, i as u64);
        }
    }
    for _round in 0..50 {
        // BH items queue task items: them first.
        for id in s.bh.clone().chain(0..s.items.len()) {
            s.flush_item(id);
        }
        for q in s.queues.all() {
            let _ = q.flush();
        }
        if (0..s.items.len()).all(|id| s.track.is_settled(id) && !s.is_pending(id)) {
            return;
        }
        kthread::msleep(10);
    }
}

/// The figures line: `torture: everything seconds=… cpus=… <op>=… …
/// faults=… violations=…`.
fn figures(s: &Shared, secs: u64, faults: [u64; 3]) -> String {
    let mut line = format!("torture: everything seconds={secs} cpus={} fault_pct={}", s.cpus(), s.fault_pct);
    for op in Op::ALL {
        line.push_str(&format!(" {}={}", op.name(), s.ops.get(*op)));
    }
    let (q, st, c) = s.track.totals();
    line.push_str(&format!(" items_queued={q} items_ran={st} items_cancelled={c}"));
    line.push_str(&format!(
        " faults={} fault_page_alloc={} fault_make_request={} fault_kthread_create={}",
        faults.iter().sum::<u64>(),
        faults[0],
        faults[1],
        faults[2]
    ));
    line.push_str(&format!(" violations={}", s.v.count()));
    line
}

fn op_name(a: u64) -> &'static str {
    Op::ALL.get(a as usize).map_or("?", |o| o.name())
}

/// The case (see the module documentation).
pub fn run(ctx: &mut Ctx) -> Result<(), Failure> {
    let p = port();
    let n = p.cpu_count();
    let secs = ctx.args.torture_s.unwrap_or(super::DEFAULT_TORTURE_S);
    let fault_pct = ctx.args.torture_fault;
    let before = mem_mark();
    let v = Arc::new(Violations::new());
    let ops = Arc::new(Counters::new());
    let queues = Queues::new()?;
    let irq = IrqPart::start(&v, &ops)?;
    let bio = match crate::block::disk(ctx, "kblk-main") {
        Ok(dev) => Some(Bio::new(dev, n)?),
        Err(Failure::Skip(why)) => {
            crate::diag!("torture-note: no block I/O: {why}");
            None
        }
        Err(f) => return Err(f),
    };
    if !pressure_possible() {
        crate::diag!("torture-note: no memory pressure on this port (no watermarks, DMA memory or kswapd)");
    }
    if irq.is_none() {
        crate::diag!("torture-note: no test interrupt on this port: no threaded IRQs");
    }
    let s = build(Parts { actors: n, fault_pct, v: v.clone(), ops, queues, irq, bio, seed: ctx.seed });
    let injected0 = [FAIL_PAGE_ALLOC.injected(), FAIL_MAKE_REQUEST.injected(), FAIL_KTHREAD_CREATE.injected()];
    if fault_pct > 0 {
        fault::reset_all();
        for a in [&FAIL_PAGE_ALLOC, &FAIL_MAKE_REQUEST, &FAIL_KTHREAD_CREATE] {
            a.configure(1, 0, 0, -1).map_err(err("fault configure"))?;
            a.verbose.set(0).map_err(err("fault verbose"))?;
        }
        // Sleeping allocations are the only ones the subsystem makes.
        fault::FAIL_PAGE_ALLOC_IGNORE_GFP_WAIT.set(0).map_err(err("ignore_gfp_wait"))?;
    }
    let mut threads: Vec<Kthread> = Vec::new();
    for cpu in 0..n {
        let s2 = s.clone();
        let seed = ctx.seed;
        let k = kthread::create_on_cpu(move || actor(s2, cpu, cpu, seed), cpu, format_args!("tt-actor/{cpu}"))
            .map_err(err("create an actor"))?;
        threads.push(k);
    }
    let s2 = s.clone();
    let seed = ctx.seed;
    threads.push(
        Builder::new(format_args!("tt-ctl"), move || controller(s2, n, seed))
            .create()
            .map_err(err("create the controller"))?,
    );
    for t in &threads {
        t.wake();
    }
    let start = p.now_ns();
    let end = start + secs * 1_000_000_000;
    let mut next_progress = start + 30_000_000_000;
    while p.now_ns() < end {
        kthread::msleep(200);
        watch(&s);
        if p.now_ns() >= next_progress {
            next_progress += 30_000_000_000;
            crate::diag!(
                "torture-progress: t={}s item_runs={} kthread_create={} cpu_down={} bio_write={} violations={}",
                (p.now_ns() - start) / 1_000_000_000,
                s.ops.get(Op::item_runs),
                s.ops.get(Op::kthread_create),
                s.ops.get(Op::cpu_down),
                s.ops.get(Op::bio_write),
                s.v.count()
            );
        }
    }
    s.stop.store(true, Ordering::SeqCst);
    let joined = crate::port_api::wait_for(STUCK_NS / 1_000_000 * 2, || {
        watch(&s);
        s.actors_done.load(Ordering::SeqCst) == n + 1
    });
    fault::reset_all();
    let injected = [
        FAIL_PAGE_ALLOC.injected() - injected0[0],
        FAIL_MAKE_REQUEST.injected() - injected0[1],
        FAIL_KTHREAD_CREATE.injected() - injected0[2],
    ];
    if !joined {
        crate::diag!("{}", figures(&s, secs, injected));
        for l in s.v.describe(&op_name) {
            crate::diag!("torture-violation: {l}");
        }
        return Err(Failure::Fail(String::from("the actors did not finish (a hang: see the violations above)")));
    }
    for t in &threads {
        if let Err(e) = t.stop() {
            v.record(Violation::Teardown, 5, e.errno as u64, t.id() as u64);
        }
    }
    quiesce(&s);
    s.tasklet_track.check_all(&s.v);
    s.track.check_all(&s.v);
    if let Some(irq) = &s.irq {
        irq.finish(&s.v);
    }
    if let Some(b) = &s.bio {
        finish_bio(b, n, &s.v);
    }
    for q in s.queues.all() {
        if let Err(e) = q.clone().destroy() {
            v.record(Violation::Teardown, 6, e.errno as u64, 0);
        }
    }
    let line = figures(&s, secs, injected);
    drop(threads);
    drop(s);
    for k in kthreadd::registry::all() {
        if k.full_name().contains("tt-") && !k.has_exited() {
            v.record(Violation::LeakedThread, k.id() as u64, 0, 0);
        }
    }
    if let Some(b) = &before {
        check_memory(b, &v);
    }
    // The figures again with the leak checks counted.
    let line = match line.rsplit_once(" violations=") {
        Some((head, _)) => format!("{head} violations={}", v.count()),
        None => line,
    };
    crate::diag!("{line}");
    for l in v.describe(&op_name) {
        crate::diag!("torture-violation: {l}");
    }
    if v.count() > 0 {
        return Err(Failure::Fail(format!("{} invariant violation(s) (listed above)", v.count())));
    }
    Ok(())
}

/// The case's watchdog over the actors: an operation that takes longer
/// than [`STUCK_NS`] is a hang; the first one also dumps every thread.
fn watch(s: &Shared) {
    let now = port().now_ns();
    for (i, b) in s.beats.iter().enumerate() {
        let op = b.op.load(Ordering::SeqCst);
        let since = b.since.load(Ordering::SeqCst);
        if op != 0 && now.saturating_sub(since) > STUCK_NS && !b.reported.swap(true, Ordering::SeqCst) {
            let first = s.v.kept_of(Violation::Hang) == 0;
            s.v.record(Violation::Hang, i as u64, (op - 1) as u64, (now - since) / 1_000_000_000);
            crate::diag!(
                "torture-note: actor {i} stuck in {} for {} s",
                op_name((op - 1) as u64),
                (now - since) / 1_000_000_000
            );
            let waits_on = b.waits_on.load(Ordering::SeqCst);
            if let Some(k) = (waits_on != 0).then(|| kthreadd::registry::find(waits_on)).flatten() {
                crate::diag!(
                    "torture-note: actor {i} waits for thread {waits_on} [{}]: state {} wchan {} cpu {} started {} exited {} parked {}",
                    k.comm(),
                    k.state().letter(),
                    k.task().wait_channel(),
                    k.cpu(),
                    k.has_started(),
                    k.has_exited(),
                    k.is_parked()
                );
            }
            if first {
                kthreadd::sysrq::show_state(true);
            }
        }
    }
}

/// The end of the block I/O: with injection off, everything synced, the
/// disk holds each slice's shadow (read past the cache), and the runner
/// is asked to check the image too.
fn finish_bio(b: &Bio, actors: usize, v: &Violations) {
    let mut cursor = b.cache.cursor();
    let mut synced = false;
    for _ in 0..3 {
        // An error the flusher met earlier is reported once per cursor.
        if b.cache.sync(&mut cursor).is_ok() {
            synced = true;
            break;
        }
    }
    if !synced {
        v.record(Violation::Teardown, 7, EIO as u64, 0);
        return;
    }
    for a in 0..actors {
        let start = Bio::slice_start(a);
        let sector = start / SECTOR_SIZE as u64;
        match b.dev.read(sector, BIO_SLICE as usize) {
            Ok(buf) => {
                let sh = b.shadow[a].lock();
                let got = buf.as_slice();
                if let Some(k) = (0..sh.len()).find(|&k| got[k] != sh[k]) {
                    v.record(Violation::Data, start + k as u64, got[k] as u64, sh[k] as u64);
                }
                let want: Vec<u8> = sh.clone();
                drop(sh);
                crate::block::image_check("kblk-main", sector, &want);
            }
            Err(e) => v.record(Violation::Teardown, 8, e.errno as u64, a as u64),
        }
    }
}
