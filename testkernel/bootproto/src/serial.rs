//! A 16550 UART as a line writer: both binaries report on COM1 (QEMU's
//! `-serial stdio`).

use core::fmt;

/// I/O base of COM1.
pub const COM1: u16 = 0x3F8;

/// Line status register: transmit holding register empty.
const LSR_THRE: u8 = 0x20;
/// Line status register: a received byte waits.
const LSR_DR: u8 = 0x01;
/// Line status register: a BREAK was received.
const LSR_BI: u8 = 0x10;

/// A 16550 UART at an I/O base; as a [`fmt::Write`], newlines go out as CR LF.
#[derive(Debug)]
pub struct Uart16550 {
    base: u16,
}

impl Uart16550 {
    /// The UART at I/O ports `base..base + 8`.
    ///
    /// # Safety
    /// A 16550 (or nothing) must sit at `base`, and the caller must own it:
    /// every method writes its registers.
    pub const unsafe fn new(base: u16) -> Uart16550 {
        Uart16550 { base }
    }

    fn outb(&self, reg: u16, val: u8) {
        // SAFETY: port I/O to the UART the constructor's caller owns, from
        // CPL 0 (both users run in ring 0); it has no memory effects visible
        // to Rust.
        unsafe { x86::io::outb(self.base + reg, val) }
    }

    fn inb(&self, reg: u16) -> u8 {
        // SAFETY: as for `outb`; reading these registers has no side effects.
        unsafe { x86::io::inb(self.base + reg) }
    }

    /// Program it for 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&mut self) {
        self.outb(1, 0x00);
        self.outb(3, 0x80);
        self.outb(0, 0x01);
        self.outb(1, 0x00);
        self.outb(3, 0x03);
        self.outb(2, 0xC7);
        self.outb(4, 0x03);
    }

    /// Raise the UART's interrupt for received data and line status (a
    /// BREAK), with OUT2 set so a PC routes it to its IRQ line.
    pub fn enable_rx_interrupts(&mut self) {
        self.outb(4, 0x0B);
        self.outb(1, 0x05);
    }

    /// The next received event, if any: `Some(None)` for a BREAK, `Some(Some(b))`
    /// for a byte. Reading it takes it off the UART.
    pub fn receive(&mut self) -> Option<Option<u8>> {
        let lsr = self.inb(5);
        if lsr & LSR_BI != 0 {
            // The break comes with a zero byte in the receive register.
            let _ = self.inb(0);
            return Some(None);
        }
        if lsr & LSR_DR != 0 {
            return Some(Some(self.inb(0)));
        }
        None
    }

    /// Send one byte, once the transmit holding register is empty.
    pub fn put(&mut self, b: u8) {
        while self.inb(5) & LSR_THRE == 0 {
            core::hint::spin_loop();
        }
        self.outb(0, b);
    }
}

impl fmt::Write for Uart16550 {
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
