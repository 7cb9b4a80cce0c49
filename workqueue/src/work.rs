//! Work items (Linux `struct work_struct`, `struct delayed_work`).
//!
//! An item carries its function, a name for reports (the function's type
//! name), the *pending* bit (set while an instance is queued or its timer is
//! armed: whoever sets it owns the one pending instance), the id of the pool
//! it is queued on or last ran on (for non-reentrancy), and a *disable*
//! count that blocks queueing while a cancel waits (Linux's
//! `WORK_OFFQ_DISABLE`), and the run claim that keeps it from running on two
//! workers at once anywhere (stronger than Linux, which promises that only
//! within one queue).

use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use core::fmt;

use kport::sync::{SpinLock, WaitQueue};
// The protocol atomics: loom's under the `loom` feature.
use kport::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::wq::WqInner;

/// No pool yet.
pub(crate) const NO_POOL: usize = usize::MAX;

/// A work item's shared state.
///
/// Field tags (the crate documentation's legend): `I:` set at creation;
/// `A:` atomic, with the protocol in the field's comment; `R:` under the
/// item's own run lock (`run`).
pub(crate) struct WorkInner {
    /// I: the function.
    pub(crate) func: Box<dyn Fn() + Send + Sync>,
    /// I: its name in reports.
    pub(crate) name: &'static str,
    /// A: the pending bit ([`PENDING`]) and, above it, the number of the
    /// latest instance. The bit is set by whoever claims the one pending
    /// instance (queue, a timer arming, a canceller grabbing it) and cleared
    /// when a worker starts the instance or the claimer gives it back; a
    /// queueing sets it and numbers the new instance in one step, so a
    /// flusher that sees the bit sees the number of the instance it means.
    pub(crate) state: AtomicU64,
    /// A: id of the pool of the pending instance, or of the pool it last ran
    /// on (written under that pool's lock, read to find it there), with
    /// [`POOL_INACTIVE`] while the pending instance waits on a pwq's inactive
    /// list (Linux's `WORK_STRUCT_INACTIVE`). Read it with
    /// [`WorkInner::pool_id`].
    pub(crate) pool: AtomicUsize,
    /// A: cancellers at work; queueing is refused while it is not zero
    /// (Linux's disable count).
    pub(crate) disable: AtomicU32,
    /// A: cancellers (`cancel_sync`, `disable_sync`) that hold the pending
    /// bit while they wait for a running instance (Linux's
    /// `WORK_OFFQ_CANCELING`): raised after the bit is taken and lowered
    /// before it is released, both with interrupts off, so while it is not
    /// zero the bit's holder is such a canceller and nothing is pending. A
    /// canceller in atomic context then returns at once instead of
    /// spinning until that wait ends.
    pub(crate) canceling: AtomicU32,
    /// I: the timer part, for a delayed item.
    pub(crate) delayed: Option<Box<Delayed>>,
    /// A: cancellers sleeping in `grab_pending` until the pending instance
    /// can be found (SeqCst with `notify_grabbers`).
    pub(crate) grab_waiters: AtomicU32,
    /// A: bumped by `notify_grabbers` when someone waits.
    pub(crate) grab_events: AtomicU32,
    /// A: the run claim: the number of the instance running now (0 for
    /// none) shifted left by one, with [`RUN_ATTN`] in bit 0. A worker
    /// takes the claim with one compare-exchange from a word whose number
    /// is 0, and gives it back with one from exactly `seq << 1`, both
    /// without the run lock; whoever leaves the end of a run something to
    /// do (a deferred instance, a flusher, a cancelled instance ahead) sets
    /// `RUN_ATTN` under the run lock, which makes the end's exchange fail
    /// and the worker take the lock. Only the lock's holder clears the bit,
    /// once `run` holds nothing for an end.
    pub(crate) claim: AtomicU64,
    /// R: the instances that must wait for a run elsewhere, the flushers
    /// waiting for an instance to end, and a cancelled instance ahead.
    pub(crate) run: SpinLock<RunState>,
    /// A: every instance up to this one has ended (ran or was cancelled).
    /// Raised only, with `fetch_max`: by the end of a run (without the run
    /// lock, before the claim is given back) and by `RunState::advance`
    /// (under it). Read without the lock by [`WorkInner::is_idle`]: flushing
    /// or cancelling an idle item then takes no lock at all.
    pub(crate) ended: AtomicU64,
}

/// The bit of [`WorkInner::claim`] that sends the end of a run through the
/// run lock.
pub(crate) const RUN_ATTN: u64 = 1;

/// Wait queues of cancellers that wait for a pending instance to show up
/// (hashed by item, as Linux's bit wait tables are: an item carries no wait
/// queue of its own).
const GRAB_QUEUES: usize = 16;
static GRAB_WAIT: [WaitQueue; GRAB_QUEUES] = [const { WaitQueue::new() }; GRAB_QUEUES];

/// The wait queue of `w`'s waiting cancellers.
pub(crate) fn grab_queue(w: &WorkInner) -> &'static WaitQueue {
    &GRAB_WAIT[(w as *const WorkInner as usize >> 6) % GRAB_QUEUES]
}

/// The flag of [`WorkInner::pool`] that says the pending instance was put
/// on a pwq's inactive list; cleared when it is activated. A cancel looks
/// there first; only a hint (the cancel looks everywhere else after it).
pub(crate) const POOL_INACTIVE: usize = 1 << (usize::BITS - 1);

/// The pending bit of [`WorkInner::state`].
pub(crate) const PENDING: u64 = 1;
/// One instance number in [`WorkInner::state`].
const SEQ_ONE: u64 = 2;

/// What the end of a run must see to besides giving the claim back: the
/// instances that came up meanwhile (from another pool or queue), requeued
/// at the head of their pools when the run ends, so the item never runs on
/// two workers at once; and who waits for which instance to end. Instances
/// of one item end in order (one pending at a time, never two running),
/// with one exception: the pending instance may be cancelled while an
/// older one runs. [`WorkInner::ended`] counts only what ended in order: a
/// cancelled instance ahead of a running one is remembered and ends with
/// it, so a flusher of it (a `cancel_sync` among them) still waits for the
/// running instance, as Linux's `cancel_work_sync` does.
///
/// Every field is `R:` (the item's run lock). While any of them holds
/// something, [`RUN_ATTN`] is set in the item's claim word.
pub(crate) struct RunState {
    /// R: a cancelled instance newer than the running one, 0 for none; it
    /// counts as ended when the running one ends.
    cancelled_ahead: u64,
    /// R: the lists most items never use, allocated the first time one is
    /// (an item is mostly this record: inline, the lists made it 56 bytes
    /// larger, and every item is touched on the queue-and-run path).
    rare: Option<Box<RunRare>>,
}

/// [`RunState`]'s lists.
#[derive(Default)]
struct RunRare {
    /// R: instances that came up while it ran elsewhere.
    deferred: alloc::collections::VecDeque<crate::pool::Entry>,
    /// R: flushers, by the instance they wait for.
    waiters: alloc::vec::Vec<(u64, Arc<kport::sync::Completion>)>,
}

impl RunState {
    pub(crate) const fn new() -> Self {
        RunState { cancelled_ahead: 0, rare: None }
    }

    /// Nothing here for the end of a run: [`RUN_ATTN`] may be cleared.
    pub(crate) fn quiet(&self) -> bool {
        self.cancelled_ahead == 0 && self.rare.as_ref().is_none_or(|r| r.deferred.is_empty() && r.waiters.is_empty())
    }

    /// The instances that came up while it ran elsewhere (none yet: `None`).
    pub(crate) fn deferred(&mut self) -> Option<&mut alloc::collections::VecDeque<crate::pool::Entry>> {
        self.rare.as_mut().map(|r| &mut r.deferred)
    }

    /// Take the deferred instances bound for `pool` off the list, in order.
    pub(crate) fn take_deferred_for(&mut self, pool: &crate::pool::Pool) -> alloc::vec::Vec<crate::pool::Entry> {
        let mut out = alloc::vec::Vec::new();
        if let Some(d) = self.deferred() {
            let mut i = 0;
            while i < d.len() {
                if core::ptr::eq(&*d[i].pwq.pool, pool) {
                    out.extend(d.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        out
    }

    /// Put an instance on the deferred list (the caller set [`RUN_ATTN`]
    /// with [`WorkInner::claim_run_or_mark`]).
    pub(crate) fn defer(&mut self, e: crate::pool::Entry) {
        self.rare.get_or_insert_with(Box::default).deferred.push_back(e);
    }

    /// Wait for instance `target` to end: `c` is completed when it has.
    /// Sets [`RUN_ATTN`] in `claim`, then reads `ended` again: false (and
    /// nothing registered) if `target` ended meanwhile, which a run that
    /// gave its claim back before the bit was set did without the lock.
    pub(crate) fn add_waiter(
        &mut self,
        target: u64,
        c: Arc<kport::sync::Completion>,
        claim: &AtomicU64,
        ended: &AtomicU64,
    ) -> bool {
        let waiters = &mut self.rare.get_or_insert_with(Box::default).waiters;
        waiters.push((target, c));
        // The run's end raises `ended` and then exchanges the claim word;
        // this sets the bit and then reads `ended`. Either the bit came
        // first (the exchange fails and the end takes this lock and
        // completes `c`), or this read follows the end's exchange and sees
        // what it raised `ended` to.
        claim.fetch_or(RUN_ATTN, Ordering::AcqRel);
        if ended.load(Ordering::Acquire) >= target {
            waiters.pop();
            return false;
        }
        true
    }

    /// Record that instance `seq` ran to its end; returns the flushers to
    /// release. `ended` is the item's [`WorkInner::ended`].
    pub(crate) fn end(&mut self, seq: u64, ended: &AtomicU64) -> alloc::vec::Vec<Arc<kport::sync::Completion>> {
        let ahead = core::mem::take(&mut self.cancelled_ahead);
        self.advance(seq.max(ahead), ended)
    }

    /// Record that the pending instance `seq` was cancelled; returns the
    /// flushers to release (none while an older instance still runs: it is
    /// remembered, with [`RUN_ATTN`] set in `claim`, and ends with that
    /// run).
    pub(crate) fn cancel(
        &mut self,
        seq: u64,
        claim: &AtomicU64,
        ended: &AtomicU64,
    ) -> alloc::vec::Vec<Arc<kport::sync::Completion>> {
        let mut v = claim.load(Ordering::Acquire);
        loop {
            let running = v >> 1;
            if running == 0 || running >= seq {
                return self.advance(seq, ended);
            }
            // An older instance runs: the bit makes its end come here. If
            // it gave the claim back first, the exchange fails and the
            // loop sees it over.
            match claim.compare_exchange_weak(v, v | RUN_ATTN, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.cancelled_ahead = self.cancelled_ahead.max(seq);
                    return alloc::vec::Vec::new();
                }
                Err(now) => v = now,
            }
        }
    }

    /// Raise `ended` to `seq` and release the flushers it satisfies.
    fn advance(&mut self, seq: u64, ended: &AtomicU64) -> alloc::vec::Vec<Arc<kport::sync::Completion>> {
        let done = ended.fetch_max(seq, Ordering::AcqRel).max(seq);
        let mut out = alloc::vec::Vec::new();
        let Some(rare) = self.rare.as_mut().filter(|r| !r.waiters.is_empty()) else {
            return out;
        };
        rare.waiters.retain(|(t, c)| {
            if *t <= done {
                out.push(c.clone());
                false
            } else {
                true
            }
        });
        out
    }
}

/// Where an armed delayed item will be queued: its queue and CPU.
pub(crate) type Target = (Weak<WqInner>, Option<usize>);

/// The timer part of a delayed item.
pub(crate) struct Delayed {
    /// I: the timer; it expires in the `TIMER` softirq, as Linux's
    /// `delayed_work` timer does.
    pub(crate) timer: softirq::SoftTimer,
    /// Own lock (a leaf): queue and CPU the timer will queue the item on;
    /// set exactly while the instance waits for its timer (armed, or fired
    /// and not yet queued). Written only through [`Delayed::set_target`]
    /// and [`Delayed::take_target`], which keep [`DELAYED_ARMED`].
    target: SpinLock<Option<Target>>,
}

/// A: delayed items whose instance waits for its timer (their target is
/// set), for [`crate::in_flight`].
static DELAYED_ARMED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Delayed items whose instance waits for its timer.
pub(crate) fn delayed_armed() -> usize {
    DELAYED_ARMED.load(core::sync::atomic::Ordering::Acquire)
}

impl Delayed {
    /// Aim the instance about to be armed at `t`.
    pub(crate) fn set_target(&self, t: Target) {
        if self.target.lock().replace(t).is_none() {
            DELAYED_ARMED.fetch_add(1, core::sync::atomic::Ordering::AcqRel);
        }
    }

    /// Take the target back: the timer fired, or the instance was taken
    /// off it.
    pub(crate) fn take_target(&self) -> Option<Target> {
        let t = self.target.lock().take();
        if t.is_some() {
            DELAYED_ARMED.fetch_sub(1, core::sync::atomic::Ordering::AcqRel);
        }
        t
    }

    /// Does an instance wait for the timer?
    pub(crate) fn has_target(&self) -> bool {
        self.target.lock().is_some()
    }
}

impl WorkInner {
    /// The pool id of [`WorkInner::pool`] ([`NO_POOL`] before the first
    /// queueing), and whether the pending instance was put on an inactive
    /// list.
    pub(crate) fn pool_id(&self) -> (usize, bool) {
        let v = self.pool.load(Ordering::Acquire);
        if v == NO_POOL { (NO_POOL, false) } else { (v & !POOL_INACTIVE, v & POOL_INACTIVE != 0) }
    }

    /// Claim the pending bit and number a new instance, in one step; false
    /// if an instance is already pending or the item is being cancelled.
    pub(crate) fn claim_new(&self) -> bool {
        if self.disable.load(Ordering::Acquire) > 0 {
            return false;
        }
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur & PENDING != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(cur, (cur + SEQ_ONE) | PENDING, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Claim the pending bit without starting an instance (a canceller or
    /// a re-arm takes an idle item this way); false if it is pending.
    pub(crate) fn claim_bit(&self) -> bool {
        self.state.fetch_or(PENDING, Ordering::AcqRel) & PENDING == 0
    }

    /// Give the pending bit back.
    pub(crate) fn release(&self) {
        self.state.fetch_and(!PENDING, Ordering::SeqCst);
        self.notify_grabbers();
    }

    /// Number a new instance; the caller holds the pending bit.
    pub(crate) fn start_instance(&self) -> u64 {
        (self.state.fetch_add(SEQ_ONE, Ordering::AcqRel) >> 1) + 1
    }

    /// The pending bit and the latest instance's number, read together.
    pub(crate) fn pending_and_seq(&self) -> (bool, u64) {
        let w = self.state.load(Ordering::Acquire);
        (w & PENDING != 0, w >> 1)
    }

    /// Is the item idle: no instance pending, and every instance it ever
    /// had ended (ran or was cancelled)? Returns the state word it judged,
    /// for [`WorkInner::still`]. Lock-free: the state word, then the ended
    /// count. An instance that was running when the word was read and ended
    /// before the count was read is over; one queued after the word was
    /// read is newer than the caller's question.
    #[inline]
    pub(crate) fn is_idle(&self) -> Option<u64> {
        let w = self.state.load(Ordering::Acquire);
        (w & PENDING == 0 && self.ended.load(Ordering::Acquire) >= w >> 1).then_some(w)
    }

    /// Is the state word still `w` (no instance numbered, no pending bit
    /// taken since)? With [`WorkInner::is_idle`] before it, the item was
    /// idle at the moment its ended count was read: neither pending nor
    /// running, with nothing queued between.
    #[inline]
    pub(crate) fn still(&self, w: u64) -> bool {
        self.state.load(Ordering::Acquire) == w
    }

    /// Is the pending bit set, read in the total order of `notify_grabbers`
    /// (a waiting canceller's condition).
    pub(crate) fn is_pending_seqcst(&self) -> bool {
        self.state.load(Ordering::SeqCst) & PENDING != 0
    }

    /// The latest instance's number (the pending one while the bit is set).
    pub(crate) fn pending_seq(&self) -> u64 {
        self.state.load(Ordering::Acquire) >> 1
    }

    /// The pending instance `seq` was cancelled: release its flushers
    /// (or, if an older instance still runs, when that one ends).
    pub(crate) fn instance_cancelled(&self, seq: u64) {
        let ready = self.run.lock().cancel(seq, &self.claim, &self.ended);
        for c in ready {
            c.complete_all();
        }
    }

    /// The instance running now, 0 for none.
    pub(crate) fn running(&self) -> u64 {
        self.claim.load(Ordering::Acquire) >> 1
    }

    /// Take the run claim for instance `seq` without the run lock; false if
    /// an instance runs (then [`WorkInner::claim_run_or_mark`], under the
    /// lock, decides).
    #[inline]
    pub(crate) fn try_claim_run(&self, seq: u64) -> bool {
        let mut v = self.claim.load(Ordering::Acquire);
        while v >> 1 == 0 {
            match self.claim.compare_exchange_weak(v, v | seq << 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Under the run lock: take the run claim for `seq`, or, while another
    /// instance runs, set [`RUN_ATTN`] so that its end takes the lock and
    /// finds what the caller defers (false).
    pub(crate) fn claim_run_or_mark(&self, seq: u64) -> bool {
        let mut v = self.claim.load(Ordering::Acquire);
        loop {
            let next = if v >> 1 == 0 { v | seq << 1 } else { v | RUN_ATTN };
            match self.claim.compare_exchange_weak(v, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return v >> 1 == 0,
                Err(now) => v = now,
            }
        }
    }

    /// End the run of instance `seq` without the run lock: raise `ended`,
    /// then give the claim back; false, with the claim still held, if
    /// [`RUN_ATTN`] is set (the caller ends it under the lock).
    #[inline]
    pub(crate) fn end_run_fast(&self, seq: u64) -> bool {
        self.ended.fetch_max(seq, Ordering::AcqRel);
        self.claim.compare_exchange(seq << 1, 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Tell cancellers waiting in `grab_pending` that the pending instance
    /// may be found now (it was put on a list, its timer armed) or its bit
    /// was released. One load when nobody waits.
    pub(crate) fn notify_grabbers(&self) {
        // SeqCst against the waiter's increment and re-check (Dekker): either
        // it sees what changed, or this sees it waiting.
        if self.grab_waiters.load(Ordering::SeqCst) > 0 {
            self.grab_events.fetch_add(1, Ordering::SeqCst);
            grab_queue(self).wake_all();
        }
    }
}

/// A work item. Clones refer to the same item.
#[derive(Clone)]
pub struct Work(pub(crate) Arc<WorkInner>);

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Work({})", self.0.name)
    }
}

impl Work {
    /// An item running `f` (Linux `INIT_WORK`). Reports name it after `f`'s
    /// type.
    pub fn new<F: Fn() + Send + Sync + 'static>(f: F) -> Self {
        Self::named(core::any::type_name::<F>(), f)
    }

    /// An item running `f`, named `name` in reports and statistics.
    pub fn named(name: &'static str, f: impl Fn() + Send + Sync + 'static) -> Self {
        Work(Arc::new(WorkInner {
            func: Box::new(f),
            name,
            state: AtomicU64::new(0),
            pool: AtomicUsize::new(NO_POOL),
            disable: AtomicU32::new(0),
            canceling: AtomicU32::new(0),
            delayed: None,
            grab_waiters: AtomicU32::new(0),
            grab_events: AtomicU32::new(0),
            claim: AtomicU64::new(0),
            run: SpinLock::ranked("work run", crate::RANK_RUN, RunState::new()),
            ended: AtomicU64::new(0),
        }))
    }

    /// Is an instance pending (queued, or its timer armed)? Linux
    /// `work_pending`.
    pub fn is_pending(&self) -> bool {
        self.0.state.load(Ordering::Acquire) & PENDING != 0
    }

    /// Its name in reports.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// Its identity: the address trace events print as `work struct`.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }
}

/// A delayed work item (Linux `struct delayed_work`): queued on its queue
/// when its timer fires.
pub struct DelayedWork {
    pub(crate) work: Work,
}

impl fmt::Debug for DelayedWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DelayedWork({})", self.work.0.name)
    }
}

impl DelayedWork {
    /// A delayed item running `f` (Linux `INIT_DELAYED_WORK`).
    pub fn new<F: Fn() + Send + Sync + 'static>(f: F) -> Self {
        Self::named(core::any::type_name::<F>(), f)
    }

    /// A delayed item named `name`.
    pub fn named(name: &'static str, f: impl Fn() + Send + Sync + 'static) -> Self {
        let inner = Arc::new_cyclic(|me: &Weak<WorkInner>| {
            let me = me.clone();
            // IRQ-safe (Linux's delayed-work timer is): from the timer to a
            // worklist with interrupts off.
            let timer = softirq::SoftTimer::new_irqsafe(alloc::sync::Arc::new(move || {
                if let Some(w) = me.upgrade() {
                    crate::wq::delayed_timer_fired(&w);
                }
            }));
            WorkInner {
                func: Box::new(f),
                name,
                state: AtomicU64::new(0),
                pool: AtomicUsize::new(NO_POOL),
                disable: AtomicU32::new(0),
                canceling: AtomicU32::new(0),
                grab_waiters: AtomicU32::new(0),
                grab_events: AtomicU32::new(0),
                delayed: Some(Box::new(Delayed {
                    timer,
                    target: SpinLock::ranked("delayed target", crate::RANK_LEAF, None),
                })),
                claim: AtomicU64::new(0),
                run: SpinLock::ranked("work run", crate::RANK_RUN, RunState::new()),
                ended: AtomicU64::new(0),
            }
        });
        DelayedWork { work: Work(inner) }
    }

    /// The item inside.
    pub fn work(&self) -> &Work {
        &self.work
    }

    /// Is an instance pending (timer armed or queued)?
    pub fn is_pending(&self) -> bool {
        self.work.is_pending()
    }
}

impl Drop for DelayedWork {
    /// A delayed item going away must not fire later.
    fn drop(&mut self) {
        if let Some(d) = &self.work.0.delayed
            && d.timer.cancel_sync()
        {
            d.take_target();
            self.work.0.release();
        }
    }
}
