//! Memory: the direct map of physical memory, the buddy frame allocator, page
//! tables, the kernel heap and guarded kernel stacks.
//!
//! Virtual layout (higher half):
//! * `PHYS_OFFSET` (PML4 slot 256): all of the low 4 GiB, 2 MiB pages.
//! * [`heap::HEAP_BASE`]: the kernel heap, grown 4 KiB page by page.
//! * [`stack::STACK_BASE`]: kernel stacks, each below an unmapped guard area.
//! * `0xffff_ffff_8000_0000`: the kernel image (physical 0 upwards).

pub mod frames;
pub mod heap;
pub mod paging;
pub mod stack;

/// Where all physical memory below 4 GiB is mapped.
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
/// Size of the direct map set up at boot.
pub const DIRECT_MAP_SIZE: u64 = 4 << 30;
/// Page size.
pub const PAGE_SIZE: u64 = 4096;

/// Virtual address of physical address `pa` in the direct map.
#[inline(always)]
pub fn phys_to_virt(pa: u64) -> u64 {
    debug_assert!(pa < DIRECT_MAP_SIZE);
    pa + PHYS_OFFSET
}

/// Physical end of the kernel image (page aligned).
pub fn kernel_end_phys() -> u64 {
    unsafe extern "C" {
        static __kernel_end_phys: u8;
    }
    let end = (&raw const __kernel_end_phys) as u64;
    end.next_multiple_of(PAGE_SIZE)
}
