//! Suite `workqueue`: Linux's CMWQ semantics through the `workqueue` crate.

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kport::sync::{Completion, SpinLock};
use kport::{CpuMask, Priority, port};
use kthreadd::kthread::{self, Builder};
use workqueue::{DelayedWork, QueueError, Work, Workqueue, WqFlags, system};

use crate::bench::{ITERATIONS, Pinned, WARMUP, report_count, report_latency, report_throughput_with};
use crate::port_api::{msleep, wait_for};
use crate::{Failure, check, check_eq, ktest, skip};

fn wq(name: &str, flags: WqFlags, max_active: usize) -> Result<Workqueue, Failure> {
    Workqueue::new(name, flags, max_active).map_err(|e| Failure::Fail(format!("alloc_workqueue {name}: {e:?}")))
}

fn spin_ms(ms: u64) {
    let p = port();
    let end = p.now_ns() + ms * 1_000_000;
    while p.now_ns() < end {
        core::hint::spin_loop();
    }
}

/// Tracks how many items run at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Concurrency {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

ktest!(workqueue::ordered_queue_runs_one_at_a_time_in_order => |ctx| {
    let q = Workqueue::ordered("wq-ordered", WqFlags::empty()).map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let log = Arc::new(SpinLock::new(Vec::new()));
    let conc = Arc::new(Concurrency::default());
    let items: Vec<Work> = (0..60)
        .map(|i| {
            let (l, c) = (log.clone(), conc.clone());
            Work::new(move || {
                c.enter();
                if i % 10 == 0 { kthread::msleep(1) }
                l.lock().push(i);
                c.leave();
            })
        })
        .collect();
    for (i, it) in items.iter().enumerate() {
        check!(q.queue_on(i % port().cpu_count(), it));
    }
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check_eq!(*log.lock(), (0..60).collect::<Vec<_>>());
    check_eq!(conc.max.load(Ordering::SeqCst), 1, "an ordered queue ran items concurrently");
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

// Items an ordered queue activates one by one as each ends run back to
// back on the worker that ended the last: Linux activates the next one
// without waking anyone, as that worker's loop takes it. Waking an idle
// worker at each activation (what this kernel did) made the woken workers
// switch in, contend for the pool lock, find nothing and sleep again, item
// after item. Counted here as the context switches of the kworkers other
// than the draining one; other work on the shared unbound pool may wake
// one now and then, hence the slack (the wake-ups this catches were one or
// more per item).
ktest!(workqueue::ordered_drain_wakes_no_other_worker [min_cpus = 2] => |ctx| {
    const N: usize = 200;
    let q = Workqueue::ordered("wq-ordered-drain", WqFlags::empty()).map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let gate = Arc::new(Completion::new());
    let g = gate.clone();
    let first = Work::new(move || g.wait("gate"));
    let ran_by = Arc::new(SpinLock::new(Vec::with_capacity(N)));
    let items: Vec<Work> = (0..N)
        .map(|_| {
            let r = ran_by.clone();
            Work::new(move || r.lock().push(port().current_id()))
        })
        .collect();
    check!(q.queue(&first));
    for it in &items {
        check!(q.queue(it));
    }
    let switches = || -> Vec<(usize, u64)> {
        kthreadd::registry::all()
            .iter()
            .filter(|k| k.task().name().starts_with("kworker/"))
            .map(|k| (k.id(), k.task().nr_switches()))
            .collect()
    };
    let before = switches();
    gate.complete_all();
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let after = switches();
    let ids = ran_by.lock().clone();
    check_eq!(ids.len(), N);
    let drainer = ids[N - 1];
    let others: u64 = after
        .iter()
        .filter(|(id, _)| *id != drainer && !ids.contains(id))
        .map(|(id, n)| n - before.iter().find(|(b, _)| b == id).map_or(0, |(_, m)| *m))
        .sum();
    check!(others <= (N / 10) as u64, "other kworkers switched {others} times while {N} ordered items drained");
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

// Items held back by max_active wait on their pwq's inactive list (Linux
// `WORK_STRUCT_INACTIVE`); a cancel takes any of them off it, first, middle
// or last, and the others still run, in order. One instance is requeued
// after its cancel: it goes to the end, as a new queueing does.
ktest!(workqueue::cancel_takes_items_off_the_inactive_list => |ctx| {
    const N: usize = 40;
    let q = Workqueue::ordered("wq-cancel-inactive", WqFlags::empty()).map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let gate = Arc::new(Completion::new());
    let g = gate.clone();
    let first = Work::new(move || g.wait("gate"));
    let log = Arc::new(SpinLock::new(Vec::new()));
    let items: Vec<Work> = (0..N)
        .map(|i| {
            let l = log.clone();
            Work::new(move || l.lock().push(i))
        })
        .collect();
    check!(q.queue(&first));
    for it in &items {
        check!(q.queue(it));
    }
    let gone = |i: usize| i == 0 || i == N - 1 || i % 7 == 3;
    for (i, it) in items.iter().enumerate() {
        if gone(i) {
            check!(it.cancel(), "item {i} was pending on the inactive list");
            check!(!it.cancel(), "item {i} cancelled twice");
        }
    }
    check!(!q.queue(&items[11]), "item 11 is still pending");
    check!(items[18].cancel());
    check!(q.queue(&items[18]));
    gate.complete_all();
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let mut want: Vec<usize> = (0..N).filter(|&i| !gone(i) && i != 18).collect();
    want.push(18);
    check_eq!(*log.lock(), want);
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::max_active_is_honoured => |ctx| {
    for (flags, max) in [(WqFlags::empty(), 2usize), (WqFlags::UNBOUND, 3)] {
        let q = wq("wq-maxact", flags, max)?;
        let conc = Arc::new(Concurrency::default());
        let items: Vec<Work> = (0..24)
            .map(|_| {
                let c = conc.clone();
                Work::new(move || { c.enter(); kthread::msleep(3); c.leave(); })
            })
            .collect();
        for it in &items {
            check!(q.queue_on(0, it));
        }
        q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
        let m = conc.max.load(Ordering::SeqCst);
        check!(m <= max, "{flags:?}: {m} items ran at once with max_active {max}");
        check!(m == max, "{flags:?}: blocking items never reached max_active {max} (max {m})");
        q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    }
    Ok(())
});

ktest!(workqueue::queue_returns_false_while_pending => |ctx| {
    let q = Workqueue::ordered("wq-pending", WqFlags::empty()).map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let blocker = Work::new(move || { while !g.load(Ordering::SeqCst) { kthread::msleep(1) } });
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let item = Work::new(move || { r.fetch_add(1, Ordering::SeqCst); });
    check!(q.queue(&blocker));
    check!(q.queue(&item));
    check!(item.is_pending());
    check!(!q.queue(&item), "queued twice while pending");
    check!(!system::wq().queue(&item), "queued on a second queue while pending");
    gate.store(true, Ordering::SeqCst);
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check_eq!(runs.load(Ordering::SeqCst), 1);
    check!(!item.is_pending());
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::non_reentrant_under_a_requeue_storm [timeout_s = 300] => |ctx| {
    // Every CPU requeues the same item on random CPUs while it runs; it
    // must never run on two workers at once.
    let busy = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let (b, o, r) = (busy.clone(), overlaps.clone(), runs.clone());
    let item = Work::named("reentrancy_probe", move || {
        if b.swap(true, Ordering::SeqCst) {
            o.fetch_add(1, Ordering::SeqCst);
        }
        r.fetch_add(1, Ordering::SeqCst);
        spin_ms(0);
        core::hint::spin_loop();
        if r.load(Ordering::SeqCst) % 7 == 0 { port().yield_now() }
        b.store(false, Ordering::SeqCst);
    });
    let n = port().cpu_count();
    let done = Arc::new(AtomicUsize::new(0));
    let queued = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for cpu in 0..n {
        let (it, d, qd) = (item.clone(), done.clone(), queued.clone());
        let seed = ctx.seed ^ cpu as u64;
        threads.push(kthread::create_on_cpu(move || {
            let mut rng = crate::rng::Rng::new(seed, "storm");
            for i in 0..3_000 {
                let target = rng.below(n as u64) as usize;
                let q = if i % 3 == 0 { system::unbound() } else { system::wq() };
                if q.queue_on(target, &it) {
                    qd.fetch_add(1, Ordering::SeqCst);
                }
                if i % 50 == 0 { port().yield_now() }
            }
            d.fetch_add(1, Ordering::SeqCst);
            0
        }, cpu, format_args!("storm/{cpu}")).map_err(|e| Failure::Fail(format!("{e:?}")))?);
    }
    for t in &threads {
        t.wake();
    }
    check!(wait_for(200_000, || done.load(Ordering::SeqCst) == n), "storm threads did not finish");
    item.flush();
    check!(wait_for(10_000, || !item.is_pending()), "item still pending");
    item.flush();
    check_eq!(overlaps.load(Ordering::SeqCst), 0, "the item ran on two workers at once");
    check!(runs.load(Ordering::SeqCst) >= 1);
    check!(runs.load(Ordering::SeqCst) <= queued.load(Ordering::SeqCst), "ran more often than queued");
    Ok(())
});

/// Random queue/cancel/flush of `items` items from every CPU for `steps`
/// steps per CPU, with worker creation failing now and then; afterwards each
/// item must have run exactly (successful queues - successful cancels) times.
pub(crate) fn exactly_once_storm(seed: u64, items_n: usize, steps: usize) -> Result<(), Failure> {
    // Random queue/cancel/flush from every CPU, with worker creation failing
    // now and then: each item runs exactly (successful queues - successful
    // cancels) times.
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..items_n).map(|_| AtomicUsize::new(0)).collect());
    let queued: Arc<Vec<AtomicUsize>> = Arc::new((0..items_n).map(|_| AtomicUsize::new(0)).collect());
    let cancelled: Arc<Vec<AtomicUsize>> = Arc::new((0..items_n).map(|_| AtomicUsize::new(0)).collect());
    let items: Arc<Vec<Work>> = Arc::new(
        (0..items_n)
            .map(|i| {
                let r = runs.clone();
                Work::named("storm_item", move || {
                    r[i].fetch_add(1, Ordering::SeqCst);
                    if i % 5 == 0 {
                        kthread::msleep(1)
                    }
                })
            })
            .collect(),
    );
    let queues = Arc::new(alloc::vec![
        system::wq().clone(),
        system::unbound().clone(),
        wq("wq-storm", WqFlags::empty(), 4)?,
        wq("wq-storm-u", WqFlags::UNBOUND, 3)?
    ]);
    let n = port().cpu_count();
    let done = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for cpu in 0..n {
        let (it, q, d, qd, cd) = (items.clone(), queues.clone(), done.clone(), queued.clone(), cancelled.clone());
        let seed = seed.wrapping_mul(31) ^ cpu as u64;
        threads.push(
            kthread::create_on_cpu(
                move || {
                    let p = port();
                    let mut rng = crate::rng::Rng::new(seed, "exactly-once");
                    for step in 0..steps {
                        let i = rng.below(items_n as u64) as usize;
                        match rng.below(10) {
                            0..=5 => {
                                let qi = rng.below(q.len() as u64) as usize;
                                if q[qi].queue_on(rng.below(n as u64) as usize, &it[i]) {
                                    qd[i].fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            6 => {
                                if it[i].cancel() {
                                    cd[i].fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            7 => {
                                if it[i].cancel_sync() {
                                    cd[i].fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            8 => {
                                it[i].flush();
                            }
                            _ => {
                                if step % 200 == 0 {
                                    kport::harness::harness().inject_spawn_failures(2);
                                }
                                p.yield_now();
                            }
                        }
                    }
                    d.fetch_add(1, Ordering::SeqCst);
                    0
                },
                cpu,
                format_args!("exact/{cpu}"),
            )
            .map_err(|e| Failure::Fail(format!("{e:?}")))?,
        );
    }
    for t in &threads {
        t.wake();
    }
    check!(wait_for(200_000, || done.load(Ordering::SeqCst) == n), "storm threads did not finish");
    kport::harness::harness().inject_spawn_failures(0);
    for it in items.iter() {
        it.flush();
    }
    for q in queues.iter() {
        q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    }
    check!(items.iter().all(|it| !it.is_pending()), "items still pending after flushing everything");
    for i in 0..items_n {
        let want = queued[i].load(Ordering::SeqCst) - cancelled[i].load(Ordering::SeqCst);
        check_eq!(
            runs[i].load(Ordering::SeqCst),
            want,
            "item {i}: queued {} cancelled {}",
            queued[i].load(Ordering::SeqCst),
            cancelled[i].load(Ordering::SeqCst)
        );
    }
    // The two queues made for the storm go away with it.
    for q in queues.iter().skip(2) {
        q.clone().destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    }
    // A manager whose worker creation met an injected failure sleeps
    // CREATE_COOLDOWN_NS before it retries, and until then its pool cannot
    // start another worker: wait until every pool is idle again, so that the
    // cases after this one find pools that can grow.
    let settle_ms = workqueue::CREATE_COOLDOWN_NS / 1_000_000 + 5_000;
    check!(
        wait_for(settle_ms, || workqueue::pools().iter().all(|p| p.workers.iter().all(|w| w.idle))),
        "a pool was still busy {settle_ms} ms after the storm"
    );
    Ok(())
}

ktest!(workqueue::every_item_runs_exactly_once_under_a_random_storm [timeout_s = 300] => |ctx| {
    exactly_once_storm(ctx.seed, 48, 1_500)
});

ktest!(workqueue::flush_work_and_flush_workqueue_wait => |ctx| {
    let q = wq("wq-flush", WqFlags::empty(), 0)?;
    let done = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..10).map(|_| { let d = done.clone(); Work::new(move || { kthread::msleep(5); d.fetch_add(1, Ordering::SeqCst); }) }).collect();
    let idle = Work::new(|| {});
    check!(!idle.flush(), "flush of an idle item must return false");
    for it in &items {
        q.queue_on(0, it);
    }
    check!(items[9].flush(), "flush_work of a queued item must wait");
    check!(done.load(Ordering::SeqCst) >= 1);
    for it in &items {
        q.queue_on(port().cpu_count() - 1, it);
    }
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check_eq!(done.load(Ordering::SeqCst), 20, "flush_workqueue returned before everything ran");
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::cancel_sync_reports_pending_and_waits_for_running => |ctx| {
    let q = Workqueue::ordered("wq-cancel", WqFlags::empty()).map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (s, f) = (started.clone(), finished.clone());
    let long = Work::new(move || { s.store(true, Ordering::SeqCst); kthread::msleep(40); f.store(true, Ordering::SeqCst); });
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let target = Work::new(move || { r.fetch_add(1, Ordering::SeqCst); });
    check!(q.queue(&long));
    check!(q.queue(&target));
    check!(wait_for(5_000, || started.load(Ordering::SeqCst)), "long item never started");
    check!(target.cancel_sync(), "cancel_sync of a pending item must return true");
    check!(!target.cancel_sync(), "cancel_sync of an idle item must return false");
    check!(!long.cancel_sync(), "a running, not pending item was reported pending");
    check!(finished.load(Ordering::SeqCst), "cancel_sync returned while the item ran");
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check_eq!(runs.load(Ordering::SeqCst), 0, "a cancelled item ran");
    check!(q.queue(&target), "a cancelled item must be queueable again");
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check_eq!(runs.load(Ordering::SeqCst), 1);
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::delayed_work_never_fires_early_and_mod_moves_it => |ctx| {
    let p = port();
    let fired = Arc::new(AtomicU64::new(0));
    let f = fired.clone();
    let dw = DelayedWork::new(move || { f.store(port().now_ns(), Ordering::SeqCst); });
    let q = system::wq();
    for delay_ms in [1u64, 7, 30] {
        fired.store(0, Ordering::SeqCst);
        let t0 = p.now_ns();
        check!(q.queue_delayed(&dw, delay_ms * 1_000_000));
        check!(!q.queue_delayed(&dw, 1), "queued twice while pending");
        check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0), "delayed work never ran");
        let at = fired.load(Ordering::SeqCst);
        check!(at >= t0 + delay_ms * 1_000_000, "ran {} ns before its {delay_ms} ms delay", t0 + delay_ms * 1_000_000 - at);
    }
    // Pull a long delay in.
    fired.store(0, Ordering::SeqCst);
    let t1 = p.now_ns();
    check!(q.queue_delayed(&dw, 60_000_000_000));
    check!(q.mod_delayed(&dw, 20_000_000), "mod of a pending item must return true");
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0), "modified item never ran");
    check!(fired.load(Ordering::SeqCst) >= t1 + 20_000_000);
    // Push a short delay out.
    fired.store(0, Ordering::SeqCst);
    let t2 = p.now_ns();
    check!(!q.mod_delayed(&dw, 30_000_000), "mod of an idle item must return false");
    check!(q.mod_delayed(&dw, 80_000_000));
    msleep(50);
    check_eq!(fired.load(Ordering::SeqCst), 0, "ran at the old delay");
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0));
    check!(fired.load(Ordering::SeqCst) >= t2 + 80_000_000);
    // Cancel while its timer is pending; zero delay; flush_delayed_work.
    fired.store(0, Ordering::SeqCst);
    check!(q.queue_delayed(&dw, 20_000_000));
    check!(dw.cancel_sync(), "cancel of a timer-pending item must return true");
    msleep(40);
    check_eq!(fired.load(Ordering::SeqCst), 0, "a cancelled delayed item ran");
    check!(q.queue_delayed(&dw, 0));
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0), "zero delay never ran");
    fired.store(0, Ordering::SeqCst);
    check!(q.queue_delayed(&dw, 10_000_000_000));
    // flush_delayed_work queues it now and waits; it may finish before the
    // flush looks (then flush returns false, as Linux's does): either way
    // it has run when flush returns.
    dw.flush();
    check!(fired.load(Ordering::SeqCst) != 0, "flush_delayed_work returned before the item ran");
    Ok(())
});

/// Which workers ran two items queued on one CPU, and whether the second
/// started before the first finished.
fn cm_probe(first_blocks: bool) -> Result<(usize, usize, bool), Failure> {
    let cpu = port().cpu_count() - 1;
    let q = wq("wq-cm", WqFlags::empty(), 0)?;
    let a_worker = Arc::new(AtomicUsize::new(0));
    let b_worker = Arc::new(AtomicUsize::new(0));
    let a_done = Arc::new(AtomicBool::new(false));
    let b_before_a_done = Arc::new(AtomicBool::new(false));
    let (aw, ad) = (a_worker.clone(), a_done.clone());
    let a = Work::named("cm_a", move || {
        aw.store(port().current_id(), Ordering::SeqCst);
        if first_blocks {
            kthread::msleep(60)
        } else {
            spin_ms(60)
        }
        ad.store(true, Ordering::SeqCst);
    });
    let (bw, ad2, bb) = (b_worker.clone(), a_done.clone(), b_before_a_done.clone());
    let b = Work::named("cm_b", move || {
        bw.store(port().current_id(), Ordering::SeqCst);
        bb.store(!ad2.load(Ordering::SeqCst), Ordering::SeqCst);
    });
    check!(q.queue_on(cpu, &a));
    check!(wait_for(5_000, || a_worker.load(Ordering::SeqCst) != 0), "a never started");
    check!(q.queue_on(cpu, &b));
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let r = (a_worker.load(Ordering::SeqCst), b_worker.load(Ordering::SeqCst), b_before_a_done.load(Ordering::SeqCst));
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(r)
}

ktest!(workqueue::a_blocking_item_starts_a_second_worker_a_spinning_one_does_not => |ctx| {
    let (a, b, overlapped) = cm_probe(true)?;
    check!(a != b, "with the first item blocked, the second ran on the same worker");
    check!(overlapped, "the second item waited for the blocked one");
    // A spinning item stays in concurrency management as long as it is
    // under the CPU-intensive threshold: raise it above the 60 ms spin for
    // this probe (the automatic detection has its own case).
    let thresh = workqueue::cpu_intensive_thresh_us();
    workqueue::set_cpu_intensive_thresh_us(10_000_000);
    let probe = cm_probe(false);
    workqueue::set_cpu_intensive_thresh_us(thresh);
    let (a, b, overlapped) = probe?;
    check_eq!(a, b, "a CPU-bound item caused a second worker to run the next item");
    check!(!overlapped, "the second item ran while the CPU-bound one held the CPU");
    Ok(())
});

ktest!(workqueue::cpu_intensive_items_are_not_concurrency_managed => |ctx| {
    let cpu = port().cpu_count() - 1;
    let q = wq("wq-intensive", WqFlags::CPU_INTENSIVE, 0)?;
    let a_done = Arc::new(AtomicBool::new(false));
    let b_early = Arc::new(AtomicBool::new(false));
    let b_ran = Arc::new(AtomicBool::new(false));
    // Where the second item can overtake (host threads, full preemption),
    // the first spins until it did or 2 s passed, so a loaded machine that
    // is slow to start a second worker does not fail the case; elsewhere
    // it spins 60 ms, as the second item cannot run before it ends anyway.
    let overtakes = port().name() == "host" || ctx.args.preempt_full;
    let limit_ms = if overtakes { 2_000 } else { 60 };
    let (ad, br) = (a_done.clone(), b_ran.clone());
    let a = Work::new(move || {
        let p = port();
        let end = p.now_ns() + limit_ms * 1_000_000;
        while p.now_ns() < end && !br.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        ad.store(true, Ordering::SeqCst);
    });
    let (ad2, be, br2) = (a_done.clone(), b_early.clone(), b_ran.clone());
    let b = Work::new(move || {
        be.store(!ad2.load(Ordering::SeqCst), Ordering::SeqCst);
        br2.store(true, Ordering::SeqCst);
    });
    check!(q.queue_on(cpu, &a));
    msleep(5);
    check!(q.queue_on(cpu, &b));
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    if !overtakes {
        // Without preemption the second worker cannot take the CPU from the
        // spinning item; it runs after. Only the count is checked then.
        check!(q.stats().cpu_intensive >= 2);
        q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
        return Ok(());
    }
    check!(b_early.load(Ordering::SeqCst), "a CPU-intensive item held back the next one");
    check!(q.stats().cpu_intensive >= 2);
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::highpri_items_overtake_normal_ones_on_a_busy_cpu => |ctx| {
    let p = port();
    if p.name() == "host" {
        return skip("the host port has no priority levels (std threads)");
    }
    let cpu = p.cpu_count() - 1;
    let order = Arc::new(SpinLock::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    let normal = Work::new(move || o1.lock().push("normal"));
    let high = Work::new(move || o2.lock().push("high"));
    let go = Arc::new(AtomicBool::new(false));
    let g = go.clone();
    let hog = Builder::new(format_args!("hog/{cpu}"), move || {
        g.store(true, Ordering::SeqCst);
        let end = port().now_ns() + 80_000_000;
        while port().now_ns() < end {
            port().cond_resched();
        }
        0
    })
    .on_cpu(cpu)
    .priority(Priority::Normal)
    .run()
    .map_err(|e| Failure::Fail(format!("{e:?}")))?;
    // A pool's first item makes its idle spare first (Linux does the same);
    // warm the high-priority pool up so that cost is not measured here.
    let warm = Work::new(|| {});
    system::highpri().queue_on(cpu, &warm);
    warm.flush();
    check!(wait_for(5_000, || go.load(Ordering::SeqCst)), "the hog never ran");
    {
        // Queue both from the busy CPU with preemption off, so both are
        // pending when the CPU next picks what to run.
        let _pin = Pinned::to(cpu);
        p.preempt_disable();
        let a = system::wq().queue_on(cpu, &normal);
        let b = system::highpri().queue_on(cpu, &high);
        p.preempt_enable();
        check!(a && b);
    }
    check!(wait_for(10_000, || order.lock().len() == 2), "items did not both run");
    let _ = hog.stop();
    check_eq!(*order.lock(), alloc::vec!["high", "normal"], "completion order");
    Ok(())
});

ktest!(workqueue::unbound_items_spread_over_cpus [min_cpus = 2] => |ctx| {
    if port().name() == "host" {
        return skip("the host port does not place contexts on CPUs (its cpu_id follows affinity)");
    }
    let cpus = Arc::new(AtomicU64::new(0));
    let items: Vec<Work> = (0..8).map(|_| { let c = cpus.clone(); Work::new(move || { let end = port().now_ns() + 40_000_000; while port().now_ns() < end { c.fetch_or(1 << port().cpu_id(), Ordering::SeqCst); port().cond_resched(); } }) }).collect();
    for it in &items {
        check!(system::unbound().queue_on(0, it));
    }
    system::unbound().flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let n = cpus.load(Ordering::SeqCst).count_ones();
    check!(n >= 2, "unbound items ran on {n} CPU(s) only");
    Ok(())
});

ktest!(workqueue::rescuer_completes_work_when_worker_creation_fails [timeout_s = 300] => |ctx| {
    // A MEM_RECLAIM queue on a fresh unbound pool (one worker). Worker
    // creation fails: the worker tries to make a spare, the mayday timer
    // calls the rescuer, and the items complete anyway.
    let p = port();
    let mask = CpuMask::one(p.cpu_count() - 1);
    let q = Workqueue::with_mask("wq-reclaim", WqFlags::MEM_RECLAIM | WqFlags::UNBOUND | WqFlags::HIGHPRI, 0, mask)
        .map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check!(q.rescuer().is_some_and(|r| r.comm().starts_with("kworker/R-")), "no rescuer");
    let runs = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..12).map(|_| { let r = runs.clone(); Work::named("reclaim_item", move || { kthread::msleep(1); r.fetch_add(1, Ordering::SeqCst); }) }).collect();
    kport::harness::harness().inject_spawn_failures(3);
    for it in &items {
        check!(q.queue(it));
    }
    let ok = wait_for(60_000, || runs.load(Ordering::SeqCst) == 12);
    kport::harness::harness().inject_spawn_failures(0);
    check!(ok, "only {} of 12 items ran", runs.load(Ordering::SeqCst));
    let st = q.stats();
    check!(st.rescued >= 1 && st.mayday >= 1, "the rescuer did not step in: {st:?}");
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::destroy_drains_then_refuses => |ctx| {
    let q = wq("wq-destroy", WqFlags::empty(), 0)?;
    let runs = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..20).map(|_| { let r = runs.clone(); Work::new(move || { kthread::msleep(1); r.fetch_add(1, Ordering::SeqCst); }) }).collect();
    for (i, it) in items.iter().enumerate() {
        q.queue_on(i % port().cpu_count(), it);
    }
    let handle = q.clone();
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check_eq!(runs.load(Ordering::SeqCst), 20, "destroy lost pending items");
    check_eq!(handle.try_queue_on(None, &items[0]), Err(QueueError::Destroyed));
    check!(!handle.queue(&items[0]), "a destroyed queue accepted an item");
    check!(!items[0].is_pending(), "a refused item was left pending");
    Ok(())
});

ktest!(workqueue::drain_lets_items_requeue_themselves => |ctx| {
    let q = wq("wq-drain", WqFlags::empty(), 0)?;
    let count = Arc::new(AtomicUsize::new(0));
    let me: Arc<spin::Once<(Workqueue, Work)>> = Arc::new(spin::Once::new());
    let (c, m) = (count.clone(), me.clone());
    let chain = Work::new(move || {
        if c.fetch_add(1, Ordering::SeqCst) + 1 < 25
            && let Some((q, w)) = m.get() {
                q.queue(w);
            }
    });
    me.call_once(|| (q.clone(), chain.clone()));
    check!(q.queue(&chain));
    q.drain().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    check_eq!(count.load(Ordering::SeqCst), 25, "drain returned before the chain ended");
    check!(!q.is_busy());
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::self_flush_is_reported_not_hung => |ctx| {
    let q = wq("wq-selfflush", WqFlags::empty(), 0)?;
    let results = Arc::new(SpinLock::new(Vec::new()));
    let me: Arc<spin::Once<(Workqueue, Work)>> = Arc::new(spin::Once::new());
    let (r, m) = (results.clone(), me.clone());
    let item = Work::named("flushes_itself", move || {
        if let Some((q, w)) = m.get() {
            let a = w.flush();
            let b = q.flush().is_err();
            r.lock().push((a, b));
        }
    });
    me.call_once(|| (q.clone(), item.clone()));
    check!(q.queue(&item));
    check!(wait_for(10_000, || !results.lock().is_empty()), "the self-flushing item hung");
    check_eq!(results.lock()[0], (false, true), "(flush_work returned, flush_workqueue refused)");
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::watchdog_reports_a_stalled_pool [timeout_s = 120] => |ctx| {
    let p = port();
    let cpu = p.cpu_count() - 1;
    let before = workqueue::lockup_reports();
    let old = workqueue::watchdog_thresh_ns();
    workqueue::set_watchdog_thresh_ns(400_000_000);
    // A spinner is taken out of concurrency management after the
    // CPU-intensive threshold, and the pool would not stall: raise it above
    // the spin so the pool really is stuck behind the spinner.
    let thresh = workqueue::cpu_intensive_thresh_us();
    workqueue::set_cpu_intensive_thresh_us(10_000_000);
    let q = wq("wq-stall", WqFlags::empty(), 0)?;
    // It runs without sleeping but passes yield points: inside Redox, whose
    // kernel code runs with interrupts off, the watchdog's timer reaches a
    // CPU only there (with one CPU, nowhere else).
    let stuck = Work::named("stuck_spinner", || {
        let p = port();
        let end = p.now_ns() + 1_500_000_000;
        while p.now_ns() < end {
            p.cond_resched();
        }
    });
    let behind = Work::named("waits_behind", || {});
    // Both queued before the spinner can take the CPU (with one CPU and no
    // preemption the test could not run again until it ends).
    check!(q.queue_on(cpu, &stuck));
    check!(q.queue_on(cpu, &behind));
    let seen = wait_for(20_000, || workqueue::lockup_reports() > before);
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    workqueue::set_watchdog_thresh_ns(old);
    workqueue::set_cpu_intensive_thresh_us(thresh);
    check!(seen, "no lockup reported");
    let r = workqueue::last_lockup_report().unwrap_or_default();
    check!(r.contains(&format!("cpus={cpu}")) && r.contains("stuck_spinner") && r.contains("waits_behind"), "report: {r}");
    // Then the pool's state, as Linux's show_one_worker_pool prints it, and a
    // line per worker: the spinner's thread is running on the pool's CPU.
    check!(r.lines().any(|l| l.starts_with("pool ") && l.contains(&format!("cpus={cpu}")) && l.contains(" workers=")), "no pool line: {r}");
    check!(r.lines().any(|l| l.starts_with("  kworker/") && l.contains(&format!(": R cpu={cpu} "))), "no line for the running worker: {r}");
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::watchdog_reports_between_the_threshold_and_a_quarter_more [timeout_s = 120] => |ctx| {
    // Linux checks every quarter of `watchdog_thresh` for a pool whose last
    // progress (an item's start, or work arriving at an empty worklist) is
    // older than the threshold: a stall is reported no sooner than the
    // threshold after that progress and no later than 1.25 times it. The
    // stuck item watches for the report itself (with one CPU nothing else
    // could until it ends); the watchdog's timer runs on CPU 0 even then.
    const THRESH_NS: u64 = 400_000_000;
    const SLACK_NS: u64 = 100_000_000;
    let p = port();
    let cpu = p.cpu_count() - 1;
    let before = workqueue::lockup_reports();
    let old = workqueue::watchdog_thresh_ns();
    let thresh_us = workqueue::cpu_intensive_thresh_us();
    workqueue::set_cpu_intensive_thresh_us(10_000_000);
    workqueue::set_watchdog_thresh_ns(THRESH_NS);
    let after_ns = Arc::new(AtomicU64::new(0));
    let seen = after_ns.clone();
    let q = wq("wq-stall-bound", WqFlags::empty(), 0)?;
    let stuck = Work::named("stall_timer", move || {
        let p = port();
        let t0 = p.now_ns();
        while p.now_ns() - t0 < 4 * THRESH_NS {
            if workqueue::lockup_reports() > before {
                seen.store(p.now_ns() - t0, Ordering::SeqCst);
                return;
            }
            // Still running (not sleeping): inside Redox, whose kernel
            // code runs with interrupts off, this is where the watchdog's
            // timer gets in with one CPU.
            p.cond_resched();
        }
    });
    let behind = Work::named("stall_behind", || {});
    check!(q.queue_on(cpu, &stuck));
    check!(q.queue_on(cpu, &behind));
    let flushed = q.flush();
    workqueue::set_watchdog_thresh_ns(old);
    workqueue::set_cpu_intensive_thresh_us(thresh_us);
    flushed.map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let after = after_ns.load(Ordering::SeqCst);
    check!(after != 0, "no lockup reported within {} ms of the stall", 4 * THRESH_NS / 1_000_000);
    check!(
        after + 5_000_000 >= THRESH_NS && after <= THRESH_NS + THRESH_NS / 4 + SLACK_NS,
        "reported {} ms after the pool's last progress; the threshold is {} ms",
        after / 1_000_000,
        THRESH_NS / 1_000_000
    );
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    Ok(())
});

ktest!(workqueue::idle_workers_are_reaped => |ctx| {
    let p = port();
    let cpu = p.cpu_count() - 1;
    let count = || workqueue::pools().iter().find(|x| x.cpu == Some(cpu) && !x.highpri).map_or(0, |x| x.workers.len());
    workqueue::set_idle_timeout_ns(100_000_000);
    // A burst of blocking items makes the pool grow.
    let items: Vec<Work> = (0..10).map(|_| Work::new(|| kthread::msleep(30))).collect();
    for it in &items {
        system::wq().queue_on(cpu, it);
    }
    system::wq().flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let grown = count();
    let shrunk = wait_for(10_000, || count() <= workqueue::MIN_IDLE_WORKERS + 1);
    workqueue::set_idle_timeout_ns(workqueue::IDLE_WORKER_TIMEOUT_NS);
    check!(grown > workqueue::MIN_IDLE_WORKERS + 1, "the burst did not grow the pool (workers: {grown})");
    check!(shrunk, "idle workers were not reaped: {} of {grown} left", count());
    // Reaped workers are gone, not zombies kept by a reference cycle: the
    // kthread registry lists exactly the pool's remaining workers.
    // Listed as `[kworker/N:M+queue]` or `[kworker/N:M-queue]` (Linux's
    // wq_worker_comm); the pool's own name is the part before the suffix.
    let prefix = format!("kworker/{cpu}:");
    let base = |name: &str| {
        let inner = name.trim_start_matches('[').trim_end_matches(']');
        alloc::string::String::from(inner.split(['+', '-']).next().unwrap_or(inner))
    };
    let listed = || {
        kthreadd::registry::prune();
        kthreadd::registry::rows()
            .iter()
            .map(|r| base(&r.name))
            .filter(|n| n.starts_with(&prefix) && !n.ends_with('H'))
            .count()
    };
    check!(wait_for(5_000, || listed() == count()), "{} kworker/{cpu}:* threads listed for {} workers", listed(), count());
    Ok(())
});

ktest!(workqueue::stats_dump_and_monitor => |ctx| {
    let q = wq("wq-stats", WqFlags::empty(), 0)?;
    let items: Vec<Work> = (0..5).map(|_| Work::new(|| kthread::msleep(1))).collect();
    for it in &items {
        q.queue(it);
    }
    q.flush().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let st = q.stats();
    check_eq!(st.started, 5);
    check_eq!(st.completed, 5);
    let m = workqueue::monitor();
    check!(m.contains("wq-stats") && m.contains("events"), "monitor:\n{m}");
    let d = workqueue::dump();
    check!(d.contains("kworker/0:") && d.contains("wq-stats"), "dump:\n{d}");
    crate::diag!("{}", d.trim_end().replace('\n', "\n    # "));
    q.destroy().map_err(|e| Failure::Fail(format!("{e:?}")))?;
    let bad = q_bad_cpu();
    check!(bad, "queue_on a CPU that does not exist must be refused");
    Ok(())
});

fn q_bad_cpu() -> bool {
    let w = Work::new(|| {});
    system::wq().try_queue_on(Some(port().cpu_count() + 3), &w) == Err(QueueError::BadCpu) && !w.is_pending()
}

ktest!(workqueue::freezable_queue_holds_items_while_frozen => |ctx| {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let it = Work::new(move || { r.fetch_add(1, Ordering::SeqCst); });
    workqueue::freeze();
    check!(system::freezable().queue(&it));
    msleep(30);
    let held = runs.load(Ordering::SeqCst) == 0;
    workqueue::thaw();
    check!(held, "an item of a freezable queue ran while frozen");
    check!(wait_for(5_000, || runs.load(Ordering::SeqCst) == 1), "did not run after thaw");
    Ok(())
});

// ---------------------------------------------------------------- benchmarks

pub(crate) fn queue_run_latency(name: &str, target: usize) -> Result<(), Failure> {
    if target >= port().cpu_count() {
        return skip("needs 2 CPUs");
    }
    let _pin = Pinned::to(0);
    let p = port();
    let stamp = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let worker: Arc<SpinLock<Option<kport::TaskRef>>> = Arc::new(SpinLock::new(None));
    let (st, s2, w2) = (stamp.clone(), started.clone(), worker.clone());
    let item = Work::named("bench_item", move || {
        s2.store(port().cycles().wrapping_sub(st.load(Ordering::SeqCst)), Ordering::SeqCst);
        let mut w = w2.lock();
        if w.is_none() {
            *w = Some(port().current());
        }
    });
    let mut v = Vec::with_capacity(ITERATIONS);
    // From a cold start, as Linux's figure: the worker that ran the item
    // last has gone back to sleep (otherwise, still finishing its loop, it
    // picks the item up without a wake-up). The module's method: a look at
    // that thread alone. A snapshot of the whole pool (`workqueue::pools()`)
    // here once took tens of microseconds under TCG, which made the target
    // CPU's idle period, and so whether its idle loop polls or halts, depend
    // on this check rather than on the queue.
    for i in 0..(ITERATIONS + WARMUP) {
        let last = worker.lock().clone();
        if let Some(w) = last {
            crate::bench::wait_asleep(&w);
        }
        started.store(0, Ordering::SeqCst);
        stamp.store(p.cycles(), Ordering::SeqCst);
        system::wq().queue_on(target, &item);
        if target == 0 {
            item.flush();
        } else {
            while started.load(Ordering::SeqCst) == 0 {
                core::hint::spin_loop();
            }
            item.flush();
        }
        if i >= WARMUP {
            v.push(started.load(Ordering::SeqCst));
        }
    }
    report_latency(name, &mut v);
    Ok(())
}

ktest!(workqueue::bench_wq_queue_run_same_cpu [bench = true] => |ctx| { queue_run_latency("wq_queue_run_same_cpu", 0) });
ktest!(workqueue::bench_wq_queue_run_cross_cpu [bench = true, min_cpus = 2] => |ctx| { queue_run_latency("wq_queue_run_cross_cpu", 1) });

ktest!(workqueue::bench_wq_delayed_zero [bench = true] => |ctx| {
    let _pin = Pinned::to(0);
    let p = port();
    let stamp = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let (st, s2) = (stamp.clone(), started.clone());
    let dw = DelayedWork::named("bench_delayed", move || { s2.store(port().cycles().wrapping_sub(st.load(Ordering::SeqCst)), Ordering::SeqCst); });
    let mut v = Vec::with_capacity(ITERATIONS);
    for i in 0..(ITERATIONS + WARMUP) {
        stamp.store(p.cycles(), Ordering::SeqCst);
        system::wq().queue_delayed(&dw, 0);
        dw.work().flush();
        if i >= WARMUP {
            v.push(started.load(Ordering::SeqCst));
        }
    }
    report_latency("wq_delayed_zero", &mut v);
    Ok(())
});

/// A value alone on its cache lines, bounced between two CPUs.
#[repr(align(128))]
struct Line(AtomicU64);

/// Nanoseconds per round trip of a value bounced through one atomic word
/// between CPUs 0 and 1, the median of 5 000 after 200 untimed ones; `None`
/// with one CPU, or when the partner did not answer within 100 ms.
///
/// Printed beside each throughput figure: under TCG every item passed
/// between CPUs pays the host's cache-line transfers, whose price this
/// machine's host changes from one moment to the next (`docs/benchmarks.md`,
/// "The collapsed throughput boots, explained"); this is what it was just
/// before the timing, inside the guest.
fn line_round_trip_ns() -> Option<u64> {
    const WARM: u64 = 200;
    const TRIPS: u64 = 5_000;
    const DONE: u64 = u64::MAX;
    let p = port();
    if p.cpu_count() < 2 {
        return None;
    }
    let _pin = Pinned::to(0);
    let word = Arc::new(Line(AtomicU64::new(0)));
    let w = word.clone();
    let partner = kthread::create_on_cpu(
        move || {
            let mut next = 1u64;
            loop {
                let v = w.0.load(Ordering::Acquire);
                if v == DONE {
                    return 0;
                }
                if v == next {
                    // A swap: a give-up stored since the load stays.
                    if w.0.compare_exchange(next, next + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
                        return 0;
                    }
                    next += 2;
                }
                core::hint::spin_loop();
            }
        },
        1,
        format_args!("tput-line"),
    )
    .ok()?;
    partner.wake();
    let begun = p.now_ns();
    let mut samples = Vec::with_capacity(TRIPS as usize);
    let mut ok = true;
    'trips: for i in 0..WARM + TRIPS {
        let t0 = p.cycles();
        word.0.store(2 * i + 1, Ordering::Release);
        let mut spins = 0u32;
        while word.0.load(Ordering::Acquire) != 2 * i + 2 {
            spins += 1;
            if spins.is_multiple_of(1024) && p.now_ns().wrapping_sub(begun) > 100_000_000 {
                ok = false;
                break 'trips;
            }
            core::hint::spin_loop();
        }
        if i >= WARM {
            samples.push(p.cycles().wrapping_sub(t0));
        }
    }
    word.0.store(DONE, Ordering::Release);
    let _ = partner.stop();
    if !ok {
        return None;
    }
    samples.sort_unstable();
    Some(p.cycles_to_ns(samples[samples.len() / 2]))
}

pub(crate) fn throughput(name: &str, q: &'static Workqueue) -> Result<(), Failure> {
    const TOTAL: usize = 100_000;
    let p = port();
    let line_ns = line_round_trip_ns();
    let n = p.cpu_count();
    let per = TOTAL / n;
    let ready = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Completion::new());
    let measured = Arc::new(Completion::new());
    let left = Arc::new(AtomicUsize::new(n));
    let mut threads = Vec::new();
    for cpu in 0..n {
        let (r, g, d, l, m) = (ready.clone(), go.clone(), done.clone(), left.clone(), measured.clone());
        threads.push(
            kthread::create_on_cpu(
                move || {
                    let items: Vec<Work> = (0..per).map(|_| Work::named("noop", || {})).collect();
                    r.fetch_add(1, Ordering::SeqCst);
                    while !g.load(Ordering::SeqCst) {
                        port().yield_now();
                    }
                    for it in &items {
                        q.queue_on(cpu, it);
                    }
                    for it in &items {
                        it.flush();
                    }
                    if l.fetch_sub(1, Ordering::SeqCst) == 1 {
                        d.complete_all();
                    }
                    // The items are freed only once the time is taken, as
                    // Linux's module frees its arrays after the timing:
                    // freeing 50 000 of them takes the heap's lock for long
                    // stretches. Waiting for the last producer only was not
                    // enough: every producer then began to free at once,
                    // and the measuring thread, woken onto a CPU busy with
                    // that under preempt=none, read the clock only when one
                    // had finished (inside Redox up to 1.6 s later, one run
                    // in three measured a tenth of the queue's throughput).
                    m.wait("throughput");
                    drop(items);
                    0
                },
                cpu,
                format_args!("tput/{cpu}"),
            )
            .map_err(|e| Failure::Fail(format!("{e:?}")))?,
        );
    }
    for t in &threads {
        t.wake();
    }
    let all_ready = wait_for(60_000, || ready.load(Ordering::SeqCst) == n);
    let t0 = p.now_ns();
    go.store(true, Ordering::SeqCst);
    done.wait("throughput");
    let dt = p.now_ns() - t0;
    measured.complete_all();
    if !all_ready {
        for t in threads {
            let _ = t.stop();
        }
        return Err(Failure::Fail(format!("{name}: the producers were not ready within 60 s")));
    }
    let line = line_ns.map_or(alloc::string::String::new(), |ns| format!(" line_rt_ns={ns}"));
    report_throughput_with(name, (per * n) as u64, dt, &line);
    // The producers free their items after the timing: wait for them to
    // exit, or the suite's leak check would count what they still hold
    // (with 4 and 8 CPUs under TCG they are still at it when it looks).
    for t in threads {
        let _ = t.stop();
    }
    Ok(())
}

ktest!(workqueue::bench_wq_throughput_bound [bench = true, timeout_s = 600] => |ctx| { throughput("wq_throughput_bound", system::wq()) });
ktest!(workqueue::bench_wq_throughput_unbound [bench = true, timeout_s = 600] => |ctx| { throughput("wq_throughput_unbound", system::unbound()) });

/// Latency of `op` on an idle item, from CPU 0.
fn idle_op_latency(name: &str, op: impl Fn(&Work)) {
    let _pin = Pinned::to(0);
    let p = port();
    let it = Work::new(|| {});
    let mut v = Vec::with_capacity(ITERATIONS);
    for i in 0..(ITERATIONS + WARMUP) {
        let t0 = p.cycles();
        op(&it);
        if i >= WARMUP {
            v.push(p.cycles() - t0);
        }
    }
    report_latency(name, &mut v);
}

ktest!(workqueue::bench_wq_flush_idle [bench = true] => |ctx| {
    idle_op_latency("wq_flush_idle", |w| {
        w.flush();
    });
    Ok(())
});

ktest!(workqueue::bench_wq_cancel_sync_idle [bench = true] => |ctx| {
    idle_op_latency("wq_cancel_sync_idle", |w| {
        w.cancel_sync();
    });
    Ok(())
});

ktest!(workqueue::bench_wq_workers_blocking_load [bench = true] => |ctx| {
    // 32 items that each sleep 10 ms, queued at once on CPU 0's pool: how
    // many workers concurrency management brings in.
    let count = || workqueue::pools().iter().find(|x| x.cpu == Some(0) && !x.highpri).map_or(0, |x| x.workers.len());
    let before = count();
    let max = Arc::new(AtomicUsize::new(0));
    let conc = Arc::new(Concurrency::default());
    let items: Vec<Work> = (0..32).map(|_| { let c = conc.clone(); Work::new(move || { c.enter(); kthread::msleep(10); c.leave(); }) }).collect();
    for it in &items {
        system::wq().queue_on(0, it);
    }
    check!(wait_for(30_000, || { max.fetch_max(count(), Ordering::SeqCst); items.iter().all(|i| !i.is_pending()) && conc.now.load(Ordering::SeqCst) == 0 }), "items did not finish");
    report_count("wq_workers_blocking_load", max.load(Ordering::SeqCst).saturating_sub(before) as u64);
    crate::diag!("workers before={before} peak={} concurrent items peak={}", max.load(Ordering::SeqCst), conc.max.load(Ordering::SeqCst));
    Ok(())
});
