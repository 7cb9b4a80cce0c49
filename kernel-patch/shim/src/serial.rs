//! COM1 output ([`bootproto::serial`]) and leaving QEMU.

use bootproto::serial::{COM1, Uart16550};

/// `isa-debug-exit` port (QEMU `-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Written to `isa-debug-exit` on an error: QEMU exits with `(0x11 << 1) | 1` = 35,
/// the testkernel's fail status (docs/guest-protocol.md).
const EXIT_FAIL: u32 = 0x11;

/// COM1 as a [`core::fmt::Write`] (newlines become CR LF).
pub fn com1() -> Uart16550 {
    // SAFETY: COM1 is the shim's alone: one CPU runs it, and it writes whole
    // lines from one place ([`say!`]) before it hands the machine over.
    unsafe { Uart16550::new(COM1) }
}

/// Program COM1 for 115200 baud, 8N1, FIFOs on, interrupts off.
pub fn init() {
    com1().init();
}

/// Print one line on COM1, prefixed `# redox-pvh-shim: ` (a KTAP diagnostic,
/// so the testkernel's runner takes it as such).
#[macro_export]
macro_rules! say {
    ($($fmt:tt)+) => {{
        use core::fmt::Write as _;
        let mut com1 = $crate::serial::com1();
        let _ = write!(com1, "# redox-pvh-shim: ");
        let _ = writeln!(com1, $($fmt)+);
    }};
}

/// Leave QEMU with the fail status through `isa-debug-exit`; without that
/// device, stop the CPU.
pub fn exit_fail() -> ! {
    // SAFETY: the shim runs at CPL 0; writing the exit device ends the VM and
    // touches nothing else.
    unsafe { x86::io::outl(DEBUG_EXIT_PORT, EXIT_FAIL) }
    loop {
        // SAFETY: halting with interrupts off stops this CPU for good.
        unsafe {
            x86::irq::disable();
            x86::halt();
        }
    }
}
