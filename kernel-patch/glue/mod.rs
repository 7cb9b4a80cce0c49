//! Kernel threads with Linux's semantics (`kthreadd`, stop, park, bind, `kthread_worker`,
//! per-CPU threads) for Redox, from the `kthreadd` crate, over the port in [`port`].
//!
//! * [`init`] (in `kmain`) calibrates the port clock, installs the port, starts `[kthreadd]` and
//!   a short-lived `[kthread-boot]` context that waits for every CPU and starts the workqueues
//!   (`workqueue::init`: per-CPU pools with their `[kworker/N:M]` workers, the system queues; it
//!   sleeps, so it cannot run in `kmain`). With the `ktests` feature that context then runs the
//!   shipped suites (see `ktests.rs`).
//! * [`init_ap`] (in `kmain_ap`) marks an application processor as taking work.
//! * Hooks called by Redox: [`switch_enter`] / [`switch_leave`] around `context::switch` (the
//!   workqueue's worker-sleeping / worker-running callbacks, and moving a context whose
//!   affinity no longer includes its CPU), [`tick`] (port timers), [`ipi`] (calls sent with
//!   `call_on_cpu`).
//! * `sys:kthread` lists the kernel threads ([`sys_resource`]).
//!
//! Redox runs kernel code with interrupts off and never preempts it. A kernel thread keeps its
//! CPU until it blocks or reaches a yield point (`schedule`, `yield_now`, `cond_resched`); each
//! yield point opens a short interrupt window so that the PIT tick and IPIs that arrived
//! meanwhile are taken there. `preempt_disable` is therefore only a per-CPU count checked by
//! the might-sleep test, and `irq_save` reads and clears IF like Linux's.

use alloc::{boxed::Box, collections::VecDeque, sync::Arc, vec::Vec};
use core::{
    cell::Cell,
    sync::atomic::{AtomicBool, Ordering},
};

use kthreadd::port::{CpuMask, Error, Port as _, Priority, Result, SpawnSpec, EINVAL};
use spin::{Mutex, Once};

use crate::{
    context::{self, wakeup_context, ContextLock},
    cpu_set::LogicalCpuId,
    percpu::{PercpuBlock, ALL_PERCPU_BLOCKS},
    sync::CleanLockToken,
};

mod clock;
#[cfg(feature = "ktests")]
pub mod ktests;
pub mod port;
mod timer;

pub use port::Task;

/// Lowest kernel address: frame pointers below it end a backtrace.
const KERNEL_HALF: usize = 0xFFFF_8000_0000_0000;

/// Longest wait at boot for the application processors to reach `kmain_ap` (ms).
const AP_WAIT_MS: u64 = 5_000;

/// A function sent to a CPU with `call_on_cpu`.
pub struct Call {
    f: Box<dyn FnOnce() + Send>,
    done: Option<Arc<AtomicBool>>,
}

/// The kernel-thread port's per-CPU state (`PercpuBlock::kthread`).
pub struct KthreadPercpu {
    /// `preempt_disable` nesting (only this CPU touches it, with interrupts off).
    preempt: Cell<u32>,
    /// Interrupt-context nesting: timer callbacks and IPI calls.
    irq: Cell<u32>,
    /// Armed port timers, earliest first (any CPU arms them).
    timers: Mutex<timer::TimerMap>,
    /// Calls sent here by `call_on_cpu`.
    calls: Mutex<VecDeque<Call>>,
    /// Contexts that switched out of this CPU to move elsewhere, woken once the switch is over.
    migrating: Mutex<Vec<Arc<ContextLock>>>,
    /// This CPU's idle context (recorded by [`init`] / [`init_ap`] on the CPU itself).
    idle: Once<Arc<ContextLock>>,
}

impl KthreadPercpu {
    /// Empty state (const: `PercpuBlock::init` is const).
    pub const fn new() -> Self {
        Self {
            preempt: Cell::new(0),
            irq: Cell::new(0),
            timers: Mutex::new(timer::TimerMap::new()),
            calls: Mutex::new(VecDeque::new()),
            migrating: Mutex::new(Vec::new()),
            idle: Once::new(),
        }
    }
}

/// Record the calling CPU's idle context, for [`cpu_is_idle`].
fn record_idle_context() {
    let percpu = PercpuBlock::current();
    percpu
        .kthread
        .idle
        .call_once(|| percpu.switch_internals.idle_context());
}

/// Is `cpu` in Redox's idle loop with nothing queued (Linux `available_idle_cpu`)? Its idle
/// context is running there; a CPU in the middle of a switch (its idle context locked) counts as
/// busy. A hint for placing woken contexts: it may change right after.
pub(super) fn cpu_is_idle(cpu: usize) -> bool {
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
    // SAFETY: only `try_read` is used with this token, which never waits, so it cannot take part
    // in a lock-order deadlock whatever the caller holds.
    let mut token = unsafe { CleanLockToken::new() };
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

/// Run the calls queued for this CPU.
fn run_calls() {
    loop {
        let call = PercpuBlock::current().kthread.calls.lock().pop_front();
        let Some(call) = call else {
            break;
        };
        port::as_irq(call.f);
        if let Some(done) = call.done {
            done.store(true, Ordering::Release);
        }
    }
}

/// Linux `smp_call_function_single`: run `f` on `cpu` in interrupt context. The IPI is taken
/// when `cpu` is idle or reaches a yield point. While waiting, the caller serves calls sent to
/// its own CPU, so two CPUs calling each other do not deadlock.
fn call_on_cpu(cpu: usize, f: Box<dyn FnOnce() + Send>, wait: bool) -> Result<()> {
    if cpu >= crate::cpu_count() as usize {
        return Err(Error::new(EINVAL));
    }
    if cpu == crate::cpu_id().get() as usize {
        port::as_irq(f);
        return Ok(());
    }
    let done = wait.then(|| Arc::new(AtomicBool::new(false)));
    let target = percpu_of(cpu);
    target.kthread.calls.lock().push_back(Call {
        f,
        done: done.clone(),
    });
    // Broadcast, as `wakeup_context` does: `ipi_single` puts the raw xAPIC ID register (ID in
    // bits 24..32) into the destination field, so under xAPIC it reaches no CPU.
    crate::ipi::ipi(crate::ipi::IpiKind::Wakeup, crate::ipi::IpiTarget::Other);
    if let Some(done) = done {
        while !done.load(Ordering::Acquire) {
            run_calls();
            core::hint::spin_loop();
        }
    }
    Ok(())
}

/// Hook in the wake-up IPI handler: run the calls sent to this CPU.
pub fn ipi() {
    run_calls();
}

/// Hook at the top of `tick()`: fire this CPU's expired port timers.
pub fn tick() {
    timer::run_expired();
}

/// Wake the contexts that switched out of this CPU to move to another one. Runs on this CPU
/// after their switch is over: at the next `switch()` entry or exit here, or in a new context.
fn finish_migrations() {
    let pending = core::mem::take(&mut *PercpuBlock::current().kthread.migrating.lock());
    for ctx in pending {
        let mut token = unsafe_clean_token();
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

fn unsafe_clean_token() -> CleanLockToken {
    // SAFETY: called from the switch hooks before `switch()` takes any lock or after it released
    // them all, and from a new context's entry; no Redox lock is held there.
    unsafe { CleanLockToken::new() }
}

/// Hook at the top of `context::switch`. A worker context that is about to block gets the
/// workqueue's "sleeping" callback (returns true: call [`switch_leave`] with it, on every path
/// out of `switch()` that returns to the caller); a port context whose CPU left its affinity
/// blocks to be woken on an allowed CPU. A context holding `preempt_locks` is left alone: its
/// `switch()` returns at once without switching.
pub fn switch_enter(token: &mut CleanLockToken) -> bool {
    finish_migrations();
    let Some(ctx) = context::try_current() else {
        return false;
    };
    let mut guard = ctx.write(token.token());
    let Some(task) = guard.kthread.clone() else {
        return false;
    };
    if !guard.is_preemptable() {
        return false;
    }
    if guard.status.is_runnable() {
        if guard.kstack.is_some() && !guard.sched_affinity.contains(crate::cpu_id()) {
            task.migrating.store(true, Ordering::Release);
            guard.block("migrate");
            drop(guard);
            PercpuBlock::current().kthread.migrating.lock().push(ctx);
        }
        return false;
    }
    if guard.status.is_dead() || !task.worker_hooks() {
        return false;
    }
    drop(guard);
    match (port::sched_hooks(), task.data()) {
        (Some(hooks), Some(data)) => {
            port::PORT.preempt_disable();
            hooks.sleeping(&data);
            port::PORT.preempt_enable();
            true
        }
        _ => false,
    }
}

/// Hook where `context::switch` returns to the caller (switched back to it, or found nothing
/// else to run): the "running" callback of a worker that [`switch_enter`] reported as sleeping.
/// A worker woken between the two may not have switched away at all; it runs again either way.
pub fn switch_leave(hooked: bool) {
    finish_migrations();
    if !hooked {
        return;
    }
    let (_, task) = port::current_task();
    if let (Some(hooks), Some(data)) = (port::sched_hooks(), task.data()) {
        port::PORT.preempt_disable();
        hooks.running(&data);
        port::PORT.preempt_enable();
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

/// Wait (sleeping) until every CPU reached `kmain_ap`, or [`AP_WAIT_MS`].
fn wait_for_cpus() {
    let want = CpuMask::first(crate::cpu_count() as usize).0;
    let deadline = clock::now_ns().saturating_add(AP_WAIT_MS.saturating_mul(1_000_000));
    while port::online() & want != want && clock::now_ns() < deadline {
        kthreadd::kthread::msleep(1);
    }
}

/// `[kthread-boot]`: the workqueues once every CPU is up, then (feature `ktests`) the suites.
fn boot_main() {
    wait_for_cpus();
    // Creating the pools' first workers goes through kthreadd and sleeps.
    let workqueues = workqueue::init();
    if let Err(ref e) = workqueues {
        warn!("workqueue: cannot start: {e:?}");
    }
    #[cfg(feature = "ktests")]
    ktests::run(workqueues);
}

/// Start the subsystem: called once by `kmain` on the boot CPU, before user space.
pub fn init() {
    clock::calibrate();
    record_idle_context();
    port::set_online(crate::cpu_id().get() as usize, true);
    kthreadd::port::install(&port::PORT);
    if let Err(e) = kthreadd::kthread::init() {
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
}

/// An application processor reached `kmain_ap`: it takes kernel-thread work from now on.
pub fn init_ap(cpu: LogicalCpuId) {
    record_idle_context();
    port::set_online(cpu.get() as usize, true);
}

/// `sys:kthread`: the kernel threads, as `kthreadd::registry::ps()` prints them (see
/// kernel-patch/README.md of the kthreadd project for the format).
pub fn sys_resource(_token: &mut CleanLockToken) -> crate::syscall::error::Result<Vec<u8>> {
    if !kthreadd::port::installed() {
        return Ok(Vec::new());
    }
    Ok(kthreadd::registry::ps().into_bytes())
}
