//! Suite `workqueue`, continued: the API Linux users expect beyond the
//! basics (disable/enable, `workqueue_set_max_active`, `current_work`,
//! `current_is_workqueue_rescuer`, `work_on_cpu`, the freezable
//! power-efficient system queue, automatic CPU-intensive detection).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kport::sync::{Completion, SpinLock};
use kport::{EINVAL, port};
use workqueue::{DelayedWork, SystemWq, Work, Workqueue, WqFlags, system};

use crate::bench::Pinned;
use crate::port_api::{msleep, wait_for};
use crate::{Failure, check, check_eq, err, ktest};

fn counter() -> (Arc<AtomicUsize>, Work) {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    (
        n,
        Work::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }),
    )
}

ktest!(workqueue::disable_refuses_queueing_until_enabled_and_nests => |ctx| {
    let q = Workqueue::new("wq-disable", WqFlags::empty(), 0).map_err(err("alloc"))?;
    let (runs, w) = counter();
    check!(!w.disable(), "disable of an idle item reports nothing pending");
    check!(w.is_disabled());
    check!(!q.queue(&w), "a disabled item was queued");
    check!(!w.disable(), "a second disable");
    check!(!w.enable(), "one enable of two disables must not re-enable");
    check!(!q.queue(&w), "still disabled after one enable");
    check!(w.enable(), "the last enable reports the count at zero");
    check!(!w.is_disabled());
    check!(q.queue(&w), "an enabled item must queue");
    q.flush().map_err(err("flush"))?;
    check_eq!(runs.load(Ordering::SeqCst), 1);
    // Disable cancels a pending instance (held behind another item of an
    // ordered queue) and says so.
    let gate = Arc::new(Completion::new());
    let (runs2, w2) = counter();
    let q1 = Workqueue::ordered("wq-disable-ord", WqFlags::empty()).map_err(err("alloc"))?;
    let g2 = gate.clone();
    let hold = Work::new(move || g2.wait("gate"));
    check!(q1.queue(&hold));
    check!(q1.queue(&w2), "queue behind the held item");
    check!(w2.disable(), "disable of a pending item reports it pending");
    gate.complete_all();
    q1.flush().map_err(err("flush"))?;
    check_eq!(runs2.load(Ordering::SeqCst), 0, "a disabled item's pending instance ran");
    check!(w2.enable());
    // An enable without a disable is refused with a warning, not an underflow.
    check!(w2.enable(), "enable at zero");
    check!(!w2.is_disabled());
    q.destroy().map_err(err("destroy"))?;
    q1.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::disable_sync_waits_for_the_running_instance => |ctx| {
    let q = Workqueue::new("wq-disable-sync", WqFlags::empty(), 0).map_err(err("alloc"))?;
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (s, f) = (started.clone(), finished.clone());
    let w = Work::new(move || {
        s.store(true, Ordering::SeqCst);
        msleep(40);
        f.store(true, Ordering::SeqCst);
    });
    check!(q.queue(&w));
    check!(wait_for(5_000, || started.load(Ordering::SeqCst)));
    check!(!w.disable_sync(), "the running instance is not a pending one");
    check!(finished.load(Ordering::SeqCst), "disable_sync returned while the item ran");
    check!(!q.queue(&w));
    check!(w.enable());
    q.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::disable_delayed_cancels_the_timer => |ctx| {
    let q = Workqueue::new("wq-disable-dw", WqFlags::empty(), 0).map_err(err("alloc"))?;
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    let dw = DelayedWork::new(move || {
        f.fetch_add(1, Ordering::SeqCst);
    });
    check!(q.queue_delayed(&dw, 30_000_000));
    check!(dw.disable(), "disable of an armed delayed item reports it pending");
    check!(!q.queue_delayed(&dw, 0), "a disabled delayed item was queued");
    check!(!q.mod_delayed(&dw, 0), "mod_delayed of a disabled idle item reports nothing pending");
    msleep(60);
    check_eq!(fired.load(Ordering::SeqCst), 0, "a disabled delayed item ran");
    check!(dw.enable());
    check!(q.queue_delayed(&dw, 0));
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) == 1));
    check!(!dw.disable_sync());
    check!(dw.enable());
    q.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::set_max_active_changes_the_limit_live => |ctx| {
    let q = Workqueue::new("wq-set-max", WqFlags::empty(), 1).map_err(err("alloc"))?;
    let gate = Arc::new(Completion::new());
    let running = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..3)
        .map(|_| {
            let (g, r) = (gate.clone(), running.clone());
            Work::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
                g.wait("gate");
            })
        })
        .collect();
    for it in &items {
        check!(q.queue_on(0, it));
    }
    check!(wait_for(5_000, || running.load(Ordering::SeqCst) == 1));
    msleep(30);
    check_eq!(running.load(Ordering::SeqCst), 1, "max_active 1 let a second item run");
    q.set_max_active(3).map_err(err("set_max_active"))?;
    check_eq!(q.max_active(), 3);
    check!(wait_for(5_000, || running.load(Ordering::SeqCst) == 3), "raising max_active did not start the held items");
    gate.complete_all();
    q.flush().map_err(err("flush"))?;
    // Out of range is clamped; an ordered queue refuses.
    q.set_max_active(0).map_err(err("set_max_active 0"))?;
    check_eq!(q.max_active(), 1);
    q.set_max_active(100_000).map_err(err("set_max_active big"))?;
    check_eq!(q.max_active(), workqueue::WQ_MAX_ACTIVE);
    let o = Workqueue::ordered("wq-set-max-ord", WqFlags::empty()).map_err(err("alloc"))?;
    check_eq!(o.set_max_active(4).map_err(|e| e.errno), Err(EINVAL));
    check_eq!(o.max_active(), 1);
    q.destroy().map_err(err("destroy"))?;
    o.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::current_work_and_rescuer_are_known_inside_items => |ctx| {
    check!(workqueue::current_work().is_none(), "current_work outside an item");
    check!(!workqueue::current_is_workqueue_rescuer());
    let seen: Arc<SpinLock<Option<(bool, bool)>>> = Arc::new(SpinLock::new(None));
    let me: Arc<spin::Once<Work>> = Arc::new(spin::Once::new());
    let (s, m) = (seen.clone(), me.clone());
    let w = Work::named("current_probe", move || {
        let cur = workqueue::current_work();
        let same = match (cur, m.get()) {
            (Some(c), Some(w)) => c.name() == w.name(),
            _ => false,
        };
        *s.lock() = Some((same, workqueue::current_is_workqueue_rescuer()));
    });
    me.call_once(|| w.clone());
    check!(system::wq().queue(&w));
    check!(wait_for(5_000, || seen.lock().is_some()));
    check_eq!(*seen.lock(), Some((true, false)), "(current_work is the item, a rescuer)");
    Ok(())
});

ktest!(workqueue::work_on_cpu_runs_there_and_returns_the_result [min_cpus = 2] => |ctx| {
    let n = port().cpu_count();
    for cpu in 0..n {
        let r = workqueue::work_on_cpu(cpu, move || (port().cpu_id(), cpu * 10)).map_err(err("work_on_cpu"))?;
        check_eq!(r, (cpu, cpu * 10), "ran on the CPU and returned the value");
    }
    check_eq!(workqueue::work_on_cpu(n + 5, || 0).map_err(|e| e.errno), Err(EINVAL), "a CPU that does not exist");
    Ok(())
});

ktest!(workqueue::system_freezable_power_efficient_queue_exists => |ctx| {
    let q = system::freezable_power_efficient();
    check_eq!(q.name(), "events_freezable_power_efficient");
    check!(q.flags().contains(WqFlags::FREEZABLE | WqFlags::POWER_EFFICIENT));
    check_eq!(SystemWq::ALL.len(), 9);
    let (runs, w) = counter();
    check!(q.queue(&w));
    q.flush().map_err(err("flush"))?;
    check_eq!(runs.load(Ordering::SeqCst), 1);
    Ok(())
});
ktest!(workqueue::a_cpu_hog_is_detected_and_taken_out_of_concurrency_management => |ctx| {
    // Linux 6.5+: an item that keeps its CPU longer than
    // wq_cpu_intensive_thresh_us without sleeping is flagged CPU-intensive
    // by the tick, and the items queued behind it get another worker. The
    // hog calls cond_resched (as work loops must in Redox's model): that
    // is where a kernel that runs with interrupts off takes its tick.
    let cpu = port().cpu_count() - 1;
    let q = Workqueue::new("wq-hog", WqFlags::empty(), 0).map_err(err("alloc"))?;
    check_eq!(workqueue::cpu_intensive_thresh_us(), workqueue::CPU_INTENSIVE_THRESH_US, "the default threshold");
    let hogs_before = workqueue::cpu_hogs("cpu_hog_probe");
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let hog = Work::named("cpu_hog_probe", move || {
        let p = port();
        let end = p.now_ns() + 150_000_000;
        while p.now_ns() < end {
            p.cond_resched();
        }
        d.store(true, Ordering::SeqCst);
    });
    let behind_early = Arc::new(AtomicBool::new(false));
    let (dn, be) = (done.clone(), behind_early.clone());
    let behind = Work::new(move || be.store(!dn.load(Ordering::SeqCst), Ordering::SeqCst));
    check!(q.queue_on(cpu, &hog));
    msleep(5);
    check!(q.queue_on(cpu, &behind));
    q.flush().map_err(err("flush"))?;
    check!(q.stats().cpu_intensive >= 1, "the hog was never flagged CPU-intensive (stats {:?})", q.stats());
    check!(workqueue::cpu_hogs("cpu_hog_probe") > hogs_before, "the hog was not counted");
    if port().name() == "host" || ctx.args.preempt_full {
        check!(behind_early.load(Ordering::SeqCst), "the item behind the hog waited for it to end");
    }
    q.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::an_items_cpu_time_is_counted_at_the_tick => |ctx| {
    // Linux's PWQ_STAT_CPU_TIME is sampled by wq_worker_tick; so is ours:
    // an item that keeps its CPU for 100 ms is counted for most of it
    // (all but what follows the last tick) and never for more than the
    // time it was queued. It calls cond_resched, where Redox takes its tick.
    const SPIN_NS: u64 = 100_000_000;
    let q = Workqueue::new("wq-cputime", WqFlags::empty(), 0).map_err(err("alloc"))?;
    check_eq!(q.stats().cpu_time_ns, 0, "a new queue has no CPU time");
    let spinner = Work::named("cpu_time_probe", || {
        let p = port();
        let end = p.now_ns() + SPIN_NS;
        while p.now_ns() < end {
            p.cond_resched();
        }
    });
    let t0 = port().now_ns();
    check!(q.queue(&spinner));
    q.flush().map_err(err("flush"))?;
    let wall = port().now_ns() - t0;
    let s = q.stats();
    check_eq!(s.completed, 1);
    check!(s.cpu_time_ns >= SPIN_NS / 2, "counted {} ns of a {SPIN_NS} ns spin (stats {s:?})", s.cpu_time_ns);
    check!(s.cpu_time_ns <= wall, "counted {} ns in {wall} ns from queue to flush (stats {s:?})", s.cpu_time_ns);
    q.destroy().map_err(err("destroy"))?;
    Ok(())
});

/// The pool id in an unbound worker's name (`kworker/uP:M`).
fn unbound_pool_of_current() -> Option<usize> {
    let name = port().current().name();
    let rest = name.strip_prefix("kworker/u")?;
    rest.split(':').next()?.parse().ok()
}

ktest!(workqueue::apply_attrs_moves_new_items_and_keeps_old_ones [min_cpus = 2] => |ctx| {
    let n = port().cpu_count();
    let last = n - 1;
    let q = Workqueue::new("wq-apply", WqFlags::UNBOUND, 0).map_err(err("alloc"))?;
    let a = q.attrs().ok_or(Failure::Fail("an unbound queue has attributes".into()))?;
    check_eq!(a.scope, kport::AffinityScope::Cache, "Linux's default scope");
    check!(!a.strict, "Linux's default is not strict");
    // One item held on the old attributes' pool while they change.
    let gate = Arc::new(Completion::new());
    let (g, old_ran) = (gate.clone(), Arc::new(AtomicBool::new(false)));
    let o = old_ran.clone();
    let held = Work::new(move || {
        g.wait("gate");
        o.store(true, Ordering::SeqCst);
    });
    check!(q.queue(&held));
    let strict_last = workqueue::WqAttrs { cpumask: kport::CpuMask::one(last), strict: true, ..a };
    q.apply_attrs(strict_last).map_err(err("apply_attrs"))?;
    check_eq!(q.attrs(), Some(strict_last));
    // New items run only on the new mask, from whichever CPU they come.
    let cpus = Arc::new(SpinLock::new(Vec::new()));
    let items: Vec<Work> = (0..n)
        .map(|_| {
            let c = cpus.clone();
            Work::new(move || c.lock().push(port().cpu_id()))
        })
        .collect();
    for (i, it) in items.iter().enumerate() {
        check!(q.queue_on(i, it));
    }
    let ran = wait_for(10_000, || cpus.lock().len() == n);
    gate.complete_all();
    q.flush().map_err(err("flush"))?;
    check!(ran, "items queued after apply_attrs did not run ({} of {n})", cpus.lock().len());
    check!(cpus.lock().iter().all(|&c| c == last), "items ran outside the new mask: {:?}", cpus.lock().clone());
    check!(old_ran.load(Ordering::SeqCst), "the item queued before the change was lost");
    // A bound queue has no attributes to change.
    let b = Workqueue::new("wq-apply-bound", WqFlags::empty(), 0).map_err(err("alloc"))?;
    check!(b.attrs().is_none());
    check_eq!(b.apply_attrs(a).map_err(|e| e.errno), Err(EINVAL));
    check_eq!(q.apply_attrs(workqueue::WqAttrs { cpumask: kport::CpuMask::NONE, ..a }).map_err(|e| e.errno), Err(EINVAL));
    q.destroy().map_err(err("destroy"))?;
    b.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::apply_attrs_highpri_uses_a_highpri_pool => |ctx| {
    let q = Workqueue::new("wq-apply-hi", WqFlags::UNBOUND, 0).map_err(err("alloc"))?;
    let a = q.attrs().ok_or(Failure::Fail("no attrs".into()))?;
    q.apply_attrs(workqueue::WqAttrs { highpri: true, ..a }).map_err(err("apply_attrs"))?;
    let pool = Arc::new(SpinLock::new(None));
    let p2 = pool.clone();
    let w = Work::new(move || *p2.lock() = unbound_pool_of_current());
    check!(q.queue(&w));
    q.flush().map_err(err("flush"))?;
    let id = (*pool.lock()).ok_or(Failure::Fail("the item did not run on an unbound worker".into()))?;
    let info = workqueue::pools().into_iter().find(|p| p.id == id).ok_or(Failure::Fail("no such pool".into()))?;
    check!(info.highpri && info.cpu.is_none(), "the item ran in pool {id}, not an unbound highpri one");
    q.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::ordered_queue_keeps_its_order_across_apply_attrs [min_cpus = 2] => |ctx| {
    let n = port().cpu_count();
    let q = Workqueue::ordered("wq-ord-apply", WqFlags::empty()).map_err(err("alloc"))?;
    let log = Arc::new(SpinLock::new(Vec::new()));
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..40)
        .map(|i| {
            let (l, c, m) = (log.clone(), now.clone(), max.clone());
            Work::new(move || {
                let k = c.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(k, Ordering::SeqCst);
                if i % 7 == 0 {
                    msleep(2);
                }
                l.lock().push(i);
                c.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for it in &items[..20] {
        check!(q.queue(it));
    }
    let a = q.attrs().ok_or(Failure::Fail("no attrs".into()))?;
    q.apply_attrs(workqueue::WqAttrs { cpumask: kport::CpuMask::one(n - 1), strict: true, ..a })
        .map_err(err("apply_attrs"))?;
    for it in &items[20..] {
        check!(q.queue(it));
    }
    q.flush().map_err(err("flush"))?;
    check_eq!(*log.lock(), (0..40).collect::<Vec<_>>(), "order across the change");
    check_eq!(max.load(Ordering::SeqCst), 1, "two items of an ordered queue ran at once");
    q.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::affinity_scopes_decide_where_items_run [min_cpus = 2] => |ctx| {
    let n = port().cpu_count();
    let q = Workqueue::new("wq-scopes", WqFlags::UNBOUND, 0).map_err(err("alloc"))?;
    let a = q.attrs().ok_or(Failure::Fail("no attrs".into()))?;
    for scope in kport::AffinityScope::ALL {
        q.apply_attrs(workqueue::WqAttrs { scope, strict: true, ..a }).map_err(err("apply_attrs"))?;
        let pods = kport::pods(scope, kport::CpuMask::first(n));
        let ran: Arc<SpinLock<Vec<(usize, usize)>>> = Arc::new(SpinLock::new(Vec::new()));
        let items: Vec<Work> = (0..n)
            .map(|from| {
                let r = ran.clone();
                Work::new(move || r.lock().push((from, port().cpu_id())))
            })
            .collect();
        for (from, it) in items.iter().enumerate() {
            check!(q.queue_on(from, it));
        }
        q.flush().map_err(err("flush"))?;
        for &(from, on) in ran.lock().iter() {
            let pod = pods.iter().find(|p| p.contains(from)).copied().unwrap_or(kport::CpuMask::NONE);
            check!(pod.contains(on), "scope {}: an item queued for CPU {from} ran on CPU {on}, outside its pod {pod:?}", scope.name());
        }
        check_eq!(ran.lock().len(), n, "scope {}", scope.name());
    }
    q.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::worker_desc_shows_in_listings => |ctx| {
    let q = Workqueue::new("wq-desc", WqFlags::empty(), 0).map_err(err("alloc"))?;
    // While an item runs, its worker is listed `+queue`; after, `-queue`;
    // set_worker_desc replaces the queue's name for that item.
    let seen: Arc<SpinLock<Vec<(usize, alloc::string::String)>>> = Arc::new(SpinLock::new(Vec::new()));
    let listed = |id: usize| {
        kthreadd::registry::rows().into_iter().find(|r| r.id == id).map(|r| r.name).unwrap_or_default()
    };
    let s1 = seen.clone();
    let plain = Work::new(move || {
        let id = port().current_id();
        s1.lock().push((id, listed(id)));
    });
    check!(q.queue(&plain));
    q.flush().map_err(err("flush"))?;
    let s2 = seen.clone();
    let described = Work::new(move || {
        workqueue::set_worker_desc(format_args!("probe-{}", 42));
        let id = port().current_id();
        s2.lock().push((id, listed(id)));
    });
    check!(q.queue(&described));
    q.flush().map_err(err("flush"))?;
    let v = seen.lock().clone();
    check_eq!(v.len(), 2);
    check!(v[0].1.starts_with("[kworker/") && v[0].1.ends_with("+wq-desc]"), "running an item of wq-desc: {}", v[0].1);
    check!(v[1].1.ends_with("+probe-42]"), "after set_worker_desc: {}", v[1].1);
    // After the item, the worker keeps the description with '-'.
    let after = listed(v[1].0);
    check!(after.ends_with("-probe-42]"), "idle after the described item: {after}");
    q.destroy().map_err(err("destroy"))?;
    Ok(())
});

ktest!(workqueue::flush_and_cancel_sync_of_an_ending_item_see_its_end [min_cpus = 2] => |ctx| {
    // The idle shortcut of flush_work and cancel_work_sync (no lock when
    // nothing is pending or running) must not mistake an instance that is
    // no longer pending but still running for an ended one: both return
    // only once the function has finished. The item runs on CPU 1 while
    // CPU 0 watches its pending bit drop, then flushes (or cancels) at
    // once, which lands in the middle of the run or just after it.
    let _pin = Pinned::to(0);
    let q = system::wq();
    let left = Arc::new(AtomicUsize::new(0));
    let l = left.clone();
    let w = Work::new(move || {
        for _ in 0..200 {
            core::hint::spin_loop();
        }
        l.fetch_add(1, Ordering::SeqCst);
    });
    let mut waited = 0;
    for i in 0..2_000usize {
        check!(q.queue_on(1, &w), "round {i}: the item was still pending");
        while w.is_pending() {
            core::hint::spin_loop();
        }
        if i % 2 == 0 {
            waited += usize::from(w.flush());
        } else {
            check!(!w.cancel_sync(), "round {i}: nothing was pending");
        }
        check_eq!(left.load(Ordering::SeqCst), i + 1, "round {i}: returned before the function ended");
    }
    crate::diag!("flushes that waited for the run: {waited} of 1000");
    Ok(())
});
