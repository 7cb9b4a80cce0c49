//! The page tables the kernel starts on, as Redox's bootloader sets them up:
//! * PML4[0]: physical memory identity-mapped from 0 (2 MiB pages);
//! * PML4[256]: the same map at `PHYS_OFFSET` (they share the PDPT);
//! * PML4[511]: the kernel image, `KERNEL_OFFSET + x -> kernel_base + x`,
//!   4 KiB pages over exactly `kernel_size` bytes.
//!
//! Physical memory is mapped up to the end of the highest e820 RAM entry,
//! rounded up to 1 GiB, at least 4 GiB (the PCI hole with the LAPIC and
//! IOAPIC, mapped uncached) and at most [`MAX_PHYS`]. Every page is writable
//! and executable: the kernel builds its own tables with finer permissions.

use crate::{KERNEL_OFFSET, PAGE_SIZE, PHYS_OFFSET};

/// Most physical memory mapped (GiB).
pub const MAX_PHYS_GIB: usize = 64;
/// Most physical memory mapped (bytes).
pub const MAX_PHYS: u64 = (MAX_PHYS_GIB as u64) << 30;
const KERNEL_PTS: usize = 64;
/// Largest kernel image mapped (128 MiB: one page directory of page tables).
pub const MAX_KERNEL_SIZE: u64 = (KERNEL_PTS as u64) << 21;

const P: u64 = 1 << 0;
const W: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const PS: u64 = 1 << 7;
const GIB: u64 = 1 << 30;

type Table = [u64; 512];

/// The tables, in the shim's image (identity-mapped, so a table's address is
/// its physical address).
#[repr(C, align(4096))]
pub struct Tables {
    pml4: Table,
    pdpt_phys: Table,
    pd_phys: [Table; MAX_PHYS_GIB],
    pdpt_kernel: Table,
    pd_kernel: Table,
    pt_kernel: [Table; KERNEL_PTS],
}

fn pa(t: &Table) -> u64 {
    t.as_ptr() as u64
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 511) as usize
}

impl Tables {
    /// Fill the tables (all zero before) for physical memory up to
    /// `phys_top` and the kernel image at `kernel_base`; returns the value
    /// for CR3.
    pub fn build(&mut self, phys_top: u64, kernel_base: u64, kernel_size: u64) -> u64 {
        let gib = phys_top.div_ceil(GIB).clamp(4, MAX_PHYS_GIB as u64) as usize;
        for g in 0..gib {
            let cache = if g == 3 { PCD | PWT } else { 0 };
            for (i, e) in self.pd_phys[g].iter_mut().enumerate() {
                *e = (((g as u64) << 30) + ((i as u64) << 21)) | P | W | PS | cache;
            }
            self.pdpt_phys[g] = pa(&self.pd_phys[g]) | P | W;
        }
        self.pml4[0] = pa(&self.pdpt_phys) | P | W;
        self.pml4[index(PHYS_OFFSET, 3)] = pa(&self.pdpt_phys) | P | W;

        assert!(kernel_size <= MAX_KERNEL_SIZE, "kernel image larger than the tables map");
        self.pml4[index(KERNEL_OFFSET, 3)] = pa(&self.pdpt_kernel) | P | W;
        self.pdpt_kernel[index(KERNEL_OFFSET, 2)] = pa(&self.pd_kernel) | P | W;
        for page in 0..kernel_size / PAGE_SIZE {
            let (pt, slot) = ((page / 512) as usize, (page % 512) as usize);
            self.pt_kernel[pt][slot] = (kernel_base + page * PAGE_SIZE) | P | W;
            self.pd_kernel[pt] = pa(&self.pt_kernel[pt]) | P | W;
        }
        pa(&self.pml4)
    }
}
