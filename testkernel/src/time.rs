//! Time: the TSC calibrated against the PIT gives a monotonic nanosecond
//! clock readable on every CPU; the LAPIC timer, calibrated against the TSC,
//! drives each CPU's one-shot timer interrupt.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::apic;
use crate::arch::cpu::{inb, outb, rdtsc};

/// TSC ticks per second.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// ns = (tsc - TSC_BASE) * MULT >> 32.
static MULT: AtomicU64 = AtomicU64::new(0);
static TSC_BASE: AtomicU64 = AtomicU64::new(0);
/// LAPIC timer ticks (after the divide-by-16) per second.
static LAPIC_HZ: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
/// Calibration window: long enough that the PIT's and TSC's read jitter is
/// well under 0.1 %, short enough not to slow the boot.
const CALIBRATION_MS: u64 = 20;

/// Wait `ms` milliseconds on PIT channel 2 (gate through port 0x61) and
/// return the TSC ticks that passed.
fn pit_wait_tsc(ms: u64) -> u64 {
    let count = PIT_HZ * ms / 1000;
    let v = inb(0x61);
    outb(0x61, (v & !0x02) | 0x01);
    outb(0x43, 0b1011_0000);
    outb(0x42, count as u8);
    outb(0x42, (count >> 8) as u8);
    let v = inb(0x61);
    outb(0x61, v & !0x01);
    outb(0x61, v | 0x01);
    let t0 = rdtsc();
    while inb(0x61) & 0x20 == 0 {
        core::hint::spin_loop();
    }
    rdtsc() - t0
}

/// Calibrate the TSC (boot CPU, interrupts off).
pub fn init() {
    let ticks = pit_wait_tsc(CALIBRATION_MS);
    let hz = ticks * 1000 / CALIBRATION_MS;
    TSC_HZ.store(hz, Ordering::Relaxed);
    MULT.store(((1_000_000_000u128 << 32) / hz as u128) as u64, Ordering::Relaxed);
    TSC_BASE.store(rdtsc(), Ordering::Release);
}

/// Calibrate the LAPIC timer against the TSC (each CPU's LAPIC runs from the
/// same bus clock; calibrated once on the boot CPU).
pub fn calibrate_lapic() {
    let window = tsc_hz() / 100; // 10 ms
    apic::timer_start_free_running();
    let t0 = rdtsc();
    let c0 = apic::timer_current();
    while rdtsc() - t0 < window {
        core::hint::spin_loop();
    }
    let c1 = apic::timer_current();
    apic::timer_stop();
    LAPIC_HZ.store((c0 - c1) as u64 * 100, Ordering::Relaxed);
}

/// TSC frequency in Hz.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// LAPIC timer frequency (after the divider) in Hz.
pub fn lapic_hz() -> u64 {
    LAPIC_HZ.load(Ordering::Relaxed)
}

/// Convert a TSC delta to nanoseconds.
#[inline]
pub fn tsc_to_ns(d: u64) -> u64 {
    ((d as u128 * MULT.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Convert nanoseconds to a TSC delta (rounded down).
pub fn ns_to_tsc(ns: u64) -> u64 {
    (ns as u128 * tsc_hz() as u128 / 1_000_000_000) as u64
}

/// Nanoseconds since calibration; 0 before it (used by lock warnings).
#[inline]
pub fn now_ns_raw() -> u64 {
    tsc_to_ns(rdtsc().saturating_sub(TSC_BASE.load(Ordering::Relaxed)))
}

/// Monotonic nanoseconds since boot, readable from any CPU.
#[inline]
pub fn now_ns() -> u64 {
    now_ns_raw()
}

/// LAPIC timer count for `ns` nanoseconds, clamped to the register.
pub fn ns_to_lapic(ns: u64) -> u32 {
    ((ns as u128 * lapic_hz() as u128) / 1_000_000_000).clamp(1, u32::MAX as u128) as u32
}

/// Busy-wait `us` microseconds (boot-time only: INIT/SIPI delays).
pub fn udelay(us: u64) {
    let end = rdtsc() + tsc_hz() * us / 1_000_000;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}
