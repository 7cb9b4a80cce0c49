//! The clock of the kernel-thread port: the TSC, calibrated once at boot against PIT channel 2.
//!
//! Redox's own monotonic clock adds the PIT's elapsed count to an offset that only the boot CPU's
//! PIT interrupt advances. Kernel threads run with interrupts off, so while one runs on the boot
//! CPU that offset stands still. The TSC keeps counting, and under QEMU every vCPU reads the same
//! one, so the port measures time with it.

use core::sync::atomic::{AtomicU64, Ordering};

/// Input frequency of the PIT, in Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 10 ms of PIT channel 2, long enough that a TCG hiccup costs under 1 %.
const CALIBRATION_MS: u64 = 10;

/// TSC ticks per second (0 until [`calibrate`]).
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// TSC value taken as time zero.
static TSC_ZERO: AtomicU64 = AtomicU64::new(0);
/// ns per TSC tick as a 32.32 fixed-point factor.
static NS_PER_TICK_FP: AtomicU64 = AtomicU64::new(1 << 32);

/// Read the TSC, ordered after earlier loads (`lfence; rdtsc`).
#[inline]
pub fn cycles() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `lfence` and `rdtsc` only read the time-stamp counter; they touch no memory.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: reading the PIT and the system control port has no side effect beyond the PIT.
    unsafe {
        core::arch::asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack));
    }
    v
}

fn outb(port: u16, v: u8) {
    // SAFETY: only PIT channel 2 and its gate are written; channel 0 (Redox's tick) is untouched.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack));
    }
}

/// TSC ticks spent while PIT channel 2 counts down `ms` milliseconds.
fn pit_window_ticks(ms: u64) -> u64 {
    let count = PIT_HZ.saturating_mul(ms) / 1000;
    let gate = inb(0x61);
    // Gate on, speaker off.
    outb(0x61, (gate & !0x02) | 0x01);
    // Channel 2, low then high byte, mode 0 (interrupt on terminal count), binary.
    outb(0x43, 0b1011_0000);
    outb(0x42, (count & 0xff) as u8);
    outb(0x42, ((count >> 8) & 0xff) as u8);
    let start = cycles();
    // OUT2 (bit 5) goes high when the count reaches zero.
    while inb(0x61) & 0x20 == 0 {
        core::hint::spin_loop();
    }
    let end = cycles();
    outb(0x61, gate);
    end.wrapping_sub(start)
}

/// Calibrate the TSC (boot CPU, once, interrupts off).
pub fn calibrate() {
    let ticks = pit_window_ticks(CALIBRATION_MS).max(1);
    let hz = ticks.saturating_mul(1000) / CALIBRATION_MS;
    TSC_HZ.store(hz, Ordering::Relaxed);
    let fp = (1_000_000_000_u128 << 32)
        .checked_div(u128::from(hz))
        .unwrap_or(0) as u64;
    NS_PER_TICK_FP.store(fp, Ordering::Relaxed);
    TSC_ZERO.store(cycles(), Ordering::Release);
}

/// TSC frequency found by [`calibrate`], in Hz.
#[cfg_attr(not(feature = "ktests"), expect(dead_code))]
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Convert a TSC delta to ns.
pub fn cycles_to_ns(delta: u64) -> u64 {
    let fp = u128::from(NS_PER_TICK_FP.load(Ordering::Relaxed));
    (u128::from(delta).saturating_mul(fp) >> 32) as u64
}

/// Monotonic ns since calibration.
pub fn now_ns() -> u64 {
    cycles_to_ns(cycles().saturating_sub(TSC_ZERO.load(Ordering::Acquire)))
}
