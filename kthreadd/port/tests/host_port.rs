//! The host port's own contract tests (the shared `port` suite runs on it in
//! `tests/suite/tests/host.rs`). Tests that register hooks or inject faults
//! use a private [`HostPort`] so they cannot disturb tests running in
//! parallel on the installed one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use kport::harness::Harness;
use kport::host::{HostPort, install_host_port};
use kport::sync::Completion;
use kport::topology::pods_of;
use kport::{
    AffinityScope, CpuMask, CpuTopology, EINVAL, ENOMEM, HotplugHooks, Port, Priority, SchedHooks, SleepState,
    SpawnSpec, TaskData, TaskRef, TaskState,
};

const CPUS: usize = 4;

fn host() -> &'static HostPort {
    install_host_port(CPUS)
}

/// A port of its own for one test, living for the process.
fn private_port(cpus: usize) -> &'static HostPort {
    Box::leak(Box::new(HostPort::new(cpus)))
}

fn spec(name: &str, affinity: CpuMask, f: impl FnOnce() + Send + 'static) -> SpawnSpec {
    SpawnSpec {
        name: name.into(),
        entry: Box::new(f),
        affinity,
        priority: Priority::Normal,
        data: None,
        worker_hooks: false,
    }
}

fn spawn(p: &dyn Port, name: &str, f: impl FnOnce() + Send + 'static) -> TaskRef {
    p.spawn(spec(name, CpuMask::ALL, f)).expect("spawn")
}

/// Poll `cond` for up to 10 s.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..10_000 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn new_context_runs_only_after_wake() {
    let p = host();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let t = spawn(p, "host-new", move || r.store(true, Ordering::SeqCst));
    std::thread::sleep(Duration::from_millis(30));
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(t.state(), TaskState::New);
    assert!(!t.wake_parked(), "wake_parked must not start a new context");
    assert_eq!(t.state(), TaskState::New);
    assert!(t.wake());
    assert!(eventually(|| t.state() == TaskState::Dead));
    assert!(ran.load(Ordering::SeqCst));
    assert!(!t.wake(), "waking a dead context must fail");
    assert!(t.nr_switches() >= 1);
}

#[test]
fn no_lost_wakeup_10000_rounds() {
    const ROUNDS: usize = 10_000;
    let p = host();
    let flag = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Completion::new());
    let (f, s, d) = (flag.clone(), seen.clone(), done.clone());
    let sleeper = spawn(p, "host-sleeper", move || {
        let p = host();
        for i in 1..=ROUNDS {
            loop {
                p.set_current_state(SleepState::Uninterruptible, "host-test");
                if f.load(Ordering::SeqCst) >= i {
                    break;
                }
                p.schedule();
            }
            p.set_current_running();
            s.store(i, Ordering::SeqCst);
        }
        d.complete_all();
    });
    sleeper.wake();
    // Lock-step: each round the sleeper has to block (or nearly) before the
    // waker sets the flag, so most rounds race the wake against schedule().
    for i in 1..=ROUNDS {
        flag.store(i, Ordering::SeqCst);
        sleeper.wake();
        while seen.load(Ordering::SeqCst) < i {
            std::hint::spin_loop();
            if sleeper.state() == TaskState::DiskSleep && flag.load(Ordering::SeqCst) == i && i % 2 == 0 {
                // A second wake-up, racing the sleeper's recheck.
                sleeper.wake();
            }
        }
    }
    assert!(done.wait_deadline("test", p.now_ns() + 60_000_000_000), "the sleeper missed a wake-up");
}

#[test]
fn wake_and_wake_parked_masks() {
    let p = host();
    let stage = Arc::new(AtomicUsize::new(0));
    let s = stage.clone();
    let t = spawn(p, "host-masks", move || {
        let p = host();
        // Parked: only wake_parked ends it.
        p.set_current_state(SleepState::Parked, "parked");
        s.store(1, Ordering::SeqCst);
        p.schedule();
        s.store(2, Ordering::SeqCst);
        // Interruptible: wake_parked must not end it.
        p.set_current_state(SleepState::Interruptible, "sleeping");
        s.store(3, Ordering::SeqCst);
        p.schedule();
        s.store(4, Ordering::SeqCst);
    });
    t.wake();
    assert!(eventually(|| stage.load(Ordering::SeqCst) == 1));
    assert_eq!(t.state(), TaskState::Parked);
    assert_eq!(t.wait_channel(), "parked");
    assert!(!t.wake(), "wake must not unpark");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(stage.load(Ordering::SeqCst), 1);
    assert_eq!(t.state(), TaskState::Parked);
    assert!(t.wake_parked());
    assert!(eventually(|| stage.load(Ordering::SeqCst) == 3));
    assert_eq!(t.state(), TaskState::Sleeping);
    assert!(!t.wake_parked(), "wake_parked must not wake a sleeper");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(stage.load(Ordering::SeqCst), 3);
    assert!(t.wake());
    assert!(eventually(|| t.state() == TaskState::Dead));
    assert_eq!(stage.load(Ordering::SeqCst), 4);
}

#[test]
fn uninterruptible_state_and_running_schedule() {
    let p = host();
    let t = spawn(p, "host-d", move || {
        let p = host();
        // schedule() while running only yields.
        p.schedule();
        p.set_current_state(SleepState::Uninterruptible, "disk");
        p.schedule();
    });
    t.wake();
    assert!(eventually(|| t.state() == TaskState::DiskSleep));
    assert!(t.wake());
    assert!(eventually(|| t.state() == TaskState::Dead));
}

#[test]
fn test_thread_has_a_context_record() {
    let p = host();
    let me = p.current();
    assert_eq!(me.id(), p.current_id());
    assert_eq!(me.id(), p.current().id(), "the record must be stable");
    assert_eq!(me.state(), TaskState::Running);
    assert!(p.current_data().is_none());
    let other = me.clone();
    let waker = std::thread::spawn(move || {
        assert!(eventually(|| other.state() == TaskState::Sleeping));
        std::thread::sleep(Duration::from_millis(10));
        assert!(other.wake());
    });
    p.set_current_state(SleepState::Interruptible, "main");
    p.schedule();
    assert_eq!(me.state(), TaskState::Running);
    waker.join().unwrap();
}

#[test]
fn schedule_until_is_never_early() {
    let p = host();
    for ms in [0u64, 1, 2, 5, 13] {
        let deadline = p.now_ns() + ms * 1_000_000;
        p.set_current_state(SleepState::Uninterruptible, "test");
        assert!(p.schedule_until(deadline));
        assert!(p.now_ns() >= deadline, "woke early");
        assert_eq!(p.current().state(), TaskState::Running);
    }
    // Woken before the deadline: false.
    let me = p.current();
    let t = spawn(p, "host-waker", move || {
        std::thread::sleep(Duration::from_millis(10));
        me.wake();
    });
    p.set_current_state(SleepState::Interruptible, "test");
    t.wake();
    let start = p.now_ns();
    assert!(!p.schedule_until(start + 10_000_000_000));
    assert!(p.now_ns() - start < 5_000_000_000);
    // A parked sleeper also wakes at its deadline.
    let deadline = p.now_ns() + 3_000_000;
    p.set_current_state(SleepState::Parked, "test");
    assert!(p.schedule_until(deadline));
    assert!(p.now_ns() >= deadline);
}

#[test]
fn timers_fire_cancel_and_cancel_sync() {
    let p = host();
    let fired_at = Arc::new(AtomicU64::new(0));
    let irq = Arc::new(AtomicUsize::new(usize::MAX));
    let (fa, ir) = (fired_at.clone(), irq.clone());
    let t = p.timer(Arc::new(move || {
        let p = host();
        ir.store(if p.in_irq() && p.in_atomic() { p.cpu_id() } else { 1000 }, Ordering::SeqCst);
        fa.store(p.now_ns(), Ordering::SeqCst);
    }));
    let deadline = p.now_ns() + 5_000_000;
    t.arm(deadline, Some(2));
    assert!(t.is_pending());
    assert!(eventually(|| fired_at.load(Ordering::SeqCst) != 0));
    assert!(fired_at.load(Ordering::SeqCst) >= deadline, "fired early");
    assert_eq!(irq.load(Ordering::SeqCst), 2, "callback not in interrupt context of its CPU");
    assert!(!t.is_pending());
    assert!(!t.cancel());

    // Moving a pending timer: it fires once, at the later deadline.
    fired_at.store(0, Ordering::SeqCst);
    t.arm(p.now_ns() + 2_000_000, None);
    let later = p.now_ns() + 40_000_000;
    t.arm(later, None);
    assert!(eventually(|| fired_at.load(Ordering::SeqCst) != 0));
    assert!(fired_at.load(Ordering::SeqCst) >= later, "the moved timer fired at its old deadline");

    // Cancelled before firing: never fires.
    fired_at.store(0, Ordering::SeqCst);
    t.arm(p.now_ns() + 20_000_000, None);
    assert!(t.cancel());
    assert!(!t.is_pending());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fired_at.load(Ordering::SeqCst), 0);

    // cancel_sync waits for a running callback.
    let running = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (r, f) = (running.clone(), finished.clone());
    let slow = p.timer(Arc::new(move || {
        r.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        f.store(true, Ordering::SeqCst);
    }));
    slow.arm(p.now_ns(), None);
    assert!(eventually(|| running.load(Ordering::SeqCst)));
    assert!(!slow.cancel_sync(), "a running timer is not pending");
    assert!(finished.load(Ordering::SeqCst), "cancel_sync returned while the callback ran");

    // cancel_sync from the callback itself does not deadlock, and a callback
    // may re-arm its own timer.
    let slot: Arc<std::sync::Mutex<Option<Box<dyn kport::PortTimer>>>> = Default::default();
    let count = Arc::new(AtomicUsize::new(0));
    let (s2, c2) = (slot.clone(), count.clone());
    let own = p.timer(Arc::new(move || {
        let n = c2.fetch_add(1, Ordering::SeqCst) + 1;
        let g = s2.lock().unwrap();
        let t = g.as_ref().unwrap();
        t.cancel_sync();
        if n < 3 {
            t.arm(host().now_ns() + 1_000_000, None);
        }
    }));
    own.arm(p.now_ns() + 1_000_000, None);
    *slot.lock().unwrap() = Some(own);
    assert!(eventually(|| count.load(Ordering::SeqCst) == 3));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn many_timers_fire_in_order() {
    let p = host();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let base = p.now_ns() + 20_000_000;
    let timers: Vec<_> = (0..20u64)
        .map(|i| {
            let o = order.clone();
            let t = p.timer(Arc::new(move || o.lock().unwrap().push(i)));
            // Arm out of order, and arm-cancel-arm to leave stale entries.
            let d = base + ((i * 7) % 20) * 1_000_000;
            t.arm(d + 500_000_000, None);
            t.cancel();
            t.arm(d, None);
            (d, t)
        })
        .collect();
    assert!(eventually(|| order.lock().unwrap().len() == 20));
    let got = order.lock().unwrap().clone();
    let mut want: Vec<_> = timers.iter().enumerate().map(|(i, (d, _))| (*d, i as u64)).collect();
    want.sort();
    assert_eq!(got, want.into_iter().map(|(_, i)| i).collect::<Vec<_>>());
}

#[test]
fn call_on_cpu_identity() {
    let p = host();
    for cpu in 0..CPUS {
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let s = seen.clone();
        p.call_on_cpu(
            cpu,
            Box::new(move || {
                let p = host();
                assert!(p.in_atomic());
                s.store(p.cpu_id(), Ordering::SeqCst);
            }),
            true,
        )
        .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), cpu);
    }
    // On another CPU it is interrupt context.
    let irq = Arc::new(AtomicBool::new(false));
    let i = irq.clone();
    p.call_on_cpu(3, Box::new(move || i.store(host().in_irq(), Ordering::SeqCst)), true).unwrap();
    assert!(irq.load(Ordering::SeqCst));
    // Without waiting.
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    p.call_on_cpu(1, Box::new(move || d.store(true, Ordering::SeqCst)), false).unwrap();
    assert!(eventually(|| done.load(Ordering::SeqCst)));
    assert_eq!(p.call_on_cpu(CPUS, Box::new(|| {}), true).unwrap_err().errno, EINVAL);
    assert!(!p.in_atomic());
}

#[test]
fn bound_contexts_report_their_cpu() {
    let p = host();
    for cpu in 0..CPUS {
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let s = seen.clone();
        let t =
            p.spawn(spec("host-bound", CpuMask::one(cpu), move || s.store(host().cpu_id(), Ordering::SeqCst))).unwrap();
        assert_eq!(t.cpu(), cpu);
        t.wake();
        assert!(eventually(|| t.state() == TaskState::Dead));
        assert_eq!(seen.load(Ordering::SeqCst), cpu);
    }
    let t = p.spawn(spec("host-aff", CpuMask(0b1100), || {})).unwrap();
    assert_eq!(t.cpu(), 2);
    t.set_affinity(CpuMask::one(1)).unwrap();
    assert_eq!((t.cpu(), t.affinity()), (1, CpuMask::one(1)));
    assert_eq!(t.set_affinity(CpuMask::one(CPUS)).unwrap_err().errno, EINVAL);
    assert_eq!(p.spawn(spec("host-nocpu", CpuMask::one(CPUS), || {})).err().map(|e| e.errno), Some(EINVAL));
}

#[test]
fn atomic_counters() {
    let p = host();
    assert!(!p.in_atomic() && !p.in_irq());
    let was = p.irq_save();
    assert!(was && p.in_atomic());
    let nested = p.irq_save();
    assert!(!nested);
    p.irq_restore(nested);
    assert!(p.in_atomic());
    p.irq_restore(was);
    assert!(!p.in_atomic());
    p.preempt_disable();
    p.preempt_disable();
    p.preempt_enable();
    assert!(p.in_atomic() && !p.in_irq());
    p.preempt_enable();
    assert!(!p.in_atomic());
    // A spinlock holder is atomic.
    let l = kport::sync::SpinLock::new(());
    let g = l.lock();
    assert!(p.in_atomic());
    drop(g);
    assert!(!p.in_atomic());
}

#[test]
#[should_panic(expected = "sleeping function called from invalid context")]
fn schedule_in_atomic_context_is_a_bug() {
    let p = host();
    p.preempt_disable();
    p.set_current_state(SleepState::Interruptible, "bug");
    p.schedule();
}

#[test]
fn time_is_monotonic() {
    let p = host();
    let a = p.now_ns();
    std::thread::sleep(Duration::from_millis(2));
    let b = p.now_ns();
    assert!(b >= a + 2_000_000);
    assert_eq!(p.cycles_to_ns(12345), 12345);
    assert!(p.cycles() >= b);
    assert_eq!(p.name(), "host");
    assert_eq!(p.cpu_count(), CPUS);
}

#[test]
fn exit_current_ends_the_thread_1000_times() {
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                    .filter(|c| c.trim_end() == name)
                    .count()
            })
            .unwrap_or(0)
    }
    let p = host();
    let after = Arc::new(AtomicUsize::new(0));
    for _ in 0..1000 {
        let a = after.clone();
        let t = spawn(p, "host-exiter", move || {
            if a.load(Ordering::SeqCst) == 0 {
                host().exit_current();
            }
            a.fetch_add(1, Ordering::SeqCst);
        });
        t.wake();
        assert!(eventually(|| t.state() == TaskState::Dead));
    }
    assert_eq!(after.load(Ordering::SeqCst), 0, "code after exit_current ran");
    // The threads are gone (they end just after they are marked dead).
    assert!(eventually(|| threads_named("host-exiter") == 0), "{} exited threads remain", threads_named("host-exiter"));
}

#[derive(Default)]
struct CountHooks {
    sleeping: AtomicUsize,
    running: AtomicUsize,
    bad: AtomicUsize,
}

impl SchedHooks for CountHooks {
    fn sleeping(&self, data: &TaskData) {
        let p = kport::port();
        if data.downcast_ref::<u32>() != Some(&7) || !p.in_atomic() {
            self.bad.fetch_add(1, Ordering::SeqCst);
        }
        self.sleeping.fetch_add(1, Ordering::SeqCst);
    }
    fn running(&self, data: &TaskData) {
        if data.downcast_ref::<u32>() != Some(&7) {
            self.bad.fetch_add(1, Ordering::SeqCst);
        }
        self.running.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn sched_hooks_only_on_real_blocks() {
    host(); // the hooks check in_atomic through the installed port (same thread state)
    let p = private_port(2);
    let hooks: &'static CountHooks = Box::leak(Box::default());
    p.set_sched_hooks(hooks);
    let stage = Arc::new(AtomicUsize::new(0));
    let s = stage.clone();
    let mut sp = spec("host-worker", CpuMask::ALL, move || {
        // Running: schedule() only yields.
        p.schedule();
        // Woken (by itself) before schedule: returns at once.
        p.set_current_state(SleepState::Interruptible, "w");
        p.current().wake();
        p.schedule();
        // A deadline already passed: returns at once.
        p.set_current_state(SleepState::Interruptible, "w");
        p.schedule_until(0);
        s.store(1, Ordering::SeqCst);
        // A real block, ended by a wake-up.
        p.set_current_state(SleepState::Interruptible, "w");
        p.schedule();
        s.store(2, Ordering::SeqCst);
        // A real block, ended by its deadline.
        p.set_current_state(SleepState::Interruptible, "w");
        p.schedule_until(p.now_ns() + 2_000_000);
        s.store(3, Ordering::SeqCst);
    });
    sp.data = Some(Arc::new(7u32));
    sp.worker_hooks = true;
    let t = p.spawn(sp).unwrap();
    // Without worker_hooks: never called.
    let plain = p
        .spawn(spec("host-plain", CpuMask::ALL, move || {
            p.set_current_state(SleepState::Interruptible, "p");
            p.schedule_until(p.now_ns() + 1_000_000);
        }))
        .unwrap();
    plain.wake();
    assert!(eventually(|| plain.state() == TaskState::Dead));
    t.wake();
    assert!(eventually(|| stage.load(Ordering::SeqCst) == 1 && t.state() == TaskState::Sleeping));
    assert!(eventually(|| hooks.sleeping.load(Ordering::SeqCst) == 1));
    assert_eq!(hooks.running.load(Ordering::SeqCst), 0);
    assert!(t.wake());
    assert!(eventually(|| t.state() == TaskState::Dead));
    assert_eq!(stage.load(Ordering::SeqCst), 3);
    assert_eq!(hooks.sleeping.load(Ordering::SeqCst), 2);
    assert_eq!(hooks.running.load(Ordering::SeqCst), 2);
    assert_eq!(hooks.bad.load(Ordering::SeqCst), 0);
}

/// What the tick hook saw for one context (its spawn data).
struct TickLog {
    /// The CPU the context is bound to.
    cpu: usize,
    ticks: AtomicU64,
    /// Calls made outside interrupt context or on another CPU.
    bad: AtomicU64,
}

impl TickLog {
    fn new(cpu: usize) -> Arc<TickLog> {
        Arc::new(TickLog { cpu, ticks: AtomicU64::new(0), bad: AtomicU64::new(0) })
    }
    fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::SeqCst)
    }
}

/// Counts `tick` calls in the [`TickLog`] each context was spawned with.
struct TickHooks;

impl SchedHooks for TickHooks {
    fn sleeping(&self, _data: &TaskData) {}
    fn running(&self, _data: &TaskData) {}
    fn tick(&self, data: &TaskData) {
        // Interrupt state is per thread, the same through any host port.
        let p = host();
        let log = data.downcast_ref::<Arc<TickLog>>().expect("spawn data is a TickLog");
        if !p.in_irq() || !p.in_atomic() || p.cpu_id() != log.cpu {
            log.bad.fetch_add(1, Ordering::SeqCst);
        }
        log.ticks.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn tick_hook_only_for_running_workers() {
    let p = private_port(4);
    static HOOKS: TickHooks = TickHooks;
    p.set_sched_hooks(&HOOKS);
    let stop = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let spawn_logged = |name: &str, cpu: usize, hooks: bool, f: Box<dyn FnOnce() + Send>| {
        let log = TickLog::new(cpu);
        let mut sp = spec(name, CpuMask::one(cpu), f);
        sp.data = Some(Arc::new(log.clone()));
        sp.worker_hooks = hooks;
        (p.spawn(sp).unwrap(), log)
    };
    let spin = |stop: Arc<AtomicBool>| {
        move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        }
    };
    let (spinner, spinner_log) = spawn_logged("host-tick-spin", 1, true, Box::new(spin(stop.clone())));
    let (plain, plain_log) = spawn_logged("host-tick-plain", 2, false, Box::new(spin(stop.clone())));
    let (r, st) = (release.clone(), stop.clone());
    let (sleeper, sleeper_log) = spawn_logged(
        "host-tick-sleep",
        3,
        true,
        Box::new(move || {
            loop {
                p.set_current_state(SleepState::Interruptible, "tick-sleeper");
                if r.load(Ordering::SeqCst) {
                    break;
                }
                p.schedule();
            }
            p.set_current_running();
            spin(st)();
        }),
    );
    for t in [&spinner, &plain, &sleeper] {
        t.wake();
    }
    assert!(eventually(|| sleeper.state() == TaskState::Sleeping));
    // It may have been ticked while it ran before blocking, and the tick that
    // saw it running may still be calling: two more ticks of the spinner
    // (spawned first, so called first) and that tick is over.
    let from = spinner_log.ticks();
    assert!(eventually(|| spinner_log.ticks() >= from + 2), "a spinning worker was not ticked");
    let asleep = sleeper_log.ticks();
    let from = spinner_log.ticks();
    assert!(eventually(|| spinner_log.ticks() >= from + 5), "a spinning worker was not ticked");
    assert_eq!(sleeper_log.ticks(), asleep, "a sleeping worker was ticked");
    assert_eq!(sleeper.state(), TaskState::Sleeping);
    assert_eq!(plain_log.ticks(), 0, "a context without worker hooks was ticked");
    // Woken, it runs and is ticked again.
    release.store(true, Ordering::SeqCst);
    assert!(sleeper.wake());
    assert!(eventually(|| sleeper_log.ticks() >= asleep + 3), "a woken worker was not ticked");
    stop.store(true, Ordering::SeqCst);
    for t in [&spinner, &plain, &sleeper] {
        assert!(eventually(|| t.state() == TaskState::Dead));
    }
    // Dead: no more ticks.
    let last = spinner_log.ticks();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(spinner_log.ticks(), last, "a dead worker was ticked");
    for log in [&spinner_log, &sleeper_log, &plain_log] {
        assert_eq!(log.bad.load(Ordering::SeqCst), 0, "tick outside interrupt context of the worker's CPU");
    }
}

#[test]
fn topology_default_and_synthetic() {
    let p = private_port(4);
    for cpu in 0..4 {
        assert_eq!(p.cpu_topology(cpu), CpuTopology::alone(cpu));
    }
    // 2 packages x 2 cores x 2 threads.
    let table: Vec<CpuTopology> = (0..8).map(|c| CpuTopology::symmetric(c, 2, 2)).collect();
    let p: &'static HostPort = Box::leak(Box::new(HostPort::with_topology(table.clone())));
    assert_eq!(p.cpu_count(), 8);
    assert_eq!(p.online_mask(), CpuMask::first(8));
    for (cpu, t) in table.iter().enumerate() {
        assert_eq!(p.cpu_topology(cpu), *t);
    }
    assert_eq!(p.cpu_topology(9), CpuTopology::alone(9), "a CPU the port does not have");
    let pods = |scope| pods_of(scope, p.online_mask(), |c| p.cpu_topology(c));
    assert_eq!(pods(AffinityScope::Smt), [CpuMask(0x03), CpuMask(0x0c), CpuMask(0x30), CpuMask(0xc0)]);
    assert_eq!(pods(AffinityScope::Cache), [CpuMask(0x0f), CpuMask(0xf0)]);
    assert_eq!(pods(AffinityScope::System), [CpuMask(0xff)]);
    // Offline CPUs leave their pods.
    p.cpu_down(1).unwrap();
    assert_eq!(pods(AffinityScope::Smt)[0], CpuMask(0x01));
}

#[test]
fn spawn_failure_injection() {
    let p = private_port(1);
    p.inject_spawn_failures(2);
    for _ in 0..2 {
        assert_eq!(p.spawn(spec("host-fail", CpuMask::ALL, || {})).err().map(|e| e.errno), Some(ENOMEM));
    }
    let t = p.spawn(spec("host-ok", CpuMask::ALL, || {})).unwrap();
    t.wake();
    assert!(eventually(|| t.state() == TaskState::Dead));
}

#[derive(Default)]
struct PlugLog(std::sync::Mutex<Vec<(bool, usize)>>);

impl HotplugHooks for PlugLog {
    fn cpu_going_down(&self, cpu: usize) {
        self.0.lock().unwrap().push((false, cpu));
    }
    fn cpu_dead(&self, cpu: usize) {
        self.0.lock().unwrap().push((false, cpu + 100));
    }
    fn cpu_came_up(&self, cpu: usize) {
        self.0.lock().unwrap().push((true, cpu));
    }
}

#[test]
fn cpu_hotplug() {
    let p = private_port(3);
    let log: &'static PlugLog = Box::leak(Box::default());
    p.add_hotplug_hooks(log);
    let unbound = p.spawn(spec("host-unbound", CpuMask::ALL, || {})).unwrap();
    let bound = p.spawn(spec("host-bound0", CpuMask::one(0), || {})).unwrap();
    assert_eq!(p.online_mask(), CpuMask(0b111));
    p.cpu_down(0).unwrap();
    assert_eq!(p.online_mask(), CpuMask(0b110));
    assert_eq!(unbound.cpu(), 1, "unbound contexts move off an offline CPU");
    assert_eq!(bound.cpu(), 0, "bound contexts stay");
    assert_eq!(p.cpu_down(0).unwrap_err().errno, EINVAL);
    assert_eq!(p.cpu_down(3).unwrap_err().errno, EINVAL);
    p.cpu_down(2).unwrap();
    assert_eq!(p.cpu_down(1).unwrap_err().errno, EINVAL, "the last CPU stays");
    assert_eq!(p.cpu_up(1).unwrap_err().errno, EINVAL);
    p.cpu_up(0).unwrap();
    p.cpu_up(2).unwrap();
    assert_eq!(p.online_mask(), CpuMask(0b111));
    assert_eq!(unbound.cpu(), 0);
    assert_eq!(*log.0.lock().unwrap(), vec![(false, 0), (false, 100), (false, 2), (false, 102), (true, 0), (true, 2)]);
}

#[test]
fn task_bookkeeping() {
    let p = host();
    let go = Arc::new(Completion::new());
    let g = go.clone();
    let mut sp = spec("host-book", CpuMask::ALL, move || g.wait("book-wait"));
    sp.data = Some(Arc::new(String::from("payload")));
    let t = p.spawn(sp).unwrap();
    assert_eq!(t.name(), "host-book");
    t.set_name("host-renamed");
    assert_eq!(t.name(), "host-renamed");
    assert_eq!(t.data().unwrap().downcast_ref::<String>().unwrap(), "payload");
    assert_eq!(t.wait_channel(), "");
    t.wake();
    assert!(eventually(|| t.state() == TaskState::DiskSleep));
    assert_eq!(t.wait_channel(), "book-wait");
    let before = t.nr_switches();
    go.complete_all();
    assert!(eventually(|| t.state() == TaskState::Dead));
    assert!(t.nr_switches() > before);
    let ns = t.cpu_time_ns();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(t.cpu_time_ns(), ns, "a dead context's time does not grow");
    assert_eq!(p.mem_counters(), Default::default());
}

#[test]
fn bh_word_is_per_thread() {
    let p = host();
    let mine = p.bh_word();
    assert!(std::ptr::eq(mine, p.bh_word()), "one word per thread");
    kport::irq::bh_add(kport::irq::SOFTIRQ_DISABLE_OFFSET);
    let other = std::thread::spawn(move || {
        let p = host();
        (p.bh_word() as *const _ as usize, kport::irq::bh_count())
    })
    .join()
    .unwrap();
    assert_ne!(other.0, mine as *const _ as usize, "two threads share a word");
    assert_eq!(other.1, 0, "another thread sees this thread's bottom-half word");
    assert_eq!(kport::irq::bh_count(), kport::irq::SOFTIRQ_DISABLE_OFFSET);
    kport::irq::bh_sub(kport::irq::SOFTIRQ_DISABLE_OFFSET);
    assert_eq!(kport::irq::bh_count(), 0);
}

/// A handler for the simulated lines of a private port: records the
/// context of each run, and can hold the helper thread until released.
struct LineProbe {
    port: &'static HostPort,
    runs: AtomicUsize,
    cpu: AtomicUsize,
    in_irq: AtomicBool,
    hold: AtomicBool,
    held: AtomicBool,
}

impl LineProbe {
    fn new(port: &'static HostPort) -> &'static LineProbe {
        Box::leak(Box::new(LineProbe {
            port,
            runs: AtomicUsize::new(0),
            cpu: AtomicUsize::new(usize::MAX),
            in_irq: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            held: AtomicBool::new(false),
        }))
    }
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

impl kport::irq::IrqHandler for LineProbe {
    fn handle(&self, _irq: u32) {
        self.cpu.store(self.port.cpu_id(), Ordering::SeqCst);
        self.in_irq.store(self.port.in_irq(), Ordering::SeqCst);
        while self.hold.load(Ordering::SeqCst) {
            self.held.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn simulated_irq_lines_run_handlers_on_their_cpu() {
    host(); // irq_exit counts through the installed port
    let p = private_port(4);
    let chip = p.irq_chip().expect("the host port has a controller");
    assert_eq!(chip.nr_irqs(), kport::host::IRQ_LINES);
    let probe = LineProbe::new(p);
    chip.attach(3, probe).unwrap();
    assert_eq!(chip.attach(3, probe).unwrap_err().errno, kport::EBUSY);
    assert_eq!(chip.attach(kport::host::IRQ_LINES, probe).unwrap_err().errno, EINVAL);
    assert_eq!(chip.describe(3), "host-sim 3-level");
    let _serial = MISUSE_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let misuses = kport::irq::exit_misuses();
    for (i, cpu) in [0usize, 2, 3].into_iter().enumerate() {
        p.irqs().set_cpu(3, cpu);
        let exits = kport::irq::exits(cpu);
        p.irqs().fire(3);
        assert!(eventually(|| probe.runs() == i + 1));
        assert_eq!(probe.cpu.load(Ordering::SeqCst), cpu, "the handler runs on the line's CPU");
        assert!(probe.in_irq.load(Ordering::SeqCst), "the handler runs in interrupt context");
        assert!(eventually(|| kport::irq::exits(cpu) > exits), "no irq_exit on cpu {cpu} after the handler");
        assert_eq!(chip.count(3, cpu), 1);
    }
    assert_eq!(kport::irq::exit_misuses(), misuses);
    // A line without a handler loses its firings.
    p.irqs().fire(4);
    chip.detach(3);
    p.irqs().fire(3);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(probe.runs(), 3);
    chip.attach(3, probe).unwrap();
}

#[test]
fn simulated_irq_line_masks_and_detaches() {
    let p = HostPort::new(2).with_irq_lines(4);
    let p: &'static HostPort = Box::leak(Box::new(p));
    let chip = p.irq_chip().unwrap();
    assert_eq!(chip.nr_irqs(), 4);
    assert_eq!(chip.attach(4, LineProbe::new(p)).unwrap_err().errno, EINVAL);
    let probe = LineProbe::new(p);
    chip.attach(1, probe).unwrap();
    // Masked: held, then delivered once at unmask.
    chip.mask(1);
    p.irqs().fire(1);
    p.irqs().fire(1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(probe.runs(), 0);
    chip.unmask(1);
    assert!(eventually(|| probe.runs() == 1));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(probe.runs(), 1);
    // The test interrupt fires line 0.
    let t = p.test_irq().unwrap();
    assert_eq!(t.line(), kport::host::TEST_IRQ_LINE);
    let on_zero = LineProbe::new(p);
    chip.attach(t.line(), on_zero).unwrap();
    t.fire();
    assert!(eventually(|| on_zero.runs() == 1));
    // Detach waits for a running handler.
    probe.hold.store(true, Ordering::SeqCst);
    p.irqs().fire(1);
    assert!(eventually(|| probe.held.load(Ordering::SeqCst)));
    let detached = Arc::new(AtomicBool::new(false));
    let d = detached.clone();
    let h = std::thread::spawn(move || {
        p.irq_chip().unwrap().detach(1);
        d.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(30));
    assert!(!detached.load(Ordering::SeqCst), "detach returned while the handler ran");
    probe.hold.store(false, Ordering::SeqCst);
    h.join().unwrap();
    assert_eq!(probe.runs(), 2);
}

#[test]
fn timer_callbacks_and_ipis_end_with_irq_exit() {
    let p = host();
    let _serial = MISUSE_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let misuses = kport::irq::exit_misuses();
    let exits = kport::irq::exits(2);
    p.call_on_cpu(2, Box::new(|| {}), true).unwrap();
    assert!(eventually(|| kport::irq::exits(2) > exits), "no irq_exit after a call_on_cpu function");
    let fired = Arc::new(AtomicUsize::new(usize::MAX));
    let f = fired.clone();
    let t = p.timer(Arc::new(move || f.store(host().cpu_id(), Ordering::SeqCst)));
    let exits = kport::irq::exits(1);
    t.arm(p.now_ns() + 1_000_000, Some(1));
    assert!(eventually(|| fired.load(Ordering::SeqCst) == 1));
    assert!(eventually(|| kport::irq::exits(1) > exits), "no irq_exit after a timer callback");
    assert_eq!(kport::irq::exit_misuses(), misuses);
}

/// Held by the tests that read `exit_misuses`: one of them makes misuses on
/// purpose, and the others must not see its count move.
static MISUSE_COUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn irq_exit_from_task_context_is_counted_as_a_misuse() {
    // A port bug: irq_exit with interrupts on, from a thread. The context
    // check runs on a CPU's first exit and every CHECK_EVERY-th after, so
    // that many calls on one CPU meet it at least once.
    let p = host();
    let _serial = MISUSE_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let before = kport::irq::exit_misuses();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let t = p
        .spawn(spec("host-bad-exit", CpuMask::one(3), move || {
            for _ in 0..kport::irq::CHECK_EVERY {
                kport::irq::irq_exit();
            }
            d.store(true, Ordering::SeqCst);
        }))
        .unwrap();
    t.wake();
    assert!(eventually(|| done.load(Ordering::SeqCst)));
    assert!(kport::irq::exit_misuses() > before, "no misuse counted");
}

#[test]
fn a_failed_try_lock_leaves_the_holder_holding() {
    host();
    let m = kport::sync::Mutex::new(5);
    let held = m.try_lock().expect("a free mutex");
    assert!(m.try_lock().is_none(), "a held mutex was taken twice");
    // The failed attempt must not have released it.
    assert!(m.try_lock().is_none(), "a failed try_lock released the holder's mutex");
    drop(held);
    assert_eq!(m.try_lock().map(|g| *g), Some(5), "a released mutex is not free");
}
