//! Counted timers: the one-shot timers the subsystem makes, with a global
//! count of those armed, for the test harness's leak check (Linux has no
//! such count; its nearest tool is `debugobjects`, which reports a
//! `timer_list` freed while armed).
//!
//! Every timer the subsystem's crates make comes from [`new`], which wraps
//! the port's own ([`crate::Port::timer`]). The port's method stays the raw
//! primitive (the suites that check the port's contract call it directly);
//! code above the port calls [`new`], so the count covers every timer of
//! every port without each port keeping one.
//!
//! # What is counted
//! [`armed`] is the number of counted timers that are armed, or whose
//! callback is running and has not re-armed them yet (a periodic timer that
//! re-arms itself from its callback stays counted throughout). Each timer
//! keeps a flag saying whether it is counted; whoever changes the timer's
//! state (arming, cancelling, the end of its callback) reconciles the flag
//! with the port's [`PortTimer::is_pending`] afterwards, and looks again
//! until the state it saw held across its update. No lock is taken: when
//! nothing is in progress, the flag of every timer equals its pending state
//! and the count is exact. While arms, cancels and expiries race, it may be
//! off by the timers involved, for as long as they take.
//!
//! Dropping a counted timer cancels it (as Redox's port and Linux's
//! `del_timer` before `kfree` do; the testkernel's and the host's own
//! timers would fire later), so a timer that is gone is never counted.

use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::PortTimer;

/// Counted timers armed (or running their callback) now.
static ARMED: AtomicUsize = AtomicUsize::new(0);

/// How many timers made with [`new`] are armed, or running a callback that
/// has not re-armed them yet (module documentation).
///
/// Context: any.
pub fn armed() -> usize {
    ARMED.load(Ordering::Acquire)
}

struct Shared {
    /// A: counted in [`ARMED`]; changed only by [`Shared::reconcile`] and
    /// the drop, each adjusting the count when it flips it.
    counted: AtomicBool,
    /// O: the port's timer (set right after it is made).
    hw: spin::Once<Box<dyn PortTimer>>,
}

impl Shared {
    fn hw(&self) -> &dyn PortTimer {
        &**self.hw.get().expect("set in new")
    }

    /// Make `counted` follow the port timer's state, and look again until
    /// that state held across the update (module documentation).
    fn reconcile(&self) {
        loop {
            let pending = self.hw().is_pending();
            set_counted(&self.counted, pending);
            if self.hw().is_pending() == pending {
                return;
            }
        }
    }
}

/// Flip `flag` to `on`, adjusting the count if it changed.
fn set_counted(flag: &AtomicBool, on: bool) {
    if flag.swap(on, Ordering::AcqRel) != on {
        if on {
            ARMED.fetch_add(1, Ordering::AcqRel);
        } else {
            ARMED.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A counted timer (what [`new`] returns).
struct Counted(Arc<Shared>);

impl PortTimer for Counted {
    fn arm(&self, deadline_ns: u64, cpu: Option<usize>) {
        self.0.hw().arm(deadline_ns, cpu);
        self.0.reconcile();
    }

    fn cancel(&self) -> bool {
        let was = self.0.hw().cancel();
        self.0.reconcile();
        was
    }

    fn cancel_sync(&self) -> bool {
        let was = self.0.hw().cancel_sync();
        self.0.reconcile();
        was
    }

    fn is_pending(&self) -> bool {
        self.0.hw().is_pending()
    }
}

impl Drop for Counted {
    /// Cancel it: a timer that is gone is neither counted nor fires.
    fn drop(&mut self) {
        self.0.hw().cancel();
        set_counted(&self.0.counted, false);
    }
}

/// A one-shot timer calling `callback` in interrupt context, as
/// [`crate::Port::timer`] makes, counted in [`armed`] while it is armed.
/// Subsystem code makes its timers here.
///
/// Context: any context in which the port can make a timer.
pub fn new(callback: Arc<dyn Fn() + Send + Sync>) -> Box<dyn PortTimer> {
    let shared = Arc::new(Shared { counted: AtomicBool::new(false), hw: spin::Once::new() });
    let weak: Weak<Shared> = Arc::downgrade(&shared);
    let hw = crate::port().timer(Arc::new(move || {
        callback();
        // Fired and perhaps re-armed by the callback: count what it is now.
        if let Some(s) = weak.upgrade() {
            s.reconcile();
        }
    }));
    shared.hw.call_once(|| hw);
    Box::new(Counted(shared))
}
