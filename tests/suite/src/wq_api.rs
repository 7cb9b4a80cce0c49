//! Suite `workqueue`, continued: the API Linux users expect beyond the
//! basics (disable/enable, `workqueue_set_max_active`, `current_work`,
//! `current_is_workqueue_rescuer`, `work_on_cpu`, the freezable
//! power-efficient system queue).

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kport::sync::{Completion, SpinLock};
use kport::{EINVAL, port};
use workqueue::{DelayedWork, SystemWq, Work, Workqueue, WqFlags, system};

use crate::port_api::{msleep, wait_for};
use crate::{Failure, check, check_eq, ktest};

fn err<T: core::fmt::Debug>(what: &str) -> impl FnOnce(T) -> Failure + '_ {
    move |e| Failure::Fail(format!("{what}: {e:?}"))
}

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
    check_eq!(SystemWq::ALL.len(), 7);
    let (runs, w) = counter();
    check!(q.queue(&w));
    q.flush().map_err(err("flush"))?;
    check_eq!(runs.load(Ordering::SeqCst), 1);
    Ok(())
});
