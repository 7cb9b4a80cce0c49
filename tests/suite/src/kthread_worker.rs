//! Suite `kthread_worker`: Linux's `kthread_worker` semantics.

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kport::sync::{Completion, SpinLock};
use kport::{CpuMask, port};
use kthreadd::freezer;
use kthreadd::kthread_worker::{KTW_FREEZABLE, KthreadDelayedWork, KthreadWork, KthreadWorker, KtwFlags};

use crate::bench::{ITERATIONS, WARMUP, report_latency};
use crate::port_api::{msleep, wait_for};
use crate::{Failure, check, check_eq, ktest};

fn worker(name: &str) -> Result<KthreadWorker, Failure> {
    KthreadWorker::create(format_args!("{name}")).map_err(|e| Failure::Fail(format!("create worker: {e:?}")))
}

ktest!(kthread_worker::items_run_in_queue_order_on_one_thread => |ctx| {
    let w = worker("kw-order")?;
    let log = Arc::new(SpinLock::new(Vec::new()));
    let threads = Arc::new(AtomicU64::new(0));
    let items: Vec<KthreadWork> = (0..50)
        .map(|i| {
            let (l, t) = (log.clone(), threads.clone());
            KthreadWork::new(move || {
                l.lock().push(i);
                t.fetch_or(1 << (port().current_id() % 64), Ordering::SeqCst);
            })
        })
        .collect();
    for it in &items {
        check!(w.queue(it));
    }
    w.flush();
    check_eq!(*log.lock(), (0..50).collect::<Vec<_>>());
    check_eq!(threads.load(Ordering::SeqCst).count_ones(), 1, "items ran on more than one thread");
    w.destroy();
    Ok(())
});

ktest!(kthread_worker::queue_answers_false_while_pending => |ctx| {
    let w = worker("kw-pending")?;
    let gate = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let (g, r) = (gate.clone(), runs.clone());
    let blocker = KthreadWork::new(move || while !g.load(Ordering::SeqCst) { port().yield_now() });
    let item = KthreadWork::new(move || { r.fetch_add(1, Ordering::SeqCst); });
    check!(w.queue(&blocker));
    check!(w.queue(&item));
    check!(!w.queue(&item), "queued twice while pending");
    gate.store(true, Ordering::SeqCst);
    w.flush();
    check_eq!(runs.load(Ordering::SeqCst), 1);
    check!(w.queue(&item), "not queueable after it ran");
    w.flush();
    check_eq!(runs.load(Ordering::SeqCst), 2);
    // An item attached to another worker is refused.
    let other = worker("kw-other")?;
    check!(!other.queue(&item), "queued on a second worker");
    other.destroy();
    w.destroy();
    Ok(())
});

ktest!(kthread_worker::flush_work_waits_for_that_item => |ctx| {
    let w = worker("kw-flush")?;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let slow = KthreadWork::new(move || { msleep(30); d.store(true, Ordering::SeqCst); });
    let idle = KthreadWork::new(|| {});
    w.flush_work(&idle); // idle: returns at once
    check!(w.queue(&slow));
    w.flush_work(&slow);
    check!(done.load(Ordering::SeqCst), "flush_work returned before the item finished");
    // Flushing a running item waits for it.
    done.store(false, Ordering::SeqCst);
    check!(w.queue(&slow));
    msleep(5);
    w.flush_work(&slow);
    check!(done.load(Ordering::SeqCst), "flush_work of a running item returned early");
    w.destroy();
    Ok(())
});

ktest!(kthread_worker::cancel_sync_reports_pending_and_waits_for_running => |ctx| {
    let w = worker("kw-cancel")?;
    let gate = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (g, s, f) = (gate.clone(), started.clone(), finished.clone());
    let long = KthreadWork::new(move || {
        s.store(true, Ordering::SeqCst);
        while !g.load(Ordering::SeqCst) { port().yield_now(); }
        f.store(true, Ordering::SeqCst);
    });
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let queued = KthreadWork::new(move || { r.fetch_add(1, Ordering::SeqCst); });
    check!(w.queue(&long));
    check!(w.queue(&queued));
    check!(wait_for(5_000, || started.load(Ordering::SeqCst)), "long item never started");
    // Pending (queued behind the long one): cancelled, reported pending.
    check!(w.cancel_sync(&queued), "cancel of a queued item must report it pending");
    check!(!w.cancel_sync(&queued), "cancel of an idle item must report it idle");
    // Running: cancel_sync waits for it.
    let g2 = gate.clone();
    let opener = kthreadd::kthread_run!(move || { kthreadd::kthread::msleep(30); g2.store(true, Ordering::SeqCst); 0 }, "opener")
        .map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check!(!w.cancel_sync(&long), "a running (not pending) item was reported pending");
    check!(finished.load(Ordering::SeqCst), "cancel_sync returned while the item was still running");
    w.flush();
    check_eq!(runs.load(Ordering::SeqCst), 0, "the cancelled item ran");
    let _ = opener.stop();
    w.destroy();
    Ok(())
});

ktest!(kthread_worker::delayed_work_fires_after_its_delay_and_mod_moves_it => |ctx| {
    let w = worker("kw-delay")?;
    let p = port();
    let fired = Arc::new(AtomicU64::new(0));
    let f = fired.clone();
    let dw = KthreadDelayedWork::new(move || { f.store(port().now_ns(), Ordering::SeqCst); });
    let t0 = p.now_ns();
    check!(w.queue_delayed(&dw, 40_000_000));
    check!(!w.queue_delayed(&dw, 1_000_000), "queued twice while pending");
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0), "delayed work never ran");
    check!(fired.load(Ordering::SeqCst) >= t0 + 40_000_000, "ran {} ns early", t0 + 40_000_000 - fired.load(Ordering::SeqCst));
    // mod_delayed: pull a long delay in.
    fired.store(0, Ordering::SeqCst);
    let t1 = p.now_ns();
    check!(w.queue_delayed(&dw, 10_000_000_000));
    check!(w.mod_delayed(&dw, 20_000_000), "mod of a pending item must report pending");
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0), "modified delayed work never ran");
    check!(fired.load(Ordering::SeqCst) >= t1 + 20_000_000, "ran before the new delay");
    // mod_delayed: push a short delay out.
    fired.store(0, Ordering::SeqCst);
    let t2 = p.now_ns();
    check!(!w.mod_delayed(&dw, 60_000_000), "mod of an idle item must report idle (and queue it)");
    check!(w.mod_delayed(&dw, 80_000_000));
    msleep(65);
    check_eq!(fired.load(Ordering::SeqCst), 0, "ran at the old delay");
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0), "never ran");
    check!(fired.load(Ordering::SeqCst) >= t2 + 80_000_000);
    // Cancel a timer-pending item.
    fired.store(0, Ordering::SeqCst);
    check!(w.queue_delayed(&dw, 20_000_000));
    check!(w.cancel_delayed_sync(&dw), "cancel of a timer-pending item must report pending");
    msleep(40);
    check_eq!(fired.load(Ordering::SeqCst), 0, "a cancelled delayed item ran");
    // Zero delay runs at once.
    check!(w.queue_delayed(&dw, 0));
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0));
    w.destroy();
    Ok(())
});

ktest!(kthread_worker::destroy_runs_pending_work_then_refuses => |ctx| {
    let w = worker("kw-destroy")?;
    let runs = Arc::new(AtomicUsize::new(0));
    let items: Vec<KthreadWork> = (0..20)
        .map(|_| {
            let r = runs.clone();
            KthreadWork::new(move || { msleep(1); r.fetch_add(1, Ordering::SeqCst); })
        })
        .collect();
    for it in &items {
        check!(w.queue(it));
    }
    let t = w.thread().clone();
    w.destroy();
    check_eq!(runs.load(Ordering::SeqCst), 20, "destroy lost pending work");
    check!(t.has_exited(), "destroy left the thread running");
    Ok(())
});

ktest!(kthread_worker::worker_on_cpu_runs_there [min_cpus = 2] => |ctx| {
    let cpu = port().cpu_count() - 1;
    let w = KthreadWorker::create_on_cpu(cpu, format_args!("kw/{cpu}")).map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let seen = Arc::new(AtomicU64::new(0));
    let items: Vec<KthreadWork> = (0..20).map(|_| { let s = seen.clone(); KthreadWork::new(move || { s.fetch_or(1 << port().cpu_id(), Ordering::SeqCst); }) }).collect();
    for it in &items {
        w.queue(it);
        w.flush();
    }
    check_eq!(seen.load(Ordering::SeqCst), 1 << cpu);
    check_eq!(w.thread().affinity(), CpuMask::one(cpu));
    w.destroy();
    Ok(())
});

ktest!(kthread_worker::bench_kthread_worker_queue_run [bench = true] => |ctx| {
    // queue_work on a worker bound to CPU 0 -> first instruction of the
    // item, from a thread on CPU 0.
    let _pin = crate::bench::Pinned::to(0);
    let p = port();
    let w = KthreadWorker::create_on_cpu(0, format_args!("kw-bench")).map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let stamp = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Completion::new());
    let (st, s2) = (stamp.clone(), started.clone());
    let item = KthreadWork::new(move || { s2.store(port().cycles().wrapping_sub(st.load(Ordering::SeqCst)), Ordering::SeqCst); });
    let mut v = Vec::with_capacity(ITERATIONS);
    for i in 0..(ITERATIONS + WARMUP) {
        stamp.store(p.cycles(), Ordering::SeqCst);
        w.queue(&item);
        w.flush_work(&item);
        if i >= WARMUP {
            v.push(started.load(Ordering::SeqCst));
        }
    }
    done.complete_all();
    w.destroy();
    report_latency("kthread_worker_queue_run", &mut v);
    Ok(())
});

// ---------------------------------------------------------------- flags, destroy

ktest!(kthread_worker::freezable_worker_freezes_between_items => |ctx| {
    struct Thaw;
    impl Drop for Thaw {
        fn drop(&mut self) {
            freezer::thaw_kthreads();
        }
    }
    let _thaw = Thaw;
    let w = KthreadWorker::create_with_flags(KTW_FREEZABLE, format_args!("kw-freeze")).map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check_eq!(w.flags(), KtwFlags::FREEZABLE);
    let plain = worker("kw-nofreeze")?;
    check_eq!(plain.flags(), KtwFlags::NONE);
    check!(wait_for(5_000, || w.thread().is_freezable()), "the worker's thread never made itself freezable");
    check!(!plain.thread().is_freezable());
    let gate = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (a_runs, b_runs, c_runs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (g, s, r) = (gate.clone(), started.clone(), a_runs.clone());
    let a = KthreadWork::new(move || {
        s.store(true, Ordering::SeqCst);
        while !g.load(Ordering::SeqCst) {
            msleep(1);
        }
        r.fetch_add(1, Ordering::SeqCst);
    });
    let r = b_runs.clone();
    let b = KthreadWork::new(move || { r.fetch_add(1, Ordering::SeqCst); });
    let r = c_runs.clone();
    let c = KthreadWork::new(move || { r.fetch_add(1, Ordering::SeqCst); });
    check!(w.queue(&a) && w.queue(&b));
    check!(wait_for(5_000, || started.load(Ordering::SeqCst)), "the first item never started");
    // Freeze from a helper: it waits until the worker reaches its freeze
    // point, i.e. until the running item is done.
    let result = Arc::new(SpinLock::new(None));
    let res = result.clone();
    let freezer_thread = kthreadd::kthread_run!(move || { *res.lock() = Some(freezer::freeze_kthreads()); 0 }, "kw-freezer")
        .map_err(|e| Failure::Fail(format!("{e:?}")))?;
    msleep(30);
    check!(result.lock().is_none(), "the freeze completed while an item was running");
    check!(!w.thread().is_frozen(), "froze inside an item");
    gate.store(true, Ordering::SeqCst);
    check!(wait_for(10_000, || result.lock().is_some()), "the freeze never completed");
    let r = result.lock().take();
    check!(matches!(r, Some(Ok(()))), "freeze_kthreads: {:?}", r);
    check!(w.thread().is_frozen(), "the freezable worker is not frozen");
    check_eq!(a_runs.load(Ordering::SeqCst), 1);
    // A worker that is not freezable keeps running items.
    check!(plain.queue(&c));
    plain.flush();
    check_eq!(c_runs.load(Ordering::SeqCst), 1, "the plain worker's item");
    msleep(20);
    check_eq!(b_runs.load(Ordering::SeqCst), 0, "an item ran on a frozen worker");
    freezer::thaw_kthreads();
    check!(wait_for(5_000, || b_runs.load(Ordering::SeqCst) == 1), "the item queued during the freeze never ran");
    // Idle and frozen, then thawed, it still takes work.
    freezer::freeze_kthreads().map_err(|e| Failure::Fail(format!("freeze of an idle worker: {e:?}")))?;
    check!(w.thread().is_frozen(), "an idle freezable worker did not freeze");
    check!(w.queue(&b));
    msleep(20);
    check_eq!(b_runs.load(Ordering::SeqCst), 1, "ran while frozen");
    freezer::thaw_kthreads();
    w.flush();
    check_eq!(b_runs.load(Ordering::SeqCst), 2);
    let _ = freezer_thread.stop();
    w.destroy();
    plain.destroy();
    Ok(())
});

ktest!(kthread_worker::destroy_cancels_armed_delayed_items => |ctx| {
    let w = worker("kw-armed")?;
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    let dw = KthreadDelayedWork::new(move || { f.fetch_add(1, Ordering::SeqCst); });
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let queued = KthreadWork::new(move || { msleep(1); r.fetch_add(1, Ordering::SeqCst); });
    // Dropping an armed item takes it off its worker too.
    let dropped = KthreadDelayedWork::new(|| {});
    check!(w.queue_delayed(&dropped, 1_000_000_000));
    drop(dropped);
    check!(w.queue_delayed(&dw, 100_000_000));
    check!(w.queue(&queued));
    let cancelled = w.destroy();
    check_eq!(cancelled, 1, "destroy reports the armed item cancelled");
    check_eq!(ran.load(Ordering::SeqCst), 1, "a queued item was lost");
    msleep(200);
    check_eq!(fired.load(Ordering::SeqCst), 0, "a cancelled delayed item ran after destroy");
    // Nothing of it is left pending: it may go to another worker.
    let w2 = worker("kw-armed2")?;
    check!(w2.queue_delayed(&dw, 0), "the cancelled item is still pending somewhere");
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) == 1), "never ran on the second worker");
    check!(w2.queue_delayed(&dw, 20_000_000));
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) == 2), "the delayed item never fired");
    check_eq!(w2.destroy(), 0, "nothing armed is left");
    check_eq!(fired.load(Ordering::SeqCst), 2);
    Ok(())
});
