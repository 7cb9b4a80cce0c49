//! The PVH boot ABI (Xen's `arch/x86/hvm/start_info.h`, as QEMU's `-kernel`
//! loader fills it): entered in 32-bit protected mode with `ebx` = the
//! physical address of an `hvm_start_info`, which points at the memory map,
//! the command line, the ACPI RSDP and the modules (QEMU passes `-initrd` as
//! module 0).
//!
//! The structures are decoded from their little-endian bytes, read through a
//! [`PhysMem`], so parsing needs no `unsafe` and runs on test data as well.

use core::fmt;

use crate::{PhysMem, u32_at, u64_at};

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
/// e820 type of ACPI tables, RAM once they are read.
pub const E820_ACPI: u32 = 3;
/// e820 type of ACPI non-volatile storage.
pub const E820_NVS: u32 = 4;

/// Why an `hvm_start_info` cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The address did not hold an `hvm_start_info` (not booted through PVH?).
    BadMagic {
        /// Where it was looked for.
        pa: u64,
        /// What was there instead of [`MAGIC`].
        magic: u32,
    },
    /// Version 0, or no map: the start info carries no memory map.
    NoMemoryMap {
        /// The start info's version.
        version: u32,
    },
    /// A boot structure lies out of the reader's reach.
    Unreadable {
        /// Which one.
        what: &'static str,
        /// Its physical address.
        pa: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BadMagic { pa, magic } => {
                write!(
                    f,
                    "no hvm_start_info at {pa:#x} (magic {magic:#x}, expected {MAGIC:#x}): not booted through PVH?"
                )
            }
            Error::NoMemoryMap { version } => {
                write!(f, "hvm_start_info version {version} carries no memory map (version 1 needed)")
            }
            Error::Unreadable { what, pa } => write!(f, "{what} at {pa:#x} cannot be read"),
        }
    }
}

/// `struct hvm_start_info` (version 1; the trailing reserved word left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartInfo {
    /// [`MAGIC`].
    pub magic: u32,
    /// 0, or 1 when the memory-map fields are present.
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Entries of the module list.
    pub nr_modules: u32,
    /// Physical address of the module list ([`Module`]s), or 0.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP, or 0.
    pub rsdp_paddr: u64,
    /// Physical address of the memory map ([`MemmapEntry`]s), or 0.
    pub memmap_paddr: u64,
    /// Entries of the memory map.
    pub memmap_entries: u32,
}

impl StartInfo {
    /// Its size in memory.
    pub const SIZE: usize = 56;

    /// Decode the bytes of an `hvm_start_info` (no check of the magic).
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> StartInfo {
        StartInfo {
            magic: u32_at(b, 0),
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            nr_modules: u32_at(b, 12),
            modlist_paddr: u64_at(b, 16),
            cmdline_paddr: u64_at(b, 24),
            rsdp_paddr: u64_at(b, 32),
            memmap_paddr: u64_at(b, 40),
            memmap_entries: u32_at(b, 48),
        }
    }

    /// Read the start info at physical `pa` and check its magic.
    ///
    /// # Errors
    /// [`Error::Unreadable`] (`"hvm_start_info"`) or [`Error::BadMagic`].
    pub fn read(mem: &impl PhysMem, pa: u64) -> Result<StartInfo, Error> {
        let si =
            StartInfo::from_bytes(&mem.read_array(pa).map_err(|_| Error::Unreadable { what: "hvm_start_info", pa })?);
        if si.magic != MAGIC {
            return Err(Error::BadMagic { pa, magic: si.magic });
        }
        Ok(si)
    }

    /// Does it carry a memory map (version 1 or later, with an address)?
    pub fn has_memmap(&self) -> bool {
        self.version >= 1 && self.memmap_paddr != 0
    }

    /// Read the memory map into `out`, in its own order; returns how many
    /// entries were read: all of them, or as many as `out` holds.
    ///
    /// # Errors
    /// [`Error::NoMemoryMap`] when it has none ([`StartInfo::has_memmap`]),
    /// [`Error::Unreadable`] (`"the e820 map"`) when the entries to be read
    /// are out of reach.
    pub fn read_memmap(&self, mem: &impl PhysMem, out: &mut [MemmapEntry]) -> Result<usize, Error> {
        if !self.has_memmap() {
            return Err(Error::NoMemoryMap { version: self.version });
        }
        let unreadable = Error::Unreadable { what: "the e820 map", pa: self.memmap_paddr };
        let n = (self.memmap_entries as usize).min(out.len());
        for (i, e) in out[..n].iter_mut().enumerate() {
            let pa = self.memmap_paddr.checked_add((i * MemmapEntry::SIZE) as u64).ok_or(unreadable)?;
            *e = MemmapEntry::from_bytes(&mem.read_array(pa).map_err(|_| unreadable)?);
        }
        Ok(n)
    }

    /// The length of the command line (the bytes before its NUL, at most
    /// `max`), or `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Unreadable`] (`"the command line"`) when its first byte is out
    /// of reach. A line that runs out of reach before its NUL ends there.
    pub fn cmdline_len(&self, mem: &impl PhysMem, max: u64) -> Result<Option<u64>, Error> {
        if self.cmdline_paddr == 0 {
            return Ok(None);
        }
        mem.read_array::<1>(self.cmdline_paddr)
            .map_err(|_| Error::Unreadable { what: "the command line", pa: self.cmdline_paddr })?;
        Ok(Some(crate::c_str_len(mem, self.cmdline_paddr, max)))
    }

    /// Module `index` of the module list, or `None` when there is no such
    /// module.
    ///
    /// # Errors
    /// [`Error::Unreadable`] (`"the module list"`) when its entry is out of
    /// reach (the module itself is not read).
    pub fn module(&self, mem: &impl PhysMem, index: u32) -> Result<Option<Module>, Error> {
        if index >= self.nr_modules || self.modlist_paddr == 0 {
            return Ok(None);
        }
        let unreadable = Error::Unreadable { what: "the module list", pa: self.modlist_paddr };
        let pa = self.modlist_paddr.checked_add(u64::from(index) * Module::SIZE as u64).ok_or(unreadable)?;
        Ok(Some(Module::from_bytes(&mem.read_array(pa).map_err(|_| unreadable)?)))
    }
}

/// `struct hvm_memmap_table_entry`: one e820 entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemmapEntry {
    /// Physical start.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// e820 type: [`E820_RAM`], [`E820_RESERVED`], [`E820_ACPI`],
    /// [`E820_NVS`], 5 bad memory.
    pub kind: u32,
}

impl MemmapEntry {
    /// Its size in memory.
    pub const SIZE: usize = 24;

    /// Decode the bytes of an entry.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> MemmapEntry {
        MemmapEntry { base: u64_at(b, 0), size: u64_at(b, 8), kind: u32_at(b, 16) }
    }

    /// Physical end (exclusive), saturating.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// `struct hvm_modlist_entry`: one boot module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Module {
    /// Physical start.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// Physical address of its command line, or 0.
    pub cmdline_paddr: u64,
}

impl Module {
    /// Its size in memory.
    pub const SIZE: usize = 32;

    /// Decode the bytes of an entry.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Module {
        Module { base: u64_at(b, 0), size: u64_at(b, 8), cmdline_paddr: u64_at(b, 16) }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::SliceMem;

    const BASE: u64 = 0x1000;
    const SI: u64 = BASE;
    const MAP: u64 = BASE + 0x100;
    const MODS: u64 = BASE + 0x200;
    const CMDLINE: u64 = BASE + 0x300;

    fn put(mem: &mut [u8], pa: u64, bytes: &[u8]) {
        let at = (pa - BASE) as usize;
        mem[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn start_info(version: u32, nr_modules: u32, memmap_entries: u32, cmdline: u64, memmap: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&nr_modules.to_le_bytes());
        b.extend_from_slice(&MODS.to_le_bytes());
        b.extend_from_slice(&cmdline.to_le_bytes());
        b.extend_from_slice(&0xf_0000u64.to_le_bytes());
        b.extend_from_slice(&memmap.to_le_bytes());
        b.extend_from_slice(&memmap_entries.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(b.len(), StartInfo::SIZE);
        b
    }

    fn e820(base: u64, size: u64, kind: u32) -> Vec<u8> {
        [&base.to_le_bytes()[..], &size.to_le_bytes(), &kind.to_le_bytes(), &[0xee; 4]].concat()
    }

    /// Memory like QEMU's: a start info, a three-entry map, one module and a
    /// command line.
    fn memory() -> Vec<u8> {
        let mut m = std::vec![0u8; 0x400];
        put(&mut m, SI, &start_info(1, 1, 3, CMDLINE, MAP));
        put(&mut m, MAP, &e820(0x10_0000, 0x7ee_0000, E820_RAM));
        put(&mut m, MAP + 24, &e820(0, 0x9_fc00, E820_RAM));
        put(&mut m, MAP + 48, &e820(0xfeff_c000, 0x4000, E820_RESERVED));
        let module = [&0x7f0_0000u64.to_le_bytes()[..], &0x2_0000u64.to_le_bytes(), &[0; 16]].concat();
        put(&mut m, MODS, &module);
        put(&mut m, CMDLINE, b"ktest=all smp=4\0garbage");
        m
    }

    #[test]
    fn reads_a_start_info_like_qemus() {
        let m = memory();
        let mem = SliceMem { base: BASE, bytes: &m };
        let si = StartInfo::read(&mem, SI).unwrap();
        assert_eq!((si.version, si.nr_modules, si.rsdp_paddr, si.memmap_entries), (1, 1, 0xf_0000, 3));

        let mut map = [MemmapEntry::default(); 8];
        assert_eq!(si.read_memmap(&mem, &mut map), Ok(3));
        assert_eq!(map[0], MemmapEntry { base: 0x10_0000, size: 0x7ee_0000, kind: E820_RAM });
        assert_eq!(map[1].end(), 0x9_fc00, "kept in the map's own order");
        assert_eq!(map[2].kind, E820_RESERVED);

        assert_eq!(si.cmdline_len(&mem, u64::MAX), Ok(Some(15)));
        assert_eq!(si.cmdline_len(&mem, 5), Ok(Some(5)));
        assert_eq!(si.module(&mem, 0), Ok(Some(Module { base: 0x7f0_0000, size: 0x2_0000, cmdline_paddr: 0 })));
        assert_eq!(si.module(&mem, 1), Ok(None));
    }

    #[test]
    fn a_short_buffer_takes_the_first_entries() {
        let m = memory();
        let mem = SliceMem { base: BASE, bytes: &m };
        let si = StartInfo::read(&mem, SI).unwrap();
        let mut map = [MemmapEntry::default(); 2];
        assert_eq!(si.read_memmap(&mem, &mut map), Ok(2));
        assert_eq!(map[1].base, 0);
    }

    #[test]
    fn refuses_a_bad_magic_or_an_unreadable_start_info() {
        let mut m = memory();
        let mem = SliceMem { base: BASE, bytes: &m };
        assert_eq!(StartInfo::read(&mem, BASE + 0x3d0), Err(Error::Unreadable { what: "hvm_start_info", pa: 0x13d0 }));
        put(&mut m, SI, &0xdead_beefu32.to_le_bytes());
        let mem = SliceMem { base: BASE, bytes: &m };
        assert_eq!(StartInfo::read(&mem, SI), Err(Error::BadMagic { pa: SI, magic: 0xdead_beef }));
    }

    #[test]
    fn version_0_or_no_address_has_no_memory_map() {
        for (version, map) in [(0, MAP), (1, 0)] {
            let mut m = memory();
            put(&mut m, SI, &start_info(version, 1, 3, CMDLINE, map));
            let mem = SliceMem { base: BASE, bytes: &m };
            let si = StartInfo::read(&mem, SI).unwrap();
            assert!(!si.has_memmap());
            assert_eq!(si.read_memmap(&mem, &mut [MemmapEntry::default(); 4]), Err(Error::NoMemoryMap { version }));
        }
    }

    #[test]
    fn a_map_running_out_of_reach_is_refused() {
        let mut m = memory();
        put(&mut m, SI, &start_info(1, 0, 40, CMDLINE, MAP));
        let mem = SliceMem { base: BASE, bytes: &m };
        let si = StartInfo::read(&mem, SI).unwrap();
        let err = si.read_memmap(&mem, &mut [MemmapEntry::default(); 64]);
        assert_eq!(err, Err(Error::Unreadable { what: "the e820 map", pa: MAP }));
        assert_eq!(si.module(&mem, 0), Ok(None), "no modules");
    }

    #[test]
    fn command_line_absent_unreadable_or_cut_at_the_end_of_reach() {
        let mut m = memory();
        put(&mut m, SI, &start_info(1, 1, 3, 0, MAP));
        let mem = SliceMem { base: BASE, bytes: &m };
        assert_eq!(StartInfo::read(&mem, SI).unwrap().cmdline_len(&mem, u64::MAX), Ok(None));

        put(&mut m, SI, &start_info(1, 1, 3, 0x9000, MAP));
        let mem = SliceMem { base: BASE, bytes: &m };
        let err = StartInfo::read(&mem, SI).unwrap().cmdline_len(&mem, u64::MAX);
        assert_eq!(err, Err(Error::Unreadable { what: "the command line", pa: 0x9000 }));

        put(&mut m, SI, &start_info(1, 1, 3, BASE + 0x3fe, MAP));
        put(&mut m, BASE + 0x3fe, b"xy");
        let mem = SliceMem { base: BASE, bytes: &m };
        assert_eq!(StartInfo::read(&mem, SI).unwrap().cmdline_len(&mem, u64::MAX), Ok(Some(2)));
    }

    #[test]
    fn an_unreadable_module_list_is_refused() {
        let mut m = memory();
        let mut si = start_info(1, 1, 3, CMDLINE, MAP);
        si[16..24].copy_from_slice(&(BASE + 0x3f0).to_le_bytes());
        put(&mut m, SI, &si);
        let mem = SliceMem { base: BASE, bytes: &m };
        let si = StartInfo::read(&mem, SI).unwrap();
        assert_eq!(si.module(&mem, 0), Err(Error::Unreadable { what: "the module list", pa: BASE + 0x3f0 }));
    }

    #[test]
    fn errors_read_as_the_shim_reports_them() {
        use std::string::ToString;
        let e = Error::BadMagic { pa: 0x1000, magic: 0 };
        assert_eq!(
            e.to_string(),
            "no hvm_start_info at 0x1000 (magic 0x0, expected 0x336ec578): not booted through PVH?"
        );
        let e = Error::NoMemoryMap { version: 0 };
        assert_eq!(e.to_string(), "hvm_start_info version 0 carries no memory map (version 1 needed)");
    }
}
