//! Reading the PVH `hvm_start_info` ([`bootproto::pvh`]): the e820 memory
//! map, the command line, the RSDP address and the modules (QEMU passes the
//! `-initrd` file as module 0).
//!
//! Everything is copied or range-checked here, before the shim writes any
//! memory outside its own image: QEMU puts the start info, the map and the
//! command line in low memory that the kernel may be loaded over.

use core::fmt;

use bootproto::DirectMap;
use bootproto::pvh::{self, MemmapEntry, StartInfo};

/// Most e820 entries kept (QEMU 7.2 gives 7).
pub const E820_MAX: usize = 64;
/// The shim reaches physical memory through an identity map of the low 4 GiB
/// until it has built the kernel's tables: the boot data and the module must
/// lie below this.
pub const REACHABLE: u64 = 1 << 32;

/// What the shim needs from the start info.
pub struct BootData {
    /// The e820 map, sorted by base.
    pub e820: [MemmapEntry; E820_MAX],
    /// Entries in use.
    pub e820_len: usize,
    /// Physical address and length of the NUL-terminated command line (0, 0 if none).
    pub cmdline: (u64, u64),
    /// Physical address of the ACPI RSDP (0 if QEMU found none).
    pub rsdp: u64,
    /// Module 0 (the kernel ELF) as a physical `(base, size)`, if any.
    pub module: Option<(u64, u64)>,
}

impl BootData {
    /// The memory map.
    pub fn e820(&self) -> &[MemmapEntry] {
        &self.e820[..self.e820_len]
    }
}

/// Why the start info cannot be used.
#[derive(Debug, Clone, Copy)]
pub struct Error(pvh::Error);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            pvh::Error::Unreadable { what, pa } => {
                write!(f, "{what} at {pa:#x} is above 4 GiB, out of the shim's reach")
            }
            e => e.fmt(f),
        }
    }
}

impl From<pvh::Error> for Error {
    fn from(e: pvh::Error) -> Self {
        Error(e)
    }
}

/// Read the start info at physical `pa`.
pub fn read(pa: u64) -> Result<BootData, Error> {
    // SAFETY: the boot tables identity-map the low 4 GiB (start.rs), and the
    // PVH boot data there is RAM or ROM that nothing writes while the shim reads it.
    let low = unsafe { DirectMap::new(0, REACHABLE) };
    let si = StartInfo::read(&low, pa)?;
    let mut bd = BootData {
        e820: [MemmapEntry::default(); E820_MAX],
        e820_len: 0,
        cmdline: (0, 0),
        rsdp: si.rsdp_paddr,
        module: None,
    };
    bd.e820_len = si.read_memmap(&low, &mut bd.e820)?;
    bd.e820[..bd.e820_len].sort_unstable_by_key(|e| e.base);
    if let Some(len) = si.cmdline_len(&low, u64::MAX)? {
        bd.cmdline = (si.cmdline_paddr, len);
    }
    if let Some(m) = si.module(&low, 0)? {
        if !low.covers(m.base, m.size) {
            return Err(pvh::Error::Unreadable { what: "module 0", pa: m.base }.into());
        }
        bd.module = Some((m.base, m.size));
    }
    Ok(bd)
}
