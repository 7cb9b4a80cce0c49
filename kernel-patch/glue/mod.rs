//! Kernel threads with Linux's semantics (`kthreadd`, stop, park, bind, `kthread_worker`,
//! per-CPU threads) and concurrency-managed workqueues for Redox, from the kthreadd project's
//! `kthreadd` and `workqueue` crates, over the port in [`port`].
//!
//! These files live in the kthreadd project (`kernel-patch/glue/`); the kernel recipe copies
//! the project to `subsys/kthreads/` and `src/main.rs` includes this module from there with
//! `#[path]`. The patch series adds only the hook lines in Redox's own files:
//!
//! * [`init`] (in `kmain`) calibrates the port clock, installs the port, starts `[kthreadd]` and
//!   a short-lived `[kthread-boot]` context that waits for every CPU and starts the workqueues
//!   (`workqueue::init`: per-CPU pools with their `[kworker/N:M]` workers, the system queues; it
//!   sleeps, so it cannot run in `kmain`). With the `ktests` feature that context then runs the
//!   shipped suites (see `ktests.rs`).
//! * An application processor takes kernel-thread work from its first `switch()` on (see
//!   [`switch_enter`]; Redox's `kmain_ap` needs no hook).
//! * Hooks in `context::switch`: [`switch_enter`] at its top, [`switching_to`] where it makes the
//!   next context current, [`switch_leave`] on both of its ways back to the caller (the
//!   workqueue's worker-sleeping / worker-running callbacks, and moving a context whose affinity
//!   no longer includes its CPU); [`tick`] (port timers, the workqueue's tick callback); [`ipi`]
//!   (calls sent with `call_on_cpu`).
//! * Interrupts end with the bottom-half layer's exit hook ([`interrupt_exit`] in every
//!   `interrupt!` handler, [`irq_exit`] in `generic_irq` and the tick); `generic_irq` asks
//!   [`irq_dispatch`] for kernel handlers before the `irq:` scheme, and Redox's deliveries to
//!   that scheme go through [`irq_deliver`] (`irq.rs`).
//! * `sys:softirqs` and `sys:interrupts` ([`sys_softirqs`], [`sys_interrupts`]).
//! * Each CPU reads its topology with CPUID as it starts taking work (`topology.rs`).
//! * `sys:kthread` lists the kernel threads ([`sys_resource`]).
//! * Redox's kill path (the `proc:` scheme's stop, continue, interrupt and kill verbs on a context
//!   handle) asks [`signal_from_user`] first: a kernel thread cannot be signalled or killed
//!   from user space.
//!
//! Every hook takes the caller's `CleanLockToken`; how port calls, which have none in their
//! signatures, get one is in `token.rs`.
//!
//! Redox runs kernel code with interrupts off and never preempts it. A kernel thread keeps its
//! CPU until it blocks or reaches a yield point (`schedule`, `yield_now`, `cond_resched`); each
//! yield point opens a short interrupt window so that the PIT tick and IPIs that arrived
//! meanwhile are taken there. `preempt_disable` is therefore only a per-CPU count checked by
//! the might-sleep test, and `irq_save` reads and clears IF like Linux's.

use alloc::{boxed::Box, collections::VecDeque, sync::Arc, vec::Vec};
use core::{
    cell::{Cell, RefCell},
    sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering},
};

// The subsystem's API (the only lines to adapt when its crates change).
#[cfg(feature = "ktests")]
use kport::harness;
use kport::{
    context::scheduling_started,
    install, installed,
    sync::{Completion, WaitQueue},
    CpuMask, CpuTopology, Error, Port as _, Priority, Result, SpawnSpec, EINVAL, EPERM, ESRCH,
};
use kthreadd::{kthread, registry};
use spin::{Mutex, Once};

use crate::{
    arch::interrupt,
    context::{self, wakeup_context, ArcContextLockWriteGuard, Context, ContextLock},
    percpu::{PercpuBlock, ALL_PERCPU_BLOCKS},
    sync::CleanLockToken,
};

pub mod bus;
mod clock;
pub mod irq;
pub mod kblk;
#[cfg(feature = "ktests")]
pub mod ktests;
pub mod mm;
pub mod port;
mod timer;
mod token;
mod topology;

pub use irq::{interrupt_exit, irq_deliver, irq_dispatch, irq_exit, sys_interrupts, sys_softirqs};
pub use port::Task;
pub use token::lend;

/// Lowest kernel address: frame pointers below it end a backtrace.
const KERNEL_HALF: usize = 0xFFFF_8000_0000_0000;

/// Longest wait at boot for the application processors to reach `kmain_ap` (ms).
const AP_WAIT_MS: u64 = 5_000;

/// A function sent to a CPU with `call_on_cpu`.
pub struct Call {
    f: Box<dyn FnOnce() + Send>,
    done: Option<Arc<Completion>>,
}

/// The kernel-thread port's per-CPU state (`PercpuBlock::kthread`).
pub struct KthreadPercpu {
    /// `preempt_disable` nesting (only this CPU touches it, with interrupts off).
    preempt: Cell<u32>,
    /// `irq_save` nesting: the subsystem's own interrupts-off sections.
    irq_off: Cell<u32>,
    /// Interrupt-context nesting: timer callbacks and IPI calls.
    irq: Cell<u32>,
    /// A lock token lent by the Redox hook running on this CPU (`token.rs`).
    lent: Cell<token::Slot>,
    /// The port record of the context running on this CPU, set by [`switching_to`].
    current: RefCell<Option<Arc<Task>>>,
    /// Armed port timers, earliest first (any CPU arms them).
    timers: Mutex<timer::TimerMap>,
    /// No armed timer here is due before this port-clock time (`u64::MAX`: none armed): lowered
    /// by every arm and set exactly by `timer::run_expired`, both under `timers`' lock, and read
    /// without it by the yield points, which skip the timer map while nothing is due.
    timer_next: AtomicU64,
    /// Calls sent here by `call_on_cpu`.
    calls: Mutex<VecDeque<Call>>,
    /// Contexts that switched out of this CPU to move elsewhere, woken once the switch is over.
    migrating: Mutex<Vec<Arc<ContextLock>>>,
    /// This CPU's idle context (recorded on the CPU itself, by [`init`] or its first `switch()`).
    idle: Once<Arc<ContextLock>>,
    /// This CPU's topology (read on the CPU itself, by [`init`] or its first `switch()`).
    topology: Once<CpuTopology>,
    /// Interrupts this CPU has taken (counted at their exit, [`irq::irq_exit`]): the idle poll
    /// watches it.
    irqs_taken: AtomicU64,
    /// The idle loop's poll window, ns (0: it halts at once; only the idle loop touches it).
    poll_ns: Cell<u64>,
}

impl KthreadPercpu {
    /// Empty state (const: `PercpuBlock::init` is const).
    pub const fn new() -> Self {
        Self {
            preempt: Cell::new(0),
            irq_off: Cell::new(0),
            irq: Cell::new(0),
            lent: Cell::new(token::Slot::Empty),
            current: RefCell::new(None),
            timers: Mutex::new(timer::TimerMap::new()),
            timer_next: AtomicU64::new(u64::MAX),
            calls: Mutex::new(VecDeque::new()),
            migrating: Mutex::new(Vec::new()),
            idle: Once::new(),
            topology: Once::new(),
            irqs_taken: AtomicU64::new(0),
            poll_ns: Cell::new(0),
        }
    }
}

/// The port record of the context running on this CPU, if it has one.
fn current_port_task() -> Option<Arc<Task>> {
    PercpuBlock::current().kthread.current.borrow().clone()
}

/// Record the calling CPU's idle context, for [`cpu_is_idle`].
fn record_idle_context() {
    let percpu = PercpuBlock::current();
    percpu
        .kthread
        .idle
        .call_once(|| percpu.switch_internals.idle_context());
}

/// Read the calling CPU's topology with CPUID and keep it for [`cpu_topology`] (before the CPU
/// is marked online).
fn record_topology() {
    PercpuBlock::current()
        .kthread
        .topology
        .call_once(topology::read_this_cpu);
}

/// `Port::cpu_topology`: what `cpu` read about itself as it came up, or the port's default for a
/// CPU that has not come up.
pub(super) fn cpu_topology(cpu: usize) -> CpuTopology {
    let ptr = ALL_PERCPU_BLOCKS
        .get(cpu)
        .map_or(core::ptr::null_mut(), |p| p.load(Ordering::Acquire));
    // SAFETY: a published per-CPU block lives (and stays at its address) for the kernel's life.
    let block = unsafe { ptr.as_ref() };
    block
        .and_then(|b| b.kthread.topology.get().copied())
        .unwrap_or(CpuTopology::alone(cpu))
}

/// Is `cpu` in Redox's idle loop with nothing queued (Linux `available_idle_cpu`)? Its idle
/// context is running there; a CPU in the middle of a switch (its idle context locked) counts as
/// busy. A hint for placing woken contexts: it may change right after. The caller holds no
/// context lock (`token` is clean), so `try_read` nests nothing.
fn cpu_is_idle(cpu: usize, token: &mut CleanLockToken) -> bool {
    let ptr = ALL_PERCPU_BLOCKS
        .get(cpu)
        .map_or(core::ptr::null_mut(), |p| p.load(Ordering::Acquire));
    // SAFETY: a published per-CPU block lives (and stays at its address) for the kernel's life.
    let Some(block) = (unsafe { ptr.as_ref() }) else {
        return false;
    };
    let Some(idle) = block.kthread.idle.get() else {
        return false;
    };
    if block.switch_internals.queue_len.load(Ordering::Relaxed) != 0 {
        return false;
    }
    idle.try_read(token.token()).is_some_and(|g| g.running)
}

/// The per-CPU block of `cpu` (the caller's own if `cpu` has none yet).
fn percpu_of(cpu: usize) -> &'static PercpuBlock {
    let ptr = ALL_PERCPU_BLOCKS
        .get(cpu)
        .map_or(core::ptr::null_mut(), |p| p.load(Ordering::Acquire));
    // SAFETY: a published per-CPU block lives (and stays at its address) for the kernel's life.
    match unsafe { ptr.as_ref() } {
        Some(b) => b,
        None => PercpuBlock::current(),
    }
}

/// Marks the calling CPU as running interrupt-context code while alive.
struct IrqGuard(&'static KthreadPercpu);

impl IrqGuard {
    fn enter() -> Self {
        let pc = &PercpuBlock::current().kthread;
        pc.irq.set(pc.irq.get().saturating_add(1));
        IrqGuard(pc)
    }
}

impl Drop for IrqGuard {
    fn drop(&mut self) {
        self.0.irq.set(self.0.irq.get().saturating_sub(1));
    }
}

/// Is the calling CPU in interrupt context (as far as the port knows)?
fn in_irq() -> bool {
    PercpuBlock::current().kthread.irq.get() != 0
}

/// Run the calls queued for this CPU (in interrupt context; a token is lent or owned).
fn run_calls() {
    loop {
        let call = PercpuBlock::current().kthread.calls.lock().pop_front();
        let Some(call) = call else {
            break;
        };
        port::as_irq(call.f);
        if let Some(done) = call.done {
            done.complete_all();
        }
    }
}

/// Linux `smp_call_function_single`: run `f` on `cpu` in interrupt context. The IPI is taken
/// when `cpu` is idle or reaches a yield point, so waiting may take as long as the thread running
/// there takes to reach one: a caller that may sleep blocks until the call is done. An atomic
/// caller (preempt count raised or in interrupt context) cannot; it spins, serving the calls sent
/// to its own CPU meanwhile so that two CPUs calling each other do not deadlock. That spin is
/// bounded by the target's next yield point, as Linux's `csd_lock_wait` is by IPI latency.
fn call_on_cpu(cpu: usize, f: Box<dyn FnOnce() + Send>, wait: bool) -> Result<()> {
    if cpu >= crate::cpu_count() as usize {
        return Err(Error::new(EINVAL));
    }
    if cpu == crate::cpu_id().get() as usize {
        port::as_irq(f);
        return Ok(());
    }
    let done = wait.then(|| Arc::new(Completion::new()));
    let target = percpu_of(cpu);
    target.kthread.calls.lock().push_back(Call {
        f,
        done: done.clone(),
    });
    // One CPU, through the wake-up vector whose handler runs the queue (`ipi`).
    crate::ipi::ipi_single(crate::ipi::IpiKind::Wakeup, target);
    if let Some(done) = done {
        if port::PORT.in_atomic() || token::lent_here() {
            while !done.is_done() {
                run_calls();
                core::hint::spin_loop();
            }
        } else {
            done.wait("smp_call_function");
        }
    }
    Ok(())
}

/// Hook in the wake-up IPI handler: run the calls sent to this CPU with the handler's token.
pub fn ipi(token: &mut CleanLockToken) {
    lend(token, run_calls);
}

/// Hook at the top of `tick()`: fire this CPU's expired port timers, then give the workqueue's
/// tick callback the context the tick interrupted, with the tick's token lent.
pub fn tick(token: &mut CleanLockToken) {
    lend(token, || {
        timer::run_expired();
        tick_worker();
        // An allocation that fell below the low watermark left a flag: wake kswapd here.
        kport::mm::tick();
    });
    // The timer interrupt's exit, before `tick()` decides to switch (Linux runs softirqs in
    // `irq_exit` before `preempt_schedule_irq`): expired soft timers run here.
    irq::irq_exit(token);
}

/// The scheduler tick's call into the workqueue (Linux `sched_tick` -> `wq_worker_tick`), for the
/// context running on this CPU if the port spawned it with worker hooks. `tick()` runs in Redox's
/// PIT interrupt (the PIT IPI on the other CPUs), which a kernel thread lets in only at its yield
/// points: a worker that keeps its CPU is seen at each `cond_resched`. An exited worker has
/// dropped its data and is skipped.
fn tick_worker() {
    let Some(task) = current_port_task() else {
        return;
    };
    if !task.worker_hooks() {
        return;
    }
    if let (Some(hooks), Some(data)) = (port::sched_hooks(), task.data()) {
        port::as_irq(|| {
            port::PORT.preempt_disable();
            hooks.tick(&data);
            port::PORT.preempt_enable();
        });
    }
}

/// Wake the contexts that switched out of this CPU to move to another one. Runs on this CPU
/// after their switch is over: at the next `switch()` entry or exit here, or in a new context.
fn finish_migrations(token: &mut CleanLockToken) {
    let pending = core::mem::take(&mut *PercpuBlock::current().kthread.migrating.lock());
    for ctx in pending {
        let target = {
            let mut guard = ctx.write(token.token());
            let moving = guard
                .kthread
                .as_ref()
                .is_some_and(|t| t.migrating.swap(false, Ordering::AcqRel));
            if !moving || !guard.unblock_no_ipi() {
                continue;
            }
            let allowed = guard.sched_affinity.iter().next();
            guard.cpu_id = allowed;
            allowed
        };
        wakeup_context(&ctx, target, &mut token.downgrade());
    }
}

/// Hook at the top of `context::switch`, with its caller's token. A worker context that is about
/// to block gets the workqueue's "sleeping" callback (and is marked so that [`switch_leave`]
/// gives it the "running" one); a port context whose CPU left its affinity blocks to be woken on
/// an allowed CPU. A context holding `preempt_locks` is left alone: its `switch()` returns at
/// once without switching.
pub fn switch_enter(token: &mut CleanLockToken) {
    first_switch_here(token);
    finish_migrations(token);
    let Some(ctx) = context::try_current() else {
        return;
    };
    let mut guard = ctx.write(token.token());
    let Some(task) = guard.kthread.clone() else {
        return;
    };
    if !guard.is_preemptable() {
        return;
    }
    if guard.status.is_runnable() {
        if guard.kstack.is_some() && !guard.sched_affinity.contains(crate::cpu_id()) {
            task.migrating.store(true, Ordering::Release);
            guard.block("migrate");
            drop(guard);
            PercpuBlock::current().kthread.migrating.lock().push(ctx);
        }
        return;
    }
    if guard.status.is_dead() || !task.worker_hooks() {
        return;
    }
    drop(guard);
    if let (Some(hooks), Some(data)) = (port::sched_hooks(), task.data()) {
        task.sleep_hooked.store(true, Ordering::Release);
        lend(token, || {
            port::PORT.preempt_disable();
            hooks.sleeping(&data);
            port::PORT.preempt_enable();
        });
    }
}

/// The `debug_id` of each CPU's running context, for [`Port::cpu_current_id`] (a report about
/// another CPU cannot read that CPU's `PercpuBlock`).
pub(crate) static CPU_CURRENT_ID: [AtomicUsize; crate::cpu_set::MAX_CPU_COUNT as usize] =
    [const { AtomicUsize::new(0) }; crate::cpu_set::MAX_CPU_COUNT as usize];

/// Hook in `context::switch` where `next` becomes this CPU's context (under its guard, next to
/// Redox's own `set_current_context`): remember its port record, so that port calls find the
/// running thread's token and record without taking its lock. The value replaced is the
/// previous context's record, which that context (alive: `switch()` holds its guard) still
/// holds, so nothing is freed here. Ends the previous context's slice of CPU time and begins
/// the next one's (`port::Task::switched`).
pub fn switching_to(next: &Context) {
    if let Some(slot) = CPU_CURRENT_ID.get(crate::cpu_id().get() as usize) {
        slot.store(next.debug_id as usize, Ordering::Relaxed);
    }
    let previous = PercpuBlock::current()
        .kthread
        .current
        .replace(next.kthread.clone());
    if kport::trace::on(kport::trace::Event::SchedSwitch) {
        trace_switch(previous.as_deref(), next);
    }
    if previous.is_some() || next.kthread.is_some() {
        let now = clock::now_ns();
        if let Some(prev) = &previous {
            prev.switched(true, now);
        }
        if let Some(next) = &next.kthread {
            next.switched(false, now);
        }
    }
    drop(previous);
}

/// Linux's `prio` of a normal task, which the trace events print for every Redox context (Redox
/// has no priority levels the events could carry).
pub(crate) const TRACE_PRIO: u64 = 120;

/// The `sched_switch` tracepoint, from inside `context::switch`: it asks the port nothing (the
/// switch holds context locks), records with interrupts off, and names `prev` by its port record
/// (a context without one, user space or idle, is pid 0 as Linux's idle task is).
#[cold]
#[inline(never)]
fn trace_switch(prev: Option<&port::Task>, next: &Context) {
    let next_id = next.debug_id as u64;
    kport::trace::save_comm(next_id, next.name.as_str());
    let prev_id = prev.map_or(0, |t| t.trace_id() as u64);
    let state = prev.map_or(b'R', port::Task::trace_state);
    kport::trace::emit_as(
        next_id,
        1,
        kport::trace::Event::SchedSwitch,
        [prev_id, TRACE_PRIO, state as u64, next_id, TRACE_PRIO],
        "",
        "",
    );
}

/// Apply the tracing words of Redox's env (`trace_event=`, `trace_buf_size=`, `latency_hist=`,
/// the guest command line's keys): from boot, before the suites, so that boot's own events are
/// in the rings. A bad value is a one-line warning and is ignored.
fn trace_from_env() {
    let env = core::str::from_utf8(crate::startup::init_env()).unwrap_or("");
    for line in env.lines().map(str::trim) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let r = match k {
            "trace_buf_size" => kport::trace::parse_size(v).and_then(|b| {
                kport::trace::set_buf_size(b).map_err(|_| "the rings exist already".into())
            }),
            "trace_event" => kport::trace::parse_events(v).map(kport::trace::enable),
            "latency_hist" => kport::trace::hist::parse(v).map(kport::trace::hist::enable),
            _ => Ok(()),
        };
        if let Err(e) = r {
            port::PORT.console_line(&alloc::format!("# WARNING: kthread: {k}: {e}; ignored"));
        }
    }
}

/// `sys:trace`: the trace rings in Linux's text format (the `trace` file of tracefs).
pub fn sys_trace(token: &mut CleanLockToken) -> crate::syscall::error::Result<Vec<u8>> {
    Ok(lend(token, || kport::trace::text(&kport::trace::snapshot())).into_bytes())
}

/// `sys:trace_json`: the trace rings as one JSON object (`recorded`, `lost`, `events`).
pub fn sys_trace_json(token: &mut CleanLockToken) -> crate::syscall::error::Result<Vec<u8>> {
    Ok(lend(token, || kport::trace::json(&kport::trace::snapshot())).into_bytes())
}

/// `sys:hist`: the latency histograms as bpftrace prints `hist()` maps.
pub fn sys_hist(token: &mut CleanLockToken) -> crate::syscall::error::Result<Vec<u8>> {
    Ok(lend(token, || {
        kport::trace::hist::text(&kport::trace::hist::snapshot())
    })
    .into_bytes())
}

/// `sys:trace_ctl` (write-only): one command per write, the boot keys' syntax:
/// `trace_event=LIST` sets exactly those events (`trace_event=` turns them all off),
/// `latency_hist=LIST` sets exactly those histograms, `clear` empties the rings, `hist_reset`
/// zeroes the histograms. `EINVAL` for anything else or a bad list.
pub fn sys_trace_ctl(
    buf: &[u8],
    token: &mut CleanLockToken,
) -> crate::syscall::error::Result<usize> {
    use crate::syscall::error::{Error, EINVAL};
    let cmd = core::str::from_utf8(buf)
        .map_err(|_| Error::new(EINVAL))?
        .trim();
    let r = lend(
        token,
        || -> core::result::Result<(), alloc::string::String> {
            match cmd.split_once('=') {
                Some(("trace_event", v)) => {
                    let m = kport::trace::parse_events(v)?;
                    kport::trace::disable(kport::trace::ALL_EVENTS);
                    kport::trace::enable(m);
                }
                Some(("latency_hist", v)) => {
                    let m = kport::trace::hist::parse(v)?;
                    kport::trace::hist::disable(kport::trace::hist::HIST_ALL);
                    kport::trace::hist::enable(m);
                }
                None if cmd == "clear" => kport::trace::clear(),
                None if cmd == "hist_reset" => kport::trace::hist::reset(),
                _ => return Err(alloc::format!("unknown command '{cmd}'")),
            }
            Ok(())
        },
    );
    r.map(|()| buf.len()).map_err(|_| Error::new(EINVAL))
}

/// Hook where `context::switch` returns to its caller, with the caller's token: switched back to
/// (`idle_guard` is `None`), or nothing else to run (`idle_guard` is the guard of the current
/// context, which `switch()` no longer needs: it is released here, before the callbacks, which
/// lock other contexts). Gives the "running" callback to a worker that [`switch_enter`] reported
/// as sleeping; a worker woken between the two never left its CPU and runs again either way.
///
/// After `arch::switch_to` this runs on the resumed context's own stack, possibly on another
/// CPU than the one it left: it reads the CPU afresh and uses nothing of `switch()` but the
/// caller's token, which belongs to this context (Redox's callers of `switch()` use it the same
/// way once it returns).
pub fn switch_leave(idle_guard: Option<ArcContextLockWriteGuard>, token: &mut CleanLockToken) {
    drop(idle_guard);
    finish_migrations(token);
    let Some(task) = current_port_task() else {
        return;
    };
    if !task.sleep_hooked.swap(false, Ordering::AcqRel) {
        return;
    }
    if let (Some(hooks), Some(data)) = (port::sched_hooks(), task.data()) {
        lend(token, || {
            port::PORT.preempt_disable();
            hooks.running(&data);
            port::PORT.preempt_enable();
        });
    }
}

/// Print a backtrace of the caller in the guest protocol's format.
fn dump_stack() {
    let p = &port::PORT;
    p.console_line("# backtrace:");
    let mut fp: usize;
    // SAFETY: reads the frame pointer register only.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack)) };
    for n in 0..32_usize {
        if fp < KERNEL_HALF || !fp.is_multiple_of(8) {
            break;
        }
        // SAFETY: `fp` is an aligned kernel address on the frame chain the kernel is built with
        // (frame pointers are always kept); each frame holds the caller's fp and return address.
        let (next, pc) = unsafe {
            let frame = fp as *const usize;
            (frame.read(), frame.add(1).read())
        };
        if pc == 0 {
            break;
        }
        p.console_line(&alloc::format!("#  {n}: {pc:#018x}"));
        if next <= fp {
            break;
        }
        fp = next;
    }
}

/// Stop QEMU through isa-debug-exit (0x10 pass, 0x11 fail: status 33 or 35).
#[cfg(feature = "ktests")]
fn exit_qemu(pass: bool) -> ! {
    let code: u8 = if pass { 0x10 } else { 0x11 };
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device in the test configuration; elsewhere the
    // write is ignored and the CPU halts below.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") 0xf4_u16, in("al") code, options(nomem, nostack));
    }
    loop {
        // SAFETY: stopping this CPU for good.
        unsafe {
            crate::arch::interrupt::disable();
            crate::arch::interrupt::halt();
        }
    }
}

/// Woken each time a CPU comes up (its first `switch()`).
static CPUS_UP: WaitQueue = WaitQueue::new();

/// Sleep until every CPU reached `kmain_ap`, or [`AP_WAIT_MS`].
fn wait_for_cpus() {
    let want = CpuMask::first(crate::cpu_count() as usize).0;
    let deadline = clock::now_ns().saturating_add(AP_WAIT_MS.saturating_mul(1_000_000));
    CPUS_UP.wait_event_deadline("wait_for_cpus", deadline, || port::online() & want == want);
}

/// `[kthread-boot]`: the workqueues once every CPU is up, then (feature `ktests`) the suites.
fn boot_main() {
    wait_for_cpus();
    // Every CPU's IDT exists now: the device lines can reserve vectors on each.
    irq::init();
    // Creating the pools' first workers goes through kthreadd and sleeps.
    let workqueues = workqueue::init();
    if let Err(ref e) = workqueues {
        warn!("workqueue: cannot start: {e:?}");
    } else if let Err(e) = drivers::vmscan::init() {
        warn!("kswapd: cannot start: {e:?}");
    }
    // The hung-task and soft-lockup detectors (`kernel.hung_task_*`, `kernel.watchdog_thresh`).
    if let Err(e) = kthreadd::hung_task::init() {
        warn!("khungtaskd: cannot start: {e:?}");
    }
    if let Err(e) = kthreadd::watchdog::init() {
        warn!("watchdog: cannot start: {e:?}");
    }
    // The out-of-memory report names the kernel heap beside the page caches.
    kport::mm::register_user("kernel heap", || {
        (crate::allocator::heap_stats().0 / crate::memory::PAGE_SIZE) as u64
    });
    #[cfg(feature = "ktests")]
    ktests::run(workqueues);
}

/// Start the subsystem: called once by `kmain` on the boot CPU, before user space, with its
/// token (lent to the port calls made here).
pub fn init(token: &mut CleanLockToken) {
    mm::init();
    clock::calibrate();
    record_idle_context();
    record_topology();
    port::set_online(crate::cpu_id().get() as usize, true);
    // With `kblk=virtio`: the PCI scan (BARs sized, devices enabled) as early as possible, before
    // user space and before the CPUs run kernel threads (`bus.rs`, `drivers::pci::boot_scan`).
    if bus::enabled() {
        drivers::pci::boot_scan(&bus::BUS);
    }
    lend(token, || {
        install(&port::PORT);
        port::install_local_layout();
        trace_from_env();
        #[cfg(feature = "ktests")]
        harness::install(&port::PORT);
        if let Err(e) = kthread::init() {
            panic!("kthreadd: cannot start: {e:?}");
        }
        let boot = port::PORT.spawn(SpawnSpec {
            name: "kthread-boot".into(),
            entry: Box::new(boot_main),
            affinity: CpuMask::ALL,
            priority: Priority::Normal,
            data: None,
            worker_hooks: false,
        });
        match boot {
            Ok(t) => {
                t.wake();
            }
            Err(e) => panic!("kthread: cannot spawn [kthread-boot]: {e:?}"),
        }
    });
    // From here on no boot code calls the subsystem with interrupts off: `might_sleep` reports.
    scheduling_started();
}

/// The first `switch()` on a CPU (an application processor entering its idle loop after
/// `kmain_ap`; the boot CPU was done by [`init`]): from now on it takes kernel-thread work.
/// Records its idle context and wakes `[kthread-boot]` if it waits for the CPUs (with the
/// caller's token lent). Every later call is one atomic load.
fn first_switch_here(token: &mut CleanLockToken) {
    let percpu = PercpuBlock::current();
    if percpu.kthread.idle.is_completed() {
        return;
    }
    record_idle_context();
    record_topology();
    port::set_online(percpu.cpu_id.get() as usize, true);
    // Before the port is installed nobody waits: `[kthread-boot]` starts after the install and
    // sees the online bit set above (the fence orders it before the test).
    fence(Ordering::SeqCst);
    if installed() {
        lend(token, || CPUS_UP.wake_all());
    }
}

/// `sys:kthread`: the kernel threads, as `kthreadd::registry::ps()` prints them (see the
/// kthreadd project's kernel-patch/README.md for the format).
/// Runs in the reading context's syscall, whose token is lent to the port calls that the
/// listing makes (each thread's state, CPU, name, CPU time).
pub fn sys_resource(token: &mut CleanLockToken) -> crate::syscall::error::Result<Vec<u8>> {
    Ok(lend(token, ps_text).into_bytes())
}

/// `sys:sysctl` read: every setting as `name = value` lines (`sysctl -a`).
pub fn sys_sysctl(_token: &mut CleanLockToken) -> crate::syscall::error::Result<Vec<u8>> {
    Ok(kport::sysctl::list().into_bytes())
}

/// `sys:sysctl` write (root): `name=value` lines, as `sysctl -p` reads them. A bad line fails
/// the write with its error (`ENOENT` for an unknown name, `EINVAL` for a refused value); the
/// lines before it are applied.
pub fn sys_sysctl_write(
    buf: &[u8],
    token: &mut CleanLockToken,
) -> crate::syscall::error::Result<usize> {
    let text = core::str::from_utf8(buf).map_err(|_| crate::syscall::error::Error::new(EINVAL))?;
    // A setting's side effect may wake a thread or re-arm a timer: port calls.
    lend(token, || kport::sysctl::write(text)).map_err(|(e, line)| {
        warn!("sysctl: '{line}': {e:?}");
        e
    })?;
    Ok(buf.len())
}

/// `sys:sysrq` write (root): each character is a SysRq key (`t`, `w`, `l`, `h`); output goes
/// to the kernel log. An unknown key fails the write with `EINVAL` after the help line.
pub fn sys_sysrq(buf: &[u8], token: &mut CleanLockToken) -> crate::syscall::error::Result<usize> {
    // Key `l` waits for every CPU's answer.
    token::lend_blocking(token, || {
        for &b in buf {
            if !b.is_ascii_whitespace() {
                kthreadd::sysrq::handle(b as char)?;
            }
        }
        Ok(buf.len())
    })
}

/// Redox's context verbs (`syscall::flag::ContextVerb`) as the Linux signals they stand for:
/// stop, continue, interrupt (a wake-up: no signal number), kill.
fn verb_signal(verb: usize) -> u32 {
    match verb {
        1 => 19,
        2 => 18,
        usize::MAX => 9,
        _ => 0,
    }
}

/// Hook in Redox's kill path: the `proc:` scheme's status verbs (stop, continue, interrupt,
/// kill) on a context handle, before they act, with the syscall's token. A kernel context
/// cannot be signalled or killed from user space, as on Linux (`kill` of a kernel thread
/// answers `EPERM`): the subsystem's kernel threads get `kthreadd::kthread::signal_from_user`'s
/// answer, other kernel contexts (Redox's idle contexts, the port's bare contexts) the same
/// `EPERM`. User contexts pass.
///
/// Redox hands out context handles only for the caller itself (`cur-context`) and for the
/// contexts a program creates through `proc:` (`new-context`), never for a kernel context, so
/// no user program reaches a kernel thread here today (the `redox_user` suite checks from user
/// space that no `proc:` name resolves to one); the hook keeps it so if a way to one appears.
pub fn signal_from_user(
    context: &Arc<ContextLock>,
    verb: usize,
    token: &mut CleanLockToken,
) -> crate::syscall::error::Result<()> {
    let (user, id) = {
        let guard = context.read(token.token());
        (guard.userspace, guard.debug_id as usize)
    };
    if user {
        return Ok(());
    }
    match lend(token, || kthread::signal_from_user(id, verb_signal(verb))) {
        Err(e) if e.errno == ESRCH => Err(Error::new(EPERM)),
        answer => answer,
    }
}

/// The text of `sys:kthread` (empty before [`init`]).
fn ps_text() -> alloc::string::String {
    if !installed() {
        return alloc::string::String::new();
    }
    registry::ps()
}

// ------------------------------------------------------------------------------- idle polling

/// Count an interrupt taken on this CPU (from the exit hooks).
pub(crate) fn count_interrupt() {
    PercpuBlock::current()
        .kthread
        .irqs_taken
        .fetch_add(1, Ordering::Relaxed);
}

/// Where Redox's idle loop would halt (`run_userspace`, and the suite's `hold_user_space`):
/// first poll for an interrupt with interrupts on, when this CPU's idle periods have been short.
/// Waking a halted vCPU costs tens of microseconds under QEMU; an interrupt to a running one
/// costs what its handler does. The window adapts as the testkernel's does
/// ([`kport::idle::next_window`]; the project's docs/benchmarks.md, "Idle polling"): each idle
/// period that polled in vain and then halted adjusts it. Returns with interrupts on, as `enable_and_halt` does; the
/// caller's loop disables them and switches again.
///
/// # Safety
/// Only from a CPU's idle context, in its idle loop, with interrupts off.
pub unsafe fn idle_wait() {
    let pc = &PercpuBlock::current().kthread;
    let window = pc.poll_ns.get();
    if window > 0 {
        let seen = pc.irqs_taken.load(Ordering::Relaxed);
        let limit = (u128::from(window) * u128::from(clock::tsc_hz()) / 1_000_000_000) as u64;
        let start = clock::cycles();
        // SAFETY: the idle loop takes interrupts here, as it does in its halt (caller's contract).
        unsafe { interrupt::enable_and_nop() };
        loop {
            if pc.irqs_taken.load(Ordering::Relaxed) != seen {
                return;
            }
            if clock::cycles().wrapping_sub(start) >= limit {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: back to the loop's state before its halt.
        unsafe { interrupt::disable() };
        if pc.irqs_taken.load(Ordering::Relaxed) != seen {
            // One came after the last look: no halt, the caller switches again.
            // SAFETY: as above.
            unsafe { interrupt::enable_and_nop() };
            return;
        }
    }
    let t0 = clock::cycles();
    // SAFETY: the idle loop's own halt (caller's contract).
    unsafe { interrupt::enable_and_halt() };
    let idle = window.saturating_add(clock::cycles_to_ns(clock::cycles().wrapping_sub(t0)));
    pc.poll_ns.set(kport::idle::next_window(window, idle));
}
