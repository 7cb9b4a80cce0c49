//! The serial console: a 16550 UART on COM1 ([`bootproto::serial`]), written
//! a whole line at a time under one lock so lines from different CPUs never
//! interleave.

use core::fmt::{self, Write};

use bootproto::serial::{COM1, Uart16550};

use crate::sync::IrqSpinLock;

/// The UART: holding the lock is owning the right to write to the port.
// SAFETY: COM1 is the kernel's console and this is its only writer (`init`
// programs it before any line is written, with interrupts off on one CPU).
static CONSOLE: IrqSpinLock<Uart16550> = IrqSpinLock::named("console", unsafe { Uart16550::new(COM1) });

/// Program COM1 for 115200 baud, 8N1, FIFOs on, interrupts off.
pub fn init() {
    // SAFETY: called once on the boot CPU before any console line, so the
    // programming cannot interleave with a writer of CONSOLE.
    unsafe { Uart16550::new(COM1) }.init();
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
        if CONSOLE.holder_cpu() == Some(me as usize) || crate::arch::cpu::rdtsc().wrapping_sub(start) > 1 << 30 {
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

/// A BREAK was received: the next byte is a SysRq key (Linux's serial
/// SysRq: BREAK, then the key within a few seconds; QEMU sends a BREAK on
/// its monitor's `Ctrl-A b`).
static SYSRQ_ARMED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// How long after a BREAK a key still counts (Linux: 5 s).
const SYSRQ_WINDOW_NS: u64 = 5_000_000_000;

/// Take the console's receive interrupt (COM1's line; `crate::irq`).
pub fn enable_input() {
    CONSOLE.lock().enable_rx_interrupts();
}

/// COM1's interrupt: drain what the UART received. Returns the SysRq key
/// it completed, if any; other input is dropped (the console is output).
pub fn receive() -> Option<u8> {
    use core::sync::atomic::Ordering;
    let mut key = None;
    let mut uart = CONSOLE.lock();
    while let Some(ev) = uart.receive() {
        let now = crate::time::now_ns();
        match ev {
            None => SYSRQ_ARMED.store(now, Ordering::Relaxed),
            Some(b) => {
                let armed = SYSRQ_ARMED.swap(0, Ordering::Relaxed);
                if armed != 0 && now.saturating_sub(armed) < SYSRQ_WINDOW_NS && b.is_ascii_graphic() {
                    key = Some(b);
                }
            }
        }
    }
    key
}
