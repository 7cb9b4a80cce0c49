//! Testkernel cases of suite `port` that need the machine behind the
//! port's interrupt lines: the IOAPIC routing that `crate::irq` built from
//! the MADT, and the interrupt return path of `arch::interrupts` with an
//! interrupt nesting in another one's `irq_exit` window.

use alloc::format;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use kport::irq::IrqHandler;
use kport::port;
use ktests::port_api::wait_for;
use ktests::{Failure, check, check_eq, diag, ktest};

use crate::arch::{cpu, interrupts, ioapic, pit};
use crate::irq::{self, IRQ_CPU, PIT_LINE};
use crate::percpu::{self, PERCPU};

/// Redirection entry bits (see `arch::ioapic`).
const RTE_MASKED: u32 = 1 << 16;
const RTE_LEVEL: u32 = 1 << 15;
const RTE_ACTIVE_LOW: u32 = 1 << 13;

/// A handler that does nothing.
struct Quiet;
impl IrqHandler for Quiet {
    fn handle(&self, _irq: u32) {}
}
static QUIET: Quiet = Quiet;

ktest!(port::ioapic_lines_follow_the_madt => |ctx| {
    let madt = irq::madt().ok_or_else(|| Failure::Fail("no MADT was kept".into()))?;
    let chip = port().irq_chip().ok_or_else(|| Failure::Fail("the testkernel has no irq chip".into()))?;
    check!(chip.nr_irqs() >= 16, "{} lines", chip.nr_irqs());
    let boot_apic = PERCPU[IRQ_CPU].apic_id.load(Ordering::Relaxed);
    for isa in 0..16u32 {
        let c = irq::line_config(isa).ok_or_else(|| Failure::Fail(format!("no line {isa}")))?;
        let (gsi, flags) = (madt.isa_gsi[isa as usize], madt.isa_flags[isa as usize]);
        diag!(
            "line {isa}: GSI {gsi} flags {flags:#x}{} -> {} {c:?}",
            if madt.isa_overridden[isa as usize] { " (override)" } else { "" },
            chip.describe(isa)
        );
        let shared = !madt.isa_overridden[isa as usize]
            && (0..16).any(|o| o != isa as usize && madt.isa_overridden[o] && madt.isa_gsi[o] == gsi);
        if shared {
            check!(c.pin.is_none() && c.refused, "line {isa} shares GSI {gsi} but has a pin: {c:?}");
            check_eq!(chip.attach(isa, &QUIET).map_err(|e| e.errno), Err(kport::EINVAL), "attach of line {isa}");
            continue;
        }
        check_eq!(c.pin, gsi.checked_sub(madt.ioapic_gsi_base), "line {isa}'s pin");
        check_eq!(c.level, (flags >> 2) & 3 == 3, "line {isa}'s trigger mode (flags {flags:#x})");
        check_eq!(c.active_low, flags & 3 == 3, "line {isa}'s polarity (flags {flags:#x})");
        if c.refused {
            continue;
        }
        let (lo, hi) = ioapic::entry(c.pin.unwrap_or(0));
        check_eq!(lo & 0xff, u32::from(interrupts::VEC_IRQ_BASE) + isa, "line {isa}'s vector");
        check_eq!(hi >> 24, boot_apic, "line {isa}'s destination");
        check_eq!(lo & RTE_LEVEL != 0, c.level, "line {isa}'s entry trigger mode");
        check_eq!(lo & RTE_ACTIVE_LOW != 0, c.active_low, "line {isa}'s entry polarity");
    }
    // QEMU's PC: ISA IRQ 0 is on GSI 2, so line 2 has no pin; COM1's line
    // is the console's.
    check_eq!(madt.isa_gsi[0], 2, "QEMU maps IRQ 0 to GSI 2");
    check_eq!(chip.attach(2, &QUIET).map_err(|e| e.errno), Err(kport::EINVAL), "attach of line 2");
    check_eq!(chip.attach(4, &QUIET).map_err(|e| e.errno), Err(kport::EINVAL), "attach of the console's line");
    check_eq!(chip.describe(PIT_LINE), "IO-APIC 2-edge");
    // Masked at the pin while detached, open while attached.
    let pin = irq::line_config(PIT_LINE).and_then(|c| c.pin).unwrap_or(0);
    check!(ioapic::entry(pin).0 & RTE_MASKED != 0, "the detached test line is open");
    chip.attach(PIT_LINE, &QUIET).map_err(|e| Failure::Fail(format!("attach: {e:?}")))?;
    let open = ioapic::entry(pin).0 & RTE_MASKED == 0;
    chip.detach(PIT_LINE);
    check!(open, "the attached test line is masked");
    check!(ioapic::entry(pin).0 & RTE_MASKED != 0, "detach left the test line open");
    Ok(())
});

// What the window probe and the nested handler saw.
static ARMED: AtomicBool = AtomicBool::new(false);
static DONE: AtomicBool = AtomicBool::new(false);
static TIMED_OUT: AtomicBool = AtomicBool::new(false);
static W_DEPTH: AtomicU32 = AtomicU32::new(u32::MAX);
static W_FRAMES: AtomicU32 = AtomicU32::new(u32::MAX);
static W_IRQS_ON: AtomicBool = AtomicBool::new(true);
static N_RAN: AtomicBool = AtomicBool::new(false);
static N_DEPTH: AtomicU32 = AtomicU32::new(u32::MAX);
static N_FRAMES: AtomicU32 = AtomicU32::new(u32::MAX);
static N_IN_IRQ: AtomicBool = AtomicBool::new(false);
static EXITS_BEFORE: AtomicU64 = AtomicU64::new(0);
static EXITS_AFTER: AtomicU64 = AtomicU64::new(u64::MAX);
static FRAMES_AFTER: AtomicU32 = AtomicU32::new(u32::MAX);
static CURRENT_BEFORE: AtomicUsize = AtomicUsize::new(0);
static CURRENT_AFTER: AtomicUsize = AtomicUsize::new(1);

/// How long the probe keeps interrupts on waiting for the nested one.
const WINDOW_MAX_NS: u64 = 500_000_000;

/// On the return path of an outermost interrupt on the line's CPU, right
/// after `irq_exit` (once, when armed): load a PIT count and enable
/// interrupts, as a softirq run does, until the PIT's interrupt has nested.
fn window_probe() {
    if percpu::cpu_id() != IRQ_CPU || !ARMED.swap(false, Ordering::SeqCst) {
        return;
    }
    let pc = percpu::this_cpu();
    W_DEPTH.store(pc.irq_depth.load(Ordering::Relaxed), Ordering::SeqCst);
    W_FRAMES.store(pc.irq_frames.load(Ordering::Relaxed), Ordering::SeqCst);
    W_IRQS_ON.store(cpu::irqs_enabled(), Ordering::SeqCst);
    EXITS_BEFORE.store(kport::irq::exits(IRQ_CPU), Ordering::SeqCst);
    CURRENT_BEFORE.store(pc.current.load(Ordering::Relaxed) as usize, Ordering::SeqCst);
    // Channel 0 directly: the test interrupt's own fire would wait here
    // for interrupts that cannot come. Nobody else fires during this case.
    pit::oneshot(pit::ONESHOT_TICKS);
    let end = crate::time::now_ns() + WINDOW_MAX_NS;
    cpu::sti();
    while !N_RAN.load(Ordering::SeqCst) && crate::time::now_ns() < end {
        cpu::pause();
    }
    cpu::cli();
    TIMED_OUT.store(!N_RAN.load(Ordering::SeqCst), Ordering::SeqCst);
    EXITS_AFTER.store(kport::irq::exits(IRQ_CPU), Ordering::SeqCst);
    FRAMES_AFTER.store(pc.irq_frames.load(Ordering::Relaxed), Ordering::SeqCst);
    CURRENT_AFTER.store(pc.current.load(Ordering::Relaxed) as usize, Ordering::SeqCst);
    DONE.store(true, Ordering::SeqCst);
}

/// The nested interrupt's handler.
struct Nested;
impl IrqHandler for Nested {
    fn handle(&self, _irq: u32) {
        let pc = percpu::this_cpu();
        N_DEPTH.store(pc.irq_depth.load(Ordering::Relaxed), Ordering::SeqCst);
        N_FRAMES.store(pc.irq_frames.load(Ordering::Relaxed), Ordering::SeqCst);
        N_IN_IRQ.store(port().in_irq(), Ordering::SeqCst);
        N_RAN.store(true, Ordering::SeqCst);
    }
}
static NESTED: Nested = Nested;

ktest!(port::interrupt_nests_in_the_irq_exit_window => |ctx| {
    let chip = port().irq_chip().ok_or_else(|| Failure::Fail("the testkernel has no irq chip".into()))?;
    let misuses = kport::irq::exit_misuses();
    let irqs_on = interrupts::exits_with_irqs_on();
    chip.attach(PIT_LINE, &NESTED).map_err(|e| Failure::Fail(format!("attach: {e:?}")))?;
    DONE.store(false, Ordering::SeqCst);
    N_RAN.store(false, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    interrupts::set_exit_probe(Some(window_probe));
    // The next interrupt on the line's CPU (its tick, within 4 ms) runs it.
    let done = wait_for(10_000, || DONE.load(Ordering::SeqCst));
    interrupts::set_exit_probe(None);
    ARMED.store(false, Ordering::SeqCst);
    chip.detach(PIT_LINE);
    check!(done, "the probe did not run on cpu {IRQ_CPU}");
    check!(!TIMED_OUT.load(Ordering::SeqCst), "the PIT interrupt did not come while interrupts were on in the window");
    // In the window: not in hard-IRQ context, one interrupt in progress,
    // interrupts off as irq_exit left them.
    check_eq!(W_DEPTH.load(Ordering::SeqCst), 0, "irq_depth in the irq_exit window");
    check_eq!(W_FRAMES.load(Ordering::SeqCst), 1, "irq_frames in the irq_exit window");
    check!(!W_IRQS_ON.load(Ordering::SeqCst), "interrupts were on after irq_exit");
    // The nested interrupt: hard-IRQ context, two frames.
    check!(N_IN_IRQ.load(Ordering::SeqCst), "the nested handler did not run in hard-IRQ context");
    check_eq!(N_DEPTH.load(Ordering::SeqCst), 1, "irq_depth in the nested handler");
    check_eq!(N_FRAMES.load(Ordering::SeqCst), 2, "irq_frames in the nested handler");
    // It did not call irq_exit, nor switch contexts, and undid its frame.
    check_eq!(EXITS_AFTER.load(Ordering::SeqCst), EXITS_BEFORE.load(Ordering::SeqCst), "irq_exit calls during the window");
    check_eq!(FRAMES_AFTER.load(Ordering::SeqCst), 1, "irq_frames after the nested interrupt");
    check_eq!(CURRENT_AFTER.load(Ordering::SeqCst), CURRENT_BEFORE.load(Ordering::SeqCst), "the window switched contexts");
    check_eq!(kport::irq::exit_misuses(), misuses, "irq_exit called in the wrong context");
    check_eq!(interrupts::exits_with_irqs_on(), irqs_on, "an interrupt's exit left interrupts on");
    Ok(())
});
