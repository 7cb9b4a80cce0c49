//! Suite `hotplug`: CPU hot-plug as Linux does it (`docs/hotplug.md`). A
//! CPU taken down stops (in the testkernel: halted with interrupts off; in
//! Redox and on the host, a logical offline); its per-CPU pools are unbound
//! and their items run on the online CPUs; its timers, tasklets and BH
//! items move; threads bound to it run elsewhere until it returns; and when
//! it comes back everything is bound to it again.

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kport::harness::harness;
use kport::sync::SpinLock;
use kport::{CpuMask, EBUSY, EINVAL, ENXIO, port};
use kthreadd::kthread::{self, Builder};
use softirq::Tasklet;
use workqueue::{Work, system};

use crate::bench::Pinned;
use crate::port_api::{msleep, wait_for};
use crate::{Failure, check, check_eq, err, ktest};

/// The CPU the cases take down: the last one (never CPU 0, which the
/// testkernel keeps, as Linux on x86 does).
fn victim() -> usize {
    port().cpu_count() - 1
}

/// `cpu` offline until dropped (also when a check fails).
struct Down(usize);

impl Down {
    fn take(cpu: usize) -> Result<Down, Failure> {
        harness().cpu_down(cpu).map_err(err("cpu_down"))?;
        Ok(Down(cpu))
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = harness().cpu_up(self.0);
    }
}

/// Where things ran: one CPU per run.
#[derive(Clone)]
struct Runs(Arc<SpinLock<Vec<usize>>>);

impl Default for Runs {
    fn default() -> Self {
        Runs(Arc::new(SpinLock::new(Vec::new())))
    }
}

impl Runs {
    fn record(&self) {
        self.0.lock().push(port().cpu_id());
    }
    fn get(&self) -> Vec<usize> {
        self.0.lock().clone()
    }
    fn count(&self) -> usize {
        self.0.lock().len()
    }
}

/// The bound pools of `cpu`, as the workqueue reports them.
fn bound_pools(cpu: usize) -> Vec<workqueue::PoolInfo> {
    workqueue::pools().into_iter().filter(|p| p.cpu == Some(cpu) && !p.bh).collect()
}

ktest!(hotplug::cpu_down_stops_the_cpu_and_cpu_up_restarts_it [min_cpus = 2] => |ctx| {
    let h = harness();
    let v = victim();
    let Some(before) = h.cpu_activity(v) else {
        // A logical offline (Redox, host): the CPU keeps running.
        let d = Down::take(v)?;
        check!(!port().online_mask().contains(v));
        drop(d);
        check!(port().online_mask().contains(v));
        return Ok(());
    };
    check!(!before.dead);
    let d = Down::take(v)?;
    let a = h.cpu_activity(v).ok_or(Failure::Fail("activity vanished".into()))?;
    check!(a.dead, "cpu_down returned before CPU {v} stopped");
    check_eq!(a.deaths, before.deaths + 1);
    msleep(300);
    let b = h.cpu_activity(v).ok_or(Failure::Fail("activity vanished".into()))?;
    check_eq!((b.switches, b.interrupts), (a.switches, a.interrupts), "the stopped CPU switched or took an interrupt");
    check_eq!(port().call_on_cpu(v, alloc::boxed::Box::new(|| {}), true).map_err(|e| e.errno), Err(ENXIO));
    drop(d);
    let c = h.cpu_activity(v).ok_or(Failure::Fail("activity vanished".into()))?;
    check!(!c.dead, "cpu_up returned before CPU {v} ran");
    // It runs again: a thread bound to it runs there.
    let runs = Runs::default();
    let r = runs.clone();
    let t = kthread::create_on_cpu(move || { r.record(); 0 }, v, format_args!("hp-after")).map_err(err("create"))?;
    t.wake();
    check!(wait_for(5_000, || runs.count() == 1), "a thread bound to CPU {v} did not run");
    check_eq!(runs.get(), [v]);
    let _ = t.stop();
    check!(wait_for(5_000, || h.cpu_activity(v).is_some_and(|x| x.interrupts > c.interrupts)), "no interrupt after cpu_up");
    let ran = Arc::new(AtomicUsize::new(usize::MAX));
    let r2 = ran.clone();
    port().call_on_cpu(v, alloc::boxed::Box::new(move || r2.store(port().cpu_id(), Ordering::SeqCst)), true).map_err(err("call_on_cpu"))?;
    check_eq!(ran.load(Ordering::SeqCst), v);
    Ok(())
});

ktest!(hotplug::cpu0_and_bad_cpus_are_refused [min_cpus = 2] => |ctx| {
    let h = harness();
    let n = port().cpu_count();
    check_eq!(h.cpu_down(n).map_err(|e| e.errno), Err(EINVAL), "a CPU that does not exist");
    check_eq!(h.cpu_up(victim()).map_err(|e| e.errno), Err(EINVAL), "cpu_up of an online CPU");
    if h.cpu_activity(0).is_some() {
        check_eq!(h.cpu_down(0).map_err(|e| e.errno), Err(EBUSY), "CPU 0 stays (it takes the IOAPIC's lines)");
    }
    let d = Down::take(victim())?;
    check_eq!(h.cpu_down(victim()).map_err(|e| e.errno), Err(EINVAL), "cpu_down of an offline CPU");
    drop(d);
    Ok(())
});

ktest!(hotplug::bound_items_run_elsewhere_while_disassociated_then_on_their_cpu [min_cpus = 2] => |ctx| {
    let v = victim();
    let d = Down::take(v)?;
    let pools = bound_pools(v);
    check_eq!(pools.len(), 2, "normal and highpri pools of CPU {v}");
    for p in &pools {
        check!(p.disassociated, "pool {} of CPU {v} is not disassociated", p.id);
        check_eq!(p.nr_running, 0, "pool {} still counts running workers", p.id);
    }
    for q in [system::wq(), system::highpri()] {
        let runs = Runs::default();
        let r = runs.clone();
        let w = Work::named("hp_offline_item", move || r.record());
        check!(q.queue_on(v, &w), "queue_on({v}) of {}", q.name());
        w.flush();
        let got = runs.get();
        check_eq!(got.len(), 1, "{}: runs {got:?}", q.name());
        check!(got[0] != v, "{}: ran on the offline CPU {v}", q.name());
    }
    // Many items at once, some that sleep: no item is lost or run twice.
    let count = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..64)
        .map(|i| {
            let c = count.clone();
            Work::named("hp_offline_many", move || {
                if i % 8 == 0 {
                    msleep(1);
                }
                c.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for w in &items {
        check!(system::wq().queue_on(v, w));
    }
    for w in &items {
        w.flush();
    }
    check_eq!(count.load(Ordering::SeqCst), 64);
    drop(d);
    for p in bound_pools(v) {
        check!(!p.disassociated, "pool {} of CPU {v} still disassociated after cpu_up", p.id);
    }
    // Back on its CPU: every item runs there again.
    let runs = Runs::default();
    for _ in 0..8 {
        let r = runs.clone();
        let w = Work::named("hp_back_item", move || r.record());
        check!(system::wq().queue_on(v, &w));
        w.flush();
    }
    check_eq!(runs.get(), [v; 8], "items of CPU {v}'s pool after cpu_up");
    let _ = ctx;
    Ok(())
});

ktest!(hotplug::workers_leave_the_cpu_and_are_bound_again [min_cpus = 2] => |ctx| {
    let v = victim();
    let before: Vec<(usize, usize)> = bound_pools(v).iter().flat_map(|p| p.workers.iter().map(|w| (p.id, w.id))).collect();
    check!(!before.is_empty(), "CPU {v}'s pools have no workers");
    let d = Down::take(v)?;
    let all = CpuMask::first(port().cpu_count());
    for (_, id) in &before {
        if let Some(k) = kthreadd::registry::find(*id) {
            // Linux's `wq_unbound_cpumask`: every CPU; the scheduler keeps
            // them off the offline one.
            check_eq!(k.affinity(), all, "[{}] while CPU {v} is offline", k.comm());
            if harness().cpu_activity(v).is_some() {
                check!(k.task().cpu() != v || !k.task().is_running(), "[{}] runs on the stopped CPU", k.comm());
            }
        }
    }
    drop(d);
    for (_, id) in &before {
        if let Some(k) = kthreadd::registry::find(*id) {
            check!(wait_for(5_000, || k.affinity() == CpuMask::one(v)), "[{}] after cpu_up: {:?}", k.comm(), k.affinity());
        }
    }
    let _ = ctx;
    Ok(())
});

ktest!(hotplug::timer_armed_on_the_cpu_fires_after_it_stops [min_cpus = 2] => |ctx| {
    let p = port();
    let v = victim();
    let fired = Arc::new(AtomicU64::new(0));
    let on = Arc::new(AtomicUsize::new(usize::MAX));
    let (f, o) = (fired.clone(), on.clone());
    let t = p.timer(Arc::new(move || {
        o.store(port().cpu_id(), Ordering::SeqCst);
        f.store(port().now_ns(), Ordering::SeqCst);
    }));
    let deadline = p.now_ns() + 400_000_000;
    t.arm(deadline, Some(v));
    let d = Down::take(v)?;
    let stopped_at = p.now_ns();
    check!(t.is_pending() || fired.load(Ordering::SeqCst) != 0, "cpu_down lost the timer");
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0), "the timer of the offline CPU never fired");
    let at = fired.load(Ordering::SeqCst);
    check!(at >= deadline, "fired early");
    // (A slow cpu_down may let it fire on its CPU before that stops.)
    if at > stopped_at && harness().cpu_activity(v).is_some() {
        check!(on.load(Ordering::SeqCst) != v, "fired on the stopped CPU");
    }
    // Armed on the offline CPU: it fires on an online one.
    fired.store(0, Ordering::SeqCst);
    t.arm(p.now_ns() + 20_000_000, Some(v));
    check!(wait_for(5_000, || fired.load(Ordering::SeqCst) != 0), "a timer armed on the offline CPU never fired");
    drop(d);
    let _ = ctx;
    Ok(())
});

ktest!(hotplug::pending_tasklet_moves_to_an_online_cpu [min_cpus = 2] => |ctx| {
    let v = victim();
    let runs = Runs::default();
    let r = runs.clone();
    let t = Tasklet::named("hp_tasklet", move || r.record());
    t.disable();
    {
        let _pin = Pinned::to(v);
        check!(t.schedule(), "schedule");
    }
    msleep(20);
    check_eq!(runs.count(), 0, "a disabled tasklet ran");
    let d = Down::take(v)?;
    check!(t.is_scheduled(), "the dead CPU's tasklet was dropped");
    t.enable();
    check!(wait_for(5_000, || runs.count() == 1), "the moved tasklet never ran");
    msleep(20);
    let got = runs.get();
    check_eq!(got.len(), 1, "runs: {got:?}");
    check!(got[0] != v || harness().cpu_activity(v).is_none(), "ran on the stopped CPU");
    drop(d);
    t.kill().map_err(err("kill"))?;
    let _ = ctx;
    Ok(())
});

ktest!(hotplug::bh_items_of_a_dead_cpu_run_elsewhere_exactly_once [min_cpus = 2] => |ctx| {
    let v = victim();
    let d = Down::take(v)?;
    for q in [system::bh(), system::bh_highpri()] {
        let runs = Runs::default();
        let items: Vec<Work> = (0..20)
            .map(|_| {
                let r = runs.clone();
                Work::named("hp_bh_item", move || r.record())
            })
            .collect();
        for w in &items {
            check!(q.queue_on(v, w), "queue_on({v}) of {}", q.name());
        }
        for w in &items {
            w.flush();
        }
        let got = runs.get();
        check_eq!(got.len(), 20, "{}: runs {got:?}", q.name());
        if harness().cpu_activity(v).is_some() {
            check!(!got.contains(&v), "{}: ran on the stopped CPU: {got:?}", q.name());
        }
    }
    drop(d);
    let runs = Runs::default();
    let r = runs.clone();
    let w = Work::named("hp_bh_back", move || r.record());
    check!(system::bh().queue_on(v, &w));
    w.flush();
    check_eq!(runs.get(), [v], "a BH item of CPU {v} after cpu_up");
    let _ = ctx;
    Ok(())
});

ktest!(hotplug::thread_bound_to_an_offline_cpu_loses_its_affinity [min_cpus = 2] => |ctx| {
    // Linux's `select_fallback_rq`: a thread whose CPUs are all offline
    // when it must run gets every CPU as its mask, for good.
    let v = victim();
    let runs = Runs::default();
    let r = runs.clone();
    let t = Builder::new(format_args!("hp-bound"), move || {
        while !kthread::should_stop() {
            r.record();
            kthread::sleep_ms_or_stop(5);
        }
        0
    })
    .create()
    .map_err(err("create"))?;
    t.bind(v).map_err(err("bind"))?;
    let d = Down::take(v)?;
    t.wake();
    check!(wait_for(5_000, || runs.count() >= 3), "the bound thread did not run while its CPU was offline");
    let real = harness().cpu_activity(v).is_some();
    if real {
        check!(!runs.get().contains(&v), "ran on the stopped CPU: {:?}", runs.get());
        check!(t.affinity().contains(0) && t.affinity().contains(v), "its mask was not widened: {:?}", t.affinity());
    }
    drop(d);
    let n0 = runs.count();
    check!(wait_for(5_000, || runs.count() >= n0 + 3), "stopped running after cpu_up");
    if real {
        check!(t.affinity() != CpuMask::one(v), "the widened mask went back: {:?}", t.affinity());
    }
    check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
    let _ = ctx;
    Ok(())
});

ktest!(hotplug::repeated_down_up_keeps_every_item [min_cpus = 2] => |ctx| {
    // Items keep coming from every CPU while the victim goes and comes back
    // ten times: each runs exactly once.
    let v = victim();
    let n = port().cpu_count();
    let queued = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicUsize::new(0));
    let mut feeders = Vec::new();
    for c in 0..n - 1 {
        let (q, r, s) = (queued.clone(), ran.clone(), stop.clone());
        feeders.push(
            kthread::create_on_cpu(
                move || {
                    let mut items: Vec<Work> = Vec::new();
                    let mut i = 0usize;
                    while s.load(Ordering::SeqCst) == 0 {
                        let r2 = r.clone();
                        let w = Work::named("hp_feed", move || {
                            r2.fetch_add(1, Ordering::SeqCst);
                        });
                        let target = i % n;
                        i += 1;
                        let q2 = if i.is_multiple_of(3) { system::bh() } else { system::wq() };
                        if q2.queue_on(target, &w) {
                            q.fetch_add(1, Ordering::SeqCst);
                        }
                        items.push(w);
                        if items.len() >= 32 {
                            for w in items.drain(..) {
                                w.flush();
                            }
                        }
                        port().cond_resched();
                    }
                    for w in items.drain(..) {
                        w.flush();
                    }
                    0
                },
                c,
                format_args!("hp-feed/{c}"),
            )
            .map_err(err("create"))?,
        );
    }
    for f in &feeders {
        f.wake();
    }
    let h = harness();
    for round in 0..10 {
        h.cpu_down(v).map_err(|e| Failure::Fail(format!("round {round}: cpu_down: {e:?}")))?;
        msleep(10);
        h.cpu_up(v).map_err(|e| Failure::Fail(format!("round {round}: cpu_up: {e:?}")))?;
        msleep(10);
    }
    stop.store(1, Ordering::SeqCst);
    for f in &feeders {
        check_eq!(f.stop().map_err(|e| e.errno), Ok(0));
    }
    check!(queued.load(Ordering::SeqCst) > 0, "nothing was queued");
    check_eq!(ran.load(Ordering::SeqCst), queued.load(Ordering::SeqCst), "items run against items queued");
    let _ = ctx;
    Ok(())
});

ktest!(hotplug::msi_lines_move_off_the_cpu_and_back [min_cpus = 2] => |ctx| {
    let v = victim();
    if harness().cpu_activity(v).is_none() {
        // A logical offline (Redox, host): the CPU still takes its lines.
        return crate::skip("this port's offline CPUs keep taking interrupts");
    }
    let Some(chip) = port().irq_chip() else { return crate::skip("no interrupt chip") };
    let m = match chip.msi_alloc(v) {
        Ok(m) => m,
        Err(e) => return crate::skip(format!("no message-signalled lines here: {e:?}")),
    };
    let written: Arc<SpinLock<Vec<(u64, u32)>>> = Arc::new(SpinLock::new(Vec::new()));
    let w = written.clone();
    chip.msi_set_writer(m.irq, Arc::new(move |a, d| w.lock().push((a, d))));
    let result = (|| -> crate::TestResult {
        let d = Down::take(v)?;
        let moved = written.lock().clone();
        check_eq!(moved.len(), 1, "messages written at cpu_down: {moved:x?}");
        check!(moved[0].0 != m.address, "the line still points at the offline CPU: {:#x}", moved[0].0);
        check_eq!(moved[0].1, m.data, "the vector changed");
        drop(d);
        let back = written.lock().clone();
        check_eq!(back.len(), 2, "messages written at cpu_up: {back:x?}");
        check_eq!(back[1], (m.address, m.data), "the line did not return to CPU {v}");
        Ok(())
    })();
    chip.msi_free(m.irq);
    let _ = ctx;
    result
});

ktest!(hotplug::a_changed_buddy_reports_no_hard_lockup [min_cpus = 3, timeout_s = 120, may_report = true] => |ctx| {
    // Each CPU's timer checks the next online CPU's interrupt count every
    // third period. While the victim is offline, the CPU before it checks
    // the one after it, against the count the victim saved there, maybe
    // less than a period ago: without a fresh start at each change of buddy
    // (Linux touches the next CPU when one goes or comes) that is a hard
    // lockup reported for a CPU that is fine.
    kthreadd::watchdog::init().map_err(err("watchdog"))?;
    let old = kport::sysctl::get("kernel.watchdog_thresh").map_err(err("get"))?;
    kport::sysctl::set("kernel.watchdog_thresh", "1").map_err(err("set"))?;
    let seq0 = kthreadd::watchdog::reports();
    let v = victim();
    let after = (v + 1) % port().cpu_count();
    let result = (|| -> crate::TestResult {
        // Offline and online for times that are not multiples of the
        // 0.4 s period, so the changes meet the checks at many phases.
        for round in 0..12u64 {
            let d = Down::take(v)?;
            msleep(150 + 70 * round);
            drop(d);
            msleep(250 + 50 * round);
        }
        let reports: Vec<_> = kthreadd::watchdog::reports_since(seq0).into_iter().filter(|r| r.hard && (r.cpu == after || r.cpu == v)).collect();
        check!(reports.is_empty(), "hard lockups reported for CPU {after} (checked by a new buddy) or {v} (offline): {reports:?}");
        Ok(())
    })();
    let _ = kport::sysctl::set("kernel.watchdog_thresh", &format!("{old}"));
    let _ = ctx;
    result
});

ktest!(hotplug::an_offline_cpu_is_no_lockup [min_cpus = 2, timeout_s = 120, may_report = true] => |ctx| {
    // With a 2 s threshold the buddy looks every 1.2 s: a CPU offline for
    // 3 s and back must not be reported (a stopped CPU takes no timer
    // interrupt; once back, its count starts afresh).
    kthreadd::watchdog::init().map_err(err("watchdog"))?;
    let old = kport::sysctl::get("kernel.watchdog_thresh").map_err(err("get"))?;
    kport::sysctl::set("kernel.watchdog_thresh", "1").map_err(err("set"))?;
    let seq0 = kthreadd::watchdog::reports();
    let v = victim();
    let result = (|| -> crate::TestResult {
        for _ in 0..2 {
            let d = Down::take(v)?;
            msleep(3_000);
            drop(d);
            msleep(3_000);
        }
        // Only reports about the CPU that went: with a 2 s threshold a
        // TCG vCPU the host does not run for a while is reported too.
        let reports: Vec<_> = kthreadd::watchdog::reports_since(seq0).into_iter().filter(|r| r.cpu == v).collect();
        check!(reports.is_empty(), "lockup reports for CPU {v}, which was only offline: {reports:?}");
        Ok(())
    })();
    let _ = kport::sysctl::set("kernel.watchdog_thresh", &format!("{old}"));
    let _ = ctx;
    result
});
