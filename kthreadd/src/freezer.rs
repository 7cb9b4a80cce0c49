//! The freezer for kernel threads (Linux `kernel/freezer.c` and the kernel
//! thread half of `kernel/power/process.c`: `set_freezable`, `freezing`,
//! `try_to_freeze`, `__refrigerator`, `freeze_kernel_threads`,
//! `thaw_kernel_threads`, `wait_event_freezable`).
//!
//! Kernel threads are not freezable unless they say so: a thread calls
//! [`set_freezable`] (Linux clears `PF_NOFREEZE`), then reaches freeze points
//! ([`try_to_freeze`], [`crate::kthread::freezable_should_stop`],
//! [`wait_event_freezable`]). While the system (or a test harness) holds a
//! freeze ([`freeze_kthreads`]), a freezable thread that reaches a freeze
//! point sits there, listed `D` with wait channel `refrigerator`, until
//! [`thaw_kthreads`]; threads that are not freezable keep running.
//!
//! [`freeze_kthreads`] wakes every freezable thread (a sleeper re-checks
//! its condition; a freezable wait then freezes) and waits until each one
//! is frozen, parked or gone, for at most [`FREEZE_TIMEOUT_MS`] (Linux's
//! default `pm_freeze_timeout`). When one refuses, it warns naming them,
//! thaws everything and answers `EBUSY`, as Linux's
//! `freeze_kernel_threads` does.
//!
//! Differences from Linux (also in `docs/kthreadd.md`): a stop or a park
//! releases a frozen thread at any freeze point (Linux's `try_to_freeze`
//! keeps a thread frozen through `kthread_stop` until the thaw), so stop,
//! park and freeze never wait on each other; a parked thread counts as
//! quiescent for the freeze (Linux would wait for it and fail).
//!
//! The protocol between a freezing thread and a thaw: the thread announces
//! its sleep, sets `FROZEN`, then (after a full fence) checks that the
//! freeze is still on; the thaw clears the freeze, then (after a full fence)
//! wakes every thread with `FROZEN` set. One of the two sees the other's
//! write, so the thread either stays awake or gets the wake-up.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering, fence};

use crate::kthread::{self, Inner, Kthread};
use crate::registry;
use crate::state;
use kport::sync::WaitQueue;
use kport::{EAGAIN, EBUSY, Error, Result, SleepState, port};

/// How long [`freeze_kthreads`] waits for every freezable thread to freeze,
/// in ms: Linux's default `freeze_timeout_msecs` (20 s), long enough for a
/// thread finishing a slow item.
pub const FREEZE_TIMEOUT_MS: u64 = 20_000;

/// First and longest pause between two checks of a freeze in progress, in
/// ms (Linux starts at 1 ms and doubles up to 8 ms).
const FREEZE_POLL_MS: (u64, u64) = (1, 8);

/// Most threads named in the warning of a failed freeze (one line).
const WARN_NAMES: usize = 8;

/// A: a freeze of kernel threads is on (Linux `pm_nosig_freezing`). Set by
/// [`freeze_kthreads`], cleared by [`thaw_kthreads`]; sequentially
/// consistent, see the protocol in the module documentation.
static FREEZING: AtomicBool = AtomicBool::new(false);

/// Is a freeze of kernel threads on (Linux `freezer_active` with
/// `pm_nosig_freezing`)?
///
/// Context: any.
pub fn freezer_active() -> bool {
    FREEZING.load(Ordering::SeqCst)
}

/// Should `k` freeze now: a freeze is on and it is freezable.
pub(crate) fn freezing_inner(k: &Inner) -> bool {
    k.ctl.has(state::FREEZABLE) && FREEZING.load(Ordering::SeqCst)
}

/// Sit frozen while a freeze is on and nothing asks the thread to stop or
/// park (Linux `__refrigerator`). True if it was frozen.
pub(crate) fn refrigerator(k: &Inner) -> bool {
    let p = port();
    let mut was_frozen = false;
    loop {
        p.set_current_state(SleepState::Uninterruptible, "refrigerator");
        k.ctl.set(state::FROZEN);
        fence(Ordering::SeqCst);
        let released = k.ctl.has(state::SHOULD_STOP) || k.ctl.should_stay_parked();
        if !FREEZING.load(Ordering::SeqCst) || released {
            break;
        }
        was_frozen = true;
        p.schedule();
    }
    k.ctl.clear(state::FROZEN);
    p.set_current_running();
    was_frozen
}

fn current_inner() -> Option<alloc::sync::Arc<Inner>> {
    kthread::current().map(|k| k.0)
}

/// Make the calling kernel thread freezable, then freeze at once if a
/// freeze is on (Linux `set_freezable`). Outside a kernel thread it warns
/// and does nothing.
///
/// Context: may sleep; in the kernel thread itself. Return: whether it was frozen.
#[track_caller]
pub fn set_freezable() -> bool {
    kport::might_sleep();
    let Some(k) = current_inner() else {
        kport::warn::warn(&alloc::format!(
            "set_freezable called outside a kernel thread (context {}): ignored",
            port().current_id()
        ));
        return false;
    };
    k.ctl.set(state::FREEZABLE);
    freezing_inner(&k) && refrigerator(&k)
}

/// Should the calling thread freeze now (Linux `freezing(current)`): a
/// freeze is on and it is a freezable kernel thread.
///
/// Context: any task context.
pub fn freezing() -> bool {
    current_inner().is_some_and(|k| freezing_inner(&k))
}

/// A freeze point (Linux `try_to_freeze`): if the calling thread should
/// freeze, sit frozen until the thaw, a stop or a park.
///
/// Context: may sleep; in a kernel thread (elsewhere it returns false). Return: whether it was frozen.
#[track_caller]
pub fn try_to_freeze() -> bool {
    kport::might_sleep();
    match current_inner() {
        Some(k) => freezing_inner(&k) && refrigerator(&k),
        None => false,
    }
}

/// Sleep on `wq` until `cond()` holds or the thread is asked to stop,
/// freezing in the wait when a freeze is on (Linux `wait_event_freezable`,
/// with the stop test of [`kthread::wait_event_or_stop`]). True if `cond()`
/// held.
///
/// Context: may sleep; in a kernel thread. Return: whether `cond()` held.
#[track_caller]
pub fn wait_event_freezable(wq: &WaitQueue, wchan: &'static str, mut cond: impl FnMut() -> bool) -> bool {
    kport::might_sleep();
    let k = current_inner();
    loop {
        let mut ok = false;
        wq.wait_event_interruptible(wchan, || {
            ok = cond();
            ok || kthread::should_stop() || k.as_ref().is_some_and(|k| freezing_inner(k))
        });
        if ok || kthread::should_stop() {
            return ok;
        }
        if let Some(k) = k.as_ref() {
            refrigerator(k);
        }
    }
}

/// Must `k` still freeze for the freeze to be complete?
fn must_freeze(k: &Kthread, me: usize) -> bool {
    let w = k.0.ctl.load();
    let freezable = w & state::FREEZABLE != 0;
    let quiescent = w & (state::EXITED | state::FROZEN | state::PARKED) != 0;
    freezable && !quiescent && k.id() != me
}

/// Freeze every freezable kernel thread (Linux `freeze_kernel_threads`),
/// waiting at most [`FREEZE_TIMEOUT_MS`].
///
/// Context: may sleep. Return: `EBUSY` if a freeze is already on or a thread did not freeze in time (everything is thawed then, with a warning naming it), `EAGAIN` if a thaw ended the freeze first.
#[track_caller]
pub fn freeze_kthreads() -> Result<()> {
    kport::might_sleep();
    freeze_kthreads_within(FREEZE_TIMEOUT_MS)
}

/// [`freeze_kthreads`] with a time limit of `timeout_ms` (Linux's
/// `pm_freeze_timeout` tunable).
///
/// Context: may sleep. Return: as [`freeze_kthreads`].
#[track_caller]
pub fn freeze_kthreads_within(timeout_ms: u64) -> Result<()> {
    kport::might_sleep();
    if FREEZING.swap(true, Ordering::SeqCst) {
        return Err(Error::new(EBUSY));
    }
    let p = port();
    let start = p.now_ns();
    let deadline = start + timeout_ms * 1_000_000;
    let me = p.current_id();
    let mut pause = FREEZE_POLL_MS.0;
    loop {
        if !FREEZING.load(Ordering::SeqCst) {
            return Err(Error::new(EAGAIN));
        }
        let todo: Vec<Kthread> = registry::all().into_iter().filter(|k| must_freeze(k, me)).collect();
        if todo.is_empty() {
            return Ok(());
        }
        // Linux's freeze_task: wake it so it reaches a freeze point.
        for k in &todo {
            k.task().wake();
        }
        if p.now_ns() >= deadline {
            let mut names = String::new();
            for k in todo.iter().take(WARN_NAMES) {
                let _ = write!(names, " [{}] (id {})", k.comm(), k.id());
            }
            let more = todo.len().saturating_sub(WARN_NAMES);
            kport::warn::warn(&alloc::format!(
                "freezing of kernel threads failed after {} ms, {} refusing:{names}{}",
                (p.now_ns() - start) / 1_000_000,
                todo.len(),
                if more > 0 { alloc::format!(" and {more} more") } else { String::new() }
            ));
            thaw_kthreads();
            return Err(Error::new(EBUSY));
        }
        kthread::msleep(pause);
        pause = (pause * 2).min(FREEZE_POLL_MS.1);
    }
}

/// End the freeze and wake every frozen kernel thread (Linux
/// `thaw_kernel_threads`). Nothing happens if no freeze is on.
///
/// Context: any task context.
pub fn thaw_kthreads() {
    FREEZING.store(false, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    for k in registry::all() {
        if k.0.ctl.has(state::FROZEN) {
            k.task().wake();
        }
    }
}
