//! Workqueues and pool workqueues (Linux `struct workqueue_struct`,
//! `struct pool_workqueue`, `queue_work_on`, `flush_work`,
//! `__flush_workqueue`, `drain_workqueue`, `destroy_workqueue`,
//! `cancel_work_sync`, `mod_delayed_work_on`, `rescuer_thread`).

use alloc::borrow::Cow;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kport::sync::atomic::spin_loop;
use kport::sync::{Completion, LockedBy, LockedRef, Mutex, SpinLock, WaitQueue};
use kport::trace;
use kport::{AffinityScope, CpuMask, EINVAL, ENOMEM, EPERM, ESRCH, Error, Priority, Result, might_sleep, port};
use kthreadd::kthread::{self, Builder, Kthread};

use crate::pool::{self, Entry, Guard, Pool, PoolState, Worker, wf};
use crate::stats::{PwqStat, PwqStats};
use crate::work::{DelayedWork, NO_POOL, Work, WorkInner};
use crate::{DRAIN_WARN_AFTER, NR_COLORS, SystemWq, WQ_DFL_ACTIVE, WQ_MAX_ACTIVE, WqFlags};

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue was destroyed (`ESRCH`).
    Destroyed,
    /// The queue is draining or being destroyed and the caller is not one
    /// of its own items (`EPERM`).
    Draining,
    /// The CPU does not exist (`EINVAL`).
    BadCpu,
}

impl From<QueueError> for Error {
    fn from(e: QueueError) -> Error {
        Error::new(match e {
            QueueError::Destroyed => ESRCH,
            QueueError::Draining => EPERM,
            QueueError::BadCpu => EINVAL,
        })
    }
}

/// The attributes of an unbound queue (Linux `struct workqueue_attrs`,
/// set with `apply_workqueue_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WqAttrs {
    /// Items run in high-priority pools (Linux: the attrs' nice value).
    pub highpri: bool,
    /// The CPUs items may run on.
    pub cpumask: CpuMask,
    /// How the CPUs are grouped into pods; an item runs in the pool of the
    /// pod of the CPU that queued it (Linux's default scope is `cache`).
    pub scope: AffinityScope,
    /// Strict: a pod's workers run only on the pod's CPUs. Not strict
    /// (Linux's default): they may run on any CPU of `cpumask`; the pod
    /// still decides which pool, and so which workers, take the item.
    pub strict: bool,
}

impl WqAttrs {
    /// Linux's defaults for a queue of `flags` over `cpumask`.
    pub fn default_for(flags: WqFlags, cpumask: CpuMask) -> WqAttrs {
        WqAttrs { highpri: flags.contains(WqFlags::HIGHPRI), cpumask, scope: AffinityScope::Cache, strict: false }
    }
}

/// An unbound queue's pwqs.
pub(crate) struct UnboundPwqs {
    /// The attributes they were made for.
    pub(crate) attrs: WqAttrs,
    /// The pwq an item queued from each CPU goes to (its pod's).
    pub(crate) by_cpu: Vec<Arc<Pwq>>,
    /// Every pwq the queue ever had, current ones first: old ones still
    /// run what was queued on them, and keep their statistics.
    pub(crate) all: Vec<Arc<Pwq>>,
}

/// A pool workqueue's counters, in a [`LockedBy`] cell of its pool's lock
/// (every field `L:`).
pub(crate) struct PwqState {
    /// L: instances on the pool's worklist or running.
    pub(crate) nr_active: usize,
    /// L: the queue's `max_active`.
    pub(crate) max_active: usize,
    /// L: instances held back by `max_active` or a freeze.
    pub(crate) inactive: VecDeque<Entry>,
    /// L: instances in flight per flush colour.
    pub(crate) nr_in_flight: [usize; NR_COLORS],
    /// L: colour of newly queued instances.
    pub(crate) work_color: usize,
    /// L: the colour a flush waits to empty.
    pub(crate) flush_color: Option<usize>,
    /// L: held by a freeze.
    pub(crate) frozen: bool,
    /// L: an ordered queue's new pwq waiting for its predecessor to drain.
    pub(crate) plugged: bool,
}

impl PwqState {
    /// May another instance start (`max_active`, freeze, plug)?
    fn may_activate(&self) -> bool {
        self.nr_active < self.max_active && !self.frozen && !self.plugged
    }

    /// Nothing queued, held back or running through this pwq.
    fn is_empty(&self) -> bool {
        self.nr_in_flight.iter().all(|&n| n == 0) && self.inactive.is_empty()
    }
}

/// A queue's link to one pool (Linux `struct pool_workqueue`).
pub(crate) struct Pwq {
    /// I: its queue.
    pub(crate) wq: Weak<WqInner>,
    /// I: its pool.
    pub(crate) pool: Arc<Pool>,
    /// L: its counters, reachable only with `pool`'s lock held.
    pub(crate) st: LockedBy<PwqState>,
    /// A: statistics (counters only).
    pub(crate) stats: PwqStats,
    /// A: on its queue's mayday list (set by whoever adds it there, cleared
    /// by the rescuer that takes it off).
    pub(crate) mayday_queued: AtomicBool,
    /// A: the queue's instances in flight (queued, inactive, deferred or
    /// running), shared by its pwqs: raised before an instance is inserted,
    /// lowered when it leaves, so a chained requeue (raised by the running
    /// instance before it leaves) keeps it above zero and `drain` is exact.
    pub(crate) wq_in_flight: Arc<AtomicUsize>,
    /// I: the queue's flags.
    flags: WqFlags,
    /// A: an ordered queue's pwq that replaced this one (`apply_attrs`):
    /// plugged until this one has nothing in flight.
    successor: spin::Once<Arc<Pwq>>,
    /// A: this pwq was replaced by `apply_attrs` (it only drains now).
    replaced: AtomicBool,
}

impl Pwq {
    pub(crate) fn wq_flags(&self) -> WqFlags {
        self.flags
    }

    /// An instance is about to be inserted through this pwq: count it in
    /// its queue's in-flight count.
    fn in_flight_inc(&self) {
        self.wq_in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// An instance left this pwq (ran, or was cancelled).
    fn in_flight_dec(&self) {
        self.wq_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Instances queued, inactive, deferred or running, on every queue: the
/// pwqs' own counts (`nr_in_flight`), summed pool by pool under each pool's
/// lock, as Linux's debugging dumps read them. Exact whenever nothing is
/// being queued or retired, which is when the leak check asks; no counter
/// of its own costs the queueing and running paths anything.
pub(crate) fn queued_in_flight() -> usize {
    let mut n = 0;
    for pool in pool::all_pools() {
        let mut g = pool.st.lock();
        let (st, held) = g.split();
        // A pwq dropped here (its last instance just ended) takes no lock.
        for pwq in st.pwqs.iter().filter_map(Weak::upgrade) {
            n += pwq.st.borrow_mut(held).nr_in_flight.iter().sum::<usize>();
        }
    }
    n
}

/// Queues with instances in flight, by name, with how many (in creation
/// order).
pub(crate) fn busy_queues() -> Vec<(String, usize)> {
    all_wqs().iter().map(|w| (w.name.clone(), w.in_flight.load(Ordering::Acquire))).filter(|(_, n)| *n > 0).collect()
}

/// A workqueue's shared state (Linux `struct workqueue_struct`).
pub(crate) struct WqInner {
    /// I: its name.
    pub(crate) name: String,
    /// I: its name, made `'static` for trace records.
    pub(crate) trace_name: &'static str,
    /// I: its flags.
    pub(crate) flags: WqFlags,
    /// A: its `max_active` (changed by `set_max_active`, which then updates
    /// each pwq's copy under its pool lock).
    pub(crate) max_active: AtomicUsize,
    /// I: a bound queue's pwqs, one per CPU (empty for an unbound queue).
    pub(crate) bound: Vec<Arc<Pwq>>,
    /// An unbound queue's attributes and pwqs (a leaf lock: only read and
    /// swapped, never held while another lock is taken).
    pub(crate) unbound: SpinLock<UnboundPwqs>,
    /// Q-like: serializes `apply_attrs` (sleeps while it makes pools).
    attrs_mutex: Mutex<()>,
    /// A: destroyed: refuse everything (set once, by `destroy`).
    pub(crate) destroyed: AtomicBool,
    /// A: drains in progress: only the queue's own items may queue.
    pub(crate) draining: AtomicUsize,
    /// A: instances in flight on the queue (see `Pwq::wq_in_flight`, a
    /// handle on this counter).
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// Q: serializes flushes of this queue.
    flush_mutex: Mutex<()>,
    /// A flusher sleeps here until `flush_pending` reaches zero.
    flush_wq: WaitQueue,
    /// A: pwqs the running flush still waits for (biased while it counts).
    flush_pending: AtomicUsize,
    /// M: pwqs whose pool called for the rescuer.
    maydays: SpinLock<VecDeque<Arc<Pwq>>>,
    /// The rescuer sleeps here until `maydays` is not empty.
    mayday_wq: WaitQueue,
    /// I: the rescuer of a `MEM_RECLAIM` queue.
    rescuer: spin::Once<(Kthread, Arc<Worker>)>,
}

/// A workqueue (Linux `struct workqueue_struct *`). Clones refer to the
/// same queue.
#[derive(Clone)]
pub struct Workqueue(pub(crate) Arc<WqInner>);

impl fmt::Debug for Workqueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Workqueue({})", self.0.name)
    }
}

/// Every queue, for freezing and reports.
static WQS: SpinLock<Vec<Weak<WqInner>>> = SpinLock::ranked("workqueues", crate::RANK_LEAF, Vec::new());
static FROZEN: AtomicBool = AtomicBool::new(false);
static SYSTEM: spin::Once<Vec<Workqueue>> = spin::Once::new();

/// Forget every queue (loom models only).
#[cfg(feature = "loom")]
pub(crate) fn model_reset() {
    WQS.lock().clear();
}

pub(crate) fn all_wqs() -> Vec<Arc<WqInner>> {
    WQS.lock().iter().filter_map(|w| w.upgrade()).collect()
}

/// Do the system queues exist (after [`crate::init`])?
pub fn started() -> bool {
    SYSTEM.get().is_some()
}

pub(crate) fn system(which: SystemWq) -> &'static Workqueue {
    &SYSTEM.get().expect("workqueue::init not called")[which as usize]
}

pub(crate) fn init_system_queues() -> Result<()> {
    if SYSTEM.get().is_some() {
        return Ok(());
    }
    let v = SystemWq::ALL
        .iter()
        .map(|q| {
            let (flags, max_active) = q.params();
            Workqueue::new(q.name(), flags, max_active)
        })
        .collect::<Result<Vec<_>>>()?;
    SYSTEM.call_once(|| v);
    Ok(())
}

fn warn(msg: &str) {
    kport::warn::warn(&format!("workqueue: {msg}"));
}

/// The worker the caller is, if it is one (for chained queueing and
/// self-flush checks).
fn current_worker() -> Option<Arc<Worker>> {
    kthread::data()?.downcast::<Weak<Worker>>().ok()?.upgrade()
}

/// Is the caller running an item of `wq`?
fn in_own_item(wq: &Arc<WqInner>) -> bool {
    current_worker().is_some_and(|w| w.current_wq.load(Ordering::Acquire) == Arc::as_ptr(wq) as *const u8 as usize)
}

/// Name of the item the calling worker runs, for reports.
fn current_item_name(w: &Worker) -> &'static str {
    w.pool
        .as_ref()
        .and_then(|p| {
            let st = p.st.lock();
            st.busy.iter().find(|b| core::ptr::eq(&*b.worker, w)).map(|b| b.cur.work.name)
        })
        .unwrap_or("an item")
}

/// An active item left a pwq (ran, or was cancelled): update `max_active`
/// and the flush counts (Linux `pwq_dec_nr_in_flight`). Pool lock held.
///
/// `kick`: wake a worker for what this activates. False only from a
/// worker's own end of an item, when that worker goes on with the worklist
/// itself (Linux activates there without a wake-up): waking a second
/// worker for each item of an ordered queue made two CPUs take turns at
/// its items, each turn a cross-CPU wake-up and a contended pool lock.
///
/// Return: the successor to unplug when this was the last instance of an
/// ordered queue's replaced pwq (the caller unplugs it with [`unplug`]
/// once it has released this pool's lock: two pool locks are never held
/// together).
#[must_use]
#[inline]
pub(crate) fn pwq_done(pool: &Pool, g: &mut Guard<'_>, pwq: &Arc<Pwq>, color: usize, kick: bool) -> Option<Arc<Pwq>> {
    let (st, held) = g.split();
    let mut ps = pwq.st.borrow_mut(held);
    ps.nr_active -= 1;
    activate_inactive(pool, st, &mut ps, kick);
    retire(pwq, ps, color)
}

/// An instance of flush color `color` left `pwq`, active or inactive: the
/// in-flight counts and the flush color (the rest of Linux's
/// `pwq_dec_nr_in_flight`). Takes the pwq's state, borrowed under the pool
/// lock, and ends the borrow. Return: as [`pwq_done`]'s.
#[inline]
fn retire(pwq: &Arc<Pwq>, mut ps: LockedRef<'_, PwqState>, color: usize) -> Option<Arc<Pwq>> {
    pwq.in_flight_dec();
    ps.nr_in_flight[color] -= 1;
    let drained = pwq.replaced.load(Ordering::Acquire) && ps.is_empty();
    let flushed = ps.flush_color == Some(color) && ps.nr_in_flight[color] == 0;
    if flushed {
        ps.flush_color = None;
    }
    drop(ps);
    if flushed
        && let Some(wq) = pwq.wq.upgrade()
        && wq.flush_pending.fetch_sub(1, Ordering::AcqRel) == 1
    {
        wq.flush_wq.wake_all();
    }
    if drained { pwq.successor.get().cloned() } else { None }
}

/// Move inactive entries to the worklist while `max_active` allows; with
/// `kick`, wake a worker for them.
#[inline]
fn activate_inactive(pool: &Pool, st: &mut PoolState, ps: &mut PwqState, kick: bool) {
    let mut moved = false;
    while ps.may_activate() {
        let Some(e) = ps.inactive.pop_front() else {
            pool::trim(&mut ps.inactive);
            break;
        };
        ps.nr_active += 1;
        if trace::on(trace::Event::WorkqueueActivateWork) {
            trace_activate(&e.work);
        }
        e.work.pool.store(pool.id, Ordering::Release);
        pool.push_work(st, e);
        moved = true;
    }
    if moved && kick {
        pool.kick(st);
    }
}

/// The `workqueue_queue_work` tracepoint: `req_cpu` is the CPU asked for
/// ([`trace::WORK_CPU_UNBOUND`] for none), `cpu` the pool's.
#[cold]
#[inline(never)]
fn trace_queue(wq: &WqInner, work: &Arc<WorkInner>, req_cpu: Option<usize>, cpu: Option<usize>) {
    let unbound = trace::WORK_CPU_UNBOUND;
    trace::emit(
        trace::Event::WorkqueueQueueWork,
        [
            Arc::as_ptr(work) as *const u8 as u64,
            req_cpu.map_or(unbound, |c| c as u64),
            cpu.map_or(unbound, |c| c as u64),
            0,
            0,
        ],
        work.name,
        wq.trace_name,
    );
}

/// The `workqueue_activate_work` tracepoint.
#[cold]
#[inline(never)]
fn trace_activate(work: &Arc<WorkInner>) {
    trace::emit(
        trace::Event::WorkqueueActivateWork,
        [Arc::as_ptr(work) as *const u8 as u64, 0, 0, 0, 0],
        work.name,
        "",
    );
}

/// Queue an item whose pending bit the caller holds (Linux `__queue_work`).
/// On refusal the pending bit is released and a warning printed.
fn queue_claimed(
    wq: &Arc<WqInner>,
    cpu: Option<usize>,
    work: &Arc<WorkInner>,
    off: &IrqsOff,
) -> core::result::Result<(), QueueError> {
    {
        let refused = if wq.destroyed.load(Ordering::Acquire) {
            Some(QueueError::Destroyed)
        } else if wq.draining.load(Ordering::Acquire) > 0 && !in_own_item(wq) {
            Some(QueueError::Draining)
        } else {
            None
        };
        if let Some(e) = refused {
            work.release();
            warn(&format!("{} refused on '{}': queue {:?}", work.name, wq.name, e));
            return Err(e);
        }
    }
    let p = port();
    let c = cpu.unwrap_or_else(kport::local::cpu_id);
    // A bound queue's pwq is borrowed from the queue (no reference count
    // taken per item); an unbound one is cloned out of its lock.
    let mut pwq: Cow<'_, Arc<Pwq>> = if wq.flags.contains(WqFlags::UNBOUND) {
        // The pod of the CPU it is queued from (or for).
        let u = wq.unbound.lock_in(off);
        match u.by_cpu.get(c).or(u.by_cpu.first()) {
            Some(x) => Cow::Owned(x.clone()),
            None => {
                drop(u);
                work.release();
                warn(&format!("{} refused on '{}': no pool", work.name, wq.name));
                return Err(QueueError::BadCpu);
            }
        }
    } else {
        match wq.bound.get(c) {
            Some(x) => Cow::Borrowed(x),
            None => {
                work.release();
                warn(&format!("{} refused on '{}': no CPU {c}", work.name, wq.name));
                return Err(QueueError::BadCpu);
            }
        }
    };
    // Non-reentrancy: still running on another pool for this queue? Then
    // it goes there, behind the running instance.
    let mut redirected = false;
    let (last, _) = work.pool_id();
    if last != NO_POOL
        && last != pwq.pool.id
        && !wq.flags.contains(WqFlags::ORDERED)
        && let Some(lp) = pool::pool_by_id(last)
    {
        let st = lp.st.lock_in(off);
        if let Some((_, running_for)) = lp.find_busy(&st, work)
            && running_for.wq.as_ptr() == Arc::as_ptr(wq)
        {
            pwq = Cow::Owned(running_for);
            redirected = true;
        }
    }
    pwq.in_flight_inc();
    loop {
        let pool = &pwq.pool;
        let mut g = pool.st.lock_in(off);
        // The queue's attributes changed since the pwq was picked: take the
        // new one. Checked under the pool lock, so an ordered queue's new
        // pwq is never unplugged while an item is still going into the old
        // one (apply_attrs marks the old one before it looks, under this
        // lock, whether it is empty). A non-reentrancy redirect stays with
        // the pwq the item runs on.
        if !redirected && pwq.replaced.load(Ordering::Acquire) {
            drop(g);
            let u = wq.unbound.lock_in(off);
            if let Some(x) = u.by_cpu.get(c).or(u.by_cpu.first()) {
                pwq = Cow::Owned(x.clone());
            }
            continue;
        }
        let (st, held) = g.split();
        let mut ps = pwq.st.borrow_mut(held);
        let color = ps.work_color;
        ps.nr_in_flight[color] += 1;
        work.pool.store(pool.id, Ordering::Release);
        let queued_ns = if trace::any(trace::hist::HIST_WORKQUEUE) { p.now_ns().max(1) } else { 0 };
        let e = Entry { pwq: Arc::clone(&pwq), work: work.clone(), color, seq: work.pending_seq(), queued_ns };
        if trace::on(trace::Event::WorkqueueQueueWork) {
            trace_queue(wq, work, cpu, pool.cpu);
        }
        if ps.may_activate() {
            ps.nr_active += 1;
            if trace::on(trace::Event::WorkqueueActivateWork) {
                trace_activate(work);
            }
            drop(ps);
            pool.push_work(st, e);
            pool.kick(st);
        } else {
            work.pool.store(pool.id | crate::work::POOL_INACTIVE, Ordering::Release);
            ps.inactive.push_back(e);
        }
        break;
    }
    work.notify_grabbers();
    Ok(())
}

/// The delayed item's timer fired: queue it where it was aimed.
///
/// Context: softirq, with interrupts off (an IRQ-safe timer).
pub(crate) fn delayed_timer_fired(work: &Arc<WorkInner>) {
    let target = work.delayed.as_ref().and_then(|d| d.take_target());
    match target.and_then(|(wq, cpu)| wq.upgrade().map(|wq| (wq, cpu))) {
        Some((wq, cpu)) => {
            let off = IrqsOff::enter();
            let _ = queue_claimed(&wq, cpu, work, &off);
        }
        None => {
            work.release();
            warn(&format!("delayed {} fired after its queue went away: dropped", work.name));
        }
    }
}

/// Send a pwq with pending items to its queue's rescuer.
pub(crate) fn send_mayday(pwq: &Arc<Pwq>) {
    let Some(wq) = pwq.wq.upgrade() else { return };
    if wq.rescuer.get().is_none() {
        return;
    }
    if !pwq.mayday_queued.swap(true, Ordering::AcqRel) {
        pwq.stats.inc(PwqStat::Mayday);
        wq.maydays.lock().push_back(pwq.clone());
        wq.mayday_wq.wake_all();
    }
}

/// Remove the pending instance of `work` from `pool` if it is on one of
/// its lists: the worklist, a worker's scheduled list (an instance handed
/// to the worker that runs the item; a rescuer's while it serves the
/// pool), or a pwq's inactive list.
/// Returns its number. Pool lock taken here.
fn take_from_pool(pool: &Arc<Pool>, work: &Arc<WorkInner>) -> Option<u64> {
    let (seq, successor) = take_from_pool_locked(pool, work)?;
    if let Some(s) = successor {
        unplug(&s);
    }
    Some(seq)
}

/// [`take_from_pool`] under the pool lock; also the successor pwq to
/// unplug (see [`pwq_done`]).
fn take_from_pool_locked(pool: &Arc<Pool>, work: &Arc<WorkInner>) -> Option<(u64, Option<Arc<Pwq>>)> {
    let mut st = pool.st.lock();
    // An item put on an inactive list is most likely still there; the
    // others are on the worklist or a worker's list. Each list is searched
    // from its end: an item cancelled soon after it was queued (a re-arm, a
    // probe) is found at once however long the list ahead of it.
    let (_, inactive) = work.pool_id();
    if inactive && let Some(r) = take_inactive(&st, work) {
        return Some(r);
    }
    if let Some(i) = st.worklist.iter().rposition(|e| e.is_work(work)) {
        let e = st.worklist.remove(i).expect("index from rposition");
        let succ = pwq_done(pool, &mut st, &e.pwq, e.color, true);
        return Some((e.seq, succ));
    }
    let handed = {
        let (pool_st, held) = st.split();
        let rescuers = pool_st.busy.iter().map(|b| &b.worker).filter(|w| w.pool.is_none());
        pool_st.workers.iter().chain(rescuers).find_map(|w| {
            let mut ws = w.st.borrow_mut(held);
            let i = ws.scheduled.iter().position(|e| e.is_work(work))?;
            ws.scheduled.remove(i)
        })
    };
    if let Some(e) = handed {
        let succ = pwq_done(pool, &mut st, &e.pwq, e.color, true);
        return Some((e.seq, succ));
    }
    if inactive { None } else { take_inactive(&st, work) }
}

/// [`take_from_pool_locked`] on the inactive lists of the pool's pwqs
/// (the pool lock held by `st`).
fn take_inactive(st: &Guard<'_>, work: &Arc<WorkInner>) -> Option<(u64, Option<Arc<Pwq>>)> {
    let (pwq, i) = st.pwqs.iter().filter_map(Weak::upgrade).find_map(|pwq| {
        let i = pwq.st.borrow_mut(st.held()).inactive.iter().rposition(|e| e.is_work(work))?;
        Some((pwq, i))
    })?;
    let mut ps = pwq.st.borrow_mut(st.held());
    let e = ps.inactive.remove(i).expect("index from rposition");
    Some((e.seq, retire(&pwq, ps, e.color)))
}

/// Remove the pending instance of `work` from the item's deferred list
/// (it waits there for a run elsewhere to end). Returns its number.
fn take_deferred(work: &Arc<WorkInner>) -> Option<u64> {
    let pool = work.run.lock().deferred()?.iter().find(|e| e.is_work(work)).map(|e| e.pwq.pool.clone())?;
    let mut st = pool.st.lock();
    let e = {
        let mut r = work.run.lock();
        let d = r.deferred()?;
        let i = d.iter().position(|e| e.is_work(work) && Arc::ptr_eq(&e.pwq.pool, &pool))?;
        d.remove(i)?
    };
    let succ = pwq_done(&pool, &mut st, &e.pwq, e.color, true);
    drop(st);
    if let Some(s) = succ {
        unplug(&s);
    }
    Some(e.seq)
}

/// Interrupts and preemption off on the calling CPU for as long as it
/// holds an item's pending bit without the item being where a canceller
/// can find it (Linux's `local_irq_save` around `queue_work_on`'s claim and
/// `__queue_work`, and around `try_to_grab_pending` and what follows it):
/// an interrupt or a softirq on this CPU that cancelled the item meanwhile
/// would otherwise spin for ever on a holder that cannot run. The pool
/// and queue locks taken inside it are taken with `lock_in`, which skips
/// the port's section calls the section already made.
pub(crate) type IrqsOff = kport::sync::IrqSection;

/// What [`grab_pending`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grab {
    /// An instance was pending and is taken off: the caller holds the bit.
    Pending,
    /// Nothing was pending: the caller holds the bit.
    Idle,
    /// (Atomic callers only.) A `cancel_sync` or `disable_sync` holds the
    /// item while it waits for a running instance: nothing is pending, and
    /// the caller does not hold the bit (Linux's `-ENOENT` for an item being
    /// cancelled).
    Canceling,
}

/// Take the pending instance of `work` off whatever holds it: its timer,
/// a worklist, a worker's scheduled list, an inactive list, or the item's
/// deferred list (Linux `try_to_grab_pending`). Returns what it found,
/// with interrupts and preemption off ([`IrqsOff`]): the caller holds the
/// pending bit (but for [`Grab::Canceling`]) until it releases it or queues
/// the item, and drops the guard after that. A removed instance counts as
/// ended for its flushers.
///
/// The instance can be out of reach for a moment: between a queuer's claim
/// and its insertion, between a run's end and the requeue of what waited
/// on it, in a timer callback, or held by another canceller. Every holder
/// keeps interrupts off over such a moment, so it is never one that an
/// atomic caller on the same CPU interrupted. A caller that may sleep
/// sleeps until the instance shows up or its bit is released (Linux waits
/// on the item the same way); an atomic caller spins over those short
/// windows, and returns [`Grab::Canceling`] at once when the holder is a
/// canceller waiting for a running instance (a wait of any length: had it
/// to spin, an interrupt on the CPU of that run would never end).
fn grab_pending(work: &Arc<WorkInner>) -> (Grab, IrqsOff) {
    let p = port();
    let mut waiting: Option<u32> = None;
    let found = loop {
        let off = IrqsOff::enter();
        if work.claim_bit() {
            break (Grab::Idle, off);
        }
        let g = work.pending_seq();
        if let Some(d) = &work.delayed
            && d.timer.cancel()
        {
            d.take_target();
            work.instance_cancelled(g);
            break (Grab::Pending, off);
        }
        if let Some(pool) = pool::pool_by_id(work.pool_id().0)
            && let Some(seq) = take_from_pool(&pool, work)
        {
            work.instance_cancelled(seq);
            break (Grab::Pending, off);
        }
        if let Some(seq) = take_deferred(work) {
            work.instance_cancelled(seq);
            break (Grab::Pending, off);
        }
        drop(off);
        if p.in_atomic() {
            if work.canceling.load(Ordering::SeqCst) > 0 {
                break (Grab::Canceling, IrqsOff::enter());
            }
            spin_loop();
            continue;
        }
        match waiting {
            // Register, then look once more: a change after the last look
            // and before the registration notified nobody.
            None => {
                work.grab_waiters.fetch_add(1, Ordering::SeqCst);
                waiting = Some(work.grab_events.load(Ordering::SeqCst));
            }
            Some(seen) => {
                crate::work::grab_queue(work).wait_event("cancel_grab", || {
                    work.grab_events.load(Ordering::SeqCst) != seen || !work.is_pending_seqcst()
                });
                waiting = Some(work.grab_events.load(Ordering::SeqCst));
            }
        }
    };
    if waiting.is_some() {
        work.grab_waiters.fetch_sub(1, Ordering::SeqCst);
    }
    found
}

/// Hold the bit `grab_pending` took while waiting for a running instance:
/// mark the item as being cancelled, then wait with interrupts on again.
fn wait_holding(work: &Arc<WorkInner>, off: IrqsOff, what: &str) {
    work.canceling.fetch_add(1, Ordering::SeqCst);
    drop(off);
    flush_work_inner(work, what);
    let _off = IrqsOff::enter();
    work.canceling.fetch_sub(1, Ordering::SeqCst);
    work.release();
}

/// Wait for the instance of `work` queued or running now (Linux
/// `flush_work`): true if it waited, false if the item was idle or that
/// instance had already ended. A delayed item whose
/// timer has not fired is not queued yet: false, as in Linux. A self-flush is
/// reported, not waited; `what` names the caller's API in that report.
#[inline]
fn flush_work_inner(work: &Arc<WorkInner>, what: &str) -> bool {
    // An idle item (never queued, or every instance over): no lock, as
    // Linux's `flush_work` of an item with no pool returns at once.
    if work.is_idle().is_some() {
        return false;
    }
    flush_work_busy(work, what)
}

/// [`flush_work_inner`] of an item that was not idle a moment ago.
#[inline(never)]
fn flush_work_busy(work: &Arc<WorkInner>, what: &str) -> bool {
    let (pending, seq) = work.pending_and_seq();
    let target = if pending {
        if work.delayed.as_ref().is_some_and(|d| d.has_target()) {
            return false;
        }
        seq
    } else {
        match work.running() {
            0 => return false,
            g => g,
        }
    };
    if work.ended.load(Ordering::Acquire) >= target {
        return false;
    }
    if let Some(w) = current_worker()
        && w.current_work.load(Ordering::Acquire) == Arc::as_ptr(work) as *const u8 as usize
    {
        // Linux waits here for the instance that is running the wait, so never
        // wakes; lockdep names it as recursive locking of the work's map.
        warn(&format!("deadlock: {} waits for itself ({what} from its own function); not waiting", work.name));
        port().dump_stack();
        return false;
    }
    let done = Arc::new(Completion::new());
    // `add_waiter` reads the ended count again once its bit is set.
    if !work.run.lock().add_waiter(target, done.clone(), &work.claim, &work.ended) {
        return false;
    }
    done.wait("flush_work");
    true
}

/// Cancel `work` and wait for a running instance (Linux
/// `__cancel_work_sync`); true if it was pending.
#[inline]
fn cancel_sync_inner(work: &Arc<WorkInner>, what: &str) -> bool {
    // Idle, and still idle after its ended count was read: at that moment
    // nothing was pending or running, so the cancel happened then, with
    // nothing to take or wait for.
    if let Some(w) = work.is_idle()
        && work.still(w)
    {
        return false;
    }
    cancel_sync_busy(work, what)
}

/// [`cancel_sync_inner`] of an item that was not idle a moment ago.
#[inline(never)]
fn cancel_sync_busy(work: &Arc<WorkInner>, what: &str) -> bool {
    work.disable.fetch_add(1, Ordering::AcqRel);
    // A caller that may sleep never gets Grab::Canceling.
    let (g, off) = grab_pending(work);
    wait_holding(work, off, what);
    work.disable.fetch_sub(1, Ordering::AcqRel);
    g == Grab::Pending
}

/// Most times an item can be disabled at once (Linux's 16-bit disable
/// count, `WORK_OFFQ_DISABLE_BITS`).
pub const WORK_DISABLE_MAX: u32 = (1 << 16) - 1;

/// Raise `work`'s disable count (Linux `work_offqd_disable`): false, with a
/// warning, at the maximum.
fn disable_count_up(work: &WorkInner) -> bool {
    let r = work.disable.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| (d < WORK_DISABLE_MAX).then_some(d + 1));
    if r.is_err() {
        warn(&format!("{}: disable count overflowed (limit {WORK_DISABLE_MAX}); not disabled again", work.name));
    }
    r.is_ok()
}

/// Disable `work` and cancel its pending instance; wait for a running one
/// if `sync` (Linux `disable_work` / `disable_work_sync`).
fn disable_inner(work: &Arc<WorkInner>, sync: bool) -> bool {
    disable_count_up(work);
    let (g, off) = grab_pending(work);
    match g {
        Grab::Canceling => {}
        _ if sync => wait_holding(work, off, "disable_work_sync"),
        _ => work.release(),
    }
    g == Grab::Pending
}

/// Lower `work`'s disable count (Linux `enable_work`): true if it reached
/// zero (the item can be queued again). Underflow is a warning.
fn enable_inner(work: &WorkInner) -> bool {
    match work.disable.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1)) {
        Ok(before) => before == 1,
        Err(_) => {
            warn(&format!("{}: enable without a matching disable (count underflowed); ignored", work.name));
            true
        }
    }
}

/// A new pool workqueue of a queue (`me`) on `pool`.
fn new_pwq(
    me: &Weak<WqInner>,
    pool: Arc<Pool>,
    flags: WqFlags,
    max_active: usize,
    frozen: bool,
    plugged: bool,
    in_flight: &Arc<AtomicUsize>,
) -> Arc<Pwq> {
    let pwq = Arc::new(Pwq {
        wq: me.clone(),
        st: LockedBy::new(
            &pool.st,
            PwqState {
                nr_active: 0,
                max_active,
                inactive: VecDeque::new(),
                nr_in_flight: [0; NR_COLORS],
                work_color: 0,
                flush_color: None,
                frozen,
                plugged,
            },
        ),
        pool,
        stats: PwqStats::new(),
        mayday_queued: AtomicBool::new(false),
        wq_in_flight: in_flight.clone(),
        flags,
        successor: spin::Once::new(),
        replaced: AtomicBool::new(false),
    });
    let mut st = pwq.pool.st.lock();
    st.pwqs.retain(|w| w.strong_count() > 0);
    st.pwqs.push(Arc::downgrade(&pwq));
    drop(st);
    pwq
}

/// The pools an unbound queue with `attrs` needs: for each CPU (possible
/// CPUs, so a CPU that comes online later has one too), the pool of its
/// pod (Linux `wq_calc_pod_cpumask` and `alloc_unbound_pwq`). An ordered
/// queue has one pool whatever the scope: its items must run one at a
/// time in order, which per-pod pools could not keep.
///
/// Context: may sleep (new pools get their first worker).
fn unbound_layout(attrs: &WqAttrs, flags: WqFlags) -> Result<Vec<Arc<Pool>>> {
    let n = port().cpu_count();
    let all = CpuMask::first(n);
    let pods = if flags.contains(WqFlags::ORDERED) { alloc::vec![all] } else { kport::pods(attrs.scope, all) };
    let mut by_cpu: Vec<Option<Arc<Pool>>> = alloc::vec![None; n];
    for pod in pods {
        // The pod's CPUs where items may run; a pod outside the mask falls
        // back to the whole mask (Linux uses the default pwq there).
        let mut serves = pod.and(attrs.cpumask);
        if serves.is_empty() {
            serves = attrs.cpumask;
        }
        let workers_on = if attrs.strict { serves } else { attrs.cpumask };
        let pool = pool::unbound_pool(attrs.highpri, workers_on, serves)?;
        for cpu in pod.iter() {
            by_cpu[cpu] = Some(pool.clone());
        }
    }
    by_cpu.into_iter().map(|p| p.ok_or(Error::new(EINVAL))).collect()
}

/// One pwq per distinct pool of `layout`: the table by CPU, and the
/// distinct pwqs.
fn pwqs_for_layout(
    layout: Vec<Arc<Pool>>,
    mut mk: impl FnMut(Arc<Pool>) -> Arc<Pwq>,
) -> (Vec<Arc<Pwq>>, Vec<Arc<Pwq>>) {
    let mut distinct: Vec<Arc<Pwq>> = Vec::new();
    let by_cpu = layout
        .into_iter()
        .map(|pool| match distinct.iter().find(|q| Arc::ptr_eq(&q.pool, &pool)) {
            Some(q) => q.clone(),
            None => {
                let q = mk(pool);
                distinct.push(q.clone());
                q
            }
        })
        .collect();
    (by_cpu, distinct)
}

/// Let an ordered queue's new pwq run once its predecessor is empty.
pub(crate) fn unplug(pwq: &Arc<Pwq>) {
    let mut g = pwq.pool.st.lock();
    let (st, held) = g.split();
    let mut ps = pwq.st.borrow_mut(held);
    if ps.plugged {
        ps.plugged = false;
        activate_inactive(&pwq.pool, st, &mut ps, true);
    }
}

impl WqInner {
    /// Every pwq of the queue (an unbound queue's old ones included).
    pub(crate) fn all_pwqs(&self) -> Vec<Arc<Pwq>> {
        if self.flags.contains(WqFlags::UNBOUND) { self.unbound.lock().all.clone() } else { self.bound.clone() }
    }
}

fn clamp_max_active(name: &str, n: usize) -> usize {
    match n {
        0 => WQ_DFL_ACTIVE,
        n if n > WQ_MAX_ACTIVE => {
            warn(&format!("max_active {n} for '{name}' out of range, using {WQ_MAX_ACTIVE}"));
            WQ_MAX_ACTIVE
        }
        n => n,
    }
}

impl Workqueue {
    /// Create a queue (Linux `alloc_workqueue`). `max_active` 0 means the
    /// default ([`WQ_DFL_ACTIVE`]); larger than [`WQ_MAX_ACTIVE`] is
    /// clamped with a warning. `ORDERED` implies `UNBOUND` and one item at a
    /// time. `MEM_RECLAIM` gives the queue a rescuer thread.
    ///
    /// Context: may sleep (a new unbound pool gets its first worker; a `MEM_RECLAIM` queue its rescuer). Return: the queue, `EINVAL` for an empty CPU mask, `ENOMEM` when a thread cannot be made.
    #[track_caller]
    pub fn new(name: &str, flags: WqFlags, max_active: usize) -> Result<Workqueue> {
        might_sleep();
        Self::with_mask(name, flags, max_active, CpuMask::ALL)
    }

    /// An ordered queue: items run one at a time in queue order (Linux
    /// `alloc_ordered_workqueue`).
    ///
    /// Context: may sleep. Return: as [`Workqueue::new`].
    #[track_caller]
    pub fn ordered(name: &str, flags: WqFlags) -> Result<Workqueue> {
        might_sleep();
        Self::new(name, flags | WqFlags::ORDERED | WqFlags::UNBOUND, 1)
    }

    /// A queue whose unbound items run only on `mask` (the unbound pool is
    /// shared by every queue with the same priority and mask).
    ///
    /// Context: may sleep. Return: as [`Workqueue::new`].
    #[track_caller]
    pub fn with_mask(name: &str, mut flags: WqFlags, max_active: usize, mask: CpuMask) -> Result<Workqueue> {
        might_sleep();
        let p = port();
        if flags.contains(WqFlags::BH) && (!(WqFlags::BH | WqFlags::HIGHPRI).contains(flags) || max_active != 0) {
            warn(&format!(
                "'{name}': a BH queue takes no flag but HIGHPRI and max_active 0 (got {flags:?}, {max_active})"
            ));
            return Err(Error::new(EINVAL));
        }
        let mut max_active = clamp_max_active(name, max_active);
        if flags.contains(WqFlags::BH) {
            max_active = WQ_MAX_ACTIVE;
        }
        if flags.contains(WqFlags::ORDERED) {
            flags |= WqFlags::UNBOUND;
            max_active = 1;
        }
        let highpri = flags.contains(WqFlags::HIGHPRI);
        let mask = mask.and(CpuMask::first(p.cpu_count()));
        if mask.is_empty() {
            return Err(Error::new(EINVAL));
        }
        let attrs = WqAttrs::default_for(flags, mask);
        let layout = if flags.contains(WqFlags::UNBOUND) { Some(unbound_layout(&attrs, flags)?) } else { None };
        let bound_pools: Vec<Arc<Pool>> = if layout.is_none() {
            let bh = flags.contains(WqFlags::BH);
            (0..p.cpu_count())
                .map(|c| {
                    let pool = if bh { pool::bh_pool(c, highpri) } else { pool::percpu_pool(c, highpri) };
                    pool.ok_or(Error::new(ENOMEM))
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let frozen = FROZEN.load(Ordering::Acquire) && flags.contains(WqFlags::FREEZABLE);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new_cyclic(|me: &Weak<WqInner>| {
            let mk = |pool: Arc<Pool>| new_pwq(me, pool, flags, max_active, frozen, false, &in_flight);
            let unbound = match layout {
                Some(layout) => {
                    let (by_cpu, all) = pwqs_for_layout(layout, mk);
                    UnboundPwqs { attrs, by_cpu, all }
                }
                None => UnboundPwqs { attrs, by_cpu: Vec::new(), all: Vec::new() },
            };
            WqInner {
                name: String::from(name),
                trace_name: kport::trace::intern(name),
                flags,
                max_active: AtomicUsize::new(max_active),
                bound: bound_pools
                    .into_iter()
                    .map(|pool| new_pwq(me, pool, flags, max_active, frozen, false, &in_flight))
                    .collect(),
                unbound: SpinLock::ranked("wq pwqs", crate::RANK_LEAF, unbound),
                attrs_mutex: Mutex::new(()),
                destroyed: AtomicBool::new(false),
                draining: AtomicUsize::new(0),
                in_flight: in_flight.clone(),
                flush_mutex: Mutex::new(()),
                flush_wq: WaitQueue::new(),
                flush_pending: AtomicUsize::new(0),
                maydays: SpinLock::ranked("maydays", crate::RANK_MAYDAY, VecDeque::new()),
                mayday_wq: WaitQueue::new(),
                rescuer: spin::Once::new(),
            }
        });
        if flags.contains(WqFlags::MEM_RECLAIM) {
            let w = Worker::new(format!("kworker/R-{name}"), wf::RESCUER | wf::PREP, None);
            let (wq, wc) = (Arc::downgrade(&inner), w.clone());
            let t = Builder::new(format_args!("kworker/R-{name}"), move || rescuer_thread(wq, wc))
                .priority(Priority::High)
                .data(Arc::new(Arc::downgrade(&w)))
                .run()?;
            w.task.call_once(|| t.clone());
            inner.rescuer.call_once(|| (t, w));
        }
        {
            let mut all = WQS.lock();
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&inner));
        }
        Ok(Workqueue(inner))
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Its flags.
    pub fn flags(&self) -> WqFlags {
        self.0.flags
    }

    /// Its `max_active`.
    pub fn max_active(&self) -> usize {
        self.0.max_active.load(Ordering::Acquire)
    }

    /// The attributes of an unbound queue (`None` for a bound one).
    ///
    /// Context: any.
    pub fn attrs(&self) -> Option<WqAttrs> {
        self.0.flags.contains(WqFlags::UNBOUND).then(|| self.0.unbound.lock().attrs)
    }

    /// Give a live unbound queue new attributes (Linux
    /// `apply_workqueue_attrs`): priority, CPU mask, affinity scope and
    /// strictness. Items queued from now on go to the pools of the new
    /// attributes (made, with a first worker each, if no queue used them
    /// yet); what was queued before runs where it was. An ordered queue's
    /// new pool takes no item before the old one has run everything queued
    /// on it, so the order holds across the change.
    ///
    /// Context: may sleep. Return: `EINVAL` for a bound queue or a mask
    /// with no CPU of the machine; `ENOMEM` when a pool's first worker
    /// cannot be made (the queue keeps its old attributes).
    #[track_caller]
    pub fn apply_attrs(&self, attrs: WqAttrs) -> Result<()> {
        might_sleep();
        let wq = &self.0;
        if !wq.flags.contains(WqFlags::UNBOUND) {
            warn(&format!("apply_attrs on the bound queue '{}': refused", wq.name));
            return Err(Error::new(EINVAL));
        }
        let p = port();
        let attrs = WqAttrs { cpumask: attrs.cpumask.and(CpuMask::first(p.cpu_count())), ..attrs };
        if attrs.cpumask.is_empty() {
            return Err(Error::new(EINVAL));
        }
        let _serial = wq.attrs_mutex.lock();
        let layout = unbound_layout(&attrs, wq.flags)?;
        let ordered = wq.flags.contains(WqFlags::ORDERED);
        let frozen = FROZEN.load(Ordering::Acquire) && wq.flags.contains(WqFlags::FREEZABLE);
        let me = Arc::downgrade(wq);
        let max_active = wq.max_active.load(Ordering::Acquire);
        let (by_cpu, fresh) =
            pwqs_for_layout(layout, |pool| new_pwq(&me, pool, wq.flags, max_active, frozen, ordered, &wq.in_flight));
        let old: Vec<Arc<Pwq>> = {
            let mut u = wq.unbound.lock();
            let mut old: Vec<Arc<Pwq>> = Vec::new();
            for q in u.by_cpu.iter() {
                if !old.iter().any(|o| Arc::ptr_eq(o, q)) {
                    old.push(q.clone());
                }
            }
            let mut all = fresh.clone();
            all.append(&mut u.all);
            *u = UnboundPwqs { attrs, by_cpu, all };
            old
        };
        for o in old.iter() {
            if ordered && let Some(succ) = fresh.first() {
                o.successor.call_once(|| succ.clone());
            }
            o.replaced.store(true, Ordering::Release);
        }
        // An ordered queue's old pwq that is already empty will not unplug
        // its successor from pwq_done: do it here.
        if ordered && let Some(succ) = fresh.first() {
            let all_empty = old.iter().all(|o| {
                let g = o.pool.st.lock();
                o.st.borrow_mut(g.held()).is_empty()
            });
            if all_empty {
                unplug(succ);
            }
        }
        Ok(())
    }

    /// Change `max_active` (Linux `workqueue_set_max_active`): clamped to
    /// 1..=[`WQ_MAX_ACTIVE`] with a warning; items held back by the old
    /// limit start at once when it grows. An ordered queue keeps its one
    /// item at a time: refused with a warning, as Linux warns.
    ///
    /// Context: any task context (takes the pools' locks). Return: `EINVAL`
    /// for an ordered queue.
    pub fn set_max_active(&self, max_active: usize) -> Result<()> {
        let wq = &self.0;
        if wq.flags.contains(WqFlags::ORDERED) {
            warn(&format!("set_max_active on the ordered queue '{}': refused", wq.name));
            return Err(Error::new(EINVAL));
        }
        let n = max_active.clamp(1, WQ_MAX_ACTIVE);
        if n != max_active {
            warn(&format!("max_active {max_active} for '{}' out of range, using {n}", wq.name));
        }
        wq.max_active.store(n, Ordering::Release);
        for pwq in wq.all_pwqs().iter() {
            let mut g = pwq.pool.st.lock();
            let (st, held) = g.split();
            let mut ps = pwq.st.borrow_mut(held);
            ps.max_active = n;
            activate_inactive(&pwq.pool, st, &mut ps, true);
        }
        Ok(())
    }

    /// Queue `work` on the calling CPU's pool (Linux `queue_work`): false if
    /// it is already pending, or refused (a warning says why).
    ///
    /// Context: any (interrupt context included). Return: true if queued.
    pub fn queue(&self, work: &Work) -> bool {
        self.try_queue_on(None, work).unwrap_or(false)
    }

    /// Queue `work` on `cpu`'s pool (Linux `queue_work_on`).
    ///
    /// Context: any. Return: true if queued.
    pub fn queue_on(&self, cpu: usize, work: &Work) -> bool {
        self.try_queue_on(Some(cpu), work).unwrap_or(false)
    }

    /// Like [`Workqueue::queue_on`] (`cpu` None: the calling CPU), telling
    /// why an item was refused: `Ok(false)` if it was already pending.
    ///
    /// Context: any. Return: `Ok(true)` if queued, `Ok(false)` if already pending, the reason if refused.
    pub fn try_queue_on(&self, cpu: Option<usize>, work: &Work) -> core::result::Result<bool, QueueError> {
        // A bound queue has one pwq per CPU the port has: its table's
        // length answers without a call through the port.
        if let Some(c) = cpu
            && c >= if self.0.bound.is_empty() { port().cpu_count() } else { self.0.bound.len() }
        {
            warn(&format!("{} refused on '{}': no CPU {c}", work.0.name, self.0.name));
            return Err(QueueError::BadCpu);
        }
        let off = IrqsOff::enter();
        if !work.0.claim_new() {
            return Ok(false);
        }
        queue_claimed(&self.0, cpu, &work.0, &off).map(|()| true)
    }

    /// Queue `dwork` after `delay_ns` (Linux `queue_delayed_work`); false if
    /// it is already pending. A zero delay queues at once.
    ///
    /// Context: any. Return: true if queued or armed.
    pub fn queue_delayed(&self, dwork: &DelayedWork, delay_ns: u64) -> bool {
        self.queue_delayed_on(None, dwork, delay_ns)
    }

    /// Queue `dwork` on `cpu` after `delay_ns` (Linux
    /// `queue_delayed_work_on`).
    ///
    /// Context: any. Return: true if queued or armed.
    pub fn queue_delayed_on(&self, cpu: Option<usize>, dwork: &DelayedWork, delay_ns: u64) -> bool {
        if cpu.is_some_and(|c| c >= port().cpu_count()) {
            warn(&format!("{} refused on '{}': no CPU {:?}", dwork.work.0.name, self.0.name, cpu));
            return false;
        }
        let off = IrqsOff::enter();
        if dwork.work.0.disable.load(Ordering::Acquire) > 0 || !dwork.work.0.claim_bit() {
            return false;
        }
        self.arm_claimed(cpu, dwork, delay_ns, &off);
        true
    }

    fn arm_claimed(&self, cpu: Option<usize>, dwork: &DelayedWork, delay_ns: u64, off: &IrqsOff) {
        let w = &dwork.work.0;
        w.start_instance();
        if delay_ns == 0 {
            let _ = queue_claimed(&self.0, cpu, w, off);
            return;
        }
        let d = w.delayed.as_ref().expect("a DelayedWork has a timer");
        d.set_target((Arc::downgrade(&self.0), cpu));
        d.timer.arm(port().now_ns() + delay_ns, cpu);
        // A canceller waiting for the instance can take it off the timer now.
        w.notify_grabbers();
    }

    /// Set `dwork` to run `delay_ns` from now, whether it was pending or
    /// not (Linux `mod_delayed_work`): true if it was pending.
    ///
    /// Context: any. Return: true if it was pending.
    pub fn mod_delayed(&self, dwork: &DelayedWork, delay_ns: u64) -> bool {
        self.mod_delayed_on(None, dwork, delay_ns)
    }

    /// [`Workqueue::mod_delayed`] on `cpu` (Linux `mod_delayed_work_on`).
    ///
    /// Context: any (in atomic context it may spin while another CPU queues
    /// or cancels the same item, a few instructions with that CPU's
    /// interrupts off; while a `cancel_sync` of the item waits for a running
    /// instance it queues nothing and returns false). Return: true if it was pending.
    pub fn mod_delayed_on(&self, cpu: Option<usize>, dwork: &DelayedWork, delay_ns: u64) -> bool {
        let w = &dwork.work.0;
        if w.disable.load(Ordering::Acquire) > 0 {
            // Disabled (or being cancelled, which disables it for the time
            // it takes): nothing is queued, as Linux's mod_delayed_work_on
            // does for a disabled item. A disabled item has no pending
            // instance but the one a canceller holds for a moment.
            return w.state.load(Ordering::Acquire) & crate::work::PENDING != 0;
        }
        let (g, off) = grab_pending(w);
        if g == Grab::Canceling {
            // Being cancelled (from atomic context): queue nothing, as for
            // a disabled item.
            return false;
        }
        self.arm_claimed(cpu, dwork, delay_ns, &off);
        g == Grab::Pending
    }

    /// Wait until every item queued before the call has run (Linux
    /// `flush_workqueue`). Called from one of the queue's own items it would
    /// wait for itself: that is reported as a deadlock and not waited.
    ///
    /// Context: may sleep. Return: `Ok`, or `EPERM` for a flush from the queue's own item.
    #[track_caller]
    pub fn flush(&self) -> Result<()> {
        might_sleep();
        let wq = &self.0;
        if in_own_item(wq) {
            let name = current_worker().map_or("an item", |w| current_item_name(&w));
            warn(&format!(
                "deadlock: {name} flushes its own queue '{}' (flush_workqueue from an item); not waiting",
                wq.name
            ));
            port().dump_stack();
            return Err(Error::new(EPERM));
        }
        let _serial = wq.flush_mutex.lock();
        // Start a new colour on every pwq and wait for the old one to empty.
        // The pending count starts biased so that completions racing with
        // this loop cannot take it to zero before every pwq is counted.
        const BIAS: usize = usize::MAX / 2;
        wq.flush_pending.store(BIAS, Ordering::Release);
        let mut waiting = 0;
        for pwq in wq.all_pwqs().iter() {
            let g = pwq.pool.st.lock();
            let mut ps = pwq.st.borrow_mut(g.held());
            let c = ps.work_color;
            ps.work_color = (c + 1) % NR_COLORS;
            if ps.nr_in_flight[c] > 0 {
                ps.flush_color = Some(c);
                waiting += 1;
            }
        }
        wq.flush_pending.fetch_sub(BIAS - waiting, Ordering::AcqRel);
        wq.flush_wq.wait_event("flush_workqueue", || wq.flush_pending.load(Ordering::Acquire) == 0);
        Ok(())
    }

    /// Is anything queued, deferred or running on the queue?
    ///
    /// Context: any.
    pub fn is_busy(&self) -> bool {
        self.0.in_flight.load(Ordering::Acquire) > 0
    }

    /// Flush until the queue is empty; meanwhile only the queue's own items
    /// may queue on it (Linux `drain_workqueue`). Warns if it does not
    /// drain after [`DRAIN_WARN_AFTER`] flushes.
    ///
    /// Context: may sleep. Return: as [`Workqueue::flush`].
    #[track_caller]
    pub fn drain(&self) -> Result<()> {
        might_sleep();
        self.0.draining.fetch_add(1, Ordering::AcqRel);
        let mut tries = 0;
        let r = loop {
            if let Err(e) = self.flush() {
                break Err(e);
            }
            if !self.is_busy() {
                break Ok(());
            }
            tries += 1;
            if tries == DRAIN_WARN_AFTER || (tries > DRAIN_WARN_AFTER && tries % 100 == 0) {
                warn(&format!("drain of '{}' isn't complete after {tries} tries", self.0.name));
            }
        };
        self.0.draining.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Drain the queue, stop its rescuer, and refuse anything queued after
    /// (with a warning and [`QueueError::Destroyed`]). Linux
    /// `destroy_workqueue`.
    ///
    /// Context: may sleep. Return: as [`Workqueue::drain`].
    #[track_caller]
    pub fn destroy(self) -> Result<()> {
        might_sleep();
        self.drain()?;
        self.0.destroyed.store(true, Ordering::Release);
        if let Some((t, _)) = self.0.rescuer.get() {
            let _ = t.stop();
        }
        Ok(())
    }

    /// Statistics of the queue (Linux `wq_monitor.py`'s columns).
    pub fn stats(&self) -> crate::WqStats {
        crate::stats::of(&self.0)
    }

    /// The rescuer thread, for `MEM_RECLAIM` queues.
    pub fn rescuer(&self) -> Option<&Kthread> {
        self.0.rescuer.get().map(|(t, _)| t)
    }
}

impl Work {
    /// Wait for the instance queued or running now (Linux `flush_work`):
    /// true if it waited. Flushing an item from itself is reported as a
    /// deadlock and not waited.
    ///
    /// Context: may sleep. Return: true if it waited.
    #[track_caller]
    pub fn flush(&self) -> bool {
        might_sleep();
        flush_work_inner(&self.0, "flush_work")
    }

    /// Cancel the pending instance without waiting for a running one
    /// (Linux `cancel_work`); true if it was pending.
    ///
    /// Context: any; it may wait for a concurrent queueing of the same item
    /// to finish (in atomic context it spins, over a few instructions that
    /// another CPU runs with its interrupts off). While a `cancel_sync` or
    /// `disable_sync` of the item waits for a running instance, a cancel
    /// from atomic context returns false at once, as Linux's `cancel_work`
    /// does for an item being cancelled. Return: true if it was pending.
    pub fn cancel(&self) -> bool {
        let (g, _off) = grab_pending(&self.0);
        if g != Grab::Canceling {
            self.0.release();
        }
        g == Grab::Pending
    }

    /// Cancel the pending instance and wait for a running one (Linux
    /// `cancel_work_sync`); true if it was pending. The item cannot be
    /// queued again while this waits.
    ///
    /// Context: may sleep. Return: true if it was pending.
    #[track_caller]
    pub fn cancel_sync(&self) -> bool {
        might_sleep();
        cancel_sync_inner(&self.0, "cancel_work_sync")
    }

    /// Disable it (Linux `disable_work`, 6.10+): raise its disable count,
    /// under which every queueing is refused (false), and cancel its
    /// pending instance without waiting for a running one. Disables nest
    /// (up to [`WORK_DISABLE_MAX`]); [`Work::enable`] undoes one.
    ///
    /// Context: any. Return: true if an instance was pending.
    pub fn disable(&self) -> bool {
        disable_inner(&self.0, false)
    }

    /// Disable it and also wait for a running instance to end (Linux
    /// `disable_work_sync`).
    ///
    /// Context: may sleep. Return: true if an instance was pending.
    #[track_caller]
    pub fn disable_sync(&self) -> bool {
        might_sleep();
        disable_inner(&self.0, true)
    }

    /// Undo one [`Work::disable`] (Linux `enable_work`).
    ///
    /// Context: any. Return: true if the disable count reached zero.
    pub fn enable(&self) -> bool {
        enable_inner(&self.0)
    }

    /// Is it disabled?
    ///
    /// Context: any.
    pub fn is_disabled(&self) -> bool {
        self.0.disable.load(Ordering::Acquire) > 0
    }
}

impl DelayedWork {
    /// Disable it, cancelling a pending instance (armed timer or queued)
    /// without waiting for a running one (Linux `disable_delayed_work`).
    ///
    /// Context: any. Return: true if an instance was pending.
    pub fn disable(&self) -> bool {
        self.work.disable()
    }

    /// Disable it and wait for a running instance (Linux
    /// `disable_delayed_work_sync`).
    ///
    /// Context: may sleep. Return: true if an instance was pending.
    #[track_caller]
    pub fn disable_sync(&self) -> bool {
        might_sleep();
        disable_inner(&self.work.0, true)
    }

    /// Undo one disable (Linux `enable_delayed_work`).
    ///
    /// Context: any. Return: true if the disable count reached zero.
    pub fn enable(&self) -> bool {
        self.work.enable()
    }

    /// Queue it now if its timer is pending, then wait for it (Linux
    /// `flush_delayed_work`).
    ///
    /// Context: may sleep. Return: true if it waited.
    #[track_caller]
    pub fn flush(&self) -> bool {
        might_sleep();
        let w = &self.work.0;
        let Some(d) = &w.delayed else { return flush_work_inner(w, "flush_delayed_work") };
        // Nothing pending: no timer armed or fired, nothing to queue early.
        if w.is_idle().is_some() {
            return false;
        }
        loop {
            // Off the timer and onto a list with interrupts off (see IrqsOff).
            let off = IrqsOff::enter();
            // The target is taken out before queueing: its lock is a leaf and
            // must not be held while the pool lock is taken.
            let target = if d.timer.cancel() { d.take_target() } else { None };
            if let Some((wq, cpu)) = target {
                if let Some(wq) = wq.upgrade() {
                    let _ = queue_claimed(&wq, cpu, w, &off);
                } else {
                    w.release();
                }
                break;
            }
            // Not on the timer, but still aimed: the expiry is on its way to
            // a list (the timer's callback runs on another CPU, or another
            // context holds it for a moment). Wait for it, as Linux's
            // del_timer_sync waits for a running callback: else the flush
            // would take the instance for one whose timer has not fired and
            // return before it ran. Whether the timer looks pending now
            // does not matter: a hard-IRQ expiry on another CPU may have
            // queued it for its softirq since the cancel above looked (the
            // torture's private-item check caught a flush returning so),
            // and the next round's cancel takes it either way.
            let in_flight = d.has_target();
            drop(off);
            if !in_flight {
                break;
            }
            port().yield_now();
        }
        flush_work_inner(w, "flush_delayed_work")
    }

    /// Cancel (timer or queue) and wait for a running instance (Linux
    /// `cancel_delayed_work_sync`); true if it was pending.
    ///
    /// Context: may sleep. Return: true if it was pending.
    #[track_caller]
    pub fn cancel_sync(&self) -> bool {
        might_sleep();
        cancel_sync_inner(&self.work.0, "cancel_delayed_work_sync")
    }

    /// Cancel without waiting (Linux `cancel_delayed_work`); true if it was
    /// pending.
    ///
    /// Context: any. Return: true if it was pending.
    pub fn cancel(&self) -> bool {
        self.work.cancel()
    }
}

/// Freeze or thaw the freezable queues.
pub(crate) fn set_frozen(on: bool) {
    FROZEN.store(on, Ordering::Release);
    for wq in all_wqs().iter().filter(|w| w.flags.contains(WqFlags::FREEZABLE)) {
        for pwq in wq.all_pwqs().iter() {
            let pool = &pwq.pool;
            let mut g = pool.st.lock();
            let (st, held) = g.split();
            let mut ps = pwq.st.borrow_mut(held);
            ps.frozen = on;
            if !on {
                activate_inactive(pool, st, &mut ps, true);
            }
        }
    }
}

/// A queue's rescuer: serves the pwqs sent by mayday calls, running their
/// pending items in their pool (Linux `rescuer_thread`).
fn rescuer_thread(wq: Weak<WqInner>, me: Arc<Worker>) -> i32 {
    let p = port();
    let task = p.current();
    loop {
        let Some(q) = wq.upgrade() else { return 0 };
        // Idle ("I") while no mayday comes, as Linux's `rescuer_thread`
        // waits in `TASK_IDLE`: a rescuer may wait for the whole uptime.
        q.mayday_wq.wait_event_idle("rescuer", || !q.maydays.lock().is_empty() || kthread::should_stop());
        if kthread::should_stop() && q.maydays.lock().is_empty() {
            return 0;
        }
        loop {
            let pwq = q.maydays.lock().pop_front();
            let Some(pwq) = pwq else { break };
            pwq.mayday_queued.store(false, Ordering::Release);
            let pool = pwq.pool.clone();
            // Join the pool's CPUs (the online ones while a bound pool's
            // CPU is offline; it may go or come back meanwhile).
            loop {
                let mask = pool::current_mask(&pool);
                if mask.contains(p.cpu_id()) {
                    break;
                }
                let _ = task.set_affinity(mask);
                p.yield_now();
            }
            let mut st = pool.st.lock();
            // The rescuer's scheduled list belongs to the pool it serves
            // while it is there.
            me.st.attach(st.held());
            {
                let (pool_st, held) = st.split();
                let mut mine = me.st.borrow_mut(held);
                let mut i = 0;
                while i < pool_st.worklist.len() {
                    if Arc::ptr_eq(&pool_st.worklist[i].pwq, &pwq) {
                        mine.scheduled.push_back(pool_st.worklist.remove(i).expect("index in range"));
                    } else {
                        i += 1;
                    }
                }
            }
            st = pool::process_scheduled(&pool, &me, st, true);
            let still = st.worklist.iter().any(|e| Arc::ptr_eq(&e.pwq, &pwq));
            pool.kick(&st);
            me.st.detach(st.held());
            drop(st);
            if still && pool.need_to_create(&pool.st.lock()) {
                send_mayday(&pwq);
            }
        }
        let _ = task.set_affinity(CpuMask::ALL);
    }
}

/// The item the calling worker runs (Linux `current_work`): `None` outside
/// a work item.
///
/// Context: any.
pub fn current_work() -> Option<Work> {
    let w = current_worker()?;
    let addr = w.current_work.load(Ordering::Acquire);
    if addr == 0 {
        return None;
    }
    let pools: Vec<Arc<Pool>> = match &w.pool {
        Some(p) => alloc::vec![p.clone()],
        // A rescuer runs items in the pool it visits.
        None => pool::all_pools(),
    };
    pools.iter().find_map(|p| {
        let st = p.st.lock();
        st.busy.iter().find(|b| Arc::ptr_eq(&b.worker, &w)).map(|b| Work(b.cur.work.clone()))
    })
}

/// Is the caller a queue's rescuer (Linux `current_is_workqueue_rescuer`)?
///
/// Context: any.
pub fn current_is_workqueue_rescuer() -> bool {
    current_worker().is_some_and(|w| w.flags.load(Ordering::Acquire) & wf::RESCUER != 0)
}

/// Run `f` on `cpu` in a kworker bound there and return its result (Linux
/// `work_on_cpu`: the item goes on `system_wq` on that CPU and the caller
/// flushes it).
///
/// Context: may sleep. Return: `f`'s result; `EINVAL` for a CPU that does
/// not exist or is offline (Linux leaves that to the caller's hot-plug
/// lock; here the call refuses it).
#[track_caller]
pub fn work_on_cpu<R: Send + 'static>(cpu: usize, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    might_sleep();
    let p = port();
    if cpu >= p.cpu_count() || !p.online_mask().contains(cpu) {
        return Err(Error::new(EINVAL));
    }
    let f = SpinLock::new(Some(f));
    let out: Arc<SpinLock<Option<R>>> = Arc::new(SpinLock::new(None));
    let o = out.clone();
    let item = Work::named("work_on_cpu", move || {
        let f = f.lock().take();
        if let Some(f) = f {
            let r = f();
            *o.lock() = Some(r);
        }
    });
    if !crate::system::wq().queue_on(cpu, &item) {
        return Err(Error::new(EINVAL));
    }
    item.flush();
    let r = out.lock().take();
    r.ok_or(Error::new(EINVAL))
}

/// Longest worker description kept, in bytes (Linux `WORKER_DESC_LEN` 32,
/// with the NUL).
pub const WORKER_DESC_LEN: usize = 31;

/// Describe what the calling worker does, for listings and reports (Linux
/// `set_worker_desc`): until its next item, the worker is listed as
/// `kworker/N:M+DESC` while it runs and `kworker/N:M-DESC` after. Cut to
/// [`WORKER_DESC_LEN`] bytes. Outside a work item it does nothing.
///
/// Context: any (in a work item).
pub fn set_worker_desc(desc: fmt::Arguments<'_>) {
    let Some(w) = current_worker() else { return };
    let text = alloc::fmt::format(desc);
    let mut end = text.len().min(WORKER_DESC_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut d = w.desc.lock();
    d.clear();
    d.push_str(&text[..end]);
    w.desc_wq.store(0, Ordering::Release);
}

/// The listed name of a workqueue worker (Linux `wq_worker_comm`): its
/// name, then `+` and its description while it runs an item, `-` and the
/// description after. Installed as kthreadd's name hook by `init`.
pub(crate) fn worker_comm(k: &Kthread) -> Option<String> {
    let w = k.data()?.downcast::<Weak<Worker>>().ok()?.upgrade()?;
    let desc = w.desc.lock().clone();
    if desc.is_empty() {
        return None;
    }
    let busy = w.current_work.load(Ordering::Acquire) != 0;
    Some(format!("{}{}{desc}", w.name, if busy { '+' } else { '-' }))
}
