//! Where the kernel goes, and the memory map the kernel is given.

use bootproto::pvh::{E820_RAM, MemmapEntry};
use bootproto::redox::{Area, FREE, RESERVED};

use crate::PAGE_SIZE;
use crate::hvm::REACHABLE;

/// Alignment of `kernel_base`.
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// Most memory areas handed over.
pub const AREAS_MAX: usize = 128;

// The area kinds as the shim uses them: FREE for RAM, RECLAIM for RAM holding
// boot data (the shim's image: its tables, stack, `KernelArgs`, env, areas,
// RSDP copy and bootstrap program), RESERVED for what is not RAM or stays in use
// (the kernel image).

/// A physical range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// `[start, start + len)`.
    pub fn at(start: u64, len: u64) -> Range {
        Range { start, end: start.saturating_add(len) }
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Choose `kernel_base` for an image of `size` bytes.
///
/// The kernel goes at the lowest 2 MiB-aligned address above the shim's own
/// image (which is linked at 32 MiB) where `size` bytes of e820 RAM are free
/// of the module it is loaded from, and below 4 GiB (what the shim reaches
/// while it copies). Why there:
/// * Above the shim, the kernel's size is bounded only by RAM (below the
///   shim, by 31 MiB), and QEMU puts the module at the top of low RAM, so the
///   space between is normally large and contiguous.
/// * The kernels this shim boots are linked for low physical addresses (the
///   Redox kernel's `p_addr`s start at 0, the testkernel's at 1 MiB): a base
///   above 32 MiB never overlaps those, so a kernel that moves itself to its
///   link-time physical addresses (the testkernel's Redox entry does) copies
///   without overlapping its source, and the Redox kernel's early allocations,
///   which start at the lowest free RAM above 1 MiB, stay clear of it.
/// * 2 MiB alignment lets a kernel map its image with large pages.
pub fn place_kernel(e820: &[MemmapEntry], size: u64, shim: Range, module: Range) -> Option<u64> {
    for ram in e820.iter().filter(|e| e.kind == E820_RAM) {
        let end = ram.end().min(REACHABLE);
        let mut base = ram.base.max(shim.end).next_multiple_of(KERNEL_ALIGN);
        while base.checked_add(size).is_some_and(|e| e <= end) {
            let image = Range::at(base, size);
            if !image.overlaps(&module) {
                return Some(base);
            }
            base = module.end.next_multiple_of(KERNEL_ALIGN);
        }
    }
    None
}

/// The memory map handed to the kernel: the e820 map, with each of `used`
/// (sorted, disjoint ranges of RAM, with the kind to give them) cut out of
/// the RAM it lies in, and RAM at or above `limit` (what the kernel's tables
/// map) left out. Free areas are shrunk to whole pages; the areas come out
/// sorted and disjoint. Returns how many were written, or `None` if `out` is
/// too small.
pub fn areas(e820: &[MemmapEntry], used: &[(Range, u64)], limit: u64, out: &mut [Area]) -> Option<usize> {
    let mut n = 0;
    let mut push = |start: u64, end: u64, kind: u64| -> Option<()> {
        let (start, end) =
            if kind == FREE { (start.next_multiple_of(PAGE_SIZE), end / PAGE_SIZE * PAGE_SIZE) } else { (start, end) };
        // Only RAM must be reachable through the kernel's map; reservations
        // (firmware, MMIO holes) are passed on wherever they are.
        let end = if kind == RESERVED { end } else { end.min(limit) };
        if start < end {
            *out.get_mut(n)? = Area { base: start, size: end - start, kind };
            n += 1;
        }
        Some(())
    };
    for e in e820 {
        let kind = bootproto::redox::area_kind(e.kind);
        let mut cursor = e.base;
        if kind == FREE {
            for (r, rkind) in used.iter().filter(|(r, _)| r.overlaps(&Range { start: e.base, end: e.end() })) {
                let (start, end) = (r.start.max(e.base), r.end.min(e.end()));
                push(cursor, start, FREE)?;
                push(start, end, *rkind)?;
                cursor = end;
            }
        }
        push(cursor, e.end(), kind)?;
    }
    Some(n)
}
