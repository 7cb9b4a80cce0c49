//! Kernel page tables: 4 KiB mappings in the kernel's one address space
//! (every CPU shares the boot PML4), with intermediate tables allocated from
//! the frame allocator on demand.

use super::{frames, phys_to_virt};
use crate::arch::cpu;
use crate::sync::IrqSpinLock;

/// Present.
pub const P: u64 = 1 << 0;
/// Writable.
pub const W: u64 = 1 << 1;
/// 2 MiB / 1 GiB page.
pub const PS: u64 = 1 << 7;
/// No-execute.
pub const NX: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Serializes changes to the kernel page tables (level: leaf; it takes the
/// frame allocator's lock inside).
static PT_LOCK: IrqSpinLock<()> = IrqSpinLock::named("page tables", ());

fn table(pa: u64) -> &'static mut [u64; 512] {
    // SAFETY: pa is the physical address of a page-table page (from CR3 or a
    // present non-leaf entry), direct-mapped and 4 KiB aligned.
    unsafe { &mut *(phys_to_virt(pa) as *mut [u64; 512]) }
}

fn indices(va: u64) -> [usize; 4] {
    [(va >> 39) as usize & 511, (va >> 30) as usize & 511, (va >> 21) as usize & 511, (va >> 12) as usize & 511]
}

/// Error from [`map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No frame for an intermediate table.
    NoMemory,
    /// The address is already mapped (or inside a large page).
    AlreadyMapped,
}

/// The page table (last level) covering `va`, building the intermediate
/// tables it lacks. The caller holds `PT_LOCK`.
fn leaf_table(va: u64) -> Result<&'static mut [u64; 512], MapError> {
    let idx = indices(va);
    let mut t = table(cpu::cr3() & ADDR_MASK);
    for &i in &idx[..3] {
        let e = t[i];
        if e & P == 0 {
            let new = frames::alloc_zeroed().ok_or(MapError::NoMemory)?;
            t[i] = new | P | W;
            t = table(new);
        } else if e & PS != 0 {
            return Err(MapError::AlreadyMapped);
        } else {
            t = table(e & ADDR_MASK);
        }
    }
    Ok(t)
}

/// Map the 4 KiB page at `va` to the frame at `pa` with `flags` (P is added).
pub fn map(va: u64, pa: u64, flags: u64) -> Result<(), MapError> {
    let _g = PT_LOCK.lock();
    let t = leaf_table(va)?;
    let i = indices(va)[3];
    if t[i] & P != 0 {
        return Err(MapError::AlreadyMapped);
    }
    t[i] = (pa & ADDR_MASK) | flags | P;
    Ok(())
}

/// Build the intermediate tables down to the page table covering `va`
/// (so later mappings there allocate nothing).
pub fn ensure_tables(va: u64) -> Result<(), MapError> {
    let _g = PT_LOCK.lock();
    leaf_table(va).map(|_| ())
}

/// Unmap the 4 KiB page at `va` on this CPU's TLB too; returns the frame it
/// mapped. Other CPUs' TLBs are the caller's business (see `stack`).
pub fn unmap(va: u64) -> Option<u64> {
    let _g = PT_LOCK.lock();
    let idx = indices(va);
    let mut t = table(cpu::cr3() & ADDR_MASK);
    for &i in &idx[..3] {
        let e = t[i];
        if e & P == 0 || e & PS != 0 {
            return None;
        }
        t = table(e & ADDR_MASK);
    }
    let e = t[idx[3]];
    if e & P == 0 {
        return None;
    }
    t[idx[3]] = 0;
    cpu::invlpg(va);
    Some(e & ADDR_MASK)
}

/// Is `va` mapped (by a 4 KiB or large page)? Lock-free: used by the
/// backtrace walker, which may run while another CPU holds the lock.
pub fn is_mapped(va: u64) -> bool {
    // Non-canonical addresses are never mapped.
    if (0x0000_8000_0000_0000..0xffff_8000_0000_0000).contains(&va) {
        return false;
    }
    let idx = indices(va);
    let mut t = table(cpu::cr3() & ADDR_MASK);
    for (level, &i) in idx.iter().enumerate() {
        let e = t[i];
        if e & P == 0 {
            return false;
        }
        if level == 3 || (level > 0 && e & PS != 0) {
            return true;
        }
        t = table(e & ADDR_MASK);
    }
    true
}

/// Remove the identity map of low memory (PML4 slot 0) once the APs are up,
/// so that null and small-integer pointers fault.
pub fn drop_identity_map() {
    let _g = PT_LOCK.lock();
    table(cpu::cr3() & ADDR_MASK)[0] = 0;
    cpu::flush_tlb_local();
}
