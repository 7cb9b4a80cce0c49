//! Suite `sched`: the scheduler's promises, and its benchmarks.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kport::port;
use ktests::bench::{ITERATIONS, THREAD_ITERATIONS, WARMUP, report_latency};
use ktests::port_api::{msleep, wait_for};
use ktests::{check, check_eq, fail, ktest, skip};

use crate::arch::cpu::rdtsc;
use crate::sched::{self, Prio, State, wait::WaitQueue};
use crate::{mem, time};

/// Spawn a raw scheduler context running `f` on `mask`, started.
fn run_on(name: &str, mask: u64, prio: Prio, f: impl FnOnce() + Send + 'static) -> Arc<sched::Task> {
    let t = sched::spawn(name, prio, mask, Box::new(f), None, false).expect("spawn");
    sched::wake(&t, sched::wake_mask::NEW);
    t
}

ktest!(sched::bound_context_only_runs_on_its_cpu => |ctx| {
    let n = port().cpu_count();
    let wrong = Arc::new(AtomicUsize::new(0));
    let mut ts = Vec::new();
    for cpu in 0..n {
        for _ in 0..3 {
            let w = wrong.clone();
            ts.push(run_on("bound", 1 << cpu, Prio::Normal, move || {
                for i in 0..300 {
                    if crate::percpu::cpu_id() != cpu {
                        w.fetch_add(1, Ordering::SeqCst);
                    }
                    match i % 3 {
                        0 => sched::yield_now(),
                        1 => msleep(1),
                        _ => sched::cond_resched(),
                    }
                }
            }));
        }
    }
    for t in &ts {
        sched::join(t);
    }
    check_eq!(wrong.load(Ordering::SeqCst), 0, "bound contexts observed on other CPUs");
    Ok(())
});

/// Two contexts spin on CPU 0 without yielding; each counts how often it saw
/// the other's counter move while it ran (evidence that the other ran in
/// between, i.e. that it was preempted).
fn spin_pair(window_ms: u64, a_yields_at_half: bool) -> (u64, u64, u64, u64) {
    let ca = Arc::new(AtomicU64::new(0));
    let cb = Arc::new(AtomicU64::new(0));
    let a_saw = Arc::new(AtomicU64::new(0));
    let b_saw = Arc::new(AtomicU64::new(0));
    let a_yield_at = Arc::new(AtomicU64::new(u64::MAX));
    let b_first = Arc::new(AtomicU64::new(0));
    let spin = |mine: Arc<AtomicU64>,
                other: Arc<AtomicU64>,
                saw: Arc<AtomicU64>,
                yield_at: Option<Arc<AtomicU64>>,
                first: Option<Arc<AtomicU64>>| {
        move || {
            if let Some(f) = first {
                f.store(time::now_ns(), Ordering::SeqCst);
            }
            let end = time::now_ns() + window_ms * 1_000_000;
            let half = end - window_ms * 500_000;
            let mut last_other = other.load(Ordering::SeqCst);
            let mut yielded = false;
            while time::now_ns() < end {
                mine.fetch_add(1, Ordering::SeqCst);
                let o = other.load(Ordering::SeqCst);
                if o != last_other {
                    saw.fetch_add(1, Ordering::SeqCst);
                    last_other = o;
                }
                if let Some(y) = yield_at.as_ref().filter(|_| !yielded && time::now_ns() >= half) {
                    yielded = true;
                    y.store(time::now_ns(), Ordering::SeqCst);
                    sched::yield_now();
                    last_other = other.load(Ordering::SeqCst);
                }
            }
        }
    };
    let a = sched::spawn(
        "spin-a",
        Prio::Normal,
        1,
        Box::new(spin(ca.clone(), cb.clone(), a_saw.clone(), a_yields_at_half.then(|| a_yield_at.clone()), None)),
        None,
        false,
    )
    .expect("spawn");
    let b = sched::spawn(
        "spin-b",
        Prio::Normal,
        1,
        Box::new(spin(cb.clone(), ca.clone(), b_saw.clone(), None, Some(b_first.clone()))),
        None,
        false,
    )
    .expect("spawn");
    // Wake both from CPU 0's point of view in one go.
    sched::wake(&a, sched::wake_mask::NEW);
    sched::wake(&b, sched::wake_mask::NEW);
    sched::join(&a);
    sched::join(&b);
    (
        a_saw.load(Ordering::SeqCst),
        b_saw.load(Ordering::SeqCst),
        a_yield_at.load(Ordering::SeqCst),
        b_first.load(Ordering::SeqCst),
    )
}

ktest!(sched::two_cpu_bound_contexts_share_a_cpu_under_preempt_full => |ctx| {
    if !sched::preempt_full() {
        return skip("preempt=none: contexts are not preempted");
    }
    let (a_saw, b_saw, _, _) = spin_pair(300, false);
    check!(a_saw > 0 && b_saw > 0, "no interleaving: a saw b move {a_saw} times, b saw a move {b_saw} times");
    Ok(())
});

ktest!(sched::a_context_keeps_its_cpu_until_it_yields_under_preempt_none => |ctx| {
    if sched::preempt_full() {
        return skip("preempt=full: contexts are preempted");
    }
    let (a_saw, _b_saw, a_yield_at, b_first) = spin_pair(300, true);
    check!(a_yield_at != u64::MAX, "a never yielded");
    check!(b_first >= a_yield_at, "b started {} ns before a yielded", a_yield_at - b_first);
    // Until it yielded, a never saw b run; after the yield b ran until it
    // finished, so at most the one change across the yield is seen.
    check!(a_saw <= 1, "a saw b run {a_saw} times while it never yielded");
    Ok(())
});

ktest!(sched::higher_priority_runs_first => |ctx| {
    // From CPU 0, queue a normal and then a high context bound to CPU 0, then
    // block: the high one must run first. (Under preempt=full it preempts us
    // at once; under preempt=none it is picked first when we block.)
    let me = sched::current();
    sched::set_affinity(&me, 1).map_err(|_| ktests::Failure::Fail("cannot bind to cpu 0".into()))?;
    sched::yield_now();
    check_eq!(crate::percpu::cpu_id(), 0);
    let order = Arc::new(AtomicUsize::new(0));
    let hi_pos = Arc::new(AtomicUsize::new(0));
    let lo_pos = Arc::new(AtomicUsize::new(0));
    let (o1, l) = (order.clone(), lo_pos.clone());
    let lo = sched::spawn("lo", Prio::Normal, 1, Box::new(move || l.store(o1.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst)), None, false).expect("spawn");
    let (o2, h) = (order.clone(), hi_pos.clone());
    let hi = sched::spawn("hi", Prio::High, 1, Box::new(move || h.store(o2.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst)), None, false).expect("spawn");
    // Both are queued before either can run (our slice may end in between).
    crate::percpu::preempt_disable();
    sched::wake(&lo, sched::wake_mask::NEW);
    sched::wake(&hi, sched::wake_mask::NEW);
    crate::percpu::preempt_enable();
    sched::join(&lo);
    sched::join(&hi);
    let _ = sched::set_affinity(&me, u64::MAX);
    check_eq!(hi_pos.load(Ordering::SeqCst), 1, "the high-priority context did not run first");
    check_eq!(lo_pos.load(Ordering::SeqCst), 2);
    Ok(())
});

ktest!(sched::cross_cpu_wake [min_cpus = 2] => |ctx| {
    let n = port().cpu_count();
    for target in 1..n {
        let wq = Arc::new(WaitQueue::new());
        let go = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let wrong = Arc::new(AtomicUsize::new(0));
        let (w, g, s, x) = (wq.clone(), go.clone(), seen.clone(), wrong.clone());
        let t = run_on("xwake", 1 << target, Prio::Normal, move || {
            for i in 1..=100 {
                w.wait_until("xwake", || g.load(Ordering::SeqCst) >= i);
                if crate::percpu::cpu_id() != target {
                    x.fetch_add(1, Ordering::SeqCst);
                }
                s.store(i, Ordering::SeqCst);
            }
        });
        for i in 1..=100 {
            go.store(i, Ordering::SeqCst);
            wq.wake_all();
            if !wait_for(10_000, || seen.load(Ordering::SeqCst) >= i) {
                return fail(alloc::format!("wake {i} to cpu {target} was never seen"));
            }
        }
        sched::join(&t);
        check_eq!(wrong.load(Ordering::SeqCst), 0);
    }
    Ok(())
});

ktest!(sched::timed_sleep_never_returns_early => |ctx| {
    let n = port().cpu_count();
    let early = Arc::new(AtomicU64::new(0));
    let mut ts = Vec::new();
    for cpu in 0..n {
        let e = early.clone();
        let seed = ctx.seed + cpu as u64;
        ts.push(run_on("sleeper", 1 << cpu, Prio::Normal, move || {
            let mut rng = ktests::rng::Rng::new(seed, "sleep");
            for _ in 0..40 {
                let us = 50 + rng.below(5_000);
                let deadline = time::now_ns() + us * 1000;
                sched::timer::sleep_until(deadline);
                let now = time::now_ns();
                if now < deadline {
                    e.fetch_max(deadline - now, Ordering::SeqCst);
                }
            }
        }));
    }
    for t in &ts {
        sched::join(t);
    }
    check_eq!(early.load(Ordering::SeqCst), 0, "a sleep returned that many ns early");
    Ok(())
});

ktest!(sched::waitqueue_wake_one_and_wake_all => |ctx| {
    let wq = Arc::new(WaitQueue::new());
    let gate = Arc::new(AtomicUsize::new(0));
    let woke = Arc::new(AtomicUsize::new(0));
    let mut ts = Vec::new();
    for _ in 0..5 {
        let (w, g, k) = (wq.clone(), gate.clone(), woke.clone());
        ts.push(run_on("wq", u64::MAX, Prio::Normal, move || {
            // Each waiter consumes one ticket: wake_one must let exactly one go.
            // The take retries when another woken waiter took one at the same
            // moment; it fails only when none is left (a failed take puts the
            // waiter back to sleep, and nothing would wake it again).
            w.wait_until("wq-test", || {
                g.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
            });
            k.fetch_add(1, Ordering::SeqCst);
        }));
    }
    check!(wait_for(5_000, || wq.len() == 5), "waiters did not queue: {}", wq.len());
    gate.store(1, Ordering::SeqCst);
    check!(wq.wake_one());
    check!(wait_for(5_000, || woke.load(Ordering::SeqCst) == 1), "wake_one released nobody");
    msleep(20);
    check_eq!(woke.load(Ordering::SeqCst), 1, "wake_one released more than one");
    gate.store(4, Ordering::SeqCst);
    check_eq!(wq.wake_all(), 4);
    for t in &ts {
        sched::join(t);
    }
    check_eq!(woke.load(Ordering::SeqCst), 5);
    Ok(())
});

ktest!(sched::idle_cpu_pulls_unbound_work [min_cpus = 2] => |ctx| {
    // Queue several unbound spinners on CPU 0 at once; idle CPUs must pull
    // some of them, so more than one CPU runs them.
    let seen = Arc::new(AtomicU64::new(0));
    let mut ts = Vec::new();
    for _ in 0..6 {
        let s = seen.clone();
        let t = sched::spawn("pull", Prio::Normal, u64::MAX, Box::new(move || {
            let end = time::now_ns() + 60_000_000;
            while time::now_ns() < end {
                s.fetch_or(1 << crate::percpu::cpu_id(), Ordering::SeqCst);
                sched::cond_resched();
            }
        }), None, false).expect("spawn");
        ts.push(t);
    }
    for t in &ts {
        sched::wake(t, sched::wake_mask::NEW);
    }
    for t in &ts {
        sched::join(t);
    }
    let cpus = seen.load(Ordering::SeqCst).count_ones();
    check!(cpus >= 2, "unbound contexts ran on only {cpus} CPU(s)");
    Ok(())
});

ktest!(sched::create_exit_10000_cycles_leave_no_trace [timeout_s = 600] => |ctx| {
    let cycle = || {
        let t = sched::spawn("cycle", Prio::Normal, u64::MAX, Box::new(|| {}), None, false).expect("spawn");
        sched::wake(&t, sched::wake_mask::NEW);
        sched::join(&t);
    };
    for _ in 0..200 {
        cycle();
    }
    // A joined context's last reference is dropped by the CPU that reaped
    // it a moment after join returns: read the counters once that settled.
    msleep(5);
    let frames0 = mem::frames::counters().used;
    let heap0 = mem::heap::usage().0;
    let tasks0 = sched::nr_tasks();
    for i in 0..10_000 {
        cycle();
        if i % 256 == 0 {
            sched::cond_resched();
        }
    }
    let settled = wait_for(2_000, || {
        sched::nr_tasks() == tasks0 && mem::frames::counters().used == frames0 && mem::heap::usage().0 == heap0
    });
    check_eq!(sched::nr_tasks(), tasks0, "contexts left over");
    check_eq!(mem::frames::counters().used, frames0, "frames used after 10 000 cycles");
    check_eq!(mem::heap::usage().0, heap0, "heap bytes used after 10 000 cycles");
    check!(settled);
    Ok(())
});

ktest!(sched::sleeping_in_atomic_context_is_reported => |ctx| {
    // The check itself, without dying: might_sleep's condition.
    crate::percpu::preempt_disable();
    let atomic = crate::percpu::in_atomic();
    crate::percpu::preempt_enable();
    check!(atomic, "in_atomic() is false with preemption disabled");
    check!(!crate::percpu::in_atomic(), "in_atomic() stays true after preempt_enable");
    Ok(())
});

// ---------------------------------------------------------------- benchmarks

ktest!(sched::bench_sched_yield_pingpong_same_cpu [bench = true] => |ctx| {
    // Two contexts on CPU 0 yield to each other; each sample is the time
    // from one side's yield to the other side running.
    static STAMP: AtomicU64 = AtomicU64::new(0);
    let samples = Arc::new(kport::sync::SpinLock::new(Vec::with_capacity(2 * ITERATIONS)));
    let mk = |s: Arc<kport::sync::SpinLock<Vec<u64>>>| {
        move || {
            for i in 0..(ITERATIONS + WARMUP) {
                STAMP.store(rdtsc(), Ordering::SeqCst);
                sched::yield_now();
                let d = rdtsc().wrapping_sub(STAMP.load(Ordering::SeqCst));
                if i >= WARMUP {
                    s.lock().push(d);
                }
            }
        }
    };
    let a = sched::spawn("ping", Prio::Normal, 1, Box::new(mk(samples.clone())), None, false).expect("spawn");
    let b = sched::spawn("pong", Prio::Normal, 1, Box::new(mk(samples.clone())), None, false).expect("spawn");
    sched::wake(&a, sched::wake_mask::NEW);
    sched::wake(&b, sched::wake_mask::NEW);
    sched::join(&a);
    sched::join(&b);
    let mut s = core::mem::take(&mut *samples.lock());
    report_latency("sched_yield_pingpong_same_cpu", &mut s);
    Ok(())
});

ktest!(sched::bench_sched_wakeup_cross_cpu [bench = true, min_cpus = 2] => |ctx| {
    // CPU 0 stamps and wakes a context sleeping on CPU 1, which takes the
    // sample on waking and acknowledges; CPU 0 polls for the ack.
    static STAMP: AtomicU64 = AtomicU64::new(0);
    static ACK: AtomicUsize = AtomicUsize::new(0);
    ACK.store(0, Ordering::SeqCst);
    let samples = Arc::new(kport::sync::SpinLock::new(Vec::with_capacity(ITERATIONS)));
    let s = samples.clone();
    let total = ITERATIONS + WARMUP;
    let sleeper = sched::spawn("wakee", Prio::Normal, 1 << 1, Box::new(move || {
        for i in 0..total {
            loop {
                sched::set_current_state(State::Interruptible, "bench");
                if ACK.load(Ordering::SeqCst) == 2 * i + 1 {
                    break;
                }
                sched::schedule();
            }
            sched::set_current_state(State::Running, "");
            let d = rdtsc().wrapping_sub(STAMP.load(Ordering::SeqCst));
            if i >= WARMUP {
                s.lock().push(d);
            }
            ACK.store(2 * i + 2, Ordering::SeqCst);
        }
    }), None, false).expect("spawn");
    let me = sched::current();
    sched::set_affinity(&me, 1).map_err(|_| ktests::Failure::Fail("cannot bind to cpu 0".into()))?;
    sched::yield_now();
    sched::wake(&sleeper, sched::wake_mask::NEW);
    for i in 0..total {
        // Wait until it sleeps again before the next wake-up.
        while sleeper.state() != State::Interruptible || sleeper.on_cpu_now() {
            sched::yield_now();
        }
        STAMP.store(rdtsc(), Ordering::SeqCst);
        ACK.store(2 * i + 1, Ordering::SeqCst);
        sched::wake(&sleeper, sched::wake_mask::NORMAL);
        while ACK.load(Ordering::SeqCst) != 2 * i + 2 {
            core::hint::spin_loop();
        }
    }
    sched::join(&sleeper);
    let _ = sched::set_affinity(&me, u64::MAX);
    let mut v = core::mem::take(&mut *samples.lock());
    report_latency("sched_wakeup_cross_cpu", &mut v);
    Ok(())
});

ktest!(sched::bench_ipi_roundtrip [bench = true, min_cpus = 2] => |ctx| {
    let me = sched::current();
    sched::set_affinity(&me, 1).map_err(|_| ktests::Failure::Fail("cannot bind to cpu 0".into()))?;
    sched::yield_now();
    let mut v = Vec::with_capacity(ITERATIONS);
    for i in 0..(ITERATIONS + WARMUP) {
        let t0 = rdtsc();
        sched::call::call_on_cpu(1, Box::new(|| {}), true).map_err(|_| ktests::Failure::Fail("call failed".into()))?;
        let d = rdtsc() - t0;
        if i >= WARMUP {
            v.push(d);
        }
    }
    let _ = sched::set_affinity(&me, u64::MAX);
    report_latency("ipi_roundtrip", &mut v);
    Ok(())
});

ktest!(sched::bench_context_create_exit [bench = true] => |ctx| {
    // spawn + wake + exit + reaped, on CPU 0.
    let me = sched::current();
    sched::set_affinity(&me, 1).map_err(|_| ktests::Failure::Fail("cannot bind to cpu 0".into()))?;
    sched::yield_now();
    let mut v = Vec::with_capacity(THREAD_ITERATIONS);
    for i in 0..(THREAD_ITERATIONS + WARMUP) {
        let t0 = rdtsc();
        let t = sched::spawn("bench-cycle", Prio::Normal, 1, Box::new(|| {}), None, false).expect("spawn");
        sched::wake(&t, sched::wake_mask::NEW);
        sched::join(&t);
        let d = rdtsc() - t0;
        if i >= WARMUP {
            v.push(d);
        }
    }
    let _ = sched::set_affinity(&me, u64::MAX);
    report_latency("context_create_exit", &mut v);
    Ok(())
});
