//! The testkernel's spinlocks: the subsystem's one lock family
//! (`kport::sync::SpinLock<T, G>`) with the testkernel's own guard policies.
//!
//! * [`IrqSpinLock`] saves and disables interrupts and disables preemption
//!   (Linux `spin_lock_irqsave`): for anything an interrupt handler touches.
//! * [`SpinLock`] disables preemption only (Linux `spin_lock`).
//!
//! The policies work from the first instruction of boot (they use the
//! per-CPU block, not the installed port) and record the owner's CPU, so a
//! contention warning names it (the warning itself comes from the lock
//! family, through [`LOCK_ENV`], set at boot).

use core::fmt;

use kport::sync::{GuardPolicy, LockEnv};

use crate::arch::cpu;
use crate::percpu;

/// Interrupts and preemption off while held.
pub enum IrqOff {}

impl GuardPolicy for IrqOff {
    type Saved = bool;
    #[inline(always)]
    fn enter() -> bool {
        percpu::lock_enter()
    }
    #[inline(always)]
    fn exit(irqs_were_on: bool) {
        percpu::lock_exit(irqs_were_on)
    }
    #[inline(always)]
    fn owner_tag() -> u32 {
        percpu::cpu_id_raw() + 1
    }
}

/// Preemption off while held.
pub enum NoPreempt {}

impl GuardPolicy for NoPreempt {
    type Saved = ();
    #[inline(always)]
    fn enter() {
        percpu::preempt_disable()
    }
    #[inline(always)]
    fn exit(_: ()) {
        percpu::preempt_enable()
    }
    #[inline(always)]
    fn owner_tag() -> u32 {
        percpu::cpu_id_raw() + 1
    }
}

/// A spinlock that saves the interrupt flag, disables interrupts and
/// preemption while held, and restores them on release.
pub type IrqSpinLock<T> = kport::sync::SpinLock<T, IrqOff>;

/// A spinlock that disables preemption while held.
pub type SpinLock<T> = kport::sync::SpinLock<T, NoPreempt>;

/// What the lock family's contention warning uses: the raw clock (no
/// lock), the emergency console line, a frame-pointer backtrace.
pub struct TestkernelLockEnv;

impl LockEnv for TestkernelLockEnv {
    fn now_ns(&self) -> u64 {
        crate::time::now_ns_raw()
    }
    fn cpu_id(&self) -> usize {
        percpu::cpu_id()
    }
    fn emergency_line(&self, line: fmt::Arguments<'_>) {
        crate::console::emergency_line(line);
    }
    fn dump_stack(&self) {
        crate::panic::backtrace(cpu::instruction_pointer(), cpu::frame_pointer());
    }
}

/// The lock environment, given to the lock family at boot.
pub static LOCK_ENV: TestkernelLockEnv = TestkernelLockEnv;

/// Save the interrupt flag and disable interrupts (Linux `local_irq_save`).
pub fn irq_save() -> bool {
    let on = cpu::irqs_enabled();
    cpu::cli();
    on
}

/// Restore the interrupt flag saved by [`irq_save`] (Linux `local_irq_restore`).
pub fn irq_restore(was_on: bool) {
    if was_on {
        cpu::sti();
    }
}
