//! Suite `leak_demo`: cases that leak on purpose, one resource each, so
//! the harness's leak check (`crate::leak`, `docs/leaks.md`) is seen to
//! fail the suite and name every leak. Explicit: it runs only when named
//! (`tests=leak_demo`; the runner's own test `leak_check` boots it). Every
//! case passes; the suite is then reported `not ok` with what stayed.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use kport::port;
use kport::sync::Completion;
use kthreadd::kthread;
use workqueue::{Work, Workqueue, WqFlags};

use crate::port_api::wait_for;
use crate::{check, err, ktest};

/// Bytes the heap case leaks: far above the check's tolerance.
pub const LEAKED_BYTES: usize = 1 << 20;

/// Where the heap case's forgotten allocation is (never read again).
static LEAKED: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());

ktest!(leak_demo::a_kthread_left_running [explicit = true] => |ctx| {
    let t = kthread::Builder::new(format_args!("leak-demo"), || {
        while !kthread::should_stop() {
            kthread::sleep_ms_or_stop(1_000);
        }
        0
    })
    .run()
    .map_err(err("kthread_run"))?;
    check!(wait_for(5_000, || t.has_started()), "the thread never started");
    // Never stopped: the handle is dropped and the thread sleeps on.
    drop(t);
    Ok(())
});

ktest!(leak_demo::a_heap_allocation_forgotten [explicit = true] => |ctx| {
    let v: Vec<u8> = alloc::vec![0x5a; LEAKED_BYTES];
    // Kept where the optimizer cannot prove it unused (an allocation that
    // is never read may be removed altogether), then forgotten.
    let leaked: &'static mut [u8] = core::hint::black_box(v).leak();
    LEAKED.store(leaked.as_mut_ptr(), Ordering::SeqCst);
    Ok(())
});

ktest!(leak_demo::a_timer_left_armed [explicit = true] => |ctx| {
    let fired = Arc::new(AtomicBool::new(false));
    let f = fired.clone();
    let t = kport::timers::new(Arc::new(move || f.store(true, Ordering::SeqCst)));
    // An hour from now: long after the run ends.
    t.arm(port().now_ns() + 3_600_000_000_000, None);
    check!(t.is_pending(), "the timer is not armed");
    core::mem::forget(t);
    Ok(())
});

ktest!(leak_demo::items_queued_on_a_queue_never_flushed [explicit = true] => |ctx| {
    // An ordered queue: the first item waits for a completion nobody will
    // complete, the second is queued behind it and never runs. Neither the
    // queue nor the items are ever flushed, cancelled or destroyed.
    let q = Workqueue::new("leak-demo", WqFlags::ORDERED | WqFlags::UNBOUND, 1).map_err(err("alloc_workqueue"))?;
    let never = Arc::new(Completion::new());
    let started = Arc::new(AtomicBool::new(false));
    let (n, s) = (never.clone(), started.clone());
    let blocker = Work::named("leak_demo_blocker", move || {
        s.store(true, Ordering::SeqCst);
        n.wait("leak_demo_never");
    });
    let behind = Work::named("leak_demo_behind", || {});
    check!(q.queue(&blocker), "the blocker was not queued");
    check!(wait_for(5_000, || started.load(Ordering::SeqCst)), "the blocker never started");
    check!(q.queue(&behind), "the second item was not queued");
    core::mem::forget((q, never, blocker, behind));
    Ok(())
});
