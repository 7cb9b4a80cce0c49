//! What the loader handed over: the PVH `hvm_start_info` (memory map, command
//! line, RSDP, modules), parsed by [`bootproto::pvh`]. Everything is copied out
//! early so the boot data's memory can be reused.

use bootproto::pvh::{self, E820_RAM, MemmapEntry, StartInfo};
use bootproto::{DirectMap, PhysMem};

use crate::mem::frames::Range;
use crate::mem::{DIRECT_MAP_SIZE, PHYS_OFFSET};

/// Longest command line kept.
pub const CMDLINE_MAX: usize = 1024;
/// Most memory-map entries kept.
pub const MEMMAP_MAX: usize = 64;

/// The boot information, copied.
pub struct BootInfo {
    /// Command line bytes.
    pub cmdline: [u8; CMDLINE_MAX],
    /// Its length.
    pub cmdline_len: usize,
    /// Memory map.
    pub memmap: [MemmapEntry; MEMMAP_MAX],
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
    pub fn memmap(&self) -> &[MemmapEntry] {
        &self.memmap[..self.memmap_len]
    }

    /// Usable RAM ranges.
    pub fn ram(&self, out: &mut [Range; MEMMAP_MAX]) -> usize {
        let mut n = 0;
        for e in self.memmap().iter().filter(|e| e.kind == E820_RAM) {
            out[n] = Range { start: e.base, end: e.base + e.size };
            n += 1;
        }
        n
    }
}

/// The boot data as the loader left it: physical memory through the direct
/// map the boot page tables set up (the low 4 GiB at `PHYS_OFFSET`).
pub fn boot_memory() -> DirectMap {
    // SAFETY: both entries (PVH and Redox) start on tables that map all of
    // the low DIRECT_MAP_SIZE bytes at PHYS_OFFSET for as long as the boot
    // data is read; it is RAM or ROM that nothing else writes meanwhile.
    unsafe { DirectMap::new(PHYS_OFFSET, DIRECT_MAP_SIZE) }
}

/// Read `hvm_start_info` at physical `pa`. Panics on a bad magic or boot data
/// out of reach: the kernel cannot run without knowing its memory.
pub fn parse(pa: u64) -> BootInfo {
    let mem = boot_memory();
    let si = match StartInfo::read(&mem, pa) {
        Ok(si) => si,
        Err(pvh::Error::BadMagic { magic, .. }) => panic!("bad hvm_start_info magic {magic:#x} at {pa:#x}"),
        Err(e) => panic!("{e}"),
    };
    let mut bi = BootInfo {
        cmdline: [0; CMDLINE_MAX],
        cmdline_len: 0,
        memmap: [MemmapEntry::default(); MEMMAP_MAX],
        memmap_len: 0,
        rsdp: si.rsdp_paddr,
        module: None,
        boot_data: [Range { start: 0, end: 0 }; 4],
    };
    if let Some(n) = si.cmdline_len(&mem, CMDLINE_MAX as u64 - 1).unwrap_or_else(|e| panic!("{e}")) {
        let n = n as usize;
        mem.read(si.cmdline_paddr, &mut bi.cmdline[..n]).unwrap_or_else(|e| panic!("the command line: {e}"));
        bi.cmdline_len = n;
        bi.boot_data[0] = Range { start: si.cmdline_paddr, end: si.cmdline_paddr + n as u64 + 1 };
    }
    if si.has_memmap() {
        let n = si.read_memmap(&mem, &mut bi.memmap).unwrap_or_else(|e| panic!("{e}"));
        bi.memmap_len = n;
        bi.boot_data[1] = Range { start: si.memmap_paddr, end: si.memmap_paddr + (n * MemmapEntry::SIZE) as u64 };
    }
    if let Some(m) = si.module(&mem, 0).unwrap_or_else(|e| panic!("{e}")) {
        bi.module = Some(Range { start: m.base, end: m.base + m.size });
        bi.boot_data[2] = Range { start: m.base, end: m.base + m.size };
    }
    bi.boot_data[3] = Range { start: pa, end: pa + StartInfo::SIZE as u64 };
    bi
}

/// The boot memory map, kept for the tests (frame counters must add up to it).
static SAVED_MEMMAP: crate::sync::IrqSpinLock<([MemmapEntry; MEMMAP_MAX], usize)> =
    crate::sync::IrqSpinLock::named("memmap", ([MemmapEntry { base: 0, size: 0, kind: 0 }; MEMMAP_MAX], 0));

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
        .filter(|e| e.kind == E820_RAM)
        .map(|e| ((e.base + e.size) / crate::mem::PAGE_SIZE).saturating_sub(e.base.div_ceil(crate::mem::PAGE_SIZE)))
        .sum()
}
