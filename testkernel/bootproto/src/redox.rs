//! Redox's boot hand-over (`src/startup/mod.rs` and
//! `src/arch/x86_shared/start.rs` in the Redox kernel): the loader enters the
//! kernel's ELF entry (`kstart`) in long mode with `rdi` = the physical,
//! identity-mapped address of a [`KernelArgs`], physical memory mapped at
//! [`PHYS_OFFSET`] and the kernel's image at [`KERNEL_OFFSET`].
//!
//! The shim fills these structures; the testkernel's Redox-protocol entry
//! reads them back ([`KernelArgs::read`], [`KernelArgs::read_areas`]).

use crate::{PhysMem, Unreadable, u64_at};

/// Where the Redox kernel's image is linked (`KERNEL_OFFSET` in its linker
/// script): the loader maps `KERNEL_OFFSET + x` to `kernel_base + x`.
pub const KERNEL_OFFSET: u64 = 0xFFFF_FFFF_8000_0000;
/// Where Redox expects all physical memory mapped (PML4 slot 256).
pub const PHYS_OFFSET: u64 = 0xFFFF_8000_0000_0000;

/// `Area::kind`: usable RAM.
pub const FREE: u64 = 1;
/// `Area::kind`: RAM holding boot data, usable once the kernel has taken what
/// it needs. Redox keeps it out of its allocator.
pub const RECLAIM: u64 = 2;
/// `Area::kind`: not RAM, or RAM that stays in use (the kernel image).
pub const RESERVED: u64 = 3;

/// Redox's `KernelArgs`: physical addresses and sizes in bytes.
#[repr(C, packed(8))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelArgs {
    /// Where the loader put the kernel image ([`KERNEL_OFFSET`] maps here).
    pub kernel_base: u64,
    /// Size of the image from [`KERNEL_OFFSET`].
    pub kernel_size: u64,
    /// A stack the loader allocated (Redox on x86-64 switches to its own).
    pub stack_base: u64,
    /// Its size.
    pub stack_size: u64,
    /// The environment: `KEY=VALUE\n` lines.
    pub env_base: u64,
    /// Its size.
    pub env_size: u64,
    /// A copy of the ACPI RSDP (starting "RSD PTR "), or 0.
    pub hwdesc_base: u64,
    /// Its size.
    pub hwdesc_size: u64,
    /// The memory map: an array of [`Area`].
    pub areas_base: u64,
    /// Its size in bytes.
    pub areas_size: u64,
    /// The bootstrap (initfs) image for user space.
    pub bootstrap_base: u64,
    /// Its size (Redox needs at least a page).
    pub bootstrap_size: u64,
}

const _: () = assert!(size_of::<KernelArgs>() == KernelArgs::SIZE && align_of::<KernelArgs>() == 8);

impl KernelArgs {
    /// Its size in memory: twelve `u64`.
    pub const SIZE: usize = 96;

    /// Decode the bytes of a `KernelArgs`.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> KernelArgs {
        let f = |i: usize| u64_at(b, 8 * i);
        KernelArgs {
            kernel_base: f(0),
            kernel_size: f(1),
            stack_base: f(2),
            stack_size: f(3),
            env_base: f(4),
            env_size: f(5),
            hwdesc_base: f(6),
            hwdesc_size: f(7),
            areas_base: f(8),
            areas_size: f(9),
            bootstrap_base: f(10),
            bootstrap_size: f(11),
        }
    }

    /// Read the `KernelArgs` at physical `pa`.
    ///
    /// # Errors
    /// [`Unreadable`] when it is out of `mem`'s reach.
    pub fn read(mem: &impl PhysMem, pa: u64) -> Result<KernelArgs, Unreadable> {
        Ok(KernelArgs::from_bytes(&mem.read_array(pa)?))
    }

    /// How many whole [`Area`]s the memory map holds.
    pub fn areas_len(&self) -> usize {
        (self.areas_size / Area::SIZE as u64) as usize
    }

    /// Read the memory map into `out`; returns how many areas were read: all
    /// of them ([`KernelArgs::areas_len`]), or as many as `out` holds.
    ///
    /// # Errors
    /// [`Unreadable`] when an area to be read is out of `mem`'s reach.
    pub fn read_areas(&self, mem: &impl PhysMem, out: &mut [Area]) -> Result<usize, Unreadable> {
        let n = self.areas_len().min(out.len());
        for (i, a) in out[..n].iter_mut().enumerate() {
            let pa = self
                .areas_base
                .checked_add((i * Area::SIZE) as u64)
                .ok_or(Unreadable { pa: self.areas_base, len: self.areas_size })?;
            *a = Area::from_bytes(&mem.read_array(pa)?);
        }
        Ok(n)
    }
}

/// One entry of Redox's memory map (`{base, size, kind}` as `u64`).
#[repr(C, packed(8))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Area {
    /// Physical start.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`FREE`], [`RECLAIM`] or [`RESERVED`].
    pub kind: u64,
}

const _: () = assert!(size_of::<Area>() == Area::SIZE && align_of::<Area>() == 8);

impl Area {
    /// Its size in memory.
    pub const SIZE: usize = 24;

    /// Decode the bytes of an area.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Area {
        Area { base: u64_at(b, 0), size: u64_at(b, 8), kind: u64_at(b, 16) }
    }

    /// Physical end (exclusive), saturating.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// The area kind of an e820 type: RAM is [`FREE`], ACPI tables
/// [`RECLAIM`], anything else [`RESERVED`].
pub fn area_kind(e820: u32) -> u64 {
    match e820 {
        crate::pvh::E820_RAM => FREE,
        crate::pvh::E820_ACPI => RECLAIM,
        _ => RESERVED,
    }
}

/// The e820 type of an area kind, the inverse of [`area_kind`]: [`FREE`] is
/// RAM, [`RECLAIM`] ACPI (reclaimable), anything else reserved.
pub fn e820_kind(area: u64) -> u32 {
    match area {
        FREE => crate::pvh::E820_RAM,
        RECLAIM => crate::pvh::E820_ACPI,
        _ => crate::pvh::E820_RESERVED,
    }
}

/// Encode a command line as Redox's env: one `KEY=VALUE\n` line per word
/// (words are separated by ASCII white space). Returns the env's size, or
/// `None` when it does not fit `out`.
pub fn env_from_cmdline(cmdline: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    for word in cmdline.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()) {
        let line = out.get_mut(n..n + word.len() + 1)?;
        line[..word.len()].copy_from_slice(word);
        line[word.len()] = b'\n';
        n += word.len() + 1;
    }
    Some(n)
}

/// Decode Redox's env as a command line: its words (separated by newlines or
/// spaces) joined by single spaces. Returns the command line's size; words
/// that would not fit `out` whole are left out (never when `out` is as long
/// as `env`).
pub fn cmdline_from_env(env: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for word in env.split(|&b| b == b'\n' || b == b' ').filter(|w| !w.is_empty()) {
        let sep = usize::from(n > 0);
        let Some(dst) = out.get_mut(n..n + sep + word.len()) else { break };
        dst[..sep].fill(b' ');
        dst[sep..].copy_from_slice(word);
        n += sep + word.len();
    }
    n
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::SliceMem;

    fn bytes_of(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn kernel_args_decode_field_by_field() {
        let b: [u8; KernelArgs::SIZE] = bytes_of(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).try_into().unwrap();
        let a = KernelArgs::from_bytes(&b);
        let fields = [
            a.kernel_base,
            a.kernel_size,
            a.stack_base,
            a.stack_size,
            a.env_base,
            a.env_size,
            a.hwdesc_base,
            a.hwdesc_size,
            a.areas_base,
            a.areas_size,
            a.bootstrap_base,
            a.bootstrap_size,
        ];
        assert_eq!(fields, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn kernel_args_bytes_are_its_in_memory_layout() {
        let a = KernelArgs { kernel_base: 0x400_0000, env_size: 17, bootstrap_size: 4096, ..Default::default() };
        // SAFETY: KernelArgs is twelve u64 with no padding (asserted above).
        let raw: [u8; KernelArgs::SIZE] = unsafe { core::mem::transmute(a) };
        assert_eq!(KernelArgs::from_bytes(&raw), a);
    }

    #[test]
    fn reads_args_and_areas_through_phys_mem() {
        let areas_pa = 0x2000 + KernelArgs::SIZE as u64;
        let mut m = bytes_of(&[0x400_0000, 0x20_0000, 0, 0, 0, 0, 0, 0, areas_pa, 3 * 24 + 5, 0, 0]);
        m.extend(bytes_of(&[0, 0x9_f000, FREE, 0x10_0000, 0x100_0000, RESERVED, 0x200_0000, 0x1000, RECLAIM]));
        let mem = SliceMem { base: 0x2000, bytes: &m };
        let args = KernelArgs::read(&mem, 0x2000).unwrap();
        assert_eq!({ args.kernel_base }, 0x400_0000);
        assert_eq!(args.areas_len(), 3, "a partial area does not count");

        let mut out = [Area::default(); 4];
        assert_eq!(args.read_areas(&mem, &mut out), Ok(3));
        assert_eq!(out[1], Area { base: 0x10_0000, size: 0x100_0000, kind: RESERVED });
        assert_eq!(out[2].end(), 0x200_1000);
        let mut two = [Area::default(); 2];
        assert_eq!(args.read_areas(&mem, &mut two), Ok(2));

        let short = SliceMem { base: 0x2000, bytes: &m[..m.len() - 1] };
        assert_eq!(args.read_areas(&short, &mut out), Err(Unreadable { pa: areas_pa + 48, len: 24 }));
        assert!(KernelArgs::read(&mem, 0x1fff).is_err());
    }

    #[test]
    fn kinds_map_both_ways() {
        assert_eq!([1, 2, 3, 4, 5].map(area_kind), [FREE, RESERVED, RECLAIM, RESERVED, RESERVED]);
        assert_eq!([FREE, RECLAIM, RESERVED, 0, 7].map(e820_kind), [1, 3, 2, 2, 2]);
        for kind in [FREE, RECLAIM, RESERVED] {
            assert_eq!(area_kind(e820_kind(kind)), kind);
        }
    }

    #[test]
    fn env_is_one_line_per_word() {
        let mut out = [0u8; 64];
        let n = env_from_cmdline(b"  ktest=all\tsmp=4 \n redox_env_check=abc123 ", &mut out).unwrap();
        assert_eq!(&out[..n], b"ktest=all\nsmp=4\nredox_env_check=abc123\n");
        assert_eq!(env_from_cmdline(b"", &mut out), Some(0));
        assert_eq!(env_from_cmdline(b" \t ", &mut out), Some(0));
    }

    #[test]
    fn env_that_does_not_fit_is_refused() {
        let mut out = [0u8; 8];
        assert_eq!(env_from_cmdline(b"abc defg", &mut out), None, "needs 9 bytes");
        assert_eq!(env_from_cmdline(b"abc def", &mut out), Some(8));
    }

    #[test]
    fn cmdline_joins_the_env_words() {
        let mut out = [0u8; 64];
        let n = cmdline_from_env(b"ktest=all\nsmp=4\n\nredox_env_check=abc123\n", &mut out);
        assert_eq!(&out[..n], b"ktest=all smp=4 redox_env_check=abc123");
        assert_eq!(cmdline_from_env(b"", &mut out), 0);
        assert_eq!(cmdline_from_env(b"\n \n", &mut out), 0);
    }

    #[test]
    fn cmdline_keeps_the_words_that_fit() {
        let mut out = [0u8; 9];
        let n = cmdline_from_env(b"abc\ndef\nghi\n", &mut out);
        assert_eq!(&out[..n], b"abc def");
    }

    #[test]
    fn env_round_trips() {
        let (mut env, mut back) = ([0u8; 64], [0u8; 64]);
        let cmdline = b"a=1 bb=22 ccc=333";
        let n = env_from_cmdline(cmdline, &mut env).unwrap();
        let m = cmdline_from_env(&env[..n], &mut back);
        assert_eq!(&back[..m], cmdline);
    }
}
