//! Reading the PVH `hvm_start_info` (Xen's `arch/x86/hvm/start_info.h` ABI,
//! as QEMU fills it): the e820 memory map, the command line, the RSDP address
//! and the modules (QEMU passes the `-initrd` file as module 0).
//!
//! Everything is copied or range-checked here, before the shim writes any
//! memory outside its own image: QEMU puts the start info, the map and the
//! command line in low memory that the kernel may be loaded over.

use core::fmt;

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;
/// Most e820 entries kept (QEMU 7.2 gives 7).
pub const E820_MAX: usize = 64;
/// The shim reaches physical memory through an identity map of the low 4 GiB
/// until it has built the kernel's tables: the boot data and the module must
/// lie below this.
pub const REACHABLE: u64 = 1 << 32;

#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ModlistEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

/// One e820 entry (1 RAM, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS, 5 bad).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct E820 {
    /// Physical start.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// e820 type.
    pub kind: u32,
}

impl E820 {
    /// Physical end (exclusive), saturating.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// What the shim needs from the start info.
pub struct BootData {
    /// The e820 map, sorted by base.
    pub e820: [E820; E820_MAX],
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
    pub fn e820(&self) -> &[E820] {
        &self.e820[..self.e820_len]
    }
}

/// Why the start info cannot be used.
#[derive(Debug, Clone, Copy)]
pub enum Error {
    /// `ebx` did not point at an `hvm_start_info` (not booted through PVH?).
    BadMagic(u64, u32),
    /// Version 0 has no memory map.
    NoMemoryMap(u32),
    /// A boot structure lies above what the shim can reach.
    Unreachable(&'static str, u64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BadMagic(pa, m) => {
                write!(f, "no hvm_start_info at {pa:#x} (magic {m:#x}, expected {MAGIC:#x}): not booted through PVH?")
            }
            Error::NoMemoryMap(v) => write!(f, "hvm_start_info version {v} carries no memory map (version 1 needed)"),
            Error::Unreachable(what, pa) => write!(f, "{what} at {pa:#x} is above 4 GiB, out of the shim's reach"),
        }
    }
}

fn reachable(what: &'static str, pa: u64, len: u64) -> Result<(), Error> {
    match pa.checked_add(len) {
        Some(end) if end <= REACHABLE => Ok(()),
        _ => Err(Error::Unreachable(what, pa)),
    }
}

/// Read the start info at physical `pa`.
pub fn read(pa: u64) -> Result<BootData, Error> {
    reachable("hvm_start_info", pa, size_of::<StartInfo>() as u64)?;
    // SAFETY: the PVH loader passes the physical address of an hvm_start_info
    // in low memory, which the boot tables identity-map; read_unaligned makes
    // no alignment assumption.
    let si = unsafe { (pa as *const StartInfo).read_unaligned() };
    if si.magic != MAGIC {
        return Err(Error::BadMagic(pa, si.magic));
    }
    if si.version < 1 || si.memmap_paddr == 0 {
        return Err(Error::NoMemoryMap(si.version));
    }
    let mut bd =
        BootData { e820: [E820::default(); E820_MAX], e820_len: 0, cmdline: (0, 0), rsdp: si.rsdp_paddr, module: None };

    let n = (si.memmap_entries as usize).min(E820_MAX);
    reachable("the e820 map", si.memmap_paddr, (n * size_of::<MemmapEntry>()) as u64)?;
    for i in 0..n {
        // SAFETY: memmap_entries entries follow memmap_paddr (PVH ABI), in
        // reachable memory (checked above).
        let e = unsafe { (si.memmap_paddr as *const MemmapEntry).add(i).read_unaligned() };
        bd.e820[i] = E820 { base: e.addr, size: e.size, kind: e.kind };
    }
    bd.e820_len = n;
    bd.e820[..n].sort_unstable_by_key(|e| e.base);

    if si.cmdline_paddr != 0 {
        reachable("the command line", si.cmdline_paddr, 1)?;
        let p = si.cmdline_paddr as *const u8;
        let mut len = 0u64;
        // SAFETY: a NUL-terminated string in reachable memory; the scan stops
        // at the NUL or at the end of what the shim can reach.
        while si.cmdline_paddr + len < REACHABLE && unsafe { p.add(len as usize).read() } != 0 {
            len += 1;
        }
        bd.cmdline = (si.cmdline_paddr, len);
    }

    if si.nr_modules > 0 && si.modlist_paddr != 0 {
        reachable("the module list", si.modlist_paddr, size_of::<ModlistEntry>() as u64)?;
        // SAFETY: nr_modules entries follow modlist_paddr (PVH ABI), reachable.
        let m = unsafe { (si.modlist_paddr as *const ModlistEntry).read_unaligned() };
        reachable("module 0", m.paddr, m.size)?;
        bd.module = Some((m.paddr, m.size));
    }
    Ok(bd)
}
