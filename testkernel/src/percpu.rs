//! Per-CPU data reached through the GS base.
//!
//! Every CPU's GS base points at its [`PerCpu`] in [`PERCPU`], whose first
//! word points at itself, so `this_cpu()` is one `mov rax, gs:[0]`. The
//! preemption count and the need-resched flag live here (Linux keeps them in
//! `preempt_count` and `TIF_NEED_RESCHED`), and the two interrupt counters:
//! `irq_depth` (in a hard interrupt handler: Linux's HARDIRQ bits) and
//! `irq_frames` (interrupts in progress, their exit path included: see
//! `arch::interrupts`).

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::arch::cpu;

/// Most CPUs the testkernel supports.
pub const MAX_CPUS: usize = 64;

/// Data of one CPU.
#[repr(C)]
pub struct PerCpu {
    self_ptr: AtomicPtr<PerCpu>,
    /// Logical CPU number (0 is the boot CPU).
    pub cpu: AtomicU32,
    /// Local APIC id.
    pub apic_id: AtomicU32,
    /// Preemption-disable depth; preemption happens only at 0.
    pub preempt_count: AtomicU32,
    /// Interrupt nesting depth (non-zero: in hard-IRQ context).
    pub irq_depth: AtomicU32,
    /// Interrupts in progress on this CPU, from entry until the return path
    /// is done with `irq_exit` (non-zero: an interrupt frame is on the
    /// stack; no sleeping, no preemption). At least `irq_depth`; 2 while an
    /// interrupt nests in another one's `irq_exit`.
    pub irq_frames: AtomicU32,
    /// Set by the tick or a wake-up: the scheduler should run soon.
    pub need_resched: AtomicBool,
    /// The running context (a `*const sched::Task`), null before the scheduler starts.
    pub current: AtomicPtr<u8>,
    /// Timer interrupts taken on this CPU.
    pub ticks: AtomicU64,
    /// Interrupts of any vector (32 and up) taken on this CPU.
    pub irqs: AtomicU64,
    /// Set once the CPU finished its bring-up.
    pub online: AtomicBool,
    /// TLB generation this CPU has flushed up to (see `mem::stack`).
    pub tlb_gen_seen: AtomicU64,
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            self_ptr: AtomicPtr::new(core::ptr::null_mut()),
            cpu: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            preempt_count: AtomicU32::new(0),
            irq_depth: AtomicU32::new(0),
            irq_frames: AtomicU32::new(0),
            need_resched: AtomicBool::new(false),
            current: AtomicPtr::new(core::ptr::null_mut()),
            ticks: AtomicU64::new(0),
            irqs: AtomicU64::new(0),
            online: AtomicBool::new(false),
            tlb_gen_seen: AtomicU64::new(0),
        }
    }
}

/// Every CPU's data, indexed by logical CPU number.
pub static PERCPU: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// Number of CPUs brought up so far (and, after SMP boot, online).
static CPUS_UP: AtomicUsize = AtomicUsize::new(0);
/// Number of CPUs found in the MADT.
static CPUS_PRESENT: AtomicUsize = AtomicUsize::new(1);

/// Point this CPU's GS base at `PERCPU[cpu]`. Must run before anything else on
/// the CPU (the locks read the CPU number through it).
pub fn init_this_cpu(cpu_num: usize, apic_id: u32) {
    let pc = &PERCPU[cpu_num];
    pc.self_ptr.store(pc as *const PerCpu as *mut PerCpu, Ordering::Relaxed);
    pc.cpu.store(cpu_num as u32, Ordering::Relaxed);
    pc.apic_id.store(apic_id, Ordering::Relaxed);
    cpu::wrmsr(cpu::MSR_GS_BASE, pc as *const PerCpu as u64);
}

/// Record that one more CPU finished bring-up.
pub fn mark_online(cpu_num: usize) {
    PERCPU[cpu_num].online.store(true, Ordering::Release);
    CPUS_UP.fetch_add(1, Ordering::AcqRel);
}

/// Set the number of CPUs present (from the MADT).
pub fn set_present(n: usize) {
    CPUS_PRESENT.store(n, Ordering::Relaxed);
}

/// CPUs present in the machine.
pub fn present() -> usize {
    CPUS_PRESENT.load(Ordering::Relaxed)
}

/// CPUs that completed bring-up.
pub fn cpus_up() -> usize {
    CPUS_UP.load(Ordering::Acquire)
}

/// This CPU's data.
#[inline(always)]
pub fn this_cpu() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: GS base points at a PERCPU entry (set by init_this_cpu before any
    // other code runs on the CPU) whose first word is its own address.
    unsafe {
        asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags));
        &*p
    }
}

/// This CPU's number as stored (the GS base is set before any other code runs on a CPU).
#[inline(always)]
pub fn cpu_id_raw() -> u32 {
    this_cpu().cpu.load(Ordering::Relaxed)
}

/// This CPU's number.
#[inline(always)]
pub fn cpu_id() -> usize {
    cpu_id_raw() as usize
}

/// Disable preemption (nestable; Linux `preempt_disable`).
#[inline(always)]
pub fn preempt_disable() {
    this_cpu().preempt_count.fetch_add(1, Ordering::Relaxed);
}

/// Re-enable preemption without rescheduling.
#[inline(always)]
pub fn preempt_enable_no_resched() {
    this_cpu().preempt_count.fetch_sub(1, Ordering::Relaxed);
}

/// Re-enable preemption; reschedule if it reached zero and a reschedule is due
/// (under `preempt=full`).
#[inline(always)]
pub fn preempt_enable() {
    preempt_enable_no_resched();
    preempt_check_resched();
}

/// Reschedule now if preemption is allowed here and one is due: not in an
/// interrupt, its exit path (`irq_exit`) included.
#[inline(always)]
pub fn preempt_check_resched() {
    let pc = this_cpu();
    if pc.need_resched.load(Ordering::Relaxed)
        && pc.preempt_count.load(Ordering::Relaxed) == 0
        && pc.irq_frames.load(Ordering::Relaxed) == 0
        && cpu::irqs_enabled()
    {
        crate::sched::preempt_point();
    }
}

/// Is this CPU in a context that must not sleep (preemption or interrupts
/// disabled, or in an interrupt handler or its exit path)?
pub fn in_atomic() -> bool {
    let pc = this_cpu();
    pc.preempt_count.load(Ordering::Relaxed) != 0 || pc.irq_frames.load(Ordering::Relaxed) != 0 || !cpu::irqs_enabled()
}

/// Is this CPU running an interrupt handler?
pub fn in_irq() -> bool {
    this_cpu().irq_depth.load(Ordering::Relaxed) != 0
}

/// Enter a spinlock section: interrupts off, preemption count up; returns
/// whether interrupts were on (one GS access for both).
#[inline]
pub fn lock_enter() -> bool {
    let on = cpu::irqs_enabled();
    cpu::cli();
    this_cpu().preempt_count.fetch_add(1, Ordering::Relaxed);
    on
}

/// Leave a section entered with [`lock_enter`]: restore interrupts, then
/// reschedule if due and allowed (not in an interrupt or its exit path).
#[inline]
pub fn lock_exit(irqs_were_on: bool) {
    let pc = this_cpu();
    pc.preempt_count.fetch_sub(1, Ordering::Relaxed);
    if irqs_were_on {
        cpu::sti();
        if pc.need_resched.load(Ordering::Relaxed)
            && pc.preempt_count.load(Ordering::Relaxed) == 0
            && pc.irq_frames.load(Ordering::Relaxed) == 0
        {
            crate::sched::preempt_point();
        }
    }
}
