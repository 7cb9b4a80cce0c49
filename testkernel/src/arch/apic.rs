//! The local APIC (xAPIC, MMIO; QEMU's TCG has no x2APIC), the IOAPIC, and
//! the legacy PIC (masked).

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu::{self, outb};
use super::interrupts::{VEC_SPURIOUS, VEC_TIMER};
use crate::mem::phys_to_virt;
use crate::percpu;

static LAPIC_VA: AtomicU64 = AtomicU64::new(0);
static IOAPIC_VA: AtomicU64 = AtomicU64::new(0);

const REG_ID: u32 = 0x20;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_ESR: u32 = 0x280;
const REG_ICR_LO: u32 = 0x300;
const REG_ICR_HI: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CUR: u32 = 0x390;
const REG_TIMER_DIV: u32 = 0x3E0;

const LVT_MASKED: u32 = 1 << 16;
const ICR_PENDING: u32 = 1 << 12;

fn read(reg: u32) -> u32 {
    // SAFETY: LAPIC_VA is the uncached direct-map address of this CPU's LAPIC
    // page (every CPU sees its own LAPIC at the same address); reg is a valid
    // 16-byte-aligned register offset.
    unsafe { ((LAPIC_VA.load(Ordering::Relaxed) + reg as u64) as *const u32).read_volatile() }
}

fn write(reg: u32, v: u32) {
    // SAFETY: as for `read`.
    unsafe { ((LAPIC_VA.load(Ordering::Relaxed) + reg as u64) as *mut u32).write_volatile(v) }
}

/// Record where the LAPIC and IOAPIC are (boot CPU, once) and mask the PIC
/// and every IOAPIC line (no device interrupt is routed yet).
pub fn init_global(lapic_pa: u64, ioapic_pa: u64) {
    LAPIC_VA.store(phys_to_virt(lapic_pa), Ordering::Relaxed);
    if ioapic_pa != 0 {
        IOAPIC_VA.store(phys_to_virt(ioapic_pa), Ordering::Relaxed);
    }
    // Remap the 8259s away from the exception vectors, then mask them all.
    for (port, v) in
        [(0x20, 0x11), (0xA0, 0x11), (0x21, 0xE0), (0xA1, 0xE8), (0x21, 4), (0xA1, 2), (0x21, 1), (0xA1, 1)]
    {
        outb(port, v);
    }
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
    if ioapic_pa != 0 {
        for line in 0..ioapic_lines() {
            ioapic_write(0x10 + 2 * line, LVT_MASKED);
            ioapic_write(0x11 + 2 * line, 0);
        }
    }
}

/// Enable this CPU's LAPIC: spurious vector, accept all priorities, mask the
/// LINT pins and the timer until it is programmed.
pub fn init_local() {
    write(REG_SVR, 0x100 | VEC_SPURIOUS as u32);
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_LINT1, LVT_MASKED);
    write(REG_LVT_ERROR, LVT_MASKED);
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_ESR, 0);
    write(REG_TIMER_DIV, 0x3); // divide by 16
    eoi();
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    read(REG_ID) >> 24
}

/// Signal end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

fn send_icr(dest: u32, lo: u32) {
    let was = crate::sync::irq_save();
    // The xAPIC wants the previous IPI delivered before the next is written;
    // waiting before (not after) lets the sender go on while it travels.
    while read(REG_ICR_LO) & ICR_PENDING != 0 {
        cpu::pause();
    }
    write(REG_ICR_HI, dest << 24);
    write(REG_ICR_LO, lo);
    crate::sync::irq_restore(was);
}

/// Send a fixed interrupt `vector` to the CPU with APIC id `dest`.
pub fn send_ipi(dest: u32, vector: u8) {
    send_icr(dest, vector as u32);
}

/// Send INIT to `dest` (AP start-up).
pub fn send_init(dest: u32) {
    send_icr(dest, 0x4500);
}

/// Send a start-up IPI to `dest` with the trampoline at page `page`.
pub fn send_sipi(dest: u32, page: u8) {
    send_icr(dest, 0x4600 | page as u32);
}

/// NMI every other CPU (fatal-error stop). Does not wait for delivery to
/// finish if the APIC is wedged.
pub fn stop_other_cpus() {
    if LAPIC_VA.load(Ordering::Relaxed) == 0 || percpu::cpus_up() < 2 {
        return;
    }
    // Destination shorthand "all excluding self", delivery mode NMI.
    write(REG_ICR_HI, 0);
    write(REG_ICR_LO, (0b11 << 18) | (0b100 << 8));
}

/// Arm the timer to fire once after `count` ticks of the (divided) APIC clock.
pub fn timer_oneshot(count: u32) {
    write(REG_LVT_TIMER, VEC_TIMER as u32);
    write(REG_TIMER_INIT, count.max(1));
}

/// Stop the timer.
pub fn timer_stop() {
    write(REG_TIMER_INIT, 0);
}

/// Start the timer counting down from its maximum, masked (for calibration).
pub fn timer_start_free_running() {
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_TIMER_INIT, u32::MAX);
}

/// The timer's current count.
pub fn timer_current() -> u32 {
    read(REG_TIMER_CUR)
}

fn ioapic_write(reg: u32, v: u32) {
    let base = IOAPIC_VA.load(Ordering::Relaxed);
    // SAFETY: the IOAPIC's index/data registers at offsets 0 and 0x10 of its
    // uncached direct-map page.
    unsafe {
        (base as *mut u32).write_volatile(reg);
        ((base + 0x10) as *mut u32).write_volatile(v);
    }
}

fn ioapic_read(reg: u32) -> u32 {
    let base = IOAPIC_VA.load(Ordering::Relaxed);
    // SAFETY: as for ioapic_write.
    unsafe {
        (base as *mut u32).write_volatile(reg);
        ((base + 0x10) as *const u32).read_volatile()
    }
}

fn ioapic_lines() -> u32 {
    ((ioapic_read(1) >> 16) & 0xFF) + 1
}
