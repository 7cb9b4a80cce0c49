//! Context checks: may the caller sleep here? (Linux `might_sleep`,
//! `in_atomic`, `in_interrupt`.)
//!
//! Every API of the subsystem that may sleep calls [`might_sleep`] as its
//! first statement, so a call from the wrong context is reported at the
//! call site whether or not the call would have blocked this time. Without
//! it, `Mutex::lock` under a spinlock passes silently for as long as the
//! mutex happens to be free, and deadlocks the day it is not.
//!
//! A report is Linux's: a `BUG: sleeping function called from invalid
//! context at FILE:LINE` line naming the caller of the sleeping API (every
//! such API is `#[track_caller]`), a line with the context (preemption
//! count, interrupts off, hard or soft interrupt context, the running
//! context's id and name), and a stack dump. The call then goes on, as in
//! Linux: a report is a warning, not a panic. Blocking for real in atomic
//! context is still fatal in the ports' `schedule` ("scheduling while
//! atomic"), which a warning cannot make safe.

use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::sync::SpinLock;

/// What makes the caller atomic (Linux keeps the same facts in
/// `preempt_count()` and the interrupt flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtomicContext {
    /// Preemption-disable depth (each held spinlock counts one).
    pub preempt_count: u32,
    /// Interrupts are disabled (by the subsystem's own sections on a port
    /// whose kernel code always runs with interrupts off).
    pub irqs_disabled: bool,
    /// In a hard interrupt handler (Linux `in_hardirq`).
    pub hardirq: bool,
    /// In a softirq handler or with bottom halves disabled (Linux
    /// `in_softirq`).
    pub softirq: bool,
}

impl AtomicContext {
    /// May a context in this state sleep?
    pub fn may_sleep(&self) -> bool {
        self.preempt_count == 0 && !self.irqs_disabled && !self.hardirq && !self.softirq
    }

    /// Is it interrupt context, hard or soft (Linux `in_interrupt`)?
    pub fn in_interrupt(&self) -> bool {
        self.hardirq || self.softirq
    }
}

/// One [`might_sleep`] report, kept for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Where the sleeping API was called.
    pub location: &'static Location<'static>,
    /// The caller's context then.
    pub context: AtomicContext,
    /// Id of the calling context.
    pub task: usize,
}

/// Reports printed in full before printing thins out (a loop that sleeps
/// in atomic context would otherwise flood the console; Linux rate-limits
/// the same message to one per second). Every report is counted.
pub const REPORTS_PRINTED: u64 = 32;
/// After [`REPORTS_PRINTED`], one report in this many is printed.
pub const REPORTS_PRINT_EVERY: u64 = 1024;

/// Reports kept for [`reports_since`] (the latest ones).
pub const REPORTS_KEPT: usize = 16;

static REPORTS: AtomicU64 = AtomicU64::new(0);

/// Until the host kernel says its scheduler runs ([`scheduling_started`]),
/// the boot CPU calls sleeping APIs with interrupts off while nothing else
/// can run: not reported (Linux skips the check before `SYSTEM_SCHEDULING`).
static BOOTING: AtomicBool = AtomicBool::new(true);

/// The host kernel's scheduler runs: from now on [`might_sleep`] reports.
/// Ports call it once, when boot code stops calling subsystem APIs from
/// its interrupts-off boot context.
pub fn scheduling_started() {
    BOOTING.store(false, Ordering::Release);
}

/// Id of a context that asked to be treated as atomic by [`might_sleep`]
/// ([`as_if_atomic`]; 0: none).
static AS_IF_ATOMIC: AtomicUsize = AtomicUsize::new(0);

/// The latest reports, by number (a ring of [`REPORTS_KEPT`]).
struct Log {
    ring: [Option<(u64, Report)>; REPORTS_KEPT],
}

static LOG: SpinLock<Log> =
    SpinLock::ranked("might_sleep reports", crate::sync::rank::REPORTS, Log { ring: [None; REPORTS_KEPT] });

/// Report the caller if it may not sleep (Linux `might_sleep`). The first
/// statement of every API that may sleep; `#[track_caller]` all the way
/// up, so the report names the line that called the sleeping API.
///
/// Context: any. Does nothing before a port is installed and until the port
/// says its scheduler runs ([`scheduling_started`]).
#[track_caller]
#[inline]
pub fn might_sleep() {
    if !crate::installed() || BOOTING.load(Ordering::Relaxed) {
        return;
    }
    let p = crate::port();
    let ctx = current();
    if !ctx.may_sleep() {
        report(Location::caller(), ctx);
    } else if AS_IF_ATOMIC.load(Ordering::Relaxed) != 0 && AS_IF_ATOMIC.load(Ordering::Acquire) == p.current_id() {
        report(Location::caller(), AtomicContext { preempt_count: 1, ..ctx });
    }
}

/// Run `f` with [`might_sleep`] treating the caller as atomic (preemption
/// count 1) while it really may sleep: how a test proves that an API which
/// always blocks reports its caller on entry, without blocking in atomic
/// context for real. One context at a time; a test hook, not for kernel
/// code.
///
/// Context: may sleep.
pub fn as_if_atomic<R>(f: impl FnOnce() -> R) -> R {
    let me = crate::port().current_id();
    while AS_IF_ATOMIC.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire).is_err() {
        crate::port().yield_now();
    }
    let r = f();
    AS_IF_ATOMIC.store(0, Ordering::Release);
    r
}

#[cold]
#[inline(never)]
fn report(location: &'static Location<'static>, context: AtomicContext) {
    let p = crate::port();
    let task = p.current_id();
    let report = Report { location, context, task };
    let n = {
        // Numbered under the log's lock, so the ring holds the latest ones.
        let mut log = LOG.lock();
        let n = REPORTS.fetch_add(1, Ordering::AcqRel) + 1;
        log.ring[(n % REPORTS_KEPT as u64) as usize] = Some((n, report));
        n
    };
    if n <= REPORTS_PRINTED || n.is_multiple_of(REPORTS_PRINT_EVERY) {
        p.console_line(&alloc::format!(
            "# BUG: sleeping function called from invalid context at {}:{}",
            location.file(),
            location.line()
        ));
        p.console_line(&alloc::format!(
            "# in_atomic(): 1, irqs_disabled(): {}, hardirq: {}, softirq: {}, preempt_count: {}, id: {}, name: {} (report {n})",
            u8::from(context.irqs_disabled),
            u8::from(context.hardirq),
            u8::from(context.softirq),
            context.preempt_count,
            task,
            p.current().name(),
        ));
        p.dump_stack();
    }
}

/// Reports made since boot.
pub fn reports() -> u64 {
    REPORTS.load(Ordering::Acquire)
}

/// The latest report.
pub fn last_report() -> Option<Report> {
    let log = LOG.lock();
    log.ring.iter().flatten().max_by_key(|(n, _)| *n).map(|(_, r)| *r)
}

/// The reports made after the first `count` (as [`reports`] returned it),
/// oldest first, as far as the log still holds them.
pub fn reports_since(count: u64) -> alloc::vec::Vec<Report> {
    let log = LOG.lock();
    let mut v: alloc::vec::Vec<(u64, Report)> =
        log.ring.iter().flatten().filter(|(n, _)| *n > count).copied().collect();
    v.sort_by_key(|(n, _)| *n);
    v.into_iter().map(|(_, r)| r).collect()
}

/// May the caller sleep (no report)?
pub fn may_sleep() -> bool {
    !crate::installed() || BOOTING.load(Ordering::Relaxed) || current().may_sleep()
}

/// The caller's context: the port's view plus the bottom-half word
/// ([`crate::irq::bh_count`]), which the softirq layer keeps on every port.
///
/// Context: any.
pub fn current() -> AtomicContext {
    crate::port().atomic_context_bh()
}
