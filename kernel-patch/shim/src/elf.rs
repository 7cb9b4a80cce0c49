//! Checking and loading the kernel ELF.
//!
//! The kernel's image is the higher half it is linked for: virtual
//! `KERNEL_OFFSET + x` lives at physical `kernel_base + x`, and
//! `kernel_size` bytes from `kernel_base` hold it. Two ways to fill it:
//!
//! * raw, the way Redox's bootloader does it: the whole file is copied to
//!   `kernel_base` (file offset = vaddr - `KERNEL_OFFSET`). Used when every
//!   higher-half `PT_LOAD` sits at exactly that offset, which is how the Redox
//!   kernel is linked. It keeps the ELF and section headers and the symbol
//!   table in the image, where Redox's panic handler reads them from.
//! * segment by segment, for ELFs laid out otherwise (the testkernel): each
//!   higher-half `PT_LOAD` is copied to `kernel_base + (vaddr - KERNEL_OFFSET)`.
//!
//! Either way the rest of the image is zeroed, `.bss` included (Redox's
//! `kstart` checks that its `.bss` reads zero). `PT_LOAD`s below the higher
//! half (the testkernel's 32-bit PVH entry at 1 MiB) are skipped.

use core::fmt;

use crate::{KERNEL_OFFSET, PAGE_SIZE};

/// Largest image the kernel page tables cover ([`crate::paging::MAX_KERNEL_SIZE`]).
const MAX_IMAGE: u64 = crate::paging::MAX_KERNEL_SIZE;

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// Why a file is not a kernel the shim can boot.
#[derive(Debug, Clone, Copy)]
pub enum Error {
    /// Shorter than an ELF header.
    TooShort(u64),
    /// Does not start with `\x7fELF`.
    BadMagic([u8; 4]),
    /// Not ELFCLASS64, little endian, version 1.
    NotElf64LittleEndian,
    /// `e_machine` is not x86-64 (62).
    WrongMachine(u16),
    /// `e_type` is not `ET_EXEC` (2).
    NotExecutable(u16),
    /// Program headers missing, of the wrong size or past the end of the file.
    BadProgramHeaders,
    /// The entry point is below `KERNEL_OFFSET`.
    EntryNotHigherHalf(u64),
    /// A `PT_LOAD` is malformed (index, reason).
    BadSegment(usize, &'static str),
    /// No `PT_LOAD` in the higher half.
    NothingToLoad,
    /// The entry point is in no executable higher-half `PT_LOAD`.
    EntryOutsideCode(u64),
    /// The image is larger than the shim maps.
    TooLarge(u64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::TooShort(n) => write!(f, "{n} bytes is too short for an ELF file"),
            Error::BadMagic(m) => write!(f, "not an ELF file (starts with {m:02x?}, expected 7f 45 4c 46)"),
            Error::NotElf64LittleEndian => f.write_str("not a 64-bit little-endian ELF file"),
            Error::WrongMachine(m) => write!(f, "ELF machine {m} is not x86-64 (62)"),
            Error::NotExecutable(t) => write!(f, "ELF type {t} is not an executable (2)"),
            Error::BadProgramHeaders => f.write_str("ELF program headers are missing or malformed"),
            Error::EntryNotHigherHalf(e) => {
                write!(f, "entry point {e:#x} is not in the higher half (at or above {KERNEL_OFFSET:#x})")
            }
            Error::BadSegment(i, why) => write!(f, "PT_LOAD segment {i}: {why}"),
            Error::NothingToLoad => write!(f, "no PT_LOAD segment at or above {KERNEL_OFFSET:#x}"),
            Error::EntryOutsideCode(e) => write!(f, "entry point {e:#x} is in no executable higher-half segment"),
            Error::TooLarge(n) => write!(f, "kernel image of {n:#x} bytes exceeds the {MAX_IMAGE:#x} the shim maps"),
        }
    }
}

/// A checked kernel ELF.
#[derive(Debug, Clone, Copy)]
pub struct Kernel<'a> {
    file: &'a [u8],
    /// Entry point (virtual, higher half).
    pub entry: u64,
    /// Loaded raw (whole file) rather than segment by segment.
    pub raw: bool,
    /// Image size from `KERNEL_OFFSET`, page aligned (`KernelArgs.kernel_size`).
    pub size: u64,
    /// Higher-half `PT_LOAD`s.
    pub segments: usize,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(v)
}

/// The program headers of a file whose header passed [`check`].
fn segments(file: &[u8]) -> impl Iterator<Item = Segment> + '_ {
    let phoff = u64_at(file, 32) as usize;
    let phnum = u16_at(file, 56) as usize;
    (0..phnum).map(move |i| {
        let p = &file[phoff + i * PHDR_SIZE..][..PHDR_SIZE];
        Segment {
            kind: u32_at(p, 0),
            flags: u32_at(p, 4),
            offset: u64_at(p, 8),
            vaddr: u64_at(p, 16),
            filesz: u64_at(p, 32),
            memsz: u64_at(p, 40),
        }
    })
}

fn higher_half(s: &Segment) -> bool {
    s.kind == PT_LOAD && s.vaddr >= KERNEL_OFFSET
}

/// Check that `file` is an x86-64 kernel ELF with a higher-half entry point
/// and plan its load.
pub fn check(file: &[u8]) -> Result<Kernel<'_>, Error> {
    if file.len() < EHDR_SIZE {
        return Err(Error::TooShort(file.len() as u64));
    }
    let magic = [file[0], file[1], file[2], file[3]];
    if &magic != b"\x7fELF" {
        return Err(Error::BadMagic(magic));
    }
    if file[4] != 2 || file[5] != 1 || file[6] != 1 {
        return Err(Error::NotElf64LittleEndian);
    }
    let machine = u16_at(file, 18);
    if machine != 62 {
        return Err(Error::WrongMachine(machine));
    }
    let kind = u16_at(file, 16);
    if kind != 2 {
        return Err(Error::NotExecutable(kind));
    }
    let entry = u64_at(file, 24);
    let phoff = u64_at(file, 32);
    let phentsize = u16_at(file, 54) as usize;
    let phnum = u16_at(file, 56) as u64;
    let ph_end = phoff.checked_add(phnum * PHDR_SIZE as u64);
    if phnum == 0 || phentsize != PHDR_SIZE || ph_end.is_none_or(|e| e > file.len() as u64) {
        return Err(Error::BadProgramHeaders);
    }
    if entry < KERNEL_OFFSET {
        return Err(Error::EntryNotHigherHalf(entry));
    }

    let mut image_end = 0u64;
    let mut raw = true;
    let mut count = 0;
    let mut entry_ok = false;
    for (i, s) in segments(file).enumerate() {
        if s.kind != PT_LOAD {
            continue;
        }
        let Some(vend) = s.vaddr.checked_add(s.memsz) else {
            return Err(Error::BadSegment(i, "its end overflows the address space"));
        };
        if !higher_half(&s) {
            if vend > KERNEL_OFFSET {
                return Err(Error::BadSegment(i, "it straddles the start of the higher half"));
            }
            continue;
        }
        if s.filesz > s.memsz {
            return Err(Error::BadSegment(i, "its file size exceeds its memory size"));
        }
        if s.offset.checked_add(s.filesz).is_none_or(|e| e > file.len() as u64) {
            return Err(Error::BadSegment(i, "its bytes run past the end of the file"));
        }
        count += 1;
        image_end = image_end.max(vend - KERNEL_OFFSET);
        raw &= s.offset == s.vaddr - KERNEL_OFFSET;
        entry_ok |= s.flags & PF_X != 0 && (s.vaddr..vend).contains(&entry);
    }
    if count == 0 {
        return Err(Error::NothingToLoad);
    }
    if !entry_ok {
        return Err(Error::EntryOutsideCode(entry));
    }
    let span = if raw { image_end.max(file.len() as u64) } else { image_end };
    if span > MAX_IMAGE {
        return Err(Error::TooLarge(span));
    }
    Ok(Kernel { file, entry, raw, size: span.next_multiple_of(PAGE_SIZE), segments: count })
}

impl Kernel<'_> {
    /// Fill `image` (the `size` bytes at `kernel_base`): zero it, then copy
    /// the file raw or segment by segment, and zero every segment's `.bss`.
    pub fn load(&self, image: &mut [u8]) {
        assert_eq!(image.len() as u64, self.size, "image buffer of the wrong size");
        image.fill(0);
        if self.raw {
            image[..self.file.len()].copy_from_slice(self.file);
        }
        for s in segments(self.file).filter(higher_half) {
            let at = (s.vaddr - KERNEL_OFFSET) as usize;
            let (filesz, memsz) = (s.filesz as usize, s.memsz as usize);
            if self.raw {
                image[at + filesz..at + memsz].fill(0);
            } else {
                image[at..at + filesz].copy_from_slice(&self.file[s.offset as usize..][..filesz]);
            }
        }
    }
}
