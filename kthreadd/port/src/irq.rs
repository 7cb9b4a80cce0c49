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
//! * [`exits`] and [`exit_misuses`]: what [`irq_exit`] counts, so tests
//!   can see that a port calls it after each interrupt and in the right
//!   context without registering hooks (the bottom-half layer owns the one
//!   registration).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::{MAX_CPUS, Result, port};

/// Calls the bottom-half layer registers with the port.
pub trait IrqHooks: Send + Sync {
    /// An interrupt is about to return on `cpu`, the calling CPU (see
    /// [`irq_exit`]). Interrupts are disabled; the hook may enable them
    /// while it runs softirqs and must disable them again before it
    /// returns. Called on every interrupt: the nothing-pending case must
    /// cost next to nothing.
    fn irq_exit(&self, cpu: usize);
}

static HOOKS: spin::Once<&'static dyn IrqHooks> = spin::Once::new();

/// Register the bottom-half layer's hooks (once; later calls are ignored).
///
/// Context: boot.
pub fn set_hooks(hooks: &'static dyn IrqHooks) {
    HOOKS.call_once(|| hooks);
}

/// Pending softirq vectors, per CPU (Linux `local_softirq_pending`). The
/// bottom-half layer owns the bits (it raises and clears them); the word
/// lives here so that [`irq_exit`] can skip that layer's hook, an indirect
/// call, when nothing is pending, the case of nearly every interrupt.
pub static SOFTIRQ_PENDING: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Calls of [`irq_exit`], per CPU (the CPU the port reported).
static EXITS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Calls of [`irq_exit`] in hard-IRQ context or with interrupts enabled.
static EXIT_MISUSES: AtomicU64 = AtomicU64::new(0);

/// The last thing of a hard interrupt (Linux `irq_exit`): ports call it on
/// the way out of every interrupt that did not interrupt another one, with
/// interrupts disabled and the interrupt's own bookkeeping (its hard-IRQ
/// depth) already undone. It counts the call ([`exits`]), checks that
/// context on a CPU's first call and every [`CHECK_EVERY`]-th after (a call
/// in hard-IRQ context or with interrupts enabled counts in
/// [`exit_misuses`] and the first one prints a warning), then calls the
/// bottom-half layer's hook, if it registered and a softirq is pending
/// ([`SOFTIRQ_PENDING`]).
///
/// Context: interrupt exit, interrupts disabled.
#[inline]
pub fn irq_exit() {
    if !crate::installed() {
        return;
    }
    let p = port();
    let cpu = crate::local::cpu_id();
    // Only this CPU writes its counter, with interrupts off: no atomic
    // read-modify-write needed.
    let exits = &EXITS[cpu % MAX_CPUS];
    let n = exits.load(Ordering::Relaxed).wrapping_add(1);
    exits.store(n, Ordering::Relaxed);
    // The context check costs more than the rest of an idle exit together,
    // and every interrupt pays for it: it runs on each CPU's first exit and
    // every CHECK_EVERY-th after, enough for a port that calls irq_exit
    // from a wrong place to be caught by the suites' repeated interrupts.
    if n % CHECK_EVERY == 1 {
        let ctx = p.atomic_context();
        if ctx.hardirq || !ctx.irqs_disabled {
            exit_misused(cpu, ctx.hardirq, ctx.irqs_disabled);
        }
    }
    if SOFTIRQ_PENDING[cpu % MAX_CPUS].load(Ordering::Relaxed) == 0 {
        return;
    }
    if let Some(h) = HOOKS.get() {
        h.irq_exit(cpu);
    }
}

/// [`irq_exit`] checks its context on every this-many-th call on a CPU.
pub const CHECK_EVERY: u64 = 16;

#[cold]
fn exit_misused(cpu: usize, in_irq: bool, irqs_disabled: bool) {
    if EXIT_MISUSES.fetch_add(1, Ordering::Relaxed) == 0 {
        crate::warn::warn(&alloc::format!(
            "kport::irq::irq_exit called with in_irq={in_irq} irqs_disabled={irqs_disabled} on cpu {cpu} (a port bug)"
        ));
    }
}

/// Run pending softirqs at a point of task context where a port lets
/// interrupts into kernel code (Redox: a kernel thread's yield points,
/// which open a short interrupt window): the bottom-half layer's hook runs
/// what the window's interrupts left pending, as [`irq_exit`] would have,
/// without counting an interrupt exit. Does nothing in interrupt context
/// or with bottom halves disabled.
///
/// Context: task context, interrupts disabled (the port's `irq_save`).
pub fn softirq_point() {
    softirq_point_on(crate::local::cpu_id());
}

/// [`softirq_point`] for a caller that has its CPU number at hand (one call
/// through the port fewer on a path every yield point takes).
///
/// Context: as [`softirq_point`], on CPU `cpu`.
pub fn softirq_point_on(cpu: usize) {
    if let Some(h) = HOOKS.get() {
        h.irq_exit(cpu);
    }
}

/// How many times [`irq_exit`] ran on `cpu` so far. Interrupts on one CPU
/// end one after the other, so a count that moved past the value read in a
/// handler shows an exit after that handler on its CPU.
///
/// Context: any.
pub fn exits(cpu: usize) -> u64 {
    EXITS[cpu % MAX_CPUS].load(Ordering::Relaxed)
}

/// How many times [`irq_exit`] was called in hard-IRQ context (the port
/// had not undone the interrupt's depth yet) or with interrupts enabled,
/// on any CPU. Zero on a correct port.
///
/// Context: any.
pub fn exit_misuses() -> u64 {
    EXIT_MISUSES.load(Ordering::Relaxed)
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
    /// Unmask the line. An interrupt latched while it was masked is raised
    /// again through the machine (an IPI of its vector, a queued delivery),
    /// never by calling the handler from here: the caller may hold the
    /// line's action lock (a one-shot release does).
    ///
    /// Context: any.
    fn unmask(&self, irq: u32);
    /// What the line is, for listings (`IO-APIC 4-edge`).
    fn describe(&self, irq: u32) -> &'static str;
    /// Runs of line `irq`'s handler on `cpu` so far (Linux
    /// `kstat_irqs_cpu`): the port counts each delivery it passes to the
    /// handler, just before calling it; an interrupt held while the line
    /// is masked counts when it is delivered. 0 for a line or CPU that
    /// does not exist.
    ///
    /// Context: any.
    fn count(&self, irq: u32, cpu: usize) -> u64;
    /// Allocate a message-signalled line delivered to `cpu` (Linux
    /// `pci_alloc_irq_vectors` with `PCI_IRQ_MSIX`, one vector): its line
    /// number, to attach a handler to as to any line, and the message a
    /// device writes to raise it. Edge-triggered; masking is lazy (an
    /// interrupt while masked is latched and sent again at unmask).
    ///
    /// Return: `ENOSYS` where the port has no message-signalled lines (the
    /// default: drivers then use the legacy line), `EINVAL` for a CPU that
    /// does not exist, `EBUSY` when none is free.
    ///
    /// Context: any task context.
    fn msi_alloc(&self, cpu: usize) -> Result<MsiLine> {
        let _ = cpu;
        Err(crate::Error::new(crate::ENOSYS))
    }
    /// Give back a line from [`IrqChip::msi_alloc`]; its handler must have
    /// been detached.
    ///
    /// Context: any task context.
    fn msi_free(&self, irq: u32) {
        let _ = irq;
    }
    /// Give the port a way to rewrite the message of line `irq` in the
    /// device (`write(address, data)`, the driver's MSI-X table entry), so
    /// the port can move the line to another CPU when its CPU goes offline
    /// and back when it returns (Linux's `irq_migrate_all_off_this_cpu` with
    /// `irq_chip_write_msi_msg`). Default: lines never move.
    ///
    /// Context: any task context.
    fn msi_set_writer(&self, irq: u32, write: alloc::sync::Arc<dyn Fn(u64, u32) + Send + Sync>) {
        let _ = (irq, write);
    }
}

/// A message-signalled line ([`IrqChip::msi_alloc`]): the device raises
/// it by writing `data` (32 bits) to bus address `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiLine {
    /// The line, for `attach`.
    pub irq: u32,
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
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
    crate::local::bh_word().load(Ordering::Relaxed)
}

/// Raise the bottom-half word by `n` (the caller has preemption disabled).
///
/// Context: preemption disabled.
#[inline]
pub fn bh_add(n: u32) {
    word_add(crate::local::bh_word(), n);
}

/// Lower the bottom-half word by `n`.
///
/// Context: preemption disabled.
#[inline]
pub fn bh_sub(n: u32) {
    word_sub(crate::local::bh_word(), n);
}

/// Add `n` to the calling context's bottom-half word `w` (from
/// [`crate::Port::bh_word`]), returning the new value. A plain load and
/// store: only the calling context writes its word, and an interrupt that
/// nests on it between the two restores whatever it changed before it
/// returns (it raises the word only while it serves softirqs), so nothing
/// is lost. Under TCG that saves a locked instruction per change.
///
/// Context: preemption disabled.
#[inline]
pub fn word_add(w: &AtomicU32, n: u32) -> u32 {
    let v = w.load(Ordering::Relaxed).wrapping_add(n);
    w.store(v, Ordering::Relaxed);
    v
}

/// Subtract `n` from the calling context's bottom-half word `w`, returning
/// the new value (as [`word_add`]).
///
/// Context: preemption disabled.
#[inline]
pub fn word_sub(w: &AtomicU32, n: u32) -> u32 {
    let v = w.load(Ordering::Relaxed).wrapping_sub(n);
    w.store(v, Ordering::Relaxed);
    v
}

/// The default [`crate::Port::bh_word`]: one word per CPU.
pub fn per_cpu_bh_word(cpu: usize) -> &'static AtomicU32 {
    &BH[cpu % MAX_CPUS]
}

/// A device interrupt tests can make fire on demand (the testkernel: PIT
/// channel 0 in one-shot mode on ISA line 0; the host port: a simulated
/// line), for the harness.
pub trait TestIrq: Send + Sync {
    /// Its line on the port's [`IrqChip`].
    fn line(&self) -> u32;
    /// Make the device raise the interrupt once (the interrupt arrives
    /// asynchronously, on whatever CPU the line is routed to). Each call
    /// produces exactly one interrupt at the line: one run of an attached,
    /// unmasked handler; while the line is masked it is held, and the fires
    /// held meanwhile run the handler once at unmask (as Linux resends one
    /// pending interrupt); with no handler attached it is lost.
    ///
    /// Context: any task context.
    fn fire(&self);
}
