//! The serial console: a 16550 UART on COM1, written a whole line at a time
//! under one lock so lines from different CPUs never interleave.

use core::fmt::{self, Write};

use crate::arch::cpu::{inb, outb};
use crate::sync::IrqSpinLock;

const COM1: u16 = 0x3F8;

/// The UART. Owning it is owning the right to write to the port.
pub struct Serial {
    _private: (),
}

impl Serial {
    fn put(&mut self, b: u8) {
        // Wait for the transmit holding register to empty (LSR bit 5).
        while inb(COM1 + 5) & 0x20 == 0 {
            crate::arch::cpu::pause();
        }
        outb(COM1, b);
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

static CONSOLE: IrqSpinLock<Serial> = IrqSpinLock::new("console", Serial { _private: () });

/// Program COM1 for 115200 baud, 8N1, FIFOs on, interrupts off.
pub fn init() {
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x80);
    outb(COM1, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);
    outb(COM1 + 2, 0xC7);
    outb(COM1 + 4, 0x03);
}

/// Write one line (the arguments, then a newline) atomically with respect to
/// other lines.
pub fn line(args: fmt::Arguments<'_>) {
    let mut s = CONSOLE.lock();
    let _ = s.write_fmt(args);
    let _ = s.write_str("\n");
}

/// Write one line from a path that may have interrupted a console writer on
/// this CPU (exceptions, panics, lock warnings): wait a bounded time for the
/// lock, then write anyway.
pub fn emergency_line(args: fmt::Arguments<'_>) {
    let me = crate::percpu::cpu_id_raw();
    let start = crate::arch::cpu::rdtsc();
    loop {
        if let Some(mut s) = CONSOLE.try_lock() {
            let _ = s.write_fmt(args);
            let _ = s.write_str("\n");
            return;
        }
        // A holder on this CPU was interrupted by us and can never finish; a
        // holder elsewhere gets about a billion cycles.
        if CONSOLE.holder() == Some(me) || crate::arch::cpu::rdtsc().wrapping_sub(start) > 1 << 30 {
            break;
        }
        crate::arch::cpu::pause();
    }
    // SAFETY: the holder is this CPU (interrupted mid-line, never to resume
    // before we return) or a CPU stuck for a long time; a mangled line is the
    // worst outcome, and the report matters more.
    let s = unsafe { CONSOLE.force_get() };
    let _ = s.write_str("\n");
    let _ = s.write_fmt(args);
    let _ = s.write_str("\n");
}

/// Print one line on the serial console.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => { $crate::console::line(format_args!($($arg)*)) };
}
