//! Spinlocks for the testkernel.
//!
//! * [`SpinLock`] disables preemption while held (Linux `spin_lock`).
//! * [`IrqSpinLock`] also saves and disables interrupts (Linux
//!   `spin_lock_irqsave`): use it for anything an interrupt handler touches.
//!
//! Both spin with `pause`. A lock that stays taken for [`SPIN_WARN_NS`] prints
//! one warning with the owner CPU, so a deadlock shows up in the log instead of
//! as a silent hang (the test watchdog then reports the test).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch::cpu;
use crate::percpu;

/// How long a CPU spins on one lock before it warns (2 s of guest time: far
/// beyond any legitimate hold time, short enough to show up before a test's
/// watchdog fires).
pub const SPIN_WARN_NS: u64 = 2_000_000_000;

const UNLOCKED: u32 = u32::MAX;

/// The raw lock word: `UNLOCKED` or the CPU number of the holder.
struct RawSpin {
    owner: AtomicU32,
}

impl RawSpin {
    const fn new() -> Self {
        Self { owner: AtomicU32::new(UNLOCKED) }
    }

    fn lock(&self, name: &'static str) {
        let me = percpu::cpu_id_raw();
        if self.try_lock_as(me) {
            return;
        }
        let start = crate::time::now_ns_raw();
        let mut warned = false;
        loop {
            while self.owner.load(Ordering::Relaxed) != UNLOCKED {
                cpu::pause();
                if !warned && crate::time::now_ns_raw().wrapping_sub(start) > SPIN_WARN_NS {
                    warned = true;
                    crate::console::emergency_line(format_args!(
                        "# WARNING: cpu {me} spinning on lock {name} held by cpu {} for over {} ms",
                        self.owner.load(Ordering::Relaxed),
                        SPIN_WARN_NS / 1_000_000
                    ));
                    crate::panic::backtrace(crate::arch::cpu::frame_pointer(), crate::arch::cpu::frame_pointer());
                }
            }
            if self.try_lock_as(me) {
                return;
            }
        }
    }

    fn try_lock_as(&self, me: u32) -> bool {
        self.owner.compare_exchange(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    fn unlock(&self) {
        self.owner.store(UNLOCKED, Ordering::Release);
    }

    fn holder(&self) -> Option<u32> {
        match self.owner.load(Ordering::Relaxed) {
            UNLOCKED => None,
            c => Some(c),
        }
    }
}

/// A spinlock that disables preemption while held.
pub struct SpinLock<T: ?Sized> {
    name: &'static str,
    raw: RawSpin,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serializes all access to `data`, so sharing the lock is safe
// whenever the data may be sent between CPUs.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the data.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

/// Guard of a [`SpinLock`].
pub struct SpinGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
}

impl<T> SpinLock<T> {
    /// A new unlocked lock; `name` appears in contention warnings.
    pub const fn new(name: &'static str, data: T) -> Self {
        Self { name, raw: RawSpin::new(), data: UnsafeCell::new(data) }
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Take the lock, disabling preemption until the guard drops.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        percpu::preempt_disable();
        self.raw.lock(self.name);
        SpinGuard { lock: self }
    }
}

impl<T: ?Sized> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held by this CPU.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.raw.unlock();
        percpu::preempt_enable();
    }
}

/// A spinlock that saves the interrupt flag, disables interrupts and
/// preemption while held, and restores them on release.
pub struct IrqSpinLock<T: ?Sized> {
    name: &'static str,
    raw: RawSpin,
    data: UnsafeCell<T>,
}

// SAFETY: as for SpinLock.
unsafe impl<T: ?Sized + Send> Sync for IrqSpinLock<T> {}
// SAFETY: as for SpinLock.
unsafe impl<T: ?Sized + Send> Send for IrqSpinLock<T> {}

/// Guard of an [`IrqSpinLock`].
pub struct IrqSpinGuard<'a, T: ?Sized> {
    lock: &'a IrqSpinLock<T>,
    irqs_were_on: bool,
}

impl<T> IrqSpinLock<T> {
    /// A new unlocked lock; `name` appears in contention warnings.
    pub const fn new(name: &'static str, data: T) -> Self {
        Self { name, raw: RawSpin::new(), data: UnsafeCell::new(data) }
    }
}

impl<T: ?Sized> IrqSpinLock<T> {
    /// Take the lock with interrupts and preemption disabled.
    pub fn lock(&self) -> IrqSpinGuard<'_, T> {
        let irqs_were_on = cpu::irqs_enabled();
        cpu::cli();
        percpu::preempt_disable();
        self.raw.lock(self.name);
        IrqSpinGuard { lock: self, irqs_were_on }
    }

    /// Take the lock only if it is free.
    pub fn try_lock(&self) -> Option<IrqSpinGuard<'_, T>> {
        let irqs_were_on = cpu::irqs_enabled();
        cpu::cli();
        percpu::preempt_disable();
        if self.raw.try_lock_as(percpu::cpu_id_raw()) {
            Some(IrqSpinGuard { lock: self, irqs_were_on })
        } else {
            percpu::preempt_enable_no_resched();
            if irqs_were_on {
                cpu::sti();
            }
            None
        }
    }

    /// The CPU holding the lock, if any (for diagnostics).
    pub fn holder(&self) -> Option<u32> {
        self.raw.holder()
    }

    /// Release a lock whose guard was forgotten (the context switch hands the
    /// run-queue lock from one context to the next this way).
    ///
    /// # Safety
    /// The lock must be held by this CPU through a forgotten guard; the
    /// caller also restores the preemption count the guard would have.
    pub unsafe fn force_unlock(&self) {
        self.raw.unlock();
    }

    /// Access the data without locking.
    ///
    /// # Safety
    /// Only for emergency paths (panic, exception reports) where this CPU
    /// already owns the machine and the other CPUs are stopped.
    #[allow(clippy::mut_from_ref)] // the unsafe contract replaces the borrow rules
    pub unsafe fn force_get(&self) -> &mut T {
        // SAFETY: the caller guarantees no concurrent access.
        unsafe { &mut *self.data.get() }
    }
}

impl<T: ?Sized> Deref for IrqSpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held by this CPU.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for IrqSpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for IrqSpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.raw.unlock();
        if self.irqs_were_on {
            // Re-enable preemption first with interrupts still off, then let a
            // pending reschedule happen once interrupts are back on.
            percpu::preempt_enable_no_resched();
            cpu::sti();
            percpu::preempt_check_resched();
        } else {
            percpu::preempt_enable_no_resched();
        }
    }
}

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
