//! PIT channel 0 as a one-shot interrupt source: the device behind the
//! test interrupt (`crate::irq::PitTestIrq`). The kernel's clock and timers
//! do not use it (the TSC and the LAPIC timer do; the boot calibration uses
//! channel 2, polled), so its line, ISA IRQ 0, is free.
//!
//! Mode 0 ("interrupt on terminal count"): loading a count drives the
//! channel's output low, and it goes high, once, when the count runs out,
//! and stays high. The output feeds ISA IRQ 0, an edge-triggered line, so
//! each count loaded is exactly one rising edge, one interrupt. The
//! read-back command tells whether the output is high yet, that is whether
//! the last count is over.

use super::cpu::{inb, outb};

/// Channel 0's data port.
const PIT_CH0: u16 = 0x40;
/// The mode/command port.
const PIT_CMD: u16 = 0x43;
/// Channel 0, low byte then high byte, mode 0, binary.
const CH0_MODE0: u8 = 0b0011_0000;
/// Read-back (bits 7:6), do not latch the count (bit 5), latch the status
/// (bit 4 clear), of channel 0 (bit 1).
const READBACK_CH0_STATUS: u8 = 0b1110_0010;
/// Status bit 7: the output pin's level.
const STATUS_OUT: u8 = 0x80;

/// Count of one test interrupt: 60 ticks of the 1.193 MHz clock, about
/// 50 µs. Short, so a fire is quick, and long enough that the device sees
/// the low level (QEMU and real PITs alike).
pub const ONESHOT_TICKS: u16 = 60;

/// Stop whatever the firmware left running on channel 0 (SeaBIOS programs
/// a periodic 18.2 Hz rate there): one short count in mode 0, after which
/// the output stays high. Boot CPU, while ISA IRQ 0's pin is still masked,
/// so the one edge it makes is dropped.
pub fn init() {
    oneshot(1);
}

/// Load a mode-0 count of `ticks`: the output goes low now and high after
/// `ticks` ticks. The caller serializes users of channel 0.
pub fn oneshot(ticks: u16) {
    let [lo, hi] = ticks.max(1).to_le_bytes();
    outb(PIT_CMD, CH0_MODE0);
    outb(PIT_CH0, lo);
    outb(PIT_CH0, hi);
}

/// Is channel 0's output high (the last count ran out)? The caller
/// serializes users of channel 0.
pub fn out_high() -> bool {
    outb(PIT_CMD, READBACK_CH0_STATUS);
    inb(PIT_CH0) & STATUS_OUT != 0
}
