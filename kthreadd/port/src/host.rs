//! The host port: [`Port`] on std threads (feature `host`), so the API tests
//! that run in the guest also run under `cargo test`.
//!
//! - A context is a record plus, from its first [`PortTask::wake`] on, a std
//!   thread running its entry (a context never woken costs no thread). The
//!   record's `Mutex` + `Condvar` implement the blocking protocol: a wake-up
//!   sets a sleeper back to running under that mutex, so none is lost.
//!   Threads not spawned through the port (a test's own thread) get a record
//!   at their first port call.
//! - Virtual CPUs: a context runs on the lowest online CPU of its affinity
//!   (the lowest of its affinity if none is online). `call_on_cpu` functions
//!   run on a per-CPU helper thread, timer callbacks on one timer thread per
//!   port; both are interrupt context and report their CPU.
//! - Hard interrupts are simulated: a timer callback, a `call_on_cpu`
//!   function on a helper thread, a simulated tick and a device interrupt
//!   each run in interrupt context and then call [`crate::irq::irq_exit`]
//!   on the same thread, with the interrupt depth undone, interrupts off
//!   and the interrupt's CPU still reported, as a hard interrupt's exit.
//! - Device interrupts: a simulated controller ([`HostIrqChip`], the
//!   port's `irq_chip`) with [`IRQ_LINES`] lines by default
//!   ([`HostPort::with_irq_lines`]). A fired line runs its handler on its
//!   CPU's helper thread (CPU 0 unless [`HostIrqChip::set_cpu`] moved it).
//!   A masked line holds its firings, as an asserted level line would, and
//!   delivers them as one at unmask. The harness's test interrupt fires
//!   line [`TEST_IRQ_LINE`].
//! - The bottom-half word is per thread, as is everything else of a
//!   context here (several contexts run on one virtual CPU at once).
//! - Interrupt and preemption state are per-thread counters: they feed
//!   `in_atomic`/`in_irq` and the `might_sleep` check of `schedule`, but the
//!   OS still preempts every thread.
//! - CPU topology: synthetic, given at construction
//!   ([`HostPort::with_topology`]); by default every CPU is a core and a
//!   cache of its own in package 0, node 0 (the trait's default).
//! - The scheduler tick is simulated: there is no interrupt to take, so once
//!   scheduler hooks are registered a tick thread wakes every [`TICK_NS`] and
//!   calls [`SchedHooks::tick`] for each context spawned with `worker_hooks`
//!   that is running at that moment, in interrupt context on that context's
//!   CPU. It runs beside the context, not in its place: a real tick finds
//!   the context stopped at an instruction, this one may call the hook while
//!   the context goes on, and even just after it blocked. Hooks take their
//!   own locks for what they read (Linux's `wq_worker_tick` takes the pool
//!   lock), so this only makes a hook's view a little staler.
//! - Console lines go straight to stdout, not through `println!`, which the
//!   test harness captures and would lose on `exit_machine` or an abort.
//! - A panic in a context, a timer callback or a `call_on_cpu` function is
//!   fatal, as in a kernel: the message goes to stderr and the process aborts.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::thread::{self, ThreadId};
use std::time::Instant;

use crate::harness::{Harness, MemCounters};
use crate::irq::{IrqChip, IrqHandler, TestIrq};
use crate::sync::LockEnv;
use crate::{
    self as port, AtomicContext, CpuMask, CpuTopology, EBUSY, EINVAL, ENOMEM, Error, HotplugHooks, Port, PortTask,
    PortTimer, Priority, Result, SchedHooks, SleepState, SpawnSpec, TaskData, TaskRef, TaskState,
};

/// Period of the simulated scheduler tick: 4 ms, Linux's HZ=250 and the
/// testkernel's tick.
pub const TICK_NS: u64 = 4_000_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(PoisonError::into_inner)
}

fn wait_ns<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>, ns: u64) -> MutexGuard<'a, T> {
    cv.wait_timeout(g, Duration::from_nanos(ns)).unwrap_or_else(PoisonError::into_inner).0
}

/// The payload [`Port::exit_current`] unwinds with (never a real panic).
struct ExitToken;

/// Run `f`; a panic out of it (other than [`ExitToken`]) is fatal.
fn run_or_abort(what: impl FnOnce() -> String, f: impl FnOnce()) {
    let Err(p) = panic::catch_unwind(AssertUnwindSafe(f)) else { return };
    if !p.is::<ExitToken>() {
        let msg = p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str));
        let msg = msg.unwrap_or("(a non-string payload)");
        let _ = writeln!(std::io::stderr().lock(), "kport host: panic in {}: {msg}; aborting", what());
        std::process::abort()
    }
}

/// Port state of one OS thread, whatever context runs on it.
struct ThreadState {
    /// The context record of this thread (created lazily for threads not
    /// spawned through the port).
    current: RefCell<Option<Arc<Ctx>>>,
    irqs_off: Cell<bool>,
    preempt: Cell<u32>,
    irq: Cell<u32>,
    /// The CPU this thread pretends to be while in interrupt context.
    irq_cpu: Cell<Option<usize>>,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        if let Some(c) = self.current.get_mut().take() {
            c.finish();
        }
    }
}

std::thread_local! {
    static TLS: ThreadState = const {
        ThreadState {
            current: RefCell::new(None),
            irqs_off: Cell::new(false),
            preempt: Cell::new(0),
            irq: Cell::new(0),
            irq_cpu: Cell::new(None),
        }
    };
}

/// Run `f` as interrupt context of `cpu` on this thread.
fn as_irq_on(cpu: usize, f: impl FnOnce()) {
    let saved = TLS.with(|t| {
        t.irq.set(t.irq.get() + 1);
        t.irq_cpu.replace(Some(cpu))
    });
    f();
    TLS.with(|t| {
        t.irq.set(t.irq.get() - 1);
        t.irq_cpu.set(saved);
    });
}

/// Run `f` as a hard interrupt of `cpu` on this thread: `f` in interrupt
/// context (a panic out of it is fatal, `what` names it), then
/// [`crate::irq::irq_exit`] with the interrupt depth undone, interrupts
/// off and `cpu` still this thread's CPU.
fn hard_irq_on(cpu: usize, what: &'static str, f: impl FnOnce()) {
    as_irq_on(cpu, || run_or_abort(|| what.into(), f));
    let saved = TLS.with(|t| (t.irq_cpu.replace(Some(cpu)), t.irqs_off.replace(true)));
    run_or_abort(|| format!("irq_exit after {what}"), crate::irq::irq_exit);
    TLS.with(|t| {
        t.irq_cpu.set(saved.0);
        t.irqs_off.set(saved.1);
    });
}

/// Run `f` with preemption disabled on this thread.
fn preempt_off(f: impl FnOnce()) {
    TLS.with(|t| t.preempt.set(t.preempt.get() + 1));
    f();
    TLS.with(|t| t.preempt.set(t.preempt.get() - 1));
}

/// A context's scheduling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Running,
    Sleep(SleepState),
    New,
    Dead,
}

struct CtxState {
    st: St,
    wchan: &'static str,
    entry: Option<Box<dyn FnOnce() + Send>>,
    /// Time spent not blocked before `running_since`.
    run_ns: u64,
    running_since: Option<u64>,
}

/// A context's record; handed out as its [`TaskRef`].
struct Ctx {
    id: usize,
    me: Weak<Ctx>,
    inner: Arc<Inner>,
    spawned: bool,
    worker_hooks: bool,
    /// Released when the context dies (the port contract: it may refer back
    /// to the context's handle).
    data: Mutex<Option<TaskData>>,
    affinity: AtomicU64,
    name: Mutex<String>,
    state: Mutex<CtxState>,
    cv: Condvar,
    switches: AtomicU64,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

impl Ctx {
    /// A spawned context (with `entry`, state New) or the record of a thread
    /// that already runs (without, state Running).
    fn new(
        inner: Arc<Inner>,
        name: String,
        affinity: CpuMask,
        data: Option<TaskData>,
        worker_hooks: bool,
        entry: Option<Box<dyn FnOnce() + Send>>,
    ) -> Arc<Ctx> {
        let spawned = entry.is_some();
        let now = inner.now_ns();
        Arc::new_cyclic(|me| Ctx {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            me: me.clone(),
            inner,
            spawned,
            worker_hooks,
            data: Mutex::new(data),
            affinity: AtomicU64::new(affinity.0),
            name: Mutex::new(name),
            state: Mutex::new(CtxState {
                st: if spawned { St::New } else { St::Running },
                wchan: "",
                entry,
                run_ns: 0,
                running_since: (!spawned).then_some(now),
            }),
            cv: Condvar::new(),
            switches: AtomicU64::new(u64::from(!spawned)),
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, CtxState> {
        lock(&self.state)
    }

    fn stop_clock(&self, g: &mut CtxState) {
        if let Some(s) = g.running_since.take() {
            g.run_ns += self.inner.now_ns().saturating_sub(s);
        }
    }

    fn start_clock(&self, g: &mut CtxState) {
        g.running_since = Some(self.inner.now_ns());
        self.switches.fetch_add(1, Ordering::Relaxed);
    }

    /// Wake it if it sleeps in a state `parked` selects (or, unless
    /// `parked`, was never started).
    fn wake_if(&self, parked: bool) -> bool {
        let mut g = self.lock_state();
        let entry = match (g.st, parked) {
            (St::New, false) => g.entry.take(),
            (St::Sleep(SleepState::Parked), true)
            | (St::Sleep(SleepState::Interruptible | SleepState::Uninterruptible | SleepState::Idle), false) => None,
            _ => return false,
        };
        g.st = St::Running;
        drop(g);
        self.cv.notify_all();
        if let Some(entry) = entry {
            self.start(entry);
        }
        true
    }

    /// Give the context its thread.
    fn start(&self, entry: Box<dyn FnOnce() + Send>) {
        let me = self.me.upgrade().expect("kport host: waking a dropped context");
        let name = lock(&self.name).replace('\0', "");
        thread::Builder::new()
            .name(name.clone())
            .spawn(move || context_main(me, entry))
            .unwrap_or_else(|e| panic!("kport host: cannot create the thread of context '{name}': {e}"));
    }

    /// Mark it dead (idempotent).
    fn finish(&self) {
        let mut g = self.lock_state();
        if g.st != St::Dead {
            self.stop_clock(&mut g);
            g.st = St::Dead;
            g.wchan = "";
        }
        drop(g);
        self.cv.notify_all();
        drop(lock(&self.data).take());
    }
}

/// Body of a context's thread.
fn context_main(me: Arc<Ctx>, entry: Box<dyn FnOnce() + Send>) {
    me.start_clock(&mut me.lock_state());
    TLS.with(|t| *t.current.borrow_mut() = Some(me.clone()));
    run_or_abort(|| format!("context '{}'", lock(&me.name)), entry);
    me.finish();
}

impl PortTask for Ctx {
    fn id(&self) -> usize {
        self.id
    }
    fn wake(&self) -> bool {
        self.wake_if(false)
    }
    fn wake_parked(&self) -> bool {
        self.wake_if(true)
    }
    fn state(&self) -> TaskState {
        match self.lock_state().st {
            St::Running => TaskState::Running,
            St::Sleep(s) => s.task_state(),
            St::New => TaskState::New,
            St::Dead => TaskState::Dead,
        }
    }
    fn is_running(&self) -> bool {
        // The clock runs exactly while the thread is not blocked in its wait.
        let g = self.lock_state();
        g.running_since.is_some() && !matches!(g.st, St::Dead | St::New)
    }
    fn cpu(&self) -> usize {
        self.inner.cpu_for(self.affinity.load(Ordering::Acquire))
    }
    fn affinity(&self) -> CpuMask {
        CpuMask(self.affinity.load(Ordering::Acquire))
    }
    fn set_affinity(&self, mask: CpuMask) -> Result<()> {
        if mask.0 & self.inner.present() == 0 {
            return Err(Error::new(EINVAL));
        }
        self.affinity.store(mask.0, Ordering::Release);
        Ok(())
    }
    /// No effect: the OS schedules the threads.
    fn set_priority(&self, _prio: Priority) {}
    fn name(&self) -> String {
        lock(&self.name).clone()
    }
    fn set_name(&self, name: &str) {
        *lock(&self.name) = name.to_string();
    }
    /// Wall time spent started and not blocked in `schedule` (a thread's own
    /// CPU clock needs `libc`).
    fn cpu_time_ns(&self) -> u64 {
        let g = self.lock_state();
        g.run_ns + g.running_since.map_or(0, |s| self.inner.now_ns().saturating_sub(s))
    }
    /// Times it started or resumed after blocking.
    fn nr_switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }
    fn wait_channel(&self) -> &'static str {
        self.lock_state().wchan
    }
    fn data(&self) -> Option<TaskData> {
        lock(&self.data).clone()
    }
}

/// The calling thread's record, created with `inner` if it has none.
fn current_ctx(inner: &Arc<Inner>) -> Arc<Ctx> {
    TLS.with(|t| {
        if let Some(c) = &*t.current.borrow() {
            return c.clone();
        }
        let name = thread::current().name().unwrap_or("thread").to_string();
        let c = Ctx::new(inner.clone(), name, CpuMask::ALL, None, false, None);
        *t.current.borrow_mut() = Some(c.clone());
        c
    })
}

/// A port's armed timers by (deadline, arming number): the first one fires
/// next. Locked before a timer's own state when both are.
struct Wheel {
    armed: BTreeMap<(u64, u64), Arc<TimerInner>>,
    armings: u64,
    thread: Option<ThreadId>,
}

struct TimerState {
    /// Its key in the wheel while pending.
    key: Option<(u64, u64)>,
    cpu: usize,
    running: bool,
}

struct TimerInner {
    cb: Arc<dyn Fn() + Send + Sync>,
    st: Mutex<TimerState>,
    done: Condvar,
}

/// A timer of the host port. Dropping it does not disarm it (as on the
/// testkernel): cancel it first.
struct HostTimer {
    t: Arc<TimerInner>,
    inner: Arc<Inner>,
}

/// Take a timer out of the wheel; true if it was pending.
fn disarm(w: &mut Wheel, s: &mut TimerState) -> bool {
    s.key.take().is_some_and(|k| w.armed.remove(&k).is_some())
}

impl PortTimer for HostTimer {
    fn arm(&self, deadline_ns: u64, cpu: Option<usize>) {
        let cpu = match cpu {
            Some(c) if c < self.inner.cpus => c,
            _ => self.inner.cpu_here(),
        };
        let mut w = lock(&self.inner.wheel);
        let mut s = lock(&self.t.st);
        disarm(&mut w, &mut s);
        w.armings += 1;
        let key = (deadline_ns, w.armings);
        w.armed.insert(key, self.t.clone());
        (s.key, s.cpu) = (Some(key), cpu);
        drop(s);
        if w.thread.is_none() {
            let inner = self.inner.clone();
            let h = thread::Builder::new()
                .name("host-timer".into())
                .spawn(move || timer_thread(inner))
                .expect("kport host: cannot create the timer thread");
            w.thread = Some(h.thread().id());
        }
        drop(w);
        self.inner.wheel_cv.notify_all();
    }

    fn cancel(&self) -> bool {
        let mut w = lock(&self.inner.wheel);
        disarm(&mut w, &mut lock(&self.t.st))
    }

    fn cancel_sync(&self) -> bool {
        let was = self.cancel();
        // On the timer thread no other callback can be running (there is one
        // timer thread), and waiting for our own would deadlock.
        if lock(&self.inner.wheel).thread != Some(thread::current().id()) {
            let mut s = lock(&self.t.st);
            while s.running {
                s = wait(&self.t.done, s);
            }
        }
        was
    }

    fn is_pending(&self) -> bool {
        lock(&self.t.st).key.is_some()
    }
}

/// The simulated scheduler tick (see the module documentation): every
/// [`TICK_NS`], [`SchedHooks::tick`] for each worker-hooks context that is
/// running, in interrupt context on its CPU. Ticks missed while the thread
/// was held up are dropped, as a CPU that was busy takes one interrupt.
fn tick_thread(inner: Arc<Inner>, hooks: &'static dyn SchedHooks) {
    let mut next = inner.now_ns() + TICK_NS;
    loop {
        let now = inner.now_ns();
        if now < next {
            thread::sleep(Duration::from_nanos(next - now));
        }
        let woke = inner.now_ns();
        next += TICK_NS;
        if next <= woke {
            next = woke + TICK_NS;
        }
        let running: Vec<(usize, TaskData)> = {
            let mut workers = lock(&inner.workers);
            workers.retain(|w| w.upgrade().is_some_and(|c| c.lock_state().st != St::Dead));
            workers
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|c| c.is_running())
                .filter_map(|c| Some((c.cpu(), lock(&c.data).clone()?)))
                .collect()
        };
        for (cpu, data) in running {
            hard_irq_on(cpu, "the tick hook", || hooks.tick(&data));
        }
    }
}

/// The timer thread: fire expired timers, in interrupt context.
fn timer_thread(inner: Arc<Inner>) {
    let mut w = lock(&inner.wheel);
    loop {
        let now = inner.now_ns();
        match w.armed.first_key_value().map(|(k, _)| k.0) {
            None => w = wait(&inner.wheel_cv, w),
            Some(d) if d > now => w = wait_ns(&inner.wheel_cv, w, d - now),
            Some(_) => {
                let Some((_, t)) = w.armed.pop_first() else { continue };
                let cpu = {
                    let mut s = lock(&t.st);
                    (s.key, s.running) = (None, true);
                    s.cpu
                };
                drop(w);
                hard_irq_on(cpu, "a timer callback", || {
                    (t.cb)();
                    lock(&t.st).running = false;
                    t.done.notify_all();
                });
                w = lock(&inner.wheel);
            }
        }
    }
}

/// Lines of the simulated interrupt controller unless
/// [`HostPort::with_irq_lines`] says otherwise (the ISA bus's 16).
pub const IRQ_LINES: u32 = 16;
/// The line the harness's test interrupt fires.
pub const TEST_IRQ_LINE: u32 = 0;

/// One simulated line's state.
struct IrqLineState {
    handler: Option<&'static dyn IrqHandler>,
    masked: bool,
    /// Fired while masked (delivered once at unmask).
    held: bool,
    /// Helper threads running the handler now.
    running: u32,
    /// The CPU whose helper thread runs the handler.
    cpu: usize,
}

struct IrqLine {
    st: Mutex<IrqLineState>,
    /// Signalled when a handler run ends (for `detach`).
    idle: Condvar,
    /// Handler runs per CPU.
    counts: [AtomicU64; port::MAX_CPUS],
    describe: &'static str,
}

/// The host port's simulated interrupt controller (the port's
/// `irq_chip`): lines that fire when [`HostIrqChip::fire`] says so. A fired
/// line's handler runs on its CPU's `call_on_cpu` helper thread, as a hard
/// interrupt (interrupt context, then `irq_exit`). Fired while masked, a
/// line holds the firing, as an asserted level line would; the firings held
/// run the handler once at unmask. Fired without a handler, it is lost.
pub struct HostIrqChip {
    inner: Arc<Inner>,
    /// Shared with the deliveries queued on helper threads.
    lines: Arc<[IrqLine]>,
}

impl HostIrqChip {
    fn new(inner: Arc<Inner>, nr: u32) -> &'static HostIrqChip {
        let lines: Arc<[IrqLine]> = (0..nr)
            .map(|irq| IrqLine {
                st: Mutex::new(IrqLineState { handler: None, masked: false, held: false, running: 0, cpu: 0 }),
                idle: Condvar::new(),
                counts: [const { AtomicU64::new(0) }; port::MAX_CPUS],
                describe: Box::leak(format!("host-sim {irq}-level").into_boxed_str()),
            })
            .collect();
        Box::leak(Box::new(HostIrqChip { inner, lines }))
    }

    fn line(&self, irq: u32) -> Option<&IrqLine> {
        self.lines.get(irq as usize)
    }

    /// Raise line `irq` once (the device side): its handler runs soon on
    /// the line's CPU, or once at unmask if the line is masked meanwhile.
    ///
    /// Context: any.
    pub fn fire(&self, irq: u32) {
        let Some(l) = self.line(irq) else { return };
        let mut st = lock(&l.st);
        if st.handler.is_none() {
            return;
        }
        if st.masked {
            st.held = true;
            return;
        }
        let cpu = st.cpu;
        drop(st);
        self.deliver(irq, cpu);
    }

    /// Deliver line `irq` to `cpu`'s helper thread.
    fn deliver(&self, irq: u32, cpu: usize) {
        let lines = self.lines.clone();
        let job: Job = Box::new(move || Self::run(&lines[irq as usize], irq));
        self.inner.ipi_queue(cpu).send(job).expect("kport host: a helper thread is gone");
    }

    /// On the helper thread, in interrupt context: run the handler, unless
    /// the line was masked (held) or detached (lost) since it fired.
    fn run(l: &IrqLine, irq: u32) {
        let mut st = lock(&l.st);
        let Some(h) = st.handler else { return };
        if st.masked {
            st.held = true;
            return;
        }
        st.running += 1;
        let cpu = st.cpu;
        drop(st);
        l.counts[cpu].fetch_add(1, Ordering::Relaxed);
        h.handle(irq);
        lock(&l.st).running -= 1;
        l.idle.notify_all();
    }

    /// Deliver line `irq` to `cpu` from now on (default: CPU 0).
    pub fn set_cpu(&self, irq: u32, cpu: usize) {
        if let Some(l) = self.line(irq)
            && cpu < self.inner.cpus
        {
            lock(&l.st).cpu = cpu;
        }
    }
}

impl IrqChip for HostIrqChip {
    fn nr_irqs(&self) -> u32 {
        self.lines.len() as u32
    }

    fn attach(&self, irq: u32, handler: &'static dyn IrqHandler) -> Result<()> {
        let l = self.line(irq).ok_or(Error::new(EINVAL))?;
        let mut st = lock(&l.st);
        if st.handler.is_some() {
            return Err(Error::new(EBUSY));
        }
        (st.handler, st.masked, st.held) = (Some(handler), false, false);
        Ok(())
    }

    fn detach(&self, irq: u32) {
        crate::might_sleep();
        let Some(l) = self.line(irq) else { return };
        let mut st = lock(&l.st);
        (st.handler, st.masked, st.held) = (None, false, false);
        while st.running != 0 {
            st = wait(&l.idle, st);
        }
    }

    fn mask(&self, irq: u32) {
        if let Some(l) = self.line(irq) {
            lock(&l.st).masked = true;
        }
    }

    fn unmask(&self, irq: u32) {
        let Some(l) = self.line(irq) else { return };
        let mut st = lock(&l.st);
        st.masked = false;
        if core::mem::take(&mut st.held) && st.handler.is_some() {
            let cpu = st.cpu;
            drop(st);
            self.deliver(irq, cpu);
        }
    }

    fn describe(&self, irq: u32) -> &'static str {
        self.line(irq).map_or("none", |l| l.describe)
    }

    fn count(&self, irq: u32, cpu: usize) -> u64 {
        match self.line(irq) {
            Some(l) if cpu < port::MAX_CPUS => l.counts[cpu].load(Ordering::Relaxed),
            _ => 0,
        }
    }
}

/// The harness's test interrupt on the host: fires [`TEST_IRQ_LINE`].
struct HostTestIrq(&'static HostIrqChip);

impl TestIrq for HostTestIrq {
    fn line(&self) -> u32 {
        TEST_IRQ_LINE
    }
    fn fire(&self) {
        self.0.fire(TEST_IRQ_LINE);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Everything a port and its contexts, timers and helper threads share.
struct Inner {
    epoch: Instant,
    cpus: usize,
    online: AtomicU64,
    spawn_failures: AtomicUsize,
    sched_hooks: OnceLock<&'static dyn SchedHooks>,
    /// The contexts spawned with `worker_hooks`, for the tick thread (dead
    /// ones are dropped at each tick).
    workers: Mutex<Vec<Weak<Ctx>>>,
    /// Each CPU's topology (empty: [`CpuTopology::alone`]).
    topology: Vec<CpuTopology>,
    hotplug: Mutex<Vec<&'static dyn HotplugHooks>>,
    hotplug_op: Mutex<()>,
    wheel: Mutex<Wheel>,
    wheel_cv: Condvar,
    /// Per-CPU queue of the `call_on_cpu` helper thread (started lazily).
    ipi: Vec<Mutex<Option<mpsc::Sender<Job>>>>,
}

impl Inner {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn present(&self) -> u64 {
        CpuMask::first(self.cpus).0
    }

    /// The CPU a context with `affinity` runs on.
    fn cpu_for(&self, affinity: u64) -> usize {
        let aff = affinity & self.present();
        let online = aff & self.online.load(Ordering::Acquire);
        let m = if online != 0 { online } else { aff };
        CpuMask(m).first_cpu().unwrap_or(0)
    }

    /// The calling thread's CPU.
    fn cpu_here(self: &Arc<Self>) -> usize {
        TLS.with(|t| t.irq_cpu.get())
            .unwrap_or_else(|| self.cpu_for(current_ctx(self).affinity.load(Ordering::Acquire)))
    }

    /// The queue of `cpu`'s helper thread.
    fn ipi_queue(&self, cpu: usize) -> mpsc::Sender<Job> {
        let mut q = lock(&self.ipi[cpu]);
        q.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            thread::Builder::new()
                .name(format!("host-ipi/{cpu}"))
                .spawn(move || {
                    for job in rx {
                        hard_irq_on(cpu, "a call_on_cpu function or device interrupt", job);
                    }
                })
                .expect("kport host: cannot create a call_on_cpu thread");
            tx
        })
        .clone()
    }
}

/// [`Port`] on std threads with a configurable number of virtual CPUs. A
/// port and its threads live as long as the process (its timer and helper
/// threads never end).
pub struct HostPort {
    inner: Arc<Inner>,
    /// The simulated interrupt controller (leaked: it lives as long as the
    /// port's helper threads, which never end).
    irqs: &'static HostIrqChip,
    /// The harness's test interrupt (leaked with the controller).
    test_irq: &'static HostTestIrq,
}

impl HostPort {
    /// A port with `cpus` virtual CPUs, all online (1 to
    /// [`port::MAX_CPUS`]), each a core and a cache of its own in package 0,
    /// node 0 ([`CpuTopology::alone`]).
    pub fn new(cpus: usize) -> Self {
        Self::build(cpus, Vec::new())
    }

    /// A port with one virtual CPU per entry of `topology` (1 to
    /// [`port::MAX_CPUS`]), all online, CPU n where `topology[n]` says
    /// ([`CpuTopology::symmetric`] makes regular machines).
    pub fn with_topology(topology: Vec<CpuTopology>) -> Self {
        Self::build(topology.len(), topology)
    }

    fn build(cpus: usize, topology: Vec<CpuTopology>) -> Self {
        assert!((1..=port::MAX_CPUS).contains(&cpus), "kport host: {cpus} CPUs (1 to {} allowed)", port::MAX_CPUS);
        let inner = Arc::new(Inner {
            epoch: Instant::now(),
            cpus,
            online: AtomicU64::new(CpuMask::first(cpus).0),
            spawn_failures: AtomicUsize::new(0),
            sched_hooks: OnceLock::new(),
            workers: Mutex::new(Vec::new()),
            topology,
            hotplug: Mutex::new(Vec::new()),
            hotplug_op: Mutex::new(()),
            wheel: Mutex::new(Wheel { armed: BTreeMap::new(), armings: 0, thread: None }),
            wheel_cv: Condvar::new(),
            ipi: (0..cpus).map(|_| Mutex::new(None)).collect(),
        });
        let (irqs, test_irq) = Self::irq_chip_of(&inner, IRQ_LINES);
        HostPort { inner, irqs, test_irq }
    }

    fn irq_chip_of(inner: &Arc<Inner>, lines: u32) -> (&'static HostIrqChip, &'static HostTestIrq) {
        let chip = HostIrqChip::new(inner.clone(), lines);
        (chip, Box::leak(Box::new(HostTestIrq(chip))))
    }

    /// The same port with a simulated interrupt controller of `lines`
    /// lines (1 or more; [`IRQ_LINES`] by default).
    pub fn with_irq_lines(mut self, lines: u32) -> Self {
        assert!(lines > TEST_IRQ_LINE, "kport host: {lines} interrupt lines (the test line is {TEST_IRQ_LINE})");
        (self.irqs, self.test_irq) = Self::irq_chip_of(&self.inner, lines);
        self
    }

    /// The simulated interrupt controller, to fire lines from host tests.
    pub fn irqs(&self) -> &'static HostIrqChip {
        self.irqs
    }

    fn cur(&self) -> Arc<Ctx> {
        current_ctx(&self.inner)
    }

    /// Panic as Linux's `might_sleep` does if the caller may not sleep.
    fn might_sleep(&self, what: &str) {
        let (irqs_off, preempt, irq) = TLS.with(|t| (t.irqs_off.get(), t.preempt.get(), t.irq.get()));
        if irqs_off || preempt != 0 || irq != 0 {
            panic!(
                "BUG: sleeping function called from invalid context: {what} with preempt_count={preempt}, in_irq={}, irqs_disabled={irqs_off}",
                irq != 0
            );
        }
    }

    /// `schedule` and `schedule_until`: block while in the announced sleep
    /// state, up to `deadline`. True if the deadline passed.
    fn block(&self, deadline: Option<u64>) -> bool {
        self.might_sleep(if deadline.is_some() { "schedule_until" } else { "schedule" });
        let inner = &self.inner;
        let passed = |now: u64| deadline.is_some_and(|d| now >= d);
        let me = self.cur();
        {
            let mut g = me.lock_state();
            if passed(inner.now_ns()) {
                g.st = St::Running;
                return true;
            }
            if g.st == St::Running {
                drop(g);
                thread::yield_now();
                return passed(inner.now_ns());
            }
        }
        // The hooks run without the record's lock (they may wake others). A
        // wake-up that comes meanwhile makes the wait below return at once:
        // the hooks still come in pairs.
        let data = lock(&me.data).clone();
        let hooks = match (me.worker_hooks, inner.sched_hooks.get(), data.as_ref()) {
            (true, Some(h), Some(d)) => Some((*h, d)),
            _ => None,
        };
        if let Some((h, d)) = hooks {
            preempt_off(|| h.sleeping(d));
        }
        {
            let mut g = me.lock_state();
            me.stop_clock(&mut g);
            while let St::Sleep(_) = g.st {
                match deadline {
                    None => g = wait(&me.cv, g),
                    Some(d) => {
                        let now = inner.now_ns();
                        if now >= d {
                            g.st = St::Running;
                            break;
                        }
                        g = wait_ns(&me.cv, g, d - now);
                    }
                }
            }
            me.start_clock(&mut g);
        }
        if let Some((h, d)) = hooks {
            preempt_off(|| h.running(d));
        }
        passed(inner.now_ns())
    }
}

/// Install a [`HostPort`] with `cpus` virtual CPUs as the port of the
/// process and return it. Idempotent: later calls return the first port,
/// whatever their `cpus`.
pub fn install_host_port(cpus: usize) -> &'static HostPort {
    static INSTALLED: OnceLock<&'static HostPort> = OnceLock::new();
    let p: &'static HostPort = INSTALLED.get_or_init(|| Box::leak(Box::new(HostPort::new(cpus))));
    port::install(p);
    crate::harness::install(p);
    crate::context::scheduling_started();
    static ENV: OnceLock<HostLockEnv> = OnceLock::new();
    crate::sync::set_lock_env(ENV.get_or_init(|| HostLockEnv(p)));
    p
}

impl Port for HostPort {
    fn name(&self) -> &'static str {
        "host"
    }

    fn spawn(&self, spec: SpawnSpec) -> Result<TaskRef> {
        if self.inner.spawn_failures.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
            return Err(Error::new(ENOMEM));
        }
        if spec.affinity.0 & self.inner.present() == 0 {
            return Err(Error::new(EINVAL));
        }
        let inner = self.inner.clone();
        let ctx = Ctx::new(inner, spec.name, spec.affinity, spec.data, spec.worker_hooks, Some(spec.entry));
        if spec.worker_hooks {
            lock(&self.inner.workers).push(Arc::downgrade(&ctx));
        }
        Ok(ctx)
    }

    fn current(&self) -> TaskRef {
        self.cur()
    }

    fn current_id(&self) -> usize {
        self.cur().id
    }

    fn current_data(&self) -> Option<TaskData> {
        lock(&self.cur().data).clone()
    }

    fn set_current_state(&self, state: SleepState, wchan: &'static str) {
        let me = self.cur();
        let mut g = me.lock_state();
        g.st = St::Sleep(state);
        g.wchan = wchan;
    }

    fn set_current_running(&self) {
        let me = self.cur();
        let mut g = me.lock_state();
        g.st = St::Running;
        g.wchan = "";
    }

    fn schedule(&self) {
        self.block(None);
    }

    fn schedule_until(&self, deadline_ns: u64) -> bool {
        self.block(Some(deadline_ns))
    }

    fn yield_now(&self) {
        thread::yield_now();
    }

    /// Nothing to do: the OS preempts the threads anyway.
    fn cond_resched(&self) {}

    /// With unwinding (test builds) it unwinds, silently, to the thread's
    /// entry wrapper, which marks the context dead and ends the thread.
    /// Without, no safe code can end a thread early: the context is marked
    /// dead and its thread parks for ever. Panics outside a spawned context.
    fn exit_current(&self) -> ! {
        let me = self.cur();
        assert!(me.spawned && !self.in_irq(), "kport host: exit_current outside a context spawned through the port");
        #[cfg(panic = "unwind")]
        panic::resume_unwind(Box::new(ExitToken));
        #[cfg(not(panic = "unwind"))]
        {
            me.finish();
            loop {
                thread::park();
            }
        }
    }

    fn cpu_id(&self) -> usize {
        self.inner.cpu_here()
    }

    fn cpu_count(&self) -> usize {
        self.inner.cpus
    }

    fn online_mask(&self) -> CpuMask {
        CpuMask(self.inner.online.load(Ordering::Acquire))
    }

    /// The topology given to [`HostPort::with_topology`], else the default.
    fn cpu_topology(&self, cpu: usize) -> CpuTopology {
        self.inner.topology.get(cpu).copied().unwrap_or(CpuTopology::alone(cpu))
    }

    /// On another CPU, `f` runs on that CPU's helper thread in interrupt
    /// context; on the calling CPU it runs at once with interrupts off (as
    /// Linux's `smp_call_function_single` and the testkernel do).
    fn call_on_cpu(&self, cpu: usize, f: Box<dyn FnOnce() + Send>, wait: bool) -> Result<()> {
        if cpu >= self.inner.cpus {
            return Err(Error::new(EINVAL));
        }
        if cpu == self.cpu_id() {
            let was = self.irq_save();
            f();
            self.irq_restore(was);
            return Ok(());
        }
        let (done_tx, done_rx) = mpsc::sync_channel::<()>(1);
        let job: Job = Box::new(move || {
            f();
            let _ = done_tx.send(());
        });
        self.inner.ipi_queue(cpu).send(job).expect("kport host: a call_on_cpu thread is gone");
        if wait {
            let _ = done_rx.recv();
        }
        Ok(())
    }

    fn irq_save(&self) -> bool {
        !TLS.with(|t| t.irqs_off.replace(true))
    }

    fn irq_restore(&self, was_enabled: bool) {
        TLS.with(|t| t.irqs_off.set(!was_enabled));
    }

    fn preempt_disable(&self) {
        TLS.with(|t| t.preempt.set(t.preempt.get() + 1));
    }

    fn preempt_enable(&self) {
        TLS.with(|t| {
            let n = t.preempt.get().checked_sub(1).expect("kport host: preempt_enable without preempt_disable");
            t.preempt.set(n);
        });
    }

    fn atomic_context(&self) -> AtomicContext {
        TLS.with(|t| AtomicContext {
            preempt_count: t.preempt.get(),
            irqs_disabled: t.irqs_off.get(),
            hardirq: t.irq.get() != 0,
            softirq: false,
        })
    }

    /// A word per OS thread (= per context here), leaked once per thread:
    /// contexts sharing a virtual CPU run at once on the host.
    fn bh_word(&self) -> &'static core::sync::atomic::AtomicU32 {
        std::thread_local! {
            static BH: &'static core::sync::atomic::AtomicU32 =
                Box::leak(Box::new(core::sync::atomic::AtomicU32::new(0)));
        }
        BH.with(|w| *w)
    }

    /// The simulated controller ([`HostIrqChip`]).
    fn irq_chip(&self) -> Option<&'static dyn IrqChip> {
        Some(self.irqs)
    }

    /// A word per OS thread (= per context here), leaked once per thread.
    fn lock_ranks(&self) -> Option<&'static core::sync::atomic::AtomicU32> {
        std::thread_local! {
            static RANKS: &'static core::sync::atomic::AtomicU32 =
                Box::leak(Box::new(core::sync::atomic::AtomicU32::new(0)));
        }
        Some(RANKS.with(|r| *r))
    }

    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }

    /// The same as [`Port::now_ns`].
    fn cycles(&self) -> u64 {
        self.inner.now_ns()
    }

    /// Identity: a cycle is a nanosecond here.
    fn cycles_to_ns(&self, cycles: u64) -> u64 {
        cycles
    }

    fn timer(&self, callback: Arc<dyn Fn() + Send + Sync>) -> Box<dyn PortTimer> {
        let st = TimerState { key: None, cpu: 0, running: false };
        let t = Arc::new(TimerInner { cb: callback, st: Mutex::new(st), done: Condvar::new() });
        Box::new(HostTimer { t, inner: self.inner.clone() })
    }

    /// The first registration wins; later ones are ignored. It starts the
    /// simulated tick (see the module documentation).
    fn set_sched_hooks(&self, hooks: &'static dyn SchedHooks) {
        if self.inner.sched_hooks.set(hooks).is_ok() {
            let inner = self.inner.clone();
            thread::Builder::new()
                .name("host-tick".into())
                .spawn(move || tick_thread(inner, hooks))
                .expect("kport host: cannot create the tick thread");
        }
    }

    fn add_hotplug_hooks(&self, hooks: &'static dyn HotplugHooks) {
        lock(&self.inner.hotplug).push(hooks);
    }

    /// Straight to stdout (not captured by the test harness).
    fn console_line(&self, line: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }

    /// A `std::backtrace` of the calling thread, to stderr.
    fn dump_stack(&self) {
        let bt = std::backtrace::Backtrace::force_capture();
        let _ = writeln!(std::io::stderr().lock(), "kport host: stack of '{}':\n{bt}", lock(&self.cur().name));
    }
}

impl Harness for HostPort {
    /// `std::process::exit` with 0 (pass) or 1 (fail).
    fn exit_machine(&self, pass: bool) -> ! {
        let _ = std::io::stdout().flush();
        std::process::exit(if pass { 0 } else { 1 })
    }

    /// All zero: the host has no frame allocator, and the heap is the
    /// process's (counting it would need a global allocator, which a library
    /// must not impose). Leak checks on these counters are vacuous here.
    fn mem_counters(&self) -> MemCounters {
        MemCounters::default()
    }

    fn inject_spawn_failures(&self, n: usize) {
        self.inner.spawn_failures.store(n, Ordering::Release);
    }

    fn cpu_down(&self, cpu: usize) -> Result<()> {
        let _op = lock(&self.inner.hotplug_op);
        let online = self.inner.online.load(Ordering::Acquire);
        if cpu >= self.inner.cpus || online & (1 << cpu) == 0 || online.count_ones() < 2 {
            return Err(Error::new(EINVAL));
        }
        let hooks = lock(&self.inner.hotplug).clone();
        // Reverse registration order, as Linux parks smpboot threads.
        for h in hooks.iter().rev() {
            h.cpu_going_down(cpu);
        }
        self.inner.online.fetch_and(!(1 << cpu), Ordering::AcqRel);
        for h in hooks.iter().rev() {
            h.cpu_dead(cpu);
        }
        Ok(())
    }

    /// Line [`TEST_IRQ_LINE`] of the simulated controller.
    fn test_irq(&self) -> Option<&'static dyn TestIrq> {
        Some(self.test_irq)
    }

    fn cpu_up(&self, cpu: usize) -> Result<()> {
        let _op = lock(&self.inner.hotplug_op);
        if cpu >= self.inner.cpus || self.inner.online.load(Ordering::Acquire) & (1 << cpu) != 0 {
            return Err(Error::new(EINVAL));
        }
        self.inner.online.fetch_or(1 << cpu, Ordering::AcqRel);
        let hooks = lock(&self.inner.hotplug).clone();
        for h in &hooks {
            h.cpu_came_up(cpu);
        }
        Ok(())
    }
}

/// The host's lock environment: the port's clock, stderr for warnings.
struct HostLockEnv(&'static HostPort);

impl LockEnv for HostLockEnv {
    fn now_ns(&self) -> u64 {
        self.0.inner.now_ns()
    }
    fn cpu_id(&self) -> usize {
        self.0.inner.cpu_here()
    }
    fn emergency_line(&self, line: core::fmt::Arguments<'_>) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
    fn dump_stack(&self) {
        self.0.dump_stack();
    }
}
