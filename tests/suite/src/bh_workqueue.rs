//! Suite `bh_workqueue`: Linux 6.9+ BH workqueues (`WQ_BH`,
//! `system_bh_wq`, `system_bh_highpri_wq`): items run in softirq context on
//! the CPU that queued them; flush and cancel work from task context.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kport::sync::{Mutex, SpinLock};
use kport::{EINVAL, port};
use softirq::{in_hardirq, in_serving_softirq, local_bh_disable};
use workqueue::{Work, Workqueue, WqFlags, system};

use crate::bench::{ITERATIONS, Pinned, WARMUP, report_latency};
use crate::port_api::{msleep, wait_for};
use crate::{Failure, check, check_eq, err, ktest};

/// Where a probe item ran: its CPU, and whether it was in softirq context.
type Seen = Arc<SpinLock<Option<(usize, bool)>>>;

/// An item that records where and in which context it ran.
fn probe() -> (Seen, Work) {
    let seen = Arc::new(SpinLock::new(None));
    let s = seen.clone();
    (seen, Work::new(move || *s.lock() = Some((port().cpu_id(), in_serving_softirq() && !in_hardirq()))))
}

ktest!(bh_workqueue::items_run_in_softirq_on_the_queueing_cpu => |ctx| {
    for cpu in 0..port().cpu_count() {
        let _pin = Pinned::to(cpu);
        for q in [system::bh(), system::bh_highpri()] {
            let (seen, w) = probe();
            check!(q.queue(&w), "queue on {}", q.name());
            check!(wait_for(5_000, || seen.lock().is_some()), "{}: never ran", q.name());
            check_eq!(*seen.lock(), Some((cpu, true)), "{}: (CPU, in softirq)", q.name());
        }
    }
    Ok(())
});

ktest!(bh_workqueue::queue_on_another_cpu_runs_there [min_cpus = 2] => |ctx| {
    let _pin = Pinned::to(0);
    let target = port().cpu_count() - 1;
    let (seen, w) = probe();
    check!(system::bh().queue_on(target, &w));
    check!(wait_for(5_000, || seen.lock().is_some()), "never ran");
    check_eq!(*seen.lock(), Some((target, true)));
    Ok(())
});

ktest!(bh_workqueue::flush_and_cancel_from_task_context => |ctx| {
    let _pin = Pinned::to(0);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let w = Work::new(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    check!(system::bh().queue(&w));
    w.flush();
    check_eq!(runs.load(Ordering::SeqCst), 1, "flush returned before the BH item ran");
    // Held back by disabled bottom halves, then cancelled: it never runs.
    // Not on the host port, whose bottom-half word is per thread: an
    // interrupt simulated for this CPU on another thread may run the item.
    if port().name() != "host" {
        {
            let _bh = local_bh_disable();
            check!(system::bh().queue(&w));
            check!(w.cancel(), "cancel of a pending BH item");
        }
        msleep(20);
        check_eq!(runs.load(Ordering::SeqCst), 1, "a cancelled BH item ran");
    }
    // cancel_sync races the softirq: either it took the instance (which
    // then never runs) or the instance had run.
    check!(system::bh().queue(&w));
    let was_pending = w.cancel_sync();
    msleep(20);
    check_eq!(was_pending, runs.load(Ordering::SeqCst) == 1, "cancel_sync's answer against the runs");
    system::bh().flush().map_err(err("flush_workqueue"))?;
    Ok(())
});

ktest!(bh_workqueue::highpri_bh_runs_before_normal_bh => |ctx| {
    let _pin = Pinned::to(0);
    let order = Arc::new(SpinLock::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    let normal = Work::new(move || o1.lock().push("bh"));
    let high = Work::new(move || o2.lock().push("bh_highpri"));
    {
        let _bh = local_bh_disable();
        check!(system::bh().queue(&normal));
        check!(system::bh_highpri().queue(&high));
    }
    check!(wait_for(5_000, || order.lock().len() == 2));
    check_eq!(*order.lock(), alloc::vec!["bh_highpri", "bh"]);
    Ok(())
});

ktest!(bh_workqueue::a_bh_queue_takes_only_highpri_and_no_max_active => |ctx| {
    let q = Workqueue::new("my-bh", WqFlags::BH, 0).map_err(err("alloc BH"))?;
    let (seen, w) = probe();
    check!(q.queue(&w));
    check!(wait_for(5_000, || seen.lock().is_some()));
    q.destroy().map_err(err("destroy"))?;
    check_eq!(Workqueue::new("bad-bh", WqFlags::BH | WqFlags::UNBOUND, 0).map(|_| ()).map_err(|e| e.errno), Err(EINVAL));
    check_eq!(Workqueue::new("bad-bh", WqFlags::BH, 4).map(|_| ()).map_err(|e| e.errno), Err(EINVAL));
    Ok(())
});

static SLEEPY: Mutex<()> = Mutex::new(());

ktest!(bh_workqueue::sleeping_in_bh_work_is_reported [may_report = true] => |ctx| {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let w = Work::new(move || {
        drop(SLEEPY.lock());
        d.store(true, Ordering::SeqCst);
    });
    let before = kport::context::reports();
    check!(system::bh().queue(&w));
    check!(wait_for(5_000, || done.load(Ordering::SeqCst)));
    let reps = kport::context::reports_since(before);
    let r = reps.first().ok_or(Failure::Fail("no report from a sleeping BH item".into()))?;
    check!(r.context.softirq, "{:?}", r.context);
    Ok(())
});

ktest!(bh_workqueue::bench_bh_wq_queue_run [bench = true] => |ctx| {
    let p = port();
    let _pin = Pinned::to(0);
    let at = Arc::new(AtomicU64::new(0));
    let a = at.clone();
    let w = Work::new(move || a.store(port().cycles(), Ordering::SeqCst));
    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 0..WARMUP + ITERATIONS {
        at.store(0, Ordering::SeqCst);
        let t0 = p.cycles();
        system::bh().queue(&w);
        while at.load(Ordering::SeqCst) == 0 {
            p.yield_now();
        }
        if i >= WARMUP {
            samples.push(at.load(Ordering::SeqCst).saturating_sub(t0));
        }
    }
    report_latency("bh_wq_queue_run", &mut samples);
    Ok(())
});
