//! A schedulable kernel context: its saved registers and SSE state, its
//! stack, its scheduling state and its accounting.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::any::Any;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use crate::mem::stack::KernelStack;
use crate::name::Name;
use crate::sync::IrqSpinLock;

/// Scheduling state (Linux `__state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Runnable or running.
    Running = 0,
    /// Sleeping, woken by a normal wake-up (`TASK_INTERRUPTIBLE`, "S").
    Interruptible = 1,
    /// Sleeping, woken by a normal wake-up (`TASK_UNINTERRUPTIBLE`, "D").
    Uninterruptible = 2,
    /// Parked: woken only by an unpark (`TASK_PARKED`, "P").
    Parked = 3,
    /// Created, never started: the first wake-up starts it.
    New = 4,
    /// Exited ("Z" until reaped).
    Dead = 5,
    /// Waiting for work: uninterruptible, woken by a normal wake-up, not
    /// counted as load or as hung (`TASK_IDLE`, "I").
    Idle = 6,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => State::Running,
            1 => State::Interruptible,
            2 => State::Uninterruptible,
            3 => State::Parked,
            4 => State::New,
            6 => State::Idle,
            _ => State::Dead,
        }
    }
}

/// Wake-up masks (Linux `TASK_NORMAL`, `TASK_PARKED`, ...).
pub mod wake_mask {
    /// Interruptible, uninterruptible and idle sleepers.
    pub const NORMAL: u8 = (1 << 1) | (1 << 2) | (1 << 6);
    /// Parked contexts.
    pub const PARKED: u8 = 1 << 3;
    /// Never-started contexts.
    pub const NEW: u8 = 1 << 4;
}

/// Scheduling priority levels, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Prio {
    /// Runs before everything else (IRQ threads, highpri workers).
    High = 0,
    /// Ordinary contexts.
    Normal = 1,
    /// Runs only when nothing else wants the CPU (not the idle loop itself).
    Idle = 2,
}

/// Number of priority levels.
pub const NR_PRIOS: usize = 3;

impl Prio {
    pub(super) fn from_u8(v: u8) -> Self {
        match v {
            0 => Prio::High,
            1 => Prio::Normal,
            _ => Prio::Idle,
        }
    }
}

/// Saved switch state: the stack pointer (the callee-saved registers are on
/// the stack). No SSE or x87 state: a switch is a function call, across which
/// the SysV ABI makes every XMM register caller-saved, and the control words
/// it keeps (MXCSR's and x87's) are never changed in this kernel. An
/// interrupted context's XMM registers are saved by the interrupt entry
/// (`isr_common`), on its own stack, before any switch from the handler.
pub(super) struct Saved {
    pub rsp: u64,
}

/// Set in `flags`: call the workqueue hooks when this context blocks/runs.
pub const FLAG_WORKER_HOOKS: u32 = 1 << 0;
/// Set in `flags`: this is a CPU's idle context.
pub const FLAG_IDLE: u32 = 1 << 1;

/// A kernel context.
pub struct Task {
    /// Unique id (never reused).
    pub id: usize,
    pub(super) name: IrqSpinLock<Name>,
    /// Saved registers; touched only by the CPU switching to or from the
    /// context, which the `on_cpu` hand-off serializes.
    pub(super) saved: UnsafeCell<Saved>,
    pub(super) stack: IrqSpinLock<Option<KernelStack>>,
    pub(super) state: AtomicU8,
    /// A CPU is executing the context, or has not finished switching away.
    pub(super) on_cpu: AtomicBool,
    /// Queued on a run queue or running (Linux `on_rq`).
    pub(super) on_rq: AtomicBool,
    /// CPU it runs on or last ran on.
    pub(super) cpu: AtomicUsize,
    /// Allowed CPUs (bit n = CPU n).
    pub(super) affinity: AtomicU64,
    pub(super) prio: AtomicU8,
    /// Serializes state/on_rq transitions (Linux `pi_lock`). Lock order:
    /// task.sched_lock, then a run-queue lock.
    pub(super) sched_lock: IrqSpinLock<()>,
    pub(super) entry: IrqSpinLock<Option<Box<dyn FnOnce() + Send>>>,
    /// Dropped when the context is reaped (it may refer back to the context).
    pub(super) data: IrqSpinLock<Option<Arc<dyn Any + Send + Sync>>>,
    pub(super) flags: u32,
    /// What the context waits on when blocked (Linux `wchan`).
    pub(super) wchan: IrqSpinLock<&'static str>,
    pub(super) cpu_time_ns: AtomicU64,
    pub(super) run_start_tsc: AtomicU64,
    pub(super) nr_switches: AtomicU64,
    pub(super) slice_left_ns: AtomicU64,
    /// Times the tick called the workqueue's tick hook for it.
    pub(super) hook_ticks: AtomicU64,
    /// Exit wait: contexts waiting in `join` for this one to die.
    pub(super) exit_waiters: super::wait::WaitQueue,
    pub(super) started: AtomicBool,
    /// Set last by the reaper.
    pub(super) reaped: AtomicBool,
}

// SAFETY: `saved` is only accessed by the CPU that switches to/from the task,
// with the `on_cpu` flag (release/acquire) handing it from one CPU to the
// next; every other field is atomic or lock-protected.
unsafe impl Sync for Task {}
// SAFETY: as above.
unsafe impl Send for Task {}

impl Task {
    pub(super) fn new(
        id: usize,
        name: &str,
        prio: Prio,
        affinity: u64,
        entry: Option<Box<dyn FnOnce() + Send>>,
        data: Option<Arc<dyn Any + Send + Sync>>,
        flags: u32,
    ) -> Self {
        Task {
            id,
            name: IrqSpinLock::named("task name", Name::new(name)),
            saved: UnsafeCell::new(Saved { rsp: 0 }),
            stack: IrqSpinLock::named("task stack", None),
            state: AtomicU8::new(State::New as u8),
            on_cpu: AtomicBool::new(false),
            on_rq: AtomicBool::new(false),
            cpu: AtomicUsize::new(0),
            affinity: AtomicU64::new(affinity),
            prio: AtomicU8::new(prio as u8),
            sched_lock: IrqSpinLock::named("task sched", ()),
            entry: IrqSpinLock::named("task entry", entry),
            data: IrqSpinLock::named("task data", data),
            flags,
            wchan: IrqSpinLock::named("task wchan", ""),
            cpu_time_ns: AtomicU64::new(0),
            run_start_tsc: AtomicU64::new(0),
            nr_switches: AtomicU64::new(0),
            slice_left_ns: AtomicU64::new(super::TIMESLICE_NS),
            hook_ticks: AtomicU64::new(0),
            exit_waiters: super::wait::WaitQueue::new(),
            started: AtomicBool::new(false),
            reaped: AtomicBool::new(false),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The context's name.
    pub fn name(&self) -> Name {
        *self.name.lock()
    }

    /// Rename the context.
    pub fn set_name(&self, n: &str) {
        *self.name.lock() = Name::new(n);
    }

    /// Priority level.
    pub fn prio(&self) -> Prio {
        Prio::from_u8(self.prio.load(Ordering::Relaxed))
    }

    /// Allowed-CPU mask.
    pub fn affinity(&self) -> u64 {
        self.affinity.load(Ordering::Acquire)
    }

    /// CPU it runs or last ran on.
    pub fn cpu(&self) -> usize {
        self.cpu.load(Ordering::Acquire)
    }

    /// CPU time consumed, in ns (including the current run if running).
    pub fn cpu_time_ns(&self) -> u64 {
        let mut t = self.cpu_time_ns.load(Ordering::Relaxed);
        if self.on_cpu.load(Ordering::Acquire) {
            let start = self.run_start_tsc.load(Ordering::Relaxed);
            t += crate::time::tsc_to_ns(crate::arch::cpu::rdtsc().saturating_sub(start));
        }
        t
    }

    /// Context switches into this context.
    pub fn nr_switches(&self) -> u64 {
        self.nr_switches.load(Ordering::Relaxed)
    }

    /// Return addresses on the stack of a context that is switched out,
    /// innermost first (see `kport::PortTask::stack_trace`): the frame
    /// `sched_switch` left (six callee-saved registers, `rbp` the last
    /// pushed before them, then the return address), then the frame-pointer
    /// chain, every word checked to lie inside the context's own stack.
    pub fn stack_trace(&self, out: &mut [usize]) -> usize {
        if out.is_empty() || self.on_cpu.load(Ordering::Acquire) || !self.started.load(Ordering::Acquire) {
            return 0;
        }
        let stack = self.stack.lock();
        let Some(st) = stack.as_ref() else {
            return 0;
        };
        let (bottom, top) = (st.bottom(), st.top());
        let inside = |a: u64| a >= bottom && a.checked_add(16).is_some_and(|end| end <= top) && a & 7 == 0;
        // SAFETY: a plain aligned 8-byte read of the saved stack pointer:
        // the CPU switching the context in may write it concurrently (the
        // read is then stale, not torn, on x86-64), which the on_cpu check
        // after the walk detects.
        let rsp = unsafe { core::ptr::read_volatile(&raw const (*self.saved.get()).rsp) };
        if !inside(rsp) || !inside(rsp + 40) {
            return 0;
        }
        // SAFETY: both words lie inside this context's stack, which the
        // stack lock keeps allocated; its contents may change under us if
        // the context starts running, which only makes the dump wrong, and
        // the on_cpu check below throws such a dump away.
        let (mut rbp, ret) =
            unsafe { (((rsp + 40) as *const u64).read_volatile(), ((rsp + 48) as *const u64).read_volatile()) };
        let mut n = 0;
        out[n] = ret as usize;
        n += 1;
        while n < out.len() && inside(rbp) {
            // SAFETY: as above: `rbp` and `rbp + 8` are inside the stack.
            let (next, ret) =
                unsafe { ((rbp as *const u64).read_volatile(), ((rbp + 8) as *const u64).read_volatile()) };
            if ret == 0 {
                break;
            }
            out[n] = ret as usize;
            n += 1;
            if next <= rbp {
                break;
            }
            rbp = next;
        }
        drop(stack);
        if self.on_cpu.load(Ordering::Acquire) { 0 } else { n }
    }

    /// What it waits on, when blocked.
    pub fn wchan(&self) -> &'static str {
        *self.wchan.lock()
    }

    /// Its private data (the subsystem's per-thread structure); `None` once
    /// it was reaped.
    pub fn data(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.data.lock().clone()
    }

    /// Is a CPU executing it right now (or still switching away from it)?
    pub fn on_cpu_now(&self) -> bool {
        self.on_cpu.load(Ordering::Acquire)
    }

    /// Has it exited and been reaped (stack freed, no longer counted)?
    pub fn is_reaped(&self) -> bool {
        self.reaped.load(Ordering::Acquire)
    }

    /// Is it a CPU's idle context?
    pub fn is_idle(&self) -> bool {
        self.flags & FLAG_IDLE != 0
    }

    /// Does it call the workqueue scheduler hooks?
    pub fn has_worker_hooks(&self) -> bool {
        self.flags & FLAG_WORKER_HOOKS != 0
    }

    /// Times the scheduler tick called the workqueue's tick hook for it (a
    /// test reads it: the hook itself is the workqueue's).
    pub fn hook_ticks(&self) -> u64 {
        self.hook_ticks.load(Ordering::Relaxed)
    }
}
