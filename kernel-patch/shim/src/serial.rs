//! COM1 output and leaving QEMU.

use core::arch::asm;
use core::fmt;

const COM1: u16 = 0x3F8;
/// `isa-debug-exit` port (QEMU `-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Written to `isa-debug-exit` on an error: QEMU exits with `(0x11 << 1) | 1` = 35,
/// the testkernel's fail status (docs/guest-protocol.md).
const EXIT_FAIL: u32 = 0x11;

fn outb(port: u16, val: u8) {
    // SAFETY: port I/O to the UART has no memory effects.
    unsafe { asm!("out dx, al", in("dx") port, in("al") val, options(nomem, nostack, preserves_flags)) }
}

fn inb(port: u16) -> u8 {
    let val: u8;
    // SAFETY: reading a UART register has no memory effects.
    unsafe { asm!("in al, dx", in("dx") port, out("al") val, options(nomem, nostack, preserves_flags)) }
    val
}

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

/// The serial port as a [`fmt::Write`] (newlines become CR LF).
pub struct Com1;

impl Com1 {
    fn put(&mut self, b: u8) {
        // Wait for the transmit holding register to empty (LSR bit 5).
        while inb(COM1 + 5) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        outb(COM1, b);
    }
}

impl fmt::Write for Com1 {
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

/// Print one line on COM1, prefixed `# redox-pvh-shim: ` (a KTAP diagnostic,
/// so the testkernel's runner takes it as such).
#[macro_export]
macro_rules! say {
    ($($fmt:tt)+) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::Com1, "# redox-pvh-shim: ");
        let _ = writeln!($crate::serial::Com1, $($fmt)+);
    }};
}

/// Leave QEMU with the fail status through `isa-debug-exit`; without that
/// device, stop the CPU.
pub fn exit_fail() -> ! {
    // SAFETY: writing the exit device ends the VM; nothing else is touched.
    unsafe { asm!("out dx, eax", in("dx") DEBUG_EXIT_PORT, in("eax") EXIT_FAIL, options(nomem, nostack)) }
    loop {
        // SAFETY: halting with interrupts off stops this CPU for good.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}
