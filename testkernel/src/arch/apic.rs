//! The local APIC (xAPIC, MMIO; QEMU's TCG has no x2APIC) and the legacy
//! PIC (masked); the IOAPIC is `arch::ioapic`.
//!
//! The `x86` crate's xAPIC driver enables the LAPIC, reads its id, signals
//! EOI and sends IPIs (INIT, SIPI, fixed vectors). The registers the driver does not expose (spurious vector,
//! task priority, LVT masks, error status, and the one-shot timer: the crate
//! only offers TSC-deadline mode) are written here through the crate's
//! register offsets, as is the fatal-error NMI, which must not wait on the
//! APIC (see `docs/hardware.md`).

use core::sync::atomic::{AtomicU64, Ordering};

use x86::apic::xapic::{self, XAPIC};
use x86::apic::{
    ApicControl, ApicId, DeliveryMode, DeliveryStatus, DestinationMode, DestinationShorthand, Icr, Level, TriggerMode,
};

use super::cpu::outb;
use super::interrupts::{VEC_SPURIOUS, VEC_TIMER};
use crate::mem::phys_to_virt;
use crate::percpu;

static LAPIC_VA: AtomicU64 = AtomicU64::new(0);

/// The LAPIC's register page, in 32-bit words.
const LAPIC_WORDS: usize = 4096 / 4;

const LVT_MASKED: u32 = 1 << 16;
/// SVR bit 8: the LAPIC is software-enabled.
const SVR_ENABLE: u32 = 1 << 8;
/// Timer divide configuration 0b0011: divide by 16.
const TIMER_DIV_16: u32 = 0x3;

/// This CPU's LAPIC as the crate's driver. Built on each use: every CPU sees
/// its own LAPIC at the same address, so one shared instance would be a
/// `&mut` to a different device on each CPU; building one costs an `rdmsr` of
/// IA32_APIC_BASE.
fn lapic() -> XAPIC {
    let va = LAPIC_VA.load(Ordering::Relaxed);
    assert!(va != 0, "LAPIC used before apic::init_global");
    // SAFETY: `va` is the uncached direct-map address of the LAPIC page
    // (4 KiB, mapped for the kernel's lifetime). The registers behind it are
    // this CPU's own LAPIC, so the reference aliases nothing another CPU
    // uses, and the driver touches them only with volatile accesses for the
    // length of the call that built it.
    let regs = unsafe { core::slice::from_raw_parts_mut(va as *mut u32, LAPIC_WORDS) };
    XAPIC::new(regs)
}

/// Read a LAPIC register the crate's driver does not expose.
fn read(reg: u32) -> u32 {
    // SAFETY: LAPIC_VA is the uncached direct-map address of this CPU's LAPIC
    // page (every CPU sees its own LAPIC at the same address); reg is one of
    // the crate's 16-byte-aligned register offsets, inside the page.
    unsafe { ((LAPIC_VA.load(Ordering::Relaxed) + reg as u64) as *const u32).read_volatile() }
}

/// Write a LAPIC register the crate's driver does not expose.
fn write(reg: u32, v: u32) {
    // SAFETY: as for `read`.
    unsafe { ((LAPIC_VA.load(Ordering::Relaxed) + reg as u64) as *mut u32).write_volatile(v) }
}

/// Record where the LAPIC is (boot CPU, once) and mask the PIC (device
/// interrupts go through the IOAPIC, `arch::ioapic`).
pub fn init_global(lapic_pa: u64) {
    LAPIC_VA.store(phys_to_virt(lapic_pa), Ordering::Relaxed);
    // Remap the 8259s away from the exception vectors, then mask them all.
    for (port, v) in
        [(0x20, 0x11), (0xA0, 0x11), (0x21, 0xE0), (0xA1, 0xE8), (0x21, 4), (0xA1, 2), (0x21, 1), (0xA1, 1)]
    {
        outb(port, v);
    }
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

/// Enable this CPU's LAPIC: spurious vector, accept all priorities, mask the
/// LINT pins and the timer until it is programmed.
pub fn init_local() {
    // The crate's attach sets the global enable bit in IA32_APIC_BASE and
    // software-enables the LAPIC with a spurious vector of 15, an exception
    // vector: ours replaces it before interrupts are enabled.
    lapic().attach();
    write(xapic::XAPIC_SVR, SVR_ENABLE | VEC_SPURIOUS as u32);
    write(xapic::XAPIC_TPR, 0);
    write(xapic::XAPIC_LVT_LINT0, LVT_MASKED);
    write(xapic::XAPIC_LVT_LINT1, LVT_MASKED);
    write(xapic::XAPIC_LVT_ERROR, LVT_MASKED);
    write(xapic::XAPIC_LVT_TIMER, LVT_MASKED);
    write(xapic::XAPIC_ESR, 0);
    write(xapic::XAPIC_TIMER_DIV_CONF, TIMER_DIV_16);
    eoi();
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    // The xAPIC keeps the id in bits 31:24 of its register.
    lapic().id() >> 24
}

/// Signal end of interrupt.
pub fn eoi() {
    lapic().eoi();
}

/// Run `f` on this CPU's LAPIC with interrupts off: an interrupt handler
/// sending an IPI between the two ICR writes of the interrupted send would
/// redirect it.
fn with_irqs_off(f: impl FnOnce(&mut XAPIC)) {
    let was = crate::sync::irq_save();
    f(&mut lapic());
    crate::sync::irq_restore(was);
}

/// Send a fixed interrupt `vector` to the CPU with APIC id `dest`.
pub fn send_ipi(dest: u32, vector: u8) {
    let icr = Icr::for_xapic(
        vector,
        ApicId::XApic(dest as u8),
        DestinationShorthand::NoShorthand,
        DeliveryMode::Fixed,
        DestinationMode::Physical,
        DeliveryStatus::Idle,
        Level::Assert,
        TriggerMode::Edge,
    );
    // SAFETY: a fixed IPI to a CPU of the MADT, for a vector with a handler.
    with_irqs_off(|l| unsafe { l.send_ipi(icr) });
}

/// Send an NMI to the CPU with APIC id `dest` (waking a CPU that halts
/// with interrupts off: a hot-unplugged one).
pub fn send_nmi(dest: u32) {
    let icr = Icr::for_xapic(
        0,
        ApicId::XApic(dest as u8),
        DestinationShorthand::NoShorthand,
        DeliveryMode::NMI,
        DestinationMode::Physical,
        DeliveryStatus::Idle,
        Level::Assert,
        TriggerMode::Edge,
    );
    // SAFETY: an NMI to a CPU of the MADT, whose NMI handler returns when
    // the CPU is offline (`sched::nmi_wakes_offline_cpu`).
    with_irqs_off(|l| unsafe { l.send_ipi(icr) });
}

/// Send INIT to `dest` (AP start-up).
pub fn send_init(dest: u32) {
    // SAFETY: `dest` is an AP of the MADT that is not running yet; INIT only
    // resets it.
    with_irqs_off(|l| unsafe { l.ipi_init(ApicId::XApic(dest as u8)) });
}

/// Send a start-up IPI to `dest` with the trampoline at page `page`.
pub fn send_sipi(dest: u32, page: u8) {
    // SAFETY: `dest` was just sent INIT, and `page` holds the AP trampoline.
    with_irqs_off(|l| unsafe { l.ipi_startup(ApicId::XApic(dest as u8), page) });
}

/// NMI every other CPU (fatal-error stop). Does not wait for delivery to
/// finish if the APIC is wedged: unlike the crate's `send_ipi`, which spins
/// until the ICR reports delivery, it writes the ICR itself.
pub fn stop_other_cpus() {
    if LAPIC_VA.load(Ordering::Relaxed) == 0 || percpu::cpus_up() < 2 {
        return;
    }
    let icr = Icr::for_xapic(
        0,
        ApicId::XApic(0),
        DestinationShorthand::AllExcludingSelf,
        DeliveryMode::NMI,
        DestinationMode::Physical,
        DeliveryStatus::Idle,
        Level::Assert,
        TriggerMode::Edge,
    );
    write(xapic::XAPIC_ICR1, icr.upper());
    write(xapic::XAPIC_ICR0, icr.lower());
}

/// Arm the timer to fire once after `count` ticks of the (divided) APIC clock.
pub fn timer_oneshot(count: u32) {
    write(xapic::XAPIC_LVT_TIMER, VEC_TIMER as u32);
    write(xapic::XAPIC_TIMER_INIT_COUNT, count.max(1));
}

/// Stop the timer.
pub fn timer_stop() {
    write(xapic::XAPIC_TIMER_INIT_COUNT, 0);
}

/// Start the timer counting down from its maximum, masked (for calibration).
pub fn timer_start_free_running() {
    write(xapic::XAPIC_LVT_TIMER, LVT_MASKED);
    write(xapic::XAPIC_TIMER_INIT_COUNT, u32::MAX);
}

/// The timer's current count.
pub fn timer_current() -> u32 {
    read(xapic::XAPIC_TIMER_CURRENT_COUNT)
}
