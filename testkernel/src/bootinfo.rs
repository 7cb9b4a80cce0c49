//! What the loader handed over: the PVH `hvm_start_info` (memory map, command
//! line, RSDP, modules). Everything is copied out early so the boot data's
//! memory can be reused.

use crate::mem::{frames::Range, phys_to_virt};

/// `hvm_start_info.magic`.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmStartInfo {
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
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmModlistEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

/// Longest command line kept.
pub const CMDLINE_MAX: usize = 1024;
/// Most memory-map entries kept.
pub const MEMMAP_MAX: usize = 64;

/// One memory-map entry (e820 types: 1 usable RAM, 2 reserved, 3 ACPI
/// reclaimable, 4 ACPI NVS, 5 bad).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemEntry {
    /// Physical start.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// e820 type.
    pub kind: u32,
}

/// The boot information, copied.
pub struct BootInfo {
    /// Command line bytes.
    pub cmdline: [u8; CMDLINE_MAX],
    /// Its length.
    pub cmdline_len: usize,
    /// Memory map.
    pub memmap: [MemEntry; MEMMAP_MAX],
    /// Entries in use.
    pub memmap_len: usize,
    /// Physical address of the ACPI RSDP (0 when absent).
    pub rsdp: u64,
    /// First boot module (QEMU's `-initrd`) as a physical range, if any.
    pub module: Option<Range>,
    /// The ranges of boot data (start info, map, command line, modules) that
    /// must not be handed out before they are copied.
    pub boot_data: [Range; 4],
}

impl BootInfo {
    /// The command line as text (invalid UTF-8 gives an empty string).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// The memory map entries.
    pub fn memmap(&self) -> &[MemEntry] {
        &self.memmap[..self.memmap_len]
    }

    /// Usable RAM ranges.
    pub fn ram(&self, out: &mut [Range; MEMMAP_MAX]) -> usize {
        let mut n = 0;
        for e in self.memmap().iter().filter(|e| e.kind == 1) {
            out[n] = Range { start: e.base, end: e.base + e.size };
            n += 1;
        }
        n
    }
}

/// Read `hvm_start_info` at physical `pa`. Panics on a bad magic: the kernel
/// cannot run without knowing its memory.
pub fn parse(pa: u64) -> BootInfo {
    // SAFETY: the PVH loader passes the physical address of a valid
    // hvm_start_info in low memory, which the direct map covers.
    let si = unsafe { (phys_to_virt(pa) as *const HvmStartInfo).read_unaligned() };
    assert!(si.magic == HVM_START_MAGIC, "bad hvm_start_info magic {:#x} at {pa:#x}", si.magic);
    let mut bi = BootInfo {
        cmdline: [0; CMDLINE_MAX],
        cmdline_len: 0,
        memmap: [MemEntry::default(); MEMMAP_MAX],
        memmap_len: 0,
        rsdp: si.rsdp_paddr,
        module: None,
        boot_data: [Range { start: 0, end: 0 }; 4],
    };
    if si.cmdline_paddr != 0 {
        let p = phys_to_virt(si.cmdline_paddr) as *const u8;
        let mut n = 0;
        // SAFETY: the command line is a NUL-terminated string in mapped low
        // memory; we read at most CMDLINE_MAX - 1 bytes of it.
        while n < CMDLINE_MAX - 1 && unsafe { p.add(n).read() } != 0 {
            // SAFETY: as above.
            bi.cmdline[n] = unsafe { p.add(n).read() };
            n += 1;
        }
        bi.cmdline_len = n;
        bi.boot_data[0] = Range { start: si.cmdline_paddr, end: si.cmdline_paddr + n as u64 + 1 };
    }
    if si.version >= 1 && si.memmap_paddr != 0 {
        let n = (si.memmap_entries as usize).min(MEMMAP_MAX);
        for i in 0..n {
            // SAFETY: memmap_entries entries follow memmap_paddr (PVH ABI).
            let e = unsafe { (phys_to_virt(si.memmap_paddr) as *const HvmMemmapEntry).add(i).read_unaligned() };
            bi.memmap[i] = MemEntry { base: e.addr, size: e.size, kind: e.kind };
        }
        bi.memmap_len = n;
        bi.boot_data[1] = Range { start: si.memmap_paddr, end: si.memmap_paddr + (n * 24) as u64 };
    }
    if si.nr_modules > 0 && si.modlist_paddr != 0 {
        // SAFETY: nr_modules entries follow modlist_paddr (PVH ABI).
        let m = unsafe { (phys_to_virt(si.modlist_paddr) as *const HvmModlistEntry).read_unaligned() };
        bi.module = Some(Range { start: m.paddr, end: m.paddr + m.size });
        bi.boot_data[2] = Range { start: m.paddr, end: m.paddr + m.size };
    }
    bi.boot_data[3] = Range { start: pa, end: pa + core::mem::size_of::<HvmStartInfo>() as u64 };
    bi
}

/// The boot memory map, kept for the tests (frame counters must add up to it).
static SAVED_MEMMAP: crate::sync::IrqSpinLock<([MemEntry; MEMMAP_MAX], usize)> =
    crate::sync::IrqSpinLock::new("memmap", ([MemEntry { base: 0, size: 0, kind: 0 }; MEMMAP_MAX], 0));

/// Keep a copy of the memory map.
pub fn save(bi: &BootInfo) {
    let mut g = SAVED_MEMMAP.lock();
    g.0 = bi.memmap;
    g.1 = bi.memmap_len;
}

/// Usable RAM frames according to the boot memory map.
pub fn usable_frames() -> u64 {
    let g = SAVED_MEMMAP.lock();
    g.0[..g.1]
        .iter()
        .filter(|e| e.kind == 1)
        .map(|e| ((e.base + e.size) / crate::mem::PAGE_SIZE).saturating_sub(e.base.div_ceil(crate::mem::PAGE_SIZE)))
        .sum()
}
