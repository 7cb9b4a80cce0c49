//! Suite `might_sleep`: every API that may sleep reports a call from atomic
//! context at the caller's line, whether or not the call blocks (Linux's
//! `might_sleep`).
//!
//! Each case makes one call that returns without blocking (the condition
//! already holds, the item is idle, the argument is refused early) under a
//! held spinlock, and checks that a report came, that it names this file
//! and the line of the call, that it describes the context (preemption
//! count and interrupts off, from the lock) and the calling context's id.
//! APIs that always block (creating a worker, stopping a live thread) are
//! called in a context that may really sleep while `might_sleep` is told to
//! treat it as atomic ([`kport::context::as_if_atomic`]): the report at
//! entry is what is checked, the call then completes normally.

use alloc::format;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use kport::context::{self, as_if_atomic};
use kport::port;
use kport::sync::{Completion, Mutex, SpinLock, WaitQueue};
use kthreadd::kthread::{self, Builder};
use kthreadd::kthread_worker::{KthreadDelayedWork, KthreadWork, KthreadWorker};
use kthreadd::smpboot::{self, PercpuThread};
use workqueue::{DelayedWork, Work, Workqueue, WqFlags};

use crate::port_api::wait_for;
use crate::{Failure, TestResult, check, check_eq, fail, ktest};

/// Check that the reports since `before` start with one at `line` of this
/// file, made by the calling context; `locked` says whether a real
/// spinlock was held (then interrupts and preemption were off).
fn check_report(before: u64, line: u32, locked: bool) -> TestResult {
    let reps = context::reports_since(before);
    let Some(r) = reps.first() else {
        return fail(format!("no might_sleep report for the call at line {line}"));
    };
    check_eq!(r.location.file(), file!(), "the report names the caller's file");
    check_eq!(r.location.line(), line, "the report names the caller's line");
    check!(r.context.preempt_count >= 1, "the context shows preemption off: {:?}", r.context);
    if locked {
        check!(r.context.irqs_disabled, "the spinlock's interrupts-off section shows: {:?}", r.context);
    }
    check_eq!(r.task, port().current_id(), "the report names the calling context");
    Ok(())
}

/// Call `f` (which returns the line of its sleeping call) under a held
/// spinlock and check the report.
fn under_spinlock(f: impl FnOnce() -> u32) -> TestResult {
    let lock = SpinLock::new(());
    let before = context::reports();
    let line = {
        let _g = lock.lock();
        f()
    };
    check_report(before, line, true)
}

/// Call `f` with `might_sleep` treating the caller as atomic, and check the
/// report.
fn as_atomic(f: impl FnOnce() -> u32) -> TestResult {
    let before = context::reports();
    let line = as_if_atomic(f);
    check_report(before, line, false)
}

/// Run `f` in a kernel thread and return its result.
fn in_kthread(f: impl FnOnce() -> TestResult + Send + 'static) -> TestResult {
    let out: Arc<SpinLock<Option<TestResult>>> = Arc::new(SpinLock::new(None));
    let o = out.clone();
    let t = Builder::new(format_args!("might-sleep"), move || {
        *o.lock() = Some(f());
        0
    })
    .run()
    .map_err(|e| Failure::Fail(format!("create: {e:?}")))?;
    check!(wait_for(10_000, || t.has_exited()), "the thread did not finish");
    let _ = t.stop();
    out.lock().take().unwrap_or_else(|| fail("the thread left no result"))
}

// ---------------------------------------------------------------- kport

ktest!(might_sleep::mutex_lock_uncontended [may_report = true] => |ctx| {
    let m = Mutex::new(0);
    under_spinlock(|| {
        let at = line!() + 1;
        let g = m.lock();
        drop(g);
        at
    })
});

ktest!(might_sleep::completion_wait_when_done [may_report = true] => |ctx| {
    let c = Completion::new();
    c.complete_all();
    under_spinlock(|| {
        let at = line!() + 1;
        c.wait("done");
        at
    })
});

ktest!(might_sleep::completion_wait_deadline_when_done [may_report = true] => |ctx| {
    let c = Completion::new();
    c.complete_all();
    under_spinlock(|| {
        let at = line!() + 1;
        c.wait_deadline("done", 0);
        at
    })
});

ktest!(might_sleep::wait_event_condition_true [may_report = true] => |ctx| {
    let wq = WaitQueue::new();
    under_spinlock(|| {
        let at = line!() + 1;
        wq.wait_event("true", || true);
        at
    })
});

ktest!(might_sleep::wait_event_interruptible_condition_true [may_report = true] => |ctx| {
    let wq = WaitQueue::new();
    under_spinlock(|| {
        let at = line!() + 1;
        wq.wait_event_interruptible("true", || true);
        at
    })
});

ktest!(might_sleep::wait_event_deadline_condition_true [may_report = true] => |ctx| {
    let wq = WaitQueue::new();
    under_spinlock(|| {
        let at = line!() + 1;
        wq.wait_event_deadline("true", 0, || true);
        at
    })
});

ktest!(might_sleep::report_names_context_with_preemption_off [may_report = true] => |ctx| {
    // Preemption off without interrupts off: the report says exactly that.
    let m = Mutex::new(());
    let p = port();
    let before = context::reports();
    p.preempt_disable();
    let at = line!() + 1;
    let g = m.lock();
    drop(g);
    p.preempt_enable();
    let reps = context::reports_since(before);
    let Some(r) = reps.first() else { return fail("no report with preemption off") };
    check_eq!(r.location.line(), at);
    check!(r.context.preempt_count >= 1 && !r.context.hardirq, "{:?}", r.context);
    Ok(())
});

ktest!(might_sleep::no_report_where_sleeping_is_allowed => |ctx| {
    let m = Mutex::new(());
    let c = Completion::new();
    c.complete_all();
    let before = context::reports();
    drop(m.lock());
    c.wait("done");
    kthread::msleep(0);
    check_eq!(context::reports(), before, "reports from a context that may sleep");
    Ok(())
});

// ---------------------------------------------------------------- kthreadd

ktest!(might_sleep::kthread_create_refused [may_report = true] => |ctx| {
    under_spinlock(|| {
        let at = line!() + 1;
        let r = Builder::new(format_args!("bad"), || 0).on_cpu(usize::MAX).create();
        assert!(r.is_err());
        at
    })
});

ktest!(might_sleep::kthread_run_refused [may_report = true] => |ctx| {
    under_spinlock(|| {
        let at = line!() + 1;
        let r = Builder::new(format_args!("bad"), || 0).affinity(kport::CpuMask::NONE).run();
        assert!(r.is_err());
        at
    })
});

ktest!(might_sleep::kthread_create_on_cpu_refused [may_report = true] => |ctx| {
    under_spinlock(|| {
        let at = line!() + 1;
        let r = kthread::create_on_cpu(|| 0, usize::MAX, format_args!("bad"));
        assert!(r.is_err());
        at
    })
});

ktest!(might_sleep::kthread_create_that_blocks [may_report = true] => |ctx| {
    let mut made = None;
    as_atomic(|| {
        let at = line!() + 1;
        made = Builder::new(format_args!("blocks"), || 0).create().ok();
        at
    })?;
    let t = made.ok_or(Failure::Fail("create failed".into()))?;
    let _ = t.stop();
    Ok(())
});

ktest!(might_sleep::kthread_stop_of_exited_thread [may_report = true] => |ctx| {
    let t = Builder::new(format_args!("exits"), || 7).run().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check!(wait_for(10_000, || t.has_exited()), "the thread did not exit");
    check_eq!(t.stop().ok(), Some(7));
    under_spinlock(|| {
        let at = line!() + 1;
        let r = t.stop();
        assert_eq!(r.ok(), Some(7));
        at
    })
});

ktest!(might_sleep::kthread_stop_of_live_thread [may_report = true] => |ctx| {
    let wq = Arc::new(WaitQueue::new());
    let t = Builder::new(format_args!("live"), move || {
        kthread::wait_event_or_stop(&wq, "live", || false);
        3
    })
    .run()
    .map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check!(wait_for(10_000, || t.has_started()), "the thread never started");
    let mut got = None;
    as_atomic(|| {
        let at = line!() + 1;
        got = t.stop().ok();
        at
    })?;
    check_eq!(got, Some(3));
    Ok(())
});

ktest!(might_sleep::kthread_park_of_exited_thread [may_report = true] => |ctx| {
    let t = Builder::new(format_args!("exits"), || 0).run().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check!(wait_for(10_000, || t.has_exited()), "the thread did not exit");
    under_spinlock(|| {
        let at = line!() + 1;
        let r = t.park();
        assert!(r.is_err());
        at
    })?;
    let _ = t.stop();
    Ok(())
});

ktest!(might_sleep::kthread_parkme_without_park [may_report = true] => |ctx| {
    in_kthread(|| {
        under_spinlock(|| {
            let at = line!() + 1;
            kthread::parkme();
            at
        })
    })
});

ktest!(might_sleep::kthread_wait_event_or_stop_condition_true [may_report = true] => |ctx| {
    in_kthread(|| {
        let wq = WaitQueue::new();
        under_spinlock(|| {
            let at = line!() + 1;
            kthread::wait_event_or_stop(&wq, "true", || true);
            at
        })
    })
});

ktest!(might_sleep::kthread_sleep_ms_or_stop_zero [may_report = true] => |ctx| {
    under_spinlock(|| {
        let at = line!() + 1;
        kthread::sleep_ms_or_stop(0);
        at
    })
});

ktest!(might_sleep::kthread_msleep_zero [may_report = true] => |ctx| {
    under_spinlock(|| {
        let at = line!() + 1;
        kthread::msleep(0);
        at
    })
});

ktest!(might_sleep::kthreadd_init_again [may_report = true] => |ctx| {
    under_spinlock(|| {
        let at = line!() + 1;
        let r = kthread::init();
        assert!(r.is_ok());
        at
    })
});

ktest!(might_sleep::kthread_worker_create_refused [may_report = true] => |ctx| {
    under_spinlock(|| {
        let at = line!() + 1;
        let r = KthreadWorker::create_on_cpu(usize::MAX, format_args!("bad"));
        assert!(r.is_err());
        at
    })
});

ktest!(might_sleep::kthread_worker_create_that_blocks [may_report = true] => |ctx| {
    let mut made = None;
    as_atomic(|| {
        let at = line!() + 1;
        made = KthreadWorker::create(format_args!("ms-worker")).ok();
        at
    })?;
    let w = made.ok_or(Failure::Fail("create failed".into()))?;
    w.destroy();
    Ok(())
});

/// A worker for the kthread_worker cases.
fn worker() -> Result<KthreadWorker, Failure> {
    KthreadWorker::create(format_args!("ms-worker")).map_err(|e| Failure::Fail(format!("{e:?}")))
}

ktest!(might_sleep::kthread_worker_flush_work_idle [may_report = true] => |ctx| {
    let w = worker()?;
    let item = KthreadWork::new(|| {});
    let r = under_spinlock(|| {
        let at = line!() + 1;
        w.flush_work(&item);
        at
    });
    w.destroy();
    r
});

ktest!(might_sleep::kthread_worker_flush_that_blocks [may_report = true] => |ctx| {
    let w = worker()?;
    let r = as_atomic(|| {
        let at = line!() + 1;
        w.flush();
        at
    });
    w.destroy();
    r
});

ktest!(might_sleep::kthread_worker_cancel_sync_idle [may_report = true] => |ctx| {
    let w = worker()?;
    let item = KthreadWork::new(|| {});
    let r = under_spinlock(|| {
        let at = line!() + 1;
        w.cancel_sync(&item);
        at
    });
    w.destroy();
    r
});

ktest!(might_sleep::kthread_worker_cancel_delayed_sync_idle [may_report = true] => |ctx| {
    let w = worker()?;
    let item = KthreadDelayedWork::new(|| {});
    let r = under_spinlock(|| {
        let at = line!() + 1;
        w.cancel_delayed_sync(&item);
        at
    });
    w.destroy();
    r
});

ktest!(might_sleep::kthread_worker_destroy_that_blocks [may_report = true] => |ctx| {
    let w = worker()?;
    as_atomic(|| {
        let at = line!() + 1;
        w.destroy();
        at
    })
});

/// A per-CPU thread kind that never has work.
struct Idle;

impl PercpuThread for Idle {
    fn name(&self, cpu: usize) -> alloc::string::String {
        format!("ms-idle/{cpu}")
    }
    fn should_run(&self, _cpu: usize) -> bool {
        false
    }
    fn run(&self, _cpu: usize) {}
}

ktest!(might_sleep::smpboot_register_and_unregister_that_block [may_report = true] => |ctx| {
    let mut reg = None;
    as_atomic(|| {
        let at = line!() + 1;
        reg = smpboot::register(Arc::new(Idle)).ok();
        at
    })?;
    let reg = reg.ok_or(Failure::Fail("register failed".into()))?;
    as_atomic(|| {
        let at = line!() + 1;
        reg.unregister();
        at
    })
});

// ---------------------------------------------------------------- workqueue

ktest!(might_sleep::work_flush_idle [may_report = true] => |ctx| {
    let item = Work::new(|| {});
    under_spinlock(|| {
        let at = line!() + 1;
        item.flush();
        at
    })
});

ktest!(might_sleep::work_cancel_sync_idle [may_report = true] => |ctx| {
    let item = Work::new(|| {});
    under_spinlock(|| {
        let at = line!() + 1;
        item.cancel_sync();
        at
    })
});

ktest!(might_sleep::delayed_work_flush_idle [may_report = true] => |ctx| {
    let item = DelayedWork::new(|| {});
    under_spinlock(|| {
        let at = line!() + 1;
        item.flush();
        at
    })
});

ktest!(might_sleep::delayed_work_cancel_sync_idle [may_report = true] => |ctx| {
    let item = DelayedWork::new(|| {});
    under_spinlock(|| {
        let at = line!() + 1;
        item.cancel_sync();
        at
    })
});

ktest!(might_sleep::workqueue_new_bound [may_report = true] => |ctx| {
    let mut q = None;
    under_spinlock(|| {
        let at = line!() + 1;
        q = Workqueue::new("ms-bound", WqFlags::empty(), 0).ok();
        at
    })?;
    let q = q.ok_or(Failure::Fail("alloc failed".into()))?;
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))
});

ktest!(might_sleep::workqueue_ordered_that_may_block [may_report = true] => |ctx| {
    let mut q = None;
    as_atomic(|| {
        let at = line!() + 1;
        q = Workqueue::ordered("ms-ordered", WqFlags::empty()).ok();
        at
    })?;
    let q = q.ok_or(Failure::Fail("alloc failed".into()))?;
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))
});

/// An empty bound queue for the flush/drain/destroy cases.
fn empty_queue() -> Result<Workqueue, Failure> {
    Workqueue::new("ms-empty", WqFlags::empty(), 0).map_err(|e| Failure::Fail(format!("{e:?}")))
}

ktest!(might_sleep::workqueue_flush_empty [may_report = true] => |ctx| {
    let q = empty_queue()?;
    let r = under_spinlock(|| {
        let at = line!() + 1;
        let _ = q.flush();
        at
    });
    let _ = q.destroy();
    r
});

ktest!(might_sleep::workqueue_drain_empty [may_report = true] => |ctx| {
    let q = empty_queue()?;
    let r = under_spinlock(|| {
        let at = line!() + 1;
        let _ = q.drain();
        at
    });
    let _ = q.destroy();
    r
});

ktest!(might_sleep::workqueue_destroy_empty [may_report = true] => |ctx| {
    let q = empty_queue()?;
    under_spinlock(|| {
        let at = line!() + 1;
        let _ = q.destroy();
        at
    })
});

ktest!(might_sleep::workqueue_init_again [may_report = true] => |ctx| {
    under_spinlock(|| {
        let at = line!() + 1;
        let _ = workqueue::init();
        at
    })
});

ktest!(might_sleep::report_does_not_stop_the_call [may_report = true] => |ctx| {
    // A report is a warning: the call still does its work.
    let m = Mutex::new(0);
    let done = AtomicBool::new(false);
    under_spinlock(|| {
        let at = line!() + 1;
        *m.lock() += 1;
        done.store(true, Ordering::SeqCst);
        at
    })?;
    check!(done.load(Ordering::SeqCst));
    check_eq!(*m.lock(), 1);
    Ok(())
});

// ---------------------------------------------------------------- freezer

ktest!(might_sleep::freezer_set_freezable_no_freeze [may_report = true] => |ctx| {
    in_kthread(|| {
        under_spinlock(|| {
            let at = line!() + 1;
            kthreadd::freezer::set_freezable();
            at
        })
    })
});

ktest!(might_sleep::freezer_try_to_freeze_no_freeze [may_report = true] => |ctx| {
    in_kthread(|| {
        under_spinlock(|| {
            let at = line!() + 1;
            kthreadd::freezer::try_to_freeze();
            at
        })
    })
});

ktest!(might_sleep::kthread_freezable_should_stop_no_freeze [may_report = true] => |ctx| {
    in_kthread(|| {
        under_spinlock(|| {
            let at = line!() + 1;
            kthread::freezable_should_stop(None);
            at
        })
    })
});

ktest!(might_sleep::freezer_wait_event_freezable_condition_true [may_report = true] => |ctx| {
    in_kthread(|| {
        let wq = WaitQueue::new();
        under_spinlock(|| {
            let at = line!() + 1;
            kthreadd::freezer::wait_event_freezable(&wq, "true", || true);
            at
        })
    })
});

ktest!(might_sleep::freezer_freeze_kthreads_nothing_freezable [may_report = true] => |ctx| {
    let r = under_spinlock(|| {
        let at = line!() + 1;
        let _ = kthreadd::freezer::freeze_kthreads();
        at
    });
    kthreadd::freezer::thaw_kthreads();
    r
});

ktest!(might_sleep::freezer_freeze_kthreads_within_nothing_freezable [may_report = true] => |ctx| {
    let r = under_spinlock(|| {
        let at = line!() + 1;
        let _ = kthreadd::freezer::freeze_kthreads_within(0);
        at
    });
    kthreadd::freezer::thaw_kthreads();
    r
});

// ---------------------------------------------------------------- kthread_worker flags

ktest!(might_sleep::kthread_worker_create_on_cpu_with_flags_refused [may_report = true] => |ctx| {
    under_spinlock(|| {
        let at = line!() + 1;
        let r = KthreadWorker::create_on_cpu_with_flags(usize::MAX, kthreadd::kthread_worker::KTW_FREEZABLE, format_args!("bad"));
        assert!(r.is_err());
        at
    })
});

ktest!(might_sleep::kthread_worker_create_with_flags_that_blocks [may_report = true] => |ctx| {
    let mut made = None;
    as_atomic(|| {
        let at = line!() + 1;
        made = KthreadWorker::create_with_flags(kthreadd::kthread_worker::KTW_FREEZABLE, format_args!("ms-fworker")).ok();
        at
    })?;
    let w = made.ok_or(Failure::Fail("create failed".into()))?;
    w.destroy();
    Ok(())
});
