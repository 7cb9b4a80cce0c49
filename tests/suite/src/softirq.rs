//! Suites `softirq` and `tasklet`: Linux's bottom halves
//! (`kernel/softirq.c`) through the `softirq` crate.
//!
//! The cases use vectors the subsystem leaves unused (`SCHED`, `HRTIMER`,
//! `RCU`, `NET_TX`), opened once with handlers that report through statics.

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kport::sync::{Mutex, SpinLock};
use kport::{CpuMask, port};
use softirq::{Tasklet, Vector, in_hardirq, in_interrupt, in_serving_softirq, in_softirq, local_bh_disable};

use crate::bench::{ITERATIONS, Pinned, WARMUP, report_latency};
use crate::port_api::{spawn_on, wait_for};
use crate::{Failure, check, check_eq, ktest};

// ---------------------------------------------------------------- probes

/// Runs of the `SCHED` probe handler, the context it saw, and where.
static SCHED_RUNS: AtomicUsize = AtomicUsize::new(0);
static SCHED_SERVING: AtomicBool = AtomicBool::new(false);
static SCHED_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);
static SCHED_TASK: AtomicUsize = AtomicUsize::new(0);

fn sched_probe() {
    SCHED_SERVING.store(in_serving_softirq() && !in_hardirq(), Ordering::SeqCst);
    SCHED_CPU.store(port().cpu_id(), Ordering::SeqCst);
    SCHED_TASK.store(port().current_id(), Ordering::SeqCst);
    SCHED_RUNS.fetch_add(1, Ordering::SeqCst);
}

/// The `HRTIMER` storm handler: re-raises itself while `STORM_LEFT` lasts,
/// counting where it ran: runs per (task, CPU, softirq pass).
static STORM_LEFT: AtomicUsize = AtomicUsize::new(0);
static STORM_RUNS: SpinLock<Vec<(usize, usize, u64, usize)>> = SpinLock::new(Vec::new());

/// Runs of the storm handler in task `task`, of the record `runs`.
fn storm_runs_by(runs: &[(usize, usize, u64, usize)], task: usize) -> usize {
    runs.iter().filter(|r| r.0 == task).map(|r| r.3).sum()
}

/// Take the storm's record, leaving an empty one without capacity: the
/// record of a 20 000-run storm is 64 KiB, which a cleared static vector
/// would keep for the rest of the boot.
fn take_storm_runs() -> Vec<(usize, usize, u64, usize)> {
    core::mem::take(&mut *STORM_RUNS.lock())
}

fn storm_probe() {
    let p = port();
    let (id, cpu) = (p.current_id(), p.cpu_id());
    let pass = softirq::softirq::passes(cpu);
    {
        let mut v = STORM_RUNS.lock();
        match v.iter_mut().find(|r| r.0 == id && r.1 == cpu && r.2 == pass) {
            Some(r) => r.3 += 1,
            None => v.push((id, cpu, pass, 1)),
        }
    }
    if STORM_LEFT.load(Ordering::SeqCst) > 0 {
        STORM_LEFT.fetch_sub(1, Ordering::SeqCst);
        softirq::raise_softirq(Vector::Hrtimer);
    }
}

/// The `RCU` probe: takes a mutex from softirq context (a bug, reported).
static SLEEPER_MUTEX: Mutex<()> = Mutex::new(());
static SLEEPER_DONE: AtomicBool = AtomicBool::new(false);

fn sleeper_probe() {
    drop(SLEEPER_MUTEX.lock());
    SLEEPER_DONE.store(true, Ordering::SeqCst);
}

/// The `NET_TX` probe: the time it ran (benchmark).
static BENCH_AT: AtomicU64 = AtomicU64::new(0);

fn bench_probe() {
    BENCH_AT.store(port().cycles(), Ordering::SeqCst);
}

fn open_probes() {
    softirq::open_softirq(Vector::Sched, sched_probe);
    softirq::open_softirq(Vector::Hrtimer, storm_probe);
    softirq::open_softirq(Vector::Rcu, sleeper_probe);
    softirq::open_softirq(Vector::NetTx, bench_probe);
}

// ---------------------------------------------------------------- softirq

ktest!(softirq::contexts_are_told_apart => |ctx| {
    check!(!in_interrupt() && !in_softirq() && !in_hardirq(), "task context");
    {
        let _bh = local_bh_disable();
        check!(in_softirq() && in_interrupt() && !in_serving_softirq(), "bottom halves disabled");
        check!(port().in_atomic(), "with bottom halves disabled the caller is atomic");
    }
    check!(!in_softirq(), "enabled again");
    Ok(())
});

ktest!(softirq::raised_with_bh_disabled_runs_at_enable_and_not_before => |ctx| {
    open_probes();
    let before = SCHED_RUNS.load(Ordering::SeqCst);
    let me = port().current_id();
    let cpu;
    {
        let outer = local_bh_disable();
        cpu = port().cpu_id();
        {
            let _inner = local_bh_disable();
            softirq::raise_softirq(Vector::Sched);
            // Interrupts come and go meanwhile; none may run it.
            let p = port();
            let end = p.now_ns() + 20_000_000;
            while p.now_ns() < end {
                core::hint::spin_loop();
            }
            check_eq!(SCHED_RUNS.load(Ordering::SeqCst), before, "it ran while bottom halves were disabled");
        }
        check_eq!(SCHED_RUNS.load(Ordering::SeqCst), before, "it ran at an inner enable");
        drop(outer);
    }
    check_eq!(SCHED_RUNS.load(Ordering::SeqCst), before + 1, "it did not run at the last enable");
    check!(SCHED_SERVING.load(Ordering::SeqCst), "the handler was not in softirq context");
    check_eq!(SCHED_CPU.load(Ordering::SeqCst), cpu, "it ran on another CPU");
    check_eq!(SCHED_TASK.load(Ordering::SeqCst), me, "the enable ran it in the caller's context");
    Ok(())
});

ktest!(softirq::raised_in_a_real_interrupt_runs_at_its_exit => |ctx| {
    open_probes();
    let Some(test_irq) = kport::harness::installed().then(kport::harness::harness).and_then(|h| h.test_irq()) else {
        return crate::skip("no test interrupt on this port");
    };
    // The hard handler raises SCHED; the softirq must run at that
    // interrupt's exit, in the interrupted context, not in ksoftirqd.
    let raised_cpu = Arc::new(AtomicUsize::new(usize::MAX));
    let rc = raised_cpu.clone();
    let action = softirq::request_irq(
        test_irq.line(),
        alloc::boxed::Box::new(move |_| {
            rc.store(port().cpu_id(), Ordering::SeqCst);
            softirq::raise_softirq(Vector::Sched);
            softirq::IrqReturn::Handled
        }),
        softirq::IrqFlags::empty(),
        "softirq-test",
    )
    .map_err(|e| Failure::Fail(format!("request_irq: {e:?}")))?;
    let before = SCHED_RUNS.load(Ordering::SeqCst);
    test_irq.fire();
    let ran = wait_for(5_000, || SCHED_RUNS.load(Ordering::SeqCst) > before);
    let _ = softirq::free_irq(action);
    check!(ran, "the softirq raised in the interrupt never ran");
    let cpu = raised_cpu.load(Ordering::SeqCst);
    check_eq!(SCHED_CPU.load(Ordering::SeqCst), cpu, "it ran on another CPU than the interrupt's");
    let ksoftirqd = softirq::softirq::ksoftirqd(cpu).map(|k| k.id());
    check!(Some(SCHED_TASK.load(Ordering::SeqCst)) != ksoftirqd, "it waited for ksoftirqd instead of the interrupt's exit");
    Ok(())
});

ktest!(softirq::a_storm_goes_to_ksoftirqd_and_threads_still_run [timeout_s = 120] => |ctx| {
    open_probes();
    let p = port();
    let cpu = p.cpu_count() - 1;
    let _pin = Pinned::to(cpu);
    STORM_RUNS.lock().clear();
    let deferred_before = softirq::softirq::deferred(cpu);
    // An ordinary thread on the same CPU counts while the storm runs.
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (pr, st) = (progress.clone(), stop.clone());
    let t = spawn_on("storm-bystander", CpuMask::one(cpu), move || {
        while !st.load(Ordering::SeqCst) {
            pr.fetch_add(1, Ordering::SeqCst);
            port().cond_resched();
        }
    });
    t.wake();
    check!(wait_for(5_000, || progress.load(Ordering::SeqCst) > 0), "the bystander never ran");
    STORM_LEFT.store(20_000, Ordering::SeqCst);
    let seen_at_start = progress.load(Ordering::SeqCst);
    {
        let _bh = local_bh_disable();
        softirq::raise_softirq(Vector::Hrtimer);
    }
    let storm_ended = wait_for(60_000, || STORM_LEFT.load(Ordering::SeqCst) == 0);
    let seen_during = progress.load(Ordering::SeqCst) - seen_at_start;
    stop.store(true, Ordering::SeqCst);
    let runs = take_storm_runs();
    check!(wait_for(5_000, || t.state() == kport::TaskState::Dead), "the bystander did not end");
    check!(storm_ended, "the storm never ended");
    check!(softirq::softirq::deferred(cpu) > deferred_before, "no run handed the rest to ksoftirqd");
    let ksoftirqd = softirq::softirq::ksoftirqd(cpu).map(|k| k.id()).unwrap_or(0);
    let by_ksoftirqd = storm_runs_by(&runs, ksoftirqd);
    check!(by_ksoftirqd > 0, "ksoftirqd/{cpu} never ran the storm");
    check!(seen_during > 0, "the ordinary thread on CPU {cpu} made no progress during the storm");
    Ok(())
});

ktest!(softirq::the_restart_budget_is_respected => |ctx| {
    open_probes();
    let p = port();
    let _pin = Pinned::to(0);
    let (old_restarts, old_ns) = softirq::softirq::budget();
    softirq::softirq::set_budget(3, 1_000_000_000);
    STORM_RUNS.lock().clear();
    STORM_LEFT.store(50, Ordering::SeqCst);
    let me = p.current_id();
    let deferred_before = softirq::softirq::deferred(0);
    {
        let _bh = local_bh_disable();
        softirq::raise_softirq(Vector::Hrtimer);
    }
    let ended = wait_for(20_000, || STORM_LEFT.load(Ordering::SeqCst) == 0);
    // The last raise may still be running.
    let settled = wait_for(5_000, || STORM_RUNS.lock().iter().map(|r| r.3).sum::<usize>() == 51);
    softirq::softirq::set_budget(old_restarts, old_ns);
    let runs = take_storm_runs();
    check!(ended, "the rest never ran");
    check!(settled, "the handler ran {} times for 51 raises", runs.iter().map(|r| r.3).sum::<usize>());
    // The enable ran the first pass in this context: the run and two
    // restarts. (An interrupt between the enable and the pass may run one
    // itself, in this context too; either way it is cut at 3.)
    let first = runs.first().copied().ok_or(Failure::Fail("no run".into()))?;
    check_eq!(first.0, me, "the first pass ran in the enabling context");
    check_eq!(first.3, 3, "the first pass: one run and two restarts");
    for r in &runs {
        check!(r.3 <= 3, "a pass of {} runs with a budget of 3 restarts (task {}, cpu {}, pass {})", r.3, r.0, r.1, r.2);
    }
    check!(softirq::softirq::deferred(0) > deferred_before, "no pass handed the rest to ksoftirqd");
    check!(storm_runs_by(&runs, me) < 51, "everything ran in the enabling context");
    Ok(())
});

ktest!(softirq::sleeping_in_a_softirq_is_reported [may_report = true] => |ctx| {
    open_probes();
    SLEEPER_DONE.store(false, Ordering::SeqCst);
    let before = kport::context::reports();
    {
        let _bh = local_bh_disable();
        softirq::raise_softirq(Vector::Rcu);
    }
    check!(wait_for(5_000, || SLEEPER_DONE.load(Ordering::SeqCst)), "the handler never ran");
    let reps = kport::context::reports_since(before);
    let r = reps.first().ok_or(Failure::Fail("no might_sleep report from the softirq handler".into()))?;
    check!(r.context.softirq, "the report does not say softirq: {:?}", r.context);
    check!(r.location.file().ends_with("softirq.rs"), "reported at {}:{}", r.location.file(), r.location.line());
    Ok(())
});

ktest!(softirq::timers_and_delayed_work_expire_through_the_timer_softirq => |ctx| {
    let p = port();
    let cpu = p.cpu_count() - 1;
    let timer_runs = || (0..p.cpu_count()).map(|c| softirq::softirq::count(c, Vector::Timer)).sum::<u64>();
    // A soft timer's callback: TIMER softirq context, on the CPU it was
    // armed for, not before its deadline.
    let seen = Arc::new(SpinLock::new(None::<(bool, bool, usize, u64)>));
    let s = seen.clone();
    let t = softirq::SoftTimer::new(Arc::new(move || {
        *s.lock() = Some((in_serving_softirq(), in_hardirq(), port().cpu_id(), port().now_ns()));
    }));
    let before = timer_runs();
    let deadline = p.now_ns() + 20_000_000;
    t.arm(deadline, Some(cpu));
    check!(wait_for(5_000, || seen.lock().is_some()), "the timer never fired");
    let (serving, hard, on, at) = seen.lock().expect("checked");
    check!(serving && !hard, "the callback ran outside the TIMER softirq (serving {serving}, hardirq {hard})");
    check_eq!(on, cpu, "the callback's CPU");
    check!(at >= deadline, "the callback ran {} ns early", deadline - at);
    check!(timer_runs() > before, "the TIMER vector's counter did not move");
    // Delayed work rides on the same timers.
    let q = workqueue::system::wq();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let w = workqueue::DelayedWork::new(move || r.store(true, Ordering::SeqCst));
    let before = timer_runs();
    check!(q.queue_delayed_on(Some(cpu), &w, 20_000_000));
    check!(wait_for(5_000, || ran.load(Ordering::SeqCst)), "the delayed item never ran");
    check!(timer_runs() > before, "the delayed item's timer did not expire through TIMER");
    Ok(())
});

ktest!(softirq::counters_add_up_and_print_like_proc_softirqs => |ctx| {
    open_probes();
    let _pin = Pinned::to(0);
    let before = softirq::softirq::count(0, Vector::Sched);
    for _ in 0..25 {
        let _bh = local_bh_disable();
        softirq::raise_softirq(Vector::Sched);
    }
    check_eq!(softirq::softirq::count(0, Vector::Sched), before + 25, "SCHED runs on CPU 0");
    let text = softirq::softirq::softirqs_text();
    check!(text.contains("CPU0") && text.contains("SCHED:") && text.contains("TASKLET:"), "{text}");
    check_eq!(text.lines().count(), 1 + softirq::NR_SOFTIRQS, "a header and one line per vector");
    Ok(())
});

ktest!(softirq::bench_softirq_raise_run [bench = true] => |ctx| {
    // Linux's row: tasklet_schedule with BH disabled -> run at BH enable.
    let p = port();
    let _pin = Pinned::to(0);
    let t = Tasklet::named("bench", || BENCH_AT.store(port().cycles(), Ordering::SeqCst));
    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 0..WARMUP + ITERATIONS {
        let bh = local_bh_disable();
        let t0 = p.cycles();
        t.schedule();
        drop(bh);
        let t1 = BENCH_AT.load(Ordering::SeqCst);
        if i >= WARMUP {
            samples.push(t1.saturating_sub(t0));
        }
    }
    report_latency("softirq_raise_run", &mut samples);
    Ok(())
});

/// One timer of 1 ms per iteration, armed from CPU 0 for CPU 0: cycles from
/// the arm to the callback. `soft` runs the callback in the TIMER softirq
/// (a [`softirq::SoftTimer`], what delayed work uses), otherwise in the
/// port's hard-IRQ timer callback (what timed sleeps use); the difference of
/// the medians is what going through the softirq adds to an expiry.
fn timer_expiry(name: &str, soft: bool) {
    const TIMER_ITERATIONS: usize = 300;
    let p = port();
    let _pin = Pinned::to(0);
    let at = Arc::new(AtomicU64::new(0));
    let a = at.clone();
    let cb: Arc<dyn Fn() + Send + Sync> = Arc::new(move || a.store(port().cycles(), Ordering::SeqCst));
    let soft_timer = softirq::SoftTimer::new(cb.clone());
    let port_timer = p.timer(cb);
    let mut samples = Vec::with_capacity(TIMER_ITERATIONS);
    for i in 0..10 + TIMER_ITERATIONS {
        at.store(0, Ordering::SeqCst);
        let t0 = p.cycles();
        let deadline = p.now_ns() + 1_000_000;
        if soft {
            soft_timer.arm(deadline, Some(0));
        } else {
            port_timer.arm(deadline, Some(0));
        }
        while at.load(Ordering::SeqCst) == 0 {
            p.yield_now();
        }
        if i >= 10 {
            samples.push(at.load(Ordering::SeqCst).saturating_sub(t0));
        }
    }
    report_latency(name, &mut samples);
}

ktest!(softirq::bench_timer_1ms_softirq [bench = true] => |ctx| {
    timer_expiry("timer_1ms_softirq", true);
    Ok(())
});

ktest!(softirq::bench_timer_1ms_hardirq [bench = true] => |ctx| {
    timer_expiry("timer_1ms_hardirq", false);
    Ok(())
});

// ---------------------------------------------------------------- tasklet

ktest!(tasklet::runs_on_the_cpu_that_scheduled_it => |ctx| {
    for cpu in 0..port().cpu_count() {
        let _pin = Pinned::to(cpu);
        let ran_on = Arc::new(AtomicUsize::new(usize::MAX));
        let r = ran_on.clone();
        let t = Tasklet::new(move || r.store(port().cpu_id(), Ordering::SeqCst));
        check!(t.schedule());
        check!(wait_for(5_000, || ran_on.load(Ordering::SeqCst) != usize::MAX), "never ran");
        check_eq!(ran_on.load(Ordering::SeqCst), cpu);
    }
    Ok(())
});

ktest!(tasklet::never_runs_on_two_cpus_under_a_storm [timeout_s = 120] => |ctx| {
    let inside = Arc::new(AtomicUsize::new(0));
    let overlap = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let (i, o, r) = (inside.clone(), overlap.clone(), runs.clone());
    let t = Tasklet::new(move || {
        if i.fetch_add(1, Ordering::SeqCst) != 0 {
            o.store(true, Ordering::SeqCst);
        }
        for _ in 0..2_000 {
            core::hint::spin_loop();
        }
        r.fetch_add(1, Ordering::SeqCst);
        i.fetch_sub(1, Ordering::SeqCst);
    });
    let stop = Arc::new(AtomicBool::new(false));
    let n = port().cpu_count();
    let threads: Vec<kport::TaskRef> = (0..n)
        .map(|cpu| {
            let (t, s) = (t.clone(), stop.clone());
            let th = spawn_on("tasklet-storm", CpuMask::one(cpu), move || {
                while !s.load(Ordering::SeqCst) {
                    t.schedule();
                    port().cond_resched();
                }
            });
            th.wake();
            th
        })
        .collect();
    crate::port_api::msleep(500);
    stop.store(true, Ordering::SeqCst);
    for th in &threads {
        check!(wait_for(10_000, || th.state() == kport::TaskState::Dead), "a scheduling thread did not end");
    }
    t.kill().map_err(|e| Failure::Fail(format!("kill: {e:?}")))?;
    check!(!overlap.load(Ordering::SeqCst), "the tasklet ran on two CPUs at once");
    check!(runs.load(Ordering::SeqCst) > 0, "it never ran");
    Ok(())
});

ktest!(tasklet::scheduled_while_running_runs_once_more => |ctx| {
    let runs = Arc::new(AtomicUsize::new(0));
    let me: Arc<spin::Once<Tasklet>> = Arc::new(spin::Once::new());
    let (r, m) = (runs.clone(), me.clone());
    let t = Tasklet::new(move || {
        // The first run schedules it again: that must give one more run.
        if r.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(t) = m.get()
        {
            t.schedule();
        }
    });
    me.call_once(|| t.clone());
    check!(t.schedule());
    check!(wait_for(5_000, || runs.load(Ordering::SeqCst) >= 2), "it did not run again");
    crate::port_api::msleep(20);
    check_eq!(runs.load(Ordering::SeqCst), 2, "scheduled once while running: exactly one more run");
    Ok(())
});

ktest!(tasklet::a_disabled_tasklet_waits_for_enable => |ctx| {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let t = Tasklet::new(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    t.disable();
    check!(t.schedule());
    crate::port_api::msleep(50);
    check_eq!(runs.load(Ordering::SeqCst), 0, "a disabled tasklet ran");
    check!(t.is_scheduled(), "it must stay scheduled while disabled");
    t.enable();
    check!(wait_for(5_000, || runs.load(Ordering::SeqCst) == 1), "it did not run once enabled");
    Ok(())
});

ktest!(tasklet::kill_waits_for_a_scheduled_run_and_refuses_the_tasklet_itself [may_report = true] => |ctx| {
    let runs = Arc::new(AtomicUsize::new(0));
    let self_kill = Arc::new(SpinLock::new(None));
    let me: Arc<spin::Once<Tasklet>> = Arc::new(spin::Once::new());
    let (r, sk, m) = (runs.clone(), self_kill.clone(), me.clone());
    let t = Tasklet::new(move || {
        let p = port();
        let end = p.now_ns() + 20_000_000;
        while p.now_ns() < end {
            core::hint::spin_loop();
        }
        if r.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(t) = m.get()
        {
            *sk.lock() = Some(t.kill().is_err());
        }
    });
    me.call_once(|| t.clone());
    check!(t.schedule());
    t.kill().map_err(|e| Failure::Fail(format!("kill: {e:?}")))?;
    check_eq!(runs.load(Ordering::SeqCst), 1, "kill returned before the scheduled run, or it ran twice");
    check!(!t.is_scheduled() && !t.is_running());
    check_eq!(*self_kill.lock(), Some(true), "tasklet_kill from the tasklet itself must be refused");
    Ok(())
});

ktest!(tasklet::hi_tasklets_run_before_normal_ones => |ctx| {
    let _pin = Pinned::to(0);
    let order = Arc::new(SpinLock::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    let normal = Tasklet::new(move || o1.lock().push("normal"));
    let hi = Tasklet::new(move || o2.lock().push("hi"));
    {
        let _bh = local_bh_disable();
        check!(normal.schedule());
        check!(hi.hi_schedule());
    }
    check!(wait_for(5_000, || order.lock().len() == 2));
    check_eq!(*order.lock(), alloc::vec!["hi", "normal"]);
    Ok(())
});

ktest!(tasklet::bench_tasklet_schedule_run [bench = true] => |ctx| {
    // Linux's row: tasklet_schedule from a thread -> run.
    let p = port();
    let _pin = Pinned::to(0);
    let at = Arc::new(AtomicU64::new(0));
    let a = at.clone();
    let t = Tasklet::new(move || a.store(port().cycles(), Ordering::SeqCst));
    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 0..WARMUP + ITERATIONS {
        at.store(0, Ordering::SeqCst);
        let t0 = p.cycles();
        t.schedule();
        while at.load(Ordering::SeqCst) == 0 {
            p.yield_now();
        }
        if i >= WARMUP {
            samples.push(at.load(Ordering::SeqCst).saturating_sub(t0));
        }
    }
    report_latency("tasklet_schedule_run", &mut samples);
    Ok(())
});

/// A function the compiler must call (not inline), for `bench_port_call`.
#[inline(never)]
fn direct_cpu_id() -> usize {
    core::hint::black_box(0)
}

ktest!(softirq::bench_port_call [bench = true] => |ctx| {
    // The unit the short bottom-half paths are made of: one call through
    // the port (a trait object, so a dynamic call: `port_call`) against a
    // plain call the compiler cannot inline (`direct_call`), each the
    // median over 100 calls in a row. softirq_raise_run makes 17 port
    // calls between its two clock reads; under TCG each call costs about
    // what a direct one does (docs/benchmarks.md).
    const CALLS: u64 = 100;
    let p = port();
    let _pin = Pinned::to(0);
    let mut dynamic = Vec::with_capacity(ITERATIONS);
    let mut direct = Vec::with_capacity(ITERATIONS);
    for i in 0..WARMUP + ITERATIONS {
        let t0 = p.cycles();
        for _ in 0..CALLS {
            core::hint::black_box(p.cpu_id());
        }
        let t1 = p.cycles();
        for _ in 0..CALLS {
            core::hint::black_box(direct_cpu_id());
        }
        let t2 = p.cycles();
        if i >= WARMUP {
            dynamic.push((t1 - t0) / CALLS);
            direct.push((t2 - t1) / CALLS);
        }
    }
    report_latency("port_call", &mut dynamic);
    report_latency("direct_call", &mut direct);
    Ok(())
});
