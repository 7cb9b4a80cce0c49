//! Register windows and DMA memory as the CPU sees them: volatile,
//! bounds-checked accesses at a virtual address the port mapped.

/// A window of `len` bytes of device registers (or shared DMA memory) at
/// virtual address `base`. Every access is volatile and checked against
/// the window, so a wrong offset panics in the driver instead of touching
/// another device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regs {
    base: usize,
    len: usize,
}

macro_rules! access {
    ($read:ident, $write:ident, $t:ty) => {
        #[doc = concat!("Read the `", stringify!($t), "` at `off`.")]
        pub fn $read(&self, off: usize) -> $t {
            let p = self.at::<$t>(off);
            // SAFETY: `at` checked that the value lies inside the window,
            // which the creator of `Regs` promised is mapped for the
            // window's life, and that it is aligned.
            unsafe { core::ptr::read_volatile(p) }
        }
        #[doc = concat!("Write the `", stringify!($t), "` at `off`.")]
        pub fn $write(&self, off: usize, value: $t) {
            let p = self.at::<$t>(off);
            // SAFETY: as for the read.
            unsafe { core::ptr::write_volatile(p, value) }
        }
    };
}

impl Regs {
    /// A window over `len` bytes at `base`.
    ///
    /// # Safety
    /// `base..base + len` must stay mapped, readable and writable, and be
    /// used by nothing that assumes ordinary memory semantics, for as long
    /// as the `Regs` (or a copy) is used.
    pub unsafe fn new(base: usize, len: usize) -> Self {
        Regs { base, len }
    }

    /// The window's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the window empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The window's virtual address.
    pub fn base(&self) -> usize {
        self.base
    }

    /// A sub-window at `off` of `len` bytes.
    pub fn slice(&self, off: usize, len: usize) -> Regs {
        assert!(
            off.checked_add(len).is_some_and(|end| end <= self.len),
            "register window {off:#x}+{len:#x} outside {:#x}",
            self.len
        );
        Regs { base: self.base + off, len }
    }

    fn at<T>(&self, off: usize) -> *mut T {
        let size = core::mem::size_of::<T>();
        assert!(
            off.checked_add(size).is_some_and(|end| end <= self.len) && (self.base + off).is_multiple_of(size),
            "register access {off:#x} ({size} bytes) outside or misaligned in a window of {:#x}",
            self.len
        );
        (self.base + off) as *mut T
    }

    access!(read8, write8, u8);
    access!(read16, write16, u16);
    access!(read32, write32, u32);
    access!(read64, write64, u64);
}
