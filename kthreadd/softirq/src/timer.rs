//! Timers whose callbacks run in the `TIMER` softirq (Linux `timer_list`).
//!
//! The port's one-shot timers call back in hard-IRQ context. A
//! [`SoftTimer`] rides on one: its hard-IRQ callback only puts the timer
//! on its CPU's expired list and raises `TIMER`; the callback runs when the
//! CPU next runs softirqs (at that interrupt's exit), with interrupts
//! enabled and bottom halves counted, as Linux runs `timer_list`
//! callbacks. Delayed work expires through these, on IRQ-safe timers
//! ([`SoftTimer::new_irqsafe`], Linux `TIMER_IRQSAFE`): their callbacks
//! run with interrupts off, from the moment the softirq takes them.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::{Arc, Weak};
use core::sync::atomic::{AtomicU32, Ordering};

use kport::local;
use kport::sync::SpinLock;
use kport::{MAX_CPUS, PortTimer, port};

use crate::softirq::{Vector, in_interrupt, open_softirq, raise_softirq_irqoff};

/// On its CPU's expired list, callback not started.
const QUEUED: u32 = 1 << 0;
/// Callback running.
const RUNNING: u32 = 1 << 1;

struct Inner {
    /// I: the callback.
    cb: Arc<dyn Fn() + Send + Sync>,
    /// I: the port timer it rides on.
    hw: spin::Once<Box<dyn PortTimer>>,
    /// A: `QUEUED`, `RUNNING`.
    state: AtomicU32,
    /// I: run the callback with interrupts off (Linux `TIMER_IRQSAFE`).
    irqsafe: bool,
}

type Expired = SpinLock<VecDeque<Arc<Inner>>>;

/// Each CPU's expired timers, waiting for the `TIMER` softirq (an IRQ-safe
/// leaf).
static EXPIRED: [Expired; MAX_CPUS] =
    [const { SpinLock::ranked("expired timers", crate::RANK_LEAF, VecDeque::new()) }; MAX_CPUS];

/// A one-shot timer whose callback runs in the `TIMER` softirq of the CPU
/// it expired on (Linux `timer_list`).
pub struct SoftTimer(Arc<Inner>);

impl SoftTimer {
    /// A timer calling `cb` in softirq context when it expires.
    pub fn new(cb: Arc<dyn Fn() + Send + Sync>) -> SoftTimer {
        Self::with(cb, false)
    }

    /// A timer whose callback runs with interrupts off, from the moment the
    /// softirq takes the expiry to the callback's end (Linux
    /// `TIMER_IRQSAFE`): an interrupt on that CPU never finds the callback
    /// half done. Delayed work needs it: an instance on its way from the
    /// timer to a worklist must not be stopped there by an interrupt that
    /// then waits for it (a cancel spinning in `try_to_grab_pending`).
    pub fn new_irqsafe(cb: Arc<dyn Fn() + Send + Sync>) -> SoftTimer {
        Self::with(cb, true)
    }

    fn with(cb: Arc<dyn Fn() + Send + Sync>, irqsafe: bool) -> SoftTimer {
        let inner = Arc::new(Inner { cb, hw: spin::Once::new(), state: AtomicU32::new(0), irqsafe });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        inner.hw.call_once(|| {
            kport::timers::new(Arc::new(move || {
                // Hard-IRQ context: hand the callback to the softirq.
                if let Some(t) = weak.upgrade() {
                    expire(t);
                }
            }))
        });
        SoftTimer(inner)
    }

    fn hw(&self) -> &dyn PortTimer {
        &**self.0.hw.get().expect("made in new")
    }

    /// (Re)arm it for `deadline_ns` of the port's clock on `cpu` (or the
    /// calling CPU); an expiry waiting for its softirq is taken back first.
    ///
    /// Context: any.
    pub fn arm(&self, deadline_ns: u64, cpu: Option<usize>) {
        self.unqueue();
        self.hw().arm(deadline_ns, cpu);
    }

    /// Take back an expiry waiting for its softirq; true if there was one.
    fn unqueue(&self) -> bool {
        if self.0.state.fetch_and(!QUEUED, Ordering::AcqRel) & QUEUED == 0 {
            return false;
        }
        // Best effort removal from whichever list holds it; a runner that
        // finds it there without QUEUED passes it over.
        for l in EXPIRED.iter() {
            let mut g = l.lock();
            if let Some(i) = g.iter().position(|x| Arc::ptr_eq(x, &self.0)) {
                g.remove(i);
                break;
            }
        }
        true
    }

    /// Disarm it (Linux `del_timer`).
    ///
    /// Context: any. Return: true if it was pending (armed, or expired with
    /// its callback not started).
    pub fn cancel(&self) -> bool {
        let armed = self.hw().cancel();
        let queued = self.unqueue();
        armed || queued
    }

    /// Disarm it and wait until its callback is not running (Linux
    /// `del_timer_sync`). From its own callback it would wait for itself:
    /// it then only disarms.
    ///
    /// Context: any (spins in atomic context: a callback is short).
    /// Return: true if it was pending.
    pub fn cancel_sync(&self) -> bool {
        let was = self.hw().cancel_sync() | self.unqueue();
        let p = port();
        if self.0.state.load(Ordering::Acquire) & RUNNING != 0 && in_interrupt() {
            // Perhaps called by the callback itself: do not wait.
            return was;
        }
        while self.0.state.load(Ordering::Acquire) & RUNNING != 0 {
            if p.in_atomic() {
                core::hint::spin_loop();
            } else {
                p.yield_now();
            }
        }
        was
    }

    /// Is it armed, or expired with its callback not started?
    pub fn is_pending(&self) -> bool {
        self.hw().is_pending() || self.0.state.load(Ordering::Acquire) & QUEUED != 0
    }
}

impl Drop for SoftTimer {
    /// A timer going away must not call back later.
    fn drop(&mut self) {
        self.cancel_sync();
    }
}

/// Hard-IRQ part: queue `t` on this CPU and raise `TIMER`.
fn expire(t: Arc<Inner>) {
    if t.state.fetch_or(QUEUED, Ordering::AcqRel) & QUEUED != 0 {
        return;
    }
    let was = local::irq_save();
    EXPIRED[local::cpu_id()].lock().push_back(t);
    raise_softirq_irqoff(Vector::Timer);
    local::irq_restore(was);
}

/// Move a dead CPU's expired timers to `to`'s list; returns the vector
/// bits to raise on `to`.
///
/// Context: interrupts off, on `to`.
pub(crate) fn take_over(dead: usize, to: usize) -> u32 {
    let moved = core::mem::take(&mut *EXPIRED[dead % MAX_CPUS].lock());
    if moved.is_empty() {
        return 0;
    }
    EXPIRED[to % MAX_CPUS].lock().extend(moved);
    1 << Vector::Timer as u32
}

/// The `TIMER` softirq: run this CPU's expired callbacks (Linux
/// `run_timer_softirq`).
fn timer_softirq() {
    let cpu = local::cpu_id();
    let expired = core::mem::take(&mut *EXPIRED[cpu].lock());
    for t in expired {
        // An IRQ-safe timer's expiry is taken and run with interrupts off.
        let was = t.irqsafe.then(local::irq_save);
        // Cancelled or re-armed since it expired: pass over.
        let prev = t.state.fetch_and(!QUEUED, Ordering::AcqRel);
        if prev & QUEUED != 0 {
            t.state.fetch_or(RUNNING, Ordering::AcqRel);
            (t.cb)();
            t.state.fetch_and(!RUNNING, Ordering::AcqRel);
        }
        if let Some(was) = was {
            local::irq_restore(was);
        }
    }
}

/// Open the `TIMER` vector.
pub(crate) fn init() {
    open_softirq(Vector::Timer, timer_softirq);
}
