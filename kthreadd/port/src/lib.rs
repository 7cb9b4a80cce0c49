//! The port: the bottom layer of the subsystem, the small set of
//! primitives a host kernel provides to it, and what is built on them
//! alone.
//!
//! * [`Port`]: kernel-only contexts, the blocking protocol, CPUs, IPIs,
//!   atomic-context state, a clock and one-shot timers, two scheduler
//!   callbacks, the console. Named after what Redox already has:
//!   kernel-only contexts from `context::spawn`, block/wake through
//!   `Context::block` + `switch()` and `unblock_context`, `cpu_id()`,
//!   per-CPU blocks, IPIs (see `docs/architecture.md`).
//! * [`harness::Harness`]: what only a test harness needs (stop the
//!   machine, fault injection, CPU offline/online, memory counters), kept
//!   off the port so the subsystem cannot depend on it.
//! * [`context`]: the context checks, [`might_sleep`] first.
//! * [`sync`]: spinlocks with a guard policy, data guarded by another
//!   object's lock ([`sync::LockedBy`]), wait queues, completions, mutexes.
//! * [`topology`]: where each CPU sits ([`CpuTopology`]) and the pods of
//!   the workqueue's affinity scopes ([`AffinityScope`], [`pods`]).
//!
//! Three implementations of the port exist: the testkernel (bare metal
//! under QEMU), the host port on std threads ([`host`], feature `host`),
//! and the Redox glue in `kernel-patch/glue`. The subsystem reaches the
//! installed port through [`port()`]; it is installed once at boot with
//! [`install`].
//!
//! # The blocking protocol
//! It is Linux's `set_current_state` / `schedule` / `wake_up_process`:
//! a context that waits first announces the state it will sleep in
//! ([`Port::set_current_state`]), then checks its condition, then calls
//! [`Port::schedule`], which blocks only if no wake-up arrived in between
//! (a wake-up sets the context back to running). No wake-up is lost.

#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod bus;
pub mod context;
pub mod fault;
pub mod harness;
#[cfg(feature = "host")]
pub mod host;
pub mod idle;
pub mod irq;
pub mod local;
#[cfg(feature = "loom")]
pub mod loom_port;
pub mod mm;
pub mod percpu;
pub mod sync;
pub mod sysctl;
pub mod timers;
pub mod topology;
pub mod trace;
pub mod warn;

pub use context::{AtomicContext, might_sleep};
pub use topology::{AffinityScope, CpuTopology, pods};

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::any::Any;
use core::fmt;

pub use syscall::error::{
    EAGAIN, EBUSY, EEXIST, EINTR, EINVAL, EIO, ENODEV, ENOENT, ENOMEM, ENOSPC, ENOSYS, ENXIO, EOPNOTSUPP, EPERM, EROFS,
    ESRCH, Error,
};

/// Result type of fallible port and subsystem calls (`syscall::Error`, as
/// Redox's kernel uses).
pub type Result<T> = core::result::Result<T, Error>;

/// Most CPUs a [`CpuMask`] can name.
pub const MAX_CPUS: usize = 64;

/// A set of CPUs (bit n = CPU n), Linux's `cpumask` for up to 64 CPUs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuMask(pub u64);

impl CpuMask {
    /// No CPU.
    pub const NONE: CpuMask = CpuMask(0);
    /// Every CPU.
    pub const ALL: CpuMask = CpuMask(u64::MAX);

    /// Just `cpu`.
    pub fn one(cpu: usize) -> Self {
        assert!(cpu < MAX_CPUS, "cpu {cpu} out of range");
        CpuMask(1 << cpu)
    }

    /// CPUs `0..n`.
    pub fn first(n: usize) -> Self {
        if n >= MAX_CPUS { CpuMask::ALL } else { CpuMask((1u64 << n) - 1) }
    }

    /// Does it contain `cpu`?
    pub fn contains(self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0 & (1 << cpu) != 0
    }

    /// Number of CPUs in the set.
    pub fn count(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Is it empty?
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The only CPU, if the set has exactly one.
    pub fn single(self) -> Option<usize> {
        (self.count() == 1).then(|| self.0.trailing_zeros() as usize)
    }

    /// Lowest CPU in the set.
    pub fn first_cpu(self) -> Option<usize> {
        (self.0 != 0).then(|| self.0.trailing_zeros() as usize)
    }

    /// Intersection.
    pub fn and(self, o: CpuMask) -> CpuMask {
        CpuMask(self.0 & o.0)
    }

    /// Iterate over the CPUs in the set.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_CPUS).filter(move |&c| self.contains(c))
    }
}

impl fmt::Debug for CpuMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Scheduling priority levels of a context, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Runs before normal contexts (IRQ threads, highpri workers, rescuers).
    High,
    /// Ordinary contexts.
    Normal,
    /// Runs only when no normal context wants the CPU.
    Idle,
}

/// A state a context sleeps in (Linux `TASK_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepState {
    /// `TASK_INTERRUPTIBLE` ("S"): woken by [`PortTask::wake`].
    Interruptible,
    /// `TASK_UNINTERRUPTIBLE` ("D"): woken by [`PortTask::wake`]; counted
    /// by the hung-task detector.
    Uninterruptible,
    /// `TASK_PARKED` ("P"): woken only by [`PortTask::wake_parked`].
    Parked,
    /// `TASK_IDLE` ("I"): uninterruptible and not counted as load. Woken by
    /// [`PortTask::wake`] like `Uninterruptible`, but a thread waiting for
    /// work, not stuck: the hung-task detector skips it. Linux's workqueue
    /// workers and rescuers wait for work in it.
    Idle,
}

impl SleepState {
    /// What a context that sleeps in this state shows as.
    pub fn task_state(self) -> TaskState {
        match self {
            SleepState::Interruptible => TaskState::Sleeping,
            SleepState::Uninterruptible => TaskState::DiskSleep,
            SleepState::Parked => TaskState::Parked,
            SleepState::Idle => TaskState::Idle,
        }
    }
}

/// What a context is doing, as a `ps` listing shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// On a CPU or queued to run ("R").
    Running,
    /// Interruptible sleep ("S").
    Sleeping,
    /// Uninterruptible sleep ("D").
    DiskSleep,
    /// Parked ("P").
    Parked,
    /// Idle: waiting for work, uninterruptibly but not counted as load
    /// ("I", Linux `TASK_IDLE`). Not [`TaskState::DiskSleep`]: the hung-task
    /// detector reports only that one.
    Idle,
    /// Created and not yet woken for the first time (shown as "D", as
    /// Linux shows a fresh kthread).
    New,
    /// Exited ("Z").
    Dead,
}

impl TaskState {
    /// The one-letter code of `ps`.
    pub fn letter(self) -> char {
        match self {
            TaskState::Running => 'R',
            TaskState::Sleeping => 'S',
            TaskState::DiskSleep | TaskState::New => 'D',
            TaskState::Parked => 'P',
            TaskState::Idle => 'I',
            TaskState::Dead => 'Z',
        }
    }
}

/// Per-context data the subsystem attaches at spawn and finds again from
/// inside the context ([`Port::current_data`]) and from the scheduler hooks.
pub type TaskData = Arc<dyn Any + Send + Sync>;

/// Everything needed to create a kernel-only context.
pub struct SpawnSpec {
    /// Name (the host may truncate it to its own limit).
    pub name: String,
    /// The function the context runs; when it returns, the context exits.
    pub entry: Box<dyn FnOnce() + Send>,
    /// CPUs it may run on.
    pub affinity: CpuMask,
    /// Priority level.
    pub priority: Priority,
    /// Data reachable from inside the context. The port drops its reference
    /// once the context has exited, so the data may hold the context's own
    /// [`TaskRef`] without a reference cycle.
    pub data: Option<TaskData>,
    /// Call the [`SchedHooks`] when this context blocks and runs again (a
    /// workqueue worker).
    pub worker_hooks: bool,
}

/// A handle to a context of the host kernel (Redox: `Arc<ContextLock>`).
/// Cloning the [`TaskRef`] keeps the context's bookkeeping alive, not the
/// context running.
pub trait PortTask: Send + Sync {
    /// Unique, never reused id.
    fn id(&self) -> usize;
    /// Wake it if it sleeps in `Interruptible` or `Uninterruptible`, or was
    /// never started (Linux `wake_up_process`). True if it was woken.
    fn wake(&self) -> bool;
    /// [`PortTask::wake`] from a caller that goes to sleep right after
    /// (Linux's `WF_SYNC`, as `wake_up_sync` passes it): a port may queue
    /// it on the caller's CPU, which is about to be free, instead of waking
    /// an idle one. The default is [`PortTask::wake`].
    fn wake_sync(&self) -> bool {
        self.wake()
    }
    /// Wake it if it is parked (Linux `wake_up_state(p, TASK_PARKED)`).
    fn wake_parked(&self) -> bool;
    /// Its state.
    fn state(&self) -> TaskState;
    /// Is it executing on a CPU right now (Redox `Context::running`)? A
    /// context that announced a sleep but has not yet switched away still
    /// counts as running. The default answers from [`PortTask::state`],
    /// which cannot tell the two apart; ports should say precisely.
    fn is_running(&self) -> bool {
        self.state() == TaskState::Running
    }
    /// CPU it runs on or last ran on.
    fn cpu(&self) -> usize;
    /// CPUs it may run on.
    fn affinity(&self) -> CpuMask;
    /// Change the CPUs it may run on; it migrates if it must.
    fn set_affinity(&self, mask: CpuMask) -> Result<()>;
    /// Change its priority level.
    fn set_priority(&self, prio: Priority);
    /// Its name.
    fn name(&self) -> String;
    /// Rename it.
    fn set_name(&self, name: &str);
    /// CPU time consumed, in ns.
    fn cpu_time_ns(&self) -> u64;
    /// Times it was switched in (the hung-task detector watches this).
    fn nr_switches(&self) -> u64;
    /// What it waits on while blocked ("" if nothing recorded).
    fn wait_channel(&self) -> &'static str;
    /// Return addresses on its stack, innermost first, into `out`, while
    /// it is switched out (a stack dump of a sleeping context, Linux
    /// `sched_show_task`); the count written. 0 when it is running, when
    /// the port cannot walk stacks, or when the walk raced with a switch.
    fn stack_trace(&self, _out: &mut [usize]) -> usize {
        0
    }
    /// The data given at spawn (`None` once the context has exited).
    fn data(&self) -> Option<TaskData>;
}

/// Shared handle to a context.
pub type TaskRef = Arc<dyn PortTask>;

/// A one-shot timer whose callback runs in interrupt context (Redox: from
/// `tick()`). Linux `timer_list`.
pub trait PortTimer: Send + Sync {
    /// (Re)arm it to fire at `deadline_ns` of [`Port::now_ns`] on `cpu` (or
    /// the current CPU). Re-arming a pending timer moves it.
    fn arm(&self, deadline_ns: u64, cpu: Option<usize>);
    /// Disarm it; true if it was pending (Linux `del_timer`).
    fn cancel(&self) -> bool;
    /// Disarm it and wait until its callback is not running (Linux
    /// `del_timer_sync`); true if it was pending. Must not be called from
    /// the callback itself.
    fn cancel_sync(&self) -> bool;
    /// Is it armed?
    fn is_pending(&self) -> bool;
}

/// Scheduler callbacks a workqueue registers (Linux `wq_worker_sleeping`,
/// `wq_worker_running` and `wq_worker_tick`). Called only for contexts
/// spawned with `worker_hooks`, with the data given at spawn, on the
/// context's own CPU, with preemption disabled; they must not sleep.
pub trait SchedHooks: Send + Sync {
    /// The context is about to block (not when it is preempted).
    fn sleeping(&self, data: &TaskData);
    /// The context runs again after having blocked.
    fn running(&self, data: &TaskData);
    /// The scheduler tick found this context running on its CPU (Linux
    /// calls `wq_worker_tick` from `sched_tick`): how the workqueue notices
    /// an item that keeps its CPU too long and takes it out of concurrency
    /// management. Interrupt context. Ports call it from their periodic
    /// tick for the context the tick interrupted.
    fn tick(&self, _data: &TaskData) {}
}

/// CPU hot-plug callbacks (Linux `cpuhp` states). Called in a context
/// that may sleep, one hot-plug operation at a time.
///
/// Taking a CPU down calls every registered set's `cpu_going_down` in
/// reverse registration order while the CPU still runs (Linux's AP
/// teardown states: the workqueue unbinds its per-CPU pools, smpboot parks
/// its threads), then stops the CPU, then calls `cpu_dead` in reverse
/// order on another CPU (Linux's BP "dead" states: per-CPU lists of the
/// dead CPU are taken over). Bringing it up calls `cpu_came_up` in
/// registration order once it runs again.
pub trait HotplugHooks: Send + Sync {
    /// `cpu` is about to stop taking work: park what is bound to it.
    fn cpu_going_down(&self, cpu: usize);
    /// `cpu` runs nothing any more (its pending timers have moved): take
    /// over what is still queued for it. Called on another CPU. Default:
    /// nothing to take over.
    fn cpu_dead(&self, _cpu: usize) {}
    /// `cpu` takes work again: unpark what is bound to it.
    fn cpu_came_up(&self, cpu: usize);
}

/// The primitives the subsystem needs from the host kernel.
pub trait Port: Send + Sync {
    /// A short name of the host ("testkernel", "host", "redox").
    fn name(&self) -> &'static str;

    // --- contexts ---

    /// Create a kernel-only context that starts (runs `spec.entry`) at its
    /// first [`PortTask::wake`]. Redox: `context::spawn(false, ...)`,
    /// status `HardBlocked { NotYetStarted }`.
    fn spawn(&self, spec: SpawnSpec) -> Result<TaskRef>;
    /// The calling context.
    fn current(&self) -> TaskRef;
    /// Id of the calling context.
    fn current_id(&self) -> usize;
    /// The data the calling context was spawned with.
    fn current_data(&self) -> Option<TaskData>;
    /// Announce the state the caller will sleep in at its next
    /// [`Port::schedule`] (Linux `set_current_state`); `wchan` says what
    /// it waits on.
    fn set_current_state(&self, state: SleepState, wchan: &'static str);
    /// Back to running without sleeping (Linux `__set_current_state(TASK_RUNNING)`).
    fn set_current_running(&self);
    /// Sleep in the announced state unless a wake-up came since it was
    /// announced; if the state is running, just let others run. Must not be
    /// called in atomic context.
    fn schedule(&self);
    /// Like [`Port::schedule`], but also wake at `deadline_ns`. Returns
    /// true if the deadline passed.
    fn schedule_until(&self, deadline_ns: u64) -> bool;
    /// Let other runnable contexts run (Linux `yield()`).
    fn yield_now(&self);
    /// Reschedule if the scheduler asked for it (Linux `cond_resched`): the
    /// only preemption point under Redox's model.
    fn cond_resched(&self);
    /// End the calling context (Redox: `exit_this_context`).
    fn exit_current(&self) -> !;

    // --- CPUs ---

    /// The calling CPU.
    fn cpu_id(&self) -> usize;
    /// Number of CPUs the machine has (possible CPUs).
    fn cpu_count(&self) -> usize;
    /// CPUs currently taking work.
    fn online_mask(&self) -> CpuMask;
    /// Run `f` on `cpu` in interrupt context (an IPI); wait for it if `wait`.
    /// `EINVAL` for a CPU that does not exist; `ENXIO` for one that is
    /// hot-unplugged and runs nothing (Linux `smp_call_function_single`),
    /// where a port can tell.
    fn call_on_cpu(&self, cpu: usize, f: Box<dyn FnOnce() + Send>, wait: bool) -> Result<()>;
    /// Where `cpu` sits in the machine: package, core, SMT thread, last-level
    /// cache, NUMA node ([`CpuTopology`]; [`pods`] groups CPUs by it). Ports
    /// read it from the hardware as each CPU comes up; the default, also the
    /// answer for a CPU the port knows nothing about, is
    /// [`CpuTopology::alone`]: every CPU its own core and cache, in package 0
    /// and node 0.
    ///
    /// Context: any.
    fn cpu_topology(&self, cpu: usize) -> CpuTopology {
        CpuTopology::alone(cpu)
    }

    // --- atomic context ---

    /// Disable interrupts, returning whether they were enabled.
    fn irq_save(&self) -> bool;
    /// Restore the interrupt state from [`Port::irq_save`].
    fn irq_restore(&self, was_enabled: bool);
    /// Disable preemption (nestable).
    fn preempt_disable(&self);
    /// Re-enable preemption.
    fn preempt_enable(&self);
    /// Reschedule now if one is due and the caller may be preempted (the
    /// check at the end of [`Port::preempt_enable`], for a caller that
    /// lowered the count itself: [`local::preempt_enable`]). The default
    /// raises and lowers the count once, which checks.
    fn preempt_check_resched(&self) {
        self.preempt_disable();
        self.preempt_enable();
    }
    /// Enter a spinlock's critical section: disable interrupts and
    /// preemption, returning whether interrupts were enabled (Linux
    /// `spin_lock_irqsave` minus the lock word). One call so a port can do
    /// both cheaply; the default combines [`Port::irq_save`] and
    /// [`Port::preempt_disable`].
    fn lock_enter(&self) -> bool {
        let was = self.irq_save();
        self.preempt_disable();
        was
    }
    /// Leave a critical section entered with [`Port::lock_enter`]:
    /// restore interrupts, then re-enable preemption (which may
    /// reschedule).
    fn lock_exit(&self, irqs_were_on: bool) {
        self.irq_restore(irqs_were_on);
        self.preempt_enable();
    }
    /// What makes the caller atomic right now (preemption count, interrupts
    /// off, hard or soft interrupt context). [`might_sleep`] reports from
    /// it; a port where interrupts are always off in kernel code (Redox)
    /// reports the subsystem's own interrupt-off sections instead.
    fn atomic_context(&self) -> AtomicContext;
    /// [`Port::atomic_context`] with `softirq` set from the calling
    /// context's bottom-half word ([`Port::bh_word`]) too: what
    /// [`might_sleep`] asks on every API that may sleep. One call through
    /// the port instead of two; the default, compiled for each port, calls
    /// the two directly.
    fn atomic_context_bh(&self) -> AtomicContext {
        let mut ctx = self.atomic_context();
        ctx.softirq |= self.bh_word().load(core::sync::atomic::Ordering::Relaxed) != 0;
        ctx
    }
    /// Is the caller in a context that must not sleep? Derived from
    /// [`Port::atomic_context`]; a port may answer faster.
    fn in_atomic(&self) -> bool {
        !self.atomic_context().may_sleep()
    }
    /// Is the caller an interrupt handler (hard-IRQ context)?
    fn in_irq(&self) -> bool {
        self.atomic_context().hardirq
    }
    /// The calling context's word of held lock ranks, for the debug-build
    /// lock-order check ([`sync::rank`]); `None` (the default) turns the
    /// check off. It must follow the context, not the CPU, wherever a
    /// holder of a ranked lock can be interrupted by code that takes one.
    fn lock_ranks(&self) -> Option<&'static core::sync::atomic::AtomicU32> {
        None
    }
    /// The calling context's bottom-half word ([`irq::bh_count`]). The
    /// default is one word per CPU, right wherever a context with bottom
    /// halves disabled cannot leave its CPU (they disable preemption); a
    /// port whose "CPUs" run several contexts at once (the host) answers
    /// per context.
    ///
    /// Context: any.
    fn bh_word(&self) -> &'static core::sync::atomic::AtomicU32 {
        irq::per_cpu_bh_word(self.cpu_id())
    }
    /// May softirq handlers run with interrupts enabled (Linux runs them
    /// so)? A port whose interrupt entry cannot nest on the interrupted
    /// context's stack (Redox) answers false, and softirqs then run with
    /// interrupts disabled.
    fn softirqs_with_irqs_enabled(&self) -> bool {
        true
    }
    /// Does each CPU run one context at a time, so that a per-CPU word is
    /// written only by the code on its CPU (and by interrupts nesting on
    /// it)? True of a kernel on real CPUs; the host port, whose virtual
    /// CPUs run several threads at once, answers false (the default).
    /// When true, [`percpu`] updates per-CPU words with plain loads and
    /// stores instead of locked read-modify-writes.
    fn one_context_per_cpu(&self) -> bool {
        false
    }
    /// The machine's device interrupt lines, if the host kernel lets the
    /// subsystem attach handlers to them (default: none).
    fn irq_chip(&self) -> Option<&'static dyn irq::IrqChip> {
        None
    }
    /// The machine's devices (PCI configuration space, register windows,
    /// DMA memory), if the host kernel lets the subsystem's drivers reach
    /// them (default: none).
    fn device_bus(&self) -> Option<&'static dyn bus::DeviceBus> {
        None
    }

    // --- time ---

    /// Monotonic nanoseconds.
    fn now_ns(&self) -> u64;
    /// A fast cycle counter (rdtsc) for benchmarks.
    fn cycles(&self) -> u64;
    /// Convert a cycle delta to ns.
    fn cycles_to_ns(&self, cycles: u64) -> u64;
    /// A one-shot timer calling `callback` in interrupt context. The raw
    /// primitive: subsystem code makes its timers with [`timers::new`],
    /// which wraps this one and counts the armed ones.
    fn timer(&self, callback: Arc<dyn Fn() + Send + Sync>) -> Box<dyn PortTimer>;

    // --- hooks ---

    /// Register the workqueue's scheduler callbacks (once).
    fn set_sched_hooks(&self, hooks: &'static dyn SchedHooks);
    /// Register CPU hot-plug callbacks (called when the host kernel takes a
    /// CPU offline or brings it back; [`harness::Harness::cpu_down`] is how
    /// tests do it).
    fn add_hotplug_hooks(&self, hooks: &'static dyn HotplugHooks);

    // --- machine ---

    /// Write one whole line to the console.
    fn console_line(&self, line: &str);
    /// Print a backtrace of the calling context (for warnings).
    fn dump_stack(&self);
    /// The id of the context running on `cpu` now, as far as the port can
    /// tell without stopping it (the soft-lockup watchdog names what a
    /// stuck CPU runs); `None` when it cannot.
    fn cpu_current_id(&self, _cpu: usize) -> Option<usize> {
        None
    }
}

static PORT: spin::Once<&'static dyn Port> = spin::Once::new();

/// Install the port (once, at boot). A second install is ignored with a
/// warning on the first port's console.
///
/// Context: boot, before any other call into the subsystem.
pub fn install(p: &'static dyn Port) {
    let first = PORT.call_once(|| p);
    if !core::ptr::addr_eq(*first as *const dyn Port, p as *const dyn Port) {
        first.console_line("# WARNING: kport::install called twice; keeping the first port");
    }
}

/// The installed port. Panics if none was installed: nothing of the
/// subsystem works before the host kernel installs its port.
#[inline]
pub fn port() -> &'static dyn Port {
    *PORT.get().expect("kport: no port installed (call kport::install at boot)")
}

/// Is a port installed?
pub fn installed() -> bool {
    PORT.get().is_some()
}
