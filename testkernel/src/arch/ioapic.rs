//! The IOAPIC (the MADT's first one): its redirection table, programmed by
//! hand through the index/data window.
//!
//! The `x86` crate's `IoApic` reads the pin count and masks every entry
//! at boot, and that is all it can do here: its entry writer is private
//! and always uses vector `32 + pin`, edge-triggered, active high, so it
//! can neither keep the kernel's vector map (32 is the LAPIC timer) nor
//! follow the MADT's level-triggered, active-low overrides (see
//! `docs/hardware.md`). The window is one register pair for the whole
//! chip, so every access holds [`WINDOW`].

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use x86::apic::ioapic::IoApic;

use crate::mem::phys_to_virt;
use crate::sync::IrqSpinLock;

/// Offset of the index register (IOREGSEL).
const IOREGSEL: u64 = 0x00;
/// Offset of the data register (IOWIN).
const IOWIN: u64 = 0x10;
/// Register index of redirection entry 0's low word (entry n: 0x10 + 2n).
const REG_REDTBL: u32 = 0x10;

/// Entry bit 16: the pin is masked.
const RTE_MASKED: u32 = 1 << 16;
/// Entry bit 15: level-triggered (else edge).
const RTE_LEVEL: u32 = 1 << 15;
/// Entry bit 13: active low (else active high).
const RTE_ACTIVE_LOW: u32 = 1 << 13;
/// Most pins used (the vector map reserves this many device vectors).
pub const MAX_PINS: u32 = 64;

static VA: AtomicU64 = AtomicU64::new(0);
static PINS: AtomicU32 = AtomicU32::new(0);
static GSI_BASE: AtomicU32 = AtomicU32::new(0);

/// Holding it is owning the index/data window (Linux `ioapic_lock`). Taken
/// after a line's own lock (`crate::irq`), never before.
static WINDOW: IrqSpinLock<()> = IrqSpinLock::named("ioapic", ());

/// How a pin delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// IDT vector.
    pub vector: u8,
    /// Level-triggered (else edge).
    pub level: bool,
    /// Active low (else active high).
    pub active_low: bool,
    /// APIC id of the CPU it goes to (physical destination mode).
    pub dest_apic: u32,
}

/// Record the IOAPIC at `pa` serving GSIs from `gsi_base` and mask every pin
/// (boot CPU, once); returns its pin count (0 without an IOAPIC).
pub fn init(pa: u64, gsi_base: u32) -> u32 {
    if pa == 0 {
        return 0;
    }
    let va = phys_to_virt(pa);
    // SAFETY: the IOAPIC's register window (index at +0, data at +0x10)
    // is in the uncached direct map; only the boot CPU touches it, here,
    // before the window lock is ever used.
    let mut chip = unsafe { IoApic::new(va as usize) };
    chip.disable_all();
    let pins = u32::from(chip.supported_interrupts()).min(MAX_PINS);
    VA.store(va, Ordering::Relaxed);
    GSI_BASE.store(gsi_base, Ordering::Relaxed);
    PINS.store(pins, Ordering::Release);
    pins
}

/// The pin that serves `gsi`, if this IOAPIC has it.
pub fn pin_of(gsi: u32) -> Option<u32> {
    let pin = gsi.checked_sub(GSI_BASE.load(Ordering::Relaxed))?;
    (pin < PINS.load(Ordering::Acquire)).then_some(pin)
}

/// Read register `reg` (the caller holds [`WINDOW`]).
fn read(_w: &(), reg: u32) -> u32 {
    let va = VA.load(Ordering::Relaxed);
    // SAFETY: `va` is the IOAPIC's uncached direct-map window (set by
    // `init`, which every caller follows); the window lock the caller holds
    // keeps another CPU from moving the index between the two accesses.
    unsafe {
        ((va + IOREGSEL) as *mut u32).write_volatile(reg);
        ((va + IOWIN) as *const u32).read_volatile()
    }
}

/// Write register `reg` (the caller holds [`WINDOW`]).
fn write(_w: &(), reg: u32, v: u32) {
    let va = VA.load(Ordering::Relaxed);
    // SAFETY: as for `read`.
    unsafe {
        ((va + IOREGSEL) as *mut u32).write_volatile(reg);
        ((va + IOWIN) as *mut u32).write_volatile(v);
    }
}

/// Program pin `pin`'s redirection entry: fixed delivery of `r.vector` to
/// one CPU, with the pin's trigger mode and polarity, masked or not. The
/// destination goes in first, so the pin never delivers half-programmed.
pub fn route(pin: u32, r: Route, masked: bool) {
    if pin >= PINS.load(Ordering::Acquire) {
        return;
    }
    let mut low = u32::from(r.vector);
    if r.level {
        low |= RTE_LEVEL;
    }
    if r.active_low {
        low |= RTE_ACTIVE_LOW;
    }
    let w = WINDOW.lock();
    write(&w, REG_REDTBL + 2 * pin, low | RTE_MASKED);
    write(&w, REG_REDTBL + 2 * pin + 1, (r.dest_apic & 0xff) << 24);
    if !masked {
        write(&w, REG_REDTBL + 2 * pin, low);
    }
}

/// Mask or unmask pin `pin`, keeping the rest of its entry.
pub fn set_masked(pin: u32, masked: bool) {
    if pin >= PINS.load(Ordering::Acquire) {
        return;
    }
    let w = WINDOW.lock();
    let low = read(&w, REG_REDTBL + 2 * pin);
    write(&w, REG_REDTBL + 2 * pin, if masked { low | RTE_MASKED } else { low & !RTE_MASKED });
}

/// Pin `pin`'s redirection entry (low word, high word), for tests.
pub fn entry(pin: u32) -> (u32, u32) {
    if pin >= PINS.load(Ordering::Acquire) {
        return (RTE_MASKED, 0);
    }
    let w = WINDOW.lock();
    (read(&w, REG_REDTBL + 2 * pin), read(&w, REG_REDTBL + 2 * pin + 1))
}
