//! The testkernel's preemptive SMP scheduler.
//!
//! * Per-CPU run queues with three priority levels ([`Prio`]); FIFO round
//!   robin with a [`TIMESLICE_NS`] slice inside a level; a higher level
//!   always runs first.
//! * Every context has an affinity mask; a bound context runs only on its
//!   CPU. A wake-up places the context on an allowed CPU (its last one if
//!   idle, else an idle one, else its last one) and sends a reschedule IPI
//!   when it should preempt the target's current context.
//! * Each CPU has an idle context that halts, and that pulls runnable
//!   contexts allowed on its CPU from busy CPUs before halting.
//! * Preemption models: under `preempt=full` the timer tick and wake-ups
//!   preempt at interrupt exit and at `preempt_enable`; under `preempt=none`
//!   (Redox's model) a context runs until it blocks, yields or calls
//!   [`cond_resched`].
//! * Contexts spawned with worker hooks get the workqueue's scheduler hooks:
//!   `sleeping`/`running` around a real block, `tick` from the timer tick
//!   that interrupts them.
//! * The wake/block protocol is Linux's: `set_current_state`, check the
//!   condition, `schedule()`; [`wake`] under the task's `sched_lock` sets the
//!   state back to running and queues the task only if it had left the run
//!   queue, so no wake-up is lost.
//!
//! Lock order: `Task::sched_lock` -> one run-queue lock. Never two run-queue
//! locks at once. The run-queue lock of a CPU is held across the context
//! switch and released by the context that resumes (`finish_switch`).

pub mod task;
pub mod timer;
pub mod wait;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

pub use task::{Prio, State, Task, wake_mask};

use crate::arch::{apic, cpu, interrupts};
use crate::mem::stack::KernelStack;
use crate::percpu::{self, MAX_CPUS, PERCPU};
use crate::sync::{IrqSpinLock, SpinLock};
use task::{FLAG_IDLE, FLAG_WORKER_HOOKS, NR_PRIOS};

/// Queue slots reserved per priority level and CPU.
const RQ_RESERVE: usize = 64;

/// Time slice within a priority level: one tick (Linux's HZ=250 tick is
/// 4 ms; a shorter slice costs more switches under TCG for no gain).
pub const TIMESLICE_NS: u64 = 4_000_000;

static PREEMPT_FULL: AtomicBool = AtomicBool::new(true);
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
/// Contexts created and not yet reaped.
static NR_TASKS: AtomicUsize = AtomicUsize::new(0);

struct RunQueue {
    queues: [VecDeque<Arc<Task>>; NR_PRIOS],
    idle: Option<Arc<Task>>,
}

impl RunQueue {
    const fn new() -> Self {
        RunQueue { queues: [VecDeque::new(), VecDeque::new(), VecDeque::new()], idle: None }
    }

    fn len(&self) -> usize {
        self.queues.iter().map(|q| q.len()).sum()
    }

    fn highest_prio(&self) -> Option<Prio> {
        (0..NR_PRIOS).find(|&p| !self.queues[p].is_empty()).map(|p| Prio::from_u8(p as u8))
    }
}

/// Per-CPU scheduler data that other CPUs read without the lock.
struct CpuSched {
    /// Contexts queued (not counting the running one).
    nr_queued: AtomicUsize,
    /// Priority of the running context, or `u8::MAX` for the idle context.
    curr_prio: core::sync::atomic::AtomicU8,
    /// Taking work (not hot-unplugged).
    online: AtomicBool,
    /// Set in schedule() when the previous context must move to another CPU
    /// after the switch (it lost this CPU from its affinity).
    migrate_prev: AtomicBool,
    /// Context switches on this CPU.
    switches: AtomicU64,
    /// Id of the running context (0 before the scheduler starts).
    curr_id: AtomicUsize,
    /// Hot-unplugged and halted with interrupts off: runs nothing, takes
    /// no interrupt. Set by the CPU itself under its run-queue lock with
    /// the queue empty; cleared by it when it runs again.
    dead: AtomicBool,
    /// NMIs sent by `cpu_bring_up` and not yet taken: such an NMI only
    /// wakes the CPU from its halt.
    wake_nmis: AtomicUsize,
    /// `cpu_bring_up` asks the dead CPU to run again. The CPU marks itself
    /// online only once it runs, so no context is placed on it before.
    revive: AtomicBool,
    /// Times the CPU went dead.
    deaths: AtomicU64,
    /// Halted: everything it held is handed over (`cpu_down` waits for
    /// this, not for `dead`).
    halted: AtomicBool,
    /// Its idle context polls `need_resched` with interrupts on (Linux's
    /// `TIF_POLLING_NRFLAG`): a waker that sets `need_resched` and then
    /// finds this set sends no IPI. Both sides SeqCst: the poller clears it
    /// and then looks at `need_resched` once more before it halts.
    polling: AtomicBool,
}

static RQ: [IrqSpinLock<RunQueue>; MAX_CPUS] = [const { IrqSpinLock::named("runqueue", RunQueue::new()) }; MAX_CPUS];
static CPU: [CpuSched; MAX_CPUS] = [const {
    CpuSched {
        nr_queued: AtomicUsize::new(0),
        curr_prio: core::sync::atomic::AtomicU8::new(u8::MAX),
        online: AtomicBool::new(false),
        migrate_prev: AtomicBool::new(false),
        switches: AtomicU64::new(0),
        curr_id: AtomicUsize::new(0),
        dead: AtomicBool::new(false),
        wake_nmis: AtomicUsize::new(0),
        revive: AtomicBool::new(false),
        deaths: AtomicU64::new(0),
        halted: AtomicBool::new(false),
        polling: AtomicBool::new(false),
    }
}; MAX_CPUS];

/// Every live context, for listings (`ps`) and reaping. Holds a reference
/// until the context has exited and been switched away from. A vector with
/// reserved room rather than a tree, so that creating and reaping contexts
/// leaves the heap exactly as it was (no node churn).
static TASKS: SpinLock<Vec<Arc<Task>>> = SpinLock::named("tasks", Vec::new());
/// Room reserved in TASKS at boot.
const TASKS_RESERVE: usize = 512;

/// Stacks prepared for the APs' idle contexts (handed over by `smp`).
static AP_STACKS: IrqSpinLock<Vec<(usize, KernelStack)>> = IrqSpinLock::named("ap stacks", Vec::new());

/// Scheduler callbacks of the workqueue (installed once).
static HOOKS: spin::Once<&'static dyn kport::SchedHooks> = spin::Once::new();

/// Choose the preemption model (from the command line, before any context
/// but the boot one runs).
pub fn set_preempt_full(full: bool) {
    PREEMPT_FULL.store(full, Ordering::Relaxed);
}

/// Is `preempt=full` in effect?
pub fn preempt_full() -> bool {
    PREEMPT_FULL.load(Ordering::Relaxed)
}

/// Id of the context running on `cpu` (0 before its scheduler starts).
pub fn cpu_current_id(cpu: usize) -> usize {
    CPU.get(cpu).map_or(0, |c| c.curr_id.load(Ordering::Relaxed))
}

/// Install the workqueue's scheduler callbacks.
pub fn set_hooks(h: &'static dyn kport::SchedHooks) {
    HOOKS.call_once(|| h);
}

global_asm!(
    r#"
    .section .text.sched_switch, "ax"
    .global sched_switch
// sched_switch(prev_rsp: *mut u64, next_rsp: u64, ret: u64) -> u64
// Saves the callee-saved registers of the running context, switches stacks,
// restores the next context's, and returns `ret` (the previous context) to
// it. Nothing of SSE or x87 (see `task::Saved`).
sched_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    movq %rdx, %rax
    ret

    .global sched_task_start
// First return of a new context: rax holds the context switched away from.
sched_task_start:
    movq %rax, %rdi
    call sched_task_first_run
    ud2
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn sched_switch(prev_rsp: *mut u64, next_rsp: u64, ret: u64) -> u64;
    fn sched_task_start();
}

/// The running context of this CPU (borrowed: it lives while it runs).
fn current_ptr() -> *const Task {
    // One instruction: a caller preempted and moved to another CPU between
    // reading the GS base and the field would get that CPU's context.
    percpu::current_raw() as *const Task
}

/// The running context.
pub fn current() -> Arc<Task> {
    let p = current_ptr();
    assert!(!p.is_null(), "no current context before the scheduler starts");
    // SAFETY: `current` holds one strong reference (from Arc::into_raw) for as
    // long as the context runs on this CPU; we add one for the caller.
    unsafe {
        Arc::increment_strong_count(p);
        Arc::from_raw(p)
    }
}

/// Run `f` on the running context without touching its reference count.
pub fn with_current<R>(f: impl FnOnce(&Task) -> R) -> R {
    let p = current_ptr();
    assert!(!p.is_null(), "no current context before the scheduler starts");
    // SAFETY: the running context stays alive while it runs, and `f` runs on it.
    f(unsafe { &*p })
}

/// Name of the running context, for panic reports (never panics).
pub fn current_name_for_report() -> crate::name::Name {
    let p = current_ptr();
    if p.is_null() {
        return crate::name::Name::new("boot");
    }
    // SAFETY: as in with_current; the name lock may be held by this CPU if we
    // panicked inside it, so read it without locking.
    unsafe { *(*p).name.force_get() }
}

/// Create the idle context of this CPU out of the code running now (boot or
/// AP entry) and make it current. `cpu` is this CPU.
pub fn init_cpu(cpu: usize) {
    let name = alloc::format!("[idle/{cpu}]");
    let t = Arc::new(Task::new(0, &name, Prio::Idle, 1 << cpu, None, None, FLAG_IDLE));
    t.state.store(State::Running as u8, Ordering::Relaxed);
    t.on_cpu.store(true, Ordering::Relaxed);
    t.on_rq.store(true, Ordering::Relaxed);
    t.cpu.store(cpu, Ordering::Relaxed);
    t.started.store(true, Ordering::Relaxed);
    t.run_start_tsc.store(cpu::rdtsc(), Ordering::Relaxed);
    {
        let mut s = AP_STACKS.lock();
        if let Some(i) = s.iter().position(|(c, _)| *c == cpu) {
            *t.stack.lock() = Some(s.swap_remove(i).1);
        }
    }
    {
        let mut rq = RQ[cpu].lock();
        rq.idle = Some(t.clone());
        // Room reserved up front so that queueing never allocates on a hot
        // path and the heap counters stay exact across context churn.
        for q in rq.queues.iter_mut() {
            q.reserve(RQ_RESERVE);
        }
    }
    timer::reserve(cpu);
    call::reserve(cpu);
    CPU[cpu].online.store(true, Ordering::Release);
    CPU[cpu].curr_id.store(t.id, Ordering::Relaxed);
    percpu::this_cpu().current.store(Arc::into_raw(t) as *mut u8, Ordering::Release);
}

/// Keep an AP's boot stack; it becomes the stack of that CPU's idle context.
pub fn adopt_boot_stack(cpu: usize, stack: KernelStack) {
    AP_STACKS.lock().push((cpu, stack));
}

/// Error from [`spawn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No memory for the stack or the context.
    NoMemory,
    /// The affinity names no existing CPU.
    BadAffinity,
}

static SPAWN_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// Make the next `n` spawns fail with `NoMemory` (fault injection).
pub fn inject_spawn_failures(n: usize) {
    SPAWN_FAILURES.store(n, Ordering::Release);
}

/// Create a context that runs `entry` once woken (state `New`).
pub fn spawn(
    name: &str,
    prio: Prio,
    affinity: u64,
    entry: Box<dyn FnOnce() + Send>,
    data: Option<Arc<dyn Any + Send + Sync>>,
    worker_hooks: bool,
) -> Result<Arc<Task>, SpawnError> {
    let present = present_mask();
    if affinity & present == 0 {
        return Err(SpawnError::BadAffinity);
    }
    if SPAWN_FAILURES.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
        return Err(SpawnError::NoMemory);
    }
    let stack = KernelStack::new().ok_or(SpawnError::NoMemory)?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let flags = if worker_hooks { FLAG_WORKER_HOOKS } else { 0 };
    let t = Arc::new(Task::new(id, name, prio, affinity, Some(entry), data, flags));
    // Initial frame: six zeroed callee-saved registers popped by
    // sched_switch, then the return into sched_task_start, then two zero words
    // (the end of the frame chain, and 16-byte alignment for its call).
    let top = stack.top();
    let rsp = top - 72;
    // SAFETY: the stack was just mapped and is exclusively ours; all writes
    // are inside its top 72 bytes.
    unsafe {
        let p = rsp as *mut u64;
        for i in 0..6 {
            p.add(i).write(0);
        }
        p.add(6).write(sched_task_start as *const () as u64);
        p.add(7).write(0);
        p.add(8).write(0);
        (*t.saved.get()).rsp = rsp;
    }
    *t.stack.lock() = Some(stack);
    t.cpu.store((affinity & present).trailing_zeros() as usize, Ordering::Relaxed);
    TASKS.lock().push(t.clone());
    NR_TASKS.fetch_add(1, Ordering::Relaxed);
    Ok(t)
}

/// First code of every spawned context, entered from `sched_task_start`.
#[unsafe(no_mangle)]
extern "C" fn sched_task_first_run(prev: u64) -> ! {
    finish_switch(prev as *const Task);
    cpu::sti();
    let entry = with_current(|t| {
        t.started.store(true, Ordering::Release);
        t.entry.lock().take()
    });
    if let Some(f) = entry {
        f();
    }
    exit_current()
}

/// End the running context. Its stack is freed once another context runs.
pub fn exit_current() -> ! {
    cpu::cli();
    with_current(|t| {
        assert!(!t.is_idle(), "the idle context cannot exit");
        let _g = t.sched_lock.lock();
        t.state.store(State::Dead as u8, Ordering::Release);
    });
    schedule_inner(false);
    unreachable!("a dead context was scheduled again");
}

/// Mask of CPUs that were brought up.
pub fn present_mask() -> u64 {
    let n = percpu::cpus_up();
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Mask of CPUs taking work.
pub fn online_mask() -> u64 {
    (0..percpu::cpus_up()).filter(|&c| CPU[c].online.load(Ordering::Acquire)).fold(0, |m, c| m | 1 << c)
}

fn cpu_is_idle(c: usize) -> bool {
    CPU[c].curr_prio.load(Ordering::Relaxed) == u8::MAX && CPU[c].nr_queued.load(Ordering::Relaxed) == 0
}

/// Pick the CPU a woken context goes to; `sync`: the waker sleeps next
/// (Linux `WF_SYNC`), so its CPU, if allowed, is about to be free.
fn select_cpu(t: &Task, sync: bool) -> usize {
    let aff = t.affinity() & present_mask();
    let online_now = online_mask();
    let mut allowed = aff & online_now;
    if allowed == 0 {
        // Bound to offline CPUs only (Linux `select_fallback_rq`): its mask
        // becomes every CPU, for good. Per-CPU threads are parked before
        // their CPU goes (and put back on it when unparked), and the
        // workqueue unbinds its workers itself, so only threads bound by
        // hand get here.
        t.affinity.store(present_mask(), Ordering::Release);
        allowed = online_now;
    }
    if allowed.count_ones() == 1 {
        return allowed.trailing_zeros() as usize;
    }
    let last = t.cpu();
    let here = percpu::cpu_id();
    if sync && allowed & (1 << here) != 0 {
        return here;
    }
    if allowed & (1 << last) != 0 && cpu_is_idle(last) {
        return last;
    }
    if let Some(c) = (0..MAX_CPUS).filter(|&c| allowed & (1 << c) != 0).find(|&c| cpu_is_idle(c)) {
        return c;
    }
    if allowed & (1 << last) != 0 {
        return last;
    }
    if allowed & (1 << here) != 0 {
        return here;
    }
    (0..MAX_CPUS)
        .filter(|&c| allowed & (1 << c) != 0)
        .min_by_key(|&c| CPU[c].nr_queued.load(Ordering::Relaxed))
        .unwrap_or(0)
}

/// Queue `t` (already marked on_rq) on `cpu` and poke that CPU if `t` should
/// preempt what runs there.
fn enqueue(mut cpu_num: usize, t: Arc<Task>) {
    let prio = t.prio();
    loop {
        t.cpu.store(cpu_num, Ordering::Release);
        let mut rq = RQ[cpu_num].lock();
        if CPU[cpu_num].dead.load(Ordering::Relaxed) {
            // Chosen before it went: choose again among the online CPUs.
            drop(rq);
            cpu_num = select_cpu(&t, false);
            continue;
        }
        rq.queues[prio as usize].push_back(t);
        CPU[cpu_num].nr_queued.store(rq.len(), Ordering::Relaxed);
        break;
    }
    kick(cpu_num, prio);
}

/// Ask `cpu` to reschedule if a context of `prio` should preempt its current
/// one (its idle context always; a lower level too).
fn kick(cpu_num: usize, prio: Prio) {
    let curr = CPU[cpu_num].curr_prio.load(Ordering::Relaxed);
    if curr != u8::MAX && (prio as u8) >= curr {
        return;
    }
    let pc = &PERCPU[cpu_num];
    pc.need_resched.store(true, Ordering::SeqCst);
    // A polling idle CPU sees the flag by itself (see `CpuSched::polling`).
    if cpu_num != percpu::cpu_id() && !CPU[cpu_num].polling.load(Ordering::SeqCst) {
        apic::send_ipi(pc.apic_id.load(Ordering::Relaxed), interrupts::VEC_RESCHED);
    }
}

/// Wake `t` if its state is in `mask` (see [`wake_mask`]). True if woken.
/// Linux `try_to_wake_up`.
pub fn wake(t: &Arc<Task>, mask: u8) -> bool {
    wake_on(t, mask, false)
}

/// [`wake`] from a waker that sleeps next (Linux `WF_SYNC`): `t` is queued
/// on the waker's CPU where its affinity allows.
pub fn wake_sync(t: &Arc<Task>, mask: u8) -> bool {
    wake_on(t, mask, true)
}

fn wake_on(t: &Arc<Task>, mask: u8, sync: bool) -> bool {
    let g = t.sched_lock.lock();
    let st = t.state();
    if st == State::Dead || mask & (1 << st as u8) == 0 {
        return false;
    }
    t.state.store(State::Running as u8, Ordering::Release);
    if t.on_rq.load(Ordering::Acquire) {
        // Still on its CPU (it has not blocked yet) or queued: it will see
        // the running state.
        return true;
    }
    t.on_rq.store(true, Ordering::Release);
    // It may still be switching away on its last CPU: wait for that to end
    // before queueing it (Linux's `smp_cond_load_acquire(&p->on_cpu, !VAL)`
    // in try_to_wake_up). Waiting here, holding no run-queue lock, keeps the
    // picker from ever spinning on a context while holding its own run-queue
    // lock, which could deadlock two CPUs that woke each other's contexts.
    while t.on_cpu.load(Ordering::Acquire) {
        cpu::pause();
    }
    let c = select_cpu(t, sync);
    if kport::trace::on(kport::trace::Event::SchedWakeup) {
        trace_wakeup(t, c);
    }
    enqueue(c, t.clone());
    drop(g);
    true
}

/// Linux's `prio` of a priority level, as trace events print it: 100 for
/// high (nice −20), 120 for normal, 139 for idle (nice 19).
fn linux_prio(t: &Task) -> u64 {
    match t.prio() {
        task::Prio::High => 100,
        task::Prio::Normal => 120,
        task::Prio::Idle => 139,
    }
}

/// The `sched_switch` tracepoint (the names go to the trace's name table).
#[cold]
#[inline(never)]
fn trace_switch(prev: &Task, next: &Task) {
    kport::trace::save_comm(prev.id as u64, prev.name().as_str());
    kport::trace::save_comm(next.id as u64, next.name().as_str());
    let state = match prev.state() {
        State::Running => b'R',
        State::Interruptible => b'S',
        State::Uninterruptible | State::New => b'D',
        State::Parked => b'P',
        State::Idle => b'I',
        State::Dead => b'X',
    };
    kport::trace::emit(
        kport::trace::Event::SchedSwitch,
        [prev.id as u64, linux_prio(prev), state as u64, next.id as u64, linux_prio(next)],
        "",
        "",
    );
}

/// The `sched_wakeup` tracepoint: `t` goes to `cpu`'s run queue.
#[cold]
#[inline(never)]
fn trace_wakeup(t: &Task, cpu: usize) {
    kport::trace::save_comm(t.id as u64, t.name().as_str());
    kport::trace::emit(kport::trace::Event::SchedWakeup, [t.id as u64, linux_prio(t), cpu as u64, 0, 0], "", "");
}

/// Reschedule from the preemption points of `preempt_enable` and lock
/// release (only under `preempt=full`).
pub fn preempt_point() {
    if preempt_full() && !percpu::current_raw().is_null() {
        schedule_inner(true);
    }
}

/// Reschedule on the way out of an interrupt (only under `preempt=full`;
/// the idle context reschedules by itself after `hlt`).
pub fn preempt_from_irq() {
    let p = current_ptr();
    if p.is_null() || !preempt_full() {
        return;
    }
    // SAFETY: the running context is alive.
    if unsafe { (*p).is_idle() } {
        return;
    }
    schedule_inner(true);
}

/// Let other contexts run if the scheduler asked for it (Linux
/// `cond_resched`). Like Linux's, it does nothing in atomic context
/// (preemption disabled, an interrupt or its exit path, interrupts off):
/// there the caller may not give up the CPU.
pub fn cond_resched() {
    if percpu::need_resched() && percpu::preempt_count() == 0 && percpu::irq_frames() == 0 && cpu::irqs_enabled() {
        schedule_inner(true);
    }
}

/// Give the CPU to the next runnable context of the same or a higher level
/// (Linux `yield`).
pub fn yield_now() {
    schedule_inner(true);
}

/// Sleep in the announced state (see the module docs). Linux `schedule`.
pub fn schedule() {
    assert_may_sleep("schedule");
    schedule_inner(false);
}

/// Panic with a clear message if the caller may not sleep (Linux
/// `might_sleep`: "sleeping function called from invalid context").
#[track_caller]
pub fn assert_may_sleep(what: &str) {
    let pcount = percpu::preempt_count();
    let irq = percpu::irq_depth();
    // An interrupt's exit path (irq_exit, softirqs) runs on the interrupted
    // context's stack: blocking there would block that context.
    let frames = percpu::irq_frames();
    if pcount != 0 || frames != 0 || !cpu::irqs_enabled() {
        panic!(
            "BUG: sleeping function called from invalid context: {what} with preempt_count={pcount}, in_irq={}, in_irq_exit={}, irqs_disabled={}",
            irq != 0,
            frames != 0 && irq == 0,
            !cpu::irqs_enabled()
        );
    }
}

/// Announce the state the running context sleeps in at its next
/// [`schedule`], and what it waits on.
pub fn set_current_state(st: State, wchan: &'static str) {
    with_current(|t| {
        let _g = t.sched_lock.lock();
        t.state.store(st as u8, Ordering::Release);
        *t.wchan.lock() = wchan;
    });
}

/// The scheduler proper. `preempt`: the context is preempted or yields, so
/// it stays runnable whatever state it announced.
fn schedule_inner(preempt: bool) {
    let irqs_on = crate::sync::irq_save();
    let pc = percpu::this_cpu();
    let me = pc.cpu.load(Ordering::Relaxed) as usize;
    let prev_ptr = current_ptr();
    // SAFETY: the running context is alive while it runs.
    let prev = unsafe { &*prev_ptr };

    let blocking = !preempt && prev.state() != State::Running;
    assert!(!(blocking && prev.is_idle()), "BUG: the idle context of cpu {me} tried to sleep");
    let mut hooked = false;
    let hook = (blocking && prev.has_worker_hooks() && prev.state() != State::Dead).then(|| HOOKS.get()).flatten();
    if let (Some(h), Some(d)) = (hook, prev.data()) {
        h.sleeping(&d);
        hooked = true;
    }
    // Decide once, under the context's own lock, whether it stays runnable.
    // A wake-up after this point sees on_rq false and queues it itself (once
    // the switch is over), so prev must not be queued again below.
    let prev_runnable = {
        let _g = prev.sched_lock.lock();
        if !preempt && prev.state() != State::Running {
            prev.on_rq.store(false, Ordering::Release);
            false
        } else {
            !prev.is_idle()
        }
    };

    let mut rq = RQ[me].lock();
    pc.need_resched.store(false, Ordering::Relaxed);
    if prev_runnable {
        if prev.affinity() & (1 << me) != 0 && CPU[me].online.load(Ordering::Relaxed) {
            // SAFETY: prev_ptr came from Arc::into_raw and is alive; the queue
            // gets a reference of its own.
            let a = unsafe {
                Arc::increment_strong_count(prev_ptr);
                Arc::from_raw(prev_ptr)
            };
            rq.queues[prev.prio() as usize].push_back(a);
        } else {
            CPU[me].migrate_prev.store(true, Ordering::Relaxed);
        }
    }
    // An offline CPU runs only its idle context, which sends what is queued
    // here to the online CPUs.
    let queued = if CPU[me].online.load(Ordering::Relaxed) {
        (0..NR_PRIOS).find_map(|p| rq.queues[p].pop_front())
    } else {
        None
    };
    let next = match queued {
        Some(n) => n,
        None => rq.idle.clone().expect("run queue without an idle context"),
    };
    CPU[me].nr_queued.store(rq.len(), Ordering::Relaxed);
    if core::ptr::eq(Arc::as_ptr(&next), prev_ptr) {
        // Nothing better to run: keep going (drop the queue's reference).
        CPU[me].curr_prio.store(if prev.is_idle() { u8::MAX } else { prev.prio() as u8 }, Ordering::Relaxed);
        drop(rq);
        drop(next);
        crate::sync::irq_restore(irqs_on);
        if hooked {
            run_hook_running(prev);
        }
        return;
    }
    // Every path that queues a context on another CPU waits for its switch
    // to finish first (see `wake`), so this never spins.
    debug_assert!(!next.on_cpu.load(Ordering::Acquire), "picked a context still running elsewhere");
    while next.on_cpu.load(Ordering::Acquire) {
        cpu::pause();
    }
    let now = cpu::rdtsc();
    let ran = now.saturating_sub(prev.run_start_tsc.load(Ordering::Relaxed));
    prev.cpu_time_ns.fetch_add(crate::time::tsc_to_ns(ran), Ordering::Relaxed);
    next.on_cpu.store(true, Ordering::Relaxed);
    next.cpu.store(me, Ordering::Relaxed);
    next.run_start_tsc.store(now, Ordering::Relaxed);
    next.nr_switches.fetch_add(1, Ordering::Relaxed);
    next.slice_left_ns.store(TIMESLICE_NS, Ordering::Relaxed);
    CPU[me].curr_prio.store(if next.is_idle() { u8::MAX } else { next.prio() as u8 }, Ordering::Relaxed);
    CPU[me].switches.fetch_add(1, Ordering::Relaxed);
    CPU[me].curr_id.store(next.id, Ordering::Relaxed);
    if kport::trace::on(kport::trace::Event::SchedSwitch) {
        trace_switch(prev, &next);
    }
    let next_ptr = Arc::into_raw(next);
    pc.current.store(next_ptr as *mut u8, Ordering::Release);
    crate::mem::stack::tlb_catch_up();
    // The run-queue lock stays held across the switch; the context that
    // resumes on this CPU releases it in finish_switch.
    core::mem::forget(rq);
    // SAFETY: both contexts are alive; prev's saved area is ours to write
    // (it runs here), next's was completed by its last switch-out (on_cpu
    // was observed false with acquire ordering above). Interrupts are off.
    let from = unsafe {
        let ps = &mut *prev.saved.get();
        let ns = &*(*next_ptr).saved.get();
        sched_switch(&mut ps.rsp, ns.rsp, prev_ptr as u64)
    };
    finish_switch(from as *const Task);
    crate::sync::irq_restore(irqs_on);
    if hooked {
        run_hook_running(prev);
    }
}

fn run_hook_running(t: &Task) {
    if let (Some(h), Some(d)) = (HOOKS.get(), t.data()) {
        percpu::preempt_disable();
        h.running(&d);
        percpu::preempt_enable_no_resched();
    }
}

/// Complete a switch on the new context's side: the previous context may now
/// run elsewhere, the run-queue lock is released, and a dead previous context
/// is reaped.
fn finish_switch(from: *const Task) {
    let me = percpu::cpu_id();
    // SAFETY: `from` is the previous context's `current` reference, handed
    // over through sched_switch; we take ownership of it here.
    let from = unsafe { Arc::from_raw(from) };
    from.on_cpu.store(false, Ordering::Release);
    // SAFETY: this CPU took RQ[me] in schedule_inner before switching and
    // nobody else releases it.
    unsafe { RQ[me].force_unlock() };
    percpu::preempt_enable_no_resched();
    if CPU[me].migrate_prev.swap(false, Ordering::Relaxed) {
        let c = select_cpu(&from, false);
        enqueue(c, from.clone());
    }
    if from.state() == State::Dead {
        reap(&from);
    }
}

fn reap(t: &Arc<Task>) {
    drop(t.stack.lock().take());
    // The data may hold a handle of this very context (kthreads do): drop it
    // now to break that cycle.
    drop(t.data.lock().take());
    {
        let mut all = TASKS.lock();
        if let Some(i) = all.iter().position(|x| Arc::ptr_eq(x, t)) {
            all.swap_remove(i);
        }
    }
    NR_TASKS.fetch_sub(1, Ordering::Relaxed);
    t.reaped.store(true, Ordering::Release);
    t.exit_waiters.wake_all();
}

/// Wait until `t` has exited and been reaped (its stack is freed).
pub fn join(t: &Arc<Task>) {
    t.exit_waiters.wait_until("join", || t.is_reaped());
}

/// Change `t`'s affinity. A queued or running context on a CPU it may no
/// longer use moves at once (running: at its next switch).
pub fn set_affinity(t: &Arc<Task>, mask: u64) -> Result<(), SpawnError> {
    if mask & present_mask() == 0 {
        return Err(SpawnError::BadAffinity);
    }
    let _g = t.sched_lock.lock();
    t.affinity.store(mask, Ordering::Release);
    let c = t.cpu();
    if mask & (1 << c) != 0 {
        return Ok(());
    }
    // Queued on a CPU it may no longer use: move it, but only once it has
    // finished switching away (a preempted context is queued before its
    // switch completes).
    let moved = loop {
        let mut rq = RQ[c].lock();
        let mut found = None;
        let mut busy = false;
        for q in rq.queues.iter_mut() {
            if let Some(i) = q.iter().position(|x| Arc::ptr_eq(x, t)) {
                if t.on_cpu.load(Ordering::Acquire) {
                    busy = true;
                } else {
                    found = q.remove(i);
                }
                break;
            }
        }
        CPU[c].nr_queued.store(rq.len(), Ordering::Relaxed);
        drop(rq);
        if !busy {
            break found;
        }
        cpu::pause();
    };
    if let Some(m) = moved {
        let n = select_cpu(&m, false);
        enqueue(n, m);
    } else if t.on_cpu.load(Ordering::Acquire) {
        // Running there: make it switch out; schedule() migrates it.
        let pc = &PERCPU[c];
        pc.need_resched.store(true, Ordering::Release);
        if c != percpu::cpu_id() {
            apic::send_ipi(pc.apic_id.load(Ordering::Relaxed), interrupts::VEC_RESCHED);
        }
    } else {
        t.cpu.store((mask & present_mask()).trailing_zeros() as usize, Ordering::Release);
    }
    Ok(())
}

/// Change `t`'s priority level (takes effect at its next queueing).
pub fn set_prio(t: &Task, p: Prio) {
    t.prio.store(p as u8, Ordering::Relaxed);
}

/// The scheduler tick, in the timer interrupt (Linux `sched_tick`): give the
/// workqueue's tick hook the context it interrupted, if that is a worker
/// (`wq_worker_tick`); then the slice accounting: ask for a reschedule when
/// the slice is used up and another context of the same or a higher level
/// waits.
pub fn tick(elapsed_ns: u64) {
    let pc = percpu::this_cpu();
    let me = pc.cpu.load(Ordering::Relaxed) as usize;
    let p = current_ptr();
    if p.is_null() {
        return;
    }
    // SAFETY: the running context is alive.
    let t = unsafe { &*p };
    if t.is_idle() {
        if CPU[me].nr_queued.load(Ordering::Relaxed) > 0 {
            pc.need_resched.store(true, Ordering::Relaxed);
        }
        return;
    }
    // Interrupt context (this CPU's interrupt depth is raised), for the
    // interrupted context, which cannot block meanwhile. An exiting context
    // (dead, still switching away) is not a worker any more.
    if t.has_worker_hooks()
        && t.state() != State::Dead
        && let (Some(h), Some(d)) = (HOOKS.get(), t.data())
    {
        t.hook_ticks.fetch_add(1, Ordering::Relaxed);
        h.tick(&d);
    }
    let left = t.slice_left_ns.load(Ordering::Relaxed).saturating_sub(elapsed_ns);
    t.slice_left_ns.store(left, Ordering::Relaxed);
    if left == 0 {
        let rq = RQ[me].lock();
        if rq.highest_prio().is_some_and(|hp| hp <= t.prio()) {
            pc.need_resched.store(true, Ordering::Relaxed);
        } else {
            t.slice_left_ns.store(TIMESLICE_NS, Ordering::Relaxed);
        }
    }
}

/// Take one runnable context allowed on `me` from a busy CPU's queue. The
/// context's `sched_lock` is held across the move so that `set_affinity`
/// never sees it half-moved.
fn steal(me: usize) -> bool {
    let n = percpu::cpus_up();
    for k in 1..n {
        let victim = (me + k) % n;
        if CPU[victim].nr_queued.load(Ordering::Relaxed) == 0 || !CPU[victim].online.load(Ordering::Relaxed) {
            continue;
        }
        let Some(mut rq) = RQ[victim].try_lock() else { continue };
        let mut cand = None;
        'q: for (p, q) in rq.queues.iter().enumerate() {
            for (i, t) in q.iter().enumerate() {
                if t.affinity() & (1 << me) != 0 && !t.on_cpu.load(Ordering::Acquire) {
                    cand = Some((p, i));
                    break 'q;
                }
            }
        }
        let Some((p, i)) = cand else { continue };
        let t = rq.queues[p][i].clone();
        let Some(tg) = t.sched_lock.try_lock() else { continue };
        drop(rq.queues[p].remove(i));
        CPU[victim].nr_queued.store(rq.len(), Ordering::Relaxed);
        drop(rq);
        enqueue(me, t.clone());
        drop(tg);
        return true;
    }
    false
}

/// The idle loop of a CPU (runs as its idle context, forever).
pub fn idle_loop() -> ! {
    let me = percpu::cpu_id();
    loop {
        cpu::cli();
        crate::mem::stack::tlb_catch_up();
        let pc = percpu::this_cpu();
        if !CPU[me].online.load(Ordering::Acquire) {
            offline_idle(me);
            continue;
        }
        if pc.need_resched.load(Ordering::Acquire) || CPU[me].nr_queued.load(Ordering::Relaxed) > 0 {
            schedule_inner(true);
            continue;
        }
        if CPU[me].online.load(Ordering::Relaxed) && steal(me) {
            continue;
        }
        let window = POLL_NS[me].load(Ordering::Relaxed);
        if window > 0 && poll_idle(me, pc, window) {
            continue;
        }
        let t0 = cpu::rdtsc();
        cpu::sti_hlt();
        adapt_poll(me, window, crate::time::tsc_to_ns(cpu::rdtsc().wrapping_sub(t0)));
    }
}

/// How long an idle CPU polls before it halts, per CPU (ns; 0: it halts at
/// once), adapted by [`kport::idle::next_window`]. Waking a halted CPU costs
/// an IPI and, under QEMU, the wake-up of the vCPU's host thread.
static POLL_NS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Poll for work with interrupts on, for `window` ns after the last
/// interrupt taken here (an interrupt's handler runs as it would from a
/// halt, and a CPU that keeps taking them keeps polling). True if work came
/// or interrupts did (the caller looks again); false when the window ran
/// out with nothing (the caller halts, and then judges the window by the
/// whole idle period). Returns with interrupts off.
fn poll_idle(me: usize, pc: &percpu::PerCpu, window: u64) -> bool {
    let window_cycles = crate::time::ns_to_tsc(window);
    let mut irqs = pc.irqs.load(Ordering::Relaxed);
    let mut since = cpu::rdtsc();
    let mut busy = false;
    CPU[me].polling.store(true, Ordering::SeqCst);
    cpu::sti();
    loop {
        if pc.need_resched.load(Ordering::SeqCst)
            || CPU[me].nr_queued.load(Ordering::Relaxed) > 0
            || !CPU[me].online.load(Ordering::Relaxed)
        {
            busy = true;
            break;
        }
        let now_irqs = pc.irqs.load(Ordering::Relaxed);
        let now = cpu::rdtsc();
        if now_irqs != irqs {
            irqs = now_irqs;
            since = now;
            busy = true;
        } else if now.wrapping_sub(since) >= window_cycles {
            break;
        }
        cpu::pause();
    }
    cpu::cli();
    // After this, a waker sends the IPI; the caller's look at
    // `need_resched` comes after the store (SeqCst on both sides).
    CPU[me].polling.store(false, Ordering::SeqCst);
    busy
}

/// Adjust this CPU's window after it polled `w` ns in vain and then
/// halted for `slept` ns.
fn adapt_poll(me: usize, w: u64, slept: u64) {
    let next = kport::idle::next_window(w, w.saturating_add(slept));
    if next != w {
        POLL_NS[me].store(next, Ordering::Relaxed);
    }
}

/// Take the contexts queued on `c` that are not still switching out
/// elsewhere; if none is left and `die` is set, mark the CPU dead under
/// the same lock (so nothing is queued there after).
fn take_queued(c: usize, die: bool) -> (Vec<Arc<Task>>, bool) {
    let mut rq = RQ[c].lock();
    let mut out = Vec::new();
    for q in rq.queues.iter_mut() {
        let mut i = 0;
        while i < q.len() {
            if q[i].on_cpu.load(Ordering::Acquire) {
                i += 1;
            } else {
                out.push(q.remove(i).expect("index checked"));
            }
        }
    }
    CPU[c].nr_queued.store(rq.len(), Ordering::Relaxed);
    let dead = die && out.is_empty() && rq.len() == 0;
    if dead {
        CPU[c].dead.store(true, Ordering::Release);
    }
    (out, dead)
}

/// The idle context of an offline CPU: send what is still queued here to
/// the online CPUs; once nothing is, stop the CPU until [`cpu_bring_up`]
/// (Linux's `cpuhp_report_idle_dead`, then `play_dead`). Interrupts are off.
fn offline_idle(me: usize) {
    percpu::this_cpu().need_resched.store(false, Ordering::Relaxed);
    let (moved, dead) = take_queued(me, true);
    for t in moved {
        let n = select_cpu(&t, false);
        enqueue(n, t);
    }
    if !dead {
        cpu::pause();
        return;
    }
    // Interrupts already on their way here (from before the lines moved)
    // are taken now, while the CPU can still run their handlers.
    cpu::sti();
    cpu::pause();
    cpu::cli();
    timer::stop_here();
    timer::migrate_to(online_mask().trailing_zeros() as usize);
    call::close_here();
    crate::mem::stack::tlb_park();
    CPU[me].deaths.fetch_add(1, Ordering::Relaxed);
    CPU[me].halted.store(true, Ordering::Release);
    // Halted with interrupts off: no timer, no IPI, no device interrupt is
    // taken; only `cpu_bring_up`'s NMI ends each halt.
    while !CPU[me].revive.load(Ordering::Acquire) {
        cpu::hlt();
    }
    CPU[me].halted.store(false, Ordering::Release);
    crate::mem::stack::tlb_revive();
    call::open_here();
    timer::restart_here();
    CPU[me].dead.store(false, Ordering::Release);
    CPU[me].online.store(true, Ordering::Release);
    CPU[me].revive.store(false, Ordering::Release);
}

/// Is this NMI `cpu_bring_up`'s wake-up of this CPU (then it only ends the
/// halt)?
pub fn nmi_wakes_offline_cpu() -> bool {
    let c = &CPU[percpu::cpu_id()];
    c.wake_nmis.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
}

/// Has `c` stopped (hot-unplugged, its timers and calls handed over, and
/// halted)?
pub fn cpu_dead(c: usize) -> bool {
    c < MAX_CPUS && CPU[c].halted.load(Ordering::Acquire)
}

/// Context switches on `c` and the times it went dead (tests: a dead CPU
/// switches no more).
pub fn cpu_switches(c: usize) -> (u64, u64) {
    if c >= MAX_CPUS {
        return (0, 0);
    }
    (CPU[c].switches.load(Ordering::Relaxed), CPU[c].deaths.load(Ordering::Relaxed))
}

/// The id of the context running on `c` (0 before the scheduler starts).
pub fn cpu_curr_id(c: usize) -> usize {
    if c < MAX_CPUS { CPU[c].curr_id.load(Ordering::Relaxed) } else { 0 }
}

/// Put a dead CPU back in service: mark it online and wake it from its
/// halt with NMIs until it runs. Context: may sleep. Returns false if it
/// did not answer within `timeout_ns`.
pub fn cpu_bring_up(c: usize, timeout_ns: u64) -> bool {
    if !CPU[c].dead.load(Ordering::Acquire) {
        // Never stopped (it cannot be mid-way: `cpu_down` waits for it).
        CPU[c].online.store(true, Ordering::Release);
        return true;
    }
    CPU[c].revive.store(true, Ordering::Release);
    let end = crate::time::now_ns().saturating_add(timeout_ns);
    while !CPU[c].online.load(Ordering::Acquire) {
        if crate::time::now_ns() >= end {
            return false;
        }
        CPU[c].wake_nmis.fetch_add(1, Ordering::AcqRel);
        apic::send_nmi(PERCPU[c].apic_id.load(Ordering::Relaxed));
        timer::sleep_until(crate::time::now_ns() + 1_000_000);
    }
    true
}

/// Take `cpu` out of service: no new work is placed there, the contexts
/// queued there move to the online CPUs, and the running one is asked to
/// switch out (it moves at its next switch). The CPU then stops by itself
/// once it runs its idle context ([`offline_idle`]). Per-CPU threads are
/// parked by their owners first.
pub fn cpu_set_offline(c: usize) {
    CPU[c].online.store(false, Ordering::Release);
    let (movable, _) = take_queued(c, false);
    for t in movable {
        let n = select_cpu(&t, false);
        enqueue(n, t);
    }
    // A running context that may go elsewhere is asked to switch out.
    let pc = &PERCPU[c];
    pc.need_resched.store(true, Ordering::Release);
    if c != percpu::cpu_id() {
        apic::send_ipi(pc.apic_id.load(Ordering::Relaxed), interrupts::VEC_RESCHED);
    }
}

/// Is `cpu` taking work?
pub fn cpu_online(c: usize) -> bool {
    c < MAX_CPUS && CPU[c].online.load(Ordering::Acquire)
}

/// Number of live (not yet reaped) spawned contexts.
pub fn nr_tasks() -> usize {
    NR_TASKS.load(Ordering::Relaxed)
}

/// The reschedule IPI: the sender already set `need_resched`; the exit path
/// of the interrupt does the rest. Also re-evaluates this CPU's next timer
/// deadline (a remote CPU may have armed an earlier timer here).
fn resched_ipi(_f: &mut interrupts::InterruptFrame) {
    apic::eoi();
    timer::reprogram_if_asked();
}

/// Install the scheduler's interrupt handlers and reserve its tables (boot
/// CPU, once).
pub fn init_interrupts() {
    TASKS.lock().reserve(TASKS_RESERVE);
    interrupts::set_handler(interrupts::VEC_RESCHED, resched_ipi);
    interrupts::set_handler(interrupts::VEC_TIMER, timer::timer_interrupt);
    interrupts::set_handler(interrupts::VEC_CALL, call::ipi_handler);
}

pub mod call;
