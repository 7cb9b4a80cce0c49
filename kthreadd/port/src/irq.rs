//! What the bottom-half layer needs from the host kernel's interrupt
//! handling: a call at every interrupt exit, device interrupt lines it can
//! attach handlers to, and a per-context bottom-half word.
//!
//! * [`irq_exit`]: a port calls it as the last thing of every hard
//!   interrupt (device lines, the timer tick, IPIs) before the interrupted
//!   context resumes, with interrupts disabled, when the interrupt is not
//!   nested in another one (Linux `irq_exit`). The softirq layer registers
//!   [`IrqHooks`] and runs pending softirqs there. Ports where interrupts
//!   reach kernel code only at certain points (Redox) also call it at those
//!   points and in the idle loop.
//! * [`IrqChip`]: the device interrupt lines of the machine (Linux's
//!   `irq_chip` and IRQ descriptors, reduced): one handler per line, mask
//!   and unmask. The threaded-IRQ layer multiplexes actions on a line.
//! * [`bh_count`]: the calling context's bottom-half nesting (Linux keeps
//!   it in `preempt_count`'s softirq bits): raised while bottom halves are
//!   disabled or a softirq is served. [`crate::might_sleep`] and
//!   [`crate::AtomicContext::softirq`] read it, on every port.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::{MAX_CPUS, Result, port};

/// Calls the bottom-half layer registers with the port.
pub trait IrqHooks: Send + Sync {
    /// An interrupt is about to return (see [`irq_exit`]). Interrupts are
    /// disabled; the hook may enable them while it runs softirqs and must
    /// disable them again before it returns.
    fn irq_exit(&self);
}

static HOOKS: spin::Once<&'static dyn IrqHooks> = spin::Once::new();

/// Register the bottom-half layer's hooks (once; later calls are ignored).
///
/// Context: boot.
pub fn set_hooks(hooks: &'static dyn IrqHooks) {
    HOOKS.call_once(|| hooks);
}

/// The last thing of a hard interrupt (Linux `irq_exit`): ports call it on
/// the way out of every interrupt that did not interrupt another one, with
/// interrupts disabled and the interrupt's own bookkeeping (its hard-IRQ
/// depth) already undone. Does nothing until the bottom-half layer
/// registered.
///
/// Context: interrupt exit, interrupts disabled.
#[inline]
pub fn irq_exit() {
    if let Some(h) = HOOKS.get() {
        h.irq_exit();
    }
}

/// A handler of one device interrupt line, called in hard-IRQ context with
/// the line's number; the port acknowledges the interrupt controller after
/// it returns.
pub trait IrqHandler: Send + Sync {
    /// The line fired.
    fn handle(&self, irq: u32);
}

/// The machine's device interrupt lines, as the host kernel routes them
/// (the testkernel: the IOAPIC's legacy lines with the MADT's overrides;
/// Redox: its legacy lines and MSI vectors).
pub trait IrqChip: Send + Sync {
    /// Number of lines (valid lines are `0..nr_irqs()`).
    fn nr_irqs(&self) -> u32;
    /// Route line `irq` to `handler` and unmask it. `EBUSY` if a handler is
    /// attached, `EINVAL` for a line that does not exist or that the host
    /// kernel keeps for itself.
    ///
    /// Context: any task context.
    fn attach(&self, irq: u32, handler: &'static dyn IrqHandler) -> Result<()>;
    /// Mask line `irq` and forget its handler; when it returns, the handler
    /// is not running on any CPU.
    ///
    /// Context: may sleep.
    fn detach(&self, irq: u32);
    /// Mask the line (nestable is not required: the caller pairs them).
    ///
    /// Context: any.
    fn mask(&self, irq: u32);
    /// Unmask the line.
    ///
    /// Context: any.
    fn unmask(&self, irq: u32);
    /// What the line is, for listings (`IO-APIC 4-edge`).
    fn describe(&self, irq: u32) -> &'static str;
}

/// Softirq bits of the bottom-half word: a softirq is being served (Linux
/// `SOFTIRQ_OFFSET`).
pub const SOFTIRQ_OFFSET: u32 = 1;
/// One level of `local_bh_disable` in the bottom-half word (Linux
/// `SOFTIRQ_DISABLE_OFFSET`, twice the serving bit, so nesting counts).
pub const SOFTIRQ_DISABLE_OFFSET: u32 = 2;

static BH: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// The calling context's bottom-half word. It is per CPU, through the
/// port's [`crate::Port::bh_word`]: a bottom-half section disables
/// preemption, so it cannot move while the word is raised.
///
/// Context: any (meaningful with preemption disabled).
#[inline]
pub fn bh_count() -> u32 {
    port().bh_word().load(Ordering::Relaxed)
}

/// Raise the bottom-half word by `n` (the caller has preemption disabled).
///
/// Context: preemption disabled.
#[inline]
pub fn bh_add(n: u32) {
    port().bh_word().fetch_add(n, Ordering::Relaxed);
}

/// Lower the bottom-half word by `n`.
///
/// Context: preemption disabled.
#[inline]
pub fn bh_sub(n: u32) {
    port().bh_word().fetch_sub(n, Ordering::Relaxed);
}

/// The default [`crate::Port::bh_word`]: one word per CPU.
pub fn per_cpu_bh_word(cpu: usize) -> &'static AtomicU32 {
    &BH[cpu % MAX_CPUS]
}

/// A device interrupt tests can make fire on demand (the testkernel: the
/// 16550's transmit-holding-register-empty interrupt), for the harness.
pub trait TestIrq: Send + Sync {
    /// Its line on the port's [`IrqChip`].
    fn line(&self) -> u32;
    /// Make the device raise the interrupt once (the interrupt arrives
    /// asynchronously, on whatever CPU the line is routed to).
    ///
    /// Context: any task context.
    fn fire(&self);
}
