//! The boot protocols shared by the project's two freestanding x86-64
//! binaries, the testkernel and the Redox PVH shim (`kernel-patch/shim`):
//!
//! * [`pvh`]: QEMU's PVH `hvm_start_info`, its memory map and module list,
//!   parsed through a [`PhysMem`] reader (the testkernel boots this way, the
//!   shim is booted this way);
//! * [`redox`]: Redox's `KernelArgs` hand-over, its memory areas and its env
//!   (the shim fills it, the testkernel's Redox-protocol entry reads it);
//! * [`serial`]: a 16550 UART as a line writer (both report on COM1);
//! * `rt` (feature `runtime`): the `mem*` functions and unwinding stubs the
//!   precompiled `core` needs in a freestanding binary;
//! * `link` (feature `link`, for build scripts): the link arguments of such a
//!   binary.
//!
//! Everything but `rt` and `link` builds and is unit-tested on the host.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "link")]
extern crate std;

#[cfg(feature = "link")]
pub mod link;
pub mod pvh;
pub mod redox;
#[cfg(all(feature = "runtime", not(test)))]
pub mod rt;
#[cfg(target_arch = "x86_64")]
pub mod serial;

use core::fmt;

/// A physical range a [`PhysMem`] cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable {
    /// Its first byte.
    pub pa: u64,
    /// Its length.
    pub len: u64,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes at physical {:#x} cannot be read", self.len, self.pa)
    }
}

/// Read access to physical memory, however the reader reaches it: an identity
/// map (the shim), a direct map at an offset (the testkernel), or a byte slice
/// standing for memory (tests).
pub trait PhysMem {
    /// Copy the `out.len()` bytes at physical address `pa` into `out`.
    ///
    /// # Errors
    /// [`Unreadable`] when part of the range is out of this reader's reach;
    /// `out` is then unspecified.
    fn read(&self, pa: u64, out: &mut [u8]) -> Result<(), Unreadable>;

    /// The `N` bytes at physical address `pa`.
    ///
    /// # Errors
    /// As [`PhysMem::read`].
    fn read_array<const N: usize>(&self, pa: u64) -> Result<[u8; N], Unreadable> {
        let mut out = [0; N];
        self.read(pa, &mut out)?;
        Ok(out)
    }
}

/// Physical memory below `limit` mapped at `offset + pa` in the current
/// address space: the shim's identity map (`offset` 0), the testkernel's
/// direct map.
#[derive(Debug, Clone, Copy)]
pub struct DirectMap {
    offset: u64,
    limit: u64,
}

impl DirectMap {
    /// A reader of physical memory below `limit` at virtual `offset + pa`.
    ///
    /// # Safety
    /// For as long as the value is used, every physical address below `limit`
    /// must be mapped readable at `offset + pa`, and reading it must have no
    /// side effects (RAM or ROM, not device registers) and race with no writer.
    pub const unsafe fn new(offset: u64, limit: u64) -> DirectMap {
        DirectMap { offset, limit }
    }

    /// Does this map reach all of `[pa, pa + len)`?
    pub fn covers(&self, pa: u64, len: u64) -> bool {
        pa.checked_add(len).is_some_and(|end| end <= self.limit)
    }
}

impl PhysMem for DirectMap {
    fn read(&self, pa: u64, out: &mut [u8]) -> Result<(), Unreadable> {
        let len = out.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let va = self.offset.wrapping_add(pa);
        // Address 0 is never a valid pointer in Rust, even where it is mapped.
        if !self.covers(pa, len) || va == 0 {
            return Err(Unreadable { pa, len });
        }
        // SAFETY: `new`'s caller vouched that `[pa, pa + len)`, below `limit`
        // (checked above), is mapped readable at `va` with no side effects and
        // no concurrent writer; `va` is not null, and `out` is a distinct
        // buffer of `len` bytes. Bytes need no alignment.
        unsafe { core::ptr::copy_nonoverlapping(va as *const u8, out.as_mut_ptr(), out.len()) };
        Ok(())
    }
}

/// A byte slice standing for physical memory from `base` up: test data, or a
/// copy of boot data.
#[derive(Debug, Clone, Copy)]
pub struct SliceMem<'a> {
    /// Physical address of `bytes[0]`.
    pub base: u64,
    /// The memory.
    pub bytes: &'a [u8],
}

impl PhysMem for SliceMem<'_> {
    fn read(&self, pa: u64, out: &mut [u8]) -> Result<(), Unreadable> {
        let unreadable = Unreadable { pa, len: out.len() as u64 };
        let start = usize::try_from(pa.checked_sub(self.base).ok_or(unreadable)?).map_err(|_| unreadable)?;
        let src = start.checked_add(out.len()).and_then(|end| self.bytes.get(start..end)).ok_or(unreadable)?;
        out.copy_from_slice(src);
        Ok(())
    }
}

/// The length of the NUL-terminated string at physical `pa`: the bytes before
/// the NUL, at most `max`, and no further than the first byte `mem` cannot
/// read.
pub fn c_str_len(mem: &impl PhysMem, pa: u64, max: u64) -> u64 {
    let mut len = 0;
    while len < max {
        match pa.checked_add(len).map(|at| mem.read_array::<1>(at)) {
            Some(Ok([b])) if b != 0 => len += 1,
            _ => break,
        }
    }
    len
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_mem_reads_inside_and_refuses_outside() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        let mem = SliceMem { base: 0x1000, bytes: &bytes };
        assert_eq!(mem.read_array::<3>(0x1002), Ok([3, 4, 5]));
        assert_eq!(mem.read_array::<8>(0x1000), Ok(bytes));
        assert_eq!(mem.read_array::<0>(0x1008), Ok([]));
        assert_eq!(mem.read_array::<2>(0x1007), Err(Unreadable { pa: 0x1007, len: 2 }));
        assert_eq!(mem.read_array::<1>(0xfff), Err(Unreadable { pa: 0xfff, len: 1 }));
        assert_eq!(mem.read_array::<1>(u64::MAX), Err(Unreadable { pa: u64::MAX, len: 1 }));
    }

    #[test]
    fn direct_map_reads_through_its_offset_below_its_limit() {
        let bytes = [9u8, 8, 7, 6];
        let offset = bytes.as_ptr() as u64 - 0x100;
        // SAFETY: physical 0x100..0x104 is `bytes`, readable for the test;
        // the limit keeps every read inside it.
        let mem = unsafe { DirectMap::new(offset, 0x104) };
        assert_eq!(mem.read_array::<4>(0x100), Ok([9, 8, 7, 6]));
        assert_eq!(mem.read_array::<2>(0x103), Err(Unreadable { pa: 0x103, len: 2 }));
        assert_eq!(mem.read_array::<1>(u64::MAX), Err(Unreadable { pa: u64::MAX, len: 1 }));
        assert!(mem.covers(0x100, 4) && mem.covers(0x104, 0) && !mem.covers(0x100, 5) && !mem.covers(u64::MAX, 2));
    }

    #[test]
    fn direct_map_never_dereferences_null() {
        // SAFETY: no read below reaches memory: the only candidate is address 0.
        let mem = unsafe { DirectMap::new(0, 1 << 32) };
        assert_eq!(mem.read_array::<4>(0), Err(Unreadable { pa: 0, len: 4 }));
        assert_eq!(mem.read_array::<0>(0), Ok([]));
    }

    #[test]
    fn c_str_len_stops_at_nul_max_or_end_of_reach() {
        let mem = SliceMem { base: 0x10, bytes: b"abc\0def" };
        assert_eq!(c_str_len(&mem, 0x10, u64::MAX), 3);
        assert_eq!(c_str_len(&mem, 0x10, 2), 2);
        assert_eq!(c_str_len(&mem, 0x13, u64::MAX), 0);
        assert_eq!(c_str_len(&mem, 0x14, u64::MAX), 3, "no NUL before the end of what can be read");
        assert_eq!(c_str_len(&mem, 0x100, u64::MAX), 0);
    }

    #[test]
    fn little_endian_fields() {
        let b = [0x78, 0x56, 0x34, 0x12, 0xf0, 0xde, 0xbc, 0x9a];
        assert_eq!(u32_at(&b, 0), 0x1234_5678);
        assert_eq!(u64_at(&b, 0), 0x9abc_def0_1234_5678);
    }
}
