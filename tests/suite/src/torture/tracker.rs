//! The bookkeeping of the torture cases: per-item counters that catch an
//! item run twice, run concurrently with itself, or lost (queued, never run
//! and not reported cancelled), and a record of invariant violations that
//! any context can add to (hard-IRQ and softirq included: only atomics,
//! no allocation, no lock).
//!
//! # The item protocol
//! An *instance* of an item exists from a queueing that returned true until
//! it runs or a cancel reports it. Callers keep four counts per item:
//!
//! - `reserved`: raised *before* each queueing attempt, lowered again when
//!   the attempt returns false. So at every moment `reserved` is at least
//!   the number of instances that ever came to exist.
//! - `queued`: raised after a queueing returned true.
//! - `started` / `done`: raised as the item's function begins / ends.
//! - `cancelled`: raised after a cancel (or `mod_delayed`, which replaces
//!   a pending instance) reported an instance.
//!
//! Checked continuously: `started + cancelled <= reserved` whenever an
//! instance starts or is reported cancelled (more means one instance ran
//! twice, or ran and was also reported cancelled), and the function's
//! running flag is clear when it begins (else it runs concurrently with
//! itself). Checked at the end, when nothing is queued any more:
//! `queued == started + cancelled == done + cancelled` for every item.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// What went wrong (the kinds of invariant violation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Violation {
    /// An instance ran or was reported cancelled beyond what was queued
    /// (`a`: item, `b`: started + cancelled, `c`: reserved).
    RanTwice = 1,
    /// The item's function began while it was running (`a`: item).
    Concurrent,
    /// At the end, runs and cancels do not add up to the queueings
    /// (`a`: item, `b`: queued, `c`: started + cancelled).
    Unbalanced,
    /// At the end, an instance started but never finished (`a`: item,
    /// `b`: started, `c`: done).
    Unfinished,
    /// Two items of an ordered queue ran at once (`a`: item).
    OrderedOverlap,
    /// A thread ran on a CPU outside its affinity (`a`: CPU, `b`: the
    /// affinity mask, `c`: the thread's id).
    Affinity,
    /// Code ran in the wrong context (`a`: which check, see
    /// [`context_check_name`]).
    Context,
    /// A flush or `cancel_sync` returned while an instance of the item
    /// was still queued or running (`a`: item, `b`: queued, `c`: done +
    /// cancelled).
    FlushEarly,
    /// An API returned an error its documentation does not give for the
    /// situation (`a`: which call, see `everything::Op`, `b`: errno).
    BadErrno,
    /// `kthread_stop` returned another value than the thread's (`a`:
    /// thread id, `b`: returned, `c`: wanted).
    StopValue,
    /// Data read back differ from what was written (`a`: byte offset on
    /// the disk, `b`: read, `c`: wanted).
    Data,
    /// An actor was stuck in one operation (`a`: actor, `b`: operation,
    /// `c`: seconds).
    Hang,
    /// A threaded interrupt's wake-up was lost (`a`: hard-handler runs,
    /// `b`: the last run the thread saw).
    IrqLostWake,
    /// The hard handler of a one-shot interrupt ran while its thread
    /// function ran (the line was not masked).
    IrqNotMasked,
    /// Memory pressure below the low watermark never woke kswapd (`a`:
    /// such rounds).
    KswapdNotWoken,
    /// A thread the case created was still alive at the end (`a`: id).
    LeakedThread,
    /// A tasklet was running after `tasklet_disable` returned (`a`:
    /// tasklet). Its runs are tracked as items, numbered from 1000.
    Tasklet,
    /// Teardown failed (`a`: which step, `b`: errno).
    Teardown,
    /// An item queued on a queue made for it did not run exactly once
    /// before the queue's destruction returned (`a`: runs, `b`: queueings).
    TmpQueue,
    /// Memory did not come back at the end (`a`: frames, `b`: heap bytes
    /// beyond the allowance).
    Leak,
}

impl Violation {
    /// Every kind, for decoding.
    const ALL: [Violation; 20] = [
        Violation::RanTwice,
        Violation::Concurrent,
        Violation::Unbalanced,
        Violation::Unfinished,
        Violation::OrderedOverlap,
        Violation::Affinity,
        Violation::Context,
        Violation::FlushEarly,
        Violation::BadErrno,
        Violation::StopValue,
        Violation::Data,
        Violation::Hang,
        Violation::IrqLostWake,
        Violation::IrqNotMasked,
        Violation::KswapdNotWoken,
        Violation::LeakedThread,
        Violation::Tasklet,
        Violation::Teardown,
        Violation::TmpQueue,
        Violation::Leak,
    ];

    fn from_u32(v: u32) -> Option<Violation> {
        Violation::ALL.iter().copied().find(|k| *k as u32 == v)
    }
}

/// Names of the context checks ([`Violation::Context`]'s `a`).
pub fn context_check_name(a: u64) -> &'static str {
    match a {
        1 => "a work item ran in interrupt context",
        2 => "a BH work item ran outside softirq context",
        3 => "a hard IRQ handler ran outside hard-IRQ context",
        4 => "an IRQ thread function ran outside its thread",
        5 => "a tasklet ran outside softirq context",
        6 => "a port timer callback ran outside hard-IRQ context",
        _ => "an unknown context check",
    }
}

/// How many violations are kept with their details (all are counted).
pub const KEPT: usize = 16;

#[derive(Default)]
struct Record {
    kind: AtomicU32,
    a: AtomicU64,
    b: AtomicU64,
    c: AtomicU64,
}

/// Invariant violations: a count and the first [`KEPT`] with their
/// details. Usable from any context.
#[derive(Default)]
pub struct Violations {
    count: AtomicU64,
    first: [Record; KEPT],
}

impl Violations {
    /// None yet.
    pub fn new() -> Self {
        Violations::default()
    }

    /// Count one, keeping its details if it is among the first.
    ///
    /// Context: any.
    pub fn record(&self, kind: Violation, a: u64, b: u64, c: u64) {
        let n = self.count.fetch_add(1, Ordering::SeqCst) as usize;
        if let Some(r) = self.first.get(n) {
            r.a.store(a, Ordering::Relaxed);
            r.b.store(b, Ordering::Relaxed);
            r.c.store(c, Ordering::Relaxed);
            r.kind.store(kind as u32, Ordering::Release);
        }
    }

    /// Violations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// How many of the kept ones are of `kind`.
    pub fn kept_of(&self, kind: Violation) -> usize {
        self.first.iter().filter(|r| r.kind.load(Ordering::Acquire) == kind as u32).count()
    }

    /// The kept ones, one line each; `op_name` names the operations of
    /// [`Violation::BadErrno`] and [`Violation::Hang`].
    pub fn describe(&self, op_name: &dyn Fn(u64) -> &'static str) -> Vec<String> {
        self.first
            .iter()
            .filter_map(|r| {
                let kind = Violation::from_u32(r.kind.load(Ordering::Acquire))?;
                let (a, b, c) = (r.a.load(Ordering::Relaxed), r.b.load(Ordering::Relaxed), r.c.load(Ordering::Relaxed));
                Some(match kind {
                    Violation::RanTwice => format!("item {a}: {b} runs and cancels for {c} queueings at most"),
                    Violation::Concurrent => format!("item {a} ran concurrently with itself"),
                    Violation::Unbalanced => format!("item {a}: queued {b} times, ran or was cancelled {c} times"),
                    Violation::Unfinished => format!("item {a}: started {b} times, finished {c} times"),
                    Violation::OrderedOverlap => format!("ordered item {a} ran beside another item of its queue"),
                    Violation::Affinity => format!("thread {c} ran on CPU {a}, outside its affinity {b:#x}"),
                    Violation::Context => format!("{} (check {a})", context_check_name(a)),
                    Violation::FlushEarly => {
                        format!("item {a}: flush or cancel_sync returned with {b} queued and {c} finished or cancelled")
                    }
                    Violation::BadErrno if b == 0 => {
                        format!("operation {} did what its documentation rules out (case {c})", op_name(a))
                    }
                    Violation::BadErrno => format!("operation {} returned errno {b}, not a documented one", op_name(a)),
                    Violation::StopValue => format!("kthread_stop of thread {a} returned {b}, not {c}"),
                    Violation::Data => format!("disk byte {a}: read {b:#04x}, wrote {c:#04x}"),
                    Violation::Hang => format!("actor {a} stuck in {} for {c} s", op_name(b)),
                    Violation::IrqLostWake => {
                        format!("IRQ thread missed a wake-up: hard handler ran {a} times, the thread saw {b}")
                    }
                    Violation::IrqNotMasked => "a one-shot hard handler ran while its thread function ran".into(),
                    Violation::KswapdNotWoken => {
                        format!("{a} rounds of memory pressure below the low watermark never woke kswapd")
                    }
                    Violation::LeakedThread => format!("thread {a} made by the case is alive after it"),
                    Violation::Tasklet => format!("tasklet {a} was running after tasklet_disable returned"),
                    Violation::Teardown => format!("teardown step {a} failed (errno {b}, {c})"),
                    Violation::TmpQueue => format!("an item queued {b} time(s) on a queue made for it ran {a} time(s)"),
                    Violation::Leak => {
                        format!("memory did not come back: {a} frames and {b} heap bytes beyond the allowance")
                    }
                })
            })
            .collect()
    }
}

/// One item's counts (see the module documentation).
#[derive(Default)]
pub struct Slot {
    reserved: AtomicU64,
    queued: AtomicU64,
    started: AtomicU64,
    done: AtomicU64,
    cancelled: AtomicU64,
    running: AtomicBool,
}

/// The counts of a set of items, numbered from 0 (from a base in
/// violations, so several trackers can share one [`Violations`]).
pub struct Tracker {
    slots: Vec<Slot>,
    base: u64,
}

/// One item's counts at a moment (for figures and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Queueings that returned true.
    pub queued: u64,
    /// Runs begun.
    pub started: u64,
    /// Runs finished.
    pub done: u64,
    /// Instances reported cancelled.
    pub cancelled: u64,
}

impl Tracker {
    /// `n` items, none queued.
    pub fn new(n: usize) -> Self {
        Tracker::with_base(n, 0)
    }

    /// `n` items, named `base..base + n` in violations.
    pub fn with_base(n: usize, base: u64) -> Self {
        Tracker { slots: (0..n).map(|_| Slot::default()).collect(), base }
    }

    fn name(&self, id: usize) -> u64 {
        self.base + id as u64
    }

    /// The number reports give item `id`.
    pub fn name_of(&self, id: usize) -> u64 {
        self.name(id)
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Are there none?
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Queue item `id` through `queue` (which returns whether an instance
    /// was made), keeping the counts.
    ///
    /// Context: any.
    pub fn queue_with(&self, id: usize, queue: impl FnOnce() -> bool) -> bool {
        let s = &self.slots[id];
        s.reserved.fetch_add(1, Ordering::SeqCst);
        let made = queue();
        if made {
            s.queued.fetch_add(1, Ordering::SeqCst);
        } else {
            s.reserved.fetch_sub(1, Ordering::SeqCst);
        }
        made
    }

    /// Make a new instance of item `id` through `replace`, which always
    /// makes one and returns whether it replaced a pending one (Linux's
    /// `mod_delayed_work`): the replaced instance counts as cancelled.
    ///
    /// Context: any.
    pub fn replace_with(&self, id: usize, replace: impl FnOnce() -> bool, v: &Violations) -> bool {
        let s = &self.slots[id];
        s.reserved.fetch_add(1, Ordering::SeqCst);
        let replaced = replace();
        s.queued.fetch_add(1, Ordering::SeqCst);
        if replaced {
            self.cancelled(id, true, v);
        }
        replaced
    }

    /// A cancel of item `id` returned `was` (true: it reported an
    /// instance).
    ///
    /// Context: any.
    pub fn cancelled(&self, id: usize, was: bool, v: &Violations) {
        if !was {
            return;
        }
        let s = &self.slots[id];
        let c = s.cancelled.fetch_add(1, Ordering::SeqCst) + 1;
        let st = s.started.load(Ordering::SeqCst);
        let r = s.reserved.load(Ordering::SeqCst);
        if st + c > r {
            v.record(Violation::RanTwice, self.name(id), st + c, r);
        }
    }

    /// Run item `id`'s body, checking that it is not running already and
    /// that an instance exists for this run.
    ///
    /// Context: any.
    pub fn run<T>(&self, id: usize, v: &Violations, body: impl FnOnce() -> T) -> T {
        let s = &self.slots[id];
        if s.running.swap(true, Ordering::SeqCst) {
            v.record(Violation::Concurrent, self.name(id), 0, 0);
        }
        let st = s.started.fetch_add(1, Ordering::SeqCst) + 1;
        let c = s.cancelled.load(Ordering::SeqCst);
        let r = s.reserved.load(Ordering::SeqCst);
        if st + c > r {
            v.record(Violation::RanTwice, self.name(id), st + c, r);
        }
        let out = body();
        s.running.store(false, Ordering::SeqCst);
        s.done.fetch_add(1, Ordering::SeqCst);
        out
    }

    /// Is item `id`'s body running now (inside [`Tracker::run`])?
    pub fn is_running(&self, id: usize) -> bool {
        self.slots[id].running.load(Ordering::SeqCst)
    }

    /// Item `id`'s counts now.
    pub fn counts(&self, id: usize) -> Counts {
        let s = &self.slots[id];
        Counts {
            queued: s.queued.load(Ordering::SeqCst),
            started: s.started.load(Ordering::SeqCst),
            done: s.done.load(Ordering::SeqCst),
            cancelled: s.cancelled.load(Ordering::SeqCst),
        }
    }

    /// Has every instance of item `id` finished or been cancelled, with
    /// none running?
    pub fn is_settled(&self, id: usize) -> bool {
        let c = self.counts(id);
        c.done + c.cancelled == c.queued && !self.slots[id].running.load(Ordering::SeqCst)
    }

    /// After a flush or `cancel_sync` of item `id` by the only context
    /// that queues it: every instance must have finished or been
    /// cancelled, and none may be running.
    ///
    /// Context: any.
    pub fn check_settled(&self, id: usize, v: &Violations) {
        let c = self.counts(id);
        if !self.is_settled(id) {
            v.record(Violation::FlushEarly, self.name(id), c.queued, c.done + c.cancelled);
        }
    }

    /// The check at the end, once nothing is queued or running: every
    /// instance ran exactly once or was reported cancelled. Returns the
    /// violations it found.
    pub fn check_all(&self, v: &Violations) -> u64 {
        let mut found = 0;
        for id in 0..self.slots.len() {
            let c = self.counts(id);
            if c.queued != c.started + c.cancelled {
                v.record(Violation::Unbalanced, self.name(id), c.queued, c.started + c.cancelled);
                found += 1;
            } else if c.started != c.done {
                v.record(Violation::Unfinished, self.name(id), c.started, c.done);
                found += 1;
            }
        }
        found
    }

    /// Totals over every item: (queued, started, cancelled).
    pub fn totals(&self) -> (u64, u64, u64) {
        (0..self.slots.len())
            .map(|id| self.counts(id))
            .fold((0, 0, 0), |t, c| (t.0 + c.queued, t.1 + c.started, t.2 + c.cancelled))
    }
}

/// Check that `cpu` is in `mask` (a thread's affinity as the port reports
/// it while the thread runs there); record a violation naming `thread`
/// otherwise. True if it is.
///
/// Context: any.
pub fn check_cpu(cpu: usize, mask: kport::CpuMask, thread: usize, v: &Violations) -> bool {
    if mask.contains(cpu) {
        return true;
    }
    v.record(Violation::Affinity, cpu as u64, mask.0, thread as u64);
    false
}
