//! `kport::Port` (the kthreadd project's port) over Redox's own primitives.
//!
//! * A port context is a kernel-only Redox context from [`context::spawn`], without a user
//!   address space, named `[name]`. Its port record ([`Task`]) hangs off `Context::kthread`; the
//!   entry trampoline ([`kthread_entry`]) takes no argument and finds the thread function there.
//! * Blocking is Linux's protocol on Redox's: `set_current_state` records the state the context
//!   will sleep in; `schedule` takes the context's lock, and if no wake-up reset that state it
//!   calls `Context::block` and `context::switch`. A wake-up resets the state under the same lock
//!   and unblocks the context through `wakeup_context` (cross-CPU: the target CPU's wake-up list
//!   and an IPI). No wake-up is lost between the two.
//! * Bound contexts get `sched_affinity` and `cpu_id`; a running context whose affinity no longer
//!   includes its CPU moves at its next switch (see `super::switch_enter`).
//! * Redox never preempts kernel code and runs it with interrupts off. `yield_now`,
//!   `cond_resched` and `schedule` are the only places where a kernel thread lets pending
//!   interrupts in (a short `sti; nop; cli` window) and runs expired port timers.
//!
//! Lock order: a context's `ContextLock` (L4) is taken alone, never with another one held; the
//! per-CPU timer and call queues are leaves. The lock token every Redox lock asks for comes from
//! [`with_token`] (see `token.rs`): the token lent by the Redox hook running on this CPU, or the
//! calling kernel thread's own.

use alloc::{
    boxed::Box,
    string::{String, ToString},
    sync::{Arc, Weak},
    vec::Vec,
};
use core::{
    fmt::Write,
    sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering},
};

// The subsystem's API (the only lines to adapt when its crates change).
#[cfg(feature = "ktests")]
use kport::{
    harness::{Harness, MemCounters},
    sync::Mutex as SleepingMutex,
};
use kport::{
    AtomicContext, CpuMask, CpuTopology, Error, HotplugHooks, Port, PortTask, PortTimer, Priority,
    Result, SchedHooks, SleepState, SpawnSpec, TaskData, TaskRef, TaskState, EINVAL, ENOMEM,
};
use spin::{Mutex, Once};

use super::{
    clock,
    timer::Timer,
    token::{self, with_token, Own},
    IrqGuard,
};
use crate::{
    context::{self, wakeup_context, Context, ContextLock, Status},
    cpu_set::{LogicalCpuId, LogicalCpuSet},
    percpu::PercpuBlock,
    sync::CleanLockToken,
};

/// The port installed at boot.
pub static PORT: RedoxPort = RedoxPort;

/// Zero-sized: the state lives in the contexts, the per-CPU blocks and the statics below.
pub struct RedoxPort;

// Scheduling states of a port context (bit positions of the wake masks).
const RUNNING: u8 = 0;
const INTERRUPTIBLE: u8 = 1;
const UNINTERRUPTIBLE: u8 = 2;
const PARKED: u8 = 3;
const NEW: u8 = 4;
const DEAD: u8 = 5;
/// Linux `TASK_IDLE`: woken as `UNINTERRUPTIBLE` is, listed `I`.
const IDLE: u8 = 6;
/// The highest state value.
const LAST_STATE: u8 = IDLE;

/// What `PortTask::wake` wakes.
const WAKE_NORMAL: u8 = (1 << INTERRUPTIBLE) | (1 << UNINTERRUPTIBLE) | (1 << IDLE) | (1 << NEW);
/// What `PortTask::wake_parked` wakes.
const WAKE_PARKED: u8 = 1 << PARKED;
/// What a timed sleep's timer wakes.
const WAKE_TIMEOUT: u8 =
    (1 << INTERRUPTIBLE) | (1 << UNINTERRUPTIBLE) | (1 << IDLE) | (1 << PARKED);

/// Redox `prio` (0..40, lower is more weight) of each port priority.
const PRIO_HIGH: usize = 10;
const PRIO_NORMAL: usize = 20;
const PRIO_IDLE: usize = 39;

/// The port's record of a context (Linux keeps these facts in `task_struct`).
pub struct Task {
    /// `Context::debug_id`: unique, never reused.
    id: usize,
    ctx: Weak<ContextLock>,
    state: AtomicU8,
    wchan: Mutex<&'static str>,
    entry: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    data: Mutex<Option<TaskData>>,
    worker_hooks: bool,
    /// The affinity asked for (the context's `sched_affinity` is this less offline CPUs).
    affinity: AtomicU64,
    switches: AtomicU64,
    /// CPU time of its ended slices, in ns of `clock::now_ns` ([`Task::switched`]).
    run_ns: AtomicU64,
    /// When its current or last slice began.
    slice_start: AtomicU64,
    /// Set while the context is blocked only to move to another CPU.
    pub(super) migrating: AtomicBool,
    /// Set by `switch_enter` when it gave the worker-sleeping callback; `switch_leave` owes the
    /// worker-running one.
    pub(super) sleep_hooked: AtomicBool,
    /// The context's own lock token (port-spawned contexts, from their entry on; `token.rs`).
    pub(super) token: Mutex<Own>,
}

impl core::fmt::Debug for Task {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("state", &self.state.load(Ordering::Relaxed))
            .field("wchan", &*self.wchan.lock())
            .finish_non_exhaustive()
    }
}

impl Task {
    /// Its id (`Context::debug_id`), as trace records name it.
    pub(super) fn trace_id(&self) -> usize {
        self.id
    }

    /// Its state letter for `sched_switch` (`R`, `S`, `D`, `P`; `X` once it has exited).
    pub(super) fn trace_state(&self) -> u8 {
        match self.state.load(Ordering::SeqCst) {
            RUNNING => b'R',
            INTERRUPTIBLE => b'S',
            UNINTERRUPTIBLE | NEW => b'D',
            PARKED => b'P',
            IDLE => b'I',
            _ => b'X',
        }
    }

    /// Calls the workqueue's scheduler hooks?
    pub(super) fn worker_hooks(&self) -> bool {
        self.worker_hooks
    }

    /// `switch()` makes this context leave its CPU (`out`) or take one, at `now`: ends or
    /// begins a slice of its CPU time. Called from the switch hook only, so the two alternate.
    pub(super) fn switched(&self, out: bool, now: u64) {
        if out {
            let start = self.slice_start.load(Ordering::Relaxed);
            self.run_ns
                .fetch_add(now.saturating_sub(start), Ordering::Relaxed);
        } else {
            self.slice_start.store(now, Ordering::Relaxed);
        }
    }

    /// The data given at spawn.
    pub(super) fn data(&self) -> Option<TaskData> {
        self.data.lock().clone()
    }
}

/// A [`TaskRef`]: keeps the context's memory alive, not the context running.
pub struct Handle {
    task: Arc<Task>,
    ctx: Arc<ContextLock>,
}

/// Every port context, to apply CPU offline/online to their affinities.
static TASKS: Mutex<Vec<Weak<Task>>> = Mutex::new(Vec::new());
static SPAWN_FAILURES: AtomicUsize = AtomicUsize::new(0);
static SCHED_HOOKS: Once<&'static dyn SchedHooks> = Once::new();
static HOTPLUG_HOOKS: Mutex<Vec<&'static dyn HotplugHooks>> = Mutex::new(Vec::new());
/// Serializes `cpu_down` / `cpu_up` (a sleeping lock: the hooks park threads).
#[cfg(feature = "ktests")]
static HOTPLUG_OP: SleepingMutex<()> = SleepingMutex::new(());
/// CPUs taking work (bit n = CPU n); Redox has no hot-plug, so offline is logical.
static ONLINE: AtomicU64 = AtomicU64::new(0);

fn present() -> u64 {
    CpuMask::first(crate::cpu_count() as usize).0
}

/// Mark `cpu` as taking work (boot, and `cpu_up`).
pub(super) fn set_online(cpu: usize, online: bool) {
    if cpu < 64 {
        if online {
            ONLINE.fetch_or(1 << cpu, Ordering::AcqRel);
        } else {
            ONLINE.fetch_and(!(1 << cpu), Ordering::AcqRel);
        }
    }
}

/// CPUs taking work.
pub(super) fn online() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

/// The mask a context really runs on: what it asked for, less offline CPUs (unless that leaves
/// nothing: a thread bound to an offline CPU still runs there, as a parked per-CPU thread must).
fn effective(mask: u64) -> u64 {
    let m = mask & present();
    let on = m & online();
    if on != 0 {
        on
    } else {
        m
    }
}

fn to_cpu_set(mask: u64) -> LogicalCpuSet {
    let set = LogicalCpuSet::empty();
    for cpu in CpuMask(mask).iter() {
        set.atomic_set(LogicalCpuId::new(cpu as u32));
    }
    set
}

fn from_cpu_set(set: &LogicalCpuSet) -> u64 {
    set.iter()
        .map(|c| c.get() as usize)
        .filter(|&c| c < 64)
        .fold(0, |m, c| m | (1 << c))
}

/// The CPU a woken context goes to (Linux `select_task_rq` with a simple `select_idle_sibling`):
/// its only allowed CPU; else its last CPU if allowed and idle; else an idle allowed CPU; else its
/// last CPU if allowed; else the first allowed one. The choice must be made here: an idle CPU's
/// work stealing tries CPUs `curr_cpu + i % num_cpu` (sic), so it never takes a context queued on
/// a lower-numbered CPU behind a busy kernel thread. The caller holds no context lock: the idle
/// test try-locks other CPUs' idle contexts.
fn pick_cpu(token: &mut CleanLockToken, last: Option<LogicalCpuId>, allowed: u64) -> LogicalCpuId {
    let allowed = CpuMask(allowed & present());
    let last = last
        .map(|c| c.get() as usize)
        .filter(|&c| allowed.contains(c));
    let choice = if allowed.count() <= 1 {
        allowed.first_cpu()
    } else {
        last.filter(|&c| super::cpu_is_idle(c, token))
            .or_else(|| allowed.iter().find(|&c| super::cpu_is_idle(c, token)))
            .or(last)
            .or_else(|| allowed.first_cpu())
    };
    match choice {
        Some(c) => LogicalCpuId::new(c as u32),
        None => crate::cpu_id(),
    }
}

/// A record for a context the port did not spawn (it has no token of its own).
fn foreign_task(ctx: &Arc<ContextLock>, guard: &Context) -> Arc<Task> {
    Arc::new(Task {
        id: guard.debug_id as usize,
        ctx: Arc::downgrade(ctx),
        state: AtomicU8::new(RUNNING),
        wchan: Mutex::new(""),
        entry: Mutex::new(None),
        data: Mutex::new(None),
        worker_hooks: false,
        affinity: AtomicU64::new(from_cpu_set(&guard.sched_affinity)),
        switches: AtomicU64::new(0),
        run_ns: AtomicU64::new(0),
        slice_start: AtomicU64::new(clock::now_ns()),
        migrating: AtomicBool::new(false),
        sleep_hooked: AtomicBool::new(false),
        token: Mutex::new(Own::None),
    })
}

/// The calling context's port record: the one `switching_to` recorded for this CPU, or (a
/// context not spawned by the port, at its first port call) a new one.
pub(super) fn current_task() -> (Arc<ContextLock>, Arc<Task>) {
    let ctx = context::current();
    if let Some(task) = super::current_port_task() {
        return (ctx, task);
    }
    let task = with_token(|token| {
        let mut guard = ctx.write(token.token());
        match guard.kthread {
            Some(ref t) => Arc::clone(t),
            None => {
                let t = foreign_task(&ctx, &guard);
                guard.kthread = Some(Arc::clone(&t));
                t
            }
        }
    });
    // It is this CPU's current context: `switching_to` would have recorded it so.
    let previous = PercpuBlock::current()
        .kthread
        .current
        .replace(Some(Arc::clone(&task)));
    drop(previous);
    (ctx, task)
}

/// Wake `task` if its state is in `mask` (Linux `try_to_wake_up`). True if it was woken.
fn wake_task(task: &Task, mask: u8, sync: bool) -> bool {
    let Some(ctx) = task.ctx.upgrade() else {
        return false;
    };
    with_token(|token| {
        let (last, allowed) = {
            let mut guard = ctx.write(token.token());
            let st = task.state.load(Ordering::SeqCst);
            if st > LAST_STATE || mask & (1 << st) == 0 {
                return false;
            }
            task.state.store(RUNNING, Ordering::SeqCst);
            if kport::trace::on(kport::trace::Event::SchedWakeup) {
                kport::trace::save_comm(task.id as u64, guard.name.as_str());
            }
            if st == NEW {
                guard.status = Status::Runnable;
            } else if !guard.unblock_no_ipi() {
                // Not blocked yet: its `schedule` sees RUNNING and does not block.
                return true;
            }
            if guard.running {
                // Blocked but still switching away on its CPU: the wake-up list entry is dropped
                // for a running context, and its switch sees it runnable and keeps it queued.
                return true;
            }
            let allowed = from_cpu_set(&guard.sched_affinity);
            if let Some(only) = CpuMask(allowed & present()).single() {
                // Bound: nothing to choose, and `cpu_id` already names that CPU (set at spawn,
                // by `set_affinity` and by every switch to it).
                drop(guard);
                trace_wakeup(task, only);
                let cpu = LogicalCpuId::new(only as u32);
                wakeup_context(&ctx, Some(cpu), &mut token.downgrade());
                return true;
            }
            (guard.cpu_id, allowed)
        };
        // Runnable now but on no run queue, and nobody else queues it (its state is RUNNING, so
        // other wake-ups stop above): its CPU is chosen with its lock released, so that the idle
        // test can try-lock other CPUs' idle contexts without holding two context locks.
        // A sync wake-up (the waker sleeps next) stays on this CPU where it may.
        let here = crate::cpu_id();
        let mut cpu = if sync && CpuMask(allowed).contains(here.get() as usize) {
            here
        } else {
            pick_cpu(token, last, allowed)
        };
        {
            let mut guard = ctx.write(token.token());
            // `set_affinity` may have run meanwhile.
            if !guard.sched_affinity.contains(cpu) {
                cpu = guard.sched_affinity.iter().next().unwrap_or(cpu);
            }
            guard.cpu_id = Some(cpu);
        }
        trace_wakeup(task, cpu.get() as usize);
        wakeup_context(&ctx, Some(cpu), &mut token.downgrade());
        true
    })
}

/// The `sched_wakeup` tracepoint: `task` goes to `cpu`'s run queue. The waker is named from this
/// CPU's record of its running context (the wake-up holds context locks: the port is not asked).
fn trace_wakeup(task: &Task, cpu: usize) {
    if !kport::trace::on(kport::trace::Event::SchedWakeup) {
        return;
    }
    let me = crate::cpu_id().get() as usize;
    let waker = super::CPU_CURRENT_ID
        .get(me)
        .map_or(0, |c| c.load(Ordering::Relaxed));
    kport::trace::emit_as(
        waker as u64,
        1,
        kport::trace::Event::SchedWakeup,
        [task.id as u64, super::TRACE_PRIO, cpu as u64, 0, 0],
        "",
        "",
    );
}

/// Open a short interrupt window at a kernel thread's yield point, so that the PIT tick and
/// IPIs queued while it ran are taken here, and run this CPU's expired port timers.
fn yield_point() {
    if PORT.in_atomic() || token::lent_here() {
        return;
    }
    // SAFETY: no lock is held and no lock token is borrowed here (port yield points are
    // sleepable and outside any lent scope), the context runs on its own kernel stack, and
    // Redox's interrupt handlers (each with a token of its own, as in the idle loop) may switch
    // away from it as they do from the idle loop; `cli` restores the kernel's interrupts-off
    // state.
    unsafe {
        crate::arch::interrupt::enable_and_nop();
        crate::arch::interrupt::disable();
    }
    // The timer map only when something there is due: taking the thread's lock token to lend
    // it costs more than the rest of the yield point.
    if super::timer::maybe_due() {
        with_token(|token| token::lend(token, super::timer::run_expired));
    }
    // What the window's interrupts (or the timers just run) left for the softirqs.
    super::irq::yield_point();
}

/// Count an interrupts-off section of the port's own in or out (what `irqs_disabled` reports:
/// Redox's kernel code always runs with interrupts off). `irq_save` and `irq_restore` keep it
/// around their flag changes; the yield point, which knows interrupts are off, keeps only it.
pub(super) fn count_irqs_off(entering: bool) {
    let pc = &PercpuBlock::current().kthread;
    let n = pc.irq_off.get();
    pc.irq_off.set(if entering {
        n.saturating_add(1)
    } else {
        n.saturating_sub(1)
    });
}

/// Tell `kport::local` where this CPU's number, preemption count, interrupt depth and count of
/// interrupts-off sections sit from the GS base (the processor control region, whose `percpu`
/// holds the `PercpuBlock`), so the subsystem does `cpu_id`, `in_irq`, `irq_save`/`irq_restore`
/// (`cli`/`sti` and the count) and `preempt_disable`/`preempt_enable` (which never reschedules
/// here) inline instead of calling the port. `cond_resched` stays a call: it opens an interrupt
/// window.
///
/// Context: boot, on the boot CPU, after `kport::install`.
pub(super) fn install_local_layout() {
    // The CPU number is a one-field struct of a `u32`: with the size of its field, the field
    // is all of it.
    const _: () = assert!(core::mem::size_of::<crate::cpu_set::LogicalCpuId>() == 4);
    // SAFETY: reads this CPU's GS base; kernel code runs with the kernel's (Redox writes the
    // processor control region's address there at CPU init, before anything of ours runs).
    let base = unsafe { x86::msr::rdmsr(x86::msr::IA32_GS_BASE) } as usize;
    let pb = PercpuBlock::current();
    let at = |p: *const u8| -> Option<u32> { u32::try_from((p as usize).wrapping_sub(base)).ok() };
    let cpu_id = at(core::ptr::addr_of!(pb.cpu_id).cast());
    let preempt_count = at(pb.kthread.preempt.as_ptr().cast());
    let irq_depth = at(pb.kthread.irq.as_ptr().cast());
    let irq_off_count = at(pb.kthread.irq_off.as_ptr().cast());
    let Some(cpu_id) = cpu_id
        .filter(|_| preempt_count.is_some() && irq_depth.is_some() && irq_off_count.is_some())
    else {
        kport::warn::warn(
            "kthread: the per-CPU block is not at the GS base; kport::local keeps calling the port",
        );
        return;
    };
    let layout = kport::local::GsLayout {
        cpu_id,
        preempt_count,
        irq_depth,
        resched: kport::local::Resched::Never,
        native_irq_flag: true,
        irq_off_count,
    };
    // SAFETY: every CPU's GS base holds its own control region before it runs kernel code (Redox's
    // CPU init), and the offsets were just taken from this CPU's, which all CPUs share as a type;
    // the fields are `u32` (`LogicalCpuId`, asserted above; `Cell<u32>`), mean what GsLayout
    // says (`cpu_id`, `preempt_disable`'s count, `in_irq`'s depth, the sections `irq_save`
    // counts after its `cli`) and are written only by their own CPU; `preempt_enable` never
    // reschedules; the port keeps the default per-CPU bottom-half word and runs one context per
    // CPU.
    unsafe { kport::local::install_gs_layout(layout) };
}

/// Panic if the caller is about to switch away where it must not (Linux's fatal "scheduling
/// while atomic"): atomic context, or a Redox hook's token lent on this CPU (the lender's frame
/// and CPU must outlive the loan). `kport::might_sleep` warns earlier, at the sleeping API.
#[track_caller]
fn assert_may_schedule(what: &str) {
    let ctx = PORT.atomic_context();
    let lent = token::lent_here();
    if !ctx.may_sleep() || lent {
        panic!(
            "BUG: scheduling while atomic: {what} with preempt_count={}, irqs_disabled={}, in_irq={}, lock token lent={lent}",
            ctx.preempt_count, ctx.irqs_disabled, ctx.hardirq
        );
    }
}

/// First code of every port context (entered by `ret` from `switch_finish_hook`): align the
/// stack as a call would, then run [`kthread_main`].
#[unsafe(naked)]
extern "C" fn kthread_entry() {
    core::arch::naked_asm!(
        "and rsp, -16",
        "xor ebp, ebp",
        "call {main}",
        "ud2",
        main = sym kthread_main,
    );
}

extern "C" fn kthread_main() -> ! {
    // SAFETY: the first code of a new context, entered from `switch_finish_hook`, which released
    // every lock `switch()` held: the context holds no Redox lock and no other token of it
    // exists, as at a syscall entry. This is the thread's own token for its whole life: it is
    // kept in its port record and lent to its port calls (`token.rs`).
    let mut token = unsafe { CleanLockToken::new() };
    super::finish_migrations(&mut token);
    // `switching_to` recorded this context's port record as the CPU's current one.
    let Some(task) = super::current_port_task() else {
        crate::syscall::process::exit_this_context(None, &mut token)
    };
    *task.token.lock() = Own::Here(token);
    let entry = task.entry.lock().take();
    drop(task);
    if let Some(f) = entry {
        f();
    }
    PORT.exit_current()
}

impl PortTask for Handle {
    fn id(&self) -> usize {
        self.task.id
    }

    fn wake(&self) -> bool {
        wake_task(&self.task, WAKE_NORMAL, false)
    }

    /// The caller sleeps next: this CPU, if the context may run here, rather than an idle one
    /// (whose halt the wake-up would have to end).
    fn wake_sync(&self) -> bool {
        wake_task(&self.task, WAKE_NORMAL, true)
    }

    fn wake_parked(&self) -> bool {
        wake_task(&self.task, WAKE_PARKED, false)
    }

    fn state(&self) -> TaskState {
        match self.task.state.load(Ordering::SeqCst) {
            RUNNING => TaskState::Running,
            INTERRUPTIBLE => TaskState::Sleeping,
            UNINTERRUPTIBLE => TaskState::DiskSleep,
            IDLE => TaskState::Idle,
            PARKED => TaskState::Parked,
            NEW => TaskState::New,
            // Dead once its last switch has taken it off its CPU for good; until then it still
            // runs (`exit_this_context`).
            _ if self.is_running() => TaskState::Running,
            _ => TaskState::Dead,
        }
    }

    fn is_running(&self) -> bool {
        // `Context::running`: set by `switch()` for the context it switches to and cleared for
        // the one it leaves, under the context's lock.
        with_token(|token| self.ctx.read(token.token()).running)
    }

    fn cpu(&self) -> usize {
        with_token(|token| {
            let guard = self.ctx.read(token.token());
            match guard.cpu_id {
                Some(c) => c.get() as usize,
                None => CpuMask(from_cpu_set(&guard.sched_affinity))
                    .first_cpu()
                    .unwrap_or(0),
            }
        })
    }

    fn affinity(&self) -> CpuMask {
        CpuMask(self.task.affinity.load(Ordering::Acquire))
    }

    fn set_affinity(&self, mask: CpuMask) -> Result<()> {
        if mask.0 & present() == 0 {
            return Err(Error::new(EINVAL));
        }
        self.task.affinity.store(mask.0, Ordering::Release);
        apply_affinity(&self.task);
        Ok(())
    }

    fn set_priority(&self, prio: Priority) {
        with_token(|token| self.ctx.write(token.token()).prio = redox_prio(prio));
    }

    fn name(&self) -> String {
        with_token(|token| {
            let guard = self.ctx.read(token.token());
            let n = guard.name.as_str();
            n.strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(n)
                .to_string()
        })
    }

    fn set_name(&self, name: &str) {
        with_token(|token| set_context_name(&mut self.ctx.write(token.token()).name, name));
    }

    /// Counted by the port itself at each switch ([`Task::switched`]), plus the slice so far of
    /// a context on a CPU now. Not Redox's `Context::cpu_time`: `switch()` marks a CPU idle
    /// when it finds nothing else to run even though the calling context keeps running, and
    /// then charges nothing for that context's slice when it does switch away, so a thread that
    /// keeps its CPU (`cond_resched` with nothing else to run, under `preempt=none`) would show
    /// almost no CPU time however long it ran.
    fn cpu_time_ns(&self) -> u64 {
        let ran = self.task.run_ns.load(Ordering::Relaxed);
        if !self.is_running() {
            return ran;
        }
        let start = self.task.slice_start.load(Ordering::Relaxed);
        ran + clock::now_ns().saturating_sub(start)
    }

    fn nr_switches(&self) -> u64 {
        self.task.switches.load(Ordering::Relaxed)
    }

    fn wait_channel(&self) -> &'static str {
        *self.task.wchan.lock()
    }

    fn stack_trace(&self, out: &mut [usize]) -> usize {
        let ctx = &self.ctx;
        with_token(|token| {
            // The read lock keeps the context off every CPU (switching to it takes its lock for
            // writing) and its kernel stack allocated for the walk.
            let c = ctx.read(token.token());
            if c.running || out.is_empty() {
                return 0;
            }
            let Some(ks) = c.kstack.as_ref() else {
                return 0;
            };
            let top = ks.initial_top() as usize;
            let bottom = top - ks.len();
            let inside =
                |a: usize| a >= bottom && a.checked_add(16).is_some_and(|e| e <= top) && a % 8 == 0;
            // `switch_to_inner` saved rsp pointing at its return address, and the caller's rbp.
            let rsp = c.arch.rsp;
            let mut rbp = c.arch.frame_pointer();
            if !inside(rsp) {
                return 0;
            }
            // SAFETY: `rsp` is an aligned address inside the context's own kernel stack, which
            // the lock keeps allocated and unchanging (the context cannot run).
            out[0] = unsafe { (rsp as *const usize).read() };
            let mut n = 1;
            while n < out.len() && inside(rbp) {
                // SAFETY: as above; `rbp` and `rbp + 8` are inside the stack.
                let (next, ret) = unsafe {
                    (
                        (rbp as *const usize).read(),
                        (rbp as *const usize).add(1).read(),
                    )
                };
                if ret == 0 {
                    break;
                }
                out[n] = ret;
                n += 1;
                if next <= rbp {
                    break;
                }
                rbp = next;
            }
            n
        })
    }

    fn data(&self) -> Option<TaskData> {
        self.task.data()
    }
}

/// Write `[name]` into a context's name, cut at a character boundary to fit.
fn set_context_name(
    dst: &mut arrayvec::ArrayString<{ crate::context::context::CONTEXT_NAME_CAPAC }>,
    name: &str,
) {
    dst.clear();
    let room = dst.capacity().saturating_sub(2);
    let mut end = name.len().min(room);
    while !name.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let _ = dst.try_push('[');
    let _ = dst.try_push_str(name.get(..end).unwrap_or(""));
    let _ = dst.try_push(']');
}

fn redox_prio(p: Priority) -> usize {
    match p {
        Priority::High => PRIO_HIGH,
        Priority::Normal => PRIO_NORMAL,
        Priority::Idle => PRIO_IDLE,
    }
}

/// Put `task`'s effective affinity into its context, and move it off a CPU it may no longer use:
/// one waiting in that CPU's run queue is queued again on an allowed CPU at once
/// (`dequeue_disallowed`, Linux's `move_queued_task`), a blocked one is woken on an allowed CPU
/// (its `cpu_id`), and a running one moves at its next switch (`switch_enter`).
fn apply_affinity(task: &Task) {
    let Some(ctx) = task.ctx.upgrade() else {
        return;
    };
    let mask = effective(task.affinity.load(Ordering::Acquire));
    with_token(|token| {
        let (last, queued) = {
            let mut guard = ctx.write(token.token());
            guard.sched_affinity = to_cpu_set(mask);
            if guard.running {
                return;
            }
            // Seen under the lock that set the affinity: a context queued after this is queued
            // by a wake-up that reads the new affinity, so only one queued now needs moving.
            let queued = guard.queue_key.is_some() && guard.status.is_runnable();
            (guard.cpu_id, queued)
        };
        // Runnable in the run queue of a CPU it may no longer use: that CPU skips it and no
        // other takes it from there, so it is taken out and queued again on an allowed one.
        // Only then is every CPU's queue looked at (each under its lock).
        let moved = queued && context::switch::dequeue_disallowed(&ctx);
        // Chosen with the lock released (the idle test try-locks other contexts).
        let mut cpu = pick_cpu(token, last, mask);
        {
            let mut guard = ctx.write(token.token());
            if !guard.sched_affinity.contains(cpu) {
                cpu = guard.sched_affinity.iter().next().unwrap_or(cpu);
            }
            if !guard.running {
                guard.cpu_id = Some(cpu);
            }
        }
        if moved {
            wakeup_context(&ctx, Some(cpu), &mut token.downgrade());
        }
    });
}

/// Re-apply every port context's affinity (after a CPU went offline or came back).
#[cfg(feature = "ktests")]
fn reapply_all_affinities() {
    let tasks: Vec<Arc<Task>> = {
        let mut all = TASKS.lock();
        all.retain(|t| t.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    for t in tasks {
        apply_affinity(&t);
    }
}

/// The registered scheduler hooks.
pub(super) fn sched_hooks() -> Option<&'static dyn SchedHooks> {
    SCHED_HOOKS.get().copied()
}

struct TimerHandle(Timer);

impl PortTimer for TimerHandle {
    fn arm(&self, deadline_ns: u64, cpu: Option<usize>) {
        self.0.arm(deadline_ns, cpu);
    }
    fn cancel(&self) -> bool {
        self.0.cancel()
    }
    fn cancel_sync(&self) -> bool {
        self.0.cancel_sync()
    }
    fn is_pending(&self) -> bool {
        self.0.is_pending()
    }
}

/// A new kernel-only context for `spec`, not started (Redox's `NotYetStarted`), with its port
/// record.
fn spawn_context(
    spec: SpawnSpec,
    mask: u64,
    token: &mut CleanLockToken,
) -> Result<(Arc<ContextLock>, Arc<Task>)> {
    // kport's error type is the kernel's (the hooks patch crates.io redox_syscall to the
    // kernel's own), so Redox's error passes through as it is.
    let ctx = context::spawn(false, None, kthread_entry, token)?;
    // Kernel-only: `spawn(false, ..)` gives it no address space (patch 0015), so switching
    // between kernel threads keeps the page tables.
    let task = {
        let mut guard = ctx.write(token.token());
        let task = Arc::new(Task {
            id: guard.debug_id as usize,
            ctx: Arc::downgrade(&ctx),
            state: AtomicU8::new(NEW),
            wchan: Mutex::new(""),
            entry: Mutex::new(Some(spec.entry)),
            data: Mutex::new(spec.data),
            worker_hooks: spec.worker_hooks,
            affinity: AtomicU64::new(spec.affinity.0),
            switches: AtomicU64::new(0),
            run_ns: AtomicU64::new(0),
            slice_start: AtomicU64::new(clock::now_ns()),
            migrating: AtomicBool::new(false),
            sleep_hooked: AtomicBool::new(false),
            token: Mutex::new(Own::None),
        });
        set_context_name(&mut guard.name, &spec.name);
        let eff = effective(mask);
        guard.sched_affinity = to_cpu_set(eff);
        if let Some(only) = CpuMask(eff).single() {
            guard.cpu_id = Some(LogicalCpuId::new(only as u32));
        }
        guard.prio = redox_prio(spec.priority);
        guard.kthread = Some(Arc::clone(&task));
        debug_assert!(
            guard.addr_space.is_none(),
            "a kernel-only context has no address space"
        );
        task
    };
    Ok((ctx, task))
}

impl Port for RedoxPort {
    fn name(&self) -> &'static str {
        "redox"
    }

    fn spawn(&self, spec: SpawnSpec) -> Result<TaskRef> {
        let mask = spec.affinity.0 & present();
        if mask == 0 {
            return Err(Error::new(EINVAL));
        }
        if SPAWN_FAILURES
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::new(ENOMEM));
        }
        let (ctx, task) = with_token(|token| spawn_context(spec, mask, token))?;
        {
            let mut all = TASKS.lock();
            all.retain(|t| t.strong_count() > 0);
            all.push(Arc::downgrade(&task));
        }
        Ok(Arc::new(Handle { task, ctx }))
    }

    fn current(&self) -> TaskRef {
        let (ctx, task) = current_task();
        Arc::new(Handle { task, ctx })
    }

    fn current_id(&self) -> usize {
        current_task().1.id
    }

    fn current_data(&self) -> Option<TaskData> {
        current_task().1.data()
    }

    fn set_current_state(&self, state: SleepState, wchan: &'static str) {
        let (_, task) = current_task();
        *task.wchan.lock() = wchan;
        let st = match state {
            SleepState::Interruptible => INTERRUPTIBLE,
            SleepState::Uninterruptible => UNINTERRUPTIBLE,
            SleepState::Parked => PARKED,
            SleepState::Idle => IDLE,
        };
        task.state.store(st, Ordering::SeqCst);
    }

    fn set_current_running(&self) {
        let (_, task) = current_task();
        task.state.store(RUNNING, Ordering::SeqCst);
    }

    fn schedule(&self) {
        assert_may_schedule("schedule");
        yield_point();
        let (ctx, task) = current_task();
        if let Some(mut loan) = token::take_blocking_loan() {
            // A system call's own token (`lend_blocking`): it goes with the context.
            // SAFETY: the token lives in this context's own frame, which outlives the switch;
            // the loan is off the CPU, so nothing else reaches it meanwhile.
            let token = unsafe { loan.as_mut() };
            {
                let mut guard = ctx.write(token.token());
                if task.state.load(Ordering::SeqCst) != RUNNING {
                    guard.block(*task.wchan.lock());
                }
            }
            context::switch(token);
            token::restore_blocking_loan(loan);
            task.switches.fetch_add(1, Ordering::Relaxed);
            return;
        }
        with_token(|token| {
            {
                let mut guard = ctx.write(token.token());
                let st = task.state.load(Ordering::SeqCst);
                if st != RUNNING {
                    guard.block(*task.wchan.lock());
                }
            }
            // The token stays borrowed across the switch, as a blocking syscall's does.
            context::switch(token);
        });
        task.switches.fetch_add(1, Ordering::Relaxed);
    }

    fn schedule_until(&self, deadline_ns: u64) -> bool {
        if clock::now_ns() >= deadline_ns {
            self.set_current_running();
            return true;
        }
        let (_, task) = current_task();
        let sleeper = Arc::clone(&task);
        let timer = Timer::new(Arc::new(move || {
            wake_task(&sleeper, WAKE_TIMEOUT, false);
        }));
        timer.arm(deadline_ns, None);
        self.schedule();
        timer.cancel_sync();
        clock::now_ns() >= deadline_ns
    }

    fn yield_now(&self) {
        assert_may_schedule("yield");
        yield_point();
        if let Some(mut loan) = token::take_blocking_loan() {
            // SAFETY: as in `schedule`.
            context::switch(unsafe { loan.as_mut() });
            token::restore_blocking_loan(loan);
            return;
        }
        with_token(context::switch);
    }

    fn cond_resched(&self) {
        // The window lets a pending PIT tick in; Redox's tick() switches every third tick.
        yield_point();
    }

    fn exit_current(&self) -> ! {
        let (_, task) = current_task();
        task.state.store(DEAD, Ordering::SeqCst);
        *task.wchan.lock() = "";
        // The data may hold this context's own handle: drop it now (port contract).
        let data = task.data.lock().take();
        drop(data);
        assert_may_schedule("exit");
        // `exit_this_context` does not return, so nothing on this stack may hold the record
        // across it: `with_token` would (its frame keeps the record to put the token back), and
        // the record would keep the context's memory (its `Weak`) for good. The thread's own
        // token is taken out of the record first.
        let own = core::mem::replace(&mut *task.token.lock(), Own::Out);
        drop(task);
        match own {
            Own::Here(mut token) => crate::syscall::process::exit_this_context(None, &mut token),
            // A context the port did not spawn: it has no token of its own to take out.
            other => {
                let (_, task) = current_task();
                *task.token.lock() = other;
                drop(task);
                with_token(|token| crate::syscall::process::exit_this_context(None, token))
            }
        }
    }

    fn cpu_id(&self) -> usize {
        crate::cpu_id().get() as usize
    }

    fn cpu_count(&self) -> usize {
        crate::cpu_count() as usize
    }

    fn online_mask(&self) -> CpuMask {
        CpuMask(online())
    }

    fn call_on_cpu(&self, cpu: usize, f: Box<dyn FnOnce() + Send>, wait: bool) -> Result<()> {
        super::call_on_cpu(cpu, f, wait)
    }

    /// Read with CPUID by the CPU itself as it came up (`topology.rs`).
    fn cpu_topology(&self, cpu: usize) -> CpuTopology {
        super::cpu_topology(cpu)
    }

    fn irq_save(&self) -> bool {
        let flags: u64;
        // SAFETY: reads RFLAGS and clears IF; Redox kernel code runs with interrupts off anyway.
        unsafe {
            core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags, options(nomem));
        }
        count_irqs_off(true);
        flags & (1 << 9) != 0
    }

    fn irq_restore(&self, was_enabled: bool) {
        count_irqs_off(false);
        if was_enabled {
            // SAFETY: interrupts were on when the matching irq_save ran (only in an idle-loop
            // window), so turning them back on restores that state.
            unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
        }
    }

    fn preempt_disable(&self) {
        let pc = &PercpuBlock::current().kthread;
        pc.preempt.set(pc.preempt.get().saturating_add(1));
    }

    fn preempt_enable(&self) {
        let pc = &PercpuBlock::current().kthread;
        pc.preempt.set(pc.preempt.get().saturating_sub(1));
    }

    fn atomic_context(&self) -> AtomicContext {
        // Interrupts are always off in Redox's kernel code: `irqs_disabled` reports the
        // subsystem's own `irq_save` sections, as the port contract asks.
        let pc = &PercpuBlock::current().kthread;
        AtomicContext {
            preempt_count: pc.preempt.get(),
            irqs_disabled: pc.irq_off.get() != 0,
            hardirq: pc.irq.get() != 0,
            softirq: false,
        }
    }

    fn in_atomic(&self) -> bool {
        let pc = &PercpuBlock::current().kthread;
        pc.preempt.get() != 0 || pc.irq.get() != 0 || pc.irq_off.get() != 0
    }

    fn in_irq(&self) -> bool {
        super::in_irq()
    }

    fn softirqs_with_irqs_enabled(&self) -> bool {
        // Handlers run on the interrupted context's stack with no interrupt stack of their own:
        // softirqs at interrupt exit keep interrupts off (see irq.rs).
        false
    }

    /// A Redox CPU runs one context at a time: per-CPU words take plain read-modify-writes
    /// (`kport::percpu`).
    fn one_context_per_cpu(&self) -> bool {
        true
    }

    fn irq_chip(&self) -> Option<&'static dyn kport::irq::IrqChip> {
        Some(&super::irq::CHIP)
    }

    /// PCI and DMA for the in-kernel virtio-blk driver, only with `kblk=virtio` (`bus.rs`).
    fn device_bus(&self) -> Option<&'static dyn kport::bus::DeviceBus> {
        super::bus::enabled().then_some(&super::bus::BUS as &dyn kport::bus::DeviceBus)
    }

    fn now_ns(&self) -> u64 {
        clock::now_ns()
    }

    fn cycles(&self) -> u64 {
        clock::cycles()
    }

    fn cycles_to_ns(&self, cycles: u64) -> u64 {
        clock::cycles_to_ns(cycles)
    }

    fn timer(&self, callback: Arc<dyn Fn() + Send + Sync>) -> Box<dyn PortTimer> {
        Box::new(TimerHandle(Timer::new(callback)))
    }

    fn set_sched_hooks(&self, hooks: &'static dyn SchedHooks) {
        SCHED_HOOKS.call_once(|| hooks);
    }

    fn add_hotplug_hooks(&self, hooks: &'static dyn HotplugHooks) {
        HOTPLUG_HOOKS.lock().push(hooks);
    }

    fn console_line(&self, line: &str) {
        let _ = writeln!(crate::log::Writer::new(), "{line}");
    }

    fn dump_stack(&self) {
        super::dump_stack();
    }

    fn cpu_current_id(&self, cpu: usize) -> Option<usize> {
        let id = super::CPU_CURRENT_ID.get(cpu)?.load(Ordering::Relaxed);
        (id != 0).then_some(id)
    }
}

/// The test-only half of the port (feature `ktests`): a Redox kernel offers kernel code no way
/// to stop the machine, and CPU offlining is logical only (Redox has no hot-plug).
#[cfg(feature = "ktests")]
impl Harness for RedoxPort {
    fn exit_machine(&self, pass: bool) -> ! {
        super::exit_qemu(pass)
    }

    /// Redox's kernel heap grows by 1 MiB whenever an allocation does not fit and never gives
    /// the frames back, so a passing peak of allocations is not a leak but leaves 257 more
    /// frames in use. The heap's own frames are therefore left out of `used_frames` (they are
    /// in neither `used_frames` nor `free_frames`), and `heap_used` gives the bytes allocated
    /// from it: a leak of heap memory shows there, a leak of frames in `used_frames`; the leak
    /// checks compare those two (`MemCounters::in_use`).
    fn mem_counters(&self) -> MemCounters {
        let total = crate::memory::total_frames() as u64;
        let used = crate::memory::used_frames() as u64;
        let (heap_size, heap_used) = crate::allocator::heap_stats();
        // The heap's pages, and the page tables mapping them (one per 2 MiB).
        let heap_pages = (heap_size / crate::memory::PAGE_SIZE) as u64;
        let heap_frames = heap_pages + heap_pages.div_ceil(512);
        let used_outside = used.saturating_sub(heap_frames);
        MemCounters {
            total_frames: total,
            free_frames: total.saturating_sub(used),
            used_frames: used_outside,
            heap_used: heap_used as u64,
        }
    }

    fn test_irq(&self) -> Option<&'static dyn kport::irq::TestIrq> {
        super::irq::test_line().map(|_| &super::irq::TEST_IRQ as &'static dyn kport::irq::TestIrq)
    }

    fn inject_spawn_failures(&self, n: usize) {
        SPAWN_FAILURES.store(n, Ordering::Release);
    }

    fn cpu_down(&self, cpu: usize) -> Result<()> {
        let _op = HOTPLUG_OP.lock();
        let on = online();
        if cpu >= 64 || cpu >= self.cpu_count() || on & (1 << cpu) == 0 || on.count_ones() < 2 {
            return Err(Error::new(EINVAL));
        }
        let hooks: Vec<&'static dyn HotplugHooks> = HOTPLUG_HOOKS.lock().clone();
        for h in hooks.iter().rev() {
            h.cpu_going_down(cpu);
        }
        set_online(cpu, false);
        reapply_all_affinities();
        // A logical offline: the CPU keeps running Redox's contexts, but
        // what the subsystem queued for it is taken over, as on Linux.
        for h in hooks.iter().rev() {
            h.cpu_dead(cpu);
        }
        Ok(())
    }

    fn cpu_up(&self, cpu: usize) -> Result<()> {
        let _op = HOTPLUG_OP.lock();
        if cpu >= 64 || cpu >= self.cpu_count() || online() & (1 << cpu) != 0 {
            return Err(Error::new(EINVAL));
        }
        set_online(cpu, true);
        reapply_all_affinities();
        let hooks: Vec<&'static dyn HotplugHooks> = HOTPLUG_HOOKS.lock().clone();
        for h in hooks.iter() {
            h.cpu_came_up(cpu);
        }
        Ok(())
    }
}

/// Run `f` as an interrupt handler would (timer callbacks, IPI calls).
pub(super) fn as_irq(f: impl FnOnce()) {
    let irq = IrqGuard::enter();
    f();
    drop(irq);
}
