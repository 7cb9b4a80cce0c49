//! Per-CPU data reached through the GS base.
//!
//! Every CPU's GS base points at its [`PerCpu`] in [`PERCPU`], whose first
//! word points at itself, so `this_cpu()` is one `mov rax, gs:[0]`. That
//! pointer is only good while the caller stays on this CPU: code that may
//! be preempted and moved reads (or counts on) its CPU's running context,
//! preemption count and interrupt counters with one GS-relative
//! instruction each ([`current_raw`], [`preempt_disable`],
//! [`preempt_count`], [`irq_depth`], [`irq_frames`], [`need_resched`]), as
//! Linux's `this_cpu_read` and `__preempt_count_add` do: through the
//! pointer, a preemption and migration between the two instructions would
//! read or change the CPU left behind (the torture suite met a new context
//! that took another one's entry that way). The
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

/// Offsets of the fields read or changed in one GS-relative instruction.
const CURRENT_OFF: usize = core::mem::offset_of!(PerCpu, current);
const PREEMPT_COUNT_OFF: usize = core::mem::offset_of!(PerCpu, preempt_count);
const IRQ_DEPTH_OFF: usize = core::mem::offset_of!(PerCpu, irq_depth);
const IRQ_FRAMES_OFF: usize = core::mem::offset_of!(PerCpu, irq_frames);
const NEED_RESCHED_OFF: usize = core::mem::offset_of!(PerCpu, need_resched);

/// Where the subsystem's inline per-CPU reads find this CPU's number,
/// preemption count and interrupt depth (`kport::local`).
pub fn gs_layout() -> kport::local::GsLayout {
    kport::local::GsLayout {
        cpu_id: core::mem::offset_of!(PerCpu, cpu) as u32,
        preempt_count: Some(PREEMPT_COUNT_OFF as u32),
        irq_depth: Some(IRQ_DEPTH_OFF as u32),
        resched: kport::local::Resched::Flag(NEED_RESCHED_OFF as u32),
        native_irq_flag: true,
        irq_off_count: None,
    }
}

/// Read a 32-bit field of this CPU's [`PerCpu`] in one instruction.
macro_rules! gs_read_u32 {
    ($off:expr) => {{
        let v: u32;
        // SAFETY: GS base points at this CPU's PerCpu (set before any other
        // code runs on the CPU); the offset is that of an aligned 32-bit
        // atomic field, read whole by one `mov`.
        unsafe {
            asm!("mov {0:e}, dword ptr gs:[{off}]", out(reg) v, off = const $off, options(nostack, readonly, preserves_flags));
        }
        v
    }};
}

/// The running context of the CPU the caller is on at this instruction (a
/// `*const sched::Task`; null before the scheduler starts), read in one
/// instruction.
#[inline(always)]
pub fn current_raw() -> *mut u8 {
    let p: *mut u8;
    // SAFETY: as in gs_read_u32, for the pointer-sized `current` field.
    unsafe {
        asm!("mov {}, qword ptr gs:[{off}]", out(reg) p, off = const CURRENT_OFF, options(nostack, readonly, preserves_flags));
    }
    p
}

/// This CPU's preemption count, read in one instruction.
#[inline(always)]
pub fn preempt_count() -> u32 {
    gs_read_u32!(PREEMPT_COUNT_OFF)
}

/// This CPU's hard-interrupt depth, read in one instruction.
#[inline(always)]
pub fn irq_depth() -> u32 {
    gs_read_u32!(IRQ_DEPTH_OFF)
}

/// This CPU's interrupts in progress, read in one instruction.
#[inline(always)]
pub fn irq_frames() -> u32 {
    gs_read_u32!(IRQ_FRAMES_OFF)
}

/// This CPU's need-resched flag, read in one instruction.
#[inline(always)]
pub fn need_resched() -> bool {
    let v: u8;
    // SAFETY: as in gs_read_u32, for the one-byte `need_resched` field.
    unsafe {
        asm!("mov {0}, byte ptr gs:[{off}]", out(reg_byte) v, off = const NEED_RESCHED_OFF, options(nostack, readonly, preserves_flags));
    }
    v != 0
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

/// Disable preemption (nestable; Linux `preempt_disable`). One instruction
/// (Linux's `__preempt_count_add`): until it is done the caller may be
/// moved, and the count it raises must be that of the CPU it then runs on.
#[inline(always)]
pub fn preempt_disable() {
    // SAFETY: as in gs_read_u32; the count is changed only by its own CPU
    // (one `add` is whole against this CPU's interrupts), others only read it.
    unsafe {
        asm!("add dword ptr gs:[{off}], 1", off = const PREEMPT_COUNT_OFF, options(nostack));
    }
}

/// Re-enable preemption without rescheduling.
#[inline(always)]
pub fn preempt_enable_no_resched() {
    // SAFETY: as in preempt_disable: one plain `sub` (no `lock` prefix: only
    // this CPU writes the count, and an interrupt restores what it raised
    // before it returns).
    unsafe {
        asm!("sub dword ptr gs:[{off}], 1", off = const PREEMPT_COUNT_OFF, options(nostack));
    }
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
    if need_resched() && preempt_count() == 0 && irq_frames() == 0 && cpu::irqs_enabled() {
        crate::sched::preempt_point();
    }
}

/// Is this CPU in a context that must not sleep (preemption or interrupts
/// disabled, or in an interrupt handler or its exit path)?
pub fn in_atomic() -> bool {
    // Field by field, each of the CPU the caller is on at that instruction:
    // a caller that can be moved has a zero count and no interrupt frame on
    // whichever CPU it runs.
    preempt_count() != 0 || irq_frames() != 0 || !cpu::irqs_enabled()
}

/// Is this CPU running an interrupt handler?
pub fn in_irq() -> bool {
    irq_depth() != 0
}

/// Enter a spinlock section: interrupts off, preemption count up; returns
/// whether interrupts were on (one GS access for both).
#[inline]
pub fn lock_enter() -> bool {
    let on = cpu::irqs_enabled();
    cpu::cli();
    // A plain `add`, as preempt_disable: a locked one costs an atomic
    // operation on every lock taken (under TCG, a host atomic per lock).
    preempt_disable();
    on
}

/// Leave a section entered with [`lock_enter`]: restore interrupts, then
/// reschedule if due and allowed (not in an interrupt or its exit path).
#[inline]
pub fn lock_exit(irqs_were_on: bool) {
    let pc = this_cpu();
    preempt_enable_no_resched();
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
