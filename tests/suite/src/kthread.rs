//! Suite `kthread`: Linux's kthread semantics (`kernel/kthread.c`) through
//! the `kthreadd` crate, on whatever port runs the suite.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kport::sync::{Completion, WaitQueue};
use kport::{CpuMask, EBUSY, EINTR, EINVAL, EPERM, ESRCH, TaskState, port};
use kthreadd::freezer;
use kthreadd::kthread::{self, Builder, COMM_LEN, FnId, Kthread};
use kthreadd::registry;
use kthreadd::smpboot::{self, PercpuThread};
use kthreadd::{kthread_create, kthread_run};

use crate::bench::{ITERATIONS, Pinned, THREAD_ITERATIONS, WARMUP, report_latency, wait_asleep};
use crate::port_api::{msleep, wait_for};
use crate::{Failure, check, check_eq, err, fail, ktest};

/// Wake `t` and wait until its function started (so a stop returns the
/// function's value rather than EINTR).
fn start(t: &Kthread) -> Result<(), Failure> {
    t.wake();
    if wait_for(10_000, || t.has_started()) { Ok(()) } else { fail(format!("[{}] never started", t.comm())) }
}

/// A thread that sleeps until asked to stop, then returns `ret`.
fn sleeper(name: &str, ret: i32) -> Kthread {
    let wq = Arc::new(WaitQueue::new());
    Builder::new(format_args!("{name}"), move || {
        kthread::wait_event_or_stop(&wq, "sleeper", || false);
        ret
    })
    .create()
    .expect("create")
}

ktest!(kthread::parent_is_kthreadd => |ctx| {
    let kd = kthread::kthreadd().ok_or(Failure::Fail("kthreadd not started".into()))?;
    check_eq!(kd.comm(), "kthreadd");
    check_eq!(kd.parent_id(), 0, "kthreadd's parent");
    let t = kthread_create!(|| 0, "child-of-kd").map_err(err("create"))?;
    check_eq!(t.parent_id(), kd.id());
    check!(t.id() != kd.id());
    let r = t.stop();
    check_eq!(r.map_err(|e| e.errno), Err(EINTR));
    Ok(())
});

ktest!(kthread::name_is_truncated_to_15_bytes => |ctx| {
    let t = kthread_create!(|| 0, "{}-{}", "averyveryverylongname", 12345).map_err(err("create"))?;
    check_eq!(t.comm().len(), COMM_LEN);
    check_eq!(t.comm(), "averyveryverylo");
    check_eq!(t.full_name(), "averyveryverylongname-12345");
    check_eq!(t.task().name(), "averyveryverylo", "the context's own name");
    // Multi-byte characters are cut at a character boundary.
    let u = kthread_create!(|| 0, "ääääääääää").map_err(err("create"))?;
    check!(u.comm().len() <= COMM_LEN && u.comm().chars().all(|c| c == 'ä'), "{}", u.comm());
    let listing = registry::ps();
    check!(listing.contains("[averyveryverylo]"), "listing lacks the bracketed name:\n{listing}");
    let _ = t.stop();
    let _ = u.stop();
    Ok(())
});

ktest!(kthread::create_does_not_run_until_woken => |ctx| {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let t = kthread_create!(move || { r.store(true, Ordering::SeqCst); 7 }, "lazy").map_err(err("create"))?;
    msleep(30);
    check!(!ran.load(Ordering::SeqCst), "ran before its first wake-up");
    check_eq!(t.state(), TaskState::New);
    check!(t.wake());
    check!(wait_for(5_000, || ran.load(Ordering::SeqCst)), "never ran after the wake-up");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(7));
    Ok(())
});

ktest!(kthread::stop_before_run_is_eintr_and_fn_never_runs => |ctx| {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let t = kthread_create!(move || { r.store(true, Ordering::SeqCst); 0 }, "never").map_err(err("create"))?;
    check_eq!(t.stop().map_err(|e| e.errno), Err(EINTR));
    check!(!ran.load(Ordering::SeqCst), "the function ran although stopped before its first run");
    check!(t.has_exited());
    Ok(())
});

ktest!(kthread::stop_a_sleeping_thread => |ctx| {
    let t = sleeper("sleepy", 11);
    start(&t)?;
    check!(wait_for(5_000, || t.state() == TaskState::Sleeping), "never slept: {:?}", t.state());
    check_eq!(t.stop().map_err(|e| e.errno), Ok(11));
    check_eq!(t.state(), TaskState::Dead);
    Ok(())
});

ktest!(kthread::stop_a_parked_thread => |ctx| {
    let t = kthread_run!(|| {
        while !kthread::should_stop() {
            if kthread::should_park() {
                kthread::parkme();
            }
            kthread::sleep_ms_or_stop(1);
        }
        21
    }, "parkling").map_err(err("run"))?;
    t.park().map_err(err("park"))?;
    check!(t.is_parked());
    check_eq!(t.state(), TaskState::Parked);
    // Stop wins over park.
    check_eq!(t.stop().map_err(|e| e.errno), Ok(21));
    Ok(())
});

ktest!(kthread::stop_returns_the_exit_value => |ctx| {
    let t = kthread_run!(|| 42, "ret42").map_err(err("run"))?;
    check!(wait_for(5_000, || t.has_exited()), "did not exit");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(42), "stop after it exited on its own");
    // kthread_exit from deep inside.
    let u = kthread_create!(|| {
        fn deep(n: u32) -> i32 {
            if n == 0 { kthread::exit(-5) } else { deep(n - 1) + 1 }
        }
        deep(8)
    }, "exiter").map_err(err("create"))?;
    start(&u)?;
    check_eq!(u.stop().map_err(|e| e.errno), Ok(-5));
    Ok(())
});

ktest!(kthread::double_stop_returns_the_saved_value => |ctx| {
    let t = sleeper("twice", 3);
    start(&t)?;
    check_eq!(t.stop().map_err(|e| e.errno), Ok(3));
    check_eq!(t.stop().map_err(|e| e.errno), Ok(3), "second stop");
    let u = kthread_create!(|| 0, "twice-new").map_err(err("create"))?;
    check_eq!(u.stop().map_err(|e| e.errno), Err(EINTR));
    check_eq!(u.stop().map_err(|e| e.errno), Err(EINTR), "second stop of a never-run thread");
    // Concurrent stops of one thread both return.
    let v = sleeper("racing-stops", 9);
    start(&v)?;
    let v2 = v.clone();
    let other = Arc::new(AtomicU64::new(0));
    let o = other.clone();
    let helper = kthread_run!(move || { o.store(v2.stop().map_or(0, |x| x as u64 + 100), Ordering::SeqCst); 0 }, "stopper")
        .map_err(err("run"))?;
    check_eq!(v.stop().map_err(|e| e.errno), Ok(9));
    check!(wait_for(5_000, || other.load(Ordering::SeqCst) == 109), "the racing stop saw {}", other.load(Ordering::SeqCst));
    let _ = helper.stop();
    Ok(())
});

ktest!(kthread::park_unpark_keeps_the_binding => |ctx| {
    let n = port().cpu_count();
    let cpu = n - 1;
    let wrong = Arc::new(AtomicUsize::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    let (w, r) = (wrong.clone(), rounds.clone());
    let t = kthread::create_on_cpu(move || {
        while !kthread::should_stop() {
            if kthread::should_park() {
                kthread::parkme();
            }
            if port().cpu_id() != cpu {
                w.fetch_add(1, Ordering::SeqCst);
            }
            r.fetch_add(1, Ordering::SeqCst);
            kthread::sleep_ms_or_stop(1);
        }
        0
    }, cpu, format_args!("bound/{cpu}")).map_err(err("create_on_cpu"))?;
    t.wake();
    for _ in 0..5 {
        t.park().map_err(err("park"))?;
        let before = rounds.load(Ordering::SeqCst);
        msleep(10);
        check_eq!(rounds.load(Ordering::SeqCst), before, "a parked thread kept running");
        t.unpark();
        check!(wait_for(5_000, || rounds.load(Ordering::SeqCst) > before + 2), "did not resume after unpark");
        check_eq!(t.affinity(), CpuMask::one(cpu));
    }
    let _ = t.stop();
    check_eq!(wrong.load(Ordering::SeqCst), 0, "ran off its CPU");
    Ok(())
});

ktest!(kthread::park_before_first_run_parks_before_the_function => |ctx| {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let t = kthread_create!(move || { r.store(true, Ordering::SeqCst); while !kthread::should_stop() { kthread::sleep_ms_or_stop(5); } 0 }, "early-park")
        .map_err(err("create"))?;
    t.park().map_err(err("park"))?;
    check!(!ran.load(Ordering::SeqCst), "the function ran although parked first");
    check_eq!(t.park().map_err(|e| e.errno), Err(EBUSY), "a second park");
    t.unpark();
    check!(wait_for(5_000, || ran.load(Ordering::SeqCst)), "never ran after unpark");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
    check!(t.park().is_err(), "park of an exited thread must fail");
    Ok(())
});

ktest!(kthread::create_on_cpu_runs_only_on_that_cpu => |ctx| {
    for cpu in 0..port().cpu_count() {
        let seen = Arc::new(AtomicU64::new(0));
        let s = seen.clone();
        let t = kthread::create_on_cpu(move || {
            for i in 0..300 {
                s.fetch_or(1 << port().cpu_id(), Ordering::SeqCst);
                if i % 7 == 0 { kthread::msleep(1) } else { port().yield_now() }
            }
            0
        }, cpu, format_args!("oncpu/{cpu}")).map_err(err("create_on_cpu"))?;
        check_eq!(t.comm(), format!("oncpu/{cpu}"));
        start(&t)?;
        check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
        check_eq!(seen.load(Ordering::SeqCst), 1 << cpu, "observed CPUs for a thread bound to {cpu}");
    }
    check!(kthread::create_on_cpu(|| 0, port().cpu_count(), format_args!("bad")).is_err(), "a CPU out of range must fail");
    Ok(())
});

ktest!(kthread::bind_after_wake_is_rejected => |ctx| {
    let t = sleeper("bindme", 0);
    t.bind(0).map_err(err("bind before wake"))?;
    check_eq!(t.affinity(), CpuMask::one(0));
    t.wake();
    check_eq!(t.bind(0).map_err(|e| e.errno), Err(EBUSY), "bind after the first wake-up");
    check_eq!(t.affinity(), CpuMask::one(0));
    let _ = t.stop();
    Ok(())
});

ktest!(kthread::cannot_be_killed_from_user_space => |ctx| {
    let t = sleeper("unkillable", 0);
    start(&t)?;
    check!(wait_for(5_000, || t.state() == TaskState::Sleeping), "never slept");
    check_eq!(kthread::signal_from_user(t.id(), 9).map_err(|e| e.errno), Err(EPERM));
    let kd = kthread::kthreadd().ok_or(Failure::Fail("no kthreadd".into()))?;
    check_eq!(kthread::signal_from_user(kd.id(), 15).map_err(|e| e.errno), Err(EPERM));
    check_eq!(kthread::signal_from_user(usize::MAX, 9).map_err(|e| e.errno), Err(ESRCH));
    check_eq!(t.state(), TaskState::Sleeping, "the signal must not have touched it");
    let _ = t.stop();
    Ok(())
});

ktest!(kthread::registry_lists_kthreadd_first_with_states => |ctx| {
    let t = sleeper("listed", 0);
    t.wake();
    check!(wait_for(5_000, || t.state() == TaskState::Sleeping), "never slept");
    let p = kthread_run!(|| { while !kthread::should_stop() { if kthread::should_park() { kthread::parkme(); } kthread::sleep_ms_or_stop(1); } 0 }, "parked-one")
        .map_err(err("run"))?;
    p.park().map_err(err("park"))?;
    let rows = registry::rows();
    check!(!rows.is_empty());
    check_eq!(rows[0].name.as_str(), "[kthreadd]", "first row");
    let find = |n: &str| rows.iter().find(|r| r.name == n).cloned();
    let l = find("[listed]").ok_or(Failure::Fail("[listed] missing".into()))?;
    check_eq!(l.state, 'S');
    check_eq!(l.wchan, "sleeper");
    check_eq!(l.parent, rows[0].id);
    let pp = find("[parked-one]").ok_or(Failure::Fail("[parked-one] missing".into()))?;
    check_eq!(pp.state, 'P');
    let text = registry::ps();
    check!(text.lines().next().is_some_and(|h| h.contains("PID") && h.contains("NAME")), "header: {text}");
    check!(text.lines().nth(1).is_some_and(|l| l.ends_with("[kthreadd]")), "kthreadd not first:\n{text}");
    crate::diag!("ps:\n{}", text.trim_end().replace('\n', "\n    # "));
    let _ = t.stop();
    let _ = p.stop();
    Ok(())
});

ktest!(kthread::seed_kthread_run_msleep_counter => |ctx| {
    // The classic exercise: a kthread_run'd thread counts once per msleep(10)
    // until stopped; stop waits out the msleep and returns 0.
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    let t = kthread_run!(move || {
        while !kthread::should_stop() {
            c.fetch_add(1, Ordering::SeqCst);
            kthread::msleep(10);
        }
        0
    }, "counter").map_err(err("kthread_run"))?;
    msleep(200);
    let seen = counter.load(Ordering::SeqCst);
    check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
    let after = counter.load(Ordering::SeqCst);
    check!(seen >= 2, "counted only {seen} times in 200 ms");
    check!(after <= seen + 1, "kept counting after stop: {seen} -> {after}");
    msleep(30);
    check_eq!(counter.load(Ordering::SeqCst), after, "counting after stop returned");
    Ok(())
});

ktest!(kthread::create_stop_1000_cycles_on_all_cpus_leave_no_trace [timeout_s = 600] => |ctx| {
    const CYCLES: u64 = 1_000;
    let p = port();
    let n = p.cpu_count();
    let cycle = |i: usize| -> Result<(), Failure> {
        let cpu = i % n;
        let t = kthread::create_on_cpu(move || { while !kthread::should_stop() { kthread::sleep_ms_or_stop(100); } 0 }, cpu, format_args!("cyc/{cpu}"))
            .map_err(err("create_on_cpu"))?;
        if i.is_multiple_of(2) {
            start(&t)?;
            check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
        } else {
            check_eq!(t.stop().map_err(|e| e.errno), Err(EINTR));
        }
        Ok(())
    };
    for i in 0..64 {
        cycle(i)?;
    }
    msleep(20);
    registry::prune();
    let before = kport::harness::harness().mem_counters();
    for i in 0..CYCLES as usize {
        cycle(i)?;
    }
    // Let the last contexts be reaped (the registry forgets them lazily).
    // Frames come back exactly. The heap may keep a few bytes more: a
    // long-lived list whose capacity grew because the loop had a few more
    // threads alive at once than the warm-up. A leak is per cycle: the
    // smallest allocation (16 bytes) lost per cycle would be 16 000 bytes,
    // so the heap may grow by at most 4 bytes a cycle.
    let settled = wait_for(5_000, || {
        registry::prune();
        let (frames, heap) = kport::harness::harness().mem_counters().in_use();
        frames == before.used_frames && heap <= before.heap_used + 4 * CYCLES
    });
    check!(settled, "counters did not come back: before {:?} after {:?}", before, kport::harness::harness().mem_counters());
    Ok(())
});

ktest!(kthread::threads_on_every_cpu_stop_concurrently => |ctx| {
    let n = port().cpu_count();
    let mut threads = Vec::new();
    for cpu in 0..n {
        for j in 0..4 {
            let t = kthread::create_on_cpu(move || { let wq = WaitQueue::new(); kthread::wait_event_or_stop(&wq, "x", || false); (cpu * 10 + j) as i32 }, cpu, format_args!("st/{cpu}.{j}"))
                .map_err(err("create"))?;
            start(&t)?;
            threads.push((t, (cpu * 10 + j) as i32));
        }
    }
    // One stopper per CPU, all at once.
    let done = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let threads = Arc::new(threads);
    let mut stoppers = Vec::new();
    for cpu in 0..n {
        let (d, b, ts) = (done.clone(), bad.clone(), threads.clone());
        stoppers.push(kthread::create_on_cpu(move || {
            for (t, want) in ts.iter().filter(|(t, _)| t.comm().starts_with(&format!("st/{cpu}."))) {
                if t.stop().map_err(|e| e.errno) != Ok(*want) {
                    b.fetch_add(1, Ordering::SeqCst);
                }
            }
            d.fetch_add(1, Ordering::SeqCst);
            0
        }, cpu, format_args!("stopper/{cpu}")).map_err(err("create"))?);
    }
    for s in &stoppers {
        s.wake();
    }
    check!(wait_for(30_000, || done.load(Ordering::SeqCst) == n), "stoppers did not finish");
    check_eq!(bad.load(Ordering::SeqCst), 0, "stops returned wrong values");
    check!(threads.iter().all(|(t, _)| t.has_exited()));
    Ok(())
});

struct CountingPercpu {
    runs: Vec<AtomicUsize>,
    work: Vec<AtomicUsize>,
    parks: AtomicUsize,
    unparks: AtomicUsize,
    wrong_cpu: AtomicUsize,
}

impl PercpuThread for CountingPercpu {
    fn name(&self, cpu: usize) -> String {
        format!("kcount/{cpu}")
    }
    fn should_run(&self, cpu: usize) -> bool {
        self.work[cpu].load(Ordering::SeqCst) > 0
    }
    fn run(&self, cpu: usize) {
        if port().cpu_id() != cpu {
            self.wrong_cpu.fetch_add(1, Ordering::SeqCst);
        }
        self.work[cpu].fetch_sub(1, Ordering::SeqCst);
        self.runs[cpu].fetch_add(1, Ordering::SeqCst);
    }
    fn park(&self, _cpu: usize) {
        self.parks.fetch_add(1, Ordering::SeqCst);
    }
    fn unpark(&self, _cpu: usize) {
        self.unparks.fetch_add(1, Ordering::SeqCst);
    }
}

ktest!(kthread::percpu_threads_park_on_cpu_offline_and_come_back [min_cpus = 2] => |ctx| {
    let p = port();
    let n = p.cpu_count();
    let desc = Arc::new(CountingPercpu {
        runs: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        work: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        parks: AtomicUsize::new(0),
        unparks: AtomicUsize::new(0),
        wrong_cpu: AtomicUsize::new(0),
    });
    let reg = smpboot::register(desc.clone()).map_err(err("register"))?;
    for cpu in 0..n {
        let t = reg.thread(cpu).ok_or(Failure::Fail("missing thread".into()))?;
        check_eq!(t.comm(), format!("kcount/{cpu}"));
        check_eq!(t.affinity(), CpuMask::one(cpu));
        desc.work[cpu].store(3, Ordering::SeqCst);
        reg.wake(cpu);
    }
    check!(wait_for(10_000, || (0..n).all(|c| desc.runs[c].load(Ordering::SeqCst) == 3)), "per-CPU threads did not run their work");
    let victim = n - 1;
    kport::harness::harness().cpu_down(victim).map_err(err("cpu_down"))?;
    let t = reg.thread(victim).ok_or(Failure::Fail("missing thread".into()))?;
    check!(wait_for(5_000, || t.is_parked() && t.state() == TaskState::Parked), "thread of the offline CPU did not park: {:?}", t.state());
    check!(!p.online_mask().contains(victim));
    // Work for the offline CPU waits.
    desc.work[victim].store(2, Ordering::SeqCst);
    reg.wake(victim);
    msleep(30);
    check_eq!(desc.runs[victim].load(Ordering::SeqCst), 3, "ran while its CPU was offline");
    // Unbound threads keep running elsewhere.
    let ran_on = Arc::new(AtomicU64::new(0));
    let r = ran_on.clone();
    let u = kthread_create!(move || { for _ in 0..50 { r.fetch_or(1 << port().cpu_id(), Ordering::SeqCst); port().yield_now(); } 0 }, "unbound-off")
        .map_err(err("create"))?;
    start(&u)?;
    check_eq!(u.stop().map_err(|e| e.errno), Ok(0));
    check_eq!(ran_on.load(Ordering::SeqCst) & (1 << victim), 0, "an unbound thread ran on the offline CPU");
    kport::harness::harness().cpu_up(victim).map_err(err("cpu_up"))?;
    check!(wait_for(10_000, || desc.runs[victim].load(Ordering::SeqCst) == 5), "did not resume its work after cpu_up");
    check_eq!(t.affinity(), CpuMask::one(victim));
    check_eq!(desc.wrong_cpu.load(Ordering::SeqCst), 0, "per-CPU work ran on the wrong CPU");
    // One park and one unpark of the victim's thread, in that thread (see
    // smpboot_callbacks_follow_hotplug_in_the_thread for the details).
    check!(desc.parks.load(Ordering::SeqCst) >= 1 && desc.unparks.load(Ordering::SeqCst) >= 1);
    check!(kport::harness::harness().cpu_down(n + 3).is_err(), "a bad CPU must be refused");
    reg.unregister();
    check!(t.has_exited(), "unregister left the thread running");
    Ok(())
});

// ---------------------------------------------------------------- kthread_exit leaves no trace

/// How many listed threads have the bracketed name `name`.
fn listed(name: &str) -> usize {
    registry::prune();
    registry::rows().iter().filter(|r| r.name == name).count()
}

ktest!(kthread::exit_leaves_no_trace_once_stopped_and_dropped => |ctx| {
    // kthread_exit abandons the calling frames on a port that does not
    // unwind (the testkernel, Redox): nothing in them may keep the thread's
    // record alive, or it stays listed as a zombie for ever.
    let name = "[exit-reaped]";
    let before = listed(name);
    let mut ids = Vec::new();
    for depth in [0u32, 1, 8] {
        let t = Builder::new(format_args!("exit-reaped"), move || {
            fn deep(n: u32) -> i32 {
                if n == 0 { kthread::exit(-7) } else { deep(n - 1) + 1 }
            }
            deep(depth)
        })
        .data(Arc::new(depth))
        .create()
        .map_err(err("create"))?;
        start(&t)?;
        check_eq!(t.stop().map_err(|e| e.errno), Ok(-7), "exit value at depth {depth}");
        ids.push(t.id());
    }
    // One that exits on its own while nobody holds a handle.
    let t = kthread_run!(|| kthread::exit(3), "exit-reaped").map_err(err("run"))?;
    let lone = t.id();
    drop(t);
    ids.push(lone);
    // The port drops its reference once the context is reaped.
    let gone = wait_for(5_000, || ids.iter().all(|&id| registry::find(id).is_none()));
    check!(gone, "an exited, stopped and dropped thread is still listed:\n{}", registry::ps());
    check_eq!(listed(name), before, "listed [exit-reaped] threads");
    check_eq!(kthread::signal_from_user(lone, 9).map_err(|e| e.errno), Err(ESRCH), "a reaped thread is unknown");
    Ok(())
});

// ---------------------------------------------------------------- smpboot callbacks

/// A per-CPU thread callback, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cb {
    Setup,
    Park,
    Unpark,
    Cleanup(bool),
}

/// One callback call: which, for which CPU, on which CPU, in which context.
#[derive(Debug, Clone, Copy)]
struct CbCall {
    cb: Cb,
    cpu: usize,
    on_cpu: usize,
    ctx: usize,
}

/// A per-CPU thread kind that records its callbacks and never has work.
struct Recording {
    prefix: &'static str,
    log: kport::sync::SpinLock<Vec<CbCall>>,
}

impl Recording {
    fn new(prefix: &'static str) -> Arc<Self> {
        Arc::new(Recording { prefix, log: kport::sync::SpinLock::new(Vec::new()) })
    }

    fn record(&self, cb: Cb, cpu: usize) {
        let p = port();
        self.log.lock().push(CbCall { cb, cpu, on_cpu: p.cpu_id(), ctx: p.current_id() });
    }

    /// The callbacks of `cpu`'s thread, in order.
    fn seq(&self, cpu: usize) -> Vec<Cb> {
        self.log.lock().iter().filter(|c| c.cpu == cpu).map(|c| c.cb).collect()
    }

    /// Every call so far ran in `reg`'s thread of its CPU, on that CPU
    /// (a cleanup of a thread whose CPU is offline may run elsewhere, as in
    /// Linux).
    fn check_where(&self, reg: &smpboot::Registration) -> Result<(), Failure> {
        for c in self.log.lock().iter() {
            let t = reg.thread(c.cpu).ok_or(Failure::Fail(format!("no thread for CPU {}", c.cpu)))?;
            check_eq!(c.ctx, t.id(), "{:?} of CPU {} ran in context {} instead of its thread", c.cb, c.cpu, c.ctx);
            if c.cb != Cb::Cleanup(false) {
                check_eq!(c.on_cpu, c.cpu, "{:?} of CPU {} ran on CPU {}", c.cb, c.cpu, c.on_cpu);
            }
        }
        Ok(())
    }
}

impl PercpuThread for Recording {
    fn name(&self, cpu: usize) -> String {
        format!("{}/{cpu}", self.prefix)
    }
    fn should_run(&self, _cpu: usize) -> bool {
        false
    }
    fn run(&self, _cpu: usize) {}
    fn setup(&self, cpu: usize) {
        self.record(Cb::Setup, cpu);
    }
    fn cleanup(&self, cpu: usize, online: bool) {
        self.record(Cb::Cleanup(online), cpu);
    }
    fn park(&self, cpu: usize) {
        self.record(Cb::Park, cpu);
    }
    fn unpark(&self, cpu: usize) {
        self.record(Cb::Unpark, cpu);
    }
}

/// Unregisters on drop, so a failed check leaves no kind registered.
struct Registered(Option<smpboot::Registration>);

impl Registered {
    fn reg(&self) -> &smpboot::Registration {
        self.0.as_ref().expect("already unregistered")
    }
    fn unregister(&mut self) {
        if let Some(r) = self.0.take() {
            r.unregister();
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Brings `cpu` back online on drop, so a failed check leaves it online.
struct Online(usize);

impl Drop for Online {
    fn drop(&mut self) {
        let _ = kport::harness::harness().cpu_up(self.0);
    }
}

ktest!(kthread::smpboot_register_runs_setup_in_each_thread_not_unpark => |ctx| {
    let n = port().cpu_count();
    let desc = Recording::new("kcb");
    let mut reg = Registered(Some(smpboot::register(desc.clone()).map_err(err("register"))?));
    let set_up = wait_for(10_000, || (0..n).all(|c| desc.seq(c) == [Cb::Setup]));
    check!(set_up, "every thread sets itself up once: {:?}", &*desc.log.lock());
    msleep(20);
    for c in 0..n {
        check_eq!(desc.seq(c), [Cb::Setup], "callbacks of CPU {c} after register (a fresh thread runs setup, not unpark)");
        let t = reg.reg().thread(c).ok_or(Failure::Fail("missing thread".into()))?;
        check!(t.is_per_cpu() && t.per_cpu() == Some(c), "[{}] is not marked per-CPU for {c}", t.comm());
    }
    desc.check_where(reg.reg())?;
    let threads: Vec<Kthread> = (0..n).filter_map(|c| reg.reg().thread(c)).collect();
    reg.unregister();
    for c in 0..n {
        check_eq!(desc.seq(c), [Cb::Setup, Cb::Cleanup(true)], "callbacks of CPU {c} after unregister");
    }
    for (c, t) in threads.iter().enumerate() {
        check!(t.has_exited(), "thread of CPU {c} still runs");
    }
    Ok(())
});

ktest!(kthread::smpboot_callbacks_follow_hotplug_in_the_thread [min_cpus = 2] => |ctx| {
    let h = kport::harness::harness();
    let n = port().cpu_count();
    let victim = n - 1;
    let desc = Recording::new("khp");
    let mut reg = Registered(Some(smpboot::register(desc.clone()).map_err(err("register"))?));
    check!(wait_for(10_000, || (0..n).all(|c| desc.seq(c) == [Cb::Setup])), "setup: {:?}", &*desc.log.lock());
    for round in 1..=2 {
        let _up = Online(victim);
        h.cpu_down(victim).map_err(err("cpu_down"))?;
        // cpu_down returns once the thread parked: park ran in it.
        let mut want = vec![Cb::Setup];
        for _ in 1..round {
            want.extend([Cb::Park, Cb::Unpark]);
        }
        want.push(Cb::Park);
        check_eq!(desc.seq(victim), want, "after cpu_down #{round}");
        h.cpu_up(victim).map_err(err("cpu_up"))?;
        want.push(Cb::Unpark);
        check!(wait_for(10_000, || desc.seq(victim) == want), "after cpu_up #{round}: {:?}, want {want:?}", desc.seq(victim));
    }
    msleep(20);
    check_eq!(desc.seq(victim).len(), 5, "extra callbacks: {:?}", desc.seq(victim));
    for c in 0..victim {
        check_eq!(desc.seq(c), [Cb::Setup], "callbacks of CPU {c}, which stayed online");
    }
    desc.check_where(reg.reg())?;
    reg.unregister();
    check_eq!(desc.seq(victim).last().copied(), Some(Cb::Cleanup(true)));

    // A CPU offline at registration: its thread stays parked and never set
    // up; when the CPU comes up it sets itself up (not unpark); stopped
    // while offline again, it parks first, then cleans up with online=false.
    let late = Recording::new("klate");
    let _up = Online(victim);
    h.cpu_down(victim).map_err(err("cpu_down"))?;
    let mut reg = Registered(Some(smpboot::register(late.clone()).map_err(err("register"))?));
    check!(wait_for(10_000, || (0..victim).all(|c| late.seq(c) == [Cb::Setup])), "setup: {:?}", &*late.log.lock());
    msleep(20);
    check_eq!(late.seq(victim), [], "callbacks of a thread whose CPU is offline");
    h.cpu_up(victim).map_err(err("cpu_up"))?;
    check!(wait_for(10_000, || late.seq(victim) == [Cb::Setup]), "after the first cpu_up: {:?}", late.seq(victim));
    h.cpu_down(victim).map_err(err("cpu_down"))?;
    check_eq!(late.seq(victim), [Cb::Setup, Cb::Park]);
    late.check_where(reg.reg())?;
    reg.unregister();
    check_eq!(late.seq(victim), [Cb::Setup, Cb::Park, Cb::Cleanup(false)]);
    h.cpu_up(victim).map_err(err("cpu_up"))?;
    Ok(())
});

// ---------------------------------------------------------------- per-CPU mark, func, data

ktest!(kthread::set_per_cpu_marks_and_clears => |ctx| {
    let p = port();
    let n = p.cpu_count();
    let cpu = n - 1;
    let t = sleeper("pcpu-mark", 0);
    check!(!t.is_per_cpu() && t.per_cpu().is_none(), "a plain thread is not per-CPU");
    t.bind(cpu).map_err(err("bind"))?;
    t.set_per_cpu(Some(cpu)).map_err(err("set_per_cpu"))?;
    check!(t.is_per_cpu());
    check_eq!(t.per_cpu(), Some(cpu));
    check_eq!(t.set_per_cpu(Some(n)).map_err(|e| e.errno), Err(EINVAL), "a CPU that does not exist");
    check_eq!(t.per_cpu(), Some(cpu), "a refused mark changes nothing");
    t.set_per_cpu(None).map_err(err("clear"))?;
    check!(!t.is_per_cpu() && t.per_cpu().is_none(), "cleared");
    let _ = t.stop();
    let u = kthread::create_on_cpu(|| 0, cpu, format_args!("pcpu-on/{cpu}")).map_err(err("create_on_cpu"))?;
    check_eq!(u.per_cpu(), Some(cpu), "create_on_cpu marks the thread per-CPU");
    let _ = u.stop();
    if n >= 2 {
        // A marked thread is put back on its CPU when unparked; once the
        // mark is cleared, unparking leaves its affinity alone.
        let both = CpuMask((1 << cpu) | 1);
        let v = kthread_create!(|| { while !kthread::should_stop() { if kthread::should_park() { kthread::parkme(); } kthread::sleep_ms_or_stop(1); } 0 }, "pcpu-rebind")
            .map_err(err("create"))?;
        v.bind_mask(both).map_err(err("bind_mask"))?;
        v.set_per_cpu(Some(cpu)).map_err(err("set_per_cpu"))?; // warns: not bound there yet
        start(&v)?;
        check_eq!(v.affinity(), both, "marking does not move it");
        v.park().map_err(err("park"))?;
        v.unpark();
        check_eq!(v.affinity(), CpuMask::one(cpu), "unpark binds a per-CPU thread to its CPU");
        v.set_per_cpu(None).map_err(err("clear"))?;
        v.task().set_affinity(both).map_err(err("set_affinity"))?;
        v.park().map_err(err("park"))?;
        v.unpark();
        check_eq!(v.affinity(), both, "unpark must not rebind a thread whose mark was cleared");
        check_eq!(v.stop().map_err(|e| e.errno), Ok(0));
    }
    Ok(())
});

/// A named thread function (a `fn` item has a type of its own).
fn named_main() -> i32 {
    while !kthread::should_stop() {
        kthread::sleep_ms_or_stop(5);
    }
    0
}

ktest!(kthread::func_and_data_of_another_thread => |ctx| {
    let t = Builder::new(format_args!("fn-named"), named_main).data(Arc::new(42u32)).create().map_err(err("create"))?;
    check_eq!(t.func(), FnId::of(&named_main));
    check!(t.func().name().ends_with("named_main"), "name {}", t.func().name());
    let closure = || 7;
    let id = FnId::of(&closure);
    let u = kthread_create!(closure, "fn-closure").map_err(err("create"))?;
    check_eq!(u.func(), id);
    check!(u.func() != t.func(), "two different functions compare equal");
    let got = t.data().and_then(|d| d.downcast::<u32>().ok()).map(|v| *v);
    check_eq!(got, Some(42), "kthread_data of another thread");
    check!(u.data().is_none(), "a thread created without data has none");
    // Through the port's context handle (Linux kthread_probe_data / kthread_func).
    let probed = kthread::probe_data(t.task()).and_then(|d| d.downcast::<u32>().ok()).map(|v| *v);
    check_eq!(probed, Some(42));
    check_eq!(kthread::func_of(t.task()), Some(FnId::of(&named_main)));
    check!(kthread::of_task(t.task()).is_some_and(|k| k.id() == t.id()));
    // The case's own context is not a kernel thread.
    let me = port().current();
    check!(kthread::func_of(&me).is_none() && kthread::probe_data(&me).is_none(), "a plain context answered as a kthread");
    // From inside, and after it exited.
    let seen = Arc::new(AtomicBool::new(false));
    let s = seen.clone();
    let w = kthread_create!(move || { s.store(kthread::current().is_some_and(|k| k.comm() == "fn-inside" && k.func() != FnId::of(&named_main)), Ordering::SeqCst); 0 }, "fn-inside")
        .map_err(err("create"))?;
    start(&w)?;
    check_eq!(w.stop().map_err(|e| e.errno), Ok(0));
    check!(seen.load(Ordering::SeqCst), "inside, kthread::current() did not answer with its own function");
    start(&t)?;
    check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
    check_eq!(t.func(), FnId::of(&named_main), "after exit");
    check!(t.data().is_some(), "data after exit");
    check_eq!(kthread::func_of(t.task()), Some(FnId::of(&named_main)), "after exit, while a handle is left");
    check_eq!(u.stop().map_err(|e| e.errno), Err(EINTR));
    Ok(())
});

// ---------------------------------------------------------------- the freezer

/// Thaws on drop, so a failed check never leaves kernel threads frozen.
struct Thaw;

impl Drop for Thaw {
    fn drop(&mut self) {
        freezer::thaw_kthreads();
    }
}

/// A thread counting once per ms until stopped; freezable ones freeze at
/// `kthread_freezable_should_stop` and count how often they were frozen.
fn counter(name: &str, freezable: bool, count: Arc<AtomicU64>, frozen: Arc<AtomicU64>) -> Result<Kthread, Failure> {
    Builder::new(format_args!("{name}"), move || {
        if freezable {
            freezer::set_freezable();
        }
        loop {
            let mut was = false;
            let stop = if freezable { kthread::freezable_should_stop(Some(&mut was)) } else { kthread::should_stop() };
            if was {
                frozen.fetch_add(1, Ordering::SeqCst);
            }
            if stop {
                return 0;
            }
            count.fetch_add(1, Ordering::SeqCst);
            kthread::msleep(1);
        }
    })
    .run()
    .map_err(err("run"))
}

ktest!(kthread::freezer_freezes_freezable_threads_only => |ctx| {
    let _thaw = Thaw;
    let (fc, ff) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (nc, nf) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let f = counter("frz-yes", true, fc.clone(), ff.clone())?;
    let nf_t = counter("frz-no", false, nc.clone(), nf.clone())?;
    check!(wait_for(5_000, || fc.load(Ordering::SeqCst) > 2 && nc.load(Ordering::SeqCst) > 2), "the counters never ran");
    check!(!freezer::freezer_active() && !freezer::freezing(), "no freeze yet");
    freezer::freeze_kthreads().map_err(err("freeze_kthreads"))?;
    check!(freezer::freezer_active());
    check!(f.is_frozen() && f.is_freezable(), "the freezable thread is not frozen");
    check!(!nf_t.is_frozen() && !nf_t.is_freezable());
    check!(wait_for(5_000, || f.state() == TaskState::DiskSleep), "a frozen thread shows as {:?}", f.state());
    let row = registry::rows().into_iter().find(|r| r.id == f.id()).ok_or(Failure::Fail("[frz-yes] not listed".into()))?;
    check_eq!((row.state, row.wchan), ('D', "refrigerator"));
    let (a, b) = (fc.load(Ordering::SeqCst), nc.load(Ordering::SeqCst));
    msleep(30);
    check_eq!(fc.load(Ordering::SeqCst), a, "a frozen thread kept running");
    check!(nc.load(Ordering::SeqCst) > b, "a thread that is not freezable stopped during the freeze");
    freezer::thaw_kthreads();
    check!(!freezer::freezer_active());
    check!(wait_for(5_000, || fc.load(Ordering::SeqCst) > a), "did not resume after the thaw");
    check_eq!(ff.load(Ordering::SeqCst), 1, "kthread_freezable_should_stop reported was_frozen");
    check!(!f.is_frozen());
    check_eq!(f.stop().map_err(|e| e.errno), Ok(0));
    check_eq!(nf_t.stop().map_err(|e| e.errno), Ok(0));
    check_eq!(nf.load(Ordering::SeqCst), 0);
    Ok(())
});

ktest!(kthread::freezer_stop_and_park_release_a_frozen_thread => |ctx| {
    let _thaw = Thaw;
    // Frozen at try_to_freeze (Linux would keep it frozen until the thaw).
    let t = kthread_run!(|| {
        freezer::set_freezable();
        while !kthread::should_stop() {
            if kthread::should_park() {
                kthread::parkme();
            }
            freezer::try_to_freeze();
            kthread::msleep(1);
        }
        5
    }, "frz-stop").map_err(err("run"))?;
    let u = kthread_run!(|| {
        freezer::set_freezable();
        while !kthread::freezable_should_stop(None) {
            if kthread::should_park() {
                kthread::parkme();
            }
            kthread::msleep(1);
        }
        6
    }, "frz-park").map_err(err("run"))?;
    check!(wait_for(5_000, || t.is_freezable() && u.is_freezable()), "never made themselves freezable");
    freezer::freeze_kthreads().map_err(err("freeze_kthreads"))?;
    check!(t.is_frozen() && u.is_frozen(), "not frozen");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(5), "stop of a frozen thread");
    u.park().map_err(err("park of a frozen thread"))?;
    check!(u.is_parked() && !u.is_frozen());
    // A parked thread does not hold up a freeze.
    freezer::thaw_kthreads();
    freezer::freeze_kthreads_within(1_000).map_err(err("freeze with a parked freezable thread"))?;
    u.unpark();
    check!(wait_for(5_000, || u.is_frozen()), "an unparked thread did not freeze at its next freeze point");
    freezer::thaw_kthreads();
    check_eq!(u.stop().map_err(|e| e.errno), Ok(6));
    Ok(())
});

ktest!(kthread::freezer_refused_freeze_fails_and_thaws => |ctx| {
    let _thaw = Thaw;
    let (c, f) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let good = counter("frz-good", true, c.clone(), f.clone())?;
    // Freezable, but sleeps where it cannot freeze.
    let wq = Arc::new(WaitQueue::new());
    let bad = kthread_run!(move || {
        freezer::set_freezable();
        kthread::wait_event_or_stop(&wq, "frz-never", || false);
        0
    }, "frz-bad").map_err(err("run"))?;
    check!(wait_for(5_000, || bad.is_freezable() && c.load(Ordering::SeqCst) > 0), "never started");
    let t0 = port().now_ns();
    check_eq!(freezer::freeze_kthreads_within(100).map_err(|e| e.errno), Err(EBUSY), "a freeze a thread refuses");
    check!(port().now_ns() - t0 >= 100_000_000, "gave up before its time limit");
    check!(!freezer::freezer_active(), "a failed freeze must thaw");
    let a = c.load(Ordering::SeqCst);
    check!(wait_for(5_000, || c.load(Ordering::SeqCst) > a && !good.is_frozen()), "the frozen thread was not thawed");
    // Without the refusing thread the freeze succeeds; a second freeze while
    // one is on is refused; thawing twice is harmless.
    check_eq!(bad.stop().map_err(|e| e.errno), Ok(0));
    freezer::freeze_kthreads().map_err(err("freeze once the refusing thread is gone"))?;
    check!(good.is_frozen());
    check_eq!(freezer::freeze_kthreads().map_err(|e| e.errno), Err(EBUSY), "a second freeze");
    check!(freezer::freezer_active(), "a refused second freeze must not end the first");
    freezer::thaw_kthreads();
    freezer::thaw_kthreads();
    check!(wait_for(5_000, || !good.is_frozen()), "not thawed");
    check_eq!(good.stop().map_err(|e| e.errno), Ok(0));
    check!(f.load(Ordering::SeqCst) >= 1, "kthread_freezable_should_stop never reported a freeze");
    Ok(())
});

ktest!(kthread::freezer_wait_event_freezable_freezes_in_the_wait => |ctx| {
    let _thaw = Thaw;
    let wq = Arc::new(WaitQueue::new());
    let go = Arc::new(AtomicBool::new(false));
    let woke = Arc::new(AtomicU64::new(0));
    let (w2, g2, k2) = (wq.clone(), go.clone(), woke.clone());
    let t = kthread_run!(move || {
        freezer::set_freezable();
        while !kthread::should_stop() {
            if freezer::wait_event_freezable(&w2, "frz-wait", || g2.swap(false, Ordering::SeqCst)) {
                k2.fetch_add(1, Ordering::SeqCst);
            }
        }
        0
    }, "frz-wait").map_err(err("run"))?;
    check!(wait_for(5_000, || t.is_freezable() && t.state() == TaskState::Sleeping), "never slept");
    freezer::freeze_kthreads().map_err(err("freeze_kthreads"))?;
    check!(t.is_frozen(), "a freezable wait did not freeze");
    go.store(true, Ordering::SeqCst);
    wq.wake_all();
    msleep(30);
    check_eq!(woke.load(Ordering::SeqCst), 0, "ran while frozen");
    freezer::thaw_kthreads();
    check!(wait_for(5_000, || woke.load(Ordering::SeqCst) == 1), "the condition set during the freeze was lost");
    check_eq!(t.stop().map_err(|e| e.errno), Ok(0));
    Ok(())
});

ktest!(kthread::freezer_outside_a_kthread_does_nothing => |ctx| {
    let _thaw = Thaw;
    // The case runs in a plain port context.
    check!(kthread::current().is_none());
    check!(!freezer::set_freezable(), "set_freezable outside a kthread");
    freezer::freeze_kthreads().map_err(err("freeze_kthreads"))?;
    check!(!freezer::freezing() && !freezer::try_to_freeze(), "a plain context froze");
    let mut was = true;
    check!(!kthread::freezable_should_stop(Some(&mut was)) && !was);
    freezer::thaw_kthreads();
    Ok(())
});

// ---------------------------------------------------------------- benchmarks

ktest!(kthread::bench_kthread_create_run [bench = true] => |ctx| {
    // kthread_create_on_cpu(0) + wake -> first instruction of the function,
    // from a thread on CPU 0 that then waits for it.
    let _pin = Pinned::to(0);
    let p = port();
    let mut v = Vec::with_capacity(THREAD_ITERATIONS);
    for i in 0..(THREAD_ITERATIONS + WARMUP / 10) {
        let first = Arc::new(AtomicU64::new(0));
        let ran = Arc::new(Completion::new());
        let (f, r) = (first.clone(), ran.clone());
        let t0 = p.cycles();
        let t = kthread::create_on_cpu(move || { f.store(port().cycles(), Ordering::SeqCst); r.complete_all(); 0 }, 0, format_args!("bench/0"))
            .map_err(err("create"))?;
        t.wake();
        ran.wait("bench");
        if i >= WARMUP / 10 {
            v.push(first.load(Ordering::SeqCst).wrapping_sub(t0));
        }
        let _ = t.stop();
    }
    report_latency("kthread_create_run", &mut v);
    Ok(())
});

ktest!(kthread::bench_kthread_stop [bench = true] => |ctx| {
    // kthread_stop of a thread sleeping on CPU 0, from CPU 0: round trip.
    let _pin = Pinned::to(0);
    let p = port();
    let mut v = Vec::with_capacity(THREAD_ITERATIONS);
    for i in 0..(THREAD_ITERATIONS + WARMUP / 10) {
        let t = kthread::create_on_cpu(|| { let wq = WaitQueue::new(); kthread::wait_event_or_stop(&wq, "bench", || false); 0 }, 0, format_args!("bstop/0"))
            .map_err(err("create"))?;
        start(&t)?;
        wait_asleep(t.task());
        let t0 = p.cycles();
        let _ = t.stop();
        if i >= WARMUP / 10 {
            v.push(p.cycles().wrapping_sub(t0));
        }
    }
    report_latency("kthread_stop", &mut v);
    Ok(())
});

/// Wake a thread sleeping on `cpu` from a thread on CPU 0 and measure until
/// it runs (the waker yields at once when both share CPU 0).
fn wakeup_latency(name: &str, cpu: usize) -> Result<(), Failure> {
    static STAMP: AtomicU64 = AtomicU64::new(0);
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    SEQ.store(0, Ordering::SeqCst);
    let _pin = Pinned::to(0);
    let p = port();
    let samples = Arc::new(kport::sync::SpinLock::new(Vec::with_capacity(ITERATIONS)));
    let s = samples.clone();
    let total = ITERATIONS + WARMUP;
    let t = kthread::create_on_cpu(
        move || {
            let p = port();
            for i in 0..total {
                loop {
                    p.set_current_state(kport::SleepState::Interruptible, "bench");
                    if SEQ.load(Ordering::SeqCst) == 2 * i + 1 {
                        break;
                    }
                    p.schedule();
                }
                p.set_current_running();
                let d = p.cycles().wrapping_sub(STAMP.load(Ordering::SeqCst));
                if i >= WARMUP {
                    s.lock().push(d);
                }
                SEQ.store(2 * i + 2, Ordering::SeqCst);
            }
            0
        },
        cpu,
        format_args!("wakee/{cpu}"),
    )
    .map_err(err("create"))?;
    t.wake();
    for i in 0..total {
        wait_asleep(t.task());
        STAMP.store(p.cycles(), Ordering::SeqCst);
        SEQ.store(2 * i + 1, Ordering::SeqCst);
        t.wake();
        while SEQ.load(Ordering::SeqCst) != 2 * i + 2 {
            if cpu == 0 { p.yield_now() } else { core::hint::spin_loop() }
        }
    }
    let _ = t.stop();
    let mut v = core::mem::take(&mut *samples.lock());
    report_latency(name, &mut v);
    Ok(())
}

ktest!(kthread::bench_kthread_wakeup_same_cpu [bench = true] => |ctx| {
    wakeup_latency("kthread_wakeup_same_cpu", 0)
});

ktest!(kthread::bench_kthread_wakeup_cross_cpu [bench = true, min_cpus = 2] => |ctx| {
    wakeup_latency("kthread_wakeup_cross_cpu", 1)
});
